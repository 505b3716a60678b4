"""The ledger: every record, as git objects under `refs/roar/ledger`.

Each append is a commit whose tree fans out by id (the paths: ledger_layout), so that a
lookup reads a handful of tree objects however long the history is.

Every name is derived from content, so two ledgers can only ever disagree by having different
entries: merging is a union of trees and cannot conflict (ledger_merge). The ref moves only by
compare-and-swap (libgit2's under the ref's lock in process, `git update-ref REF NEW OLD`
otherwise); a writer that loses the race re-applies its entries on the new tip and tries
again (ledger_commit: the Ledger's writes). Nothing outside `refs/roar/` is touched.

An append edits the raw trees on the changed paths (ledger_trees; the trees it wrote last time stay
decoded, so the next append reads only the fan-out buckets it has not seen) and writes all its
new objects as one small pack; small packs are rolled into one now and then
(gitobjects.roll_up_small_packs). Both backends append this way; they differ in how trees are
read (pygit2, or `git cat-file` with `fast_start`) and how the ref moves.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence

from roargit import TYPE_CHECKING, loose_ref, records
from roargit.codec import record_id
from roargit.errors import RecordCorrupt, RecordTooNew, RoarError
from roargit.gitobjects import FastImport, NewEntry, ObjectReader
from roargit.ledger_commit import CommitWriter, LedgerBusy
from roargit.ledger_layout import (
    fanout,
    folder_key,
    input_set,
    run_entries,
)
from roargit.ledger_views import CatFileView, Pygit2View
from roargit.records import ArtifactId, RunId, RunRecord, SessionId, SessionRecord
from roargit.repo import RepoPaths

if TYPE_CHECKING:
    from typing import Any, TypeVar

    import pygit2

    from roargit import index_cache


LEDGER_REF = "refs/roar/ledger"
REMOTES_PREFIX = "refs/roar/remotes/"
TMP_PREFIX = "refs/roar/tmp/"

#: Each cat-file read is a pipe round trip; pygit2 reads in process but must be imported
#: first: past this many reads, its import costs less than the round trips it saves.
SWITCH_TO_PYGIT2_AT = 150

if TYPE_CHECKING:
    R = TypeVar("R", RunRecord, SessionRecord, records.VerificationRecord)

Entry = NewEntry  # one path to add: a blob's bytes, or an existing tree by id


class RecordMissing(RoarError, KeyError):
    """A record an index or a commit names is not in the ledger (a KeyError too, for callers
    that look records up like a mapping)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"record {name} is not in the ledger")

    def __str__(self) -> str:
        return str(self.args[0])


def _is_oid(text: str) -> bool:
    return len(text) in (40, 64) and not text.strip("0123456789abcdef")


def _plain(record_id: str) -> bool:
    """Whether an id can name a record: 64 lowercase hex (ids also come from commit messages,
    which another clone wrote)."""
    return len(record_id) == 64 and not record_id.strip("0123456789abcdef")


class Ledger:
    """The records under one ref. `fast_start` reads through the `git` executable and moves
    the ref with `git update-ref` (for `roar run` and the queries, whose start-up time is
    budgeted: no pygit2 import); otherwise pygit2 does both."""

    def __init__(
        self, paths: RepoPaths, ref: str = LEDGER_REF, *, fast_start: bool = False
    ) -> None:
        self.paths = paths
        self.ref = ref
        self.fast_start = fast_start
        self._repo: pygit2.Repository | None = None
        self._reader: ObjectReader | None = None
        # Reads see the ledger as of the first read: one ref read per command, not per lookup.
        # Writes always start from the live tip.
        self._view: Pygit2View | CatFileView | None = None
        self._reads = 0
        self._writer = CommitWriter()
        self._origins: dict[str, str] | None = None
        # The last session index read (session, its buckets by tree id): append_run keeps
        # the bucket its commit wrote (see index_cache).
        self._index_read: tuple[str, dict[str, index_cache.Bucket]] | None = None

    @property
    def repo(self) -> pygit2.Repository:
        if self._repo is None:
            import pygit2  # on first use: `fast_start` commands never open one

            self._repo = pygit2.Repository(str(self.paths.git_dir))
        return self._repo

    def reopen_repo(self) -> None:
        """Open a fresh repository on next use: libgit2 keeps deleted packs in its list (and
        tries each on a miss) after a roll-up removed them."""
        self._repo = None

    @property
    def reader(self) -> ObjectReader:
        if self._reader is None:
            self._reader = ObjectReader(self.paths.git_dir)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- reading ---------------------------------------------------------------------

    def tip(self, ref: str | None = None) -> str | None:
        """The commit a ref points at now (not the pinned read view)."""
        name = ref or self.ref
        if self.fast_start:
            # This ledger's own ref is read from its file where git keeps it there (no round
            # trip, and no wait for cat-file to start: `roar run` asks this first after the
            # command). A fetched one is asked of git, which checks it names a commit.
            if name == self.ref:
                known, value = loose_ref.read(self.paths.common_dir, name)
                if known:
                    return value
            found = self.reader.info(name)
            return None if found is None or found[1] != "commit" else found[0]
        try:
            target = self.repo.references[name].target
        except KeyError:
            return None
        return str(target)

    def _current(self) -> Pygit2View | CatFileView | None:
        if self._view is None:
            tip = self.tip()
            if tip is None:
                return None
            self.pin(tip)
        self._reads += 1
        if self._reads == SWITCH_TO_PYGIT2_AT and isinstance(self._view, CatFileView):
            # A command that reads this much (a long lineage, a diff) is past the point where
            # pygit2's import costs less than cat-file's round trips: same tip, faster reads.
            self._view = Pygit2View(self.repo, self._view.tip)
        return self._view

    def pin(self, tip: str) -> None:
        self._view = (
            CatFileView(self.reader, tip) if self.fast_start else Pygit2View(self.repo, tip)
        )

    def refresh(self) -> None:
        """See writes made by other processes since this ledger was first read."""
        self._view = None

    def _blob(self, *parts: str) -> bytes | None:
        view = self._current()
        return None if view is None else view.blob(parts)

    def _names(self, *parts: str) -> list[str]:
        view = self._current()
        return [] if view is None else view.names(parts)

    def _exists(self, *parts: str) -> bool:
        view = self._current()
        return view is not None and view.entry(parts) is not None

    def _read_record(self, data: bytes, name: str, expect_id: str) -> records.Record:
        if record_id(data) != expect_id:
            raise RecordCorrupt(
                name, "its content does not match its id", source=self.origin(expect_id)
            )
        try:
            return records.decode(data, name)
        except (RecordCorrupt, RecordTooNew):
            source = self.origin(expect_id)
            if source is None:
                raise
            # Decoded again only to name where it came from: this is the rare path.
            return records.decode(data, name, source=source)

    def run(self, run_id: str) -> RunRecord:
        return self._typed(("runs", *fanout(run_id), run_id), run_id, "run", RunRecord)

    def runs(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """`run` of each id, read together (one round trip per batch with `fast_start`)."""
        out = []
        for r in self.runs_or_errors(run_ids):
            if isinstance(r, RoarError):
                raise r
            out.append(r)
        return out

    def runs_or_errors(self, run_ids: Sequence[str]) -> list[RunRecord | RoarError]:
        """`runs`, where a record that is missing or cannot be used is its error instead
        (RecordMissing, RecordCorrupt, RecordTooNew): one bad record must not hide the rest."""
        if not run_ids:
            return []
        view = self._current()
        found = (
            [None] * len(run_ids)
            if view is None
            else view.blobs([("runs", *fanout(r), r) for r in run_ids if _plain(r)])
        )
        it = iter(found)
        out: list[RunRecord | RoarError] = []
        for r in run_ids:
            try:
                out.append(self._checked(next(it) if _plain(r) else None, r, "run", RunRecord))
            except RoarError as exc:
                out.append(exc)
        return out

    def session(self, session_id: str) -> SessionRecord:
        where = ("sessions", session_id[:2], session_id, "session")
        return self._typed(where, session_id, "session", SessionRecord)

    def _typed(self, where: tuple[str, ...], record_id: str, what: str, kind: type[R]) -> R:
        """The record stored at `where`, checked against its id and type; RecordMissing (a
        KeyError) if none."""
        data = self._blob(*where) if _plain(record_id) else None
        return self._checked(data, record_id, what, kind)

    def _checked(self, data: bytes | None, record_id: str, what: str, kind: type[R]) -> R:
        name = f"{what} {record_id[:12]}"
        if data is None:
            raise RecordMissing(name)
        record = self._read_record(data, name, record_id)
        if not isinstance(record, kind):
            raise RecordCorrupt(name, f"is not a {what} record")
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
        return self._exists("artifacts", *fanout(digest), digest)

    def artifact_runs(self, digest: str) -> tuple[list[RunId], list[RunId]]:
        """(runs that produced it, runs that consumed it): consumers filed under the artifact
        itself (`c.`) and under each input set that holds it (`s.`), sorted by id."""
        produced: list[RunId] = []
        consumed: set[str] = set()
        sets: list[tuple[str, ...]] = []
        view = self._current()
        if view is None:
            return produced, []
        for name in view.names(("artifacts", *fanout(digest), digest)):
            tag, rest = name[:2], name[2:]
            if tag == "p.":
                produced.append(RunId(rest))
            elif tag == "c.":
                consumed.add(rest)
            elif tag == "s." and _plain(rest):
                sets.append(("inputsets", *fanout(rest), rest))
        for names in view.names_many(sets):
            consumed.update(n[2:] for n in names if n.startswith("c."))
        return produced, [RunId(r) for r in sorted(consumed)]

    def producers(self, digest: str) -> list[RunId]:
        """The runs that produced an artifact (`artifact_runs`' first half, without reading
        its consumers' input sets)."""
        names = self._names("artifacts", *fanout(digest), digest)
        return [RunId(n[2:]) for n in names if n.startswith("p.")]

    def folder_runs(self, path: str) -> tuple[list[RunId], list[RunId]]:
        """(runs that wrote, runs that read) the folder recorded at `path`."""
        key = folder_key(path)
        produced: list[RunId] = []
        consumed: list[RunId] = []
        for name in self._names("folders", key[:2], key):
            (produced if name[0] == "p" else consumed).append(RunId(name[2:]))
        return produced, consumed

    def manifest(self, digest: str) -> bytes | None:
        return self._blob("manifests", *fanout(digest), digest)

    def has_manifest(self, digest: str) -> bool:
        """Whether manifest `digest` is stored, asked without reading it (the manifest of
        100,000 files is 8 MB)."""
        return self._exists("manifests", *fanout(digest), digest)

    def sessions(self) -> list[SessionId]:
        buckets = self._names("sessions")
        return [SessionId(n) for b in buckets for n in self._names("sessions", b)]

    def session_runs(self, session_id: str) -> list[RunId]:
        runs: list[RunId] = []
        where = ("sessions", session_id[:2], session_id)
        view = self._current()
        if view is None:
            return runs
        buckets = [(*where, b) for b in view.names(where) if b != "session"]
        for names in view.names_many(buckets):
            runs.extend(RunId(n) for n in names if not n.startswith("i."))
        return runs

    def session_index(self, session_id: str) -> list[tuple[RunId, records.StepIndex | None]]:
        """Each run of the session with its index entry; None where it has none that can be
        used (a run recorded before the index was kept, an entry that does not decode or
        names another run): the caller derives that one from the run's record. Reads the
        session's small index blobs, never its run records."""
        where = ("sessions", session_id[:2], session_id)
        view = self._current()
        if view is None or not _plain(session_id):
            return []
        # lazy: `roar run` loads it while its command runs (capture._load_after_command)
        from roargit import index_cache

        # Buckets whose tree this clone has decoded before come from its cache (a run adds
        # one entry: one bucket is read, not the whole session; index_cache.py).
        roar_dir = self.paths.roar_dir
        kept = index_cache.load(roar_dir, SessionId(session_id))
        listing = [(b, oid) for b, oid in view.listing(where) if b != "session"]
        todo = [b for b, oid in listing if oid not in kept]
        fresh = dict(zip(todo, self._index_buckets(view, where, todo), strict=True))
        buckets = {oid: kept[oid] if oid in kept else fresh[b] for b, oid in listing}
        if len(todo) >= index_cache.SAVE_AT:
            index_cache.save(roar_dir, SessionId(session_id), buckets)
        self._index_read = (session_id, buckets)
        return [pair for bucket in buckets.values() for pair in bucket]

    def _index_buckets(
        self, view: Pygit2View | CatFileView, where: tuple[str, ...], names: list[str]
    ) -> list[index_cache.Bucket]:
        """Each named bucket of a session's index, read from the ledger: its runs, each with
        its index entry or None (see session_index)."""
        session_id = where[-1]
        out: list[index_cache.Bucket] = []
        listed = view.names_many([(*where, b) for b in names])
        wanted = [
            (b, n[2:]) for b, ns in zip(names, listed, strict=True) for n in ns if n[:2] == "i."
        ]
        blobs = view.blobs([(*where, b, f"i.{r}") for b, r in wanted])
        found: dict[str, records.StepIndex] = {}
        for (_, rid), data in zip(wanted, blobs, strict=True):
            if data is None:
                continue
            try:
                entry = records.decode_step_index(data, f"index entry of run {rid[:12]}")
            except (RecordCorrupt, RecordTooNew):
                continue
            if entry.run == rid and entry.session == session_id:
                found[rid] = entry
        for ns in listed:
            runs = [RunId(n) for n in ns if not n.startswith("i.") and _plain(n)]
            out.append([(r, found.get(r)) for r in runs])
        return out

    def history(self) -> Iterator[list[str]]:
        """The record ids each ledger commit added (from its message), newest commit first,
        read lazily: `roar log -n 20` reads about 20 commits, however long the history."""
        import heapq  # lazy: the history's readers only

        tip = self.tip()
        if tip is None:
            return
        counter = itertools.count()
        heap: list[tuple[int, int, str, list[str], list[str]]] = []

        def push(oid: str) -> None:
            obj = self.reader.read(oid)
            if obj is None or obj.type != "commit":
                if oid == tip:
                    raise RecordCorrupt(f"ledger commit {oid[:12]}", "cannot be read")
                return  # a parent a shallow fetch left out, or a fetched one that lies
            # Commits merged from other clones are theirs: nothing here may be taken on trust.
            head, _, message = obj.data.decode(errors="replace").partition("\n\n")
            parents, when = [], 0
            for line in head.splitlines():
                if line.startswith("parent ") and _is_oid(line[7:]):
                    parents.append(line[7:])
                elif line.startswith("committer "):
                    stamp = line.rsplit(" ", 2)
                    when = int(stamp[-2]) if len(stamp) == 3 and stamp[-2].isdigit() else 0
            ids = [
                words[1]
                for words in map(str.split, message.splitlines())
                if len(words) == 2 and words[0] == "run"
            ]
            heapq.heappush(heap, (-when, next(counter), oid, parents, ids))

        seen = {tip}
        push(tip)
        while heap:
            _when, _n, _oid, parents, ids = heapq.heappop(heap)
            yield ids
            for parent in parents:
                if parent not in seen:
                    seen.add(parent)
                    push(parent)

    # -- writing ---------------------------------------------------------------------

    def append_run(
        self, record: RunRecord, extra: Sequence[Entry] = (), index: bool = True
    ) -> RunId:
        run_id, data = records.identify(record)
        filed = index and self._set_filed(record)
        entries = run_entries(run_id, data, record, index, set_filed=filed)
        self.commit([*entries, *extra], f"run {run_id}")
        self._keep_index_bucket(run_id, record)
        return RunId(run_id)

    def _keep_index_bucket(self, run_id: str, record: RunRecord) -> None:
        """Keep, in this clone's session-index cache, the bucket the run's commit wrote: the
        bucket it was made on (as read by session_index) and the run's own entry, under the
        new bucket's tree id. The next run then reads no bucket from git. Nothing is kept
        where the bucket it was made on is not known here."""
        read, parents, written = self._index_read, self._writer.parent_folders, self._writer.written
        if read is None or read[0] != record.session or parents is None or written is None:
            return
        # lazy: with the cache's other readers (session_index)
        from roargit import index_cache

        sid, buckets = read
        parent = parents.get(("sessions", sid[:2], sid, run_id[:2]))
        before = [] if parent is None else buckets.get(parent[0].hex())
        # The bucket written is the one new tree that names the run's index entry.
        name = b" i.%s\0" % run_id.encode()
        new = next((o for o, (k, d) in written.items() if k == b"tree" and name in d), None)
        if before is None or new is None:
            return
        entry = records.StepIndex.of_run(run_id, record)
        bucket = sorted([*before, (RunId(run_id), entry)], key=lambda pair: pair[0])
        kept = {oid: b for oid, b in buckets.items() if parent is None or oid != parent[0].hex()}
        kept[new.hex()] = bucket
        index_cache.save(self.paths.roar_dir, SessionId(sid), kept)
        self._index_read = (sid, kept)

    def _set_filed(self, record: RunRecord) -> bool:
        """Whether the run's input set is in the ledger at its live tip. A set is only ever
        there with its `s.` entry under every artifact it holds (written in one commit, and
        a merge takes a fetched set only with all of them), and no commit removes entries."""
        found = input_set(f.hash for f in record.inputs)
        tip = self.tip()
        if found is None or tip is None:
            return False
        set_id = found[0]
        view = CatFileView(self.reader, tip) if self.fast_start else Pygit2View(self.repo, tip)
        return view.entry(("inputsets", *fanout(set_id), set_id, "set")) is not None

    def append_verification(self, record: records.VerificationRecord) -> str:
        vid, data = records.identify(record)
        where = ("verifications", *fanout(record.run), record.run, vid)
        self.commit([Entry(where, data)], f"verification {vid}")
        return vid

    def verifications(
        self, run_id: str
    ) -> list[tuple[str, records.VerificationRecord | RoarError]]:
        """(id, record or why it cannot be used) of each verification of a run. A record
        that verifies another run than the one it is filed under is refused."""
        if not _plain(run_id):
            return []
        where = ("verifications", *fanout(run_id), run_id)
        names = [n for n in self._names(*where) if _plain(n)]
        view = self._current()
        found = [] if view is None else view.blobs([(*where, n) for n in names])
        out: list[tuple[str, records.VerificationRecord | RoarError]] = []
        for vid, data in zip(names, found, strict=True):
            try:
                rec = self._checked(data, vid, "verification", records.VerificationRecord)
                if rec.run != run_id:
                    raise RecordCorrupt(
                        f"verification {vid[:12]}", f"does not verify run {run_id[:12]}"
                    )
                out.append((vid, rec))
            except RoarError as exc:
                out.append((vid, exc))
        return out

    def append_session(self, record: SessionRecord) -> SessionId:
        session_id, data = records.identify(record)
        entry = Entry(("sessions", session_id[:2], session_id, "session"), data)
        self.commit([entry], f"session {session_id}")
        return SessionId(session_id)

    def import_records(
        self, items: Iterable[records.Record], per_commit: int = 100, when: int | None = None
    ) -> str:
        """Bulk imports for fixtures and benchmarks: many records appended at once through one
        `git fast-import` (`per_commit` records a commit). The ref moves by one compare-and-swap
        at the end: if another writer moved it meanwhile, LedgerBusy and nothing changes."""
        old = self.tip()
        scratch = f"{TMP_PREFIX}{os.getpid()}-import"
        writer = FastImport(self.paths.git_dir, scratch, old)
        entries: list[Entry] = []
        ids: list[str] = []
        total = 0
        for record in items:
            total += 1
            rid, data = records.identify(record)
            if isinstance(record, RunRecord):
                entries.extend(run_entries(rid, data, record))
                ids.append(f"run {rid}")
            else:
                entries.append(Entry(("sessions", rid[:2], rid, "session"), data))
                ids.append(f"session {rid}")
            if len(ids) >= per_commit:
                writer.commit(entries, "\n".join(reversed(ids)), when)
                entries, ids = [], []
        if ids:
            writer.commit(entries, "\n".join(reversed(ids)), when)
        new = writer.finish()
        if not self.swap(old, new, f"import of {total} record(s)", scratch):
            raise LedgerBusy(self.ref, 1)
        self.pin(new)
        return new

    def commit(self, entries: Sequence[Entry], message: str) -> str:
        """Add entries in one commit on the ledger ref, retrying until the CAS wins."""
        return self._writer.commit(self, entries, message)

    def swap(self, old: str | None, new: str, message: str, scratch: str | None = None) -> bool:
        """Move the ref from `old` to `new` if it still points at `old` (one transaction,
        which also drops a bulk import's scratch ref)."""
        return self._writer.swap(self, old, new, message, scratch)

    def origin(self, record_id: str) -> str | None:
        """The remote a record arrived from by a merge; None if it was recorded here (or
        arrived before origins were kept)."""
        if self._origins is None:
            # lazy: the merge gate's module, which a run that only appends never needs
            from roargit.ledger_check import read_origins

            self._origins = read_origins(self.paths.roar_dir)
        return self._origins.get(record_id)

    def noted_origins(self, remote: str, ids: list[str]) -> None:
        """Records `ids` arrived from `remote` by a merge (ledger_merge): kept in the map
        `origin` reads, if it was read already."""
        if self._origins is not None:
            for rid in ids:
                self._origins.setdefault(rid, remote)


def load_pygit2() -> Any:
    """pygit2, imported when a caller first needs it (`fast_start` commands never do)."""
    import pygit2

    return pygit2
