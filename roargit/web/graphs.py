"""Graphs of runs and artifacts for the DAG and Diff pages, built from a `views.Context`.

An artifact node is its bytes (its hash), wherever they lie: a run that read what another
wrote is linked through it. Marks are classes: `state-<state>` for a run (stale, failed,
superseded, …, also said in its label so that colour is never the only sign), `target` for
the node a lineage was asked for, `cat-<category>` / `consequence` on a diff's sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from roargit.cli.output import show_argv
from roargit.session import label as step_label
from roargit.structs import NamedTuple
from roargit.views import Context, Target
from roargit.web.layout import Graph, Node
from roargit.web.text import q, short

MARKED_STATES = ("stale", "failed", "interrupted", "terminated", "superseded")


class Links(NamedTuple):
    """Where a page's links lead: the app's routes under `prefix`, or, for a self-contained
    file, anchors in the same file."""

    prefix: str = ""
    in_page: bool = False

    def home(self) -> str:
        return f"{self.prefix}/"

    def run(self, run_id: str) -> str:
        return f"#run-{run_id[:16]}" if self.in_page else f"{self.prefix}/run/{run_id}"

    def artifact(self, digest: str, path: str | None = None) -> str:
        if self.in_page:
            return f"#artifact-{digest[:16]}"
        tail = f"?path={q(path)}" if path else ""
        return f"{self.prefix}/artifact/{digest}{tail}"

    def dag(self, ref: str | None = None, **more: str) -> str:
        params = {"ref": ref} if ref else {}
        params.update(more)
        query = "&".join(f"{k}={q(v)}" for k, v in params.items())
        return f"{self.prefix}/dag" + (f"?{query}" if query else "")

    def diff(self, a: str = "", b: str = "") -> str:
        if not (a or b):
            return f"{self.prefix}/diff"
        return f"{self.prefix}/diff?a={q(a)}&b={q(b)}"

    def blob(self, digest: str, name: str = "") -> str:
        return f"{self.prefix}/blob/{digest}" + (f"?name={q(name)}" if name else "")

    def code(self, run_id: str) -> str:
        return f"{self.prefix}/code/{run_id}"

    def search(self) -> str:
        return f"{self.prefix}/search"

    def static(self, name: str) -> str:
        return f"{self.prefix}/static/{name}"


def script_name(argv: Sequence[str]) -> str:
    """The word that names what a command runs: `train.py` for `python train.py …`."""
    for word in argv[1:] if len(argv) > 1 else argv:
        if not word.startswith("-"):
            return word.rsplit("/", 1)[-1]
    return argv[0].rsplit("/", 1)[-1] if argv else "?"


def command_text(argv: Sequence[str]) -> str:
    return show_argv(argv)


def _tail(path: str, width: int = 28) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


class _Builder:
    def __init__(self, ctx: Context, links: Links) -> None:
        self.ctx = ctx
        self.links = links
        self.nodes: dict[str, Node] = {}
        self.edges: list[tuple[str, str]] = []

    def add_run(
        self, run_id: str, label: str | None, state: str, classes: Iterable[str] = ()
    ) -> None:
        rec = self.ctx.run(run_id)
        name = label or short(run_id)
        mark = f" · {state}" if state in MARKED_STATES else ""
        command = command_text(rec.argv)
        key = f"r:{run_id}"
        self.nodes[key] = Node(
            key,
            "run",
            run_id,
            f"{name} {script_name(rec.argv)}{mark}",
            command,
            self.links.run(run_id),
            f"{name}{mark}: {command}",
            (f"state-{state}", *classes),
        )
        for f in rec.inputs:
            self._add_artifact(f.hash, f.path)
            self.edges.append((f"a:{f.hash}", key))
        for f in rec.outputs:
            self._add_artifact(f.hash, f.path)
            self.edges.append((key, f"a:{f.hash}"))

    def _add_artifact(self, digest: str, path: str) -> None:
        key = f"a:{digest}"
        if key in self.nodes:
            return
        self.nodes[key] = Node(
            key,
            "artifact",
            digest,
            _tail(path),
            short(digest),
            self.links.artifact(digest, path),
            f"{path} {digest}",
        )

    def mark(self, key: str, *classes: str) -> None:
        node = self.nodes.get(key)
        if node is not None:
            self.nodes[key] = node._replace(classes=(*node.classes, *classes))

    def graph(self) -> Graph:
        return Graph(list(self.nodes.values()), self.edges)


def session_graph(ctx: Context, links: Links) -> tuple[Graph, dict[str, Any]]:
    """The active session's steps, their inputs and outputs."""
    dag = ctx.session_dag()
    b = _Builder(ctx, links)
    ctx.runs([s["run"] for s in dag["steps"]])
    for s in dag["steps"]:
        b.add_run(s["run"], s["step"], s["state"])
    return b.graph(), dag


def lineage_graph(ctx: Context, links: Links, target: Target) -> tuple[Graph, dict[str, Any]]:
    """The steps behind a target, back to its source data; the target marked."""
    dag = ctx.lineage_dag(target)
    b = _Builder(ctx, links)
    for s in dag["steps"]:
        b.add_run(s["run"], s["step"], s["state"])
    key = f"r:{target.id}" if target.kind == "run" else f"a:{target.id}"
    if target.kind == "artifact" and key not in b.nodes:
        t = dag["target"]
        b._add_artifact(target.id, (t.get("paths") or [target.path or short(target.id)])[0])
    b.mark(key, "target")
    return b.graph(), dag


class DiffSides(NamedTuple):
    a: Graph
    b: Graph


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64


def diff_graphs(ctx: Context, links: Links, result: Mapping[str, Any]) -> DiffSides:
    """Both lineages of a `diff.compare` result, each diverging node coloured: a step with a
    root cause of its own by the cause's category, a step that only inherited a change as a
    consequence, an added or removed step as pipeline, and the artifacts a cause or a
    consequence names."""
    causes = result["root_causes"]
    sides = {"a": _Builder(ctx, links), "b": _Builder(ctx, links)}
    for step in result["steps"]:
        own = [c["category"] for c in causes if step["step"] in c["steps"]]
        state = step["state"]
        if state in ("added", "removed"):
            classes: tuple[str, ...] = ("cat-pipeline",)
        elif state == "changed":
            classes = (f"cat-{own[0]}",) if own else ("consequence",)
        elif state == "consequence":
            classes = ("consequence",)
        else:
            classes = ()
        for side in ("a", "b"):
            rid = step[f"{side}_run"]
            if rid:
                rec = ctx.run(rid)
                sides[side].add_run(rid, step_label(rec.kind, rec.step), rec.status, classes)
    for c in causes:
        if c["category"] in ("data", "params"):
            for side in ("a", "b"):
                if _is_digest(c.get(side)):
                    sides[side].mark(f"a:{c[side]}", f"cat-{c['category']}")
    for item in result["consequences"]:
        if item["kind"] == "artifact":
            for side in ("a", "b"):
                if _is_digest(item.get(side)):
                    sides[side].mark(f"a:{item[side]}", "consequence")
    for side in ("a", "b"):
        t = result[side]
        key = f"r:{t['id']}" if t["kind"] == "run" else f"a:{t['id']}"
        sides[side].mark(key, "target")
    return DiffSides(sides["a"].graph(), sides["b"].graph())
