"""Shared fixtures: real git repositories, bare remotes, and a guard on the real $HOME."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import git
from hypothesis import settings

# No example database (the checkout may be read-only to the user running the tests) and no
# per-example deadline (a loaded 2-core CI machine makes timings meaningless).
settings.register_profile("roar", database=None, deadline=None)
settings.load_profile("roar")


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point $HOME (and git's global config) at a fresh folder; fail if the real one changes."""
    real_home = Path(os.path.expanduser("~"))
    before = (
        {p.name: p.stat().st_mtime_ns for p in real_home.iterdir()} if real_home.is_dir() else {}
    )
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    # The installed `roar`, `git-roar` and `python` of this environment come first on PATH.
    bindir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@example.com")
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    yield home
    if real_home.is_dir():
        after = {p.name: p.stat().st_mtime_ns for p in real_home.iterdir()}
        created = sorted(set(after) - set(before))
        assert not created, f"a test wrote into the real $HOME: {created}"


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A fresh repository with one commit, as a user would have."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("hello\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


@pytest.fixture
def bare_remote(tmp_path: Path) -> Path:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    return remote
