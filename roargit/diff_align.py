"""Two lineages, paired step by step for `roar diff` (docs/diff.md, "Matching rule").

1. A run present in both lineages (same record id) is paired with itself.
2. The runs the two REFs name — or that produced the two artifacts — are paired.
3. Walking upstream from a pair: its inputs are paired (the same flag or position in argv,
   then the same path, the same content, the same file name, or the last one left on each
   side), and the runs that produced a pair of inputs are paired when they run the same
   script or write the same output paths.
4. Runs still unpaired are paired, in upstream-first order, by the same script and step
   number and output paths; then the same script and step number; the same script and
   output paths; the same script alone. Each new pair is walked as in 3.
5. Whatever is left was added (only in B) or removed (only in A).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from roargit.diff_argv import file_keys, script_of
from roargit.records import FileRef, RunRecord
from roargit.views import Context, Target

__all__ = ["Lineage", "Pairing", "align", "align_files", "load_lineage", "script_of"]


@dataclass
class Lineage:
    runs: dict[str, RunRecord]
    order: list[str]  # upstream first: every run after the runs that produced its inputs
    top: str | None  # the run the REF named, or that produced the artifact
    producer: dict[str, str]  # artifact hash → a run of this lineage that produced it
    # (reader run, input path) → the run whose write it read (None: source data); see
    # producers.choose_producer. An input named here never falls back on `producer`.
    links: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def producer_of(self, digest: str, reader: str, path: str | None = None) -> str | None:
        if path is not None and (reader, path) in self.links:
            return self.links[(reader, path)]
        p = self.producer.get(digest)
        return None if p == reader else p


def load_lineage(ctx: Context, target: Target) -> Lineage:
    top = target.id if target.kind == "run" else ctx.producer(target.id, target.path)
    if top is None:
        return Lineage({}, [], None, {})
    runs: dict[str, RunRecord] = {}
    producer: dict[str, str] = {}
    links: dict[tuple[str, str], str | None] = {}
    queue = [str(top)]
    while queue:
        rid = queue.pop()
        if rid in runs:
            continue
        rec = runs[rid] = ctx.run(rid)
        for f in rec.inputs:
            p, _by_bytes = ctx.input_producer(rid, f)
            links[(rid, f.path)] = p
            if p is not None:
                producer.setdefault(f.hash, p)
                queue.append(p)
    lin = Lineage(runs, [], str(top), producer, links)
    lin.order = _upstream_first(lin)
    return lin


def _deps(lin: Lineage, rid: str) -> list[str]:
    out = []
    for f in lin.runs[rid].inputs:
        p = lin.producer_of(f.hash, rid, f.path)
        if p is not None:
            out.append(p)
    return out


def _upstream_first(lin: Lineage) -> list[str]:
    """Depth-first post-order from the top, without recursion (lineages can be deep)."""
    assert lin.top is not None
    order: list[str] = []
    done: set[str] = set()
    on_stack: set[str] = {lin.top}
    stack = [(lin.top, iter(_deps(lin, lin.top)))]
    while stack:
        rid, deps = stack[-1]
        for d in deps:
            if d not in done and d not in on_stack:  # a cycle is cut where it closes
                on_stack.add(d)
                stack.append((d, iter(_deps(lin, d))))
                break
        else:
            stack.pop()
            on_stack.discard(rid)
            done.add(rid)
            order.append(rid)
    return order


@dataclass
class Pairing:
    a_to_b: dict[str, str] = field(default_factory=dict)
    b_to_a: dict[str, str] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)  # artifact hash in A → in B

    def pair(self, a: str, b: str) -> None:
        self.a_to_b[a] = b
        self.b_to_a[b] = a


def align_files(
    ra: RunRecord,
    rb: RunRecord,
    files_a: Sequence[FileRef],
    files_b: Sequence[FileRef],
    role: str,
    known: dict[str, str],
) -> list[tuple[FileRef | None, FileRef | None]]:
    """Pair two steps' inputs (or outputs); unpaired files come with None on the other side."""
    left_a = list(files_a)
    left_b = list(files_b)
    pairs: list[tuple[FileRef | None, FileRef | None]] = []

    def by(key_a: Callable[[FileRef], Hashable], key_b: Callable[[FileRef], Hashable]) -> None:
        nonlocal left_a, left_b
        if not left_a or not left_b:
            return
        buckets: dict[Hashable, list[FileRef]] = {}
        for fb in left_b:
            k = key_b(fb)
            if k is not None:
                buckets.setdefault(k, []).append(fb)
        taken: set[int] = set()
        rest_a = []
        for fa in left_a:
            k = key_a(fa)
            bucket = buckets.get(k) if k is not None else None
            if bucket:
                fb = bucket.pop(0)
                taken.add(id(fb))
                pairs.append((fa, fb))
            else:
                rest_a.append(fa)
        left_a = rest_a
        left_b = [f for f in left_b if id(f) not in taken]

    if known:
        by(lambda f: known.get(f.hash), lambda f: f.hash)
    keys_a, keys_b = file_keys(ra), file_keys(rb)
    by(lambda f: keys_a.get(f.path.rstrip("/")), lambda f: keys_b.get(f.path.rstrip("/")))
    by(lambda f: (f.path, f.kind), lambda f: (f.path, f.kind))
    by(lambda f: f.hash, lambda f: f.hash)
    by(lambda f: (_base(f.path), f.kind), lambda f: (_base(f.path), f.kind))
    if len(left_a) == 1 and len(left_b) == 1 and left_a[0].kind == left_b[0].kind:
        pairs.append((left_a[0], left_b[0]))
        left_a, left_b = [], []
    pairs.extend((fa, None) for fa in left_a)
    pairs.extend((None, fb) for fb in left_b)
    del role  # the same rules hold for inputs and outputs
    return pairs


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _outs(rec: RunRecord) -> frozenset[str]:
    return frozenset(f.path for f in rec.outputs)


def _compatible(ra: RunRecord, rb: RunRecord) -> bool:
    return script_of(ra) == script_of(rb) or (bool(ra.outputs) and _outs(ra) == _outs(rb))


def align(la: Lineage, lb: Lineage, known: dict[str, str] | None = None) -> Pairing:
    """Pair the runs of two lineages; `known` pairs artifacts by hash (the two targets)."""
    p = Pairing(known=dict(known or {}))
    for rid in la.order:
        if rid in lb.runs:
            p.pair(rid, rid)
    if la.top is not None and lb.top is not None:
        ta, tb = la.top, lb.top
        if ta not in p.a_to_b and tb not in p.b_to_a:
            p.pair(ta, tb)
            _walk(la, lb, p, [(ta, tb)])

    scripts: dict[str, str] = {}

    def script(side: str, rid: str, rec: RunRecord) -> str:
        key = side + rid
        s = scripts.get(key)
        if s is None:
            s = scripts[key] = script_of(rec)
        return s

    rules: list[Callable[[str, str, RunRecord], Hashable]] = [
        lambda side, rid, r: (script(side, rid, r), r.kind, r.step, _outs(r)),
        lambda side, rid, r: (script(side, rid, r), r.kind, r.step),
        lambda side, rid, r: (script(side, rid, r), _outs(r)),
        lambda side, rid, r: script(side, rid, r),
    ]
    for rule in rules:
        unpaired_b = [b for b in lb.order if b not in p.b_to_a]
        unpaired_a = [a for a in la.order if a not in p.a_to_b]
        if not unpaired_a or not unpaired_b:
            break
        buckets: dict[Hashable, list[str]] = {}
        for b in unpaired_b:
            buckets.setdefault(rule("b", b, lb.runs[b]), []).append(b)
        for a in unpaired_a:
            if a in p.a_to_b:
                continue  # paired by a walk from an earlier pair of this round
            bucket = buckets.get(rule("a", a, la.runs[a]))
            while bucket and bucket[0] in p.b_to_a:
                bucket.pop(0)
            if bucket:
                b = bucket.pop(0)
                p.pair(a, b)
                _walk(la, lb, p, [(a, b)])
    return p


def _walk(la: Lineage, lb: Lineage, p: Pairing, queue: list[tuple[str, str]]) -> None:
    while queue:
        a, b = queue.pop()
        ra, rb = la.runs[a], lb.runs[b]
        for fa, fb in align_files(ra, rb, ra.inputs, rb.inputs, "in", p.known):
            if fa is None or fb is None:
                continue
            pa, pb = la.producer_of(fa.hash, a, fa.path), lb.producer_of(fb.hash, b, fb.path)
            if pa is None or pb is None or pa in p.a_to_b or pb in p.b_to_a:
                continue
            if _compatible(la.runs[pa], lb.runs[pb]):
                p.pair(pa, pb)
                queue.append((pa, pb))
