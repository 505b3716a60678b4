"""The files a shell opened around `roar run`: `roar run python score.py < in.jsonl > out.jsonl`.

The shell opens them before roar starts, so the traced command never opens them itself and
the tracer cannot see them; roar looks at its own standard streams instead. A stream that is
a regular file is recorded with the path the shell opened (from /proc/self/fd/N): stdin as an
input, stdout and stderr as outputs (hashed after the run, like every output). Pipes,
terminals, sockets and devices (`> /dev/null`) are not files and are left alone. stdout and
stderr count only when empty at the start (`>` just truncated them): a file that already held
bytes (`>>`, or the log of a whole batch job that runs many steps) is not this run's output,
and neither is one the command left empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from roargit import TYPE_CHECKING, pathguard
from roargit.structs import NamedTuple
from roargit.trace_files import Accesses, FileAccess

if TYPE_CHECKING:
    from roargit.pathguard import Root

STDIN, STDOUT, STDERR = 0, 1, 2
#: How records name them (RunRecord.redirects).
STREAM_NAMES = {STDIN: "stdin", STDOUT: "stdout", STDERR: "stderr"}
_STREAM_FDS = {name: fd for fd, name in STREAM_NAMES.items()}


class Redirect(NamedTuple):
    fd: int  # STDIN, STDOUT or STDERR
    path: str  # absolute, as the shell opened it


def redirects(fds: Sequence[int] = (STDIN, STDOUT, STDERR)) -> list[Redirect]:
    """The standard streams of this process that are regular files, with their paths.

    Only a stream used in its own direction counts (stdin readable, stdout and stderr
    writable, and empty), and only while the path still names the very file that is open: one
    removed or replaced since the shell opened it has no path to record."""
    found = []
    for fd in fds:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            path = os.readlink(f"/proc/self/fd/{fd}")
            now = os.stat(path)
        except OSError:
            continue
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not path.startswith("/"):
            continue
        wanted = os.O_WRONLY if fd != STDIN else os.O_RDONLY
        if mode not in (wanted, os.O_RDWR) or (fd != STDIN and st.st_size):
            continue
        found.append(Redirect(fd, path))
    return found


def wrote_to(r: Redirect) -> bool:
    """Whether the command left bytes in a redirected stdout or stderr. One still empty (the
    usual stderr, or a batch job's log the step never wrote to) is no output of the run."""
    try:
        return os.fstat(r.fd).st_size > 0
    except OSError:
        return False


def with_redirects(
    files: Mapping[str, FileAccess], streams: Sequence[Redirect]
) -> Mapping[str, FileAccess]:
    """The run's accesses plus what it did through the redirected streams: stdin's file read,
    stdout's and stderr's written. `files` is returned as it is when there are none; a grouped
    trace (trace_files.Accesses) stays grouped, each redirected path taken out of its group."""
    changed: dict[str, FileAccess] = {}
    for r in streams:
        if r.fd != STDIN and not wrote_to(r):
            continue
        path = os.path.normpath(r.path)
        had = changed.get(path) or _access(files, path) or FileAccess(path, regular=True)
        changed[path] = had._replace(read=True) if r.fd == STDIN else had._replace(written=True)
    if not changed:
        return files
    if isinstance(files, Accesses):
        groups = [
            g._replace(paths=[p for p in g.paths if p not in changed])
            if any(os.path.dirname(p) == g.folder for p in changed)
            else g
            for g in files.groups
        ]
        return Accesses({**files.single, **changed}, groups)
    return {**files, **changed}


def _access(files: Mapping[str, FileAccess], path: str) -> FileAccess | None:
    """`files.get(path)`, without making a grouped trace's objects for every path."""
    if not isinstance(files, Accesses):
        return files.get(path)
    if path in files.single:
        return files.single[path]
    folder = os.path.dirname(path)
    for g in files.groups:
        if g.folder == folder and path in g.paths:
            return FileAccess(path, *g.fields)
    return None


class Reopened(NamedTuple):
    fd: int  # the stream: STDIN, STDOUT or STDERR
    opened: int  # a descriptor of the file (the caller's until `pointed` closes it)
    path: str  # absolute


def reopen(recorded: Mapping[str, str], root: Root) -> list[Reopened]:
    """The files a record says the shell pointed the command's streams to (RunRecord.
    redirects), opened again for a reproduction or a re-run: stdin's for reading, wherever it
    lies; stdout's and stderr's emptied, below `root` and through no link (pathguard)."""
    out: list[Reopened] = []
    try:
        for name, path in sorted(recorded.items()):
            fd = _STREAM_FDS[name]
            if fd == STDIN:
                checked = pathguard.check(path, root.source, absolute_ok=True)
                full = pathguard.abs_path(checked, Path(root.path))
                out.append(Reopened(fd, os.open(full, os.O_RDONLY | os.O_CLOEXEC), full))
            else:
                opened = root.open_stream(path)
                out.append(Reopened(fd, opened, os.path.join(root.path, path)))
    except BaseException:
        for r in out:
            os.close(r.opened)
        raise
    return out


@contextlib.contextmanager
def pointed(streams: Sequence[Reopened]) -> Iterator[list[Redirect]]:
    """This process's standard streams pointed at `streams`' files for the block (the command
    inherits them), then put back; the files are closed after. Yields the Redirects for
    capture.record_run's `streams`. Progress output waits: it would land in those files."""
    if not streams:
        yield []
        return
    from roargit import progress  # lazy: only a run whose streams are pointed gets here

    saved: list[tuple[int, int]] = []
    was = progress.enabled()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        progress.enable(False)
        for s in streams:
            saved.append((s.fd, os.dup(s.fd)))
            os.dup2(s.opened, s.fd)
        yield [Redirect(s.fd, s.path) for s in streams]
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in reversed(saved):
            os.dup2(copy, fd)
            os.close(copy)
        for s in streams:
            os.close(s.opened)
        progress.enable(was)


@contextlib.contextmanager
def pointed_again(
    recorded: Mapping[str, str],
    root: str | os.PathLike[str],
    source: pathguard.Source | None = None,
) -> Iterator[list[Redirect]]:
    """The streams a record says the shell pointed (RunRecord.redirects) opened again below
    `root` (`reopen`, `source` naming the record in a refusal) and this process's streams
    pointed at them for the block (`pointed`): how reproduction, `roar update` and
    `roar run @N` run a step as it was recorded. Yields record_run's `streams`."""
    streams: list[Reopened] = []
    if recorded:
        with pathguard.Root(root, source) as guard:
            streams = reopen(recorded, guard)
    with pointed(streams) as redirects:
        yield redirects
