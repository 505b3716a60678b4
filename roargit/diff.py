"""`roar diff`: what differs between two lineages, and which differences explain the rest.

Two REFs name two lineages (an artifact's upstream runs, or a run's). The runs of the two are
paired step by step (see `docs/diff.md`, "Matching rule", and `roargit.diffalign`), then each
pair is compared in upstream-first order:

- a difference the step itself carries — its argv, the code or config files it read, its
  environment, a source artifact it read, how it is wired — is a *root cause*;
- an input that differs because the step upstream produced different bytes is *explained*:
  the step, and every output it wrote differently, is a *consequence* of the root causes
  that reached it.

The answer is plain JSON-ready data (`compare`); the CLI renders it. Nothing here prints.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2

from roargit.diff_align import Lineage, Pairing, align, align_files, load_lineage, script_of
from roargit.diff_argv import argv_changes
from roargit.environment import Environment, changes
from roargit.records import FileRef, RunRecord
from roargit.session import label as step_label
from roargit.views import Context, Target

CATEGORIES = ("code", "data", "params", "environment", "pipeline", "unexplained")

#: Files read as code or data that hold parameters rather than logic or data.
CONFIG_SUFFIXES = frozenset(
    {".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".conf", ".env", ".properties"}
)

#: Hunks larger than this many lines are cut (the JSON says how many were left out).
MAX_HUNK_LINES = 400


# -- the root-cause registry ------------------------------------------------------------------


@dataclass
class Cause:
    id: int
    category: str
    what: str
    a: str | None
    b: str | None
    steps: list[str]
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self, with_detail: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "step": self.steps[0] if self.steps else None,
            "steps": list(self.steps),
            "what": self.what,
            "a": self.a,
            "b": self.b,
        }
        for k, v in self.detail.items():
            if with_detail or k not in ("hunks", "hunks_omitted"):
                out[k] = v
        return out


class Causes:
    """Root causes, one per distinct (category, what, a, b): the same change met by several
    steps (a package every step imports, a source two steps read) is one cause."""

    def __init__(self) -> None:
        self.items: list[Cause] = []
        self._by_key: dict[tuple[str, str, str | None, str | None], Cause] = {}

    def add(
        self,
        category: str,
        step: str,
        what: str,
        a: str | None,
        b: str | None,
        detail: Mapping[str, Any] | None = None,
        script: str | None = None,
    ) -> int:
        key = (category, what, a, b)
        cause = self._by_key.get(key)
        if cause is None:
            more = {"script": script} if script else {}
            cause = Cause(len(self.items) + 1, category, what, a, b, [], {**more, **(detail or {})})
            self.items.append(cause)
            self._by_key[key] = cause
        if step not in cause.steps:
            cause.steps.append(step)
        return cause.id


# -- comparing ---------------------------------------------------------------------------------


@dataclass
class _Compare:
    ctx: Context
    la: Lineage
    lb: Lineage
    pairing: Pairing
    causes: Causes = field(default_factory=Causes)
    consequences: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    # root causes that reached each run's outputs, per side
    reach_a: dict[str, set[int]] = field(default_factory=dict)
    reach_b: dict[str, set[int]] = field(default_factory=dict)
    _script: str | None = None  # the script of the pair being compared

    # -- naming ----------------------------------------------------------------------------

    def label(self, rec: RunRecord) -> str:
        return step_label(rec.kind, rec.step)

    def pair_label(self, ra: RunRecord | None, rb: RunRecord | None) -> str:
        la = self.label(ra) if ra is not None else None
        lb = self.label(rb) if rb is not None else None
        if la is None or lb is None or la == lb:
            return str(lb or la)
        return f"{la}→{lb}"

    def step_ref(self, rec: RunRecord) -> str:
        return f"{self.label(rec)} {script_of(rec)}"

    def _add(
        self,
        category: str,
        step: str,
        what: str,
        a: str | None,
        b: str | None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        return self.causes.add(category, step, what, a, b, detail, self._script)

    # -- the walk --------------------------------------------------------------------------

    def run(self) -> None:
        pa = self.pairing
        for ida in self.la.order:
            if ida not in pa.a_to_b:
                rec = self.la.runs[ida]
                cid = self.causes.add(
                    "pipeline",
                    self.label(rec),
                    "step removed",
                    " ".join(rec.argv),
                    None,
                    {"a_run": ida},
                    script_of(rec),
                )
                self.reach_a[ida] = {cid}
                self.steps.append(self._step_json(ida, None, "removed", {cid}))
        for idb in self.lb.order:
            paired = pa.b_to_a.get(idb)
            if paired is None:
                rec = self.lb.runs[idb]
                cid = self.causes.add(
                    "pipeline",
                    self.label(rec),
                    "step added",
                    None,
                    " ".join(rec.argv),
                    {"b_run": idb},
                    script_of(rec),
                )
                self.reach_b[idb] = {cid}
                self.steps.append(self._step_json(None, idb, "added", {cid}))
                continue
            self._compare_pair(paired, idb)
        # Runs of A paired but never reached in B's order cannot exist (pairs are 1:1).

    def _step_json(
        self, ida: str | None, idb: str | None, state: str, because: Iterable[int]
    ) -> dict[str, Any]:
        ra = self.la.runs[ida] if ida else None
        rb = self.lb.runs[idb] if idb else None
        rec = rb or ra
        assert rec is not None
        return {
            "step": self.pair_label(ra, rb),
            "script": script_of(rec),
            "a_run": ida,
            "b_run": idb,
            "state": state,
            "because": sorted(because),
        }

    def _compare_pair(self, ida: str, idb: str) -> None:
        ra, rb = self.la.runs[ida], self.lb.runs[idb]
        step = self.pair_label(ra, rb)
        self._script = script_of(rb)
        own: set[int] = set()
        inherited: set[int] = set()
        if ida == idb:
            self.reach_a[ida] = self.reach_b[idb] = set()
            self.steps.append(self._step_json(ida, idb, "same", ()))
            return

        # params: argv, with paths naming the step's files compared by the file they name
        for ch in argv_changes(ra, rb):
            own.add(self._add("params", step, ch.what, ch.a, ch.b))
        # code (and config files tracked as code): by path, by blob
        code = self._code(ra, rb, step)
        own |= code
        # environment. A package the step started or stopped using, where its code changed
        # too, follows from that change (a new import): it is not a cause of its own.
        env_a = Environment.from_dict(ra.environment)
        env_b = Environment.from_dict(rb.environment)
        for c in changes(env_a, env_b):
            if code and c.kind == "package" and (c.a is None or c.b is None):
                continue
            own.add(self._add("environment", step, c.label, c.a, c.b))
        # inputs: sources are data, the rest inherits from the step that produced it
        differing_inputs = []
        for fa, fb in align_files(ra, rb, ra.inputs, rb.inputs, "in", self.pairing.known):
            c_own, c_inh = self._input(step, ra, rb, ida, idb, fa, fb)
            own |= c_own
            inherited |= c_inh
            if c_own or c_inh:
                differing_inputs.append((fa, fb))

        reach = own | inherited
        out_diffs = []
        for fa, fb in align_files(ra, rb, ra.outputs, rb.outputs, "out", self.pairing.known):
            if fa is not None and fb is not None and fa.hash == fb.hash:
                continue
            out_diffs.append((fa, fb))
        status_differs = (ra.status, ra.exit_code) != (rb.status, rb.exit_code)
        if (out_diffs or status_differs) and not reach:
            # Nothing recorded differs, yet the step did something else: say so plainly.
            what = "outputs differ though nothing recorded changed (nondeterministic step?)"
            if status_differs and not out_diffs:
                what = "status differs though nothing recorded changed"
            own.add(self._add("unexplained", step, what, None, None))
            reach = own | inherited
        self.reach_a[ida] = self.reach_b[idb] = reach
        if own:
            state = "changed"
        elif inherited:
            state = "consequence"
            entry = self._step_json(ida, idb, "consequence", inherited)
            entry["kind"] = "step"
            entry["inputs"] = [
                {
                    "path": fb.path if fb else fa.path if fa else None,
                    "a": fa.hash if fa else None,
                    "b": fb.hash if fb else None,
                }
                for fa, fb in differing_inputs
            ]
            if status_differs:
                entry["status"] = {"a": ra.status, "b": rb.status}
            self.consequences.append(entry)
        else:
            state = "same" if not out_diffs else "changed"
        for fa, fb in out_diffs:
            self.consequences.append(self._artifact_json(step, fa, fb, reach))
        self.steps.append(self._step_json(ida, idb, state, reach))

    def _artifact_json(
        self, step: str, fa: FileRef | None, fb: FileRef | None, because: set[int]
    ) -> dict[str, Any]:
        ref = fb or fa
        assert ref is not None
        out: dict[str, Any] = {
            "kind": "artifact",
            "path": ref.path,
            "step": step,
            "a": fa.hash if fa else None,
            "b": fb.hash if fb else None,
            "because": sorted(because),
        }
        if fa is not None and fb is not None and fa.path != fb.path:
            out["a_path"] = fa.path
        return out

    def _input(
        self,
        step: str,
        ra: RunRecord,
        rb: RunRecord,
        ida: str,
        idb: str,
        fa: FileRef | None,
        fb: FileRef | None,
    ) -> tuple[set[int], set[int]]:
        """(root causes this input pair is, root causes it inherits from upstream)."""
        if fa is not None and fb is not None and fa.hash == fb.hash:
            return set(), set()
        pa = self.la.producer_of(fa.hash, ida, fa.path) if fa else None
        pb = self.lb.producer_of(fb.hash, idb, fb.path) if fb else None
        ref = fb or fa
        assert ref is not None
        name = (
            ref.path
            if fa is None or fb is None or fa.path == fb.path
            else (f"{fa.path} → {fb.path}")
        )
        detail: dict[str, Any] = {"path": ref.path}
        if fa is not None and fb is not None and fa.path != fb.path:
            detail["a_path"] = fa.path
        if pa is None and pb is None:
            # Source data on both sides (or on the only side that reads it).
            if fa is None:
                what = f"input added: {fb.path}" if fb else ""
            elif fb is None:
                what = f"input removed: {fa.path}"
            else:
                what = name
            category = "params" if _is_config(ref.path) else "data"
            if category == "data":
                detail["a_size"] = fa.size if fa else None
                detail["b_size"] = fb.size if fb else None
            cid = self._add(
                category,
                step,
                what,
                fa.hash if fa else None,
                fb.hash if fb else None,
                detail,
            )
            return {cid}, set()
        if pa is not None and pb is not None and self.pairing.a_to_b.get(pa) == pb:
            inherited = self.reach_b.get(pb, set()) | self.reach_a.get(pa, set())
            if not inherited:
                cid = self._add(
                    "unexplained",
                    step,
                    f"input {name} differs though its producers recorded no difference",
                    fa.hash if fa else None,
                    fb.hash if fb else None,
                    detail,
                )
                return {cid}, set()
            return set(), inherited
        # Wired differently. When the other end is a step added or removed, that step is the
        # root cause and this input only follows from it.
        follows: set[int] = set()
        if pb is not None and pb not in self.pairing.b_to_a:
            follows |= self.reach_b.get(pb, set())
        if pa is not None and pa not in self.pairing.a_to_b:
            follows |= self.reach_a.get(pa, set())
        if follows:
            return set(), follows
        src_a = self.step_ref(self.la.runs[pa]) if pa else ("source data" if fa else "not read")
        src_b = self.step_ref(self.lb.runs[pb]) if pb else ("source data" if fb else "not read")
        cid = self._add("pipeline", step, f"input {name} comes from", src_a, src_b, detail)
        return {cid}, set()

    def _code(self, ra: RunRecord, rb: RunRecord, step: str) -> set[int]:
        found: set[int] = set()
        a_in = {c.path: c.blob for c in ra.code.inputs}
        b_in = {c.path: c.blob for c in rb.code.inputs}
        for path in sorted(a_in.keys() | b_in.keys()):
            ba, bb = a_in.get(path), b_in.get(path)
            if ba == bb:
                continue
            category = "params" if _is_config(path) else "code"
            detail: dict[str, Any] = {"path": path}
            if ba is None:
                what = f"{path} read only in B"
            elif bb is None:
                what = f"{path} read only in A"
            else:
                what = path
                detail.update(self._hunks(path, ba, bb))
            where = {"a_dirty": ra.code.dirty, "b_dirty": rb.code.dirty}
            detail.update(where)
            found.add(self._add(category, step, what, ba, bb, detail))
        return found

    def _hunks(self, path: str, blob_a: str, blob_b: str) -> dict[str, Any]:
        repo = self.ctx.ledger.repo
        oa, ob = repo.get(blob_a), repo.get(blob_b)
        if oa is None or ob is None:
            return {"hunks": None, "note": "file contents are not in this repository"}
        if not isinstance(oa, pygit2.Blob) or not isinstance(ob, pygit2.Blob):
            return {"hunks": None, "note": "not a file in this repository"}
        return text_hunks(path, oa.data, ob.data)


def text_hunks(path: str, a: bytes, b: bytes) -> dict[str, Any]:
    """Unified-diff hunks of two versions of a file: {"hunks": [{"header", "lines"}]}."""
    try:
        if b"\0" in a or b"\0" in b:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "binary")
        ta, tb = a.decode("utf-8"), b.decode("utf-8")
    except UnicodeDecodeError:
        return {"hunks": None, "note": "binary file"}
    lines = list(
        difflib.unified_diff(
            ta.splitlines(), tb.splitlines(), f"a/{path}", f"b/{path}", n=3, lineterm=""
        )
    )
    hunks: list[dict[str, Any]] = []
    omitted = 0
    shown = 0
    for line in lines[2:]:
        if line.startswith("@@"):
            hunks.append({"header": line, "lines": []})
        elif hunks:
            if shown < MAX_HUNK_LINES:
                hunks[-1]["lines"].append(line)
                shown += 1
            else:
                omitted += 1
    out: dict[str, Any] = {"hunks": hunks, "lines": _spans(hunks)}
    if omitted:
        out["hunks_omitted"] = omitted
    return out


def _spans(hunks: list[dict[str, Any]]) -> list[list[int]]:
    """The lines of B that changed, as [first, last] ranges (a deletion: the line after it)."""
    changed: list[int] = []
    for h in hunks:
        m = _HUNK.match(h["header"])
        if not m:
            continue
        line = int(m.group(1))
        for text in h["lines"]:
            if text.startswith("+"):
                changed.append(line)
                line += 1
            elif text.startswith("-"):
                changed.append(max(line, 1))
            else:
                line += 1
    spans: list[list[int]] = []
    for n in sorted(set(changed)):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return spans


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def _is_config(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    return dot > 0 and name[dot:] in CONFIG_SUFFIXES


# -- the entry point -----------------------------------------------------------------------------


def _target_json(ctx: Context, ref: str, target: Target, top: str | None) -> dict[str, Any]:
    """The REF as resolved, with the verifications of the run that produced it (or that it
    names): reproductions attest to it, they never stand in for it."""
    return {
        "ref": ref,
        "kind": target.kind,
        "id": target.id,
        "path": target.path,
        "verifications": ctx.verifications(top) if top is not None else [],
    }


def compare(ctx: Context, ref_a: str, ref_b: str, cwd: Path) -> dict[str, Any]:
    """Compare the lineages two REFs name; JSON-ready (docs/diff.md is the spec)."""
    ta = ctx.resolve(ref_a, cwd)
    tb = ctx.resolve(ref_b, cwd)
    la = load_lineage(ctx, ta)
    lb = load_lineage(ctx, tb)
    result: dict[str, Any] = {
        "a": _target_json(ctx, ref_a, ta, la.top),
        "b": _target_json(ctx, ref_b, tb, lb.top),
        "identical": True,
        "root_causes": [],
        "consequences": [],
        "by_category": {c: [] for c in CATEGORIES},
        "steps": [],
        "warnings": [],
    }
    warnings: list[str] = result["warnings"]
    for side, lin in (("A", la), ("B", lb)):
        partial = sorted(
            f"{step_label(r.kind, r.step)}" for r in lin.runs.values() if not r.complete
        )
        if partial:
            warnings.append(
                f"{side}: capture of {', '.join(partial)} may be incomplete; "
                "differences in what they read can be missed"
            )

    known = {ta.id: tb.id} if ta.kind == tb.kind == "artifact" else {}
    cmp = _Compare(ctx, la, lb, align(la, lb, known))
    cmp.run()
    _target_sources(cmp, ta, tb, la, lb)

    causes = cmp.causes.items
    result["identical"] = not causes
    result["root_causes"] = [c.to_json(with_detail=False) for c in causes]
    result["consequences"] = cmp.consequences
    for c in causes:
        result["by_category"][c.category].append(c.to_json(with_detail=True))
    result["steps"] = cmp.steps
    result["counts"] = {
        "a_steps": len(la.runs),
        "b_steps": len(lb.runs),
        "paired": len(cmp.pairing.a_to_b),
    }
    return result


def _target_sources(cmp: _Compare, ta: Target, tb: Target, la: Lineage, lb: Lineage) -> None:
    """Two artifacts that no recorded run produced are compared as source data."""
    if ta.kind != "artifact" or tb.kind != "artifact" or ta.id == tb.id:
        return
    if la.top is None and lb.top is None:
        path = tb.path or ta.path or tb.id[:12]
        cmp.causes.add("data", "-", path, ta.id, tb.id, {"path": path})
    elif la.top is None or lb.top is None:
        produced = lb.top if la.top is None else la.top
        rec = (lb if la.top is None else la).runs[str(produced)]
        a = "source data" if la.top is None else cmp.step_ref(rec)
        b = "source data" if lb.top is None else cmp.step_ref(rec)
        cmp.causes.add("pipeline", cmp.label(rec), "the artifact comes from", a, b)
