"""Faults around `roar run`: whatever happens to roar or the disk, the run is recorded (or
roar says plainly that it could not be), the command's status comes back, and nothing is
left behind that the next run trips over.

The installed `roar` on real processes: signals sent to roar's own pid, `kill -9`, a `git gc
--prune=now` loop beside the runs, a small tmpfs filled by the command (root only), files
roar may not read (as root: under `setpriv` without the capabilities that bypass file
permissions).
"""

from __future__ import annotations

import glob
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import alive, git, last_run, roar, start_roar

from roargit import codestate, gitobjects, session
from roargit.capture import TerminatedBeforeStart, record_run
from roargit.hashing import HashCache
from roargit.repo import find_repo

PY = os.path.basename(sys.executable)  # `python` on PATH is this environment's (conftest)


def leftovers(repo: Path, pid: int) -> list[str]:
    """What a roar with this pid may have left: files under .git/roar/tmp, trace logs in
    /tmp, refs under refs/roar/tmp/, `.keep` files of packs."""
    tmp = repo / ".git" / "roar" / "tmp"
    found = sorted(os.listdir(tmp)) if tmp.is_dir() else []
    found += glob.glob(f"/tmp/roar-trace-{pid}-*")
    found += git(repo, "for-each-ref", "--format=%(refname)", "refs/roar/tmp/").split()
    found += glob.glob(str(repo / ".git" / "objects" / "pack" / "*.keep"))
    return found


def fsck_clean(repo: Path, **kw: Any) -> None:
    out = subprocess.run(
        ["git", "fsck", "--full", "--no-dangling"], cwd=repo, capture_output=True, text=True, **kw
    )
    assert out.returncode == 0 and "missing" not in out.stdout + out.stderr, out


SLEEPER = """import os, signal, sys, time
if len(sys.argv) > 1:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
open("out.txt", "w").write("partial")
open("started", "w").write(str(os.getpid()))
time.sleep(60)
"""


def start(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`roar run python sleeper.py` in a session of its own: signals go to roar's pid only."""
    (repo / "sleeper.py").write_text(SLEEPER)  # untracked source: a dirty-tree snapshot
    return start_roar(repo, "run", PY, "sleeper.py", *args, env=env)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_to_roar_reach_the_command_and_the_run_is_recorded(
    git_repo: Path, sig: signal.Signals
) -> None:
    proc = start(git_repo)
    command = int((git_repo / "started").read_text())
    os.kill(proc.pid, sig)  # `timeout`, a scheduler, systemd, a closed terminal
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"terminated (exit {128 + sig})" in err
    assert not alive(command)
    run = last_run(git_repo)
    assert (run["status"], run["exit_code"]) == ("terminated", 128 + sig)
    assert [o["path"] for o in run["outputs"]] == ["out.txt", "started"]
    assert run["code"]["dirty"]
    assert git(git_repo, "cat-file", "-t", run["code"]["tree"]) == "tree"
    assert leftovers(git_repo, proc.pid) == []


def test_in_fallback_mode_too_a_signal_to_roar_is_passed_on_and_recorded(git_repo: Path) -> None:
    proc = start(git_repo, "ignore", env={"ROAR_TRACE_MODE": "fallback"})
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGHUP)  # the command ignores the first: the second kills it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Error in sitecustomize" not in err  # the audit hook chains quietly
    run = last_run(git_repo)
    assert (run["status"], run["exit_code"], run["capture"]) == ("terminated", 137, "fallback")
    assert leftovers(git_repo, proc.pid) == []


def test_the_trace_log_lives_in_the_repository_while_the_command_runs(git_repo: Path) -> None:
    (git_repo / "sleeper.py").write_text(SLEEPER)
    git(git_repo, "add", "sleeper.py")
    git(git_repo, "commit", "-q", "-m", "sleeper")  # a clean tree: no snapshot, no pin
    proc = start_roar(git_repo, "run", PY, "sleeper.py")
    logs = os.listdir(git_repo / ".git" / "roar" / "tmp")
    assert [n.startswith("roar-trace-") for n in logs] == [True], logs
    recorder = logs[0].split("-")[2]  # roar's pid, or its resident recorder's child's
    assert glob.glob(f"/tmp/roar-trace-{recorder}-*") == []
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert leftovers(git_repo, proc.pid) == []


def test_a_second_signal_kills_the_whole_tree_and_the_run_is_still_recorded(
    git_repo: Path,
) -> None:
    # The command and a child of its own both ignore SIGTERM: the first signal changes
    # nothing; a second one, a moment later, ends them all.
    (git_repo / "parent.py").write_text(
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, 'sleeper.py', 'ignore'])\n"
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child.wait()\n"
    )
    (git_repo / "sleeper.py").write_text(SLEEPER)
    proc = start_roar(git_repo, "run", PY, "parent.py")
    child = int((git_repo / "started").read_text())
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(1.0)
    assert proc.poll() is None and alive(child)  # ignored, as the command chose
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "every process of the command was killed" in err
    assert not alive(child)
    run = last_run(git_repo)
    assert (run["status"], run["exit_code"]) == ("terminated", 137)
    assert leftovers(git_repo, proc.pid) == []


def test_kill_9_of_roar_leaves_nothing_the_next_run_trips_over(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the resident recorder: the process killed is then the one that records, and
    # leaves what it made (a killed front end's recorder tidies up: test_recorder.py).
    monkeypatch.setenv("ROAR_RECORDER", "off")
    proc = start(git_repo)
    command = int((git_repo / "started").read_text())
    left = leftovers(git_repo, proc.pid)
    assert any(p.startswith("refs/roar/tmp/") for p in left)  # the snapshot's pin
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while alive(command):  # the tracer dies with roar, and the command with the tracer
        assert time.monotonic() < deadline, "the command outlived roar -9"
        time.sleep(0.02)
    assert leftovers(git_repo, proc.pid)  # the trace log and the pin, at least

    (git_repo / "sleeper.py").write_text("print('again')\n")
    out = roar(git_repo, "run", PY, "sleeper.py")
    assert "again" in out.stdout
    assert leftovers(git_repo, proc.pid) == []
    assert last_run(git_repo)["status"] == "ok"
    fsck_clean(git_repo)


@pytest.mark.slow
@pytest.mark.slow
def test_git_gc_prune_now_beside_dirty_runs_drops_no_snapshot(git_repo: Path) -> None:
    (git_repo / "job.py").write_text("import sys\nopen(sys.argv[1], 'w').write('x')\n")
    git(git_repo, "add", "job.py")
    git(git_repo, "commit", "-q", "-m", "job")
    stop = threading.Event()
    gcs = [0]

    def collect() -> None:
        while not stop.is_set():
            subprocess.run(
                ["git", "gc", "--prune=now", "--quiet"], cwd=git_repo, capture_output=True
            )
            gcs[0] += 1

    loop = threading.Thread(target=collect)
    loop.start()
    try:
        for i in range(20):
            # A tracked file modified and an untracked source: new objects in every snapshot.
            (git_repo / "job.py").write_text(f"import sys\nopen(sys.argv[1], 'w').write('{i}')\n")
            (git_repo / f"helper{i}.py").write_text(f"N = {i}\n")
            roar(git_repo, "run", "-q", PY, "job.py", f"out{i}.txt")
    finally:
        stop.set()
        loop.join()
    assert gcs[0] >= 2
    runs = json.loads(roar(git_repo, "log", "--json", "-n", "100").stdout)
    assert len(runs) == 20
    fsck_clean(git_repo)
    for r in runs:
        tree = json.loads(roar(git_repo, "show", "--json", r["id"]).stdout)["code"]["tree"]
        listing = git(git_repo, "ls-tree", "-r", "-t", "--format=%(objectname)", tree).split()
        check = subprocess.run(
            ["git", "cat-file", "--batch-check"],
            cwd=git_repo,
            input="\n".join([tree, *listing]) + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
        assert "missing" not in check.stdout
    assert leftovers(git_repo, 0) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip().splitlines()[0]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


FILL = """import os, sys
fd = os.open("big.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
try:
    while True:
        os.write(fd, b"\\0" * 65536)
except OSError:
    sys.exit(3)
"""


def test_a_command_that_fills_the_disk_keeps_its_status_and_git_stays_whole(
    small_disk: Path,
) -> None:
    repo = small_disk / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "fill.py").write_text(FILL)
    git(repo, "add", "fill.py")
    git(repo, "commit", "-q", "-m", "fill")
    (repo / "notes.py").write_text("# untracked: the tree is dirty\n")

    out = roar(repo, "run", PY, "fill.py", rc=3)
    if "the run was not recorded" in out.stderr:
        assert "roar: the disk is full: " in out.stderr
        assert "internal error" not in out.stderr
    else:
        assert last_run(repo)["exit_code"] == 3
    pack = repo / ".git" / "objects" / "pack"
    assert not [n for n in os.listdir(pack) if not n.startswith("pack-") or n.endswith(".keep")]
    locks = [str(p) for p in (repo / ".git").rglob("*.lock") if p.name != "session.lock"]
    assert locks == []

    (repo / "big.bin").unlink()
    roar(repo, "run", PY, "-c", "print('room again')")
    assert last_run(repo)["status"] == "ok"
    fsck_clean(repo)
    assert leftovers(repo, 0) == []


@pytest.fixture
def no_override(tmp_path: Path) -> list[str]:
    """A command prefix under which file permissions hold: nothing for an ordinary user; as
    root, `setpriv` without the two capabilities that let root read any file."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        read = subprocess.run([*prefix, "cat", str(probe)], capture_output=True)
    except OSError as exc:
        pytest.skip(f"setpriv cannot run here: {exc}")
    if read.returncode == 0:
        pytest.skip("root still reads a mode-000 file under setpriv here")
    return prefix


UNREADABLE = """import os
try:
    open("data/locked.csv").read()
except PermissionError:
    pass
open("out.bin", "wb").write(b"x" * 1000)
os.chmod("out.bin", 0)
"""


def test_files_roar_cannot_read_are_recorded_as_unreadable(
    git_repo: Path, no_override: list[str]
) -> None:
    (git_repo / "data").mkdir()
    (git_repo / "data" / "locked.csv").write_text("a,b\n")
    (git_repo / "data" / "locked.csv").chmod(0)
    (git_repo / "job.py").write_text(UNREADABLE)
    (git_repo / "locked.py").write_text("X = 1\n")  # untracked source: for the snapshot
    (git_repo / "locked.py").chmod(0)

    out = subprocess.run(
        [*no_override, "roar", "run", PY, "job.py"], cwd=git_repo, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "internal error" not in out.stderr
    assert "locked.py could not be read: left out of the snapshot" in out.stderr
    assert "out.bin could not be read (permission denied)" in out.stderr
    assert "out  out.bin  unreadable (permission denied)  1000 B" in out.stderr
    run = last_run(git_repo)
    assert run["status"] == "ok"
    assert run["unreadable"] == [
        {"path": "data/locked.csv", "access": "input", "size": 4, "reason": "permission denied"},
        {"path": "out.bin", "access": "output", "size": 1000, "reason": "permission denied"},
    ]
    assert "locked.py" not in git(git_repo, "ls-tree", "--name-only", run["code"]["tree"])
    shown = roar(git_repo, "show", run["id"]).stdout
    assert "data/locked.csv" in shown and "unreadable" in shown


def test_a_damaged_session_file_is_reported_once_and_kept_aside(git_repo: Path) -> None:
    roar(git_repo, "run", "true")
    state = git_repo / ".git" / "roar" / "session.json"
    state.write_text('{"id": ')
    first = roar(git_repo, "run", "true")
    assert "session.json was damaged" in first.stderr
    aside = list(state.parent.glob("session.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"id": '
    assert session.read_state(state.parent).session_id is not None
    second = roar(git_repo, "run", "true")
    assert "damaged" not in second.stderr


def test_a_record_that_cannot_be_written_keeps_the_command_status(git_repo: Path) -> None:
    # The session lock is taken only once the command has run: a folder in its place makes
    # the recording fail there.
    roar(git_repo, "run", "true")
    lock = git_repo / ".git" / "roar" / "session.lock"
    lock.unlink()
    lock.mkdir()
    (git_repo / "edit.py").write_text("# dirty: a snapshot pinned, then let go\n")
    failed = roar(git_repo, "run", "sh", "-c", "exit 5", rc=5)
    assert failed.stderr.strip().endswith("the run was not recorded")
    assert "internal error" not in failed.stderr
    ok = roar(git_repo, "run", "true", rc=1)  # a 0 would claim a recorded run
    assert ok.stderr.strip().endswith("the run was not recorded")
    lock.rmdir()
    assert leftovers(git_repo, 0) == []
    assert len(json.loads(roar(git_repo, "log", "--json").stdout)) == 1


def test_a_reader_that_left_does_not_change_the_status(git_repo: Path) -> None:
    # `roar run --json … | head -c0`: the report meets a closed pipe after the record landed.
    script = 'roar run --json sh -c "sleep 0.3; exit 3" | true; exit "${PIPESTATUS[0]}"'
    out = subprocess.run(["bash", "-c", script], cwd=git_repo, capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert last_run(git_repo)["exit_code"] == 3


# -- the pieces, in process --------------------------------------------------------------


def test_a_signal_before_the_command_starts_runs_nothing(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = codestate.capture

    def capture_then_signal(*args: Any, **kw: Any) -> Any:
        state = real(*args, **kw)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while roar prepares the run
        return state

    monkeypatch.setattr(codestate, "capture", capture_then_signal)
    (git_repo / "edit.py").write_text("# dirty\n")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TerminatedBeforeStart) as caught:
        record_run(find_repo(git_repo), ["touch", "ran"], git_repo)
    assert caught.value.exit_code == 143
    assert not (git_repo / "ran").exists()
    assert signal.getsignal(signal.SIGTERM) == before
    assert leftovers(git_repo, os.getpid()) == []


def test_write_pack_leaves_nothing_when_the_disk_refuses(tmp_path: Path) -> None:
    from hashlib import sha1

    pack_dir = tmp_path / "pack"
    pack_dir.mkdir()
    objects = {bytes([i]) * 20: (b"blob", os.urandom(4096)) for i in range(64)}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # EFBIG past 8 KiB, as ENOSPC
    try:
        with pytest.raises(OSError):
            gitobjects.write_pack(pack_dir, objects, sha1, keep=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert os.listdir(pack_dir) == []
    name = gitobjects.write_pack(pack_dir, objects, sha1, keep=True)
    assert sorted(os.listdir(pack_dir)) == [f"{name}{e}" for e in (".idx", ".keep", ".pack")]
    gitobjects.drop_keep(pack_dir, name)
    assert sorted(os.listdir(pack_dir)) == [f"{name}.idx", f"{name}.pack"]


def test_stale_keeps_of_dead_processes_go_and_others_stay(tmp_path: Path) -> None:
    for name, text in [
        ("pack-a.keep", gitobjects.KEEP_TEXT % 111),
        ("pack-b.keep", gitobjects.KEEP_TEXT % 222),
        ("pack-c.keep", b"receive-pack 111 on host\n"),  # git's own: never ours to drop
        (f"{gitobjects.INCOMING}111-5.pack", b"PACK"),
        (f"{gitobjects.INCOMING}222-5.pack", b"PACK"),
    ]:
        (tmp_path / name).write_bytes(text)
    gitobjects.drop_stale_keeps(tmp_path, lambda pid: pid == 222)
    assert sorted(os.listdir(tmp_path)) == [
        f"{gitobjects.INCOMING}222-5.pack",
        "pack-b.keep",
        "pack-c.keep",
    ]


def test_hash_many_reports_files_it_cannot_read_and_hashes_the_rest(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_bytes(b"x")
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    errors: dict[str, OSError] = {}
    with HashCache(tmp_path / "state") as cache:
        got = cache.hash_many([str(good), str(folder), str(fifo)], errors=errors)
        assert list(got) == [str(good)]
        assert sorted(errors) == [str(fifo), str(folder)]
        with pytest.raises(IsADirectoryError):
            cache.hash_many([str(folder)])


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"popped": []}', '{"id": 5}', '{"id": "ab", "popped": [1]}']
)
def test_damaged_state_reads_as_no_session_and_is_set_aside_by_a_writer(
    tmp_path: Path, text: str
) -> None:
    (tmp_path / "session.json").write_text(text)
    state = session.read_state(tmp_path)
    assert state.session_id is None and state.damaged
    assert (tmp_path / "session.json").exists()  # reads don't write
    message = session.set_aside_damaged(tmp_path)
    assert message and "session.json.corrupt-" in message
    assert not (tmp_path / "session.json").exists()
    assert session.set_aside_damaged(tmp_path) is None


@pytest.mark.parametrize("popped", [frozenset(), frozenset({"ab" * 32, "cd" * 32})])
def test_state_reads_back_as_written_with_or_without_json(
    tmp_path: Path, popped: frozenset[str]
) -> None:
    """read_state takes write_state's usual bytes without the json module (start-up time),
    and anything else through it: the two readings agree."""
    import json

    sid = session.SessionId("5e" * 32)
    session.write_state(tmp_path, session.LocalState(sid, popped))
    assert session.read_state(tmp_path) == session.LocalState(sid, popped)
    data = json.loads((tmp_path / "session.json").read_text())
    assert (data["id"], set(data["popped"])) == (sid, popped)
    near = '{"id": "' + "5E" * 32 + '", "popped": []}'  # not hex as written: json reads it
    (tmp_path / "session.json").write_text(near)
    assert session.read_state(tmp_path).session_id == "5E" * 32


@pytest.mark.parametrize("closed", ["2>&-", ">&-", "<&-"])
def test_a_closed_standard_stream_still_records_the_run(git_repo: Path, closed: str) -> None:
    """`roar run cmd 2>&-`: Python starts with None for the stream; roar's own messages go
    nowhere, the command gets the stream as the shell left it, and the run is recorded."""
    roar(git_repo, "init")
    proc = subprocess.run(
        ["sh", "-c", f'roar run -q true {closed}; echo "rc=$?" >&2'],
        cwd=git_repo,
        capture_output=True,
        text=True,
    )
    assert "rc=0" in proc.stderr and "internal error" not in proc.stderr + proc.stdout
    assert "true" in roar(git_repo, "log", "-n", "1").stdout
