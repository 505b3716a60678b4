"""The one way tests call the installed `roar` and `git`: real subprocesses, failures that show
everything (argv, exit status, stdout, stderr)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blake3 import blake3

# A hung command fails its test instead of holding the whole suite until pytest-timeout.
TIMEOUT = 240


def git(
    cwd: Path, *args: str, data: bytes | None = None, env: Mapping[str, str] | None = None
) -> str:
    """`git ARGS` in `cwd`, which must succeed; its stdout, stripped. `data` goes to stdin."""
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        input=data,
        env=None if env is None else {**os.environ, **env},
    )
    return out.stdout.decode().strip()


def roar(
    cwd: Path,
    *args: str,
    rc: int | None = 0,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = TIMEOUT,
    crash_ok: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`roar ARGS` in `cwd`, expecting exit status `rc` (None: any). `env` adds to the
    environment. roar's own bug report ("internal error") fails the test unless `crash_ok`."""
    # Without NO_COLOR: output to a pipe must come out plain by itself.
    base = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.run(
        ["roar", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        # No stdin unless given: a command that would prompt fails instead of hanging.
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        timeout=timeout,
    )
    said = f"roar {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n"
    if rc is not None and proc.returncode != rc:
        raise AssertionError(f"{said}{proc.stderr}\n(expected exit status {rc})")
    if not crash_ok and "roar: internal error" in proc.stderr:
        raise AssertionError(said + proc.stderr)
    return proc


def roar_json(
    cwd: Path, *args: str, rc: int | None = 0, env: Mapping[str, str] | None = None
) -> Any:
    """`roar ARGS --json`, decoded. For `run` and `build` the flag goes right after the
    subcommand: after the command it would be the command's own argument."""
    if args and args[0] in ("run", "build"):
        args = (args[0], "--json", *args[1:])
    else:
        args = (*args, "--json")
    return json.loads(roar(cwd, *args, rc=rc, env=env).stdout)


def digest(path: Path) -> str:
    """BLAKE3 of a file's bytes: an artifact's id."""
    return blake3(path.read_bytes()).hexdigest()


def last_run(repo: Path) -> dict[str, Any]:
    """`roar show --json` of the run `roar log` lists first (the newest)."""
    rid = json.loads(roar(repo, "log", "--json", "-n", "1").stdout)[0]["id"]
    data: dict[str, Any] = json.loads(roar(repo, "show", "--json", rid).stdout)
    return data


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie does not: its parent, roar-trace, may not
    have reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Until `path` exists, while `proc` runs."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def start_roar(
    repo: Path, *args: str, env: Mapping[str, str] | None = None, until: str = "started"
) -> subprocess.Popen[str]:
    """`roar ARGS` in `repo`, in a session of its own (a signal sent to it reaches it alone),
    once its command has made `repo/until`."""
    (repo / until).unlink(missing_ok=True)
    proc = subprocess.Popen(
        ["roar", *args],
        cwd=repo,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )
    wait_for(repo / until, proc)
    return proc
