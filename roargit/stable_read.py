"""One file's bytes, read and hashed while the file holds still.

`hash_path` opens a path without stat-ing it first (O_NONBLOCK, so a FIFO cannot hang us)
and takes its stat from the open file; a small file is read whole with one read, a big one
hashed from a memory map under a read lease where one can be had, else with read()
(roargit/bigfile.py). The file is *stable* if every byte was accounted for and its stat key
(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) is the same after the read as before:
only then do the bytes hashed name bytes that existed together. `settle` reads a file that
changed again, `RETRIES` times at most; what to do with one that keeps changing, and what
to remember, is the cache's (hashing.py). `read_small` is the cut-down read that a batch of
many small files goes through, here and in the helper process (hash_helper.py).
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import sys
import time

from blake3 import blake3

from roargit.hash_rows import STAT_KEY
from roargit.structs import NamedTuple

#: Files up to this size are read whole and hashed with one call (one read, one hasher).
SMALL_FILE = 1 << 20
#: Files at least this big are hashed from a memory map where a read lease can be had.
MMAP_FROM = 8 << 20
#: Files above this size are not taken by `read_small`; a batch hashes them in its thread
#: pool (see `hashing.HashCache._hash_todo`).
POOL_FROM = 256 << 10
#: How often a file that changes under us is re-read before `FileChanged` is raised.
RETRIES = 2

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def stat_key(st: os.stat_result) -> bytes:
    # st_dev/st_ino are unsigned 64-bit; SQLite integers are signed, so the key is packed.
    return STAT_KEY.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Hashed(NamedTuple):
    raw: bytes  # the 32-byte digest
    size: int
    key: bytes  # stat key taken before the read
    stable: bool  # stat identical before and after, and every byte accounted for
    started_ns: int  # wall clock when the read began
    ctime_ns: int

    @property
    def digest(self) -> str:
        return self.raw.hex()


def check_regular(st: os.stat_result, path: str) -> None:
    if stat_mod.S_ISREG(st.st_mode):
        return
    if stat_mod.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    raise OSError(errno.EINVAL, "not a regular file", path)


class Deferred(Exception):
    """`hash_path` found a file bigger than it was asked to hash: `st` is its stat."""

    def __init__(self, st: os.stat_result) -> None:
        self.st = st


def hash_path(
    path: str, before: os.stat_result | None = None, defer_from: int = sys.maxsize
) -> Hashed:
    """Hash one file; `before` is its stat if the caller just took one (saves an fstat).
    A file above `defer_from` bytes is not read: `Deferred` is raised with its stat."""
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
            check_regular(os.stat(path), path)
        raise
    try:
        if before is None:
            before = os.fstat(fd)
            if not stat_mod.S_ISREG(before.st_mode):
                check_regular(before, path)
        size = before.st_size
        if size > defer_from:
            raise Deferred(before)
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
    return Hashed(raw, nread, key, stable, started, ctime)


def hash_stable(path: str, before: os.stat_result | None = None) -> Hashed:
    """`hash_path`, re-read while the file changes under us (`RETRIES` times at most)."""
    return settle(path, hash_path(path, before))


def settle(path: str, h: Hashed) -> Hashed:
    """`h`, or `path` read again while it keeps changing (`RETRIES` times at most)."""
    for _ in range(RETRIES):
        if h.stable:
            break
        h = hash_path(path)
    return h


def _drain(fd: int, head: bytes) -> bytes:
    """The rest of a file whose size was not what fstat said (a short read, or growth)."""
    from roargit.bigfile import CHUNK  # lazy: see hash_path

    parts = [head]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def read_small(path: str) -> tuple[bytes, os.stat_result] | None:
    """The bytes of `path` and its stat, read as `hash_path` reads a small file with no
    `before`, if it is a regular file no bigger than `POOL_FROM` that held still while read;
    None for anything else (not there, not regular, big, changed while read, an error), which
    `hash_path` is to hash with all its checks, or say what is wrong with it."""
    # The common case of a first hashing of many files, with the system calls of
    # `hash_path` and as little else as can be: the Python around them costs as much as two.
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        size = before.st_size
        if size > POOL_FROM or before.st_mode & 0o170000 != stat_mod.S_IFREG:
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
