"""The session index: one small entry per run (`sessions/<ab>/<S>/<cd>/i.<R>`) from which a
new run is numbered without decoding the session's earlier runs. It is derived from the run
records, checked against them when it arrives by fetch, and rebuilt from them where missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import git
from hostile import fan, plant, push_ledger
from ledger_helpers import hexid, make_run

from roargit import codec, ledger_check, records, session
from roargit.errors import RecordCorrupt
from roargit.ledger import LEDGER_REF, Entry, Ledger
from roargit.ledger_layout import run_entries
from roargit.ledger_merge import sync_remotes
from roargit.records import RunId, SessionId, StepIndex
from roargit.repo import find_repo

SESSION = SessionId("5e" * 32)
REMOTE_REF = "refs/roar/remotes/origin/ledger"


def index_path(run_id: str, session_id: str = SESSION) -> str:
    return f"sessions/{session_id[:2]}/{session_id}/{run_id[:2]}/i.{run_id}"


def test_every_appended_run_has_an_entry_equal_to_the_one_its_record_gives(
    git_repo: Path,
) -> None:
    led = Ledger(find_repo(git_repo))
    first = led.append_run(make_run(1, outputs=(hexid(1),), session=SESSION))
    again = led.append_run(make_run(2, outputs=(hexid(1),), session=SESSION))  # same step
    other = led.append_run(make_run(3, inputs=(hexid(1),), session=SESSION, step=2))
    fresh = Ledger(find_repo(git_repo), fast_start=True)
    index = dict(fresh.session_index(SESSION))
    assert sorted(index) == sorted([first, again, other])
    for rid, entry in index.items():
        assert entry == StepIndex.of_run(rid, fresh.run(rid))
    assert sorted(fresh.session_runs(SESSION)) == sorted([first, again, other])  # no i.* names
    steps = session.load_index(fresh, SESSION, frozenset())
    assert [(s.number, s.current.run, s.superseded) for s in steps] == [
        (1, again, (first,)),
        (2, other, ()),
    ]
    view = session.load_view(fresh, SESSION, frozenset())
    assert [(s.label, s.run_id, s.superseded) for s in view.steps] == [
        ("@1", again, (first,)),
        ("@2", other, ()),
    ]


def test_a_run_without_an_entry_or_with_a_damaged_one_is_read_from_its_record(
    git_repo: Path,
) -> None:
    led = Ledger(find_repo(git_repo))
    older = make_run(1, outputs=(hexid(1),), session=SESSION)
    rid, data = records.identify(older)
    # As an older roargit wrote it: no index entry.
    entries = [e for e in run_entries(rid, data, older) if not e.path[-1].startswith("i.")]
    led.commit(entries, f"run {rid}")
    damaged = make_run(2, outputs=(hexid(2),), session=SESSION, step=2)
    rid2 = led.append_run(damaged)
    led.commit([Entry(tuple(index_path(rid2).split("/")), b"\x93junk")], "damage")
    fresh = Ledger(find_repo(git_repo), fast_start=True)
    assert dict(fresh.session_index(SESSION)) == {rid: None, rid2: None}
    steps = session.load_index(fresh, SESSION, frozenset())
    assert [(s.number, s.current) for s in steps] == [
        (1, StepIndex.of_run(rid, older)),
        (2, StepIndex.of_run(rid2, damaged)),
    ]


def test_a_current_run_whose_record_is_damaged_leaves_its_step_to_the_one_before(
    git_repo: Path,
) -> None:
    led = Ledger(find_repo(git_repo))
    first = led.append_run(make_run(1, outputs=(hexid(1),), session=SESSION))
    second = led.append_run(make_run(2, outputs=(hexid(1),), session=SESSION))
    led.commit([Entry(("runs", *fan(second).split("/"), second), b"\x93junk")], "x")
    skipped: list[str] = []
    view = session.load_view(Ledger(find_repo(git_repo)), SESSION, frozenset(), skipped)
    assert [(s.run_id, s.superseded) for s in view.steps] == [(first, ())]
    assert len(skipped) == 1 and skipped[0].startswith(f"record run {second[:12]} is corrupt")


def _entry_map(run_id: str, **changes: Any) -> dict[str, Any]:
    m = StepIndex.of_run(run_id, make_run(1, session=SESSION)).to_map()
    m.update(changes)
    return m


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("type", "run", 'type must be "step"'),
        ("run", "x" * 64, "run must be 64 lowercase hex digits"),
        ("session", None, "session must be 64 lowercase hex digits"),
        ("kind", "job", 'kind must be one of "run", "build"'),
        ("step", -1, "step must be an integer from 0"),
        ("status", "done", "status must be one of"),
        ("started_at", "1", "started_at must be an integer within int64"),
        ("argv", ["python"], "argv must be 64 lowercase hex digits"),
        ("inputs", "", "inputs must be 64 lowercase hex digits"),
        ("outputs", 7, "outputs must be 64 lowercase hex digits"),
    ],
)
def test_a_damaged_entry_is_refused_naming_its_field(key: str, value: Any, message: str) -> None:
    data = codec.encode(_entry_map("1" * 64, **{key: value}))
    with pytest.raises(RecordCorrupt) as caught:
        records.decode_step_index(data, "index entry", "origin")
    assert str(caught.value).startswith(f"record index entry from origin is malformed: {message}")
    with pytest.raises(RecordCorrupt):
        records.decode_step_index(b"\xc1", "index entry")
    good = _entry_map("1" * 64)
    assert records.decode_step_index(codec.encode(good), "x") == StepIndex(
        **{k: v for k, v in good.items() if k != "type"}
    )


def test_a_fetched_entry_that_lies_about_its_run_is_left_out_and_the_record_wins(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    """An attacker's index entry that renumbers a run (to supersede another clone's step,
    say) is refused at the merge; the run itself is taken and numbered from its record."""
    victim = git_repo
    git(victim, "remote", "add", "origin", str(bare_remote))
    led = Ledger(find_repo(victim))
    mine = led.append_run(make_run(1, outputs=(hexid(1),), session=SESSION))
    git(victim, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", str(bare_remote), str(attacker))
    git(attacker, "fetch", "-q", "origin", f"+{LEDGER_REF}:{LEDGER_REF}")
    theirs_rec = make_run(5, outputs=(hexid(5),), session=SESSION, step=7)
    theirs, data = records.identify(theirs_rec)
    lie = StepIndex.of_run(theirs, theirs_rec)._replace(step=1, started_at=2**62)
    forged = StepIndex.of_run(mine, make_run(1, session=SESSION))._replace(step=9)
    plant(
        attacker,
        {
            f"runs/{fan(theirs)}/{theirs}": data,
            f"sessions/{SESSION[:2]}/{SESSION}/{theirs[:2]}/{theirs}": data,
            index_path(theirs): records.encode_step_index(lie),
            index_path(mine): records.encode_step_index(forged),  # replaces mine: refused too
        },
    )
    push_ledger(attacker)
    git(victim, "fetch", "-q", "origin", f"+{LEDGER_REF}:{REMOTE_REF}")
    merged = Ledger(find_repo(victim))
    sync_remotes(merged)
    held = {q.path: q.reason for q in ledger_check.quarantined(find_repo(victim).roar_dir)}
    assert held[index_path(theirs)].endswith("does not match the run's record")
    assert index_path(mine) in held
    fresh = Ledger(find_repo(victim), fast_start=True)
    assert dict(fresh.session_index(SESSION))[RunId(theirs)] is None  # left out
    steps = session.load_index(fresh, SESSION, frozenset())
    assert [(s.number, s.current.run) for s in steps] == [(1, mine), (7, theirs)]


def test_runs_number_their_steps_from_the_index(git_repo: Path) -> None:
    """End to end: the installed `roar`; re-running a step supersedes it, a new one is next."""
    repo = git_repo
    (repo / "a.txt").write_text("a\n")

    def run(*argv: str) -> str:
        out = subprocess.run(
            ["roar", "run", *argv], cwd=repo, capture_output=True, text=True, check=True
        )
        return out.stderr

    assert "@1  run" in run("sh", "-c", "cat a.txt > b.txt")
    assert "@2  run" in run("sh", "-c", "cat b.txt > c.txt")
    again = run("sh", "-c", "cat a.txt a.txt > b.txt")
    assert "@1  run" in again and "supersedes run" in again
    assert "@3  run" in run("true")
    assert "@3  run" in run("true")  # the same command that touched no file: the same step
    assert "@4  run" in run("sh", "-c", "true")
    led = Ledger(find_repo(repo), fast_start=True)
    sid = session.read_state(find_repo(repo).roar_dir).session_id
    assert all(e is not None for _r, e in led.session_index(str(sid)))


@pytest.mark.parametrize("fast_start", [True, False])
def test_edits_of_wide_fan_out_trees_stay_canonical(git_repo: Path, fast_start: bool) -> None:
    """Runs that all read the same files grow each artifact's tree by one `c.<run>` entry a
    run: such trees are edited in their raw bytes. The result must be the trees git writes."""
    led = Ledger(find_repo(git_repo), fast_start=fast_start)
    shared = tuple(hexid(i, "shared") for i in range(40))
    ids = []
    for n in range(14):
        ids.append(led.append_run(make_run(n, inputs=shared, outputs=(hexid(n),), session=SESSION)))
    tip = git(git_repo, "rev-parse", LEDGER_REF)
    root = git(git_repo, "rev-parse", f"{tip}^{{tree}}")
    env = {**os.environ, "GIT_INDEX_FILE": str(git_repo / ".git" / "check-index")}
    subprocess.run(["git", "read-tree", root], cwd=git_repo, env=env, check=True)
    rebuilt = subprocess.run(
        ["git", "write-tree"], cwd=git_repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert rebuilt == root
    subprocess.run(["git", "fsck", "--strict", "--no-dangling"], cwd=git_repo, check=True)
    fresh = Ledger(find_repo(git_repo), fast_start=True)
    for h in shared[:3]:
        assert sorted(fresh.artifact_runs(h)[1]) == sorted(ids)
    assert sorted(fresh.session_runs(SESSION)) == sorted(ids)


def test_decoded_buckets_are_kept_and_only_a_changed_bucket_is_read_again(
    git_repo: Path,
) -> None:
    """index_cache: a run adds one entry, so a reader reads one bucket from git, not the
    session; a damaged or missing cache is rebuilt and never changes the answer."""
    from roargit import index_cache

    paths = find_repo(git_repo)
    led = Ledger(paths)
    ids = [led.append_run(make_run(i, outputs=(hexid(i),), session=SESSION)) for i in range(40)]

    def answer(fast_start: bool) -> list[tuple[RunId, StepIndex | None]]:
        return sorted(Ledger(paths, fast_start=fast_start).session_index(SESSION))

    truth = answer(True)  # no cache yet: read from git, then kept
    assert sorted(rid for rid, _ in truth) == sorted(ids)
    kept = index_cache.load(paths.roar_dir, SESSION)
    assert sum(len(b) for b in kept.values()) == 40
    assert answer(False) == truth  # from the cache, through either view

    reads: list[str] = []
    real = Ledger._index_buckets

    def counting(self: Ledger, view: Any, where: tuple[str, ...], names: list[str]) -> Any:
        reads.extend(names)
        return real(self, view, where, names)

    new = led.append_run(make_run(99, outputs=(hexid(99),), session=SESSION))
    try:
        Ledger._index_buckets = counting  # type: ignore[method-assign]
        after = answer(True)
    finally:
        Ledger._index_buckets = real  # type: ignore[method-assign]
    assert reads == [new[:2]]  # the one bucket the new run changed
    assert sorted(rid for rid, _ in after) == sorted([*ids, new])
    assert dict(after)[new] == StepIndex.of_run(new, led.run(new))

    cache_file = paths.roar_dir / "session-index" / SESSION
    for damage in (b"", b"\x93\x01", os.urandom(200), cache_file.read_bytes()[:-7]):
        cache_file.write_bytes(damage)
        assert answer(True) == after
    cache_file.unlink()
    assert answer(True) == after and cache_file.exists()


def test_an_appending_run_keeps_the_bucket_it_wrote_and_a_moved_ledger_is_read_again(
    git_repo: Path,
) -> None:
    """Ledger.append_run keeps the bucket its commit wrote (index_cache): the next reader
    reads no bucket from git. Another writer's runs (a concurrent run, a merge) are read
    from git, and every answer is the one a reader with no cache gives."""
    from roargit import index_cache

    paths = find_repo(git_repo)
    Ledger(paths).import_records([make_run(i, session=SESSION) for i in range(30)])

    def truth() -> list[tuple[RunId, StepIndex | None]]:
        cache = paths.roar_dir / "session-index" / SESSION
        kept = cache.read_bytes() if cache.exists() else None
        cache.unlink(missing_ok=True)
        try:
            return sorted(Ledger(paths, fast_start=True).session_index(SESSION))
        finally:
            if kept is not None:
                cache.write_bytes(kept)

    reads: list[str] = []
    real = Ledger._index_buckets

    def counting(self: Ledger, view: Any, where: tuple[str, ...], names: list[str]) -> Any:
        reads.extend(names)
        return real(self, view, where, names)

    try:
        Ledger._index_buckets = counting  # type: ignore[method-assign]
        for i in range(30, 34):
            mine = Ledger(paths, fast_start=True)  # as `roar run`: read, then append
            mine.session_index(SESSION)
            new = mine.append_run(make_run(i, session=SESSION, step=i))
            reads.clear()
            after = sorted(Ledger(paths, fast_start=True).session_index(SESSION))
            assert reads == []  # the bucket it wrote was kept
            assert after == truth() and new in dict(after)
        # Another writer appends between this reader's read and its append.
        mine = Ledger(paths, fast_start=True)
        mine.session_index(SESSION)
        theirs = Ledger(paths, fast_start=True).append_run(make_run(40, session=SESSION))
        new = mine.append_run(make_run(41, session=SESSION))
        reads.clear()
        after = sorted(Ledger(paths, fast_start=True).session_index(SESSION))
        assert after == truth() and {new, theirs} <= set(dict(after))
        assert index_cache.load(paths.roar_dir, SESSION)  # a file marshal reads back
    finally:
        Ledger._index_buckets = real  # type: ignore[method-assign]
