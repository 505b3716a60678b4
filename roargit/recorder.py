"""The resident recorder: a Python process that has loaded roargit once and forks a child
for each `roar run`, so that a run does not pay the interpreter's start-up and roargit's
imports again (docs/architecture.md, "The resident recorder").

The installed `roar` is a small C front end (roargit/launcher/roar.c). For `roar run` and
`roar build` it connects to this user's recorder for its installation; the child forked for
the connection takes the front end's cwd, environment, umask and standard streams and runs
the ordinary `roar` program (cli.main) with its arguments. Only the traced command itself is
started by the front end (trace.front_end): it stays the shell's child, in the shell's
process group, session, cgroup and resource limits. A run the recorder cannot take as the
front end would have run it (another mount namespace, other groups, the fallback mode) is
handed back before anything is done, and the front end runs roar the slow way.

No one needs to start it: when the front end finds none listening it runs roar the slow way
and names the socket in ROAR_RECORDER_SOCKET, and that roar starts one once its run is
recorded (`start`). It ends after `roar.recorder.idle` seconds without a run, when the code
it loaded changes on disk, or on SIGTERM; ROAR_RECORDER=off keeps the front end away from it.
"""

from __future__ import annotations

import contextlib
import os
import sys

from roargit import TYPE_CHECKING

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence

#: The version of the front end's protocol this side speaks (roar.c's PROTOCOL).
PROTOCOL = "1"
MAX_MESSAGE = 64 << 20

#: What a run loads beyond the command line (measured: `python -X importtime` of a run that
#: wrote a file): imported once by the recorder, before it forks.
RUN_MODULES = (
    "roargit.cli",
    "roargit.cli.capture",
    "roargit.cli.output",
    "roargit.capture",
    "roargit.clone",
    "roargit.codestate",
    "roargit.config",
    "roargit.hashing",
    "roargit.index_cache",
    "roargit.ledger",
    "roargit.ledger_commit",
    "roargit.ledger_trees",
    "roargit.machine",
    "roargit.record_json",
    "roargit.rerun",
    "roargit.run_files",
    "roargit.session",
    "roargit.stdio",
    "roargit.trace",
)


def start(socket_path: str, idle: float) -> bool:
    """Start a recorder listening at `socket_path` (the front end's choice), detached from
    this process: in a session of its own, in /, its streams on /dev/null and no other
    descriptor of this process's (a parent waiting for a pipe to close, make's jobserver,
    must not wait ten minutes for it). Nothing is started when this process is itself traced
    (a `roar run` inside a traced command): the tracer would wait for the recorder as for
    any process the command left behind."""
    if idle <= 0 or _traced():
        return False
    import subprocess  # lazy: only the run that starts a recorder pays for it

    code = (
        "import sys; del sys.path[0]\n"  # -c puts the cwd first: no folder's files are modules
        "from roargit.recorder import serve; serve(sys.argv[1], float(sys.argv[2]))"
    )
    try:
        subprocess.Popen(
            [sys.executable, "-c", code, socket_path, str(idle)],
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
    except OSError:
        return False  # a run never fails for want of a recorder
    return True


def _traced() -> bool:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"TracerPid:"):
                    return line.split()[1] != b"0"
    except OSError:
        pass
    return False


# ------------------------------------------------------------------------------ messages


def send(conn: socket.socket, kind: bytes, *fields: str, streams: bool = False) -> None:
    """One message; with `streams`, this process's fds 0, 1 and 2 go with it."""
    body = kind + b"".join(os.fsencode(f) + b"\0" for f in fields)
    data = len(body).to_bytes(4, "little") + body
    if streams:
        import array
        import socket

        fds = array.array("i", (0, 1, 2)).tobytes()
        sent = conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        data = data[sent:]
    conn.sendall(data)


def _exactly(conn: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = conn.recv(n)
        if not chunk:
            raise EOFError("the front end has gone")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive(conn: socket.socket, fds: list[int] | None = None) -> tuple[bytes, list[str]]:
    """The next message: its type and fields. With `fds`, the descriptors sent with it
    (SCM_RIGHTS, which come with its first bytes) are added there."""
    head = b""
    if fds is not None:
        import array
        import socket

        got = array.array("i")
        head, ancillary, _, _ = conn.recvmsg(4, socket.CMSG_SPACE(3 * got.itemsize))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got.frombytes(data[: len(data) - len(data) % got.itemsize])
        fds.extend(got)
    n = int.from_bytes(head + _exactly(conn, 4 - len(head)), "little")
    if not 1 <= n <= MAX_MESSAGE:
        raise EOFError(f"a message of {n} bytes")
    body = _exactly(conn, n)
    return body[:1], [os.fsdecode(f) for f in body[1:].split(b"\0")[:-1]]


class FrontEnd:
    """trace.front_end in a recorder's child: the tracer is started, and waited for, by the
    `roar` front end that asked for the run."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def start(self, path: str, argv: Sequence[str], env: dict[str, str]) -> int:
        environ = [f"{k}={v}" for k, v in env.items()]
        # This process's streams, as roar's own would be inherited: `roar run @N` may have
        # pointed them at the step's recorded files (stdio.pointed_again).
        send(self.conn, b"X", path, str(len(argv)), *argv, *environ, streams=True)
        kind, fields = receive(self.conn)
        if kind == b"P":
            return int(fields[0])
        code = int(fields[0]) if kind == b"F" and fields else 0
        raise OSError(code, f"{os.strerror(code)}: {path}")

    def wait(self, pid: int) -> int:
        kind, fields = receive(self.conn)
        if kind != b"S":
            raise EOFError(f"the front end answered {kind!r} for the tracer's status")
        status = int(fields[0])
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code


# ------------------------------------------------------------------------------ serving


def _stamps(tracer: str) -> dict[str, tuple[int, int]]:
    """The files whose change retires the recorder: roargit's loaded modules and the tracer
    (an upgrade or an edit in an editable install must not be served by the old code)."""
    files = [tracer]
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        path = getattr(module, "__file__", None)
        if path and (name == "roargit" or name.startswith("roargit.")):
            files.append(path)
    stamps = {}
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamps[path] = (st.st_mtime_ns, st.st_size)
    return stamps


def _changed(stamps: dict[str, tuple[int, int]]) -> bool:
    for path, stamp in stamps.items():
        try:
            st = os.stat(path)
        except OSError:
            return True
        if (st.st_mtime_ns, st.st_size) != stamp:
            return True
    return False


def serve(socket_path: str, idle: float) -> None:
    """Listen at `socket_path` until `idle` seconds pass without a run (the recorder's main).
    One recorder per socket: a second one started at the same time finds the lock taken."""
    import fcntl
    import gc
    import importlib
    import select
    import signal
    import socket
    import time

    os.chdir("/")  # holds no work tree busy
    lock = os.open(f"{socket_path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    # A retiring recorder lets go of its lock within moments; a live one keeps it.
    for _ in range(40):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            time.sleep(0.05)
    else:
        return  # another recorder has it
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)  # a dead recorder's; the lock says none lives
    old_umask = os.umask(0o177)
    try:
        listener.bind(socket_path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    bound = os.stat(socket_path).st_ino

    for name in RUN_MODULES:
        importlib.import_module(name)
    from roargit.capture import _load_after_command
    from roargit.trace import tracer_path

    _load_after_command()
    _warm()
    import array  # noqa: F401 - what each run's child takes in (_child): loaded once here
    import locale  # noqa: F401

    stamps = _stamps(str(tracer_path()))
    gc.collect()
    gc.freeze()  # what the imports made is never walked again, here or in a child

    def stop(*_: object) -> None:
        raise SystemExit(0)  # out of select(), which a handler that returns would resume

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One child at a time waits for the next front end (a spare): forked before it is
    # needed, a run does not wait for the fork. It says through `note` when it has taken a
    # connection (b"t": the next spare is forked), or that the recorder should end (b"i":
    # idle for `idle` seconds; b"r": the code on disk changed).
    note_r, note_w = os.pipe2(os.O_CLOEXEC)
    me, spare = os.getpid(), 0
    try:
        while True:
            if not spare:
                spare = os.fork()
                if spare == 0:
                    os.close(note_r)
                    _spare(listener, lock, note_w, stamps, idle, me)  # never returns
            ready, _, _ = select.select([note_r], [], [], 1.0)
            said = os.read(note_r, 1) if ready else b""
            if said == b"t":
                spare = 0
            elif said:
                spare = 0
                break
            # Reaped as they end: the runs' children, and a spare that died without a word.
            with contextlib.suppress(ChildProcessError):
                while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:
                    if pid == spare:
                        spare = 0
    finally:
        if spare:
            with contextlib.suppress(OSError):
                os.kill(spare, signal.SIGUSR1)  # only a waiting spare ends by it
        try:
            if os.stat(socket_path).st_ino == bound:
                os.unlink(socket_path)
        except OSError:
            pass
        listener.close()


def _spare(
    listener: socket.socket,
    lock: int,
    note: int,
    stamps: dict[str, tuple[int, int]],
    idle: float,
    recorder: int,
) -> None:
    """A forked child waiting for the next front end; it serves it, then ends."""
    import select
    import signal

    def leave(*_: object) -> None:
        os._exit(0)  # the recorder ends: this spare has taken no run

    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, leave)
        own = (_namespaces(), _credentials())  # what a front end's must match, read ahead
        ready, _, _ = select.select([listener], [], [], idle)
        if not ready:
            os.write(note, b"i")
            os._exit(0)
        conn, _ = listener.accept()
        # From here a SIGUSR1 is ignored: a run in hand is served whatever the recorder does.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if _changed(stamps):
            os.write(note, b"r")
            conn.close()  # the front end, told nothing, runs roar the slow way
            os._exit(0)
        os.write(note, b"t")
        os.close(note)
        listener.close()
        os.close(lock)
        _child(conn, recorder, *own)
    except BaseException:  # the child ends here, whatever happened
        code = 1
    os._exit(code)


def _warm() -> None:
    """Fill the per-process caches whose contents every run's child would compute the same:
    the default code rule's regexes, the leftover patterns, the machine's static facts."""
    import re

    from roargit import capture, codestate, machine

    codestate.code_rule("").compile()
    re.compile(capture.LEFTOVER)
    re.compile(capture.TMP_REF)
    machine.os_info()
    machine.cpu_info()
    machine.hostname()
    machine.python_info(None)


def _namespaces() -> list[str]:
    out = []
    for name in ("mnt", "pid", "user"):
        try:
            out.append(os.readlink(f"/proc/self/ns/{name}"))
        except OSError:
            out.append("")
    return out


#: The lines of /proc/self/status that decide what a process may read and write (roar.c's
#: `credentials` sends the front end's).
_CREDENTIAL_KEYS = (
    b"Uid:", b"Gid:", b"Groups:", b"CapInh:", b"CapPrm:", b"CapEff:", b"CapBnd:", b"CapAmb:",
    b"NoNewPrivs:", b"Seccomp:",
)  # fmt: skip


def _credentials() -> str:
    """As roar.c's `credentials`: those lines, then the security module's label."""
    out = b""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(_CREDENTIAL_KEYS):
                out += line if line.endswith(b"\n") else line + b"\n"
    try:
        with open("/proc/self/attr/current", "rb") as f:
            out += f.read()
    except OSError:
        pass
    return os.fsdecode(out)


def _child(conn: socket.socket, recorder: int, namespaces: list[str], credentials: str) -> None:
    """Serve one front end: take on its state, run `roar` as it was asked, send its status.
    `recorder`: the pid of the recorder that forked this child; `namespaces` and
    `credentials`: this process's (_namespaces, _credentials)."""
    import gc
    import signal
    import socket
    import struct

    fds: list[int] = []
    kind, fields = receive(conn, fds)
    if len(fds) != 3:
        return
    peer = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if kind != b"R" or len(fields) < 9 or fields[0] != PROTOCOL or peer[1] != os.geteuid():
        send(conn, b"L")
        return
    cwd, umask, sigint_ignored = fields[1], int(fields[2]), fields[3] == "1"
    argc = int(fields[8])
    argv, environ = fields[9 : 9 + argc], fields[9 + argc :]
    # Files seen otherwise than the front end sees them (another mount namespace, other
    # groups or capabilities) would be recorded wrong: the slow way.
    if fields[4:7] != namespaces or fields[7] != credentials:
        send(conn, b"L")
        return
    try:
        os.chdir(cwd)
    except OSError:
        send(conn, b"L")
        return
    send(conn, b"H", str(os.getpid()))

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.umask(umask)
    os.environ.clear()
    for entry in environ:
        key, sep, value = entry.partition("=")
        if sep and key:
            os.environ[key] = value
    # What a process of its own takes from its environment at start: its locale (text
    # encodings) and time zone (times shown).
    import locale
    import time

    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")
    time.tzset()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.default_int_handler)
    _point_streams()

    from roargit import trace
    from roargit.cli import main
    from roargit.errors import RunElsewhere

    trace.front_end = FrontEnd(conn)
    gc.disable()  # as in a process of its own (cli.main)
    sys.argv = ["roar", *argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's answer to bad usage
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except RunElsewhere as exc:
        if exc.retire and os.getppid() == recorder:
            os.kill(recorder, signal.SIGTERM)  # no run of this user can be taken here
        send(conn, b"L")
        return
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    send(conn, b"E", str(code))


def _point_streams() -> None:
    """sys's text streams on the front end's descriptors, set up as Python sets them up for a
    process of its own (stdout line-buffered on a terminal; stderr always)."""
    sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
    sys.stdout = open(  # noqa: SIM115 - for the child's life
        1,
        "w",
        encoding="utf-8",
        errors="surrogateescape",
        closefd=False,
        buffering=-1,
    )
    sys.stdout.reconfigure(line_buffering=os.isatty(1))
    sys.stderr = open(  # noqa: SIM115 - for the child's life
        2, "w", encoding="utf-8", errors="backslashreplace", closefd=False
    )
    sys.stderr.reconfigure(line_buffering=True)


def stop_in(folder: str) -> int:
    """SIGTERM every recorder whose lock is in `folder` (a private runtime folder: the tests'
    and the benchmarks'); how many were told."""
    import signal

    told = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith("recorder-") and name.endswith(".lock")):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                pid = int(f.read().strip() or 0)
            if pid > 0:
                os.kill(pid, signal.SIGTERM)
                told += 1
        except (OSError, ValueError):
            continue
    return told
