"""git.Spawned: the git processes `roar run` starts without `subprocess` give what
subprocess would: stdout, stderr and the status, with or without a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import roar

from roargit import git


@pytest.mark.parametrize("tmpdir", ["", "/nonexistent/roar-tmp"])
def test_spawned_gives_output_errors_and_status(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch, tmpdir: str
) -> None:
    if tmpdir:  # no scratch file can be made: stderr comes through a pipe
        monkeypatch.setenv("TMPDIR", tmpdir)

    def asked_early(args: list[str]) -> git.Finished:
        git.start_early(args, git_repo)
        return git.run_git(args, git_repo, check=False)  # takes the early answer

    ok = asked_early(["rev-parse", "--show-toplevel"])
    assert ok.returncode == 0 and ok.stdout.decode().strip() == str(git_repo.resolve())
    bad = asked_early(["rev-parse", "--verify", "no-such-ref"])
    assert bad.returncode != 0 and b"single revision" in bad.stderr
    reader = git.spawn_git(git.OBJECT_READER, git_repo / ".git", prime=b"info HEAD\n")
    assert reader.primed == 1 and reader.stdin is not None
    reader.stdin.write(b"nonsense\n")
    reader.stdin.flush()
    early = reader.stderr.read()  # while it runs: what has come so far, without waiting
    out, err = reader.communicate()
    assert out.split()[1:] == [b"commit", out.split()[2]] and b"nonsense" in err
    assert err.startswith(early)
    assert reader.wait() != 0
    assert not git._early
    assert not [f for f in os.listdir("/tmp") if f.startswith(".roar-git-")]


def test_roar_run_without_a_writable_temporary_folder(git_repo: Path) -> None:
    roar(git_repo, "init")
    roar(git_repo, "run", "-q", "true", env={"TMPDIR": "/nonexistent/roar-tmp"})
    assert "true" in roar(git_repo, "log", "-n", "1").stdout


def test_no_git_on_path_is_one_line(git_repo: Path) -> None:
    import shutil
    import subprocess

    roar(git_repo, "init")
    exe = shutil.which("roar")
    assert exe is not None
    for args in (["run", "-q", "true"], ["log"]):
        proc = subprocess.run(
            [exe, *args], cwd=git_repo, capture_output=True, text=True,
            env={**os.environ, "PATH": "/nonexistent"},
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            "roar: git was not found on PATH: roar needs git (2.36 or newer) installed"
        ]
