"""Sixty-four `roar run`s at once in one clone: sixty-four records, sixty-four steps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest


@pytest.mark.slow
def test_64_concurrent_roar_runs_each_get_a_record_and_a_step(git_repo: Path) -> None:
    subprocess.run(["roar", "init"], cwd=git_repo, check=True, capture_output=True)
    procs = [
        subprocess.Popen(
            ["roar", "run", "-q", "sh", "-c", f"echo {n} > out{n}.txt"],
            cwd=git_repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(64)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 64, errors
    log = json.loads(
        subprocess.run(
            ["roar", "log", "--json"], cwd=git_repo, check=True, capture_output=True
        ).stdout
    )
    assert len(log) == 64
    dag = json.loads(
        subprocess.run(
            ["roar", "dag", "--json"], cwd=git_repo, check=True, capture_output=True
        ).stdout
    )
    steps = dag["steps"]
    assert sorted(s["step"] for s in steps) == sorted(f"@{n}" for n in range(1, 65))
    assert sorted(o for s in steps for o in s["outputs"]) == sorted(
        f"out{n}.txt" for n in range(64)
    )
    subprocess.run(["git", "fsck", "--strict", "--no-progress"], cwd=git_repo, check=True)
