"""Consumers filed by input set: a run that reads what an earlier run read adds one entry, and
a set stands in a ledger only with every artifact naming it."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from cli_helpers import git
from ledger_helpers import hexid, make_run

from roargit import ledger_check, records
from roargit.ledger import LEDGER_REF, Ledger
from roargit.ledger_layout import input_set, read_input_set, run_entries
from roargit.repo import find_repo

FILES = tuple(hexid(i) for i in range(1, 30))


def _tree_ids(repo: Path, hashes: tuple[str, ...]) -> dict[str, str]:
    return {
        h: git(repo, "rev-parse", f"{LEDGER_REF}:artifacts/{h[:2]}/{h[2:4]}/{h}") for h in hashes
    }


def _problems(repo: Path, ref: str) -> list[ledger_check.Rejected]:
    pg = pygit2.Repository(str(repo))
    tree = pg.revparse_single(ref).peel(pygit2.Tree)
    return ledger_check.check_tree(pg, tree)[0]


@pytest.mark.parametrize("fast_start", [False, True], ids=["pygit2", "git-cli"])
def test_a_second_reader_of_the_same_files_changes_no_artifact_tree(
    git_repo: Path, fast_start: bool
) -> None:
    led = Ledger(find_repo(git_repo), fast_start=fast_start)
    r1 = led.append_run(make_run(1, inputs=FILES, outputs=(hexid(99),)))
    before = _tree_ids(git_repo, FILES)
    r2 = led.append_run(make_run(2, inputs=FILES, outputs=(hexid(98),)))
    assert _tree_ids(git_repo, FILES) == before
    found = input_set(FILES)
    assert found is not None
    set_id, data = found
    assert read_input_set(data) == sorted(FILES)
    where = f"{LEDGER_REF}:inputsets/{set_id[:2]}/{set_id[2:4]}/{set_id}"
    assert sorted(git(git_repo, "ls-tree", "--name-only", where).split()) == sorted(
        ["set", f"c.{r1}", f"c.{r2}"]
    )
    fresh = Ledger(find_repo(git_repo), fast_start=fast_start)
    assert fresh.artifact_runs(FILES[0]) == ([], sorted([r1, r2]))
    assert fresh.artifact_runs(hexid(99)) == ([r1], [])
    assert fresh.producers(hexid(99)) == [r1]
    assert _problems(git_repo, LEDGER_REF) == []


def test_a_set_without_all_its_artifact_entries_is_refused(git_repo: Path) -> None:
    """A writer that finds a set skips its `s.` entries: a set that stood without them would
    hide later readers from the artifacts it left out."""
    led = Ledger(find_repo(git_repo), "refs/roar/crafted")
    record = make_run(1, inputs=FILES)
    run_id, data = records.identify(record)
    entries = run_entries(run_id, data, record)
    found = input_set(FILES)
    assert found is not None
    dropped = f"s.{found[0]}"
    left_out = next(e for e in entries if e.path[-1] == dropped and e.path[3] == FILES[0])
    led.commit([e for e in entries if e is not left_out], "crafted")
    refused = {r.path for r in _problems(git_repo, "refs/roar/crafted")}
    set_id = dropped[2:]
    assert f"inputsets/{set_id[:2]}/{set_id[2:4]}/{set_id}/set" in refused
    for h in FILES[1:]:
        assert f"artifacts/{h[:2]}/{h[2:4]}/{h}/{dropped}" in refused
    assert all(p.startswith(("inputsets/", "artifacts/")) for p in refused)


_A, _B = sorted([hexid(1), hexid(2)])


@pytest.mark.parametrize(
    "data",
    [b"", b"x" * 64 + b"\n", f"{_B}\n{_A}\n".encode(), f"{_A}\n{_A}\n".encode(), _A.encode()],
    ids=["empty", "not hex", "out of order", "twice", "no newline"],
)
def test_bytes_that_are_no_input_set_read_as_none(data: bytes) -> None:
    assert read_input_set(data) is None
