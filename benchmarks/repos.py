"""Scratch git repositories for the benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def empty_repo(path: Path) -> Path:
    """A new repository at `path` with one empty commit and no identity of its own."""
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty",
         "-m", "init"],
        cwd=path, check=True,
    )  # fmt: skip
    return path


def script_repo(where: Path, name: str, text: str) -> Path:
    """A new repository at `where` (made with its parents), its identity set, holding one
    committed file `name`."""
    where.mkdir(parents=True)
    _git(where, "init", "-q")
    _git(where, "config", "user.name", "bench")
    _git(where, "config", "user.email", "bench@localhost")
    (where / name).write_text(text)
    _git(where, "add", name)
    _git(where, "commit", "-q", "-m", "bench")
    return where
