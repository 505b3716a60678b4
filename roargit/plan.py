"""The plan behind an artifact: the fewest recorded steps that recreate its bytes.

Planning starts at the target's producer and walks inputs backwards. For every input it
decides where the bytes will come from:

- `code`: the step's code tree (the commit, or the dirty snapshot) holds that path with
  those bytes, so checking the code out brings it;
- `worktree`: the file at the recorded path in this work tree has that hash now (for a
  path outside the repository, the file at that absolute path);
- `store`: a configured blob store holds the blob (every read is verified);
- `step`: an earlier step of the plan produces it (it is regenerated);
- `missing`: none of these, which makes the plan fail.

With reuse (the default), an input found in the work tree or a store is taken from there and
the step that produced it is listed as `reuse` (skipped) rather than run; `--no-reuse` runs
every step back to the source data. The target's own producer always runs: that is the
reproduction. Build steps (`@B…`) of the sessions involved run first.

Everything here reads the ledger and stats files; nothing is written. The lookups are a few
tree reads per step, so a 1,000-step lineage plans in well under a second.
"""

from __future__ import annotations

import heapq
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roargit import pathguard, session
from roargit.environment import Environment, changes
from roargit.errors import RecordCorrupt, RoarError
from roargit.folders import decode_manifest
from roargit.hashing import HashCache, hash_bytes
from roargit.ledger import Ledger
from roargit.machine import this_machine
from roargit.producers import choose_producer
from roargit.records import ArtifactId, FileRef, RunId, RunRecord, SessionId
from roargit.repo import RepoPaths

SOURCES = ("code", "worktree", "store", "step", "missing")


class NotProduced(RoarError):
    def __init__(self, digest: str) -> None:
        super().__init__(
            f"artifact {digest[:16]} was produced by no recorded run (source data): "
            f"nothing to reproduce; roar get {digest[:12]} fetches it if a store holds it"
        )


class NotAnArtifact(RoarError):
    def __init__(self, ref: str) -> None:
        super().__init__(
            f"'{ref}' names a run, not an artifact: give the hash or path of one of its outputs"
        )


class PlanCycle(RoarError):
    def __init__(self, labels: Iterable[str]) -> None:
        super().__init__(
            "the recorded steps form a cycle (" + ", ".join(sorted(labels)) + "): cannot order them"
        )


@dataclass(frozen=True, slots=True)
class InputPlan:
    """Where one input of a step will come from."""

    file: FileRef
    source: str  # one of SOURCES
    detail: str  # work-tree path, store URL, step label, tree id, or why it is missing
    run: RunId | None = None  # the producing step's run, for source "step"


@dataclass(frozen=True, slots=True)
class PlanStep:
    label: str  # "@3" / "@B1" in the session that recorded it
    run_id: RunId
    run: RunRecord
    action: str  # "run" or "reuse" (skipped: what it made is available by hash)
    inputs: tuple[InputPlan, ...]  # empty for reused steps
    code_available: bool  # its code tree is in this clone
    commit_available: bool


@dataclass(frozen=True, slots=True)
class Plan:
    target: str
    target_path: str | None  # the path the target was recorded at by its producer
    steps: tuple[PlanStep, ...]  # in execution order: build steps, then by dependency
    warnings: tuple[str, ...]
    stores: tuple[str, ...]
    reuse: bool

    @property
    def missing(self) -> list[tuple[PlanStep, InputPlan]]:
        return [(s, i) for s in self.steps for i in s.inputs if i.source == "missing"] + [
            (s, InputPlan(_code_ref(s), "missing", "its code tree is not in this clone"))
            for s in self.steps
            if s.action == "run" and not s.code_available
        ]

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "plan",
            "target": {"hash": self.target, "path": self.target_path},
            "reuse": self.reuse,
            "ok": self.ok,
            "stores": list(self.stores),
            "steps": [_step_json(s) for s in self.steps],
            "missing": [
                {"step": s.label, "path": i.file.path, "hash": i.file.hash, "why": i.detail}
                for s, i in self.missing
            ],
            "warnings": list(self.warnings),
        }


def _code_ref(s: PlanStep) -> FileRef:
    return FileRef("(code tree)", ArtifactId(s.run.code.tree or ""), 0, "tree")


def _step_json(s: PlanStep) -> dict[str, Any]:
    rec = s.run
    return {
        "step": s.label,
        "run": s.run_id,
        "type": rec.kind,
        "action": s.action,
        "command": list(rec.argv),
        "cwd": rec.cwd,
        "code": {
            "commit": rec.code.commit,
            "dirty": rec.code.dirty,
            "tree": rec.code.tree,
            "available": s.code_available,
        },
        "inputs": [
            {
                "path": i.file.path,
                "hash": i.file.hash,
                "size": i.file.size,
                "type": i.file.kind,
                "from": i.source,
                "detail": i.detail,
            }
            for i in s.inputs
        ],
        "outputs": [
            {"path": f.path, "hash": f.hash, "size": f.size, "type": f.kind} for f in rec.outputs
        ],
    }


# -- finding bytes ---------------------------------------------------------------------------


def location(url: str) -> str:
    """A store as a URL, however it was configured: a local folder (`roar.store.url` set to a
    path) is shown as the `file://` URL it is, like the default store."""
    if "://" in url or "::" in url:
        return url
    return "file://" + url


class Locator:
    """Answers "where can these bytes be had?" against the code tree, the work tree and the
    stores, memoised (a lineage reads the same artifacts many times)."""

    def __init__(self, paths: RepoPaths, ledger: Ledger, cache: HashCache, stores: Sequence[Any]):
        self.paths = paths
        self.ledger = ledger
        self.cache = cache
        self.stores = stores
        self._in_store: dict[str, str | None] = {}
        self._tree_hash: dict[tuple[str, str], str | None] = {}
        self._manifests: dict[str, list[Any] | None] = {}

    def abs_path(self, recorded: str) -> str:
        return pathguard.abs_path(recorded, self.paths.root)

    def work_tree_has(self, recorded: str, digest: str) -> bool:
        path = self.abs_path(recorded)
        found = self.cache.hash_many([path], missing_ok=True).get(path)
        return found is not None and found.digest == digest

    def store_with(self, digest: str) -> str | None:
        if digest not in self._in_store:
            self._in_store[digest] = next(
                (location(s.url) for s in self.stores if s.has(digest)), None
            )
        return self._in_store[digest]

    def code_has(self, tree_id: str | None, recorded: str, digest: str) -> bool:
        if not tree_id or recorded.startswith("/"):
            return False
        key = (tree_id, recorded)
        if key not in self._tree_hash:
            self._tree_hash[key] = _tree_blob_hash(self.ledger.repo, tree_id, recorded)
        return self._tree_hash[key] == digest

    def manifest(self, digest: str) -> list[Any] | None:
        if digest not in self._manifests:
            data = self.ledger.manifest(digest)
            entries = (
                None
                if data is None
                else decode_manifest(data, f"manifest {digest[:12]}", digest=digest)
            )
            self._manifests[digest] = entries
        return self._manifests[digest]

    def locate(self, f: FileRef, tree_id: str | None) -> tuple[str, str] | None:
        """(source, detail) for bytes available without running anything, or None."""
        if f.kind == "dir":
            return self._locate_dir(f)
        if self.code_has(tree_id, f.path, f.hash):
            return "code", tree_id or ""
        if self.work_tree_has(f.path, f.hash):
            return "worktree", f.path
        if f.path.startswith("/"):
            return None  # a path outside the repository is used in place, never written
        url = self.store_with(f.hash)
        return ("store", url) if url else None

    def _locate_dir(self, f: FileRef) -> tuple[str, str] | None:
        entries = self.manifest(f.hash)
        if entries is None:
            return None
        folder = self.abs_path(f.path.rstrip("/"))
        members = [os.path.join(folder, e.path) for e in entries]
        have = self.cache.hash_many(members, missing_ok=True)
        stored = False
        for e, m in zip(entries, members, strict=True):
            h = have.get(m)
            if h is not None and h.digest == e.hash:
                continue
            if f.path.startswith("/") or self.store_with(e.hash) is None:
                return None
            stored = True
        if stored:
            return "store", ", ".join(location(s.url) for s in self.stores)
        return "worktree", f.path


def _tree_blob_hash(repo: Any, tree_id: str, recorded: str) -> str | None:
    import pygit2  # lazy: only a plan that reads code trees needs it, and its import is slow

    try:
        tree = repo[tree_id].peel(pygit2.Tree)
        entry = tree[recorded]
    except (KeyError, ValueError, pygit2.GitError):
        return None
    if entry.type != pygit2.enums.ObjectType.BLOB:
        return None
    return hash_bytes(entry.data)


# -- planning --------------------------------------------------------------------------------


class Planner:
    def __init__(self, paths: RepoPaths, ledger: Ledger, locator: Locator) -> None:
        self.paths = paths
        self.ledger = ledger
        self.locator = locator
        self._runs: dict[str, RunRecord] = {}
        self._producers: dict[str, list[RunId]] = {}

    def run(self, run_id: str) -> RunRecord:
        rec = self._runs.get(run_id)
        if rec is None:
            rec = self._runs[run_id] = self.ledger.run(run_id)
        return rec

    def producer(
        self, digest: str, path: str | None = None, reader: RunId | None = None
    ) -> RunId | None:
        """The run to regenerate these bytes with: the one whose write `reader` read at
        `path` (producers.choose_producer), or for the target the newest that made them."""

        if digest not in self._producers:
            self._producers[digest] = self.ledger.artifact_runs(digest)[0]
        candidates = [(r, self.run(r)) for r in self._producers[digest]]
        who = (reader, self.run(reader)) if reader is not None else None
        return choose_producer(digest, path, candidates, who)[0]

    def build_steps(self, session_id: SessionId) -> list[RunId]:
        """The current run of each build step of a session."""
        newest: dict[int, tuple[int, RunId]] = {}
        for rid in self.ledger.session_runs(session_id):
            rec = self.run(rid)
            if rec.kind == "build" and (
                rec.step not in newest or newest[rec.step][0] < rec.started_at
            ):
                newest[rec.step] = (rec.started_at, rid)
        return [rid for _, (_, rid) in sorted(newest.items())]


def make_plan(
    paths: RepoPaths,
    ledger: Ledger,
    target: str,
    *,
    cache: HashCache,
    stores: Sequence[Any],
    reuse: bool = True,
    env_check: bool = True,
    target_at: str | None = None,
) -> Plan:
    """The plan that recreates artifact `target` (a full hash; `target_at`: the path it was
    named by, whose writer is preferred): see the module docstring."""
    locator = Locator(paths, ledger, cache, stores)
    planner = Planner(paths, ledger, locator)
    first = planner.producer(target, target_at)
    if first is None:
        raise NotProduced(target)
    target_path = next((f.path for f in planner.run(first).outputs if f.hash == target), None)

    to_run: dict[RunId, list[InputPlan]] = {}
    reused: set[RunId] = set()
    queue = [first]
    sessions_seen: set[SessionId] = set()
    while queue:
        rid = queue.pop()
        if rid in to_run:
            continue
        rec = planner.run(rid)
        check_paths(rec, pathguard.source_of(ledger, rid), locator)
        to_run[rid] = inputs = []
        if rec.session not in sessions_seen:
            sessions_seen.add(rec.session)
            queue.extend(b for b in planner.build_steps(rec.session) if b not in to_run)
        for f in rec.inputs:
            prod = planner.producer(f.hash, f.path, rid)
            if reuse or prod is None:
                found = locator.locate(f, rec.code.tree)
                if found is not None:
                    inputs.append(InputPlan(f, found[0], found[1]))
                    if prod is not None and found[0] in ("worktree", "store"):
                        reused.add(prod)
                    continue
            if prod is None:
                why = "outside the repository and changed" if f.path.startswith("/") else "nowhere"
                inputs.append(InputPlan(f, "missing", why))
                continue
            inputs.append(InputPlan(f, "step", "", prod))
            if prod not in to_run:
                queue.append(prod)

    order = _order(planner, to_run)
    labels = {rid: session.label(planner.run(rid).kind, planner.run(rid).step) for rid in order}
    for rid in reused:
        labels.setdefault(rid, session.label(planner.run(rid).kind, planner.run(rid).step))
    steps: list[PlanStep] = []
    repo = ledger.repo
    # Reused steps are listed (so the report can say why they did not run) before the first
    # step that consumes what they made.
    reuse_list = sorted(reused - set(to_run), key=lambda r: planner.run(r).started_at)
    for rid in reuse_list:
        rec = planner.run(rid)
        steps.append(PlanStep(labels[rid], rid, rec, "reuse", (), True, True))
    for rid in order:
        rec = planner.run(rid)
        ins = tuple(
            InputPlan(i.file, i.source, labels[i.run], i.run) if i.source == "step" and i.run else i
            for i in to_run[rid]
        )
        steps.append(
            PlanStep(
                labels[rid],
                rid,
                rec,
                "run",
                ins,
                _has_object(repo, rec.code.tree),
                _has_object(repo, rec.code.commit),
            )
        )
    for s in steps:
        if s.action == "run" and s.code_available:
            _check_tree_links(repo, s, pathguard.source_of(ledger, s.run_id), locator)
    warnings = _plan_warnings(steps, paths)
    if env_check:
        warnings += environment_warnings([s for s in steps if s.action == "run"])
    return Plan(
        target,
        target_path,
        tuple(steps),
        tuple(warnings),
        tuple(location(s.url) for s in stores),
        reuse,
    )


def check_paths(rec: RunRecord, source: pathguard.Source, locator: Locator) -> None:
    """Every path of a run to re-run through the one gate (pathguard.check), before anything
    is written: its working folder, code paths and redirected stdout and stderr must lie
    inside the repository; inputs and outputs too, or be absolute (read in place, never
    written); so must each file of a folder it reads."""
    pathguard.check(rec.cwd, source, root_ok=True)
    for c in rec.code.inputs:
        pathguard.check(c.path, source)
    for stream, path in rec.redirects.items():  # stdout and stderr are written; stdin read
        pathguard.check(path, source, absolute_ok=stream == "stdin")
    for folder in rec.created_dirs:  # the folders above them are made
        pathguard.check(folder, source)
    for f in rec.outputs:
        pathguard.check(f.path, source, absolute_ok=True)
    for f in rec.inputs:
        folder = pathguard.check(f.path, source, absolute_ok=True)
        if f.kind == "dir":
            for e in locator.manifest(f.hash) or ():
                pathguard.check(e.path, source)
                pathguard.check(f"{folder}/{e.path}", source, absolute_ok=True)


def _check_tree_links(
    repo: Any, step: PlanStep, source: pathguard.Source, locator: Locator
) -> None:
    """Refuse a step whose code tree puts a symbolic link where an input is to be written or
    on the way to it, or on the way to its working folder: checked before anything is
    written (writes refuse links too, but by then earlier steps may have run). An input
    that this work tree already holds by that path (a committed link to a dataset folder)
    is read in place, not written, and passes."""
    tree_id = step.run.code.tree
    if not tree_id:
        return
    wanted = [
        i.file.path.rstrip("/")
        for i in step.inputs
        if i.source != "code" and not locator.work_tree_has(i.file.path, i.file.hash)
    ]
    for rel in [*wanted, step.run.cwd]:
        if rel.startswith("/") or rel == ".":
            continue
        link = _tree_link(repo, tree_id, rel)
        if link is not None:
            raise pathguard.UnsafePath(rel, source, f"'{link}' is a symbolic link in its code")


def _tree_link(repo: Any, tree_id: str, rel: str) -> str | None:
    """The first component of `rel` that the tree holds as a symbolic link, if any."""
    import pygit2  # lazy: only a plan that reads code trees needs it, and its import is slow

    try:
        tree = repo[tree_id].peel(pygit2.Tree)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    parts = rel.split("/")
    for n in range(1, len(parts) + 1):
        try:
            entry = tree["/".join(parts[:n])]
        except KeyError:
            return None
        if entry.filemode == pygit2.enums.FileMode.LINK:
            return "/".join(parts[:n])
        if entry.type != pygit2.enums.ObjectType.TREE:
            return None
    return None


def _order(planner: Planner, to_run: Mapping[RunId, list[InputPlan]]) -> list[RunId]:
    """Build steps first, then dependencies before dependants; ties by start time."""
    deps = {rid: {i.run for i in ins if i.run is not None} for rid, ins in to_run.items()}
    users: dict[RunId, list[RunId]] = {rid: [] for rid in to_run}
    for rid, ds in deps.items():
        for d in ds:
            users[d].append(rid)
    remaining = {rid: len(ds) for rid, ds in deps.items()}

    def key(rid: RunId) -> tuple[int, int, str]:
        rec = planner.run(rid)
        return (0 if rec.kind == "build" else 1, rec.started_at, rid)

    ready = [key(r) for r, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    order: list[RunId] = []
    while ready:
        rid = RunId(heapq.heappop(ready)[2])
        order.append(rid)
        for u in users[rid]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, key(u))
    if len(order) != len(to_run):
        stuck = [r for r, n in remaining.items() if n > 0]
        raise PlanCycle(session.label(planner.run(r).kind, planner.run(r).step) for r in stuck)
    return order


def _has_object(repo: Any, oid: str | None) -> bool:
    if not oid:
        return False
    try:
        return repo.get(oid) is not None
    except (ValueError, KeyError):
        return False


def _plan_warnings(steps: Sequence[PlanStep], paths: RepoPaths) -> list[str]:
    out: list[str] = []
    for s in steps:
        if s.action != "run":
            continue
        rec = s.run
        if rec.code.commit and not s.commit_available and s.code_available:
            out.append(
                f"{s.label}: commit {rec.code.commit[:12]} is not in this clone; "
                f"its code tree {(rec.code.tree or '')[:12]} (from the ledger) is used"
            )
        if not rec.complete:
            out.append(f"{s.label}: recorded in {rec.capture} mode; it may have missed inputs")
        if rec.status != "ok":
            out.append(f"{s.label}: its recorded run {rec.status} (exit {rec.exit_code})")
        if any("<redacted>" in a for a in rec.argv):
            out.append(f"{s.label}: its command had secrets redacted; it will run with them so")
        for f in rec.outputs:
            if f.path.startswith("/"):
                out.append(f"{s.label}: writes {f.path}, outside the repository, in place")
    return out


# -- the environment ---------------------------------------------------------------------------


def environment_warnings(steps: Sequence[PlanStep]) -> list[str]:
    """How this machine differs from where each step ran: interpreter, packages, OS/arch, GPU.
    Each difference is reported once, with the steps it concerns."""
    seen: dict[str, list[str]] = {}
    # Steps of one pipeline mostly share an environment: compare each distinct one once.
    memo: dict[tuple[str, str], list[str]] = {}
    for s in steps:
        if not s.run.environment:
            continue
        try:
            recorded = Environment.from_dict(s.run.environment)
        except RecordCorrupt:
            continue  # the record was checked when read; nothing to compare against
        argv0 = s.run.argv[0] if s.run.argv else ""
        key = (argv0, repr(recorded))
        notes = memo.get(key)
        if notes is None:
            exe = shutil.which(argv0) if "python" in argv0 else None
            here = this_machine(exe, recorded.packages, os.environ)
            kinds = {"os", "arch", "package"}
            if exe is not None:
                kinds.add("python")
            if recorded.gpus:
                kinds.add("gpu")
            notes = memo[key] = [
                f"{c.label} {c.a or 'none'} → "
                + (c.b or ("not installed" if c.kind == "package" else "none"))
                for c in changes(recorded, here, kinds)
                if c.a is not None
            ]
        for n in notes:
            seen.setdefault(n, []).append(s.label)
    return [f"environment: {n} ({_some(labels)})" for n, labels in seen.items()]


def _some(labels: list[str], n: int = 5) -> str:
    more = f" and {len(labels) - n} more" if len(labels) > n else ""
    return ", ".join(labels[:n]) + more
