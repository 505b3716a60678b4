"""A lineage graph laid out left to right, drawn as SVG on the server.

Nodes are runs and artifacts; an edge goes from an artifact to each run that read it and from
a run to each artifact it wrote. Layers follow the longest path from the sources (a source
artifact sits just left of its first reader, not at the far left), an edge that skips
columns runs in a lane reserved through them (so it never crosses a node), nodes in a layer
are ordered by the barycentre of their neighbours (a few sweeps, as in Sugiyama's method),
and each node is placed level with the mean of its predecessors where the layer leaves
room, so that a chain is drawn as a straight line. Each sweep is linear in nodes, edges and
lane placeholders: a lineage of a thousand steps is laid out in a fraction of the page's
time.

The SVG carries what the page script needs and nothing more: each node is a link (its page)
with `data-n` (its index), `data-ref` (a run id or artifact hash) and each edge `data-f` /
`data-t`; every text in it is escaped by `esc`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

from roargit.structs import NamedTuple
from roargit.web.text import esc

NODE_W = 196
NODE_H = 44
COL_GAP = 64
ROW_GAP = 14
PAD = 12
SWEEPS = 4
LANE_H = 6
LANE_BUDGET = 20  # placeholders per node, at most, before long edges go without lanes


class Node(NamedTuple):
    key: str  # unique in its graph: "r:<run id>" or "a:<hash>"
    kind: str  # "run" or "artifact"
    ref: str  # the run id or artifact hash (what a diff form takes)
    label: str  # first line: a step label or a path
    sub: str  # second line: the command or a short hash
    href: str
    title: str  # the whole text, shown on hover
    classes: tuple[str, ...] = ()  # state-stale, cat-code, target, …


class Graph(NamedTuple):
    nodes: list[Node]
    edges: list[tuple[str, str]]  # (from key, to key)


class Placed(NamedTuple):
    graph: Graph
    xy: list[tuple[int, int]]  # per node, its top-left corner
    edges: list[tuple[int, int]]  # node indices
    width: int
    height: int
    # per edge, the lane it runs in across the columns it skips: (left, right, y) each
    routes: list[tuple[tuple[int, int, int], ...]]


def _layers(n: int, succ: list[list[int]], pred: list[list[int]]) -> list[int]:
    """Longest-path layers; a cycle (a run that rewrote the bytes it read) is broken at the
    node seen first."""
    indeg = [len(p) for p in pred]
    layer = [0] * n
    done = [False] * n
    ready = [i for i in range(n) if indeg[i] == 0]
    left = n
    nxt = 0
    while left:
        if not ready:
            while done[nxt]:
                nxt += 1
            ready.append(nxt)
            indeg[nxt] = 0
        stack = ready
        ready = []
        while stack:
            v = stack.pop()
            if done[v]:
                continue
            done[v] = True
            left -= 1
            for w in succ[v]:
                if done[w]:
                    continue
                if layer[v] + 1 > layer[w]:
                    layer[w] = layer[v] + 1
                indeg[w] -= 1
                if indeg[w] == 0:
                    stack.append(w)
    # Sources move right, next to their first reader.
    for v in range(n):
        if not pred[v] and succ[v]:
            layer[v] = max(layer[v], min(layer[w] for w in succ[v]) - 1)
    return layer


def place(graph: Graph) -> Placed:
    index = {node.key: i for i, node in enumerate(graph.nodes)}
    n = len(graph.nodes)
    succ: list[list[int]] = [[] for _ in range(n)]
    pred: list[list[int]] = [[] for _ in range(n)]
    edges: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for a, b in graph.edges:
        i, j = index.get(a), index.get(b)
        if i is None or j is None or i == j or (i, j) in seen:
            continue
        seen.add((i, j))
        edges.append((i, j))
        succ[i].append(j)
        pred[j].append(i)
    layer = _layers(n, succ, pred)
    depth = max(layer, default=-1) + 1

    # Long edges run in lanes: one chain of placeholders per node, through the columns
    # between it and its farthest reader, which ordering and placement treat as thin
    # nodes, so that no edge is drawn through a node. A graph that would need too many
    # placeholders (every node reading something far back) is drawn with plain curves.
    total = n
    lanes: dict[int, list[int]] = {}
    for v in range(n):
        far = max((layer[w] for w in succ[v] if layer[w] - layer[v] > 1), default=None)
        if far is not None:
            k = far - layer[v] - 1
            lanes[v] = list(range(total, total + k))
            total += k
    if total - n > LANE_BUDGET * max(n, 1):
        lanes, total = {}, n
    level = layer + [0] * (total - n)
    up: list[list[int]] = [list(p) for p in pred] + [[] for _ in range(total - n)]
    down: list[list[int]] = [list(s) for s in succ] + [[] for _ in range(total - n)]
    for v, lane in lanes.items():
        chain = [v, *lane]
        for near, next_ in pairwise(chain):
            level[next_] = level[near] + 1
            down[near].append(next_)
            up[next_].append(near)
        for w in succ[v]:
            span = layer[w] - layer[v]
            if span > 1:  # the reader takes the edge from the lane's end in its column
                down[v].remove(w)
                up[w].remove(v)
                down[lane[span - 2]].append(w)
                up[w].append(lane[span - 2])

    rows: list[list[int]] = [[] for _ in range(depth)]
    for v in range(total):
        rows[level[v]].append(v)
    pos = [0.0] * total
    for row in rows:
        for k, v in enumerate(row):
            pos[v] = k

    def sweep(order: Iterable[int], neighbours: list[list[int]]) -> None:
        for d in order:
            row = rows[d]
            bary = {}
            for v in row:
                ns = neighbours[v]
                bary[v] = sum(pos[w] for w in ns) / len(ns) if ns else pos[v]
            row.sort(key=lambda v: bary[v])
            for k, v in enumerate(row):
                pos[v] = k

    for _ in range(SWEEPS // 2):
        sweep(range(1, depth), up)
        sweep(range(depth - 2, -1, -1), down)

    # Vertical placement, by centres: level with the predecessors where the column leaves
    # room below the node above.
    half = [NODE_H / 2 if v < n else LANE_H / 2 for v in range(total)]
    c = [0.0] * total
    for d in range(depth):
        below = -float(ROW_GAP)  # the bottom of the last node placed in this column
        for v in rows[d]:
            ps = up[v]
            least = below + ROW_GAP + half[v]
            want = sum(c[w] for w in ps) / len(ps) if ps else least
            c[v] = max(want, least)
            below = c[v] + half[v]
    top = min((c[v] - half[v] for v in range(total)), default=0.0)
    bottom = max((c[v] + half[v] for v in range(total)), default=0.0)

    def x_of(v: int) -> int:
        return PAD + level[v] * (NODE_W + COL_GAP)

    xy = [(x_of(v), PAD + round(c[v] - half[v] - top)) for v in range(n)]
    routes: list[tuple[tuple[int, int, int], ...]] = []
    for i, j in edges:
        span = layer[j] - layer[i]
        lane = lanes.get(i, [])[: span - 1] if span > 1 else []
        routes.append(tuple((x_of(d), x_of(d) + NODE_W, PAD + round(c[d] - top)) for d in lane))
    width = PAD * 2 + max(depth * (NODE_W + COL_GAP) - COL_GAP, 0)
    height = PAD * 2 + (round(bottom - top) if n else 0)
    return Placed(graph, xy, edges, width, height, routes)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def svg(placed: Placed, *, label: str, highlight: Sequence[str] = ()) -> str:
    """The graph as an inline SVG element. `highlight`: node keys whose upstream and
    downstream paths are drawn highlighted (the page works without its script)."""
    g = placed.graph
    lit_nodes, lit_edges = _path_through(placed, highlight)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag{" dim" if lit_nodes else ""}" '
        f'width="{placed.width}" height="{placed.height}" '
        f'viewBox="0 0 {placed.width} {placed.height}" role="group" aria-label="{esc(label)}">',
        '<g class="edges">',
    ]
    half = NODE_H // 2
    for k, (i, j) in enumerate(placed.edges):
        x1, y1 = placed.xy[i]
        x2, y2 = placed.xy[j]
        x1 += NODE_W
        y1 += half
        y2 += half
        d = [f"M{x1} {y1}"]
        for left, right, ly in placed.routes[k]:
            mid = (x1 + left) / 2
            d.append(f"C{mid:g} {y1} {mid:g} {ly} {left} {ly}H{right}")
            x1, y1 = right, ly
        mid = (x1 + x2) / 2 if x2 > x1 else x1 + COL_GAP / 2
        d.append(f"C{mid:g} {y1} {mid:g} {y2} {x2} {y2}")
        cls = "edge hl" if k in lit_edges else "edge"
        out.append(f'<path class="{cls}" data-f="{i}" data-t="{j}" d="{"".join(d)}"/>')
    out.append('</g><g class="nodes">')
    for i, node in enumerate(g.nodes):
        x, y = placed.xy[i]
        cls = " ".join(("node", node.kind, *node.classes, *(("hl",) if i in lit_nodes else ())))
        rx = 6 if node.kind == "run" else 18
        out.append(
            f'<a class="{cls}" href="{esc(node.href)}" data-n="{i}" data-ref="{esc(node.ref)}" '
            f'aria-label="{esc(node.title)}">'
            f"<title>{esc(node.title)}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{rx}"/>'
            f'<text x="{x + 10}" y="{y + 18}" class="l1">{esc(_cut(node.label, 28))}</text>'
            f'<text x="{x + 10}" y="{y + 35}" class="l2">{esc(_cut(node.sub, 32))}</text>'
            "</a>"
        )
    out.append("</g></svg>")
    return "".join(out)


def _path_through(placed: Placed, keys: Sequence[str]) -> tuple[set[int], set[int]]:
    """Nodes and edges upstream and downstream of the nodes `keys` name."""
    if not keys:
        return set(), set()
    index = {node.key: i for i, node in enumerate(placed.graph.nodes)}
    start = [index[k] for k in keys if k in index]
    succ: dict[int, list[tuple[int, int]]] = {}
    pred: dict[int, list[tuple[int, int]]] = {}
    for k, (i, j) in enumerate(placed.edges):
        succ.setdefault(i, []).append((j, k))
        pred.setdefault(j, []).append((i, k))
    nodes: set[int] = set(start)
    lit: set[int] = set()
    for adjacency in (succ, pred):
        todo = list(start)
        seen = set(start)
        while todo:
            v = todo.pop()
            for w, k in adjacency.get(v, ()):
                lit.add(k)
                if w not in seen:
                    seen.add(w)
                    nodes.add(w)
                    todo.append(w)
    return nodes, lit


def runs_only(graph: Graph) -> Graph:
    """The graph with its artifacts folded into run-to-run edges (the collapsed view)."""
    producers: dict[str, list[str]] = {}
    for a, b in graph.edges:
        if a.startswith("r:") and b.startswith("a:"):
            producers.setdefault(b, []).append(a)
    edges: list[tuple[str, str]] = []
    for a, b in graph.edges:
        if a.startswith("a:") and b.startswith("r:"):
            edges.extend((p, b) for p in producers.get(a, ()) if p != b)
    nodes = [n for n in graph.nodes if n.kind == "run"]
    return Graph(nodes, list(dict.fromkeys(edges)))
