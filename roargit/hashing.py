"""BLAKE3 of files and bytes, and a stat-keyed cache so an unchanged file is read once.

An artifact is named by the BLAKE3-256 of its bytes (64 lowercase hex). `hash_file` reads a
file in constant memory; `HashCache` remembers, per absolute path, the digest together with
the file's (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns), so asking again about an
unchanged file costs one `stat` and no reads.

Cache design (all of it derived, rebuildable state):

- One SQLite database `<state_dir>/hashcache.sqlite` in WAL mode with a busy timeout, so
  many processes (64 concurrent `roar run`s) read it without blocking and write it one
  transaction at a time. Each `hash_many` does one bulk lookup and at most one write
  transaction.
- A row holds the entries of the files of one folder whose names fall in one of 16 buckets
  (SQLite's cost is per row, and a run reads and writes files by the folder; the buckets
  keep a change in a huge folder from rewriting all its entries). A write merges into the
  rows inside its write transaction, so concurrent writers to one folder lose nothing.
  Entries of files since deleted stay until their row is damaged or the schema changes.
- A row is trusted only if the packed stat key matches exactly. A path with no row is not
  stat-ed first: it is opened at once (O_NONBLOCK, so a FIFO cannot hang us) and its stat
  taken from the open file. A row is *written* only if the file's stat did not change while
  it was read, and if its ctime is older than the start of the read by more than
  `racy_window_ns`. The second rule is git's "racy clean" problem: file timestamps have a
  coarse granularity (a kernel tick on ext4, a second on some network filesystems), so a
  same-size rewrite within one tick of our read would leave an identical stat key over
  different bytes. ctime rather than mtime because `utime` can move mtime into the past
  (tar, rsync -t) but always sets ctime to now. Such a file is still hashed and returned,
  just not remembered; the next call re-reads it once and caches it then.
- A file whose stat differs before and after the read was being written while we read it;
  its digest names bytes that may never have existed together. It is re-read (twice at most)
  and, if it keeps changing, `FileChanged` is raised. It is never cached.
- A corrupt database (SQLITE_CORRUPT / SQLITE_NOTADB) is deleted and rebuilt; any other
  database failure (locked past the timeout, read-only folder, disk full) degrades to hashing
  without the cache for that call. The cache never breaks a run.

Big files are hashed from a memory map under a read lease where one can be had, else with
read() (roargit/bigfile.py), several at a time in a thread pool. Small files cost system
calls and a little Python each, under the GIL, which threads cannot overlap: a batch of
many is worked through by a helper process from the front and this one from the back until
they meet (`_Helper`), and whatever the helper could not settle is hashed here again with
every check above.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import marshal
import os
import stat as stat_mod
import struct
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, Union

from blake3 import blake3

from roargit import bigfile
from roargit.bigfile import CHUNK
from roargit.errors import FileChanged
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    import sqlite3
    from concurrent.futures import Future, ThreadPoolExecutor

StrPath = Union[str, "os.PathLike[str]"]
P = TypeVar("P", bound="str | os.PathLike[str]")

#: Files up to this size are read whole and hashed with one call (one read, one hasher).
SMALL_FILE = 1 << 20
#: Above this size the hasher may use all cores (blake3's tree hashing pays off).
MULTITHREAD_FROM = 1 << 20
#: Files at least this big are hashed from a memory map where a read lease can be had.
MMAP_FROM = 8 << 20
#: Files above this size are hashed in the thread pool (see `HashCache._hash_all`).
_POOL_FROM = 256 << 10
#: A batch of at least this many files to hash shares them with a helper process
#: (`_Helper`): it costs a Python start-up on another core.
_HELPER_FROM = 5000
#: How often a file that changes under us is re-read before `FileChanged` is raised.
RETRIES = 2
#: Default racy window (see module docstring): a second covers coarse-timestamp filesystems.
RACY_WINDOW_NS = 1_000_000_000

_STAT_KEY = struct.Struct("<QQQqq")
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
_SCHEMA_VERSION = 5
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# Paths per range query in a lookup; also the IN-list size of the fallback (SQLite allows
# 32766 host parameters since 3.32, 999 before).
_RANGE = 900


class FileHash(NamedTuple):
    digest: str
    size: int


class CacheStats:
    """Counters for one `HashCache` instance: how much work the cache saved. (A plain class:
    a dataclass costs a millisecond or more to define, on every `roar run`.)"""

    __slots__ = ("bytes_read", "cache_errors", "helped", "hits", "misses", "not_cached")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.bytes_read = 0
        #: hashed but not remembered: changed during the read, or too recent (racy)
        self.not_cached = 0
        #: the database was unusable once and the call ran without it
        self.cache_errors = 0
        #: of the misses, hashed by the helper process
        self.helped = 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__)
        return f"CacheStats({fields})"


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """BLAKE3-256 of `data` as 64 lowercase hex."""
    threads = blake3.AUTO if len(data) >= MULTITHREAD_FROM else 1
    return blake3(data, max_threads=threads).hexdigest()


def hash_file(path: StrPath) -> FileHash:
    """BLAKE3-256 and size of the file at `path`, read in constant memory.

    Raises `FileChanged` if the file keeps changing while it is read, OSError as `open` does,
    and IsADirectoryError / OSError(EINVAL) for something that is not a regular file.
    """
    p = os.fspath(path)
    result = _hash_stable(p)
    if result.stable:
        return FileHash(result.digest, result.size)
    raise FileChanged([p])


def _abspath(path: StrPath) -> str:
    p = os.fspath(path)
    # Most callers hand over clean absolute paths; normpath costs more than these tests.
    if p[:1] == "/" and "/." not in p and "//" not in p and p[-1:] != "/":
        return p
    return os.path.abspath(p)


def _abspaths(paths: list[P]) -> list[str]:
    """`_abspath` of each path, for many at once: when all are clean absolute `str`s, as
    most callers' are, one check over them all instead of one a path."""
    if paths and set(map(type, paths)) == {str}:
        joined = "\0".join(paths)  # type: ignore[arg-type]  # all str, checked above
        if (
            joined[0] == "/"
            and joined.count("\0") == joined.count("\0/") == len(paths) - 1
            and "/." not in joined
            and "//" not in joined
            and "/\0" not in joined
            and joined[-1] != "/"
        ):
            return paths  # type: ignore[return-value]
    return [_abspath(p) for p in paths]


def _stat_key(st: os.stat_result) -> bytes:
    # st_dev/st_ino are unsigned 64-bit; SQLite integers are signed, so the key is packed.
    return _STAT_KEY.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Hashed(NamedTuple):
    raw: bytes  # the 32-byte digest
    size: int
    key: bytes  # stat key taken before the read
    stable: bool  # stat identical before and after, and every byte accounted for
    started_ns: int  # wall clock when the read began
    ctime_ns: int

    @property
    def digest(self) -> str:
        return self.raw.hex()


def _check_regular(st: os.stat_result, path: str) -> None:
    if stat_mod.S_ISREG(st.st_mode):
        return
    if stat_mod.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    raise OSError(errno.EINVAL, "not a regular file", path)


class _Deferred(Exception):
    """`_hash_path` found a file bigger than it was asked to hash: `st` is its stat."""

    def __init__(self, st: os.stat_result) -> None:
        self.st = st


def _hash_path(
    path: str, before: os.stat_result | None = None, defer_from: int = sys.maxsize
) -> _Hashed:
    """Hash one file; `before` is its stat if the caller just took one (saves an fstat).
    A file above `defer_from` bytes is not read: `_Deferred` is raised with its stat."""
    # This runs once per file of a big tree: it is kept flat on purpose. On small files the
    # five system calls are most of the cost, so no other work is done per file that a
    # batch could do once.
    started = time.time_ns()
    try:
        # O_NONBLOCK: a FIFO must not hang us (with no `before`, the fstat below finds it);
        # O_NOCTTY: nor a terminal become ours.
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if before is None and not isinstance(exc, FileNotFoundError):
            # Say what it is, as a stat first would have (a socket fails with ENXIO).
            _check_regular(os.stat(path), path)
        raise
    try:
        if before is None:
            before = os.fstat(fd)
            if not stat_mod.S_ISREG(before.st_mode):
                _check_regular(before, path)
        size = before.st_size
        if size > defer_from:
            raise _Deferred(before)
        if size <= SMALL_FILE:
            # One byte more than stat promised, so that growth shows up as a size mismatch.
            # (Never a fixed large buffer: os.read allocates what it is asked for.)
            data = os.read(fd, size + 1)
            if len(data) != size:
                data = _drain(fd, data)
            nread = len(data)
            raw = blake3(data).digest()
        else:
            hasher = blake3(max_threads=blake3.AUTO)
            nread = bigfile.hash_mapped(fd, hasher) if size >= MMAP_FROM else 0
            # read() the rest: all of it without a lease, what a writer kept us from, or
            # what has grown since (one byte tells; spares a reader thread)
            if nread < size or os.pread(fd, 1, nread):
                os.lseek(fd, nread, os.SEEK_SET)
                nread += bigfile.hash_piped(fd, hasher)
            raw = hasher.digest()
        after = os.fstat(fd)
    finally:
        os.close(fd)
    # `after` is of the open file, `before` may be of the path: the inode check catches a
    # file replaced in between (then this is simply retried). Same fields as the key.
    pack = _STAT_KEY.pack
    ctime = before.st_ctime_ns
    key = pack(before.st_dev, before.st_ino, size, before.st_mtime_ns, ctime)
    stable = nread == size and key == pack(
        after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns
    )
    return _Hashed(raw, nread, key, stable, started, ctime)


def _hash_stable(path: str, before: os.stat_result | None = None) -> _Hashed:
    """`_hash_path`, re-read while the file changes under us (`RETRIES` times at most)."""
    return _settle(path, _hash_path(path, before))


def _settle(path: str, h: _Hashed) -> _Hashed:
    """`h`, or `path` read again while it keeps changing (`RETRIES` times at most)."""
    for _ in range(RETRIES):
        if h.stable:
            break
        h = _hash_path(path)
    return h


def _drain(fd: int, head: bytes) -> bytes:
    """The rest of a file whose size was not what fstat said (a short read, or growth)."""
    parts = [head]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


class HashCache:
    """Digest cache for files, in `<state_dir>/hashcache.sqlite` (see the module docstring).

    `state_dir` is roar's local state folder (e.g. `<repo>/.git/roar`); it is created if
    missing. One instance belongs to one thread; processes each open their own.
    """

    FILENAME = "hashcache.sqlite"

    def __init__(
        self,
        state_dir: StrPath,
        *,
        racy_window_ns: int = RACY_WINDOW_NS,
        workers: int | None = None,
    ) -> None:
        self.path = Path(state_dir) / self.FILENAME
        self.racy_window_ns = racy_window_ns
        self.workers = workers or os.cpu_count() or 1
        self.stats = CacheStats()
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    # -- public API ----------------------------------------------------------------------

    def hash_file(self, path: StrPath) -> FileHash:
        """Like `hash_file`, through the cache."""
        p = os.fspath(path)
        return self.hash_many([p])[p]

    def lookup_many(self, paths: Iterable[P]) -> dict[P, FileHash]:
        """Cached digests of those `paths` whose stat still matches; reads no file content.

        Paths that are missing, changed or unknown are simply absent from the result.
        """
        found: dict[P, FileHash] = {}
        entries = self._stat_all(paths, missing_ok=True)
        cached = self._select([e[1] for e in entries])
        for original, abspath, st in entries:
            row = cached.get(abspath)
            if row is not None and row[0] == _stat_key(st):
                found[original] = FileHash(row[1], st.st_size)
        return found

    def hash_many(
        self,
        paths: Iterable[P],
        *,
        missing_ok: bool = False,
        keys: dict[str, bytes] | None = None,
        errors: dict[P, OSError] | None = None,
    ) -> dict[P, FileHash]:
        """Digest and size of every path, keyed by the path objects given.

        Unchanged files come from the cache without being read; the rest are hashed (on
        several cores where there are big ones or many, see the module docstring) and
        written to the cache in one transaction. With `missing_ok`, a path that does not
        exist (or vanishes before it is read) is left out instead of raising
        FileNotFoundError. A file that keeps changing while it is read raises `FileChanged`
        (after the others were cached).

        `keys`, when given, is filled with the stat key of each file in the result, by
        absolute path: `<QQQqq` of (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of the
        stat its digest was checked or made against (for `folders.stat_digest_of_keys`).

        `errors`, when given, takes each path that could not be stat-ed or read (no
        permission, not a regular file, an I/O error) with its OSError, and the path is left
        out of the result instead of the whole call failing.
        """
        with _gc_paused():
            return self._hash_many(paths, missing_ok=missing_ok, keys=keys, errors=errors)

    def _hash_many(
        self,
        paths: Iterable[P],
        *,
        missing_ok: bool,
        keys: dict[str, bytes] | None,
        errors: dict[P, OSError] | None = None,
    ) -> dict[P, FileHash]:
        originals = list(paths)
        abspaths = _abspaths(originals)
        cached = self._select(abspaths)
        result: dict[P, FileHash] = {}
        failed: list[OSError] = []
        # (path given, absolute path, its stat or None): a path the cache has no row for is
        # not stat-ed first; `_hash_path` takes its stat from the open file.
        todo: list[tuple[P, str, os.stat_result | None]]
        if cached:
            todo = []
            pack = _STAT_KEY.pack
            stat, isreg = os.stat, stat_mod.S_ISREG  # hot loop: 100,000 turns
            for original, abspath in zip(originals, abspaths, strict=True):
                row = cached.get(abspath)
                if row is None:
                    todo.append((original, abspath, None))
                    continue
                try:
                    st = stat(abspath)
                    if not isreg(st.st_mode):
                        _check_regular(st, abspath)
                except OSError as exc:
                    self._stat_failed(original, abspath, exc, missing_ok, errors, failed)
                    continue
                key = pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if row[0] == key:
                    result[original] = FileHash(row[1], st.st_size)
                    if keys is not None:
                        keys[abspath] = key
                else:
                    todo.append((original, abspath, st))
        else:
            # nothing to compare
            todo = [(o, a, None) for o, a in zip(originals, abspaths, strict=True)]
        self.stats.hits += len(result)
        self.stats.misses += len(todo)
        if todo:
            self._hash_todo(todo, result, missing_ok, keys, errors, failed)
        if failed:
            raise failed[0]
        return result

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hashing -------------------------------------------------------------------------

    def _stat_all(
        self,
        paths: Iterable[P],
        *,
        missing_ok: bool,
        errors: dict[P, OSError] | None = None,
    ) -> list[tuple[P, str, os.stat_result]]:
        out: list[tuple[P, str, os.stat_result]] = []
        stat, isreg = os.stat, stat_mod.S_ISREG  # hot loop: 100,000 turns
        for original in paths:
            abspath = _abspath(original)
            try:
                st = stat(abspath)
                if not isreg(st.st_mode):
                    _check_regular(st, abspath)
            except FileNotFoundError:
                if missing_ok:
                    continue
                if errors is None:
                    raise
                errors[original] = FileNotFoundError(errno.ENOENT, "no such file", abspath)
                continue
            except OSError as exc:
                if errors is None:
                    raise
                errors[original] = exc
                continue
            out.append((original, abspath, st))
        return out

    def _stat_failed(
        self,
        original: P,
        abspath: str,
        exc: OSError,
        missing_ok: bool,
        errors: dict[P, OSError] | None,
        failed: list[OSError],
    ) -> None:
        """File an error about one path: skipped (missing), in `errors`, or to be raised."""
        if isinstance(exc, FileNotFoundError):
            if missing_ok:
                return
            exc = FileNotFoundError(errno.ENOENT, "no such file", abspath)
        elif not exc.filename:  # read() names no file: `errors` callers want the path
            exc = type(exc)(exc.errno, exc.strerror, abspath)
        if errors is not None:
            errors[original] = exc
        else:
            failed.append(exc)

    def _hash_todo(
        self,
        todo: list[tuple[P, str, os.stat_result | None]],
        result: dict[P, FileHash],
        missing_ok: bool,
        keys: dict[str, bytes] | None,
        errors: dict[P, OSError] | None,
        failed: list[OSError],
    ) -> None:
        """Hash `todo` into `result` and `keys`, cache what may be cached, and raise
        `FileChanged` (after the caching) for files that kept changing while read."""
        rows: list[tuple[str, bytes, bytes]] = []
        unstable: list[str] = []
        window = self.racy_window_ns
        nbytes = seen = 0

        def take(original: P, abspath: str, h: _Hashed) -> None:
            nonlocal nbytes, seen
            seen += 1
            nbytes += h.size
            if not h.stable:
                unstable.append(abspath)
                return
            result[original] = FileHash(h.raw.hex(), h.size)
            if keys is not None:
                keys[abspath] = h.key
            if h.ctime_ns < h.started_ns - window:
                rows.append((abspath, h.key, h.raw))

        # Threads pay only where the GIL is released for long: reading and hashing big
        # files. For small files the per-file Python work holds the GIL, so more threads
        # hash them no faster; they stay on this thread, which works through them while the
        # pool does the big ones (from the second one found: one alone is not worth a pool),
        # and, when there are many, a helper process does a share of them (`_Helper`).
        big: list[tuple[P, str, os.stat_result]] = []
        futures: list[tuple[P, str, Future[_Hashed]]] = []
        pool: ThreadPoolExecutor | None = None
        threads = self.workers > 1

        def hash_items(items: Iterable[tuple[P, str, os.stat_result | None]]) -> None:
            nonlocal pool
            for original, abspath, st in items:
                try:
                    h = _hash_path(abspath, st, _POOL_FROM)
                    if not h.stable:
                        h = _settle(abspath, h)
                except _Deferred as deferred:
                    big.append((original, abspath, deferred.st))
                    if threads and len(big) > 1:
                        if pool is None:
                            from concurrent.futures import ThreadPoolExecutor  # lazy

                            pool = ThreadPoolExecutor(self.workers, thread_name_prefix="roar-hash")
                        for o, a, s in big:
                            futures.append((o, a, pool.submit(_hash_stable, a, s)))
                        big.clear()
                    continue
                except OSError as exc:
                    self.stats.misses -= 1
                    self._stat_failed(original, abspath, exc, missing_ok, errors, failed)
                    continue
                take(original, abspath, h)

        helper = None
        if threads and len(todo) >= _HELPER_FROM:
            # It takes each stat from the open file, row or not.
            helper = _Helper.start([a for _, a, _ in todo])
        try:
            if helper is None:
                hash_items(todo)
            else:
                # The helper works from the front, this thread from the back, until they
                # meet: however busy either core is, neither waits for the other.
                meet = len(todo)

                def from_the_back() -> Iterator[tuple[P, str, os.stat_result | None]]:
                    nonlocal meet
                    while meet > len(helper.done):
                        meet -= 1
                        yield todo[meet]

                hash_items(from_the_back())
                redo = []
                # `take` for the stable `_Hashed` fields it answered, unrolled: many turns.
                for item, got in zip(todo[:meet], helper.stop()[:meet], strict=True):
                    if got is None:
                        redo.append(item)
                        continue
                    raw, size, key, _stable, started, ctime = got
                    result[item[0]] = FileHash(raw.hex(), size)
                    if keys is not None:
                        keys[item[1]] = key
                    if ctime < started - window:
                        rows.append((item[1], key, raw))
                    nbytes += size
                seen += meet - len(redo)
                self.stats.helped += meet - len(redo)
                hash_items(redo)
            for original, abspath, st in big:
                try:
                    take(original, abspath, _hash_stable(abspath, st))
                except OSError as exc:
                    self.stats.misses -= 1
                    self._stat_failed(original, abspath, exc, missing_ok, errors, failed)
            for original, abspath, fut in futures:
                try:
                    take(original, abspath, fut.result())
                except OSError as exc:
                    self.stats.misses -= 1
                    self._stat_failed(original, abspath, exc, missing_ok, errors, failed)
        finally:
            if helper is not None:
                helper.stop()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        self.stats.bytes_read += nbytes
        self.stats.not_cached += seen - len(rows)  # changed while read, or too recent
        self._insert(rows)
        if unstable and not failed:
            raise FileChanged(unstable)

    # -- the database --------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        import sqlite3  # on first use: a run that hashes nothing never loads it

        if self._db is not None and self._pid == os.getpid():
            return self._db
        # A connection inherited across fork must not be used by the child.
        self._db = None
        try:
            db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            self._discard_files()
            db = self._open()
        self._db, self._pid = db, os.getpid()
        return db

    def _open(self) -> sqlite3.Connection:
        import sqlite3  # as in _connect: only a run that hashes loads it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer waits for
        # the lock up front (honouring the busy timeout) instead of failing on upgrade.
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        # A damaged value may read back as TEXT, and not UTF-8: as bytes, the crc tells.
        db.text_factory = bytes
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL loses at most the last transactions on power loss, never
            # consistency; fine for derived state.
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != _SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version != _SCHEMA_VERSION:
                    db.execute("DROP TABLE IF EXISTS files")  # schema 3 and before
                    db.execute("DROP TABLE IF EXISTS dirs")
                    db.execute(
                        # Rows hold files by the folder, not one each: SQLite's cost is per
                        # row, and a run reads and writes files by the folder. dir: the
                        # file-system encoding of the folder's path (names need not be
                        # UTF-8), NUL, and the bucket of the names (`_BUCKETS`). names: the
                        # files' names joined by NUL. vals: per name, in that order, the
                        # 40-byte stat key then the 32-byte digest. crc guards each row from
                        # a damaged page that still parses (SQLite has no page checksums).
                        "CREATE TABLE dirs (dir BLOB PRIMARY KEY, names BLOB NOT NULL,"
                        " vals BLOB NOT NULL, crc INTEGER NOT NULL) WITHOUT ROWID"
                    )
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _discard_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def _failed(self, exc: BaseException) -> None:
        """Forget the connection after a database error; delete a corrupt database.

        Derived state: a broken cache costs a re-hash, never the run.
        """
        import sqlite3  # as in _connect: only a run that hashes loads it

        self.stats.cache_errors += 1
        self.close()
        if isinstance(exc, sqlite3.DatabaseError) and _is_corrupt(exc):
            with contextlib.suppress(OSError):
                self._discard_files()

    def _select(self, abspaths: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        """Cached (stat key, digest) for those of `abspaths` the database knows."""
        if not abspaths:
            return {}
        import sqlite3  # as in _connect: only a run that hashes loads it

        try:
            db = self._connect()
            db.execute("BEGIN")  # one read snapshot across all queries
            try:
                found, damaged = _select_rows(db, abspaths)
            finally:
                db.execute("COMMIT")
            # A damaged row is a miss; the re-hash replaces it.
            self.stats.cache_errors += damaged
            return found
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return {}

    def _insert(self, rows: list[tuple[str, bytes, bytes]]) -> None:
        """Remember (absolute path, stat key, digest) `rows`, merged into their folders'."""
        if not rows:
            return
        import sqlite3  # as in _connect: only a run that hashes loads it

        fresh: dict[tuple[str, int], dict[str, bytes]] = {}
        crc32 = zlib.crc32
        for path, key, digest in rows:
            folder, _, name = path.rpartition("/")
            slot = (folder, crc32(name.encode(_FS_ENCODING, _FS_ERRORS)) & _BUCKET_MASK)
            entries = fresh.get(slot)
            if entries is None:
                fresh[slot] = entries = {}
            entries[name] = key + digest
        by_dir = {_fsencode(f) + _BUCKETS[b]: entries for (f, b), entries in fresh.items()}
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")  # the merge reads what is there under the lock
            try:
                for bdir, names, vals in _sound_rows(db, by_dir)[0]:
                    merged = dict(zip(names, _split_vals(vals), strict=True))
                    merged.update(by_dir[bdir])
                    by_dir[bdir] = merged
                out = []
                # Sorted: B-tree inserts in key order touch each page once.
                for bdir, entries in sorted(by_dir.items()):
                    bnames = "\0".join(entries).encode(_FS_ENCODING, _FS_ERRORS)
                    vals = b"".join(entries.values())
                    out.append((bdir, bnames, vals, _crc(bdir, bnames, vals)))
                db.executemany("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?)", out)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)


class _Helper:
    """A second process that hashes many small files alongside this one.

    Small files cost a few system calls and some Python each, all under the GIL: threads
    cannot overlap that work, a process can. It runs `_hash_path` on the paths it is given,
    in order, and answers in frames of `_FRAME` paths, per path the fields of a stable
    `_Hashed`, or None for anything else (a big file, an error, a file that changed while
    read), which is then hashed here again with all the checks and retries. `done` holds
    the answers so far; if it cannot start or fails, it simply answers no more.
    """

    def __init__(self, paths: list[str]) -> None:
        import subprocess  # only a batch of many files starts one
        import threading

        self.done: list[Any] = []
        request = marshal.dumps(paths)
        package_parent = str(Path(__file__).resolve().parents[1])
        self._proc = subprocess.Popen(
            # -I: nothing from the environment or the current folder (a `blake3.py` in the
            # repository must not be what is imported).
            [sys.executable, "-I", "-c", _HELPER_MAIN, package_parent],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        # Threads feed it and read its answers, so that no side waits on a full pipe.
        self._threads = [
            threading.Thread(target=self._feed, args=(request,), name="roar-helper", daemon=True),
            threading.Thread(target=self._read, name="roar-helper", daemon=True),
        ]
        try:
            for thread in self._threads:
                thread.start()
        except BaseException:
            self._proc.kill()  # a thread could not start: the feeder, if any, sees EPIPE
            self._end()
            raise

    @classmethod
    def start(cls, paths: list[str]) -> _Helper | None:
        try:
            return cls(paths)
        # No interpreter to start (sys.executable empty or gone), no thread to be had.
        except (OSError, ValueError, RuntimeError):
            return None

    def _feed(self, request: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        with contextlib.suppress(OSError, ValueError), stdin:
            stdin.write(request)

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
            while len(head := stdout.read(4)) == 4:
                frame = marshal.loads(stdout.read(int.from_bytes(head, "little")))
                if not isinstance(frame, list):
                    break
                self.done.extend(frame)  # one step under the GIL: readers see whole frames

    def stop(self) -> list[Any]:
        """End it (it may be mid-way) and return its answers, one per path from the first."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._end()
        return self.done

    def _end(self) -> None:
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()


#: Paths per answer frame of the helper: small enough that its progress shows often.
_FRAME = 256

_HELPER_MAIN = """
import sys
sys.path[:0] = [sys.argv[1]]
from roargit.hashing import _serve_helper
_serve_helper(sys.stdin.buffer, sys.stdout.buffer)
"""


def _serve_helper(requests: BinaryIO, answers: BinaryIO) -> None:
    """The helper process's work (see `_Helper`)."""
    paths = marshal.load(requests)
    for i in range(0, len(paths), _FRAME):
        out: list[tuple[Any, ...] | None] = []
        for path in paths[i : i + _FRAME]:
            try:
                h = _hash_path(path, None, _POOL_FROM)  # small files only: blake3 on one thread
            except Exception:  # the caller hashes it again, and says what failed
                out.append(None)
                continue
            out.append(tuple(h) if h.stable else None)
        frame = marshal.dumps(out)
        answers.write(len(frame).to_bytes(4, "little") + frame)
        answers.flush()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the cyclic collector out of a batch that makes a few containers a file and no
    cycles: with many files it would run full collections over every live object, again and
    again, a large share of a first hashing of many small files."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _fsencode(path: str) -> bytes:
    # os.fsencode, minus its checks: twice as fast, and this runs once per path.
    return path.encode(_FS_ENCODING, _FS_ERRORS)


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


_ROW_LEN = _STAT_KEY.size + 32
#: A folder's files are spread over this many rows by their names' crc32, so that a change
#: to one file of a huge folder rewrites a part of its entries, not all of them.
_BUCKET_MASK = 15
#: Row key = the folder's path, NUL (no path has one), the bucket.
_BUCKETS = [b"\0" + bytes([i]) for i in range(_BUCKET_MASK + 1)]


def _crc(bdir: bytes, bnames: bytes, vals: bytes) -> int:
    return zlib.crc32(vals, zlib.crc32(bnames, zlib.crc32(bdir)))


def _split_vals(vals: bytes) -> list[bytes]:
    return [vals[i : i + _ROW_LEN] for i in range(0, len(vals), _ROW_LEN)]


def _sound_rows(
    db: sqlite3.Connection, want: Mapping[bytes, object]
) -> tuple[list[tuple[bytes, list[str], bytes]], int]:
    """The rows of the folders in `want` as (dir, names, vals), and how many were damaged."""
    out = []
    damaged = 0
    for bdir, bnames, vals, crc in _candidate_rows(db, want):
        if bdir not in want:
            continue
        names = bnames.decode(_FS_ENCODING, _FS_ERRORS).split("\0")
        if len(vals) != _ROW_LEN * len(names) or _crc(bdir, bnames, vals) != crc:
            damaged += 1
            continue
        out.append((bdir, names, vals))
    return out, damaged


def _select_rows(
    db: sqlite3.Connection, abspaths: Sequence[str]
) -> tuple[dict[str, tuple[bytes, str]], int]:
    """Rows for `abspaths` as {path: (stat key, hex digest)}, and how many were damaged."""
    if db.execute("SELECT 1 FROM dirs LIMIT 1").fetchone() is None:
        return {}, 0  # a new cache: spare the grouping below
    # {(folder, bucket): [(name, path)]}
    want: dict[tuple[str, int], list[tuple[str, str]]] = {}
    crc32 = zlib.crc32
    for path in abspaths:
        folder, _, name = path.rpartition("/")
        slot = (folder, crc32(name.encode(_FS_ENCODING, _FS_ERRORS)) & _BUCKET_MASK)
        pairs = want.get(slot)
        if pairs is None:
            want[slot] = [(name, path)]
        else:
            pairs.append((name, path))
    by_dir = {_fsencode(f) + _BUCKETS[b]: pairs for (f, b), pairs in want.items()}
    found: dict[str, tuple[bytes, str]] = {}
    klen = _STAT_KEY.size
    rows, damaged = _sound_rows(db, by_dir)
    for bdir, cached, vals in rows:
        at = dict(zip(cached, range(0, len(vals), _ROW_LEN), strict=True))
        for name, path in by_dir[bdir]:
            i = at.get(name)
            if i is not None:
                found[path] = (vals[i : i + klen], vals[i + klen : i + _ROW_LEN].hex())
    return found, damaged


def _candidate_rows(db: sqlite3.Connection, want: Mapping[bytes, object]) -> Iterable[Any]:
    """Rows that include those for `want`'s folders, fetched the cheapest way measured.

    A scan of the whole table is cheapest when the request is most of it; otherwise range
    scans over the sorted request, cheaper than `dir IN (...)` lists (SQLite sorts each
    list), which are cheaper than one query a folder. Ranges may also return cached folders
    that sort between the requested ones -- LIMIT caps that, and a range that hits it (a
    request sparse among many cached folders) falls back to IN for its folders.
    """
    if len(want) >= 5000:
        (count,) = db.execute("SELECT count(*) FROM dirs").fetchone()
        if count <= 2 * len(want):
            return db.execute("SELECT dir, names, vals, crc FROM dirs")
    wanted = sorted(want)
    rows: list[Any] = []
    for i in range(0, len(wanted), _RANGE):
        part = wanted[i : i + _RANGE]
        limit = 4 * len(part) + 64
        got = db.execute(
            "SELECT dir, names, vals, crc FROM dirs WHERE dir BETWEEN ? AND ? LIMIT ?",
            (part[0], part[-1], limit),
        ).fetchall()
        if len(got) == limit:
            marks = ",".join("?" * len(part))
            query = f"SELECT dir, names, vals, crc FROM dirs WHERE dir IN ({marks})"
            got = db.execute(query, part).fetchall()
        rows += got
    return rows


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "not a database" in text or "malformed" in text
