"""Feeding a BLAKE3 hasher from a big file: a memory map under a read lease, else read().

Big files are hashed from a memory map, which saves read()'s copy (a fifth of the CPU on a
file in the page cache), but only under a Linux read lease (fcntl(2) F_SETLEASE): a mapped
file truncated by another process would kill us with SIGBUS, and while the lease is held the
kernel makes every open for writing and every truncate wait until we let go. Where no lease
can be had (the file is open for writing somewhere; another user's file without CAP_LEASE; a
file system not in `_LEASE_FS`), or a writer asks for the file mid-way, the rest is read().
A writer waits for one window of the map to be hashed (`MAP_WINDOW`), or read from disk; one
that opens with O_NONBLOCK gets EWOULDBLOCK instead, as with any lease holder.

What a lease does not cover, and so can still raise SIGBUS while a window is hashed (checked
on Linux 6.18): another process's open(O_RDONLY | O_TRUNC), which POSIX leaves undefined and
Linux carries out without breaking read leases; a disk read error on a page reclaimed
between our faulting the window in and hashing it; and a lease the kernel takes back after
lease-break-time (45 s by default, at least 10 s or we don't map) while one window is still
being hashed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import mmap
import os
import queue
import signal
import sys
import threading
from typing import Any

from blake3 import blake3

#: Read chunk for large files read() (no lease, see the module docstring). Reading and
#: hashing overlap in two threads, so a chunk must stay in the CPU caches between the read
#: and the hash: much larger buffers fall out of them and hash slower than a plain
#: read-then-hash. read() still copies every byte once more than the memory map does, CPU
#: that counts on a busy machine, so the map is used wherever a lease can be had
#: (benchmarks/bench_hashing.py measures both).
CHUNK = 4 << 20
#: Bytes mapped and hashed at a time (and one more window faulted in meanwhile). The lease
#: is checked between windows, so a writer waits for at most one window's hashing, far
#: inside the lease-break-time we insist on (_MIN_LEASE_BREAK_S). Each window ends in a join
#: of blake3's threads, which costs on a busy machine: smaller windows pay it more often and
#: fall behind b3sum, while one window as large as this keeps level with a single map of the
#: whole file (benchmarks/bench_hashing.py).
MAP_WINDOW = 1 << 30
#: statfs(2) f_type of local file systems that every change to a file passes through this
#: kernel, which breaks our lease first: ext2/3/4, xfs, btrfs, tmpfs, f2fs. Network and FUSE
#: file systems may grant a lease too, but their files change on the server unannounced.
_LEASE_FS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0xF2F52010})
#: A writer waits at most this long for a lease (proc(5) lease-break-time); then the kernel
#: takes it away, and a truncate could hit our map. Below this (the default is 45 s) there is
#: too little margin over the time one window takes on a starved machine: read() instead.
_MIN_LEASE_BREAK_S = 10
#: madvise(2) MADV_POPULATE_READ (Linux 5.14): fault a window in, reporting an I/O error as
#: EFAULT where touching the page would raise SIGBUS.
_MADV_POPULATE_READ = 22
_MAP_FAILED = (1 << 64) - 1  # (void *)-1, as ctypes hands back a c_void_p


def hash_mapped(fd: int, hasher: blake3) -> int:
    """Feed `hasher` from a memory map of `fd` under a read lease; return bytes hashed.

    Returns 0 where no lease can be had, and stops early (after a whole window) when a writer
    breaks the lease or a window can't be mapped and faulted in; the caller reads the rest
    with read(), which reports an I/O error as an exception where a page would raise SIGBUS.
    """
    if not take_lease(fd):
        return 0
    done = 0
    try:
        size = os.fstat(fd).st_size  # fixed while the lease is held: no one can write
        if size <= MAP_WINDOW:
            addr = _map_window(fd, 0, size)
            if addr:
                _hash_window(hasher, addr, size)
                done = size
        else:
            done = _hash_windows_ahead(fd, size, hasher)
    finally:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return done


def _hash_windows_ahead(fd: int, size: int, hasher: blake3) -> int:
    """Hash `size` bytes of `fd` window by window, the next one mapped and faulted in by a
    second thread meanwhile (faulting 4 KiB pages costs a fifth of the hashing; this way it
    is spread over the cores, as the faults of hashing from a plain map would be)."""
    mapped: queue.Queue[tuple[int, int]] = queue.Queue()  # (address or 0, length)
    ask: queue.Queue[bool] = queue.Queue()
    ask.put(True)
    ask.put(True)  # the window being hashed, and one ahead

    def mapper() -> None:
        offset = 0
        try:
            while offset < size and ask.get():
                n = min(MAP_WINDOW, size - offset)
                addr = _map_window(fd, offset, n)
                mapped.put((addr, n))
                if not addr:
                    return
                offset += n
        except BaseException:  # the hashing side stops at a window it didn't get
            mapped.put((0, 0))
            raise

    thread = threading.Thread(target=mapper, name="roar-hash-mapper", daemon=True)
    thread.start()
    done = 0
    try:
        while done < size:
            addr, n = mapped.get()
            if not addr:
                break
            _hash_window(hasher, addr, n)
            done += n
            # F_UNLCK here means a writer is waiting for us (F_RDLCK while we hold it).
            if fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK:
                break
            ask.put(True)
    finally:
        ask.put(False)
        thread.join()  # before the lease goes: it may be faulting in one more window
        while not mapped.empty():
            addr, n = mapped.get_nowait()
            if addr:
                _libc().munmap(addr, n)
    return done


def _map_window(fd: int, offset: int, n: int) -> int:
    """Address of `n` bytes of `fd` from `offset`, mapped read-only and faulted in; 0 if
    that fails. Through libc rather than the mmap module, whose madvise holds the GIL for
    the whole faulting in, disk reads included."""
    libc = _libc()
    addr = libc.mmap(None, n, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if addr is None or addr == _MAP_FAILED:
        return 0
    # MADV_POPULATE_READ reports a page it can't read (EFAULT) where touching it would
    # raise SIGBUS; EINVAL: a kernel before 5.14.
    if libc.madvise(addr, n, _MADV_POPULATE_READ) != 0:
        libc.munmap(addr, n)
        return 0
    return int(addr)


def _hash_window(hasher: blake3, addr: int, n: int) -> None:
    """Hash and unmap a window from `_map_window`; nothing refers to it afterwards."""
    import ctypes  # lazy, as in _libc

    try:
        with memoryview((ctypes.c_char * n).from_address(addr)) as raw, raw.cast("B") as view:
            hasher.update(view)
    finally:
        _libc().munmap(addr, n)


def take_lease(fd: int) -> bool:
    """Take a read lease on `fd` if the file system and the kernel make it a safe one."""
    # Leases, MADV_POPULATE_READ and f_type are Linux's; 64-bit for a plain off_t in mmap.
    if sys.platform != "linux" or sys.maxsize < 1 << 32:
        return False
    try:
        if _fs_type(fd) not in _LEASE_FS or _lease_break_s() < _MIN_LEASE_BREAK_S:
            return False
        # A lease break is announced with SIGIO by default, whose default action ends the
        # process; SIGURG's is to ignore it. We learn of the break with F_GETLEASE instead,
        # which works on any thread (a signal handler would need the main thread).
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        # EAGAIN: open for writing somewhere; EACCES: another user's file, no CAP_LEASE;
        # EINVAL: leases disabled (proc(5) leases-enable).
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        return False
    return True


def _fs_type(fd: int) -> int:
    """statfs(2) f_type of the file system `fd` is on (0 if unknown)."""
    import ctypes  # lazy, as in _libc

    # struct statfs starts with f_type, a C long on every Linux ABI; 256 bytes cover the
    # whole struct (120 on x86-64).
    buf = ctypes.create_string_buffer(256)
    if _libc().fstatfs(fd, buf) != 0:
        return 0
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


@functools.cache
def _libc() -> Any:
    import ctypes  # lazy: only big files need it, and its import would slow every run

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
    return libc


def _lease_break_s() -> int:
    try:
        with open("/proc/sys/fs/lease-break-time", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def hash_piped(fd: int, hasher: blake3) -> int:
    """Feed `hasher` from `fd` with reading overlapped with hashing; return bytes read.

    A reader thread fills one of three 4 MiB buffers while this thread hashes another; both
    `readv` and blake3's update release the GIL, so the two really run at once.
    """
    full: queue.Queue[tuple[bytearray, int] | BaseException] = queue.Queue()
    free: queue.Queue[bytearray | None] = queue.Queue()
    for _ in range(3):
        free.put(bytearray(CHUNK))

    def reader() -> None:
        try:
            while (buf := free.get()) is not None:
                n = os.readv(fd, [buf])
                full.put((buf, n))
                if n == 0:
                    return
        except BaseException as exc:  # handed to the hashing thread, which re-raises it
            full.put(exc)

    thread = threading.Thread(target=reader, name="roar-hash-reader", daemon=True)
    thread.start()
    total = 0
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            if n == 0:
                break
            hasher.update(memoryview(buf)[:n])
            total += n
            free.put(buf)
    finally:
        free.put(None)  # wakes the reader if it waits for a buffer
        thread.join()  # the caller closes fd next; the reader must be done with it
    return total
