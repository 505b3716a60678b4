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
answers "unchanged?" for 100,000 files, instead of a hash-cache lookup per file.
"""

from __future__ import annotations

import binascii
import os
import stat
import struct
import time
from collections import Counter
from collections.abc import Mapping
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


def choose_folders(
    files: list[str], never: set[str], leaves: Mapping[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Folders to record whole: {folder: every regular file under it}. `files` are absolute
    paths the run touched; folders in `never` (/, the repo root, $HOME …) and their parents are
    never chosen. `leaves` (folder -> regular files in it, as the trace found them once the
    run ended) spares the listing's per-entry work for a folder that holds only those."""
    # Per folder first, then up the parents once per folder (not once per file).
    direct = Counter(f.rpartition("/")[0] for f in files)
    counts: Counter[str] = Counter()
    for folder, n in direct.items():
        d = folder
        while d and d not in never and d != "/":
            counts[d] += n
            d = os.path.dirname(d)
    # A folder whose touched files all lie in one of its subfolders is not a candidate: the
    # subfolder is the dataset, and the parent would only add files the run never touched
    # (`data/` holding `data/images/` and a few CSVs made by other steps).
    narrower = {os.path.dirname(d) for d, n in counts.items() if n == counts[os.path.dirname(d)]}
    chosen: dict[str, list[str]] = {}
    # Outer folders first; by name among equals, so `files` may come in any order.
    for folder in sorted(
        (d for d, n in counts.items() if n >= MIN_FILES), key=lambda d: (len(d), d)
    ):
        if folder in narrower or any(folder.startswith(c + "/") for c in chosen):
            continue
        members = _walk_bounded(folder, int(counts[folder] / COVERAGE), leaves or {})
        if members is not None and counts[folder] >= COVERAGE * len(members):
            chosen[folder] = members
    return chosen


def _walk_bounded(
    folder: str, limit: int, leaves: Mapping[str, list[str]] | None = None
) -> list[str] | None:
    """Every regular file under `folder`, or None as soon as there are more than `limit`."""
    found: list[str] = []
    stack = [folder]
    while stack:
        here = stack.pop()
        known = leaves.get(here) if leaves else None
        if known is not None and len(known) <= limit - len(found) + 1:
            try:
                # (a folder much bigger than `known` is left to the bounded scan below)
                listed = os.stat(here).st_size <= 4096 + 256 * len(known)
                names = os.listdir(here) if listed else []
            except OSError:
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
            continue
    return sorted(found)


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
    """What a folder's files looked like (their stat data) and the manifest they gave."""

    stat_digest: str
    manifest: str
    size: int


_STAT = struct.Struct("<QQQqq")


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
    return max((c for (c,) in _CTIME.iter_unpack(packed)), default=0)


def _stat_digest(folder: str, files: list[str], stats: bytes | bytearray) -> str:
    # The names relative to `folder`: every path starts with it and none holds NUL, so
    # dropping "\0folder/" from the joined paths cuts each at once (no slice per path).
    names = ("\0" + "\0".join(files)).replace(f"\0{folder}/", "\0")[1:]
    h = blake3(names.encode("utf-8", "surrogateescape"))
    h.update(b"\0\0")  # no name holds NUL, so the names end here
    h.update(stats)
    return h.hexdigest()


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
            return FolderState(str(m["stat"]), str(m["manifest"]), int(m["size"]))
        except (OSError, ValueError, KeyError, TypeError):
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
            json.dumps({"stat": state.stat_digest, "manifest": state.manifest, "size": state.size})
        )
        tmp.replace(target)


def now_ns() -> int:
    return time.time_ns()
