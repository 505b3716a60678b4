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
they meet (`hash_helper.Helper`), and whatever the helper could not settle is hashed here
again with every check above.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import stat as stat_mod
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path

from blake3 import blake3

from roargit import TYPE_CHECKING
from roargit.errors import FileChanged
from roargit.hash_rows import STAT_KEY, CacheDB
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor
    from typing import TypeVar

    StrPath = str | os.PathLike[str]
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
#: (`hash_helper.Helper`): it costs a Python start-up on another core.
_HELPER_FROM = 5000
#: How often a file that changes under us is re-read before `FileChanged` is raised.
RETRIES = 2
#: Default racy window (see module docstring): a second covers coarse-timestamp filesystems.
RACY_WINDOW_NS = 1_000_000_000

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


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
    return STAT_KEY.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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
            from roargit import bigfile  # lazy: threads, queues and mmap for big files only

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
    pack = STAT_KEY.pack
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
    from roargit.bigfile import CHUNK  # lazy: see _hash_path

    parts = [head]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _read_small(path: str) -> tuple[bytes, os.stat_result] | None:
    """The bytes of `path` and its stat, read as `_hash_path` reads a small file with no
    `before`, if it is a regular file no bigger than `_POOL_FROM` that held still while read;
    None for anything else (not there, not regular, big, changed while read, an error), which
    `_hash_path` is to hash with all its checks, or say what is wrong with it."""
    # The common case of a first hashing of many files, with the system calls of
    # `_hash_path` and as little else as can be: the Python around them costs as much as two.
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        size = before.st_size
        if size > _POOL_FROM or before.st_mode & 0o170000 != stat_mod.S_IFREG:
            return None
        # One byte more than stat promised, so that growth shows up as a size mismatch.
        data = os.read(fd, size + 1)
        after = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    # Stable: every byte accounted for, and the open file's stat unchanged by the read.
    if (
        len(data) != size
        or after.st_size != size
        or after.st_mtime_ns != before.st_mtime_ns
        or after.st_ctime_ns != before.st_ctime_ns
    ):
        return None
    return data, before


def _hash_fresh(
    todo: list[tuple[P, str, os.stat_result | None]],
    answered: Sequence[int],
    cache_before_ns: int,
    result: dict[P, FileHash],
    keys: dict[str, bytes] | None,
    rows: list[tuple[str, bytes, bytes]],
    other: Callable[[int], object],
) -> tuple[int, int, int]:
    """Hash `todo` from its end until `answered[0]` (a helper's count, working up from the
    start) is reached: the files with no row that `_read_small` reads, their results put
    where `_hash_todo`'s `take` puts them, with rows for those whose ctime is before
    `cache_before_ns`. Anything else (a row's stat to compare, or what `_read_small` leaves)
    is handed to `other` by index. Returns (where it stopped, files hashed here, bytes read
    here)."""
    read_small, pack = _read_small, STAT_KEY.pack
    at = len(todo)
    done = nbytes = 0
    while at > answered[0]:
        at -= 1
        original, abspath, st = todo[at]
        got = None if st is not None else read_small(abspath)
        if got is None:
            other(at)
            continue
        data, before = got
        raw = blake3(data).digest()
        size, ctime = len(data), before.st_ctime_ns
        key = pack(before.st_dev, before.st_ino, size, before.st_mtime_ns, ctime)
        result[original] = FileHash(raw.hex(), size)
        if keys is not None:
            keys[abspath] = key
        if ctime < cache_before_ns:
            rows.append((abspath, key, raw))
        done += 1
        nbytes += size
    return at, done, nbytes


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
        self._rows = CacheDB(self.path, self.stats)

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
        cached = self._rows.select([e[1] for e in entries])
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
        cached = self._rows.select(abspaths)
        result: dict[P, FileHash] = {}
        failed: list[OSError] = []
        # (path given, absolute path, its stat or None): a path the cache has no row for is
        # not stat-ed first; `_hash_path` takes its stat from the open file.
        todo: list[tuple[P, str, os.stat_result | None]]
        if cached:
            todo = []
            pack = STAT_KEY.pack
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
            todo = list(zip(originals, abspaths, repeat(None)))
        self.stats.hits += len(result)
        self.stats.misses += len(todo)
        if todo:
            self._hash_todo(todo, result, missing_ok, keys, errors, failed)
        if failed:
            raise failed[0]
        return result

    def close(self) -> None:
        self._rows.close()

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
        # and, when there are many, a helper process does a share of them
        # (`hash_helper.Helper`).
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
            from roargit.hash_helper import CACHEABLE, UNSETTLED, Helper  # lazy: big batches

            helper = Helper.start(list(map(itemgetter(1), todo)), window, self._rows.path)
        cached_by_helper = 0
        # Every read below begins after this instant, so a ctime older than it by the window
        # is older than the read by more than that (the racy rule, a little stricter).
        cache_before = time.time_ns() - window
        try:
            # The helper works from the front, this thread from the back, until they meet:
            # however busy either core is, neither waits for the other.
            meet, fresh, fresh_bytes = _hash_fresh(
                todo,
                [0] if helper is None else helper.counters,
                cache_before,
                result,
                keys,
                rows,
                lambda i: hash_items((todo[i],)),
            )
            seen += fresh
            nbytes += fresh_bytes
            if helper is not None:
                answers, caches = helper.finish(meet)
                redo = todo[len(answers) : meet]
                statuses = bytes(map(itemgetter(0), answers))
                if caches and UNSETTLED not in statuses:
                    # All settled, their rows written by the helper: taken in bulk.
                    mine, sizes = todo[: len(answers)], list(map(itemgetter(1), answers))
                    hexes = map(bytes.hex, map(itemgetter(3), answers))
                    hashes = map(FileHash._make, zip(hexes, sizes, strict=True))
                    result.update(zip(map(itemgetter(0), mine), hashes, strict=True))
                    if keys is not None:
                        got = map(itemgetter(2), answers)
                        keys.update(zip(map(itemgetter(1), mine), got, strict=True))
                    cached_by_helper += statuses.count(CACHEABLE)
                    nbytes += sum(sizes)
                    answers = []
                # `take` for the fields of each it answered, unrolled: many turns.
                for item, (status, size, key, raw) in zip(todo, answers, strict=False):
                    if not status:
                        redo.append(item)
                        continue
                    result[item[0]] = FileHash(raw.hex(), size)
                    if keys is not None:
                        keys[item[1]] = key
                    if status == CACHEABLE:
                        if caches:
                            cached_by_helper += 1
                        else:
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
            self.stats.bytes_read += nbytes
            # changed while read, or too recent
            self.stats.not_cached += seen - len(rows) - cached_by_helper
            self._rows.insert(rows)
            if helper is not None:
                helper.join()  # its rows are in too
        finally:
            if helper is not None:
                helper.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        if unstable and not failed:
            raise FileChanged(unstable)


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
