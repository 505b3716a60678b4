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

Reading one file, and telling whether it held still meanwhile, is roargit/stable_read.py's.
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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path

from blake3 import blake3

from roargit import TYPE_CHECKING, stable_read
from roargit.errors import FileChanged
from roargit.hash_rows import STAT_KEY, CacheDB
from roargit.stable_read import (
    Deferred,
    Hashed,
    check_regular,
    hash_path,
    hash_stable,
    read_small,
    settle,
    stat_key,
)
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor
    from typing import TypeVar

    StrPath = str | os.PathLike[str]
    P = TypeVar("P", bound="str | os.PathLike[str]")

#: Above this size the hasher may use all cores (blake3's tree hashing pays off).
MULTITHREAD_FROM = 1 << 20
#: A batch of at least this many files to hash shares them with a helper process
#: (`hash_helper.Helper`): it costs a Python start-up on another core.
_HELPER_FROM = 5000
#: Default racy window (see module docstring): a second covers coarse-timestamp filesystems.
RACY_WINDOW_NS = 1_000_000_000


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
    result = hash_stable(p)
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
    start) is reached: the files with no row that `read_small` reads, their results put
    where `_hash_todo`'s `take` puts them, with rows for those whose ctime is before
    `cache_before_ns`. Anything else (a row's stat to compare, or what `read_small` leaves)
    is handed to `other` by index. Returns (where it stopped, files hashed here, bytes read
    here)."""
    read, pack = read_small, STAT_KEY.pack
    at = len(todo)
    done = nbytes = 0
    while at > answered[0]:
        at -= 1
        original, abspath, st = todo[at]
        got = None if st is not None else read(abspath)
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
            if row is not None and row[0] == stat_key(st):
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
        # not stat-ed first; `hash_path` takes its stat from the open file.
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
                        check_regular(st, abspath)
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
                    check_regular(st, abspath)
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

        def take(original: P, abspath: str, h: Hashed) -> None:
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
        futures: list[tuple[P, str, Future[Hashed]]] = []
        pool: ThreadPoolExecutor | None = None
        threads = self.workers > 1
        # One bound for both: what `read_small` leaves above it is what the pool takes.
        pool_from = stable_read.POOL_FROM

        def hash_items(items: Iterable[tuple[P, str, os.stat_result | None]]) -> None:
            nonlocal pool
            for original, abspath, st in items:
                try:
                    h = hash_path(abspath, st, pool_from)
                    if not h.stable:
                        h = settle(abspath, h)
                except Deferred as deferred:
                    big.append((original, abspath, deferred.st))
                    if threads and len(big) > 1:
                        if pool is None:
                            from concurrent.futures import ThreadPoolExecutor  # lazy

                            pool = ThreadPoolExecutor(self.workers, thread_name_prefix="roar-hash")
                        for o, a, s in big:
                            futures.append((o, a, pool.submit(hash_stable, a, s)))
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
                    take(original, abspath, hash_stable(abspath, st))
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
