"""Folders as artifacts: a run that reads (or writes) most of a big folder records the folder
once, by the hash of its manifest, instead of one entry per file.

A manifest is a canonical msgpack record (docs/record-format.md) listing `[relative path,
hash, size]` of every regular file under the folder, sorted by path. Its BLAKE3 is the
folder's artifact id, so an unchanged folder has the same id run after run and its manifest is
stored in the ledger once. Manifests arrive from other clones too: reading one checks it
against its id and its schema, as records are checked.

A folder that did not change is not re-hashed file by file either: `FolderCache` remembers,
per folder, a digest of every file's stat data (path, device, inode, size, mtime, ctime) and
the manifest id it gave, as git's index does for single files. One lstat per file then
answers "unchanged?" for 100,000 files, instead of a hash-cache lookup per file. It also
remembers the stat data of every folder under it: a folder's mtime moves whenever an entry is
added, removed or renamed in it (as git's untracked cache relies on), so while none moved, the
files the trace found there are all there is, and the folder needs no listing either.
"""

from __future__ import annotations

import binascii
import bisect
import os
import stat
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from blake3 import blake3

from roargit import TYPE_CHECKING, codec
from roargit.codec import record_id
from roargit.errors import RecordCorrupt
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any

#: A folder is recorded as one artifact when the run touched at least this many of its files…
MIN_FILES = 100
#: …and at least this share of all the files under it.
COVERAGE = 0.9


class ManifestEntry(NamedTuple):
    path: str  # relative to the folder, '/'-separated
    hash: str
    size: int


class FolderRuns(list[str]):
    """Paths, some stretches of which are a folder's paths added at once (a trace's group):
    `runs` holds (start, folder, the list added) for each. `choose` counts such a stretch by
    its length, not path by path; one no longer as it was added is counted path by path."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[tuple[int, str, list[str]]] = []

    def extend_run(self, folder: str, paths: list[str]) -> None:
        """Add `paths`, all directly in `folder`."""
        self.runs.append((len(self), folder, paths))
        self.extend(paths)


def _per_folder(files: list[str]) -> Counter[str]:
    """How many of `files` lie directly in each folder."""
    out: Counter[str] = Counter()
    at = 0
    for start, folder, paths in files.runs if isinstance(files, FolderRuns) else ():
        end = start + len(paths)
        # (the same objects: compared by identity, without a step per path in Python)
        if start < at or files[start:end] != paths:
            return Counter(f.rpartition("/")[0] for f in files)  # changed since it was made
        out.update(f.rpartition("/")[0] for f in files[at:start])
        out[folder] += len(paths)
        at = end
    out.update(f.rpartition("/")[0] for f in files[at:])
    return out


class Leaf(NamedTuple):
    """The regular files of one folder as a trace found them once the run had ended."""

    paths: list[str]
    # Their names, "/"-separated, in byte order, and their STAT keys in hex back to back in
    # that order (docs/trace-format.md): b"" where the trace took no keys.
    names: bytes = b""
    keys: bytes = b""


class Chosen(NamedTuple):
    """A folder to record whole."""

    members: list[str]  # every regular file under it
    # (path relative to it, STAT key) of every folder under it, itself ("") first, as walked;
    # None where one could not be listed, or where `proved` (nothing walked)
    dirs: list[tuple[str, bytes]] | None
    proved: FolderState | None = None  # the remembered state its stat data still match


def choose_folders(
    files: list[str], never: set[str], leaves: Mapping[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Folders to record whole: {folder: every regular file under it}. `files` are absolute
    paths the run touched; folders in `never` (/, the repo root, $HOME …) and their parents are
    never chosen. `leaves` (folder -> regular files in it, as the trace found them once the
    run ended) spares the listing's per-entry work for a folder that holds only those."""
    return {f: c.members for f, c in choose(files, never, leaves).items()}


def choose(
    files: list[str],
    never: set[str],
    leaves: Mapping[str, list[str]] | None = None,
    prove: Callable[[str], tuple[list[str], FolderState] | None] | None = None,
) -> dict[str, Chosen]:
    """`choose_folders`, with how each folder was found. `prove(folder)` gives a remembered
    folder's members and state where its stat data prove it unchanged (see `unchanged_members`):
    such a folder is not walked."""
    # Per folder first, then up the parents once per folder (not once per file).
    counts: Counter[str] = Counter()
    for folder, n in _per_folder(files).items():
        d = folder
        while d and d not in never and d != "/":
            counts[d] += n
            d = os.path.dirname(d)
    # A folder whose touched files all lie in one of its subfolders is not a candidate: the
    # subfolder is the dataset, and the parent would only add files the run never touched
    # (`data/` holding `data/images/` and a few CSVs made by other steps).
    narrower = {os.path.dirname(d) for d, n in counts.items() if n == counts[os.path.dirname(d)]}
    chosen: dict[str, Chosen] = {}
    # Outer folders first; by name among equals, so `files` may come in any order.
    for folder in sorted(
        (d for d, n in counts.items() if n >= MIN_FILES), key=lambda d: (len(d), d)
    ):
        if folder in narrower or any(folder.startswith(c + "/") for c in chosen):
            continue
        proved = prove(folder) if prove is not None else None
        if proved is not None:
            # its members exactly: the walk would find these, so its verdict is final
            if counts[folder] >= COVERAGE * len(proved[0]):
                chosen[folder] = Chosen(proved[0], None, proved[1])
            continue
        walked = _walk(folder, int(counts[folder] / COVERAGE), leaves or {})
        # (none found: the folder is gone, or cannot be listed)
        if walked is not None and walked[0] and counts[folder] >= COVERAGE * len(walked[0]):
            chosen[folder] = Chosen(*walked)
    return chosen


def _walk_bounded(
    folder: str, limit: int, leaves: Mapping[str, list[str]] | None = None
) -> list[str] | None:
    """Every regular file under `folder`, or None as soon as there are more than `limit`."""
    walked = _walk(folder, limit, leaves or {})
    return None if walked is None else walked[0]


def _walk(
    folder: str, limit: int, leaves: Mapping[str, list[str]]
) -> tuple[list[str], list[tuple[str, bytes]] | None] | None:
    """`_walk_bounded`'s files, sorted, and (relative path, STAT key) of each folder walked,
    taken before it was listed; None for the folders where one could not be listed."""
    found: list[str] = []
    dirs: list[tuple[str, bytes]] | None = []
    cut = len(folder) + 1
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            st = os.stat(here)
        except OSError:
            dirs = None
            continue
        if dirs is not None:
            dirs.append((here[cut:], _pack(st)))
        known = leaves.get(here)
        if known is not None and len(known) <= limit - len(found) + 1:
            try:
                # (a folder much bigger than `known` is left to the bounded scan below)
                names = os.listdir(here) if st.st_size <= 4096 + 256 * len(known) else []
            except OSError:
                dirs = None
                continue
            # `known` are among the entries: as many entries means no others (no folder to
            # walk into, no other file), without a type check or a path made per entry.
            if len(names) == len(known):
                found.extend(known)
                if len(found) > limit:
                    return None
                continue
        try:
            with os.scandir(here) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name != ".git":
                            stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        found.append(entry.path)
                        if len(found) > limit:
                            return None
        except OSError:
            dirs = None
            continue
    return sorted(found), dirs


def unchanged_members(
    folder: str, state: FolderState, leaves: Callable[[str], Leaf | None]
) -> list[str] | None:
    """Every regular file under `folder`, when its folders' and files' stat data are as
    `state` remembers them; None otherwise (or where `state` holds no folders). `leaves(path)`
    gives a folder's regular files as the trace found them, with their STAT keys.

    No folder is listed: while every folder under it keeps its remembered stat data, none had
    an entry added, removed or renamed (each moves its folder's mtime and ctime), so each holds
    the files it held when `state` was made; the trace's files equal to those, by the stat
    digest, are then all of them, with the stat data remembered."""
    if not state.dirs or not state.tree:
        return None
    keys = []
    for rel in state.dirs:
        try:
            st = os.stat(f"{folder}/{rel}" if rel else folder)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        keys.append(_pack(st))
    if _tree_digest(list(zip(state.dirs, keys, strict=True))) != state.tree:
        return None
    rows, members = [], []
    for rel in state.dirs:
        leaf = leaves(f"{folder}/{rel}" if rel else folder)
        if leaf is not None:
            if not leaf.keys:
                return None
            rows.append((fsencode(rel), leaf.names, leaf.keys))
            members.extend(leaf.paths)
    if _files_digest(rows) != state.stat_digest:
        return None
    return members


def encode_manifest(entries: list[ManifestEntry]) -> tuple[str, bytes]:
    return _encode_rows(sorted((e.path, e.hash, e.size) for e in entries))


def _encode_rows(rows: list[tuple[str, str, int]]) -> tuple[str, bytes]:
    """The one encoding of a manifest: a canonical record holding the sorted (path, hash,
    size) rows. (Manifests written before it was canonical put `type` and `v` before `files`;
    they still read, and keep their ids: an id is the hash of the bytes as stored.)"""
    data = codec.encode_with_rows({"type": "manifest"}, "files", rows)
    return record_id(data), data


def manifest_from_hashes(
    folder: str, files: list[str], hashes: Mapping[str, tuple[str, int]]
) -> tuple[str, bytes, int, int]:
    """The manifest of `files` (all under `folder`) from their (hash, size), e.g. the
    `FileHash`es of `HashCache.hash_many`: (id, encoded bytes, total size, files in it).
    Files without a hash are left out. The same bytes as `encode_manifest`, without an entry
    object per file: a folder of many files would otherwise make as many objects only to
    encode them."""
    cut = len(folder) + 1
    rows = [(f[cut:], h[0], h[1]) for f in files if (h := hashes.get(f)) is not None]
    rows.sort()
    digest, data = _encode_rows(rows)
    return digest, data, sum(r[2] for r in rows), len(rows)


def decode_manifest_rows(
    data: bytes, name: str, *, digest: str | None = None, source: str | None = None
) -> dict[str, str]:
    """{path: hash} of a manifest, without building an entry per file (see `decode_manifest`)."""
    return {p: h for p, h, _s in _checked_rows(data, name, digest, source)}


def decode_manifest(
    data: bytes, name: str, *, digest: str | None = None, source: str | None = None
) -> list[ManifestEntry]:
    """The entries of a manifest, checked as records are: its bytes against `digest` (its id,
    when the caller knows it), then every row against the schema; RecordCorrupt (or
    RecordTooNew) naming `name`, `source` and the row's field otherwise."""
    return [ManifestEntry(p, h, s) for p, h, s in _checked_rows(data, name, digest, source)]


def _checked_rows(
    data: bytes, name: str, digest: str | None, source: str | None
) -> list[list[Any]]:
    if digest is not None and record_id(data) != digest:
        raise RecordCorrupt(name, "its content does not match its id", source=source)
    m = codec.decode(data, name, source)

    def bad(field: str, why: str) -> RecordCorrupt:
        return RecordCorrupt(name, why, source=source, field=field)

    if m.get("type") != "manifest":
        raise bad("type", 'must be "manifest"')
    if "files" not in m:
        raise bad("files", "is missing")
    rows = m["files"]
    if not isinstance(rows, list):
        raise bad("files", "must be a list")
    prev = ""
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != 3:
            raise bad(f"files[{i}]", "must be a [path, hash, size] list")
        path, digest_, size = row
        if type(path) is not str or not path or "\0" in path:
            raise bad(f"files[{i}].path", "must be a non-empty string without NUL")
        if path <= prev:
            # Rows are sorted by path, each path once: a second row for a path would make
            # two readers of one manifest disagree on that file.
            raise bad(f"files[{i}].path", "must sort after the path before it")
        prev = path
        if type(digest_) is not str or len(digest_) != 64 or digest_.strip(_HEX):
            raise bad(f"files[{i}].hash", "must be 64 lowercase hex digits")
        if type(size) is not int or not 0 <= size <= codec.INT64_MAX:
            raise bad(f"files[{i}].size", "must be an integer from 0 to 2**63-1")
    return rows


_HEX = "0123456789abcdef"


class FolderState(NamedTuple):
    """What a folder's files and folders looked like (their stat data) and the manifest they
    gave."""

    stat_digest: str  # of its regular files (`stat_digest`)
    manifest: str
    size: int
    tree: str = ""  # of every folder under it, itself included (`_tree_digest`); "": not known
    dirs: tuple[str, ...] = ()  # those folders, relative to it ("" itself), in `tree`'s order


_STAT = struct.Struct("<QQQqq")


def _pack(st: os.stat_result) -> bytes:
    return _STAT.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fsencode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")  # os.fsencode, without its checks


def stat_digest(folder: str, files: list[str]) -> tuple[str, int] | None:
    """A digest of the stat data of `files` (all under `folder`) and their newest ctime, or
    None when one of them is gone or not a regular file any more."""
    packed = _lstat_keys(files)
    if packed is None:
        return None
    return _stat_digest(folder, files, packed), _newest_ctime(packed)


def _lstat_keys(files: list[str]) -> bytearray | None:
    """The _STAT keys of `files`, back to back; None when one is gone or not a regular file."""
    # One lstat a file is the floor (a folder's mtime misses in-place writes); the rest is
    # kept to a few operations a file. Each lstat is made relative to its folder's descriptor
    # (fstatat): the kernel then resolves one name, not every folder of the absolute path.
    lstat, pack = os.lstat, _STAT.pack
    stats = bytearray()
    here, fd = "", -1
    try:
        for f in files:
            parent, _, name = f.rpartition("/")
            if parent != here:
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                here = parent
            st = lstat(name, dir_fd=fd)
            if st.st_mode & 0o170000 != stat.S_IFREG:
                return None
            stats += pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    return stats


def stat_digest_of_hex(
    folder: str, files: list[str], hex_keys: Mapping[str, bytes]
) -> tuple[str, int] | None:
    """`stat_digest` from the stat keys the tracer took once the run had ended (hex, as
    `Trace.stat_keys` holds them); the few files it has none for (a folder is chosen when the
    run touched 90% of it) are lstat-ed here. None as for `stat_digest`, or where a key is
    malformed."""
    try:
        chunks = [hex_keys[f] for f in files]
    except KeyError:
        missing = [f for f in files if f not in hex_keys]
        taken = _lstat_keys(missing)
        if taken is None:
            return None
        hexed, n = binascii.b2a_hex(taken), 2 * _STAT.size
        own = {f: hexed[i * n : (i + 1) * n] for i, f in enumerate(missing)}
        chunks = [hex_keys[f] if f in hex_keys else own[f] for f in files]
    try:
        packed = binascii.a2b_hex(b"".join(chunks))
    except ValueError:
        return None
    if len(packed) != _STAT.size * len(files):
        return None
    return _stat_digest(folder, files, packed), _newest_ctime(packed)


def stat_digest_of_keys(
    folder: str, files: list[str], keys: Mapping[str, bytes]
) -> tuple[str, int] | None:
    """`stat_digest` from stat keys already taken, without an lstat: those that
    `HashCache.hash_many(..., keys=)` checked or made each digest against (the same packing).
    None when a file has no key (it vanished, or kept changing while it was read)."""
    try:
        packed = b"".join([keys[f] for f in files])
    except KeyError:
        return None
    return _stat_digest(folder, files, packed), _newest_ctime(packed)


_CTIME = struct.Struct("<32xq")  # st_ctime_ns, the last field of a _STAT key


def _newest_ctime(packed: bytes | bytearray) -> int:
    if sys.byteorder == "little":  # the keys' own order: their int64 fields read in place
        return max(memoryview(packed).cast("q")[4::5], default=0)
    return max((c for (c,) in _CTIME.iter_unpack(packed)), default=0)


def _stat_digest(folder: str, files: list[str], stats: bytes | bytearray) -> str:
    """The digest of `files` (under `folder`) whose _STAT keys are `stats`, in `files` order."""
    hexed, width = binascii.b2a_hex(stats), 2 * _STAT.size
    cut = len(folder) + 1
    rows = []
    # Sorted files whose folders hold no subfolder among them, in ASCII (a walk of a common
    # dataset): each folder's files are one stretch, found by bisection and made a row by
    # string operations on it, its keys one slice. Anything else goes path by path.
    at = 0
    while at < len(files):
        d = files[at].rpartition("/")[0]
        end = bisect.bisect_left(files, d + "0", at)  # past d + "/…" ("0" follows "/")
        paths = files[at:end]
        names = ("\0" + "\0".join(paths)).replace(f"\0{d}/", "/")[1:]
        if names.count("/") != len(paths) - 1 or not names.isascii() or paths != sorted(paths):
            return _stat_digest_by_path(folder, files, hexed)
        rows.append((fsencode(d[cut:]), names.encode(), hexed[at * width : end * width]))
        at = end
    if len({r[0] for r in rows}) < len(rows):  # a folder's files apart
        return _stat_digest_by_path(folder, files, hexed)
    rows.sort()
    return _files_digest(rows)


def _stat_digest_by_path(folder: str, files: list[str], hexed: bytes) -> str:
    """`_stat_digest` of files in any order and any names; `hexed` their keys in hex."""
    width = 2 * _STAT.size
    by_dir: dict[str, tuple[list[str], list[bytes]]] = {}
    for i, f in enumerate(files):
        d, _, name = f.rpartition("/")
        got = by_dir.get(d)
        if got is None:
            got = by_dir[d] = ([], [])
        got[0].append(name)
        got[1].append(hexed[i * width : (i + 1) * width])
    cut = len(folder) + 1
    rows = []
    for d, (names, keys) in by_dir.items():
        order = sorted(range(len(names)), key=names.__getitem__)
        joined = "/".join([names[i] for i in order])
        try:
            blob = joined.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes (surrogateescape): sort as bytes
            order = sorted(range(len(names)), key=lambda i: fsencode(names[i]))
            blob = fsencode("/".join([names[i] for i in order]))
        rows.append((fsencode(d[cut:]), blob, b"".join([keys[i] for i in order])))
    rows.sort()
    return _files_digest(rows)


# Digests of this definition never equal those of another: each starts with its own name.
_FILES_DIGEST = b"roar folder files 2\0"
_TREE_DIGEST = b"roar folder tree 2\0"


def _files_digest(rows: list[tuple[bytes, bytes, bytes]]) -> str:
    """The stat digest of a folder's regular files from one row per folder that holds some:
    (its path relative to the folder, b"" for the folder itself; its files' names "/"-joined
    in byte order; their STAT keys in hex, back to back in that order), the rows ordered by
    path. A trace's `files` record gives a row as it stands (docs/trace-format.md)."""
    h = blake3(_FILES_DIGEST)
    for rel, names, keys in rows:
        # No path holds NUL, no name "/" or NUL, a key is hex of fixed length: one reading.
        h.update(rel)
        h.update(b"\0")
        h.update(names)
        h.update(b"\0")
        h.update(keys)
        h.update(b"\n")
    return h.hexdigest()


def _tree_digest(dirs: list[tuple[str, bytes]]) -> str:
    """The digest of (relative path, packed _STAT key) of a folder's folders, in that order."""
    h = blake3(_TREE_DIGEST)
    for rel, key in dirs:
        h.update(fsencode(rel))
        h.update(b"\0")
        h.update(key)
    return h.hexdigest()


def tree_state(dirs: list[tuple[str, bytes]]) -> tuple[str, tuple[str, ...], int]:
    """(`FolderState.tree`, `.dirs`, their newest ctime) of the folders a walk took."""
    ordered = sorted(dirs, key=lambda d: fsencode(d[0]))
    return (
        _tree_digest(ordered),
        tuple(rel for rel, _ in ordered),
        _newest_ctime(b"".join(k for _, k in ordered)),
    )


#: The digests' definition a kept state was made by (states before it have no "v").
_STATE_VERSION = 2


class FolderCache:
    """Per-folder states under `.git/roar/folders/`, one small JSON file per folder path."""

    def __init__(self, roar_dir: Path, racy_window_ns: int = 1_000_000_000) -> None:
        self.dir = roar_dir / "folders"
        self.racy_window_ns = racy_window_ns

    def _file(self, folder: str) -> Path:
        return self.dir / record_id(folder.encode("utf-8", "surrogateescape"))[:32]

    def remembers_any(self) -> bool:
        """Whether some folder's state is kept (then a run asks the tracer for stat keys)."""
        try:
            with os.scandir(self.dir) as it:
                return next(it, None) is not None
        except OSError:
            return False

    def get(self, folder: str) -> FolderState | None:
        try:
            import json  # lazy: only a run with a folder artifact reads or writes one

            m = json.loads(self._file(folder).read_text())
            if m.get("v") != _STATE_VERSION:
                return None  # made by another definition of the digests: rebuilt
            dirs = m["dirs"]
            if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
                return None
            return FolderState(
                str(m["stat"]), str(m["manifest"]), int(m["size"]), str(m["tree"]), tuple(dirs)
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # absent or damaged: derived state, simply rebuilt

    def put(self, folder: str, state: FolderState, newest_ctime_ns: int, began_ns: int) -> None:
        """Remember `state`, unless a file changed so recently that a later change within the
        same timestamp tick could go unseen (git's "racy clean" rule)."""
        if newest_ctime_ns >= began_ns - self.racy_window_ns:
            return
        self.dir.mkdir(exist_ok=True)
        target = self._file(folder)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        import json  # lazy: see get

        tmp.write_text(
            json.dumps(
                {
                    "v": _STATE_VERSION,
                    "stat": state.stat_digest,
                    "manifest": state.manifest,
                    "size": state.size,
                    "tree": state.tree,
                    "dirs": list(state.dirs),
                }
            )
        )
        tmp.replace(target)


def now_ns() -> int:
    return time.time_ns()
