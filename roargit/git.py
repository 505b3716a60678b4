"""The one place roargit runs the user's `git` executable.

In-process object and ref reads go through pygit2 (ledger.py); the subprocess is for what must
behave exactly like the user's git: ref compare-and-swap, config writes, and network sync,
where credential helpers, SSH config and hosting quirks have to work unchanged.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from roargit.errors import GitFailed


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    cmd = ["git", *args]
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


def git_text(args: Sequence[str], cwd: Path) -> str:
    return run_git(args, cwd).stdout.decode(errors="surrogateescape").strip()
