"""Run a command under the file-access tracer and say what it read, wrote and ran.

`run_traced` is the one choke point for the `roar-trace` binary (roargit/tracer/roar-trace.c).
The binary writes an event log and its summary (docs/trace-format.md), which
`roargit.trace_log` reads back into one `FileAccess` per path. Where ptrace or seccomp is
refused, `run_traced` falls back to `roargit.trace_fallback` and says so in the result.

This module is on the hot path of `roar run`: it imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from roargit import TYPE_CHECKING, peers
from roargit.errors import RoarError, TracerUnavailable
from roargit.structs import NamedTuple
from roargit.trace_files import FileAccess, StatKeys
from roargit.trace_log import (
    Process,
    TraceLog,
    TraceLogCorrupt,
    _accesses,
    _Found,
    _parse_found,
    created_dirs,
)

if TYPE_CHECKING:
    from typing import Any, Protocol

    class FrontEnd(Protocol):
        """Who starts the tracer when this process may not (recorder.FrontEnd)."""

        def start(self, path: str, argv: Sequence[str], env: dict[str, str]) -> int: ...

        def wait(self, pid: int) -> int: ...


MODE_PTRACE = "ptrace"
MODE_FALLBACK = "fallback"
_TRACER_FAILED = 125  # the tracer's own failure status (see roar-trace.c)

#: Set in a resident recorder's child: the `roar` front end that asked for the run starts
#: the tracer, so that the command is the shell's grandchild as it would be without the
#: recorder (roargit/recorder.py). None: this process starts it.
front_end: FrontEnd | None = None


class Trace(NamedTuple):
    mode: str  # MODE_PTRACE or MODE_FALLBACK
    complete: bool  # False: some accesses may be missing; `warnings` says why
    exit_code: int  # the command's status, 128 + signal if it was killed
    signal: int | None
    interrupted: bool  # the command was sent SIGINT (Ctrl-C)
    files: Mapping[str, FileAccess]  # a dict, or Accesses where the summary grouped paths
    processes: tuple[Process, ...]
    warnings: tuple[str, ...]
    leftover: tuple[int, ...] = ()  # pids still running when the trace ended
    # path -> the stat key of a regular file (80 hex digits, docs/trace-format.md), taken by
    # the tracer after every process of the run had ended; where asked (`stat_files`). A
    # trace_files.StatKeys where the summary grouped paths.
    stat_keys: Mapping[str, bytes] = MappingProxyType({})
    # Folders the run made (a `mkdir` of a path that was not there) and that are folders when
    # it ended, outermost only: one below another it made is left out.
    created_dirs: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ running


def tracer_path() -> Path:
    """The `roar-trace` binary built by the package install."""
    path = Path(__file__).resolve().parent / "_bin" / "roar-trace"
    if not os.access(path, os.X_OK):
        raise TracerUnavailable(
            f"the tracer is not built ({path}): reinstall roargit (pip install -e .)"
        )
    return path


def _wait(pid: int) -> int:
    """waitpid for `pid`, as an exit code (128 + signal when killed)."""
    _, status = os.waitpid(pid, 0)  # retried after a signal handler returns (PEP 475)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


#: What a batch scheduler, `timeout`, systemd or a closed terminal sends to end a job.
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


class Terminations:
    """SIGTERM and SIGHUP that reach roar while it records a run.

    A terminated job must still leave its record, so these signals do not end roar: while the
    command runs each one is passed to the tracer (which passes the first to the command and
    kills the whole tree on a second, see docs/trace-format.md, "Signals"); before or after
    that they are only remembered. `received` lists them in order; `during_command` those
    that came while the command ran. The handlers are installed by `install` (main thread
    only; elsewhere nothing is caught) and put back by `restore`."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.during_command: list[int] = []
        self._target: int | None = None
        self._kill: Callable[[int, int], None] = os.kill
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in TERMINATING:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, sig: int, _frame: object) -> None:
        self.received.append(sig)
        if self._target is not None:
            self.during_command.append(sig)
            with contextlib.suppress(ProcessLookupError):
                self._kill(self._target, sig)

    def forward_to(self, pid: int, kill: Callable[[int, int], None] = os.kill) -> None:
        """From now on pass signals to `pid` (through `kill`, which may do more than
        `os.kill`); one that came while the command was being started is passed at once."""
        self._target, self._kill = pid, kill
        if self.received and not self.during_command:
            sig = self.received[-1]
            self.during_command.append(sig)
            with contextlib.suppress(ProcessLookupError):
                kill(pid, sig)

    def stop_forwarding(self) -> None:
        self._target = None

    @property
    def first(self) -> int | None:
        return self.received[0] if self.received else None


def run_traced(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    *,
    scan_root: Path | None = None,
    mode: str | None = None,
    tmp_dir: Path | None = None,
    signals: Terminations | None = None,
    stat_files: bool = False,
    while_running: Callable[[], object] | None = None,
) -> Trace:
    """Run `argv` in `cwd` under the tracer and return what it did.

    `log_path` keeps the raw event log there (otherwise a temporary file is used and
    removed: in `tmp_dir` when given, else in $TMPDIR). `scan_root` is the work tree that the
    fallback mode scans for outputs (default: `cwd`). `mode` (or env ROAR_TRACE_MODE) set to
    "fallback" forces the weaker mode. SIGINT is ignored here while the command runs: Ctrl-C
    reaches the command through the process group and the run is reported as interrupted.
    `signals` (installed by the caller) passes SIGTERM and SIGHUP to the command.
    `stat_files` asks the tracer for the stat keys of the regular files (`Trace.stat_keys`).
    `while_running` is called once the command has started, before it is waited for: work
    that needs this process but not the command's results (loading what comes after) is then
    done on one core while the command runs on another.
    """
    if not argv:
        raise RoarError("no command to run")
    mode = mode or os.environ.get("ROAR_TRACE_MODE") or MODE_PTRACE
    run_env = dict(os.environ if env is None else env)
    if mode == MODE_FALLBACK:
        from roargit import trace_fallback  # it imports this module; only its mode needs it

        return trace_fallback.run(
            argv, cwd, run_env, scan_root or cwd, reason="forced", signals=signals, tmp_dir=tmp_dir
        )
    tracer = tracer_path()
    own_log = log_path is None
    if log_path is None:
        log_path = new_log_path(tmp_dir)
    summary_path = Path(f"{log_path}.summary")
    try:
        status, data = _spawn_tracer(
            tracer, argv, Path(cwd), run_env, Path(log_path), signals, stat_files, while_running
        )
    finally:
        if own_log:
            for p in (Path(log_path), summary_path):
                p.unlink(missing_ok=True)
    found = _Found({}, {}, {}, {}, [])
    try:
        parsed = _parse_found(data, found) if data else None
    except TraceLogCorrupt as exc:
        # The command has run: what it did is lost, not the run (a log cut by a full disk).
        return _unreadable_log(argv, cwd, status, str(exc))
    log = parsed[0] if parsed else None
    if log is not None and log.unavailable is not None:
        from roargit import trace_fallback  # it imports this module; only its mode needs it

        return trace_fallback.run(
            argv,
            cwd,
            run_env,
            scan_root or cwd,
            reason=log.unavailable,
            signals=signals,
            tmp_dir=tmp_dir,
        )
    if log is None:
        if status in (_TRACER_FAILED, 126, 127) and not (signals and signals.during_command):
            raise TracerUnavailable(f"the tracer wrote no log (exit status {status})")
        return _unreadable_log(argv, cwd, status, "the tracer wrote no log")
    assert parsed is not None
    files = _accesses(parsed[1], found)
    return _to_trace(log, status, files)._replace(
        stat_keys=StatKeys(found.keys, found.groups), created_dirs=created_dirs(parsed[1])
    )


def _unreadable_log(argv: Sequence[str], cwd: Path, status: int, why: str) -> Trace:
    """The trace of a command that ran but whose log could not be read: nothing is known of
    its accesses, only its status."""
    return Trace(
        mode=MODE_PTRACE,
        complete=False,
        exit_code=status,
        signal=status - 128 if status > 128 else None,
        interrupted=status == 128 + signal.SIGINT,
        files={},
        processes=(Process(pid=0, ppid=0, argv=tuple(argv), cwd=str(cwd)),),
        warnings=(f"{why} (exit status {status}): the run's file accesses are not known",),
    )


#: Names of this module's temporary files: `roar-trace-<pid>-<random>.log` (and `.summary`),
#: so that those of a roar that died can be told by their pid (see capture.clear_leftovers).
LOG_PREFIX = "roar-trace-"


def new_log_path(tmp_dir: Path | None = None) -> Path:
    """A new private file for the event log, as tempfile.mkstemp makes one, in `tmp_dir`
    (roar's own folder in the repository: a roar killed with SIGKILL leaves it where the next
    run finds it) or else $TMPDIR. `tempfile` itself is left for when neither will do: it
    imports `random`, a start-up cost `roar run` would pay for one file name."""
    bases = []
    if tmp_dir is not None:
        with contextlib.suppress(OSError):
            os.makedirs(tmp_dir, exist_ok=True)
        bases.append(str(tmp_dir))
    bases.append(os.environ.get("TMPDIR") or "/tmp")
    for base in bases:
        for _ in range(3):
            name = os.path.join(base, f"{LOG_PREFIX}{os.getpid()}-{os.urandom(6).hex()}.log")
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            except OSError:
                break  # e.g. a full disk: the next folder
            os.close(fd)
            return Path(name)
    import tempfile  # only when neither folder will do (see the docstring)

    fd, name = tempfile.mkstemp(prefix=LOG_PREFIX, suffix=".log")
    os.close(fd)
    return Path(name)


def _spawn_tracer(
    tracer: Path,
    argv: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    signals: Terminations | None = None,
    stat_files: bool = False,
    while_running: Callable[[], object] | None = None,
) -> tuple[int, bytes]:
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main else None
    # The summary (`file` records, docs/trace-format.md) is what is read when the tracer wrote
    # one: a fraction of the raw log's lines for a big run.
    summary = Path(f"{log_path.absolute()}.summary")
    args = [str(tracer), "--log", str(log_path.absolute()), "--summary", str(summary)]
    if stat_files:
        args.append("--stat-files")
    args += ["--cwd", str(cwd)]
    if previous == signal.SIG_IGN:
        args.append("--sigint-ignored")
    args += ["--", *argv]
    summary.unlink(missing_ok=True)  # an old run's must never pass for this one's
    if in_main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # posix_spawn, not subprocess: cheaper to import and to start (vfork-like).
        # SIGTERM/SIGHUP back to their defaults in the tracer, whatever roar's handlers are:
        # it installs its own (docs/trace-format.md, "Signals").
        default = (signal.SIGPIPE, signal.SIGXFSZ, *TERMINATING)
        if front_end is not None:
            pid = front_end.start(str(tracer), args, env)
        else:
            pid = os.posix_spawn(str(tracer), args, env, setsigdef=default)
        if signals is not None:
            signals.forward_to(pid)
        if while_running is not None:
            # Its failure shows again where what it did is needed; the command is waited for.
            with contextlib.suppress(Exception):
                while_running()
        try:
            status = _wait(pid) if front_end is None else front_end.wait(pid)
        finally:
            if signals is not None:
                signals.stop_forwarding()
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    for path in (summary, log_path):
        try:
            return status, path.read_bytes()
        except FileNotFoundError:
            pass
    return status, b""


def _to_trace(log: TraceLog, status: int, files: Mapping[str, FileAccess]) -> Trace:
    warnings = list(log.warnings)
    complete = log.finished and not log.incomplete
    exit_code = log.exit_code if log.exit_code is not None else status
    if not log.finished:
        warnings.append(
            f"the tracer ended without finishing its log (status {status}): "
            "accesses after that point are missing"
        )
    if log.leftover:
        complete = False
        warnings.append(
            f"{len(log.leftover)} process(es) outlived the command and the grace period "
            f"(pids {', '.join(map(str, log.leftover))}); they keep running, and what they "
            "do from now on is not recorded"
        )
    if log.connects:
        found = peers.find(log.connects, {p.pid for p in log.processes})
        complete = complete and not found
        warnings.extend(peers.warning(p) for p in found)
    interrupted = log.signal == signal.SIGINT or any(s == signal.SIGINT for _, s in log.signals)
    return Trace(
        mode=MODE_PTRACE,
        complete=complete,
        exit_code=exit_code,
        signal=log.signal,
        interrupted=interrupted,
        files=files,
        processes=log.processes,
        warnings=tuple(warnings),
        leftover=log.leftover,
    )
