"""Who ran it: every run records git's identity and the host of who recorded it (withheld as
the roar.share settings say); `roar show` and `roar log` print it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from conftest import git


def roar(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["roar", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def roar_json(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return json.loads(roar(args[0], "--json", *args[1:], cwd=cwd, env=env))


def test_git_identity_and_host_are_recorded_shown_and_withheld(git_repo: Path) -> None:
    repo = git_repo
    host = os.uname().nodename
    # git's own config, when no GIT_AUTHOR_* says otherwise.
    git(repo, "config", "user.name", "Ada Lovelace")
    git(repo, "config", "user.email", "ada@example.org")
    plain = {"GIT_AUTHOR_NAME": "", "GIT_AUTHOR_EMAIL": ""}
    rec = roar_json("run", "sh", "-c", "echo 1 > a.txt", cwd=repo, env=plain)
    assert rec["recorded_by"] == {"name": "Ada Lovelace", "email": "ada@example.org", "host": host}
    assert roar_json("show", rec["id"][:10], cwd=repo)["recorded_by"] == rec["recorded_by"]
    assert roar_json("log", "-n", "1", cwd=repo)[0]["recorded_by"] == rec["recorded_by"]
    shown = roar("show", rec["id"][:10], cwd=repo)
    assert f"  by        Ada Lovelace <ada@example.org> on {host}\n" in shown
    assert "Ada Lovelace" in roar("log", cwd=repo)

    # GIT_AUTHOR_* wins, as on a commit; control characters are escaped when printed.
    rec = roar_json(
        "run", "sh", "-c", "echo 2 > b.txt", cwd=repo,
        env={"GIT_AUTHOR_NAME": "Bob\x1b[31m", "GIT_AUTHOR_EMAIL": "bob@example.org"},
    )  # fmt: skip
    assert rec["recorded_by"]["name"] == "Bob\x1b[31m"
    assert "\x1b" not in roar("show", rec["id"][:10], cwd=repo)
    assert "\x1b" not in roar("log", cwd=repo)

    roar("config", "set", "share.user", "false", cwd=repo)
    roar("config", "set", "share.hostname", "false", cwd=repo)
    rec = roar_json("run", "sh", "-c", "echo 3 > c.txt", cwd=repo, env=plain)
    assert rec["recorded_by"] == {"name": "", "email": "", "host": ""}
    blob = git(
        repo, "rev-parse", f"refs/roar/ledger:runs/{rec['id'][:2]}/{rec['id'][2:4]}/{rec['id']}"
    )
    assert (
        b"ada@example.org"
        not in subprocess.run(
            ["git", "cat-file", "blob", blob], cwd=repo, capture_output=True, check=True
        ).stdout
    )  # …but not the withheld one's
