"""Shared fixtures: real git repositories, bare remotes, and a guard on the real $HOME."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import pytest
from cli_helpers import git
from hypothesis import settings

# No example database (the checkout may be read-only to the user running the tests) and no
# per-example deadline (a loaded 2-core CI machine makes timings meaningless).
settings.register_profile("roar", database=None, deadline=None)
settings.load_profile("roar")


_runtime: list[str] = []


def runtime_dir() -> str:
    """This test process's runtime folder (made on first use: xdist's controller runs no
    test): the resident recorders the installed `roar` starts live here, not in the user's
    own (roargit/recorder.py), and are stopped at the end."""
    if not _runtime:
        _runtime.append(tempfile.mkdtemp(prefix="roar-test-runtime-"))
    return _runtime[0]


@pytest.fixture(scope="session", autouse=True)
def own_recorders() -> Iterator[None]:
    # Set for the whole session, not only per test (isolated_home): module and session
    # fixtures that record pipelines run before any test's environment is made.
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = runtime_dir()
    yield
    from roargit.recorder import stop_in

    if saved is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = saved
    for folder in _runtime:
        stop_in(os.path.join(folder, "roar"))
        shutil.rmtree(folder, ignore_errors=True)


def isolated_environment(home: Path) -> dict[str, str]:
    """The variables every test runs with: $HOME (and git's global config) in `home`, a fixed
    git identity, this environment's `roar`, `git-roar` and `python` first on PATH, and a
    runtime folder of this test process's own."""
    return {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": runtime_dir(),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
    }


def make_home(home: Path) -> Path:
    home.mkdir(exist_ok=True)
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    return home


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point $HOME (and git's global config) at a fresh folder; fail if the real one changes."""
    real_home = Path(os.path.expanduser("~"))
    before = (
        {p.name: p.stat().st_mtime_ns for p in real_home.iterdir()} if real_home.is_dir() else {}
    )
    home = make_home(tmp_path_factory.mktemp("home"))
    for name, value in isolated_environment(home).items():
        monkeypatch.setenv(name, value)
    yield home
    if real_home.is_dir():
        after = {p.name: p.stat().st_mtime_ns for p in real_home.iterdir()}
        created = sorted(set(after) - set(before))
        assert not created, f"a test wrote into the real $HOME: {created}"


def init_repo(repo: Path) -> Path:
    """A fresh repository with one commit, as a user would have."""
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("hello\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo")


T = TypeVar("T")


def build_once(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]
) -> tuple[Path, T]:
    """For a fixture that records a pipeline once (per module or session) and hands each test a
    copy (`copy_repo`): `build` runs in a fresh `init_repo` repository, with a $HOME of its
    own (the per-test one does not exist yet). The repository and what `build` returned."""
    base = factory.mktemp(name)
    home = make_home(base / "home")
    saved = dict(os.environ)
    os.environ.update(isolated_environment(home))
    try:
        repo = init_repo(base / "repo")
        return repo, build(repo)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a recorded repository (its ledger, state and blobs are all under .git)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture
def bare_remote(tmp_path: Path) -> Path:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    return remote


class Recorded(NamedTuple):
    repo: Path
    model: str  # model.pkl's hash


@pytest.fixture(scope="session")
def three_steps_once(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    from pipeline_helpers import run_pipeline, write_pipeline

    def build(repo: Path) -> str:
        write_pipeline(repo)
        return run_pipeline(repo)

    return Recorded(*build_once(tmp_path_factory, "three-steps", build))


@pytest.fixture
def three_steps(three_steps_once: Recorded, tmp_path: Path) -> Recorded:
    """A copy of pipeline_helpers' pipeline (prep → features → train), recorded once per
    session, at tmp_path/repo."""
    return three_steps_once._replace(repo=copy_repo(three_steps_once.repo, tmp_path / "repo"))
