"""Ledger commits built as raw git objects: the trees on the changed paths, edited from their
parents' raw bytes (a tree whose entries all have one width is edited by slicing), and the
commit; and the object hash of the repository. Nothing is written here: ledger.py writes
what this builds as one small pack and moves the ref.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

from roargit import TYPE_CHECKING
from roargit.gitobjects import NewEntry, tree_rows
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any


# Git's object hash: CPython's own SHA-1, as `random` takes its sha512. hashlib loads OpenSSL,
# a start-up cost of every `roar run` for a few small objects. (SHA-256: see `hasher`.)
def _load_sha1() -> Callable[..., Any]:
    try:
        return __import__("_sha1").sha1
    except ImportError:  # another Python
        import hashlib

        return hashlib.sha1


sha1 = _load_sha1()


def hasher(oid_bytes: int) -> Callable[..., Any]:
    """The hash constructor of a repository whose object ids have `oid_bytes` bytes."""
    if oid_bytes == 20:
        return sha1
    from hashlib import sha256  # SHA-256 repositories only: hashlib loads OpenSSL

    return sha256


def blob_oid(data: bytes, width: int = 40) -> str:
    """The id git gives a blob of these bytes (SHA-1, or SHA-256 in a 64-hex repository)."""
    h = hasher(width // 2)()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


Rows = tuple[list[bytes], list[bytes]]  # a tree's sort keys and raw entries (tree_rows)


class _Fixed(NamedTuple):
    """A raw tree whose entries all have one width: one mode, names of one length (the
    ledger's fan-out trees: `c.<run id>` under an artifact, 64-hex subtrees in a bucket). An
    entry is found by binary search on the raw bytes and one is put in by slicing them, so
    editing a tree of k entries costs no Python work per entry."""

    width: int  # of an entry
    name_at: int  # offset of the name in an entry
    name_len: int
    tree: bool  # entries are subtrees (mode 40000)
    entries: int

    @classmethod
    def of(cls, data: bytes, oid_bytes: int) -> _Fixed | None:
        sp, nul = data.find(b" "), data.find(b"\0")
        if sp <= 0 or nul <= sp:
            return None
        width = nul + 1 + oid_bytes
        count, rest = divmod(len(data), width)
        if rest or not count or count < 8:  # a small tree is parsed as fast as checked
            return None
        for at in (*range(sp), sp, nul):  # the same mode, and a space and a NUL in place
            if data[at::width] != data[at : at + 1] * count:
                return None
        return cls(width, sp + 1, nul - sp - 1, data.startswith(b"40000 "), count)

    def find(self, data: bytes, name: bytes) -> tuple[int, bool]:
        """(index where `name` is or would go, whether it is there)."""
        lo, hi = 0, self.entries
        w, at, end = self.width, self.name_at, self.name_at + self.name_len
        while lo < hi:
            mid = (lo + hi) // 2
            here = data[mid * w + at : mid * w + end]
            if here < name:
                lo = mid + 1
            elif here > name:
                hi = mid
            else:
                return mid, True
        return lo, False

    def fits(self, node: dict[bytes, Any]) -> bool:
        """Whether every entry to put in keeps the tree's one width and kind."""
        for name, value in node.items():
            tree = isinstance(value, dict) or value[0] == b"40000"
            if len(name) != self.name_len or tree != self.tree:
                return False
            if not tree and len(value[0]) != self.name_at - 1:
                return False
        return True


class TreeEditor:
    """Builds a ledger commit as raw objects: the changed trees, edited from their parents'
    raw bytes, and the commit; nothing is written here. The trees of the last commit built
    stay decoded (`_rows`, by id: an id names one content, so an entry is never stale)."""

    def __init__(self) -> None:
        self._rows: dict[bytes, Rows] = {}

    def commit(
        self,
        read: Callable[[bytes], bytes],
        old_root: bytes | None,
        entries: Sequence[NewEntry],
        message: str,
        old: str | None,
        read_many: Callable[[list[bytes]], list[bytes]] | None = None,
    ) -> tuple[str, dict[bytes, tuple[bytes, bytes]]]:
        """(new commit id, {raw oid: (type, content)} of every object it needs written).
        `read(raw oid)` gives a tree's content; `old_root` is the tree of commit `old`;
        `read_many`, when given, reads the trees to edit a level at a time, together."""
        width = len(old) // 2 if old is not None else 20
        new_hash = hasher(width)
        out: dict[bytes, tuple[bytes, bytes]] = {}

        def add(kind: bytes, data: bytes) -> bytes:
            h = new_hash(b"%s %d\0" % (kind, len(data)))
            h.update(data)
            oid = h.digest()
            out[oid] = (kind, data)
            return oid

        # The entries as nested {name: subtree dict | (mode, oid)}.
        top: dict[bytes, Any] = {}
        # A run's record is the blob of every artifact entry it makes (one per file it read
        # or wrote): hashed once, not once per entry (bytes cache their own hash, and the
        # entries share one object, so each lookup after the first costs no pass over them).
        blobs: dict[bytes, bytes] = {}
        for e in entries:
            node = top
            for part in e.path[:-1]:
                node = node.setdefault(part.encode("utf-8", "surrogateescape"), {})
            name = e.path[-1].encode("utf-8", "surrogateescape")
            if e.data is not None:
                oid = blobs.get(e.data)
                if oid is None:
                    oid = blobs[e.data] = add(b"blob", e.data)
                node[name] = (b"100644", oid)
            else:
                node[name] = (b"40000", bytes.fromhex(str(e.tree)))

        seen, self._rows = self._rows, {}
        raw: dict[bytes, bytes] = {}
        parsed: dict[bytes, Rows] = {}
        if read_many is not None and old_root is not None:
            # A run that read 20,000 files edits 20,000 artifact trees that earlier runs made:
            # read a level of them in one pipelined exchange, not one round trip each.
            level: list[tuple[bytes, dict[bytes, Any]]] = [(old_root, top)]
            while level:
                want = [b for b, _n in level if b not in seen and b not in raw]
                raw.update(zip(want, read_many(want), strict=True))
                below = []
                for base, node in level:
                    known = seen.get(base) or parsed.get(base)
                    fixed = None if known is not None else _Fixed.of(raw[base], width)
                    if fixed is not None:  # a tree of blobs has nothing below it to read
                        data = raw[base]
                        for name, value in node.items():
                            if fixed.tree and isinstance(value, dict):
                                i, here = fixed.find(data, name)
                                if here:
                                    end = (i + 1) * fixed.width
                                    below.append((data[end - width : end], value))
                        continue
                    if known is None:
                        known = parsed[base] = tree_rows(raw[base], width)
                    keys, rows = known
                    for name, value in node.items():
                        if isinstance(value, dict):
                            i = bisect_left(keys, name + b"/")
                            if i < len(keys) and keys[i] == name + b"/":
                                below.append((rows[i][-width:], value))
                level = below

        def edit_fixed(data: bytes, fixed: _Fixed, node: dict[bytes, Any]) -> bytes:
            w = fixed.width
            puts = []
            for name, value in node.items():
                i, here = fixed.find(data, name)
                if isinstance(value, dict):
                    below = data[(i + 1) * w - width : (i + 1) * w] if here else None
                    mode, oid = b"40000", edit(below, value)
                else:
                    mode, oid = value
                puts.append((i, here, name, b"%s %s\0%s" % (mode, name, oid)))
            puts.sort()
            pieces: list[bytes] = []
            last = 0
            for i, here, _name, row in puts:
                pieces += (data[last * w : i * w], row)
                last = i + 1 if here else i
            pieces.append(data[last * w :])
            return add(b"tree", b"".join(pieces))

        def edit(base: bytes | None, node: dict[bytes, Any]) -> bytes:
            if base is None:
                keys: list[bytes] = []
                rows: list[bytes] = []
            else:
                # Taken out of the cache, so that editing the lists in place is safe.
                cached = seen.pop(base, None) or parsed.pop(base, None)
                if cached is None:  # read again: a tree met twice (same content) is edited twice
                    data = raw.get(base)
                    if data is None:
                        data = read(base)
                    fixed = _Fixed.of(data, width)
                    if fixed is not None and fixed.fits(node):
                        return edit_fixed(data, fixed, node)
                    cached = tree_rows(data, width)
                keys, rows = cached
            for name, value in node.items():
                if isinstance(value, dict):
                    key = name + b"/"
                    i = bisect_left(keys, key)
                    here = i < len(keys) and keys[i] == key
                    mode, oid = b"40000", edit(rows[i][-width:] if here else None, value)
                else:
                    mode, oid = value
                    key = name + b"/" if mode == b"40000" else name
                    i = bisect_left(keys, key)
                    here = i < len(keys) and keys[i] == key
                # Same name, other kind: replaced, as a tree builder would.
                other = name if key != name else name + b"/"
                j = bisect_left(keys, other)
                if j < len(keys) and keys[j] == other:
                    del keys[j], rows[j]
                    i = bisect_left(keys, key)
                    here = i < len(keys) and keys[i] == key
                row = b"%s %s\0%s" % (mode, name, oid)
                if here:
                    rows[i] = row
                else:
                    keys.insert(i, key)
                    rows.insert(i, row)
            oid = add(b"tree", b"".join(rows))
            self._rows[oid] = (keys, rows)
            return oid

        root = edit(old_root, top)
        when = int(time.time())
        text = b"tree %s\n" % root.hex().encode()
        if old is not None:
            text += b"parent %s\n" % old.encode()
        who = b"roar <roar@localhost> %d +0000" % when
        text += b"author %s\ncommitter %s\n\n%s" % (who, who, message.encode())
        return add(b"commit", text).hex(), out
