"""A second process that hashes a share of many small files while roar hashes the rest.

Small files cost a few system calls and some Python each, all under the GIL: threads cannot
overlap that work, a process can (hashing.HashCache starts one for a batch of
hashing._HELPER_FROM files or more). What it answers is checked as every hash is: anything it
could not settle is hashed again in roar with every check and retry.

The two share a memory file (a memfd; else an unlinked temporary file): the request (the
paths, NUL-separated) and the answers, one fixed-size record a path, behind a header of two
counters: how many paths the helper has answered, and where roar asks it to stop. So there is
no pipe to keep from filling, no thread in roar to read one (each would take the GIL from
roar's own hashing), and nothing to decode: roar looks at a counter between its own files.
Once stopped, the helper says so on its stdout (after which its records are all roar's to
read: the pipe orders the memory writes) and writes the cache rows of the files it hashed,
while roar takes its answers and writes its own rows.
"""

from __future__ import annotations

import bisect
import mmap
import os
import select
import struct
import sys
import time
from pathlib import Path

from blake3 import blake3

from roargit import TYPE_CHECKING, hashing, stable_read
from roargit.hash_rows import STAT_KEY, CacheDB

if TYPE_CHECKING:
    import subprocess

#: The header's counters, in the machine's own byte order (both ends are on one machine):
#: paths answered from the first, then roar's stop (the index the two met at, plus one).
_HEADER = struct.Struct("=QQ")
#: A path's answer: status, size, stat key, digest. Records the helper never wrote are zeros.
RECORD = struct.Struct("<BQ40s32s")
#: Record statuses: not settled (hash it again), stable, stable and old enough to be cached
#: (hashing's racy rule).
UNSETTLED, STABLE, CACHEABLE = 0, 1, 2
#: How long roar waits for a stopped helper to say so (it checks between two files) before
#: it is killed, and its rows are written by roar.
STOP_TIMEOUT_S = 5.0

_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class Helper:
    """A second process that hashes `paths` from the first, alongside this one.

    It reads each as `stable_read.read_small` does, writes a record for each it settled, then
    moves `counters[0]` past it. `finish` stops it and returns the records; one it did not
    write, or did not settle (a big file, an error, a file that changed while read), reads as
    UNSETTLED. If it cannot start or fails, it simply answers no more.
    """

    def __init__(self, paths: list[str], racy_window_ns: int, cache_db: Path) -> None:
        import subprocess  # only a batch of many files starts one

        request = "\0".join(paths).encode(_FS_ENCODING, _FS_ERRORS)
        if request.count(b"\0") != len(paths) - 1:
            raise ValueError("a path holds NUL")
        answers = _HEADER.size + RECORD.size * len(paths)
        fd = _shared_file()
        try:
            os.ftruncate(fd, answers + len(request))
            os.pwrite(fd, request, answers)
            self._map = mmap.mmap(fd, answers + len(request))
            # -I: nothing from the environment or the current folder (a `blake3.py` in the
            # repository must not be what is imported).
            argv = [sys.executable, "-I", "-c", _HELPER_MAIN, str(Path(__file__).parents[1])]
            try:
                self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                    [*argv, str(fd), str(len(paths)), str(racy_window_ns), os.fspath(cache_db)],
                    pass_fds=(fd,),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            except BaseException:
                self._map.close()
                raise
        finally:
            os.close(fd)
        self.size = len(paths)
        #: [answered, stop]: `counters[0]` paths from the first are answered.
        self.counters = memoryview(self._map)[: _HEADER.size].cast("Q")

    @classmethod
    def start(cls, paths: list[str], racy_window_ns: int, cache_db: Path) -> Helper | None:
        try:
            return cls(paths, racy_window_ns, cache_db)
        # No interpreter to start (sys.executable empty or gone), no memory file to be had.
        except (OSError, ValueError, RuntimeError):
            return None

    def finish(self, meet: int) -> tuple[list[tuple[int, int, bytes, bytes]], bool]:
        """Stop it at `meet` (this side hashed the rest) and return its records for the paths
        before `meet` (fewer if it answered fewer), and whether it writes the cacheable ones
        to the cache itself: if it does not say it stopped, it is killed, and does not."""
        self.counters[1] = meet + 1
        proc = self._proc
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        stopped = False
        if self.counters[0] and proc.poll() is None:  # else it has nothing to give
            try:
                stdin.close()  # wakes it if it is done with all and waits for the stop
                ready, _, _ = select.select([stdout], [], [], STOP_TIMEOUT_S)
                stopped = bool(ready) and stdout.read(1) == b"."
            except (OSError, ValueError):
                pass
        if not stopped:
            self._end()  # once it has ended, all it wrote is there to read
        done = min(self.counters[0], self.size, meet)
        at = _HEADER.size
        records = list(RECORD.iter_unpack(self._map[at : at + RECORD.size * done]))
        return records, stopped

    def join(self) -> None:
        """Wait for it to end (it writes its rows after `finish`), and let go of it."""
        self._proc.wait()
        self.close()

    def close(self) -> None:
        """End it, wherever it is, and let go of it."""
        self._end()
        self.counters.release()
        self._map.close()

    def _end(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()


def _shared_file() -> int:
    """A descriptor of a new file in memory, to be mapped by both processes."""
    try:
        return os.memfd_create("roar-hash", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or memfd refused
        import tempfile

        with tempfile.TemporaryFile() as f:  # unlinked at once; the duplicate keeps it
            return os.dup(f.fileno())


_HELPER_MAIN = """
import sys
sys.path[:0] = [sys.argv[1]]
from roargit.hash_helper import serve
serve(*map(int, sys.argv[2:5]), sys.argv[5])
"""


def serve(fd: int, size: int, racy_window_ns: int, cache_db: str) -> None:
    """The helper process's work (see `Helper`)."""
    shared = mmap.mmap(fd, os.fstat(fd).st_size)
    os.close(fd)
    answers = _HEADER.size + RECORD.size * size
    paths = shared[answers:].decode(_FS_ENCODING, _FS_ERRORS).split("\0")
    counters = memoryview(shared)[: _HEADER.size].cast("Q")
    pack_into, read_small, pack = RECORD.pack_into, stable_read.read_small, STAT_KEY.pack
    rows: list[tuple[str, bytes, bytes]] = []
    taken: list[int] = []  # the index of each of `rows`
    cache_before = time.time_ns() - racy_window_ns  # as in hashing._hash_todo
    at = _HEADER.size
    for i, path in enumerate(paths):
        if counters[1]:
            break
        got = read_small(path)
        # Anything else is left to roar, to hash with every check or say what is wrong.
        if got is not None:
            data, before = got
            raw = blake3(data).digest()
            size, ctime = len(data), before.st_ctime_ns
            key = pack(before.st_dev, before.st_ino, size, before.st_mtime_ns, ctime)
            if ctime < cache_before:
                pack_into(shared, at, CACHEABLE, size, key, raw)
                rows.append((path, key, raw))
                taken.append(i)
            else:
                pack_into(shared, at, STABLE, size, key, raw)
        # After the record: once roar hears that this process stopped, every record below
        # the count is whole.
        counters[0] = i + 1
        at += RECORD.size
    if not counters[1]:
        sys.stdin.buffer.read()  # all answered: wait for roar to say where it stopped
    meet = counters[1] - 1
    sys.stdout.buffer.write(b".")
    sys.stdout.buffer.flush()
    # Those before `meet` are this process's to write (`taken` rises: a bisection finds them).
    mine = rows[: bisect.bisect_left(taken, meet)]
    if mine:
        CacheDB(Path(cache_db), hashing.CacheStats()).insert(mine)
