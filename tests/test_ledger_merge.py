"""Merging a fetched ledger: a union that never loses a local record and takes from the other
side only entries of the right shape, id and schema; the rest is quarantined.

An attacker clone crafts ledger commits with git plumbing (tests/hostile.py) and pushes them to
a real bare remote; the victim fetches them with `git fetch` and merges.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import NamedTuple

import pygit2
import pytest
from cli_helpers import git
from hostile import fan, pack, plant, push_ledger, rid, run_entries, run_map
from ledger_helpers import commit_at, hexid, make_run

from roargit import ledger_check, session
from roargit.errors import RecordCorrupt
from roargit.ledger import LEDGER_REF, Entry, Ledger
from roargit.ledger_merge import sync_remotes
from roargit.records import RunId, SessionId
from roargit.repo import find_repo
from roargit.views import Context

REMOTE_REF = "refs/roar/remotes/origin/ledger"
SESSION = "5e" * 32
THEIRS = "a7" * 32


class Pair(NamedTuple):
    victim: Path
    attacker: Path
    shared: RunId  # pushed before the attacker cloned
    own: RunId  # the victim's, never pushed


@pytest.fixture
def pair(git_repo: Path, bare_remote: Path, tmp_path: Path) -> Pair:
    victim = git_repo
    git(victim, "remote", "add", "origin", str(bare_remote))
    led = Ledger(find_repo(victim))
    shared = led.append_run(make_run(1, outputs=(hexid(1),), session=SESSION))
    git(victim, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")
    own = led.append_run(make_run(2, inputs=(hexid(1),), outputs=(hexid(2),), session=SESSION))
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", str(bare_remote), str(attacker))
    git(attacker, "fetch", "-q", "origin", f"+{LEDGER_REF}:{LEDGER_REF}")
    return Pair(victim, attacker, shared, own)


def fetch(victim: Path) -> None:
    git(victim, "fetch", "-q", "origin", f"+{LEDGER_REF}:{REMOTE_REF}")


def attack(pair: Pair) -> Ledger:
    """Push the attacker's ledger, fetch it into the victim, merge; the victim's ledger."""
    push_ledger(pair.attacker)
    fetch(pair.victim)
    led = Ledger(find_repo(pair.victim))
    sync_remotes(led)
    return Ledger(find_repo(pair.victim))  # a fresh reader: what the next command sees


def own_runs_intact(pair: Pair, led: Ledger) -> None:
    for run_id in (pair.shared, pair.own):
        assert led.run(run_id).session == SESSION
    assert sorted(led.session_runs(SESSION)) == sorted([pair.shared, pair.own])
    assert led.artifact_runs(hexid(1)) == ([pair.shared], [pair.own])


def held(victim: Path) -> list[ledger_check.Quarantined]:
    return list(ledger_check.quarantined(find_repo(victim).roar_dir))


def record(argv: list[str], **more: object) -> tuple[str, bytes, dict]:
    m = run_map(argv, session=THEIRS, **more)  # type: ignore[arg-type]
    data = pack(m)
    return rid(data), data, m


def test_garbage_with_a_lower_object_id_never_replaces_a_local_record(pair: Pair) -> None:
    path = f"runs/{fan(pair.shared)}/{pair.shared}"
    genuine = git(pair.attacker, "rev-parse", f"{LEDGER_REF}:{path}")
    n = 0
    while hashlib.sha1(b"blob %d\0garbage %d" % (len(b"garbage %d" % n), n)).hexdigest() > genuine:
        n += 1
    plant(pair.attacker, {path: b"garbage %d" % n})
    led = attack(pair)
    own_runs_intact(pair, led)
    [q] = held(pair.victim)
    assert (q.remote, q.path) == ("origin", path)
    assert "does not match its id" in q.reason
    merge = commit_at(led)
    assert len(merge.parents) == 2  # both histories, one tree: ours plus what was right


def test_runs_replaced_by_a_blob_wipes_nothing(pair: Pair) -> None:
    plant(pair.attacker, {"runs": b"nothing here"}, drop=("runs",))
    led = attack(pair)
    own_runs_intact(pair, led)
    assert [(q.path, q.reason) for q in held(pair.victim)] == [
        ("runs", "a blob where a tree belongs")
    ]


def test_a_descendant_that_drops_records_is_merged_not_fast_forwarded(pair: Pair) -> None:
    plant(pair.attacker, drop=("runs", "sessions", "artifacts"))
    theirs = git(pair.attacker, "rev-parse", LEDGER_REF)
    led = attack(pair)
    own_runs_intact(pair, led)
    assert led.tip() != theirs
    assert theirs in [str(p) for p in commit_at(led).parent_ids]
    assert held(pair.victim) == []


def test_an_honest_descendant_is_fast_forwarded_and_its_records_have_an_origin(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    mine = Ledger(find_repo(git_repo)).append_run(make_run(1, outputs=(hexid(1),)))
    git(git_repo, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare_remote), str(other))
    git(other, "fetch", "-q", "origin", f"+{LEDGER_REF}:{LEDGER_REF}")
    theirs = Ledger(find_repo(other)).append_run(make_run(2, inputs=(hexid(1),)))
    git(other, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")
    fetch(git_repo)
    led = Ledger(find_repo(git_repo), fast_start=True)
    [synced] = sync_remotes(led)
    assert synced.tip == git(other, "rev-parse", LEDGER_REF)  # a fast-forward
    assert led.run(theirs).inputs[0].hash == hexid(1)
    assert led.origin(theirs) == "origin"
    assert led.origin(mine) is None
    assert Ledger(find_repo(git_repo)).origin(theirs) == "origin"  # kept on disk
    assert sync_remotes(led) == []  # merged already: nothing to do


@pytest.mark.parametrize(
    "damage",
    [
        "id mismatch",
        "truncated",
        "mistyped",
        "index lies",
        "unfiled",
        "wrong session",
        "not a record",
    ],
)
def test_bad_records_are_quarantined_and_the_good_ones_taken(pair: Pair, damage: str) -> None:
    good_id, good, good_map = record(["python", "good.py"], outputs=[_out("ee" * 32)])
    bad_id, bad, bad_map = record(["python", "bad.py"], outputs=[_out("ff" * 32)])
    entries = dict(run_entries(bad, bad_map, bad_id))
    if damage == "id mismatch":
        wrong = hexid(77)
        entries = run_entries(bad, bad_map, wrong)
    elif damage == "truncated":
        entries = {k: v[:-5] for k, v in entries.items()}
    elif damage == "mistyped":
        broken = {**bad_map, "step": "one"}
        data = pack(broken)
        entries = run_entries(data, broken)
    elif damage == "index lies":  # a genuine run filed as the producer of bytes it never made
        lie = f"artifacts/{fan(hexid(2))}/{hexid(2)}/p.{bad_id}"
        entries = {f"runs/{fan(bad_id)}/{bad_id}": bad, lie: bad}
    elif damage == "unfiled":  # an index entry for a run that is not under runs/
        entries = {f"artifacts/{fan('ff' * 32)}/{'ff' * 32}/p.{bad_id}": bad}
    elif damage == "wrong session":
        other = "ab" * 32
        entries = {
            f"runs/{fan(bad_id)}/{bad_id}": bad,
            f"sessions/{other[:2]}/{other}/{bad_id[:2]}/{bad_id}": bad,
        }
    else:
        entries = {f"runs/{fan(bad_id)}/{bad_id}": pack({"type": "session", "clone": 1})}
    plant(pair.attacker, {**run_entries(good, good_map), **entries})
    led = attack(pair)
    own_runs_intact(pair, led)
    assert led.run(good_id).argv == ("python", "good.py")
    assert led.origin(good_id) == "origin"
    quarantined = held(pair.victim)
    assert quarantined, damage
    assert {q.path for q in quarantined} <= set(entries)
    if damage == "index lies":
        assert led.artifact_runs(hexid(2)) == ([pair.own], [])
        assert [q.reason for q in quarantined] == [
            f"run {bad_id[:12]} does not produce artifact {hexid(2)[:12]}"
        ]
    if damage == "wrong session":
        assert [q.reason for q in quarantined] == [
            f"run {bad_id[:12]} is not a run of session {'ab' * 6}"
        ]
    if damage == "unfiled":
        assert "is not filed under runs/" in quarantined[0].reason


def _out(digest: str) -> dict[str, object]:
    return {"path": "m.txt", "hash": digest, "size": 3}


def test_misshapen_entries_are_quarantined(pair: Pair) -> None:
    run_id = hexid(5)
    plant(
        pair.attacker,
        {
            "evil/x": b"not a ledger entry",
            f"runs/{fan(run_id)}/{run_id}/nested": b"a tree where a record belongs",
            f"runs/zz/{run_id}": b"not a fan-out bucket",
            "code/" + "ab" * 20: b"a blob where a code tree belongs",
        },
    )
    # A code tree filed under a name that is not its id (the index cannot hold a tree entry).
    repo = pygit2.Repository(str(pair.attacker))
    tip = repo.references[LEDGER_REF].peel(pygit2.Commit)
    code_tree = tip.tree["code"]
    assert isinstance(code_tree, pygit2.Tree)
    code = repo.TreeBuilder(code_tree)
    code.insert("cd" * 20, tip.tree.id, pygit2.GIT_FILEMODE_TREE)
    root = repo.TreeBuilder(tip.tree)
    root.insert("code", code.write(), pygit2.GIT_FILEMODE_TREE)
    who = pygit2.Signature("attacker", "a@example.com")
    repo.create_commit(LEDGER_REF, who, who, "x", root.write(), [tip.id])
    led = attack(pair)
    own_runs_intact(pair, led)
    reasons = {q.path: q.reason for q in held(pair.victim)}
    assert reasons == {
        "evil": "not a ledger entry",
        f"runs/{fan(run_id)}/{run_id}": "a tree where a record belongs",
        "runs/zz": "not a ledger entry",
        "code/" + "ab" * 20: "a blob where a code tree belongs",
        "code/" + "cd" * 20: "the tree's id is not its name",
    }
    assert git(pair.victim, "ls-tree", "--name-only", LEDGER_REF).split() == [
        "artifacts",
        "inputsets",
        "runs",
        "sessions",
    ]


def test_entries_identical_on_both_sides_are_not_read_again(pair: Pair) -> None:
    """A subtree with the same id on both sides is skipped whole: local damage that the other
    side shares is fsck's business, not a merge's (and a merge stays fast on a big ledger)."""
    junk = hexid(9)
    where = ("runs", junk[:2], junk[2:4], junk)
    Ledger(find_repo(pair.victim)).commit([Entry(where, b"local junk")], "junk")
    git(pair.victim, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")
    git(pair.attacker, "fetch", "-q", "origin", f"+{LEDGER_REF}:{LEDGER_REF}")
    record_id, data, m = record(["python", "new.py"])
    plant(pair.attacker, run_entries(data, m))
    led = attack(pair)
    assert held(pair.victim) == []
    assert led.run(record_id).argv == ("python", "new.py")


def test_a_history_rewrite_is_merged_and_logged_once(pair: Pair) -> None:
    tip = git(pair.attacker, "rev-parse", LEDGER_REF)
    tree = git(pair.attacker, "rev-parse", f"{tip}^{{tree}}")
    message = git(pair.attacker, "log", "-1", "--format=%B", tip)
    git(
        pair.attacker,
        "update-ref",
        LEDGER_REF,
        git(pair.attacker, "commit-tree", tree, "-m", message),
    )
    push_ledger(pair.attacker)
    fetch(pair.victim)
    ctx = Context(find_repo(pair.victim))
    assert ctx.warnings == []
    own_runs_intact(pair, ctx.ledger)
    logged = [e["id"] for e in ctx.log(None)]
    assert sorted(logged) == sorted([pair.shared, pair.own])


def test_a_fresh_clone_takes_only_what_is_right(
    pair: Pair, bare_remote: Path, tmp_path: Path
) -> None:
    plant(pair.attacker, {f"runs/{fan(pair.own)}/{pair.own}": b"\x93 claims a run"})
    push_ledger(pair.attacker)
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(bare_remote), str(fresh))
    fetch(fresh)
    led = Ledger(find_repo(fresh))
    [synced] = sync_remotes(led)
    assert [r.path for r in synced.rejected] == [f"runs/{fan(pair.own)}/{pair.own}"]
    assert led.run(pair.shared).session == SESSION
    assert led.find_runs(pair.own[:8]) == []
    assert synced.tip is not None
    assert [str(p) for p in commit_at(led, synced.tip).parent_ids] == [
        git(fresh, "rev-parse", REMOTE_REF)
    ]


def test_the_context_warns_once_per_merge_naming_the_remote(pair: Pair) -> None:
    plant(pair.attacker, {"runs": b"x", "evil": b"y"}, drop=("runs",))
    push_ledger(pair.attacker)
    fetch(pair.victim)
    seen: list[str] = []
    ctx = Context(find_repo(pair.victim), on_warning=seen.append)
    assert seen == ctx.warnings == ["skipped 2 bad entries from origin (roar fsck lists them)"]
    assert Context(find_repo(pair.victim)).warnings == []  # merged already
    quarantine = find_repo(pair.victim).roar_dir / "quarantine" / "origin.json"
    data = json.loads(quarantine.read_text())
    assert data["remote"] == "origin"
    assert {e["path"] for e in data["entries"]} == {"runs", "evil"}
    assert all(set(e) >= {"path", "oid", "reason"} for e in data["entries"])


def test_reads_skip_a_bad_local_record_with_one_warning(pair: Pair) -> None:
    """A record damaged here (or taken before merges were checked) costs one warning; the
    session, the log and the artifact queries go on; asked for directly, it is an error."""
    led = Ledger(find_repo(pair.victim))
    led.commit([Entry(("runs", *fan(pair.shared).split("/"), pair.shared), b"\x93junk")], "x")
    ctx = Context(find_repo(pair.victim))
    assert [e["id"] for e in ctx.log(None)] == [pair.own]
    skipped: list[str] = []
    view = session.load_view(ctx.ledger, SessionId(SESSION), frozenset(), skipped)
    assert [s.run_id for s in view.steps] == [pair.own]
    assert view.steps[0].superseded == (pair.shared,)
    assert skipped == []  # a superseded run's record is not read (the session's index says)
    assert ctx.artifact(hexid(1))["consumed_by"] == [pair.own]
    assert len(ctx.warnings) == 1
    assert ctx.warnings[0].startswith(f"record run {pair.shared[:12]} is corrupt")
    with pytest.raises(RecordCorrupt):
        ctx.run_json(pair.shared)


def test_a_run_named_but_missing_is_an_error_not_a_key_error(pair: Pair) -> None:
    from roargit.ledger import RecordMissing

    ctx = Context(find_repo(pair.victim))
    with pytest.raises(RecordMissing, match="is not in the ledger"):
        ctx.run(hexid(404))
    assert ctx.usable([hexid(404), pair.own]) == [pair.own]
    assert ctx.warnings == [f"record run {hexid(404)[:12]} is not in the ledger (skipped)"]


def test_commit_messages_and_headers_of_a_fetched_ledger_are_not_trusted(pair: Pair) -> None:
    """`roar log` reads the run ids each commit added from its message, and orders commits by
    their committer line: a crafted commit that lies in both lists nothing and breaks nothing."""
    tip = git(pair.attacker, "rev-parse", LEDGER_REF)
    tree = git(pair.attacker, "rev-parse", f"{tip}^{{tree}}")
    text = (
        f"tree {tree}\nparent {tip}\nauthor a <a> 1 +0000\n"
        f"committer nobody\n\nrun\nrun ../../x y\nrun {'ab' * 32}\nrun {pair.shared}\n"
    )
    commit = (
        subprocess.run(
            ["git", "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
            cwd=pair.attacker,
            input=text.encode(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    git(pair.attacker, "update-ref", LEDGER_REF, commit)
    push_ledger(pair.attacker)
    fetch(pair.victim)
    ctx = Context(find_repo(pair.victim))
    assert sorted(e["id"] for e in ctx.log(None)) == sorted([pair.shared, pair.own])
    assert ctx.warnings == []


def test_a_fetched_record_that_fails_later_is_named_with_its_remote(pair: Pair) -> None:
    record_id, data, m = record(["python", "theirs.py"])
    plant(pair.attacker, run_entries(data, m))
    led = attack(pair)
    assert led.origin(record_id) == "origin"
    # Damaged after the merge (a disk error, a hand edit): the message says where it came from.
    led.commit([Entry(("runs", record_id[:2], record_id[2:4], record_id), data[:-3])], "damage")
    ctx = Context(find_repo(pair.victim))
    with pytest.raises(RecordCorrupt, match=f"record run {record_id[:12]} from origin is"):
        ctx.run(record_id)
    assert ctx.usable([record_id, pair.own]) == [pair.own]
    assert ctx.warnings[0].startswith(f"record run {record_id[:12]} from origin is")
