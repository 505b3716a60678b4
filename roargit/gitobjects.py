"""Git objects through the user's `git`, for commands that must start fast.

`import pygit2` costs more than `roar run`'s whole fixed-cost budget, so the capture path
reads objects through one long-lived `git cat-file --batch-command` and writes a ledger
commit with one `git fast-import` (which builds the trees itself). Query commands, which read
thousands of objects, use pygit2 in-process instead (ledger.py chooses).
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from roargit import TYPE_CHECKING
from roargit.errors import GitFailed, RoarError
from roargit.git import OBJECT_READER, Spawned, run_git, spawn_git
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any

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
        self._proc: Spawned | None = None

    def _start(self) -> Spawned:
        if self._proc is None:
            self._proc = proc = spawn_git(OBJECT_READER, self.git_dir)
            for _ in range(proc.primed):  # see spawn_git's `prime`
                self._answer(proc)
        return self._proc

    def _ask(self, command: str, name: str) -> tuple[str, str, int] | None:
        proc = self._start()
        assert proc.stdin is not None
        proc.stdin.write(f"{command} {name}\n".encode("utf-8", "surrogateescape"))
        proc.stdin.flush()
        return self._answer(proc)

    def _answer(self, proc: Spawned) -> tuple[str, str, int] | None:
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
    pack_dir: Path,
    objects: Mapping[bytes, tuple[bytes, bytes]],
    new_hash: Callable[[], Any],
    *,
    keep: bool = False,
) -> str:
    """Write `objects` ({raw oid: (type, content)}) as one pack and its index; returns the pack's
    name. One pack is two new files, where loose objects are one each: creating a file is the
    dear part of a small write, not compressing it.
    The pack is renamed into place before its index, as git does: readers find packs by index.

    With `keep`, a `.keep` file (naming this process, see `drop_stale_keeps`) is written
    before the pack: `git gc`/`git repack` leave a kept pack alone, so its objects survive
    until a ref names them, however early a concurrent `git gc --prune=now` read the refs.
    The caller removes it with `drop_keep` once the ref is written.

    On any failure (a full disk, say) nothing of the pack is left behind: no temporary file,
    no pack without its index, no `.keep`."""
    import zlib  # lazy: a run writes its pack after its command (hash_rows loads it meanwhile)

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
        chunk = bytes(head) + _deflate(data)
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
    install_pack(pack_dir, name, [(".pack", b"".join(parts)), (".idx", idx)], keep=keep)
    return name


def _deflate(data: bytes) -> bytes:
    """`data` as a zlib stream (level 1), with a window no bigger than it needs: zlib sets up
    the memory of its window and hash table for every stream, which costs a small object
    many times what compressing it does. Any inflater reads a stream of a smaller window."""
    import zlib  # lazy: see write_pack

    bits = min(15, max(9, len(data).bit_length()))
    c = zlib.compressobj(1, zlib.DEFLATED, bits, max(1, bits - 7))
    return c.compress(data) + c.flush()


def install_pack(
    pack_dir: Path, name: str, files: Sequence[tuple[str, bytes | Path]], *, keep: bool
) -> None:
    """Put a pack's files (`.pack`, then `.rev` if any, then `.idx`: readers find packs by
    index) into `pack_dir` under `name`, each as bytes to write or a finished file to move
    there (same file system). With `keep`, `name.keep` comes first (see `write_pack`). All or
    nothing: on failure every file this call made is removed (an identical pack that was
    already there stays) and the error is raised."""
    made: list[Path] = []
    try:
        if keep:
            keep_path = pack_dir / f"{name}.keep"
            try:
                _write_new(keep_path, KEEP_TEXT % os.getpid())
                made.append(keep_path)
            except FileExistsError:
                pass  # an identical pack being written by another process: the same objects
        for ext, blob in files:
            final = pack_dir / (name + ext)
            if final.exists():
                continue  # the same objects, already packed by an earlier write
            if isinstance(blob, Path):
                os.replace(blob, final)
            else:
                tmp = pack_dir / f"{INCOMING}{os.getpid()}-{time.monotonic_ns()}{ext}.tmp"
                made.append(tmp)
                _write_new(tmp, blob, final)
                os.replace(tmp, final)
                made.pop()
            made.append(final)
    except BaseException:
        # The index first: a pack without one is invisible, an index without its pack is not.
        for path in sorted(made, key=lambda p: p.suffix != ".idx"):
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


#: Prefix of a pack file being written (`<prefix><pid>-<n>.pack.tmp`). Not git's `tmp_`:
#: `git gc --prune=now` deletes those at once, a file still being written included; nor a
#: name ending in `.idx`: `git gc` deletes an index without its pack. The pid names the
#: writer, for `drop_stale_keeps` to tidy up after one that died.
INCOMING = "incoming-roar-"

#: A `.keep` file's text: git prints it as the reason the pack is kept.
KEEP_TEXT = b"roar %d: objects not yet named by a ref\n"


def _write_new(path: Path, data: bytes, shown: Path | None = None) -> None:
    """Write a new file; an error names `shown` (the file this one becomes) or `path`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            view = memoryview(data)
            while view:  # a write may be short (a nearly full disk); the rest is retried
                view = view[os.write(fd, view) :]
        except BaseException:
            # Made here and not whole (ENOSPC after the create): nobody else would know to
            # remove it, and an empty `.keep` names no writer for `drop_stale_keeps`.
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.filename is None or shown is not None:
            raise OSError(exc.errno, exc.strerror, str(shown or path)) from exc
        raise


def drop_keep(pack_dir: Path, name: str) -> None:
    """Remove the `.keep` that `write_pack(..., keep=True)` wrote (a ref names the pack's
    objects now)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pack_dir / f"{name}.keep")


def drop_stale_keeps(pack_dir: Path, alive: Callable[[int], bool]) -> None:
    """Remove the `.keep` files, and pack files half written, that a roar process which is no
    longer `alive` left (killed between writing a pack and naming its objects)."""
    try:
        names = os.listdir(pack_dir)
    except OSError:
        return
    for n in names:
        if n.startswith(INCOMING):
            writer = n[len(INCOMING) :].partition("-")[0]
            if writer.isdigit() and not alive(int(writer)):
                with contextlib.suppress(OSError):
                    os.unlink(pack_dir / n)
            continue
        if not n.endswith(".keep"):
            continue
        try:
            with open(pack_dir / n, "rb") as f:
                head = f.read(64)
        except OSError:
            continue
        pid = _keep_pid(head)
        if pid is not None and not alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(pack_dir / n)


def _keep_pid(head: bytes) -> int | None:
    fields = head.split(b" ", 2)
    if len(fields) < 2 or fields[0] != b"roar" or not fields[1].rstrip(b":").isdigit():
        return None
    return int(fields[1].rstrip(b":"))


#: Loose objects above this many bytes in all go to a pack through `git pack-objects`
#: (streaming) rather than being read into memory by `pack_loose_objects`.
_PACK_IN_PROCESS = 32 << 20


def pack_loose_objects(
    git_dir: Path, objects_dir: Path, pack_dir: Path, oid_bytes: int
) -> str | None:
    """Move the loose objects of `objects_dir` (a private object folder that git wrote into,
    with the repository's as its alternate) into one kept pack in `pack_dir` (see
    `write_pack`); returns its name, or None when there were none. `objects_dir` is emptied."""
    loose: list[Path] = []
    total = 0
    for d in os.listdir(objects_dir):
        if len(d) == 2 and os.path.isdir(objects_dir / d):
            for f in os.listdir(objects_dir / d):
                p = objects_dir / d / f
                loose.append(p)
                total += p.stat().st_size
    if not loose:
        return None
    if total > _PACK_IN_PROCESS:
        oids = [p.parent.name + p.name for p in loose]
        return _pack_with_git(git_dir, objects_dir, pack_dir, oids)
    import zlib  # lazy: see write_pack

    objects: dict[bytes, tuple[bytes, bytes]] = {}
    for p in loose:
        raw = zlib.decompress(p.read_bytes())
        nul = raw.index(b"\0")
        kind = raw[: raw.index(b" ")]
        objects[bytes.fromhex(p.parent.name + p.name)] = (kind, raw[nul + 1 :])
    from hashlib import sha1, sha256  # hashlib loads OpenSSL: only packing loose objects pays

    return write_pack(pack_dir, objects, sha1 if oid_bytes == 20 else sha256, keep=True)


def _pack_with_git(git_dir: Path, objects_dir: Path, pack_dir: Path, oids: list[str]) -> str:
    out_dir = objects_dir / "pack"
    out_dir.mkdir(exist_ok=True)
    env = {"GIT_OBJECT_DIRECTORY": str(objects_dir)}
    proc = run_git(
        ["pack-objects", "-q", str(out_dir / "pack")],
        git_dir,
        input="".join(o + "\n" for o in oids).encode(),
        env=env,
    )
    name = "pack-" + proc.stdout.decode().strip()
    files: list[tuple[str, bytes | Path]] = [
        (ext, out_dir / (name + ext))
        for ext in (".pack", ".rev", ".idx")
        if (out_dir / (name + ext)).exists()
    ]
    install_pack(pack_dir, name, files, keep=True)
    return name


def refs_under(common_dir: Path, prefix: str) -> list[str]:
    """The names of the refs under `prefix` (`refs/roar/tmp/`), loose or packed, read from
    the files git keeps them in: a look that costs no `git` process when there are none."""
    found: set[str] = set()
    top = common_dir / prefix
    for dirpath, _dirs, files in os.walk(top):
        rel = os.path.relpath(dirpath, common_dir)
        found.update(f"{rel}/{f}" for f in files if not f.endswith(".lock"))
    try:
        packed = (common_dir / "packed-refs").read_bytes()
    except OSError:
        packed = b""
    if prefix.encode() in packed:
        for line in packed.splitlines():
            fields = line.split(b" ")
            if len(fields) == 2 and fields[1].startswith(prefix.encode()):
                found.add(fields[1].decode(errors="surrogateescape"))
    return sorted(found)


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
    """Bulk imports for fixtures and benchmarks (Ledger.import_records): commits written to
    `ref` by one `git fast-import`, which builds every tree on the changed paths itself.
    Small imports are exploded into loose objects (fastimport.unpackLimit), so no pack piles
    up per import; big ones stay one pack."""

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
        status = self._proc.wait()
        if status != 0:
            raise GitFailed(["git", "fast-import"], status, out, err)
        return out.split()[-1].decode()
