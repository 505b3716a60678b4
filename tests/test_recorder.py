"""The resident recorder and the C front end (roargit/recorder.py, roargit/launcher/roar.c):
a run through them is recorded as one without them, and whatever they cannot take as the
shell would have it goes the slow way. Real processes throughout: the installed `roar`, the
recorder it starts, the tracer, signals."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import alive, git, last_run, roar, start_roar

from roargit import recorder

PY = os.path.basename(sys.executable)  # `python` on PATH is this environment's (conftest)

# Prints the name of the program above the tracer: `roar` when the front end started the
# command for a recorder, a python when roar ran the slow way (the front end exec'd it).
WHO = """import os
def parent(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("PPid:"):
            return int(line.split()[1])
pid = os.getppid()
while os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "roar-trace":
    pid = parent(pid)
print(os.path.basename(os.readlink(f"/proc/{pid}/exe")))
"""


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime folder of the test's own: its recorders start fresh and are stopped after.
    (Short, in /tmp: a socket's path must fit 108 bytes.)"""
    base = Path(tempfile.mkdtemp(prefix="roar-rt-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base / "roar"
    recorder.stop_in(str(base / "roar"))
    shutil.rmtree(base, ignore_errors=True)


def listening(folder: Path, timeout: float = 30) -> Path:
    """The socket of the recorder in `folder`, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        for sock in folder.glob("recorder-*.sock") if folder.is_dir() else []:
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(sock))
                except OSError:
                    continue
                return sock  # the recorder's child sees the front end leave and ends
        assert time.monotonic() < deadline, f"no recorder listens in {folder}"
        time.sleep(0.05)


def recorder_pid(folder: Path) -> int:
    [lock] = folder.glob("recorder-*.sock.lock")
    return int(lock.read_text())


def who_ran(repo: Path, *env: tuple[str, str]) -> str:
    """Who started the command: "roar" (the front end, for a recorder) or a python."""
    (repo / "who.py").write_text(WHO)
    out = roar(repo, "run", "-q", PY, "who.py", env=dict(env))
    return out.stdout.strip()


def start_sleeper(repo: Path, body: str) -> subprocess.Popen[str]:
    """`roar run python sleeper.py` in a session of its own, once the command has written
    `started` (its pid) and gone to sleep."""
    (repo / "sleeper.py").write_text(
        f"import os, time\n{body}open('started', 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    return start_roar(repo, "run", PY, "sleeper.py")


@pytest.fixture
def warm(git_repo: Path, runtime: Path) -> Path:
    """A repository whose first run (the slow way) has started a recorder."""
    roar(git_repo, "run", "-q", "true")
    listening(runtime)
    return git_repo


def test_the_first_run_starts_a_recorder_and_the_next_runs_go_through_it(
    git_repo: Path, runtime: Path
) -> None:
    assert who_ran(git_repo).startswith("python")  # none listened: the slow way
    listening(runtime)
    assert who_ran(git_repo) == "roar"
    assert who_ran(git_repo, ("ROAR_RECORDER", "off")).startswith("python")
    # Its socket and lock are the user's alone.
    for path in runtime.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    assert runtime.stat().st_mode & 0o777 == 0o700


def test_a_run_through_the_recorder_is_recorded_as_without_it(warm: Path) -> None:
    repo = warm
    (repo / "data.csv").write_text("a,b\n1,2\n")
    (repo / "job.py").write_text(
        "import sys\n"
        "rows = open('data.csv').read()\n"
        "open('work/out.csv', 'w').write(rows.upper())\n"
        "print('to stdout', sys.stdin.read().strip())\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    (repo / "work").mkdir()
    proc = subprocess.run(
        ["roar", "run", PY, "job.py"],
        cwd=repo,
        input="piped in\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "to stdout piped in\n"  # roar's report goes to stderr alone
    assert proc.stderr.startswith("to stderr\n")
    assert "failed (exit 3)" in proc.stderr and "work/out.csv" in proc.stderr
    run = last_run(repo)
    assert (run["status"], run["exit_code"], run["capture"]) == ("failed", 3, "ptrace")
    assert [i["path"] for i in run["inputs"]] == ["data.csv"]
    assert [o["path"] for o in run["outputs"]] == ["work/out.csv"]
    assert run["argv"] == [PY, "job.py"]
    assert run["cwd"] == "."
    shown = roar(repo, "show", "work/out.csv").stdout
    assert "produced by" in shown and "job.py" in shown


def test_the_command_gets_the_front_ends_environment_cwd_and_umask(warm: Path) -> None:
    repo = warm
    (repo / "sub").mkdir()
    script = "import os; print(os.environ.get('ROAR_T'), os.getcwd(), oct(os.umask(0)))"
    proc = subprocess.run(
        ["sh", "-c", f'umask 027; exec roar run -q {PY} -c "{script}"'],
        cwd=repo / "sub",
        env={**os.environ, "ROAR_T": "seen"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["seen", str(repo / "sub"), "0o27"]
    assert last_run(repo)["cwd"] == "sub"
    assert "ROAR_RECORDER_SOCKET" not in json.dumps(last_run(repo))


def test_sigterm_to_the_front_end_reaches_the_command_and_the_run_is_recorded(
    warm: Path,
) -> None:
    repo = warm
    proc = start_sleeper(repo, "open('out.txt', 'w').write('partial')\n")
    os.kill(proc.pid, signal.SIGTERM)  # a scheduler ends the job
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (exit 143)" in err
    run = last_run(repo)
    assert (run["status"], run["exit_code"]) == ("terminated", 143)
    assert "out.txt" in [o["path"] for o in run["outputs"]]


def test_ctrl_c_reaches_the_command_by_its_process_group(warm: Path) -> None:
    proc = start_sleeper(warm, "")  # a group of its own, as a shell's foreground job
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert last_run(warm)["status"] == "interrupted"


def test_kill_9_of_the_front_end_ends_the_command_and_leaves_nothing_behind(
    warm: Path,
) -> None:
    repo = warm
    proc = start_sleeper(repo, "")
    command = int((repo / "started").read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while alive(command):  # the tracer dies with its front end, the command with the tracer
        assert time.monotonic() < deadline, "the command outlived its roar"
        time.sleep(0.02)
    # The recorder's child saw its front end go and tidied up after itself.
    deadline = time.monotonic() + 10
    while os.listdir(repo / ".git" / "roar" / "tmp"):
        assert time.monotonic() < deadline, os.listdir(repo / ".git" / "roar" / "tmp")
        time.sleep(0.05)
    assert git(repo, "for-each-ref", "refs/roar/tmp/") == ""
    (repo / "sleeper.py").write_text("print('again')\n")
    assert "again" in roar(repo, "run", PY, "sleeper.py").stdout
    assert last_run(repo)["status"] == "ok"


def test_roar_run_of_a_step_points_its_recorded_streams_again(warm: Path) -> None:
    repo = warm
    (repo / "up.py").write_text("import sys\nprint(sys.stdin.read().upper(), end='')\n")
    (repo / "in.txt").write_text("delta\n")
    (repo / "out").mkdir()
    with open(repo / "in.txt") as stdin, open(repo / "out" / "up.txt", "w") as stdout:
        subprocess.run(
            ["roar", "run", "-q", PY, "up.py"], cwd=repo, stdin=stdin, stdout=stdout, check=True
        )
    step = last_run(repo)["step"]
    (repo / "in.txt").write_text("echo\n")
    roar(repo, "run", "-q", step)  # the recorder's child points them; the tracer gets them
    assert (repo / "out" / "up.txt").read_text() == "ECHO\n"


def test_a_command_on_a_terminal_keeps_it(warm: Path) -> None:
    import pty

    (warm / "ask.py").write_text(
        "import sys\nprint('tty' if sys.stdin.isatty() else 'no tty', input(), flush=True)\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["roar", "run", "-q", PY, "ask.py"], cwd=warm, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    os.write(master, b"typed\n")
    seen = b""
    deadline = time.monotonic() + 60
    while b"tty typed" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                seen += os.read(master, 1024)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
    assert proc.wait(timeout=60) == 0
    os.close(master)
    assert b"tty typed" in seen and b"no tty" not in seen, seen
    assert who_ran(warm) == "roar"  # the recorder took these runs


def test_the_fallback_mode_goes_the_slow_way(warm: Path) -> None:
    repo = warm
    out = who_ran(repo, ("ROAR_TRACE_MODE", "fallback"))
    assert out.startswith("python")
    assert last_run(repo)["capture"] == "fallback"
    assert who_ran(repo) == "roar"  # the recorder is still there for the next run


def test_a_refused_ptrace_retires_the_recorder(warm: Path, runtime: Path) -> None:
    repo = warm
    pid = recorder_pid(runtime)
    out = roar(repo, "run", "-q", "true", env={"ROAR_TRACE_SIMULATE_REFUSAL": "1"})
    assert out.returncode == 0
    assert last_run(repo)["capture"] == "fallback"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():  # no run of this user can be taken by it
        assert time.monotonic() < deadline, "the recorder stayed"
        time.sleep(0.05)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping a capability needs root")
def test_other_capabilities_go_the_slow_way(warm: Path) -> None:
    repo = warm
    (repo / "who.py").write_text(WHO)
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
         "roar", "run", "-q", PY, "who.py"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("python")


def test_a_dead_recorders_socket_is_replaced(warm: Path, runtime: Path) -> None:
    repo = warm
    os.kill(recorder_pid(runtime), signal.SIGKILL)
    time.sleep(0.2)
    assert who_ran(repo).startswith("python")  # refused: the slow way, which starts one
    listening(runtime)
    assert who_ran(repo) == "roar"


def test_a_runtime_folder_others_may_enter_is_passed_over(
    git_repo: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.mkdir(mode=0o700)
    runtime.chmod(0o777)
    tmp = runtime.parent / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    roar(git_repo, "run", "-q", "true")
    fallback = tmp / f"roar-{os.geteuid()}"  # the next candidate, and the user's alone
    try:
        listening(fallback)
        assert who_ran(git_repo) == "roar"
        assert list(runtime.iterdir()) == []
        assert fallback.stat().st_mode & 0o777 == 0o700
    finally:
        recorder.stop_in(str(fallback))


def test_a_roar_run_inside_a_traced_command_starts_no_recorder(
    git_repo: Path, runtime: Path
) -> None:
    out = roar(
        git_repo, "run", "sh", "-c", "unset ROAR_RECORDER; roar run -q true",
        env={"ROAR_RECORDER": "off"},
    )  # fmt: skip
    assert "outlived" not in out.stderr  # the inner roar left no process behind
    time.sleep(0.5)
    assert list(runtime.glob("*.sock")) == []


def test_the_recorder_ends_when_idle(git_repo: Path, runtime: Path) -> None:
    git(git_repo, "config", "roar.recorder.idle", "1")
    roar(git_repo, "run", "-q", "true")
    listening(runtime)
    pid = recorder_pid(runtime)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "the recorder outlived its idle time"
        time.sleep(0.1)
    assert not list(runtime.glob("*.sock"))


def test_an_idle_time_of_zero_keeps_no_recorder(git_repo: Path, runtime: Path) -> None:
    git(git_repo, "config", "roar.recorder.idle", "0")
    roar(git_repo, "run", "-q", "true")
    time.sleep(0.5)
    assert list(runtime.glob("*.sock")) == []


def test_the_recorder_holds_none_of_its_starters_descriptors(git_repo: Path, runtime: Path) -> None:
    # A caller that reads roar's output to its end (a CI runner, make's jobserver) must not
    # wait for the recorder that roar leaves running.
    r, w = os.pipe()
    proc = subprocess.Popen(["roar", "run", "-q", "true"], cwd=git_repo, pass_fds=(w,))
    os.close(w)
    assert proc.wait(timeout=60) == 0
    listening(runtime)
    ready, _, _ = select.select([r], [], [], 10)
    assert ready and os.read(r, 1) == b"", "the recorder holds the pipe open"
    os.close(r)


def test_changed_code_on_disk_retires_the_recorder(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    stamps = {str(module): (module.stat().st_mtime_ns, module.stat().st_size)}
    assert not recorder._changed(stamps)
    module.write_text("x = 22\n")
    assert recorder._changed(stamps)
    module.unlink()
    assert recorder._changed(stamps)


def test_the_files_that_retire_a_recorder_are_its_code_and_the_tracer() -> None:
    import roargit.capture
    from roargit.trace import tracer_path

    stamps = recorder._stamps(str(tracer_path()))
    assert str(tracer_path()) in stamps
    assert recorder.__file__ in stamps and roargit.capture.__file__ in stamps
    assert all("/roargit/" in path for path in stamps)


def test_a_recorders_lock_keeps_a_second_one_from_starting(warm: Path, runtime: Path) -> None:
    [sock] = runtime.glob("*.sock")
    first = recorder_pid(runtime)
    # A second recorder for the same socket finds the lock taken and ends at once.
    proc = subprocess.run(
        [sys.executable, "-c", "from roargit.recorder import serve; import sys; "
         "serve(sys.argv[1], 5.0)", str(sock)],
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0
    assert recorder_pid(runtime) == first
    assert who_ran(warm) == "roar"
