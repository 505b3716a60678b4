"""Who ran it: every run records git's identity and the host of who recorded it (withheld as
the roar.share settings say); `roar show` and `roar log` print it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cli_helpers import git, roar, roar_json


def test_git_identity_and_host_are_recorded_shown_and_withheld(git_repo: Path) -> None:
    repo = git_repo
    host = os.uname().nodename
    # git's own config, when no GIT_AUTHOR_* says otherwise.
    git(repo, "config", "user.name", "Ada Lovelace")
    git(repo, "config", "user.email", "ada@example.org")
    plain = {"GIT_AUTHOR_NAME": "", "GIT_AUTHOR_EMAIL": ""}
    rec = roar_json(repo, "run", "sh", "-c", "echo 1 > a.txt", env=plain)
    assert rec["recorded_by"] == {"name": "Ada Lovelace", "email": "ada@example.org", "host": host}
    assert roar_json(repo, "show", rec["id"][:10])["recorded_by"] == rec["recorded_by"]
    assert roar_json(repo, "log", "-n", "1")[0]["recorded_by"] == rec["recorded_by"]
    shown = roar(repo, "show", rec["id"][:10]).stdout
    assert f"  by        Ada Lovelace <ada@example.org> on {host}\n" in shown
    assert "Ada Lovelace" in roar(repo, "log").stdout

    # GIT_AUTHOR_* wins, as on a commit; control characters are escaped when printed.
    rec = roar_json(
        repo, "run", "sh", "-c", "echo 2 > b.txt",
        env={"GIT_AUTHOR_NAME": "Bob\x1b[31m", "GIT_AUTHOR_EMAIL": "bob@example.org"},
    )  # fmt: skip
    assert rec["recorded_by"]["name"] == "Bob\x1b[31m"
    assert "\x1b" not in roar(repo, "show", rec["id"][:10]).stdout
    assert "\x1b" not in roar(repo, "log").stdout

    roar(repo, "config", "set", "share.user", "false")
    roar(repo, "config", "set", "share.hostname", "false")
    rec = roar_json(repo, "run", "sh", "-c", "echo 3 > c.txt", env=plain)
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
