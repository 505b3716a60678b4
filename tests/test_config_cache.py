"""config_cache: `git config --list`'s answer kept in .git/roar/config-cache, taken only while
every file git reads is as it was; real repositories, real `git`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cli_helpers import git, roar, roar_json

from roargit import config, config_cache
from roargit.git import run_git
from roargit.repo import RepoPaths, ensure_roar_dir, find_repo

KEY = "roar.store.maxblobsize"


#: Set in every test's repository: a read that answers otherwise took the kept answer.
PROOF = "roar.store.retries"


@pytest.fixture
def paths(git_repo: Path, monkeypatch: pytest.MonkeyPatch) -> RepoPaths:
    """The repository, with .git/roar/, and a cache that takes files changed just before git
    read them (the racy margin is tested on its own: waiting 2 s a test would be slow)."""
    monkeypatch.setattr(config_cache, "RACY_S", 0.0)
    found = find_repo(git_repo)
    ensure_roar_dir(found)
    git(git_repo, "config", PROOF, "3")
    return found


def value(paths: RepoPaths, key: str = KEY) -> str:
    return config.read_all(paths)[key].value


def cache_file(paths: RepoPaths) -> Path:
    return paths.roar_dir / config_cache.FILE


def assert_kept(paths: RepoPaths) -> None:
    """The next read takes the kept answer: PROOF's value planted in it is what it answers."""
    data = cache_file(paths).read_bytes()
    old = f"{PROOF}\n3\0".encode()
    assert data.count(old) == 1
    cache_file(paths).write_bytes(data.replace(old, f"{PROOF}\n4\0".encode()))
    assert value(paths, PROOF) == "4"


def settle() -> None:
    """Past the file system's clock tick: a file written next has a later mtime and ctime."""
    time.sleep(0.02)


def test_the_kept_answer_is_taken_until_git_config_changes_a_setting(paths: RepoPaths) -> None:
    git(paths.root, "config", KEY, "2G")
    settle()
    assert value(paths) == "2G" and cache_file(paths).is_file()
    assert_kept(paths)
    git(paths.root, "config", KEY, "300M")
    assert value(paths) == "300M" and value(paths, PROOF) == "3"
    git(paths.root, "config", "--unset", KEY)
    assert value(paths) == "1G"  # the default again


@pytest.mark.parametrize("where", ["global", "xdg", "team", "worktree"])
def test_a_change_in_any_file_git_reads_is_seen(
    paths: RepoPaths, where: str, isolated_home: Path
) -> None:
    if where == "worktree":
        git(paths.root, "config", "extensions.worktreeConfig", "true")
    settle()
    assert value(paths) == "1G"
    assert_kept(paths)
    file = {
        "global": isolated_home / ".gitconfig",
        "xdg": isolated_home / ".config" / "git" / "config",
        "team": paths.root / config.TEAM_FILE,
        "worktree": paths.git_dir / "config.worktree",
    }[where]
    file.parent.mkdir(parents=True, exist_ok=True)
    git(paths.root, "config", "--file", str(file), KEY, "64M")
    assert value(paths) == "64M" and value(paths, PROOF) == "3"


def test_a_linked_worktree_reads_its_own_config_worktree(paths: RepoPaths) -> None:
    git(paths.root, "config", "extensions.worktreeConfig", "true")
    other = paths.root.parent / "other"
    git(paths.root, "worktree", "add", "-q", "--detach", str(other))
    linked = find_repo(other)
    settle()
    assert value(linked) == "1G"
    git(other, "config", "--worktree", KEY, "3G")
    assert value(linked) == "3G"
    assert value(paths) == "1G"  # the main worktree's own answer, not the linked one's


def test_git_config_global_and_system_files_named_by_the_environment(
    paths: RepoPaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine = tmp_path / "global.cfg"
    system = tmp_path / "system.cfg"
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(mine))
    monkeypatch.delenv("GIT_CONFIG_NOSYSTEM")
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(system))
    settle()
    assert value(paths) == "1G"  # neither file exists yet
    assert_kept(paths)
    git(paths.root, "config", "--file", str(system), KEY, "9G")
    assert value(paths) == "9G"
    settle()
    git(paths.root, "config", "--file", str(mine), KEY, "10G")
    assert value(paths) == "10G"
    settle()
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "another.cfg"))
    assert value(paths) == "9G"  # the global file the key names is another one now
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    assert value(paths) == "1G"


@pytest.mark.parametrize(
    "include", ["include.path", "includeIf.onbranch:main.path", "includeIf.gitdir:/none/.path"]
)
def test_an_include_anywhere_keeps_nothing(
    paths: RepoPaths, include: str, isolated_home: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra.cfg"
    git(paths.root, "config", "--file", str(extra), KEY, "2G")
    git(paths.root, "config", "--global", include, str(extra))
    settle()
    expected = "1G" if "gitdir" in include else "2G"
    assert value(paths) == expected
    assert not cache_file(paths).exists()
    git(paths.root, "config", "--file", str(extra), KEY, "4G")  # no stat of it is kept
    assert value(paths) == ("1G" if "gitdir" in include else "4G")


def test_an_include_in_the_team_file_keeps_nothing(paths: RepoPaths, tmp_path: Path) -> None:
    extra = tmp_path / "extra.cfg"
    git(paths.root, "config", "--file", str(extra), KEY, "2G")
    team = str(paths.root / config.TEAM_FILE)
    git(paths.root, "config", "--file", team, "include.path", str(extra))
    settle()
    assert value(paths) == "2G"
    assert not cache_file(paths).exists()


@pytest.mark.parametrize(
    "variables",
    [
        {"GIT_CONFIG_PARAMETERS": f"'{KEY}'='8G'"},
        {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": KEY, "GIT_CONFIG_VALUE_0": "8G"},
    ],
)
def test_settings_from_the_environment_are_never_kept(
    paths: RepoPaths, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    for name, text in variables.items():
        monkeypatch.setenv(name, text)
    settle()
    assert value(paths) == "8G"
    assert not cache_file(paths).exists()
    for name in variables:
        monkeypatch.delenv(name)
    assert value(paths) == "1G"


@pytest.mark.parametrize("name", ["GIT_DIR", "GIT_COMMON_DIR"])
def test_a_repository_named_by_the_environment_keeps_nothing(
    paths: RepoPaths, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """git then reads another repository's config than the one whose stat would be kept."""
    monkeypatch.setenv(name, str(paths.git_dir))
    settle()
    assert value(paths, PROOF) == "3"
    assert not cache_file(paths).exists()


def test_a_file_changed_just_before_git_read_it_is_not_kept(
    paths: RepoPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_cache, "RACY_S", 60.0)
    git(paths.root, "config", KEY, "2G")
    assert value(paths) == "2G"
    assert not cache_file(paths).exists()  # its stat could miss a change in the same tick


def test_a_damaged_or_foreign_cache_is_ignored(paths: RepoPaths) -> None:
    git(paths.root, "config", KEY, "2G")
    settle()
    assert value(paths) == "2G"
    good = cache_file(paths).read_bytes()
    for damage in (b"", b"12\n", b"x" * 50, good[:40], good.replace(b"cache 1", b"cache 9")):
        cache_file(paths).write_bytes(damage)
        assert value(paths) == "2G"


def test_no_roar_folder_no_cache(git_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_cache, "RACY_S", 0.0)
    found = find_repo(git_repo)
    settle()
    assert config.read_all(found)[KEY].value == "1G"
    assert not found.roar_dir.exists()  # a read never makes .git/roar/


def test_the_system_file_is_found_where_git_reads_it(
    paths: RepoPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without GIT_CONFIG_SYSTEM: from an entry's origin, or from git's message when the file
    is absent (None only for a file there without entries: then nothing is kept)."""
    monkeypatch.delenv("GIT_CONFIG_NOSYSTEM")
    monkeypatch.delenv("GIT_CONFIG_SYSTEM", raising=False)
    listing = run_git(config.list_args(paths), paths.root).stdout
    found = config_cache._system_file(paths, listing)
    if found is None:
        pytest.skip("this machine's system git config exists without entries")
    assert os.path.isabs(found)


def test_roar_run_sees_a_setting_changed_between_runs(git_repo: Path, tmp_path: Path) -> None:
    """End to end, with the real margin: the config files older than it, runs take the kept
    answer (no `git config` started); `git config` between two runs is seen by the second."""
    log = tmp_path / "git.log"
    shim = tmp_path / "bin"
    shim.mkdir()
    real = git(git_repo, "--exec-path")
    (shim / "git").write_text(
        f'#!/bin/sh\necho "$*" >> {log}\nexec {real}/git "$@"\n', encoding="utf-8"
    )
    (shim / "git").chmod(0o755)
    env = {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    roar(git_repo, "run", "-q", "true", env=env)
    time.sleep(config_cache.RACY_S + 0.1)  # the files are older than the margin now
    roar(git_repo, "run", "-q", "true", env=env)  # keeps the answer
    log.write_text("")
    first = roar_json(git_repo, "run", "true", env={**env, "SEEN_ONE": "x"})
    assert "config" not in log.read_text().split()  # the kept answer
    assert "SEEN_ONE" not in first["environment"]["env_vars"]
    git(git_repo, "config", "roar.env.include", "SEEN_*")
    second = roar_json(git_repo, "run", "true", env={**env, "SEEN_ONE": "x"})
    assert second["environment"]["env_vars"].get("SEEN_ONE") == "x"
