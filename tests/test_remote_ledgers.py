"""Fetched ledgers are merged once: by `roar fetch`, or by the first command that reads after a
plain `git fetch`; later queries only compare tips, and `roar ui`'s reads never merge."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import git, roar, roar_json
from conftest import Recorded

from roargit import ledger_merge, remote_ledgers
from roargit.ledger import LEDGER_REF, Ledger
from roargit.repo import find_repo
from roargit.views import Context


def _clone_with_lineage(three_steps: Recorded, bare_remote: Path, tmp_path: Path) -> Path:
    repo = three_steps.repo
    git(repo, "remote", "add", "origin", str(bare_remote))
    git(repo, "push", "-q", "origin", "main")
    roar(repo, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare_remote), str(clone))
    roar(clone, "init")  # the fetch refspecs: a plain git fetch brings refs/roar/* too
    git(clone, "fetch", "-q")
    return clone


def test_a_query_after_a_plain_git_fetch_merges_once(
    three_steps: Recorded, bare_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = _clone_with_lineage(three_steps, bare_remote, tmp_path)
    paths = find_repo(clone)
    assert list(remote_ledgers.unmerged(paths)) == ["refs/roar/remotes/origin/ledger"]

    reader = Context(paths, merge_fetched=False)  # roar ui's reads: nothing merged
    assert reader.ledger.tip() is None
    assert remote_ledgers.unmerged(paths)

    assert len(roar_json(clone, "log")) == 3  # the first query merges
    assert remote_ledgers.unmerged(paths) == {}
    tip = Ledger(paths, fast_start=True).tip(LEDGER_REF)

    merges: list[int] = []
    original = ledger_merge.sync_remotes

    def counted(ledger: Ledger) -> list[ledger_merge.Synced]:
        merges.append(1)
        return original(ledger)

    monkeypatch.setattr(ledger_merge, "sync_remotes", counted)
    ctx = Context(paths)
    assert len(ctx.view.steps) == 0  # the clone's own session is empty; the runs are fetched
    assert merges == []  # nothing new fetched: nothing merged, no ref moved
    assert Ledger(paths, fast_start=True).tip(LEDGER_REF) == tip


def test_roar_fetch_notes_what_it_merged(
    three_steps: Recorded, bare_remote: Path, tmp_path: Path
) -> None:
    clone = _clone_with_lineage(three_steps, bare_remote, tmp_path)
    paths = find_repo(clone)
    assert roar_json(clone, "fetch")["runs_added"] == 3
    assert remote_ledgers.unmerged(paths) == {}
    assert remote_ledgers.merged_tips(paths) == remote_ledgers.remote_tips(paths)
    # A new run pushed from the first clone, fetched plainly: one tip to merge again.
    roar(three_steps.repo, "run", "true")
    roar(three_steps.repo, "push")
    git(clone, "fetch", "-q")
    assert list(remote_ledgers.unmerged(paths)) == ["refs/roar/remotes/origin/ledger"]
    assert len(roar_json(clone, "log")) == 4
    assert remote_ledgers.unmerged(paths) == {}


def test_an_unreadable_note_only_costs_a_merge_that_finds_nothing_new(
    three_steps: Recorded, bare_remote: Path, tmp_path: Path
) -> None:
    clone = _clone_with_lineage(three_steps, bare_remote, tmp_path)
    paths = find_repo(clone)
    roar(clone, "fetch")
    tip = Ledger(paths, fast_start=True).tip(LEDGER_REF)
    (paths.roar_dir / remote_ledgers.STATE_FILE).write_text("{not json")
    assert remote_ledgers.unmerged(paths)
    assert len(roar_json(clone, "log")) == 3
    assert Ledger(paths, fast_start=True).tip(LEDGER_REF) == tip
    assert remote_ledgers.unmerged(paths) == {}


def test_a_hash_unknown_in_a_clone_that_never_fetched_says_to_fetch(
    three_steps: Recorded, bare_remote: Path, tmp_path: Path
) -> None:
    repo = three_steps.repo
    git(repo, "remote", "add", "origin", str(bare_remote))
    git(repo, "push", "-q", "origin", "main")
    roar(repo, "push")
    digest = roar_json(repo, "log")[0]["id"]
    clone = tmp_path / "plain-clone"
    git(tmp_path, "clone", "-q", str(bare_remote), str(clone))  # branches only

    before = roar(clone, "show", digest[:12], rc=None)
    assert before.returncode != 0
    assert "never fetched here: run roar fetch" in before.stderr
    assert "origin" in before.stderr

    roar(clone, "fetch")
    assert digest in roar(clone, "show", digest[:12]).stdout
    # Fetched, and still unknown: no hint to fetch again.
    after = roar(clone, "show", "abcdef123456", rc=None)
    assert after.returncode != 0
    assert "roar fetch" not in after.stderr
