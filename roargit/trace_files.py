"""The files of a traced run: what it did to each path, and what is at a path when it ended.

`trace_log` reads the tracer's log into one `FileAccess` per path. Where a summary's `files`
record gave a folder's paths the same access, they stay one `FileGroup`, and the mappings
`Accesses` (`Trace.files`) and `StatKeys` (`Trace.stat_keys`) make per-path objects only
when read path by path: consumers that take a group at once (run_files, stdio) make none.

`state_at_end` and `states_at_end` look at the file system once the run is over: the
tracer does not wait for a call's result, so the rules (trace_log) tell a call that failed
from one that worked by what is there afterwards.

This module is on the hot path of `roar run`: it imports nothing heavy.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

from roargit import TYPE_CHECKING
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any, TypeVar

    _V = TypeVar("_V")

KEY_HEX = 80  # a STAT key: 40 bytes in hex

# A FileAccess made by tuple.__new__ itself, skipping the class's __new__: one per path of a
# group read path by path.
_new_tuple = tuple.__new__


class FileAccess(NamedTuple):
    """What the run did to one path (absolute, decoded with `os.fsdecode`).

    A NamedTuple rather than a frozen dataclass: a big run makes one per path, and a frozen
    dataclass's __init__ (object.__setattr__ per field) is several times the cost of a
    tuple's."""

    path: str
    read: bool = False
    written: bool = False
    created: bool = False
    deleted: bool = False
    executed: bool = False
    temporary: bool = False  # created and gone again within the run: not an output
    renamed_from: tuple[str, ...] = ()
    renamed_to: tuple[str, ...] = ()
    # A regular file when the trace ended (the trace lists the folders to tell failed calls
    # apart, so it knows without a stat). False: not one, or not known: ask the file system.
    regular: bool = False


class FileGroup(NamedTuple):
    """Paths of one folder that a summary's `files` record gives the same access: each one's
    FileAccess is (path, *fields). `names` are the paths' last components, in `paths` order
    (empty where not given); where the record carries STAT keys, `keys` holds them back to
    back (80 hex digits a path, in that order)."""

    folder: str
    paths: list[str]
    fields: tuple[Any, ...]
    keys: bytes = b""
    names: Sequence[str] = ()


class _Grouped(Mapping[str, "_V"]):
    """A mapping of `single` and of every path of `groups`, whose per-path entries are made
    only when it is first read path by path (`_members`, one group at a time)."""

    def __init__(self, single: dict[str, _V], groups: list[FileGroup]) -> None:
        self.single = single
        self.groups = groups
        self._all: dict[str, _V] | None = None

    def _members(self, group: FileGroup) -> Iterable[tuple[str, _V]]:
        raise NotImplementedError

    def _flat(self) -> dict[str, _V]:
        if self._all is None:
            flat = dict(self.single)
            for g in self.groups:
                flat.update(self._members(g))
            self._all = flat
        return self._all

    def __getitem__(self, path: str) -> _V:
        return self._flat()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self.single) + sum(len(g.paths) for g in self.groups)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._flat()!r})"


class Accesses(_Grouped[FileAccess]):
    """`Trace.files` of a run whose summary had `files` records: the paths of those are kept
    as groups (`groups`), and their FileAccess objects made only when the mapping is read path
    by path. A consumer that handles a group at once (run_files.sort_accesses) reads `single`
    and `groups` instead: a big run then makes no object per path."""

    def _members(self, group: FileGroup) -> list[tuple[str, FileAccess]]:
        fields = group.fields
        return [(p, _new_tuple(FileAccess, (p, *fields))) for p in group.paths]


class StatKeys(_Grouped[bytes]):
    """`Trace.stat_keys` of a run whose summary had `files` records with keys: those keys stay
    on their `FileGroup` (`groups`) until the mapping is read path by path. A consumer that
    takes a folder at a time (run_files.group_folders) reads `single` and `groups` instead."""

    def __init__(self, single: dict[str, bytes], groups: list[FileGroup]) -> None:
        super().__init__(single, [g for g in groups if g.keys])

    def _members(self, group: FileGroup) -> Iterable[tuple[str, bytes]]:
        return zip(group.paths, key_cutter(len(group.paths)).unpack(group.keys), strict=True)


_cutters: dict[int, struct.Struct] = {}


def key_cutter(n: int) -> struct.Struct:
    """Cuts n STAT keys back to back into n bytes objects in one call."""
    if n not in _cutters:
        _cutters[n] = struct.Struct(f"{KEY_HEX}s" * n)
    return _cutters[n]


# ------------------------------------------------------------------ the state at the end


def state_at_end(path: str) -> str:
    """What is at `path` now: 'file' (a regular file), 'other' (a symlink or other
    non-directory, which the rules count as a file), 'dir' or 'none'."""
    try:
        st = os.lstat(path)
    except OSError:
        return "none"
    kind = st.st_mode & 0o170000
    return "file" if kind == 0o100000 else "dir" if kind == 0o040000 else "other"


def states_at_end(paths: Collection[str]) -> dict[str, str]:
    """`state_at_end` for many paths at once: a directory holding many of them is listed
    once (`scandir` gives the type without a stat per entry) instead of `lstat` per path."""
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        d, _, name = p.rpartition("/")
        by_dir.setdefault(d or "/", []).append(p)
    out: dict[str, str] = {}
    for d, group in by_dir.items():
        if len(group) >= _SCAN_AT_LEAST:
            listed = _list_dir(d, len(group))
            if listed is not None:
                get, cut = listed.get, len(d) + 1 if d != "/" else 1
                for p in group:
                    name = p[cut:]
                    out[p] = get(name, "none") if name else state_at_end(p)
                continue
        for p in group:
            out[p] = state_at_end(p)
    return out


_SCAN_AT_LEAST = 32  # paths in one directory before listing it beats lstat per path


def _list_dir(d: str, wanted: int) -> dict[str, str] | None:
    """name -> 'file'/'dir' for directory `d`; None where listing it does not pay (a huge
    directory of which few entries are wanted) or fails (then lstat per path decides)."""
    try:
        # st_size grows with the entries on the common file systems (ext4, xfs, tmpfs, btrfs)
        if os.stat(d).st_size > wanted * 256:
            return None
        with os.scandir(d) as it:
            return {
                e.name: "file"
                if e.is_file(follow_symlinks=False)
                else "dir"
                if e.is_dir(follow_symlinks=False)
                else "other"
                for e in it
            }
    except OSError:
        return None
