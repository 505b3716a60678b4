"""The one place roargit starts the user's `git` executable.

`run_git` runs a command to completion; `spawn_git` starts one that a caller talks to over
pipes (gitobjects.py: `cat-file --batch-command`, and `fast-import` for bulk imports). git is
used for what must behave exactly like the user's git — config, worktrees, network sync,
where credential helpers, SSH config and hosting quirks have to work unchanged — and, where
importing pygit2 would cost more than the work (ledger.py's `fast_start`), for object reads
and the ledger ref's compare-and-swap.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from roargit.errors import GitFailed

#: HEAD, the work tree's changed tracked files and its untracked, not ignored files: what
#: every `roar run` asks before the command (codestate.work_tree_status).
STATUS = (
    "status",
    "--porcelain=v2",
    "-z",
    "--branch",
    "--no-ahead-behind",
    "--untracked-files=all",
    "--no-renames",
    "--ignore-submodules=all",
)
#: What gitobjects.ObjectReader reads objects through.
OBJECT_READER = ("cat-file", "--batch-command")


class Started:
    """A `git` command started now, its output read later (`result`)."""

    def __init__(self, args: Sequence[str], cwd: Path) -> None:
        self.cmd = ["git", *args]
        self._proc = subprocess.Popen(
            self.cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def result(self) -> subprocess.CompletedProcess[bytes]:
        out, err = self._proc.communicate()
        return subprocess.CompletedProcess(self.cmd, self._proc.returncode, out, err)


# Commands started ahead by `start_early`, by (folder, args): each is taken by the first
# run_git that asks exactly it.
_early: dict[tuple[str, tuple[str, ...]], Started] = {}
_early_spawned: dict[tuple[str, tuple[str, ...]], subprocess.Popen[bytes]] = {}


def start_early(args: Sequence[str], cwd: Path) -> None:
    """Start `git ARGS` in `cwd` now, for the first `run_git(ARGS, cwd)` to take its answer.

    `roar run` starts the few questions it asks git before every command (its settings, the
    work tree's status) before it loads the modules that ask them: git answers on one core
    while Python imports on the other. Only questions whose answer cannot change before it
    is asked may be started early; `drop_early` forgets what was not taken."""
    key = (str(cwd), tuple(args))
    if key not in _early:
        _early[key] = Started(args, cwd)


def drop_early() -> None:
    """Forget (and reap) the commands started early that no run_git took."""
    while _early:
        _, started = _early.popitem()
        started.result()
    while _early_spawned:
        _, proc = _early_spawned.popitem()
        proc.communicate()  # closes its input: it ends


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    cmd = ["git", *args]
    early = _early.pop((str(cwd), tuple(args)), None) if _early and input is None else None
    if early is not None and not env:
        proc = early.result()
        if check and proc.returncode != 0:
            raise GitFailed(cmd, proc.returncode, proc.stdout, proc.stderr)
        return proc
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise GitFailed(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def spawn_git(
    args: Sequence[str], git_dir: Path, *, early: bool = False, prime: bytes = b""
) -> subprocess.Popen[bytes]:
    """A long-running `git --git-dir GIT_DIR ARGS…` with pipes on all three streams. It runs in
    its own session: a Ctrl-C meant for a traced command must not end it (it ends by itself
    when its input is closed). With `early`, it is kept for the first spawn_git of exactly
    those arguments to take (see start_early). `prime` is written to it at once (a request
    whose answer its taker reads and drops: `cat-file` opens the object database on its
    first request, which then happens while roar does other work)."""
    key = (str(git_dir), tuple(args))
    if not early and key in _early_spawned:
        return _early_spawned.pop(key)
    proc = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    proc.primed = prime.count(b"\n")  # type: ignore[attr-defined]  # answers to drop first
    if prime:
        assert proc.stdin is not None
        proc.stdin.write(prime)
        proc.stdin.flush()
    if early:
        _early_spawned[key] = proc
    return proc


def is_ancestor(folder: Path, ancestor: str, commit: str) -> bool:
    """Whether `ancestor` is reachable from `commit`, asked of `git merge-base` run in
    `folder` (no pygit2 import; and git reads a malformed fetched commit where libgit2
    refuses it)."""
    proc = run_git(["merge-base", "--is-ancestor", ancestor, commit], folder, check=False)
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise GitFailed(["git", "merge-base", "--is-ancestor"], proc.returncode, b"", proc.stderr)


def push_refs(
    folder: Path, remote: str, specs: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[bool, bool, str]:
    """One `git push --porcelain` of `specs` from `folder`: (all accepted, all already there,
    why not); GitFailed when git failed other than by refusing a ref. --no-verify: this may
    itself run inside a pre-push hook, which must not run again."""
    proc = run_git(
        ["push", "--porcelain", "--no-verify", remote, *specs], folder, check=False, env=env
    )
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if "\t" in ln]
    rejected = [ln for ln in lines if ln.startswith("!")]
    if proc.returncode == 0 and not rejected:
        return True, all(ln.startswith("=") for ln in lines), ""
    if rejected:
        return False, False, rejected[0].split("\t")[-1].strip()
    raise GitFailed(["git", "push", remote], proc.returncode, proc.stdout, proc.stderr)
