"""The ledger: every record, as git objects under `refs/roar/ledger`.

Each append is a commit whose tree fans out by id, so that a lookup reads a handful of tree
objects however long the history is:

    runs/ab/cd/<run id>                  the run record (blob)
    artifacts/ab/cd/<hash>/p.<run id>    that run produced the artifact (same blob)
    artifacts/ab/cd/<hash>/c.<run id>    that run consumed it
    sessions/<session id>/session        the session record
    sessions/<session id>/ab/<run id>    a run of that session
    manifests/ab/cd/<hash>               a folder artifact's manifest (blob)
    folders/ab/<path key>/p.<run id>     a run wrote the folder at that path (key: hash
    folders/ab/<path key>/c.<run id>       of the recorded path), to find it from a file
    code/<tree id>                       a code state the runs saw (tree), kept reachable

Every name is derived from content, so two ledgers can only ever disagree by having different
entries: merging is a union of trees and cannot conflict. The ref moves only by
compare-and-swap (`git update-ref REF NEW OLD`); a writer that loses the race re-applies its
entries on the new tip and tries again. Nothing outside `refs/roar/` is touched.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pygit2

from roargit import records
from roargit.errors import GitFailed, RecordCorrupt, RoarError
from roargit.git import run_git
from roargit.records import ArtifactId, RunId, RunRecord, SessionId, SessionRecord
from roargit.repo import RepoPaths

LEDGER_REF = "refs/roar/ledger"
REMOTES_PREFIX = "refs/roar/remotes/"

BLOB = int(pygit2.enums.FileMode.BLOB)
TREE = int(pygit2.enums.FileMode.TREE)
GIT_TREE = pygit2.enums.ObjectType.TREE

MAX_ATTEMPTS = 400


class LedgerBusy(RoarError):
    def __init__(self, ref: str, attempts: int) -> None:
        super().__init__(f"could not update {ref} after {attempts} attempts: too many writers")


@dataclass(frozen=True, slots=True)
class Entry:
    """One path to add to the ledger tree."""

    path: tuple[str, ...]
    oid: pygit2.Oid
    mode: int = BLOB


def fanout(hexid: str) -> tuple[str, str]:
    return hexid[:2], hexid[2:4]


def folder_key(path: str) -> str:
    from roargit.codec import record_id

    return record_id(path.rstrip("/").encode("utf-8", "surrogateescape"))


def _signature() -> pygit2.Signature:
    return pygit2.Signature("roar", "roar@localhost", int(time.time()), 0)


class Ledger:
    def __init__(self, paths: RepoPaths, ref: str = LEDGER_REF) -> None:
        self.paths = paths
        self.ref = ref
        self.repo = pygit2.Repository(str(paths.git_dir))
        # Reads see the ledger as of the first read (one ref read per command, not per
        # lookup); subtrees already walked are kept. Writes always start from the live tip.
        self._view: tuple[pygit2.Oid, pygit2.Tree] | None = None
        self._subtrees: dict[tuple[str, ...], Any] = {}

    # -- reading ---------------------------------------------------------------------

    def tip(self, ref: str | None = None) -> pygit2.Oid | None:
        try:
            target = self.repo.references[ref or self.ref].target
        except KeyError:
            return None
        return target if isinstance(target, pygit2.Oid) else None

    def tree(self) -> pygit2.Tree | None:
        if self._view is None:
            tip = self.tip()
            if tip is None:
                return None
            self._pin(tip)
        return self._view[1] if self._view else None

    def _pin(self, tip: pygit2.Oid) -> None:
        self._view = (tip, self.repo[tip].peel(pygit2.Tree))
        self._subtrees = {}

    def refresh(self) -> None:
        """See writes made by other processes since this ledger was first read."""
        self._view = None

    def _lookup(self, *parts: str) -> Any:
        """The object at a path in the read view, or None."""
        obj: Any = self.tree()
        if obj is None:
            return None
        depth = len(parts)
        # Start from the deepest subtree already walked on this path.
        start = 0
        for k in range(depth, 0, -1):
            hit = self._subtrees.get(parts[:k])
            if hit is not None:
                obj, start = hit, k
                break
        for k in range(start, depth):
            part = parts[k]
            if obj.type != GIT_TREE or part not in obj:
                return None
            obj = obj[part]
            if obj.type == GIT_TREE:
                self._subtrees[parts[: k + 1]] = obj
        return obj

    def _names(self, *parts: str) -> list[str]:
        obj = self._lookup(*parts)
        if obj is None or obj.type != GIT_TREE:
            return []
        return [e.name for e in obj]

    def _read_record(self, data: bytes, name: str, expect_id: str) -> records.Record:
        from roargit.codec import record_id

        if record_id(data) != expect_id:
            raise RecordCorrupt(name, "its content does not match its id")
        return records.decode(data, name)

    def run(self, run_id: str) -> RunRecord:
        blob = self._lookup("runs", *fanout(run_id), run_id)
        if blob is None:
            raise KeyError(run_id)
        record = self._read_record(blob.data, f"run {run_id[:12]}", run_id)
        if not isinstance(record, RunRecord):
            raise RecordCorrupt(f"run {run_id[:12]}", "is not a run record")
        return record

    def session(self, session_id: str) -> SessionRecord:
        blob = self._lookup("sessions", session_id, "session")
        if blob is None:
            raise KeyError(session_id)
        record = self._read_record(blob.data, f"session {session_id[:12]}", session_id)
        if not isinstance(record, SessionRecord):
            raise RecordCorrupt(f"session {session_id[:12]}", "is not a session record")
        return record

    def find_runs(self, prefix: str) -> list[RunId]:
        """Run ids starting with `prefix` (at least 4 hex, so the fan-out narrows it)."""
        return [RunId(n) for n in self._fanout_names("runs", prefix)]

    def find_artifacts(self, prefix: str) -> list[ArtifactId]:
        return [ArtifactId(n) for n in self._fanout_names("artifacts", prefix)]

    def _fanout_names(self, top: str, prefix: str) -> list[str]:
        if len(prefix) < 4:
            raise ValueError("prefix lookups need at least 4 hex characters")
        return sorted(n for n in self._names(top, *fanout(prefix)) if n.startswith(prefix))

    def has_artifact(self, digest: str) -> bool:
        return self._lookup("artifacts", *fanout(digest), digest) is not None

    def artifact_runs(self, digest: str) -> tuple[list[RunId], list[RunId]]:
        """(runs that produced it, runs that consumed it)."""
        produced: list[RunId] = []
        consumed: list[RunId] = []
        for name in self._names("artifacts", *fanout(digest), digest):
            (produced if name[0] == "p" else consumed).append(RunId(name[2:]))
        return produced, consumed

    def folder_runs(self, path: str) -> tuple[list[RunId], list[RunId]]:
        """(runs that wrote, runs that read) the folder recorded at `path`."""
        key = folder_key(path)
        produced: list[RunId] = []
        consumed: list[RunId] = []
        for name in self._names("folders", key[:2], key):
            (produced if name[0] == "p" else consumed).append(RunId(name[2:]))
        return produced, consumed

    def manifest(self, digest: str) -> bytes | None:
        blob = self._lookup("manifests", *fanout(digest), digest)
        return None if blob is None else bytes(blob.data)

    def sessions(self) -> list[SessionId]:
        return [SessionId(n) for n in self._names("sessions")]

    def session_runs(self, session_id: str) -> list[RunId]:
        runs: list[RunId] = []
        for bucket in self._names("sessions", session_id):
            if bucket != "session":
                runs.extend(RunId(n) for n in self._names("sessions", session_id, bucket))
        return runs

    def history(self) -> Iterator[tuple[pygit2.Commit, list[str]]]:
        """Commits newest first, each with the record ids it added (from its message)."""
        tip = self.tip()
        if tip is None:
            return
        for commit in self.repo.walk(tip, pygit2.enums.SortMode.TIME):
            ids = [
                line.split()[1]
                for line in commit.message.splitlines()
                if line.startswith("run ") and len(line.split()) > 1
            ]
            yield commit, ids

    # -- writing ---------------------------------------------------------------------

    def blob(self, data: bytes) -> pygit2.Oid:
        return self.repo.create_blob(data)

    def entries_for_run(self, run_id: str, data: bytes, record: RunRecord) -> list[Entry]:
        oid = self.blob(data)
        entries = [
            Entry(("runs", *fanout(run_id), run_id), oid),
            Entry(("sessions", record.session, run_id[:2], run_id), oid),
        ]
        for tag, files in (("c", record.inputs), ("p", record.outputs)):
            for f in files:
                entries.append(
                    Entry(("artifacts", *fanout(f.hash), f.hash, f"{tag}.{run_id}"), oid)
                )
                if f.kind == "dir":
                    key = folder_key(f.path)
                    entries.append(Entry(("folders", key[:2], key, f"{tag}.{run_id}"), oid))
        if record.code.tree:
            entries.append(
                Entry(("code", record.code.tree), pygit2.Oid(hex=record.code.tree), TREE)
            )
        return entries

    def append_run(self, record: RunRecord, extra: Sequence[Entry] = ()) -> RunId:
        run_id, data = records.identify(record)
        self.commit([*self.entries_for_run(run_id, data, record), *extra], f"run {run_id}")
        return RunId(run_id)

    def append_session(self, record: SessionRecord) -> SessionId:
        session_id, data = records.identify(record)
        entry = Entry(("sessions", session_id, "session"), self.blob(data))
        self.commit([entry], f"session {session_id}")
        return SessionId(session_id)

    def manifest_entry(self, digest: str, data: bytes) -> Entry:
        return Entry(("manifests", *fanout(digest), digest), self.blob(data))

    def commit(self, entries: Sequence[Entry], message: str) -> pygit2.Oid:
        """Add entries in one commit on the ledger ref, retrying until the CAS wins."""
        for attempt in range(MAX_ATTEMPTS):
            old = self.tip()
            base = self.repo[old].peel(pygit2.Tree) if old is not None else None
            tree = build_tree(self.repo, base, entries)
            if old is not None and base is not None and tree == base.id:
                return old  # every entry was there already
            parents = [old] if old is not None else []
            new = self.repo.create_commit(None, _signature(), _signature(), message, tree, parents)
            if self._swap(old, new, message):
                self._pin(new)
                return new
            # Lost the race: back off a little (jittered, growing) and re-apply on the new tip.
            time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
        raise LedgerBusy(self.ref, MAX_ATTEMPTS)

    def _swap(self, old: pygit2.Oid | None, new: pygit2.Oid, message: str) -> bool:
        zero = "0" * len(str(new))
        try:
            run_git(
                ["update-ref", "-m", f"roar: {message[:60]}", self.ref, str(new), str(old or zero)],
                self.paths.git_dir,
            )
        except GitFailed as exc:
            err = exc.stderr.decode(errors="replace")
            if "lock" in err or "but expected" in err or "is at" in err or "already exists" in err:
                return False
            raise
        return True

    # -- merging -----------------------------------------------------------------------

    def merge(self, other: pygit2.Oid, message: str = "merge") -> pygit2.Oid | None:
        """Union another ledger commit into ours; returns the new tip (None if nothing to do)."""
        for _attempt in range(MAX_ATTEMPTS):
            old = self.tip()
            if old == other:
                return None
            if old is None:
                new = other
            elif self.repo.descendant_of(old, other):
                return None
            elif self.repo.descendant_of(other, old):
                new = other  # fast-forward
            else:
                ours = self.repo[old].peel(pygit2.Tree)
                theirs = self.repo[other].peel(pygit2.Tree)
                tree = union_trees(self.repo, ours, theirs)
                new = self.repo.create_commit(
                    None, _signature(), _signature(), message, tree, [old, other]
                )
            if self._swap(old, new, message):
                self._pin(new)
                return new
            time.sleep(random.uniform(0, 0.01))
        raise LedgerBusy(self.ref, MAX_ATTEMPTS)

    def remote_refs(self) -> list[str]:
        return sorted(
            r
            for r in self.repo.references
            if r.startswith(REMOTES_PREFIX) and r.endswith("/ledger")
        )

    def sync_remotes(self) -> list[str]:
        """Merge every fetched remote ledger not merged yet; returns the refs merged."""
        merged = []
        for ref in self.remote_refs():
            tip = self.tip(ref)
            if tip is not None and self.merge(tip, f"merge {ref}") is not None:
                merged.append(ref)
        return merged


def build_tree(repo: pygit2.Repository, base: Any, entries: Iterable[Entry]) -> pygit2.Oid:
    """`base` with entries added, writing only the trees on the changed paths."""
    here: list[Entry] = []
    below: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        if len(e.path) == 1:
            here.append(e)
        else:
            below[e.path[0]].append(Entry(e.path[1:], e.oid, e.mode))
    builder = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
    for e in here:
        builder.insert(e.path[0], e.oid, e.mode)
    for name, sub in below.items():
        sub_base = None
        if base is not None and name in base:
            obj = base[name]
            if obj.type == GIT_TREE:
                sub_base = obj
        builder.insert(name, build_tree(repo, sub_base, sub), TREE)
    return builder.write()


def union_trees(repo: pygit2.Repository, ours: Any, theirs: Any) -> pygit2.Oid:
    """The union of two ledger trees. Identical subtrees are skipped by id, so this reads
    only where the two histories differ."""
    if ours.id == theirs.id:
        return ours.id
    builder = repo.TreeBuilder(ours)
    for entry in theirs:
        name = entry.name
        if name not in ours:
            builder.insert(name, entry.id, entry.filemode)
            continue
        mine = ours[name]
        if mine.id == entry.id:
            continue
        if mine.type == GIT_TREE and entry.type == GIT_TREE:
            builder.insert(name, union_trees(repo, mine, entry), TREE)
        elif entry.id < mine.id:
            # Names are content-derived, so this cannot happen between honest ledgers; keep
            # a deterministic winner so both sides of a merge agree.
            builder.insert(name, entry.id, entry.filemode)
    return builder.write()
