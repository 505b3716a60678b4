"""What the tracer writes and how it is read back: the event log and its summary.

`roar-trace` (roargit/tracer/roar-trace.c, run by `roargit.trace.run_traced`) writes an
event log and a summary of it, whose format docs/trace-format.md specifies. `parse_log` turns
a log's bytes into records (`TraceLog`, `Event`) and `summarize` applies the classification
rules to them, giving one `FileAccess` per path (trace_files.py); `run_traced` reads a
summary through `_parse_found` and `_accesses`, which keep a folder's like paths grouped
(`trace_files.Accesses`).

This module is on the hot path of `roar run`: it imports nothing heavy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

from roargit import TYPE_CHECKING, trace_files
from roargit.errors import RoarError
from roargit.structs import NamedTuple
from roargit.trace_files import KEY_HEX, Accesses, FileAccess, FileGroup, key_cutter

if TYPE_CHECKING:
    from typing import Any

LOG_VERSION = 5  # 2: the shim (start has a SHIM field; records after `end` are ignored)
# 3: the summary (`file` records: one per path, the bits of its `open` records OR-ed)
# 4: `files` records (a folder's paths with the same bits and state, on one line)
# 5: a `files` record's names in byte order


class TraceLogCorrupt(RoarError):
    def __init__(self, why: str) -> None:
        super().__init__(f"trace log is corrupt: {why}")


class TraceLogTooNew(RoarError):
    def __init__(self, version: int) -> None:
        super().__init__(
            f"trace log has format version {version}; this roargit reads up to {LOG_VERSION}"
        )


class Process(NamedTuple):
    pid: int
    ppid: int  # 0 for the command itself
    argv: tuple[str, ...]
    cwd: str
    executable: str = ""
    exit_code: int | None = None  # 128 + signal when killed; None when it outlived the trace


class Event(NamedTuple):
    """One file event of the log, in log order. `existed` is None where not recorded."""

    kind: str  # open, rename, unlink, truncate, link, symlink, mkdir, rmdir, exec
    pid: int
    paths: tuple[str, ...]
    flags: int = 0
    existed: bool | None = None


class TraceLog(NamedTuple):
    """The parsed log: events plus what the tracer said about the run as a whole."""

    version: int
    root: int | None
    filtered: bool
    events: tuple[Event, ...]
    processes: tuple[Process, ...]
    signals: tuple[tuple[int, int], ...]  # (pid, signal) delivered to traced processes
    warnings: tuple[str, ...]
    leftover: tuple[int, ...]
    unavailable: str | None  # why ptrace/seccomp was refused; nothing ran
    finished: bool  # the `end` record is there
    incomplete: bool  # the tracer flagged events it could not decode
    exit_code: int | None
    signal: int | None
    shim: bool = False  # roar-shim.so recorded the calls of dynamically linked programs
    # From a summary's `file` records: path -> access bits of its opens, and what is at the
    # path now ("file", "dir", "other", "none"; absent where the path was normalised).
    summarized: Mapping[str, int] = MappingProxyType({})
    states: Mapping[str, str] = MappingProxyType({})
    # (pid, family, address) of each `connect` to a server on this machine ("unix" and a
    # socket path, or "inet" and a loopback address:port).
    connects: tuple[tuple[int, str, str], ...] = ()
    # From a summary's `file` records of regular files that carry one: path -> stat key.
    stat_keys: Mapping[str, bytes] = MappingProxyType({})


# ------------------------------------------------------------------------------ parsing


def _unescape(token: bytes) -> bytes:
    if b"%" not in token:
        return token
    if token == b"%00":
        return b""
    parts = token.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        out += bytes.fromhex(part[:2].decode("ascii"))
        out += part[2:]
    return bytes(out)


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _path(token: bytes) -> str:
    raw = _unescape(token) if b"%" in token else token
    text = raw.decode(_FS_ENCODING, _FS_ERRORS)  # = os.fsdecode, without its overhead
    if b"/." in raw or b"//" in raw or raw.endswith(b"/"):
        return os.path.normpath(text)
    return text


class _Procs:
    """Builds the process tree while the log is read in order."""

    def __init__(self) -> None:
        self.argv: dict[int, tuple[str, ...]] = {}
        self.cwd: dict[int, str] = {}
        self.exe: dict[int, str] = {}
        self.ppid: dict[int, int] = {}
        self.exit: dict[int, int] = {}
        self.order: list[int] = []

    def add(self, pid: int, ppid: int) -> None:
        if pid not in self.ppid:
            self.order.append(pid)
        self.ppid[pid] = ppid
        self.argv.setdefault(pid, self.argv.get(ppid, ()))
        self.cwd.setdefault(pid, self.cwd.get(ppid, ""))
        self.exe.setdefault(pid, self.exe.get(ppid, ""))

    def result(self) -> tuple[Process, ...]:
        return tuple(
            Process(
                pid=p,
                ppid=self.ppid[p],
                argv=self.argv.get(p, ()),
                cwd=self.cwd.get(p, ""),
                executable=self.exe.get(p, ""),
                exit_code=self.exit.get(p),
            )
            for p in self.order
        )


def parse_log(data: bytes) -> TraceLog:
    """Parse a roar-trace event log or summary (docs/trace-format.md). Pure: takes the bytes."""
    summarized: dict[str, int] = {}
    states: dict[str, str] = {}
    keys: dict[str, bytes] = {}
    log, rows = _parse(data, None, summarized, states, keys=keys)
    return log._replace(
        events=tuple(Event(*r) for r in rows), summarized=summarized, states=states, stat_keys=keys
    )


# An event as a plain tuple (Event's fields, in order): cheaper to build and to read in bulk.
_Row = tuple[str, int, tuple[str, ...], int, "bool | None"]


_new_tuple = tuple.__new__  # a FileAccess per `file` record, without its class's __new__
_STATE_OF = {b"f": "file", b"d": "dir", b"o": "other", b"n": "none"}


def _file_template(bits: int, state: bytes) -> tuple[Any, ...] | None:
    """FileAccess's fields after the path for a summary's `file BITS STATE` record whose path
    no other record touches; None where the rules need more than these two (see `_classify`:
    a directory, or a path gone by the end)."""
    if state not in (b"f", b"o"):
        return None
    return (bool(bits & _READ), bool(bits & _WRITTEN), bool(bits & _CREATED), False, False,
            False, (), (), state == b"f")  # fmt: skip


def _parse(
    data: bytes,
    opens: dict[str, int] | None = None,
    summarized: dict[str, int] | None = None,
    states: dict[str, str] | None = None,
    direct: dict[str, FileAccess] | None = None,
    keys: dict[str, bytes] | None = None,
    groups: list[FileGroup] | None = None,
) -> tuple[TraceLog, list[_Row]]:
    """parse_log, with the events as rows and `TraceLog.events` left empty.

    With `opens`, `open` records (nearly all of a raw log) make no rows: each one's access
    bits (`_open_bits`) are OR-ed into `opens` under its path, and `_classify` takes them
    from there. That skips a tuple and an int() per record, and a pass over the rows.
    A summary's `file` records go to `summarized` (bits, OR-ed; default `opens`) and `states`;
    with `direct`, those of regular files and symlinks become FileAccess objects there at
    once (`_classify` merges in what other records did to the same paths): a big run's
    per-path work, done once, a line at a time. `keys` gets the STAT field of those records
    (by path, as it is; not for a path the reader normalised). With `groups` (and `direct`),
    a `files` record whose paths `direct` would take becomes one FileGroup there, its keys
    with it (not in `keys`); otherwise its paths are read as `file` records would be."""
    if summarized is None:
        summarized = opens if opens is not None else {}
    if states is None:
        states = {}
    templates: dict[bytes, tuple[Any, ...] | None] = {}
    lines = data.split(b"\n")
    head = lines[0].split(b" ")
    if len(head) != 2 or head[0] != b"roar-trace" or not head[1].isdigit():
        raise TraceLogCorrupt("missing the 'roar-trace VERSION' header")
    version = int(head[1])
    if version > LOG_VERSION:
        raise TraceLogTooNew(version)
    events: list[_Row] = []
    procs = _Procs()
    signals: list[tuple[int, int]] = []
    warnings: list[str] = []
    leftover: list[int] = []
    connects: list[tuple[int, str, str]] = []
    root: int | None = None
    filtered = True
    shim = False
    unavailable: str | None = None
    finished = incomplete = False
    exit_code: int | None = None
    sig: int | None = None
    # The last line may be cut short if the tracer was killed mid-write: ignore it.
    body = lines[1:-1]
    bits_of: dict[bytes, int] = {}  # FLAGS + EXISTED fields -> access bits (0: not a file)
    try:
        for line in body:
            # A `files` record's names are split once, as text, below.
            f = line.split(b" ", 5) if line.startswith(b"files ") else line.split(b" ")
            kind = f[0]
            if kind == b"file":  # FILE BITS STATE PATH: nearly all of a summary
                tok = f[3]
                if b"/." in tok or b"//" in tok or tok.endswith(b"/"):
                    # normalised: what the tracer lstat-ed is not this path; lstat it again
                    path = _path(tok)
                    summarized[path] = summarized.get(path, 0) | int(f[1])
                    continue
                path = (_unescape(tok) if b"%" in tok else tok).decode(_FS_ENCODING, _FS_ERRORS)
                if keys is not None and len(f) > 4:
                    keys[path] = f[4]
                if direct is not None:
                    key = f[1] + f[2]
                    if key in templates:
                        tpl = templates[key]
                    else:
                        tpl = templates[key] = _file_template(int(f[1]), f[2])
                    if tpl is not None:
                        direct[path] = _new_tuple(FileAccess, (path, *tpl))
                        continue
                summarized[path] = summarized.get(path, 0) | int(f[1])
                states[path] = _STATE_OF[f[2]]
            elif kind == b"files":  # BITS STATE DIR KEYS NAME...: a folder's paths at once
                d, ns = f[3], f[5]  # (not the keys between them: most of the line)
                if (
                    b"%" in d or b"/." in d or b"//" in d or b"%" in ns or b"/" in ns
                    or b" ." in ns or ns.startswith(b".")
                ):  # fmt: skip
                    raise ValueError("a `files` path is escaped or not normal")
                folder = d.decode(_FS_ENCODING, _FS_ERRORS)
                pre = folder + "/"
                names = ns.decode(_FS_ENCODING, _FS_ERRORS).split(" ")
                paths = [pre + n for n in names]
                kt = f[4]
                if kt == b"-":
                    kt = b""
                elif len(kt) != KEY_HEX * len(paths):
                    raise ValueError("one STAT key a path")
                key = f[1] + f[2]
                if key in templates:
                    tpl = templates[key]
                else:
                    tpl = templates[key] = _file_template(int(f[1]), f[2])
                if groups is not None and direct is not None and tpl is not None:
                    # the keys stay with the group (StatKeys), unsplit
                    groups.append(FileGroup(folder, paths, tpl, kt, names))
                    continue
                if kt and keys is not None:
                    keys.update(zip(paths, key_cutter(len(paths)).unpack(kt), strict=True))
                bits, state = int(f[1]), _STATE_OF[f[2]]
                for path in paths:
                    summarized[path] = summarized.get(path, 0) | bits
                    states[path] = state
            elif kind == b"open" and opens is not None:
                fl = f[2] + f[3]
                b = bits_of.get(fl)
                if b is None:
                    ex = f[3]
                    b = bits_of[fl] = _open_bits(int(f[2], 16), None if ex == b"-" else ex == b"1")
                if b:
                    tok = f[4]
                    if b"%" in tok or b"/." in tok or b"//" in tok or tok.endswith(b"/"):
                        path = _path(tok)
                    else:
                        path = tok.decode(_FS_ENCODING, _FS_ERRORS)  # = _path(tok), inlined
                    opens[path] = opens.get(path, 0) | b
            elif kind == b"open":  # most of a log: _path inlined
                tok = f[4]
                if b"%" in tok or b"/." in tok or b"//" in tok or tok.endswith(b"/"):
                    path = _path(tok)
                else:
                    path = tok.decode(_FS_ENCODING, _FS_ERRORS)
                ex = f[3]
                events.append(
                    ("open", int(f[1]), (path,), int(f[2], 16), None if ex == b"-" else ex == b"1")
                )
            elif kind in (b"rename", b"link"):
                events.append(
                    (kind.decode(), int(f[1]), (_path(f[3]), _path(f[4])), 0, f[2] == b"1")
                )
            elif kind == b"symlink":
                target = os.fsdecode(_unescape(f[3]))
                events.append(("symlink", int(f[1]), (target, _path(f[4])), 0, f[2] == b"1"))
            elif kind in (b"unlink", b"truncate", b"mkdir", b"rmdir"):
                events.append((kind.decode(), int(f[1]), (_path(f[3]),), 0, f[2] == b"1"))
            elif kind == b"exec":
                pid = int(f[1])
                exe = _path(f[3])
                events.append(("exec", pid, (exe,), 0, None))
                if pid not in procs.ppid:
                    procs.add(pid, 0)
                procs.exe[pid] = exe
                procs.cwd[pid] = os.fsdecode(_unescape(f[4]))
                procs.argv[pid] = tuple(os.fsdecode(_unescape(a)) for a in f[5:])
            elif kind == b"task":
                if f[4] != b"thread":
                    procs.add(int(f[1]), int(f[3]))
            elif kind == b"exit":
                status = int(f[3])
                procs.exit[int(f[1])] = status if f[2] == b"code" else 128 + status
            elif kind == b"signal":
                signals.append((int(f[1]), int(f[2])))
            elif kind == b"start":
                root = int(f[1])
                filtered = f[2] == b"1"
                shim = len(f) > 3 and f[3] == b"1"
                procs.add(root, 0)
            elif kind == b"warn":
                warnings.append(os.fsdecode(_unescape(f[1])))
            elif kind == b"leftover":
                leftover.append(int(f[1]))
            elif kind == b"connect":
                connects.append((int(f[1]), f[2].decode(), os.fsdecode(_unescape(f[3]))))
            elif kind == b"incomplete":
                incomplete = True
            elif kind == b"unavailable":
                unavailable = ": ".join(os.fsdecode(_unescape(x)) for x in f[1:])
            elif kind == b"end":
                finished = True
                if f[1] == b"code":
                    exit_code = int(f[2])
                else:
                    sig = int(f[2])
                    exit_code = 128 + sig
                # Processes left behind (see `leftover`) may still append shim records: the
                # run ends here.
                break
            # unknown record kinds are skipped: minor versions may add them
    except (IndexError, KeyError, ValueError) as e:
        raise TraceLogCorrupt(f"bad record {line[:80]!r}: {e}") from None
    return TraceLog(
        version=version,
        root=root,
        filtered=filtered,
        events=(),
        processes=procs.result(),
        signals=tuple(signals),
        warnings=tuple(warnings),
        leftover=tuple(leftover),
        connects=tuple(connects),
        unavailable=unavailable,
        finished=finished,
        incomplete=incomplete,
        exit_code=exit_code,
        signal=sig,
        shim=shim,
    ), events


# ------------------------------------------------------------------------------ rules


_READ, _WRITTEN, _CREATED, _DELETED, _EXECUTED, _RENAMED_AWAY = 1, 2, 4, 8, 16, 32
_SKIP_OPEN = os.O_DIRECTORY | getattr(os, "O_PATH", 0)  # O_TMPFILE includes O_DIRECTORY
_ACCMODE = 3
_O_CREAT, _O_TRUNC, _O_WRONLY, _O_RDONLY = os.O_CREAT, os.O_TRUNC, os.O_WRONLY, os.O_RDONLY


def summarize(
    events: Sequence[Event],
    state_at_end: Callable[[str], str] = trace_files.state_at_end,
    *,
    summarized: Mapping[str, int] | None = None,
    states: Mapping[str, str] | None = None,
) -> dict[str, FileAccess]:
    """Apply the classification rules of docs/trace-format.md to `events` (in log order),
    plus a summary's `file` records (`TraceLog.summarized` and `.states`) when given.

    `state_at_end(path)` says what is at a path after the run ('file', 'other', 'dir' or
    'none', as `trace_files.state_at_end`): the tracer does not wait for a call's result, so
    a call that failed is told apart from one that worked by what exists afterwards.
    """
    rows = [(ev.kind, ev.pid, ev.paths, ev.flags, ev.existed) for ev in events]
    return _classify(rows, state_at_end, summarized, states)


def _open_bits(flags: int, existed: bool | None) -> int:
    """The access bits of one `open` record; 0 for an open that is no file access."""
    if flags & _SKIP_OPEN:
        return 0
    if flags & _O_CREAT and existed is False:
        return _CREATED | _WRITTEN  # a new file has nothing to read yet
    mode = flags & _ACCMODE
    b = 0
    if mode != _O_WRONLY:
        b |= _READ
    if mode != _O_RDONLY or flags & _O_TRUNC:
        b |= _WRITTEN
    return b


def _classify(
    rows: Iterable[_Row],
    state_at_end: Callable[[str], str] = trace_files.state_at_end,
    opens: Mapping[str, int] | None = None,
    known: Mapping[str, str] | None = None,
    direct: dict[str, FileAccess] | None = None,
) -> dict[str, FileAccess]:
    """summarize, on rows (see `_parse`), plus the bits of `open` records gathered by path
    (`_parse`'s `opens`); `known` holds states already found (a summary's). `direct` (taken
    over and returned) holds accesses `_parse` made from a summary: a path that rows touch
    too is taken out of it and classified here with its bits."""
    bits: dict[str, int] = {}
    renamed_from: dict[str, list[str]] = {}
    renamed_to: dict[str, list[str]] = {}
    get = bits.get
    if opens:
        bits.update(opens)
    for kind, _pid, paths, flags, existed in rows:
        if kind == "open":
            b = _open_bits(flags, existed)
            if b:
                bits[paths[0]] = get(paths[0], 0) | b
        elif kind == "rename":
            src, dst = paths
            bits[src] = get(src, 0) | _RENAMED_AWAY
            renamed_to.setdefault(src, []).append(dst)
            bits[dst] = get(dst, 0) | _WRITTEN | (_CREATED if existed is False else 0)
            renamed_from.setdefault(dst, []).append(src)
        elif kind in ("link", "symlink"):
            dst = paths[1]
            bits[dst] = get(dst, 0) | _WRITTEN | (_CREATED if existed is False else 0)
        elif kind == "unlink":
            if existed:
                bits[paths[0]] = get(paths[0], 0) | _DELETED
        elif kind == "truncate":
            if existed:
                bits[paths[0]] = get(paths[0], 0) | _WRITTEN
        elif kind == "exec":
            bits[paths[0]] = get(paths[0], 0) | _EXECUTED
        # mkdir/rmdir: directories are not file accesses
    if direct:
        for path in [p for p in bits if p in direct]:
            a = direct.pop(path)
            bits[path] |= (a.read and _READ) | (a.written and _WRITTEN) | (a.created and _CREATED)

    out: dict[str, FileAccess] = direct if direct is not None else {}
    if state_at_end is trace_files.state_at_end:
        if known:
            states = dict(known)
            states.update(trace_files.states_at_end([p for p in bits if p not in known]))
        else:
            states = trace_files.states_at_end(bits)
        state_of: Callable[[str], str] = states.__getitem__
    elif known:
        state_of = lambda p: known[p] if p in known else state_at_end(p)  # noqa: E731
    else:
        state_of = state_at_end
    for path, b in bits.items():
        state = state_of(path)
        if state == "dir":
            continue
        if state == "none" and not b & (_DELETED | _RENAMED_AWAY):
            continue  # the call failed (or something outside the run removed the path)
        out[path] = FileAccess(
            path,
            bool(b & _READ),
            bool(b & _WRITTEN),
            bool(b & _CREATED),
            bool(b & _DELETED),
            bool(b & _EXECUTED),
            bool(b & _CREATED) and state == "none",
            tuple(dict.fromkeys(renamed_from[path])) if path in renamed_from else (),
            tuple(dict.fromkeys(renamed_to[path])) if path in renamed_to else (),
            state == "file",
        )
    return out


# --------------------------------------------------------------------- a run's accesses


def created_dirs(rows: Iterable[_Row]) -> tuple[str, ...]:
    """The outermost folders the rows' `mkdir` records made (see Trace.created_dirs): those
    that were not there at the call and are folders now. A handful in most runs: a stat each."""
    made = {r[2][0] for r in rows if r[0] == "mkdir" and r[4] is False}
    out = []
    for path in sorted(made):
        above = os.path.dirname(path)
        while above not in made and above != os.path.dirname(above):
            above = os.path.dirname(above)
        if above in made:
            continue  # below another folder it made
        if os.path.isdir(path) and not os.path.islink(path):
            out.append(path)
    return tuple(out)


class _Found(NamedTuple):
    """What `_parse` gathers from a log or summary besides its rows."""

    opens: dict[str, int]
    states: dict[str, str]
    direct: dict[str, FileAccess]
    keys: dict[str, bytes]
    groups: list[FileGroup]


def _parse_found(data: bytes, found: _Found) -> tuple[TraceLog, list[_Row]]:
    """`_parse` as `run_traced` reads a summary: into `found`."""
    return _parse(data, found.opens, None, found.states, found.direct, found.keys, found.groups)


def _accesses(rows: list[_Row], found: _Found) -> Mapping[str, FileAccess]:
    """The run's accesses from what `_parse` read: `Accesses` where the summary grouped paths."""
    touched = [p for row in rows for p in row[2]] + list(found.opens)
    _ungroup(found.groups, touched, found.direct, found.keys)
    files = _classify(rows, opens=found.opens, known=found.states, direct=found.direct)
    return Accesses(files, found.groups) if found.groups else files


def _ungroup(
    groups: list[FileGroup],
    touched: Iterable[str],
    direct: dict[str, FileAccess],
    keys: dict[str, bytes],
) -> None:
    """Move the paths that other records touch (renamed, removed, executed…) out of their
    groups into `direct`, where `_classify` merges what those records did; their STAT keys
    into `keys`."""
    by_folder: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_folder.setdefault(g.folder, []).append(i)
    members: dict[int, set[str]] = {}
    gone: dict[int, set[str]] = {}
    for path in touched:
        for i in by_folder.get(path.rpartition("/")[0], ()):
            if path in members.setdefault(i, set(groups[i].paths)):
                gone.setdefault(i, set()).add(path)
    for i, out in gone.items():
        g = groups[i]
        kept = []
        for j, path in enumerate(g.paths):
            if path in out:
                direct[path] = _new_tuple(FileAccess, (path, *g.fields))
                if g.keys:
                    keys[path] = g.keys[j * KEY_HEX : (j + 1) * KEY_HEX]
            else:
                kept.append(j)
        groups[i] = g._replace(
            paths=[g.paths[j] for j in kept],
            keys=b"".join([g.keys[j * KEY_HEX : (j + 1) * KEY_HEX] for j in kept]),
            names=[g.names[j] for j in kept] if g.names else (),
        )
