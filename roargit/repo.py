"""Finding the user's repository and roargit's private state folder inside it.

Discovery is pure path work (no subprocess, no pygit2) because every command does it first and
start-up time is budgeted. It follows `.git` files (worktrees, submodules) and `commondir`,
so that every worktree of a clone shares one ledger and one `.git/roar/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from roargit.errors import NotAGitRepo
from roargit.structs import NamedTuple

ROAR_DIRNAME = "roar"


class RepoPaths(NamedTuple):
    root: Path  # the work tree's top folder
    git_dir: Path  # this work tree's git dir
    common_dir: Path  # shared by all worktrees: objects, refs, config

    @property
    def roar_dir(self) -> Path:
        return self.common_dir / ROAR_DIRNAME


def _gitdir_from_file(dotgit: Path) -> Path | None:
    try:
        text = dotgit.read_text()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    target = Path(text[len("gitdir:") :].strip())
    return target if target.is_absolute() else (dotgit.parent / target).resolve()


def find_repo(start: Path) -> RepoPaths:
    """The repository containing `start` (a folder), or NotAGitRepo."""
    here = start.resolve()
    for folder in (here, *here.parents):
        dotgit = folder / ".git"
        if dotgit.is_dir() and (dotgit / "HEAD").exists():
            git_dir = dotgit
        elif dotgit.is_file():
            found = _gitdir_from_file(dotgit)
            if found is None:
                continue
            git_dir = found
        else:
            continue
        common = git_dir
        commondir_file = git_dir / "commondir"
        if commondir_file.is_file():
            rel = commondir_file.read_text().strip()
            common = (git_dir / rel).resolve() if not os.path.isabs(rel) else Path(rel)
        return RepoPaths(root=folder, git_dir=git_dir, common_dir=common)
    raise NotAGitRepo(start)


def find_roar_dir(start: Path) -> Path:
    return find_repo(start).roar_dir


def ensure_roar_dir(repo: RepoPaths) -> Path:
    """Create `.git/roar/` (idempotent); everything roargit keeps locally lives there."""
    d = repo.roar_dir
    d.mkdir(exist_ok=True)
    return d
