"""Git objects through the user's `git`, for commands that must start fast.

`import pygit2` costs 60-100 ms on these machines, more than `roar run`'s whole fixed-cost
budget, so the capture path reads objects through one long-lived
`git cat-file --batch-command` and writes a ledger commit with one `git fast-import`
(which builds the trees itself). Query commands, which read thousands of objects, use pygit2
in-process instead (ledger.py chooses).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from roargit.errors import GitFailed, RoarError
from roargit.git import run_git, spawn_git

TREE_MODE = 0o40000


class GitTooOld(RoarError):
    pass


class Obj(NamedTuple):
    oid: str
    type: str  # "blob", "tree", "commit" or "tag"
    data: bytes


# Bytes of requests per batch in `read_many`: one page, the least a pipe can hold (a user over
# fs.pipe-user-pages-soft gets one-page pipes).
_BATCH = 4096


class ObjectReader:
    """Reads objects by name (`<rev>:<path>`, an oid, `HEAD^{tree}`) from one `cat-file`."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            self._proc = spawn_git(["cat-file", "--batch-command"], self.git_dir)
        return self._proc

    def _ask(self, command: str, name: str) -> tuple[str, str, int] | None:
        proc = self._start()
        assert proc.stdin is not None
        proc.stdin.write(f"{command} {name}\n".encode("utf-8", "surrogateescape"))
        proc.stdin.flush()
        return self._answer(proc)

    def _answer(self, proc: subprocess.Popen[bytes]) -> tuple[str, str, int] | None:
        """The header of the next answer: (oid, type, size), or None for a missing object."""
        assert proc.stdout is not None
        header = proc.stdout.readline()
        if not header:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if "batch-command" in err or "usage" in err:
                raise GitTooOld("git 2.36 or newer is needed (cat-file --batch-command)")
            raise GitFailed(["git", "cat-file", "--batch-command"], proc.wait(), b"", err.encode())
        fields = header.split()
        if len(fields) != 3 or fields[1] == b"missing" or fields[-1] == b"missing":
            return None
        return fields[0].decode(), fields[1].decode(), int(fields[2])

    def info(self, name: str) -> tuple[str, str] | None:
        """(oid, type) of the named object, or None."""
        found = self._ask("info", name)
        return None if found is None else (found[0], found[1])

    def read(self, name: str) -> Obj | None:
        found = self._ask("contents", name)
        if found is None:
            return None
        oid, kind, size = found
        assert self._proc is not None and self._proc.stdout is not None
        data = self._proc.stdout.read(size + 1)[:-1]  # the content, then a newline
        return Obj(oid, kind, data)

    def read_many(self, names: Sequence[str]) -> list[Obj | None]:
        """`read` of each name, pipelined: the requests go out in batches and the answers are
        read back in order, so n objects cost about one round trip per batch, not n. A batch
        is at most one page of requests, the least a pipe holds: cat-file can take all of it
        while it is blocked writing answers we have not read yet, so neither side waits on
        the other."""
        out: list[Obj | None] = []
        requests = [f"contents {n}\n".encode("utf-8", "surrogateescape") for n in names]
        start = 0
        while start < len(requests):
            end, size = start, 0
            while end < len(requests) and (end == start or size + len(requests[end]) <= _BATCH):
                size += len(requests[end])
                end += 1
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"".join(requests[start:end]))
            proc.stdin.flush()
            for _ in range(start, end):
                found = self._answer(proc)
                if found is None:
                    out.append(None)
                    continue
                oid, kind, size = found
                out.append(Obj(oid, kind, proc.stdout.read(size + 1)[:-1]))
            start = end
        return out

    def close(self) -> None:
        """End the `cat-file` (closing its input makes it exit)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait()

    def __del__(self) -> None:
        self.close()


def tree_entries(data: bytes, oid_bytes: int = 20) -> list[tuple[int, str, str]]:
    """(mode, name, oid) of a raw tree object: `<octal mode> <name>\\0<binary oid>` each.
    `oid_bytes` is 20 in SHA-1 repositories, 32 in SHA-256 ones."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        space = data.index(b" ", i)
        nul = data.index(b"\0", space)
        mode = int(data[i:space], 8)
        name = os.fsdecode(data[space + 1 : nul])
        out.append((mode, name, data[nul + 1 : nul + 1 + oid_bytes].hex()))
        i = nul + 1 + oid_bytes
    return out


def tree_rows(data: bytes, oid_bytes: int = 20) -> tuple[list[bytes], list[bytes]]:
    """A raw tree as (sort keys, raw entries), both in git's order, for editing in place: a
    key is the name, with a `/` after it for a subtree (how git orders a tree's entries)."""
    keys: list[bytes] = []
    rows: list[bytes] = []
    find = data.index
    i = 0
    n = len(data)
    while i < n:
        nul = find(b"\0", i)
        if data.startswith(b"40000 ", i):
            keys.append(data[i + 6 : nul] + b"/")
        else:
            keys.append(data[find(b" ", i, nul) + 1 : nul])
        end = nul + 1 + oid_bytes
        rows.append(data[i:end])
        i = end
    return keys, rows


PACK_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3, b"tag": 4}


def write_pack(
    pack_dir: Path, objects: Mapping[bytes, tuple[bytes, bytes]], new_hash: Callable[[], Any]
) -> str:
    """Write `objects` ({raw oid: (type, content)}) as one pack and its index; returns the pack's
    name. One pack is two new files, where loose objects are one each: creating a file is the
    dear part of a small write (0.4-0.9 ms on a loaded ext4 volume), not compressing it.
    The pack is renamed into place before its index, as git does: readers find packs by index."""
    import struct
    import zlib

    parts = [b"PACK" + struct.pack(">II", 2, len(objects))]
    pos = 12
    index: list[tuple[bytes, int, int]] = []
    for oid, (kind, data) in objects.items():
        size = len(data)
        byte = PACK_TYPES[kind] << 4 | size & 15
        size >>= 4
        head = bytearray()
        while size:
            head.append(byte | 0x80)
            byte = size & 0x7F
            size >>= 7
        head.append(byte)
        chunk = bytes(head) + zlib.compress(data, 1)
        index.append((oid, zlib.crc32(chunk), pos))
        parts.append(chunk)
        pos += len(chunk)
    if pos >= 1 << 31:
        raise ValueError("write_pack writes small packs only (4-byte offsets)")
    h = new_hash()
    for part in parts:
        h.update(part)
    checksum = h.digest()
    parts.append(checksum)
    index.sort()
    fanout = [0] * 256
    for oid, _, _ in index:
        fanout[oid[0]] += 1
    total = 0
    for k in range(256):
        total += fanout[k]
        fanout[k] = total
    idx = b"".join(
        [
            b"\377tOc" + struct.pack(">I", 2),
            struct.pack(">256I", *fanout),
            *(oid for oid, _, _ in index),
            struct.pack(f">{len(index)}I", *(crc for _, crc, _ in index)),
            struct.pack(f">{len(index)}I", *(off for _, _, off in index)),
            checksum,
        ]
    )
    h = new_hash()
    h.update(idx)
    idx += h.digest()
    name = f"pack-{checksum.hex()}"
    for ext, blob in ((".pack", b"".join(parts)), (".idx", idx)):
        tmp = pack_dir / f"tmp_roar_{os.getpid()}_{time.monotonic_ns()}{ext}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        os.replace(tmp, pack_dir / (name + ext))
    return name


def pack_index_oids(idx: Path, oid_bytes: int = 20) -> list[str]:
    """The object ids a version-2 pack index lists."""
    data = idx.read_bytes()
    if data[:8] != b"\377tOc\0\0\0\2":
        raise ValueError(f"{idx.name}: not a version-2 pack index")
    start = 8 + 256 * 4
    count = int.from_bytes(data[start - 4 : start], "big")
    ids = data[start : start + count * oid_bytes]
    return [ids[k : k + oid_bytes].hex() for k in range(0, len(ids), oid_bytes)]


#: Small packs (one a ledger append) are rolled into one once this many pile up, below git's
#: gc.autoPackLimit (50), so lookups never scan a long list of packs.
ROLL_UP_AT = 32
SMALL_PACK = 4 << 20
STALE_LOCK_S = 600


def roll_up_small_packs(objects_dir: Path, lock: Path, oid_bytes: int = 20) -> bool:
    """If ROLL_UP_AT or more small packs lie in `objects_dir/pack`, pack their objects into one
    (`git pack-objects`, given every object those packs hold; with deltas) and delete them.
    One roller at a time (`lock`, O_EXCL); the others skip. Returns whether packs were
    deleted (a pygit2 repository opened before should be reopened)."""
    pack_dir = objects_dir / "pack"
    if sum(n.endswith(".pack") for n in os.listdir(pack_dir)) < ROLL_UP_AT:
        return False  # the common case: one listing, no stat
    try:
        lock.parent.mkdir(exist_ok=True)
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - os.stat(lock).st_mtime > STALE_LOCK_S:
                os.unlink(lock)  # left by a roller that died; a later append rolls up
        return False
    os.close(fd)
    try:
        # Listed again under the lock: a roller that held it just now may have removed some.
        names = set(os.listdir(pack_dir))
        small: list[str] = []
        oids: set[str] = set()
        for name in names:
            p = name[:-5]
            if not (name.startswith("pack-") and name.endswith(".pack")) or p + ".idx" not in names:
                continue
            if any(p + ext in names for ext in (".keep", ".promisor", ".mtimes")):
                continue
            try:
                if os.stat(pack_dir / name).st_size > SMALL_PACK:
                    continue
                oids.update(pack_index_oids(pack_dir / (p + ".idx"), oid_bytes))
            except FileNotFoundError:
                continue
            small.append(p)
        if len(small) < ROLL_UP_AT:
            return False
        # The ids themselves, not `--stdin-packs`: that mode walks from the packs' commits
        # through the history to order objects (seconds on a long ledger); this reads none.
        proc = run_git(
            ["pack-objects", "-q", str(pack_dir / "pack")],
            objects_dir.parent,
            input="".join(oid + "\n" for oid in sorted(oids)).encode(),
            check=False,
        )
        if proc.returncode != 0:
            return False  # e.g. a pack removed meanwhile by `git gc`: keep them all
        made = "pack-" + proc.stdout.decode().strip()
        for p in small:
            if p == made:
                continue
            # The pack before its index, as git removes packs.
            for ext in (".pack", ".rev", ".idx"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pack_dir / (p + ext))
        return True
    finally:
        os.unlink(lock)


class NewEntry(NamedTuple):
    """A path to add in a commit: a blob with `data`, or an existing tree by oid."""

    path: tuple[str, ...]
    data: bytes | None = None
    tree: str | None = None


class FastImport:
    """Commits written to `ref` by one `git fast-import`, which builds every tree on the
    changed paths itself. Small imports are exploded into loose objects
    (fastimport.unpackLimit), so no pack piles up per `roar run`; big ones stay one pack."""

    def __init__(self, git_dir: Path, ref: str, parent: str | None) -> None:
        self.ref = ref.encode()
        self.parent = parent
        self._mark = 0
        self._last: int | None = None
        self._proc = spawn_git(["fast-import", "--quiet", "--force"], git_dir)
        self._write(b"feature done\n")

    def _write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)

    def commit(self, entries: Sequence[NewEntry], message: str, when: int | None = None) -> None:
        marks: dict[bytes, int] = {}
        for e in entries:
            if e.data is not None and e.data not in marks:
                self._mark += 1
                marks[e.data] = self._mark
                self._write(b"blob\nmark :%d\ndata %d\n%s\n" % (self._mark, len(e.data), e.data))
        self._mark += 1
        msg = message.encode()
        head = [
            b"commit %s\nmark :%d\n" % (self.ref, self._mark),
            b"committer roar <roar@localhost> %d +0000\n" % (when or int(time.time())),
            b"data %d\n%s\n" % (len(msg), msg),
        ]
        if self._last is None and self.parent:
            head.append(b"from %s\n" % self.parent.encode())
        lines = []
        for e in entries:
            path = "/".join(e.path).encode()
            if e.data is not None:
                lines.append(b"M 100644 :%d %s\n" % (marks[e.data], path))
            else:
                lines.append(b"M 040000 %s %s\n" % (str(e.tree).encode(), path))
        self._write(b"".join(head) + b"".join(lines) + b"\n")
        self._last = self._mark

    def finish(self) -> str:
        """Close the stream; the id of the last commit."""
        if self._last is None:
            raise ValueError("fast-import: no commit was written")
        self._write(b"get-mark :%d\ndone\n" % self._last)
        out, err = self._proc.communicate()
        if self._proc.returncode != 0:
            raise GitFailed(["git", "fast-import"], self._proc.returncode, out, err)
        return out.split()[-1].decode()


def resolve_many(reader: ObjectReader, names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{name: (oid, type)} for the names that exist."""
    out = {}
    for name in names:
        found = reader.info(name)
        if found is not None:
            out[name] = found
    return out
