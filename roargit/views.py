"""Answers to the query commands, as plain JSON-ready data (docs/cli-json.md is the spec).

Resolving a REF (a path, an artifact hash prefix, a run id prefix, or `@N`) and walking
lineage read a handful of ledger trees per step; nothing here scans all records.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from roargit import pathguard, remote_ledgers, session
from roargit.errors import AmbiguousPrefix, NoMatch, PrefixTooShort, RoarError
from roargit.folders import decode_manifest_rows
from roargit.git import run_git
from roargit.hashing import HashCache
from roargit.ledger import REMOTES_PREFIX, Ledger, RecordMissing
from roargit.ledger_check import printable
from roargit.producers import choose_producer
from roargit.record_json import iso, run_to_json, verification_to_json, who_json
from roargit.records import FileRef, RunId, RunRecord, VerificationRecord
from roargit.repo import RepoPaths
from roargit.staleness import stale_steps
from roargit.structs import NamedTuple

MIN_PREFIX = 6
HEX = frozenset("0123456789abcdef")


class NeverRecorded(RoarError):
    def __init__(self, path: str, digest: str) -> None:
        super().__init__(f"{path} was never recorded by a run (its current hash is {digest})")


class Target(NamedTuple):
    """What a REF named: an artifact (by hash) or a run."""

    kind: str  # "artifact" or "run"
    id: str
    path: str | None = None  # the path the user typed, for artifacts named by path


class Context:
    """The ledger, the active session and the cache, opened once per command."""

    def __init__(
        self,
        paths: RepoPaths,
        on_warning: Callable[[str], None] | None = None,
        *,
        merge_fetched: bool = True,
    ) -> None:
        """`merge_fetched=False`: only read, even a remote tip not merged yet (a long-lived
        reader such as `roar ui` serves the ledger as it finds it; the command that started
        it merged once)."""
        self.paths = paths
        # Through the git CLI: a query reads tens to thousands of objects, and a pipe round
        # trip each costs less than importing pygit2 would (ledger.py switches to pygit2 past
        # SWITCH_TO_PYGIT2_AT reads; diff and plan still open pygit2 for blobs).
        self.ledger = Ledger(paths, fast_start=True)
        # What the command should tell the user besides its answer: entries of a fetched
        # ledger left out, records that could not be read and were skipped. Each line is also
        # handed to `on_warning` as it comes (the CLI prints it on stderr).
        self.warnings: list[str] = []
        self._on_warning = on_warning
        # A remote ledger that a plain `git fetch` brought is merged by the first command that
        # reads after it, once (remote_ledgers); the merge takes only well-formed entries.
        for synced in remote_ledgers.merge_new(paths, self.ledger) if merge_fetched else ():
            n = len(synced.rejected)
            if synced.error:
                self._warn(
                    f"could not merge the ledger fetched from {synced.remote}: {synced.error}"
                )
            elif n:
                entries = "entry" if n == 1 else "entries"
                self._warn(f"skipped {n} bad {entries} from {synced.remote} (roar fsck lists them)")
        state = session.read_state(paths.roar_dir)
        self.state = state
        self._view: session.SessionView | None = None
        self._runs: dict[str, RunRecord] = {}
        self._skipped: set[str] = set()
        self._manifests: dict[str, dict[str, str]] = {}
        self._folder_runs: dict[tuple[str, str], tuple[list[RunId], list[RunId]]] = {}
        self._producer_cache: dict[str, list[tuple[RunId, RunRecord]]] = {}
        self._links: dict[tuple[str, str, str], tuple[RunId | None, bool]] = {}
        self._stale: dict[str, Any] | None = None
        self._verifications: dict[str, list[dict[str, Any]]] = {}

    @property
    def view(self) -> session.SessionView:
        if self._view is None:
            skipped: list[str] = []
            self._view = session.load_view(
                self.ledger, self.state.session_id, self.state.popped, skipped
            )
            for line in skipped:
                self._warn(line)
        return self._view

    def _warn(self, text: str) -> None:
        line = printable(text)
        if line not in self.warnings:
            self.warnings.append(line)
            if self._on_warning is not None:
                self._on_warning(line)

    def run(self, run_id: str) -> RunRecord:
        rec = self._runs.get(run_id)
        if rec is None:
            rec = self._runs[run_id] = self.ledger.run(run_id)
        return rec

    def runs(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """`run` of each; those not read yet are read together."""
        todo = [r for r in dict.fromkeys(run_ids) if r not in self._runs]
        self._runs.update(zip(todo, self.ledger.runs(todo), strict=True))
        return [self._runs[r] for r in run_ids]

    def usable(self, run_ids: Sequence[str], *, quiet_missing: bool = False) -> list[RunId]:
        """Those of `run_ids` whose records can be read (read together, in order): one bad
        record is skipped with one warning, never the end of the command. With
        `quiet_missing`, a run no longer in the ledger is left out silently (a commit message
        of a fetched ledger may name runs that were not taken)."""
        todo = [r for r in dict.fromkeys(run_ids) if r not in self._runs and r not in self._skipped]
        for rid, rec in zip(todo, self.ledger.runs_or_errors(todo), strict=True):
            if isinstance(rec, RunRecord):
                self._runs[rid] = rec
                continue
            self._skipped.add(rid)
            if not (quiet_missing and isinstance(rec, RecordMissing)):
                self._warn(f"{rec} (skipped)")
        return [RunId(r) for r in run_ids if r in self._runs]

    def label(self, run_id: str) -> str | None:
        """The run's step label in the active session: None for a run of another session (a
        reproduction's, another clone's, one before `roar reset`) or one popped from it."""
        if run_id in self.state.popped:
            return None
        rec = self.run(run_id)
        if rec.session != self.state.session_id:
            return None
        return session.label(rec.kind, rec.step)

    # -- resolving REFs ------------------------------------------------------------------

    def resolve(self, ref: str, cwd: Path) -> Target:
        parsed = session.parse_label(ref)
        if parsed is not None:
            step = self.view.step(session.label(*parsed))
            return Target("run", step.run_id)
        candidate = (cwd / ref) if not os.path.isabs(ref) else Path(ref)
        if candidate.exists() or "/" in ref or (not _is_hex(ref)):
            return self._resolve_path(ref, candidate)
        if len(ref) < MIN_PREFIX:
            raise PrefixTooShort(ref)
        prefix = ref.lower()
        arts = self.ledger.find_artifacts(prefix)
        runs = self.ledger.find_runs(prefix)
        found = [("artifact", a) for a in arts] + [("run", r) for r in runs]
        if not found:
            raise NoMatch(ref, self._unfetched_hint())
        if len(found) > 1:
            # AmbiguousPrefix shows 16 characters of each: the ids alone, so they stay distinct.
            raise AmbiguousPrefix(ref, [i for _k, i in found])
        return Target(found[0][0], found[0][1])

    def _unfetched_hint(self) -> str:
        """What to do when a hash is not found in a clone that never fetched lineage from its
        remotes (`git clone` brings branches, not refs/roar/*)."""
        remotes = run_git(["remote"], self.paths.git_dir, check=False).stdout.decode().split()
        prefix = len(REMOTES_PREFIX)
        fetched = {ref[prefix : -len("/ledger")] for ref in remote_ledgers.remote_tips(self.paths)}
        never = [r for r in remotes if r not in fetched]
        if not never:
            return ""
        return f"lineage from {', '.join(never)} was never fetched here: run roar fetch"

    def _resolve_path(self, ref: str, candidate: Path) -> Target:
        root = str(self.paths.root)
        absolute = os.path.abspath(candidate)
        recorded = pathguard.rel_or_abs(absolute, root)
        if candidate.is_dir():
            # The folder as most recently recorded (by a run that wrote or read it whole):
            # hashing it afresh would mean a manifest of every file in it.
            produced, consumed = self.ledger.folder_runs(recorded + "/")
            ids = self.usable(list(dict.fromkeys([*produced, *consumed])))
            newest = sorted(
                zip(ids, self.runs(ids), strict=True),
                key=lambda r: (r[1].started_at, r[0]),
                reverse=True,
            )
            for _rid, run in newest:
                for f in (*run.outputs, *run.inputs):
                    if f.kind == "dir" and f.path.rstrip("/") == recorded:
                        return Target("artifact", f.hash, recorded + "/")
            raise NoMatch(ref)
        if candidate.is_file():
            digest = HashCache(self.paths.roar_dir).hash_file(absolute).digest
            if self.ledger.has_artifact(digest):
                return Target("artifact", digest, recorded)
            if self._in_recorded_folder(recorded, digest):
                return Target("artifact", digest, recorded)
            raise NeverRecorded(recorded, digest)
        # Gone from disk: the newest step of the session that wrote that path.
        producer = self.view.producer_of(recorded)
        if producer is not None:
            out = next(o for o in producer.run.outputs if o.path == recorded)
            return Target("artifact", out.hash, recorded)
        raise NoMatch(ref)

    def _in_recorded_folder(self, recorded: str, digest: str) -> bool:
        produced, consumed = self.folder_runs_for_file(recorded, digest)
        return bool(produced or consumed)

    def _manifest_files(self, digest: str) -> dict[str, str]:
        """{relative path: hash} of a folder artifact's manifest, decoded once per command
        (a manifest may list 100,000 files, and several runs share one)."""

        files = self._manifests.get(digest)
        if files is None:
            data = self.ledger.manifest(digest)
            files = (
                {}
                if data is None
                else decode_manifest_rows(data, f"manifest {digest[:12]}", digest=digest)
            )
            self._manifests[digest] = files
        return files

    def folder_runs_for_file(self, recorded: str, digest: str) -> tuple[list[RunId], list[RunId]]:
        """Runs that wrote / read a recorded folder holding this file with these bytes."""
        key = (recorded, digest)
        if key not in self._folder_runs:
            self._folder_runs[key] = self._find_folder_runs(recorded, digest)
        return self._folder_runs[key]

    def _find_folder_runs(self, recorded: str, digest: str) -> tuple[list[RunId], list[RunId]]:
        produced: list[RunId] = []
        consumed: list[RunId] = []
        parts = recorded.split("/")
        for i in range(len(parts) - 1, 0, -1):
            folder = "/".join(parts[:i])
            rel = "/".join(parts[i:])
            p, c = (self.usable(ids) for ids in self.ledger.folder_runs(folder + "/"))
            for rid, bucket in [*((r, produced) for r in p), *((r, consumed) for r in c)]:
                rec = self.run(rid)
                for f in (*rec.inputs, *rec.outputs):
                    if f.kind != "dir" or f.path.rstrip("/") != folder:
                        continue
                    if self._manifest_files(f.hash).get(rel) == digest:
                        bucket.append(rid)
                        break
        return sorted(set(produced)), sorted(set(consumed))

    # -- shapes ---------------------------------------------------------------------------

    def artifact(self, digest: str, path: str | None = None) -> dict[str, Any]:
        produced, consumed = (self.usable(ids) for ids in self.ledger.artifact_runs(digest))
        if path and not produced and not consumed:
            produced, consumed = self.folder_runs_for_file(path, digest)
        size = None
        kind = "file"
        paths: list[str] = []
        for rid in [*produced, *consumed]:
            for f in (*self.run(rid).inputs, *self.run(rid).outputs):
                if f.hash == digest:
                    size = f.size
                    kind = f.kind
                    paths.append(f.path)
        if path:
            paths.append(path)
        if size is None and path:
            try:
                size = os.path.getsize(pathguard.abs_path(path, self.paths.root))
            except OSError:
                size = None
        by_time = sorted(produced, key=lambda r: self.run(r).started_at)
        return {
            "kind": "artifact",
            "hash": digest,
            "size": size,
            "type": kind,
            "paths": sorted(set(paths)),
            "produced_by": by_time,
            "consumed_by": sorted(consumed, key=lambda r: self.run(r).started_at),
        }

    def run_json(self, run_id: str) -> dict[str, Any]:
        return run_to_json(run_id, self.run(run_id), self.label(run_id), self.verifications(run_id))

    def verified(self, run_id: str) -> dict[str, int]:
        """How many reproductions of a run came out identical, different or failed."""
        counts = dict.fromkeys(("identical", "differs", "failed"), 0)
        for v in self.verifications(run_id):
            counts[v["result"]] += 1
        return counts

    def verifications(self, run_id: str) -> list[dict[str, Any]]:
        """The verifications of a run (reproductions that re-ran it), oldest first; one that
        cannot be read is skipped with a warning."""
        found = self._verifications.get(run_id)
        if found is None:
            found = []
            for vid, rec in self.ledger.verifications(run_id):
                if isinstance(rec, VerificationRecord):
                    found.append(verification_to_json(vid, rec))
                else:
                    self._warn(f"{rec} (skipped)")
            found.sort(key=lambda v: (v["at"], v["id"]))
            self._verifications[run_id] = found
        return found

    def _producers(self, digest: str) -> list[tuple[RunId, RunRecord]]:
        found = self._producer_cache.get(digest)
        if found is None:
            ids = self.usable(self.ledger.artifact_runs(digest)[0])
            found = self._producer_cache[digest] = list(zip(ids, self.runs(ids), strict=True))
        return found

    def producer(self, digest: str, path: str | None = None) -> RunId | None:
        """The run that made these bytes: the newest that wrote them at `path` (when given),
        else the newest that wrote them anywhere (successful ones first)."""
        return choose_producer(digest, path, self._producers(digest), None)[0]

    def input_producer(self, reader: str, f: FileRef) -> tuple[RunId | None, bool]:
        """(the run whose write `reader` read as input `f`, whether it was found by bytes
        alone): see `choose_producer`."""
        key = (reader, f.path, f.hash)
        found = self._links.get(key)
        if found is None:
            found = self._links[key] = choose_producer(
                f.hash, f.path, self._producers(f.hash), (reader, self.run(reader))
            )
        return found

    def lineage(self, target: Target, depth: int | None = None) -> dict[str, Any]:
        """Upstream of the target, back to source data (artifacts no recorded run produced).

        Each input links to the run whose write it read (`input_producer`), so two runs that
        happened to write the same bytes are never confused, and a run is never upstream of
        itself."""
        runs: list[str] = []
        links: list[dict[str, Any]] = []
        sources: dict[tuple[str, str], FileRef] = {}
        seen_runs: set[str] = set()
        queue: deque[tuple[str, int]] = deque()
        if target.kind == "run":
            queue.append((target.id, 1))
        else:
            first = self.producer(target.id, target.path)
            if first is not None:
                queue.append((first, 1))
        while queue:
            rid, level = queue.popleft()
            if rid in seen_runs:
                continue
            seen_runs.add(rid)
            runs.append(rid)
            for f in self.run(rid).inputs:
                producer, by_bytes = self.input_producer(rid, f)
                if producer is None:
                    sources.setdefault((f.path, f.hash), f)
                    continue
                links.append(
                    {
                        "run": rid,
                        "path": f.path,
                        "hash": f.hash,
                        "producer": producer,
                        "by_bytes": by_bytes,
                    }
                )
                if depth is None or level < depth:
                    queue.append((producer, level + 1))
        target_json = (
            self.artifact(target.id, target.path)
            if target.kind == "artifact"
            else self.run_json(target.id)
        )
        kept = set(runs)
        return {
            "target": target_json,
            "runs": [self.run_json(r) for r in runs],
            "links": [link for link in links if link["producer"] in kept],
            "sources": [
                {
                    "kind": "artifact",
                    "hash": f.hash,
                    "size": f.size,
                    "type": f.kind,
                    "paths": [f.path],
                }
                for f in sorted(sources.values(), key=lambda f: (f.path, f.hash))
            ],
        }

    def session_dag(self) -> dict[str, Any]:
        steps = [
            {
                "step": s.label,
                "run": s.run_id,
                "command": list(s.run.argv),
                "state": self._state_of(s.run_id),
                "depends_on": list(s.depends_on),
                "superseded": list(s.superseded),
                "outputs": [f.path for f in s.run.outputs],
                "verified": self.verified(s.run_id),
            }
            for s in self.view.steps
        ]
        return {"session": self.view.session_id, "steps": steps}

    def lineage_dag(self, target: Target, depth: int | None = None) -> dict[str, Any]:
        lin = self.lineage(target, depth)
        names = {r["id"]: r["step"] or r["id"][:12] for r in lin["runs"]}
        deps_of: dict[str, list[str]] = {}
        for link in lin["links"]:
            deps_of.setdefault(link["run"], []).append(names[link["producer"]])
        steps = []
        for r in _upstream_first(lin["runs"], lin["links"]):
            me = names[r["id"]]
            deps = deps_of.get(r["id"], [])
            steps.append(
                {
                    "step": me,
                    "run": r["id"],
                    "command": r["argv"],
                    "state": self._state_of(r["id"]),
                    "depends_on": list(dict.fromkeys(d for d in deps if d != me)),
                    "superseded": [],
                    "outputs": [f["path"] for f in r["outputs"]],
                    "verified": self.verified(r["id"]),
                }
            )
        return {"session": None, "target": lin["target"], "steps": steps}

    def stale(self) -> dict[str, Any]:
        """{label: staleness.Stale} of the session's stale steps, worked out once a command
        (their inputs hashed through the stat-keyed cache: unchanged files are not read)."""
        if self._stale is None:
            root, roar_dir = self.paths.root, self.paths.roar_dir
            found = stale_steps(self.view, root, HashCache(roar_dir), roar_dir)
            self._stale = {s.label: s for s in found}
        return self._stale

    def _state_of(self, run_id: str) -> str:
        for s in self.view.steps:
            if s.run_id == run_id:
                return "stale" if s.state == "ok" and s.label in self.stale() else s.state
            if run_id in s.superseded:
                return "superseded"
        return self.run(run_id).status

    def log(self, limit: int | None) -> list[dict[str, Any]]:
        """Runs, newest first, each once: a rewritten history merged with the original names
        the same runs in two commits."""
        out: list[dict[str, Any]] = []
        listed: set[str] = set()
        for ids in self.ledger.history():
            fresh = [r for r in dict.fromkeys(ids) if r not in listed]
            listed.update(fresh)
            for rid in self.usable(fresh, quiet_missing=True):
                rec = self.run(rid)
                out.append(
                    {
                        "id": rid,
                        "step": self.label(rid),
                        "session": rec.session,
                        "status": rec.status,
                        "exit_code": rec.exit_code,
                        "started_at": iso(rec.started_at),
                        "duration_s": round(rec.duration_ns / 1e9, 3),
                        "argv": list(rec.argv),
                        "recorded_by": who_json(rec),
                    }
                )
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def status(self) -> dict[str, Any]:
        cache = HashCache(self.paths.roar_dir)
        outputs = []
        files: list[tuple[str, str, FileRef, str]] = []
        root = self.paths.root
        for s in self.view.steps:
            for f in s.run.outputs:
                if f.kind == "file":
                    files.append((s.label, s.run_id, f, pathguard.abs_path(f.path, root)))
        # A path that fails the gate (`../x`, into .git) is never read: it shows as missing.
        readable = [a for _l, _r, f, a in files if not pathguard.problem(f.path, absolute_ok=True)]
        hashes = cache.hash_many(readable, missing_ok=True)
        for label, _rid, f, absolute in files:
            h = hashes.get(absolute)
            state = "missing" if h is None else ("present" if h.digest == f.hash else "modified")
            outputs.append({"step": label, "path": f.path, "hash": f.hash, "state": state})
        stale = [
            {
                "step": s.label,
                "run": s.run_id,
                "changes": [
                    {"path": c.path, "kind": c.kind, "old": c.old, "new": c.new} for c in s.changes
                ],
                "upstream": list(s.upstream),
            }
            for s in self.stale().values()
        ]
        return {
            "session": self.view.session_id,
            "outputs": outputs,
            "stale_steps": [s["step"] for s in stale],
            "stale": stale,
        }


def _upstream_first(
    runs: list[dict[str, Any]], links: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Runs ordered so that each comes after the runs whose outputs it read.

    Start time alone is not enough: clocks of two clones disagree, and a lineage may hold a
    re-run that started after a consumer of an earlier run's bytes."""
    deps: dict[str, list[str]] = {}
    for link in links:
        deps.setdefault(link["run"], []).append(link["producer"])
    by_id = {r["id"]: r for r in runs}
    ordered: list[dict[str, Any]] = []
    done: set[str] = set()
    # Depth-first post-order without recursion (lineages can be thousands of steps deep); a
    # cycle is cut where it closes.
    for r in sorted(runs, key=lambda r: (r["started_at"], r["id"])):
        if r["id"] in done:
            continue
        active = {r["id"]}
        stack = [(r["id"], iter(deps.get(r["id"], ())))]
        while stack:
            rid, pending = stack[-1]
            for dep in pending:
                if dep in by_id and dep not in done and dep not in active:
                    active.add(dep)
                    stack.append((dep, iter(deps.get(dep, ()))))
                    break
            else:
                stack.pop()
                active.discard(rid)
                done.add(rid)
                ordered.append(by_id[rid])
    return ordered


def _is_hex(text: str) -> bool:
    return bool(text) and set(text.lower()) <= HEX
