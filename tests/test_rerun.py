"""`roar run @N [--key=value…]` as domain work: which command, folder and step a re-run is."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from roargit import session
from roargit.capture import record_run
from roargit.ledger import Ledger
from roargit.repo import find_repo
from roargit.rerun import apply_overrides, resolve

TRAIN = ["--lr", "0.1", "--epochs=3", "--quiet"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--lr=0.5"], ["--lr", "0.5", "--epochs=3", "--quiet"]),
        (["--epochs=7"], ["--lr", "0.1", "--epochs=7", "--quiet"]),
        (["--quiet=1"], ["--lr", "0.1", "--epochs=3", "--quiet", "1"]),
        (["--seed=4"], [*TRAIN, "--seed=4"]),
        (["--quiet"], TRAIN),
        (["extra"], [*TRAIN, "extra"]),
        (["--lr=0.5", "--seed=4"], ["--lr", "0.5", "--epochs=3", "--quiet", "--seed=4"]),
    ],
)
def test_overrides_replace_a_flag_in_either_spelling_or_append(
    overrides: list[str], expected: list[str]
) -> None:
    assert apply_overrides(TRAIN, overrides) == expected
    assert apply_overrides(TRAIN, []) == TRAIN


def _record_step(repo: Path, *argv: str) -> None:
    sub = repo / "sub"
    sub.mkdir(exist_ok=True)
    record_run(find_repo(repo), [sys.executable, "-c", "pass", *argv], sub)


def test_a_step_label_names_the_current_run_its_folder_and_number(git_repo: Path) -> None:
    _record_step(git_repo, "--lr", "0.1")
    paths = find_repo(git_repo)
    again = resolve(paths, ["@1", "--lr=0.5"])
    assert again is not None
    assert again.argv == [sys.executable, "-c", "pass", "--lr", "0.5"]
    assert again.cwd == git_repo.resolve() / "sub"
    assert (again.kind, again.step, again.redacted) == ("run", 1, False)
    assert resolve(paths, ["python", "train.py"]) is None
    assert resolve(paths, ["@x1"]) is None  # not a label: an ordinary command
    with pytest.raises(session.NoSuchStep, match="no step @2"):
        resolve(paths, ["@2"])
    with pytest.raises(session.NoSuchStep, match="no step @B1"):
        resolve(paths, ["@B1"])


def test_a_redacted_command_is_said_to_be(git_repo: Path) -> None:
    _record_step(git_repo, "--token", "ghp_" + "a" * 36)
    again = resolve(find_repo(git_repo), ["@1"])
    assert again is not None and again.redacted
    assert "<redacted>" in again.argv[-1]


def test_a_rerun_reads_the_session_index_once(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record_step(git_repo, "--lr", "0.1")
    paths = find_repo(git_repo)
    reads: list[str] = []
    original = Ledger.session_index

    def counted(self: Ledger, session_id: str) -> list[Any]:
        reads.append(session_id)
        return original(self, session_id)

    monkeypatch.setattr(Ledger, "session_index", counted)
    again = resolve(paths, ["@1", "--lr=0.5"])
    assert again is not None
    outcome = record_run(paths, again.argv, again.cwd, kind=again.kind, step=again.step)
    assert len(reads) == 1
    assert outcome.label == "@1" and outcome.superseded
    # The ledger moved: the next numbering reads the index again, and sees the new run.
    steps = session.load_index(Ledger(paths, fast_start=True), outcome.record.session, frozenset())
    assert len(reads) == 2
    assert steps[0].current.run == outcome.run_id
