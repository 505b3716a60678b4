"""The weaker capture mode, for where ptrace or seccomp is refused (some containers).

Outputs come from a before/after scan of the work tree (new, changed and removed files);
reads come from a Python audit hook that a `sitecustomize` module installs in every Python
process the command starts. Reads by non-Python programs, C-level opens inside Python
(ctypes, sqlite) and writes outside the work tree are not seen, so a fallback trace is never
`complete`. See docs/trace-format.md, "Fallback mode".
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from roargit import trace, trace_files, trace_log
from roargit.errors import RunElsewhere

# Installed as `sitecustomize` ahead of any other on PYTHONPATH; chains to the next one.
_SITECUSTOMIZE = r"""
import os, sys

def _roar_audit():
    log = os.environ.get("ROAR_AUDIT_LOG")
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    # The user's own sitecustomize, if any, under the same name; this module goes back into
    # sys.modules after, where the import that is running it expects to find it.
    mine = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize
    except ImportError:
        pass
    finally:
        if mine is not None:
            sys.modules["sitecustomize"] = mine
    if not log:
        return
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    write, fsencode, fspath, getcwd = os.write, os.fsencode, os.fspath, os.getcwd
    join, realpath = os.path.join, os.path.realpath

    def hook(event, args):
        if event != "open":
            return
        path, _mode, flags = args
        if isinstance(path, int) or path is None:
            return
        try:
            p = join(getcwd(), fsencode(fspath(path)).decode("utf-8", "surrogateescape"))
            if "/.." in p:  # ".." after a symlinked folder goes up from its target, as here
                folder, _, name = p.rpartition("/")
                p = join(realpath(folder), name)
            write(fd, b"%x %s\n" % (flags if isinstance(flags, int) else 0,
                                    fsencode(p).hex().encode()))
        except Exception:
            pass

    sys.addaudithook(hook)

_roar_audit()
del _roar_audit
"""

_Snapshot = dict[str, tuple[int, int, int]]


def _scan(root: Path) -> _Snapshot:
    """path -> (inode, size, mtime_ns) for every file under root, `.git` excluded."""
    out: _Snapshot = {}
    stack = [str(root)]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    if e.name != ".git":
                        stack.append(e.path)
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            out[e.path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _audit_reads(data: bytes) -> dict[str, bool]:
    """path -> opened for writing, from the audit log."""
    out: dict[str, bool] = {}
    for line in data.splitlines():
        try:
            flags_hex, path_hex = line.split(b" ")
            flags = int(flags_hex, 16)
            path = os.path.normpath(os.fsdecode(bytes.fromhex(path_hex.decode())))
        except ValueError:
            continue
        writes = (flags & 3) != os.O_RDONLY or bool(flags & (os.O_CREAT | os.O_TRUNC))
        out[path] = out.get(path, False) or writes
    return out


def run(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    scan_root: Path,
    *,
    reason: str,
    signals: trace.Terminations | None = None,
    tmp_dir: Path | None = None,
) -> trace.Trace:
    """Run `argv` untraced; infer its accesses from a scan of `scan_root` and audit hooks.
    `reason`: "forced" (the mode asked for), else why the tracer was unavailable (the
    command did not start under it)."""
    if trace.front_end is not None:
        # A resident recorder's child: this mode would start the command itself, outside the
        # shell's process group. Nothing has run; a refused ptrace refuses every run here.
        raise RunElsewhere(f"the fallback mode ({reason})", retire=reason != "forced")
    root = Path(scan_root).resolve()
    before = _scan(root)
    # Named by pid like the trace log, so that the next run removes it if roar was killed.
    hook_dir = _hook_dir(tmp_dir)
    audit_log = os.path.join(hook_dir, "audit.log")
    try:
        Path(hook_dir, "sitecustomize.py").write_text(_SITECUSTOMIZE)
        run_env = dict(env)
        run_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (hook_dir, env.get("PYTHONPATH", "")) if p
        )
        run_env["ROAR_AUDIT_LOG"] = audit_log
        exit_code, sig = _run_plain(argv, cwd, run_env, signals)
        try:
            audit = Path(audit_log).read_bytes()
        except FileNotFoundError:
            audit = b""
    finally:
        shutil.rmtree(hook_dir, ignore_errors=True)
    after = _scan(root)

    files: dict[str, trace_files.FileAccess] = {}
    for path, wrote in _audit_reads(audit).items():
        if path.startswith(hook_dir + os.sep) or not os.path.isfile(path):
            continue
        files[path] = trace_files.FileAccess(
            path=path, read=not wrote or path in before, written=wrote
        )
    for path, meta in after.items():
        old = before.get(path)
        if old == meta:
            continue
        prev = files.get(path)
        files[path] = trace_files.FileAccess(
            path=path, read=bool(prev and prev.read), written=True, created=old is None
        )
    for path in before.keys() - after.keys():
        files[path] = trace_files.FileAccess(path=path, deleted=True)

    warning = (
        f"ptrace unavailable ({reason}): fell back to a scan of {root} and a Python audit "
        "hook; reads by non-Python programs and writes outside that folder are not seen"
    )
    return trace.Trace(
        mode=trace.MODE_FALLBACK,
        complete=False,
        exit_code=exit_code,
        signal=sig,
        interrupted=sig == signal.SIGINT,
        files=files,
        processes=(trace_log.Process(pid=0, ppid=0, argv=tuple(argv), cwd=str(cwd)),),
        warnings=(warning,),
    )


def _hook_dir(tmp_dir: Path | None) -> str:
    prefix = f"roar-audit-{os.getpid()}-"
    if tmp_dir is not None:
        try:
            return tempfile.mkdtemp(prefix=prefix, dir=tmp_dir)
        except OSError:
            pass
    return tempfile.mkdtemp(prefix=prefix)


#: As the tracer's: copies of one signal sent to a process group arrive within this.
_TERM_SETTLE_S = 0.5


def _run_plain(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    signals: trace.Terminations | None = None,
) -> tuple[int, int | None]:
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env))
    except FileNotFoundError:
        return 127, None
    except PermissionError:
        return 126, None
    if signals is not None:
        first: list[float] = []

        def relay(pid: int, sig: int) -> None:
            # The first SIGTERM/SIGHUP goes to the command; a second one kills it. Untraced,
            # its children are not known here.
            now = time.monotonic()
            if not first:
                first.append(now)
                os.kill(pid, sig)
            elif now - first[0] >= _TERM_SETTLE_S:
                os.kill(pid, signal.SIGKILL)

        signals.forward_to(proc.pid, relay)
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:
                continue  # Ctrl-C reached the command through the process group too
    finally:
        if signals is not None:
            signals.stop_forwarding()
    if code < 0:
        return 128 - code, -code
    return code, None
