from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest
from cli_helpers import git
from ledger_helpers import commit_at, hexid, make_run

from roargit import gitobjects
from roargit.errors import RecordCorrupt
from roargit.ledger import LEDGER_REF, Entry, Ledger
from roargit.ledger_merge import merge, sync_remotes
from roargit.repo import find_repo


@pytest.fixture(params=[False, True], ids=["pygit2", "git-cli"])
def fast_start(request: pytest.FixtureRequest) -> bool:
    """Every ledger test runs against both backends: pygit2 in-process and the git CLI."""
    return bool(request.param)


@pytest.fixture
def ledger(fast_start: bool) -> Callable[[Path], Ledger]:
    return lambda repo: Ledger(find_repo(repo), fast_start=fast_start)


def test_append_and_find_by_prefix_and_artifact(
    ledger: Callable[[Path], Ledger], git_repo: Path
) -> None:
    led = ledger(git_repo)
    a, b, c = hexid(1), hexid(2), hexid(3)
    r1 = led.append_run(make_run(1, inputs=(a,), outputs=(b,)))
    r2 = led.append_run(make_run(2, inputs=(b,), outputs=(c,)))
    assert led.find_runs(r1[:6]) == [r1]
    assert led.run(r2).outputs[0].hash == c
    assert led.artifact_runs(b) == ([r1], [r2])
    assert led.artifact_runs(a) == ([], [r1])
    assert led.find_artifacts(c[:8]) == [c]
    assert list(led.history()) == [[r2], [r1]]


def test_appending_the_same_record_twice_changes_nothing(
    ledger: Callable[[Path], Ledger], git_repo: Path
) -> None:
    led = ledger(git_repo)
    led.append_run(make_run(1))
    tip = led.tip()
    led.append_run(make_run(1))
    assert led.tip() == tip


def test_user_branches_index_and_worktree_untouched(
    ledger: Callable[[Path], Ledger], git_repo: Path
) -> None:
    (git_repo / "wip.txt").write_text("uncommitted\n")
    git(git_repo, "add", "wip.txt")
    before = (
        git(git_repo, "for-each-ref"),
        git(git_repo, "status", "--porcelain"),
        (git_repo / ".git" / "index").read_bytes(),
    )
    ledger(git_repo).append_run(make_run(1, outputs=(hexid(9),)))
    refs = git(git_repo, "for-each-ref", "--format=%(refname)").splitlines()
    assert [r for r in refs if not r.startswith("refs/roar/")] == ["refs/heads/main"]
    after = (
        git(git_repo, "for-each-ref", "refs/heads"),
        git(git_repo, "status", "--porcelain"),
        (git_repo / ".git" / "index").read_bytes(),
    )
    assert before[0].splitlines()[0] == after[0]
    assert before[1:] == after[1:]


APPENDER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from ledger_helpers import commit_at, hexid, make_run
from roargit.ledger import Ledger
from roargit.repo import find_repo
n = int(sys.argv[1])
Ledger(find_repo(Path({repo!r})), fast_start=sys.argv[2] == "1").append_run(
    make_run(n, inputs=(hexid(0),), outputs=(hexid(n, "out"),)))
"""


@pytest.mark.slow
def test_64_concurrent_appenders_lose_nothing(
    ledger: Callable[[Path], Ledger], fast_start: bool, git_repo: Path
) -> None:
    script = APPENDER.format(tests=str(Path(__file__).parent), repo=str(git_repo))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n), str(int(fast_start))], stderr=subprocess.PIPE
        )
        for n in range(64)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    led = ledger(git_repo)
    produced, consumed = led.artifact_runs(hexid(0))
    assert len(consumed) == 64 and produced == []
    assert sum(len(ids) for ids in led.history()) == 64
    subprocess.run(["git", "fsck", "--strict", "--no-progress"], cwd=git_repo, check=True)


def test_merge_of_diverged_ledgers_is_the_union(
    ledger: Callable[[Path], Ledger], git_repo: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(git_repo), str(clone))
    shared = ledger(git_repo).append_run(make_run(0, outputs=(hexid(0),)))
    git(clone, "fetch", "-q", str(git_repo), f"{LEDGER_REF}:{LEDGER_REF}")
    mine = [ledger(git_repo).append_run(make_run(n, inputs=(hexid(0),))) for n in (1, 2)]
    theirs = [ledger(clone).append_run(make_run(n, inputs=(hexid(0),))) for n in (3, 4, 1)]
    git(git_repo, "fetch", "-q", str(clone), f"{LEDGER_REF}:refs/roar/remotes/clone/ledger")
    led = ledger(git_repo)
    synced = sync_remotes(led)
    assert [(s.ref, s.remote, s.rejected) for s in synced] == [
        ("refs/roar/remotes/clone/ledger", "clone", ())
    ]
    assert sorted(led.artifact_runs(hexid(0))[1]) == sorted({*mine, *theirs})
    assert led.artifact_runs(hexid(0))[0] == [shared]
    merge = commit_at(led)
    assert len(merge.parents) == 2
    assert sync_remotes(led) == []  # merged already: nothing to do
    subprocess.run(["git", "fsck", "--strict", "--no-progress"], cwd=git_repo, check=True)


def test_merge_fast_forwards_when_ours_is_behind(
    ledger: Callable[[Path], Ledger], git_repo: Path, tmp_path: Path
) -> None:
    led = ledger(git_repo)
    led.append_run(make_run(1))
    base = led.tip()
    led.append_run(make_run(2))
    ahead = led.tip()
    assert ahead is not None
    git(git_repo, "update-ref", LEDGER_REF, str(base))
    merged = merge(led, ahead)
    assert merged is not None and merged.tip == ahead and merged.rejected == []


def test_tampered_record_is_refused_by_name(
    ledger: Callable[[Path], Ledger], git_repo: Path
) -> None:
    led = ledger(git_repo)
    rid = led.append_run(make_run(1))
    led.commit([Entry(("runs", rid[:2], rid[2:4], rid), b"\x93not a record")], "tamper")
    with pytest.raises(RecordCorrupt, match=f"run {rid[:12]}"):
        led.run(rid)


def test_ledger_commit_has_roar_identity_without_user_config(
    ledger: Callable[[Path], Ledger], git_repo: Path
) -> None:
    led = ledger(git_repo)
    led.append_run(make_run(1))
    commit = commit_at(led)
    assert isinstance(commit, pygit2.Commit)
    assert commit.author.name == "roar"


def test_import_records_in_bulk_is_the_same_ledger_as_appending(
    ledger: Callable[[Path], Ledger], git_repo: Path, tmp_path: Path
) -> None:
    runs = [make_run(n, inputs=(hexid(n),), outputs=(hexid(n + 1),)) for n in range(30)]
    imported = ledger(git_repo)
    imported.import_records(runs, per_commit=7)
    assert sum(len(ids) for ids in imported.history()) == 30
    assert len(list(imported.history())) == 5  # 7 + 7 + 7 + 7 + 2
    other = tmp_path / "other"
    git(tmp_path, "init", "-q", str(other))
    appended = ledger(other)
    for run in runs:
        appended.append_run(run)
    tree = "refs/roar/ledger^{tree}"
    assert git(git_repo, "rev-parse", tree) == git(other, "rev-parse", tree)
    assert git(git_repo, "for-each-ref", "refs/roar/tmp/") == ""


def test_in_process_swap_refuses_a_moved_ref_and_a_held_lock(git_repo: Path) -> None:
    led = Ledger(find_repo(git_repo))
    led.append_run(make_run(1))
    first = str(led.tip())
    led.append_run(make_run(2))
    second = str(led.tip())
    git(git_repo, "update-ref", LEDGER_REF, first)
    assert not led.swap(second, first, "stale")  # the ref no longer names `second`
    lock = git_repo / ".git" / "refs" / "roar" / "ledger.lock"
    lock.write_text("")
    try:
        assert not led.swap(first, second, "locked")
    finally:
        lock.unlink()
    assert led.swap(first, second, "free")
    assert led.tip() == second


def test_small_packs_are_rolled_up_and_nothing_is_lost(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitobjects, "ROLL_UP_AT", 4)
    led = Ledger(find_repo(git_repo))
    ids = [led.append_run(make_run(n, inputs=(hexid(0),), outputs=(hexid(n),))) for n in range(11)]
    pack_dir = git_repo / ".git" / "objects" / "pack"
    assert len(list(pack_dir.glob("pack-*.idx"))) < 4 + 1
    assert not (git_repo / ".git" / "roar" / "pack.lock").exists()
    fresh = Ledger(find_repo(git_repo))
    assert sorted(fresh.artifact_runs(hexid(0))[1]) == sorted(ids)
    assert [fresh.run(i).argv for i in ids] == [make_run(n).argv for n in range(11)]
    subprocess.run(["git", "fsck", "--strict", "--no-progress"], cwd=git_repo, check=True)


def test_append_replaces_an_entry_of_the_other_kind_by_name(git_repo: Path) -> None:
    """A blob where a tree is added (or the reverse) is replaced, as git's tree builder does:
    a tree never holds one name twice."""
    led = Ledger(find_repo(git_repo))
    led.commit([Entry(("x", "a"), b"blob")], "blob")
    led.commit([Entry(("x", "a", "b"), b"inner")], "tree")
    assert git(git_repo, "ls-tree", f"{LEDGER_REF}:x").count("\ta") == 1
    led.commit([Entry(("x", "a"), b"blob again")], "blob")
    assert git(git_repo, "cat-file", "-p", f"{LEDGER_REF}:x/a") == "blob again"
    subprocess.run(["git", "fsck", "--strict", "--no-progress"], cwd=git_repo, check=True)


def test_read_many_pipelines_in_order_with_missing_and_big_objects(git_repo: Path) -> None:
    # Enough names for several batches, a missing one in the middle, and a blob bigger than a
    # pipe holds (cat-file blocks writing it until it is read: the batching must not deadlock).
    blobs = [b"small %d\n" % i for i in range(300)]
    blobs.insert(150, b"x" * (1 << 20))
    oids = [
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=git_repo, input=b, capture_output=True
        )
        .stdout.decode()
        .strip()
        for b in blobs
    ]
    names = [*oids[:100], "0" * 40, *oids[100:]]
    reader = gitobjects.ObjectReader(find_repo(git_repo).git_dir)
    try:
        got = reader.read_many(names)
        assert got[100] is None
        assert [o.data for o in got if o is not None] == blobs
        assert reader.read(oids[0]) is not None  # the stream is still in step
    finally:
        reader.close()


@pytest.mark.parametrize("fast_start", [True, False], ids=["cat-file", "pygit2"])
def test_runs_and_session_runs_read_together(git_repo: Path, fast_start: bool) -> None:
    paths = find_repo(git_repo)
    led = Ledger(paths, fast_start=fast_start)
    ids = [led.append_run(make_run(n, outputs=(hexid(n),), step=n)) for n in range(40)]
    fresh = Ledger(paths, fast_start=fast_start)
    assert sorted(fresh.session_runs("5" * 64)) == sorted(ids)
    assert [r.step for r in fresh.runs(ids)] == list(range(40))
    with pytest.raises(KeyError):
        fresh.runs([*ids[:3], hexid(999)])
