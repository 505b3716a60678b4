"""The one place roargit starts the user's `git` executable.

`run_git` runs a command to completion; `spawn_git` starts one that a caller talks to over
pipes (gitobjects.py: `cat-file --batch-command`, and `fast-import` for bulk imports). git is
used for what must behave exactly like the user's git — config, worktrees, network sync,
where credential helpers, SSH config and hosting quirks have to work unchanged — and, where
importing pygit2 would cost more than the work (ledger.py's `fast_start`), for object reads
and the ledger ref's compare-and-swap.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from roargit import TYPE_CHECKING
from roargit.errors import GitFailed, GitMissing
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import IO

#: HEAD, the work tree's changed tracked files and its untracked, not ignored files (a folder
#: untracked as a whole as one `DIR/` entry): what every `roar run` asks before the command
#: (codestate.work_tree_status).
STATUS = (
    "status",
    "--porcelain=v2",
    "-z",
    "--branch",
    "--no-ahead-behind",
    "--untracked-files=normal",
    "--no-renames",
    "--ignore-submodules=all",
)
#: What gitobjects.ObjectReader reads objects through.
OBJECT_READER = ("cat-file", "--batch-command")


class Finished(NamedTuple):
    """What a `git` run gave: its status and what it wrote."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes


def _scratch_fd() -> int | None:
    """An unnamed temporary file (read and write) for a child's stderr: git can never block on
    it as on a full pipe, and nothing is left behind. None where none can be made (no
    writable temporary folder): the caller uses a pipe."""
    folder = os.environ.get("TMPDIR") or "/tmp"
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (OSError, AttributeError):  # no O_TMPFILE here: a named file, removed at once
        pass
    for _ in range(3):
        name = os.path.join(folder, f".roar-git-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        except OSError:
            return None
        os.unlink(name)
        return fd
    return None


class Spawned:
    """A `git` process started with os.posix_spawnp: stdout a pipe, stdin a pipe or
    /dev/null, stderr an unnamed temporary file (a pipe where none can be made) read once
    stdout has ended. Not `subprocess`:
    its import (with selectors and locale) is some 1.5 ms of every `roar run`, which starts
    its git commands this way and runs none otherwise in the common case."""

    def __init__(
        self, argv: Sequence[str], *, stdin_pipe: bool = False, new_session: bool = False
    ) -> None:
        self.args = list(argv)
        self._stderr = b""
        read_out, write_out = os.pipe()
        scratch = _scratch_fd()
        # Without a scratch file, a pipe: the commands started here write little to stderr,
        # and it is read once stdout has ended.
        self._err_pipe = -1
        if scratch is None:
            self._err_pipe, child_err = os.pipe()
        else:
            child_err = scratch
        self._err = -1 if scratch is None else scratch
        if stdin_pipe:
            read_in, write_in = os.pipe()
        else:
            read_in, write_in = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
        try:
            self.pid = os.posix_spawnp(
                self.args[0],
                self.args,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_in, 0),
                    (os.POSIX_SPAWN_DUP2, write_out, 1),
                    (os.POSIX_SPAWN_DUP2, child_err, 2),
                ],
                setsid=new_session,
                # What Python ignores, back to the defaults, as subprocess restores them.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except BaseException as exc:
            for fd in {read_out, write_out, child_err, self._err_pipe, read_in, write_in}:
                if fd >= 0:
                    os.close(fd)
            if isinstance(exc, FileNotFoundError) and self.args[0] == "git":
                raise GitMissing() from None
            raise
        os.close(read_in)
        os.close(write_out)
        if self._err_pipe >= 0:
            os.close(child_err)
        self.stdout: IO[bytes] = os.fdopen(read_out, "rb")
        self.stdin: IO[bytes] | None = os.fdopen(write_in, "wb") if stdin_pipe else None
        self.returncode: int | None = None
        self.primed = 0  # answers to requests written at the start, for the reader to drop

    def _errors(self, to_the_end: bool = False) -> bytes:
        if self._err_pipe >= 0:
            # What is there; to its end only once stdout has ended (the child is ending): a
            # reader that asks while the child runs must not wait for it.
            os.set_blocking(self._err_pipe, to_the_end)
            while True:
                try:
                    chunk = os.read(self._err_pipe, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    os.close(self._err_pipe)
                    self._err_pipe = -1
                    break
                self._stderr += chunk
        if self._err < 0:
            return self._stderr
        # pread from the start: the child's stderr shares this file's offset.
        return os.pread(self._err, os.fstat(self._err).st_size, 0)

    @property
    def stderr(self) -> IO[bytes]:
        """What it has written to stderr so far."""
        return io.BytesIO(self._errors())

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)  # retried after a signal handler (PEP 475)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def communicate(self) -> tuple[bytes, bytes]:
        """Close its input, read its output to the end, wait for it: (stdout, stderr)."""
        if self.stdin is not None and not self.stdin.closed:
            self.stdin.close()
        out = self.stdout.read()
        self.stdout.close()
        self._stderr = self._errors(to_the_end=True)
        self.wait()
        if self._err >= 0:
            os.close(self._err)
            self._err = -1
        return out, self._stderr


# Commands started ahead by `start_early`, by (folder, args): each is taken by the first
# run_git that asks exactly it.
_early: dict[tuple[str, tuple[str, ...]], Spawned] = {}
_early_spawned: dict[tuple[str, tuple[str, ...]], Spawned] = {}


def start_early(args: Sequence[str], cwd: Path) -> None:
    """Start `git ARGS` in `cwd` now, for the first `run_git(ARGS, cwd)` to take its answer.

    `roar run` starts the few questions it asks git before every command (its settings, the
    work tree's status) before it loads the modules that ask them: git answers on one core
    while Python imports on the other. Only questions whose answer cannot change before it
    is asked may be started early; `drop_early` forgets what was not taken."""
    key = (str(cwd), tuple(args))
    if key not in _early:
        # -C: posix_spawn has no working folder to give; git's -C is the same thing.
        _early[key] = Spawned(["git", "-C", str(cwd), *args])


def drop_early() -> None:
    """Forget (and reap) the commands started early that no run_git took."""
    for started in (_early, _early_spawned):
        while started:
            started.popitem()[1].communicate()  # closes its input: it ends


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> Finished:
    cmd = ["git", *args]
    asked_early = _early and input is None and not env
    early = _early.pop((str(cwd), tuple(args)), None) if asked_early else None
    if early is not None:
        out, err = early.communicate()
        proc = Finished(cmd, early.wait(), out, err)
        if check and proc.returncode != 0:
            raise GitFailed(cmd, proc.returncode, proc.stdout, proc.stderr)
        return proc
    import subprocess  # lazy: see Spawned

    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=full_env,
        )
    except FileNotFoundError:
        if not Path(cwd).is_dir():
            raise
        raise GitMissing() from None
    if check and done.returncode != 0:
        raise GitFailed(cmd, done.returncode, done.stdout, done.stderr)
    return Finished(cmd, done.returncode, done.stdout, done.stderr)


def spawn_git(
    args: Sequence[str], git_dir: Path, *, early: bool = False, prime: bytes = b""
) -> Spawned:
    """A long-running `git --git-dir GIT_DIR ARGS…` with pipes for input and output. It runs in
    its own session: a Ctrl-C meant for a traced command must not end it (it ends by itself
    when its input is closed). With `early`, it is kept for the first spawn_git of exactly
    those arguments to take (see start_early). `prime` is written to it at once (a request
    whose answer its taker reads and drops: `cat-file` opens the object database on its
    first request, which then happens while roar does other work)."""
    key = (str(git_dir), tuple(args))
    if not early and key in _early_spawned:
        return _early_spawned.pop(key)
    proc = Spawned(["git", "--git-dir", str(git_dir), *args], stdin_pipe=True, new_session=True)
    proc.primed = prime.count(b"\n")
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
