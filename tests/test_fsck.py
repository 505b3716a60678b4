"""`roar fsck`: the ledger, the blob stores and the quarantine, checked and repaired; and a
victim whose fetched ledger was crafted goes on working, with one warning.

The installed `roar` on real repositories, real runs, a real bare remote and `git fetch`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from blake3 import blake3
from cli_helpers import git, roar
from hostile import fan, pack, plant, push_ledger, rid, run_entries, run_map

from roargit.blobstore import BlobStore
from roargit.ledger import LEDGER_REF, Entry, Ledger
from roargit.repo import find_repo

PY = os.path.basename(sys.executable)
STEP = "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read() * 2)\n"


def fsck_json(cwd: Path, *more: str, rc: int = 0) -> Any:
    return json.loads(roar(cwd, "fsck", "--json", *more, rc=rc).stdout)


def local_blob(repo: Path, digest: str) -> Path:
    return repo / ".git" / "roar" / "blobs" / "blake3" / digest[:2] / digest[2:4] / digest


def damage(path: Path, data: bytes | None = None) -> None:
    """Flip one bit (same size), or write `data`: blobs are stored read-only."""
    os.chmod(path, 0o644)
    body = bytearray(path.read_bytes())
    if data is None:
        body[0] ^= 1
    path.write_bytes(bytes(body) if data is None else data)


@pytest.fixture
def pipeline(git_repo: Path) -> Path:
    (git_repo / "step.py").write_text(STEP)
    (git_repo / "in.txt").write_text("hello\n")
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "pipeline")
    roar(git_repo, "run", "-q", PY, "step.py", "in.txt", "out.txt")
    return git_repo


def out_digest(repo: Path) -> str:
    return blake3((repo / "out.txt").read_bytes()).hexdigest()


def test_a_clean_repository_passes(pipeline: Path) -> None:
    report = fsck_json(pipeline)
    assert report["clean"] is True and report["problems"] == [] and report["repaired"] == []
    assert report["checked"]["records"] == 2  # the session and the run
    assert report["checked"]["blobs"] >= 1
    assert roar(pipeline, "fsck").stdout.startswith("no problems: ")


def test_a_corrupt_blob_is_listed_and_stored_again_from_the_work_tree(pipeline: Path) -> None:
    digest = out_digest(pipeline)
    damage(local_blob(pipeline, digest))
    listed = roar(pipeline, "fsck", rc=1).stdout.splitlines()
    assert listed[0].startswith(f"blob file://{pipeline}/.git/roar/blobs {digest[:16]}: ")
    assert "--repair" in listed[-1]
    repaired = fsck_json(pipeline, "--repair")
    assert repaired["clean"] is True
    [fix] = repaired["repaired"]
    assert fix["kind"] == "blob" and fix["id"] == digest
    assert fix["action"] == f"removed and stored again from {pipeline / 'out.txt'}"
    assert local_blob(pipeline, digest).read_bytes() == (pipeline / "out.txt").read_bytes()


def test_a_corrupt_blob_is_stored_again_from_another_store(pipeline: Path, tmp_path: Path) -> None:
    digest = out_digest(pipeline)
    team = BlobStore(f"file://{tmp_path / 'team'}")
    team.put_file(pipeline / "out.txt")
    git(pipeline, "config", "roar.store.url", team.url)
    (pipeline / "out.txt").write_text("changed since\n")
    damage(local_blob(pipeline, digest))
    [fix] = fsck_json(pipeline, "--repair")["repaired"]
    assert fix["action"] == f"removed and stored again from {team.url}"
    assert BlobStore(f"file://{pipeline}/.git/roar/blobs").verify(digest)


def test_a_corrupt_blob_without_a_copy_is_removed_and_a_later_put_stores_it(
    pipeline: Path,
) -> None:
    digest = out_digest(pipeline)
    good = (pipeline / "out.txt").read_bytes()
    (pipeline / "out.txt").unlink()
    damage(local_blob(pipeline, digest))
    [fix] = fsck_json(pipeline, "--repair")["repaired"]
    assert fix["action"] == "removed (no intact copy found)"
    store = BlobStore(f"file://{pipeline}/.git/roar/blobs")
    assert not store.has(digest)
    store.put_bytes(good)
    assert store.verify(digest)


def test_a_put_replaces_a_stored_blob_of_the_wrong_size(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "store"))
    data = b"the right bytes\n"
    digest = store.put_bytes(data)
    damage(tmp_path / "store" / "blake3" / fan(digest) / digest, data[:5])  # truncated
    assert not store.verify(digest)
    assert store.put_bytes(data) == digest
    assert store.get_bytes(digest) == data
    damage(tmp_path / "store" / "blake3" / fan(digest) / digest, b"")
    source = tmp_path / "file"
    source.write_bytes(data)
    store.put_file(source, digest)
    assert store.get_bytes(digest) == data


def test_a_bad_local_entry_is_listed_and_kept(pipeline: Path) -> None:
    junk = "ab" * 32
    led = Ledger(find_repo(pipeline))
    led.commit([Entry(("runs", "ab", "ab", junk), b"\x93junk")], "damage")
    led.commit([Entry(("evil\x1b[2K",), b"x")], "escape")
    proc = roar(pipeline, "fsck", "--repair", rc=1)
    assert f"entry runs/ab/ab/{junk}" in proc.stdout
    assert "\x1b" not in proc.stdout and "evil\\x1b[2K" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("2 problem(s)")
    kinds = [p["kind"] for p in fsck_json(pipeline, rc=1)["problems"]]
    assert kinds == ["entry", "entry"]


def test_missing_code_states_and_manifests_are_listed(git_repo: Path) -> None:
    record = run_map(
        ["python", "x.py"],
        outputs=[{"path": "data/", "hash": "cd" * 32, "size": 1, "kind": "dir"}],
        session="5e" * 32,
        commit="de" * 20,
    )
    record["code"]["tree"] = "ad" * 20
    data = pack(record)
    led = Ledger(find_repo(git_repo))
    led.commit([Entry(tuple(p.split("/")), d) for p, d in run_entries(data, record).items()], "x")
    problems = fsck_json(git_repo, rc=1)["problems"]
    run = f"run {rid(data)[:12]}"
    assert [(p["kind"], p["where"], p["id"]) for p in problems] == [
        ("code", run, "ad" * 20),
        ("code", run, "de" * 20),
        ("manifest", run, "cd" * 32),
    ]


# -- a victim of crafted lineage -----------------------------------------------------------


class Box(NamedTuple):
    victim: Path
    attacker: Path
    own: list[str]  # the victim's runs: the first was pushed, the second not


@pytest.fixture
def box(pipeline: Path, bare_remote: Path, tmp_path: Path) -> Box:
    victim = pipeline
    git(victim, "remote", "add", "origin", str(bare_remote))
    git(victim, "push", "-q", "origin", "main")
    roar(victim, "init")  # the ledger's fetch refspec for origin
    git(victim, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")
    (victim / "in.txt").write_text("hello again\n")
    roar(victim, "run", "-q", PY, "step.py", "in.txt", "out.txt")
    own = [e["id"] for e in json.loads(roar(victim, "log", "--json").stdout)]
    attacker = tmp_path / "attacker"
    git(tmp_path, "clone", "-q", str(bare_remote), str(attacker))
    git(attacker, "fetch", "-q", "origin", f"+{LEDGER_REF}:{LEDGER_REF}")
    return Box(victim, attacker, own)


def garbage_at_shared_run(box: Box) -> int:
    pushed = box.own[-1]
    path = f"runs/{fan(pushed)}/{pushed}"
    genuine = git(box.attacker, "rev-parse", f"{LEDGER_REF}:{path}")
    n = 0
    while hashlib.sha1(b"blob %d\0junk%d" % (len(b"junk%d" % n), n)).hexdigest() > genuine:
        n += 1
    plant(box.attacker, {path: b"junk%d" % n})
    return 1


def runs_replaced_by_a_blob(box: Box) -> int:
    plant(box.attacker, {"runs": b"nothing"}, drop=("runs",))
    return 1


def descendant_drops_runs(box: Box) -> int:
    plant(box.attacker, drop=("runs", "sessions", "artifacts"))
    return 0


def history_rewrite(box: Box) -> int:
    tip = git(box.attacker, "rev-parse", LEDGER_REF)
    message = git(box.attacker, "log", "-1", "--format=%B", tip)
    rewritten = git(box.attacker, "commit-tree", f"{tip}^{{tree}}", "-m", message)
    git(box.attacker, "update-ref", LEDGER_REF, rewritten)
    return 0


def _planted(box: Box, record: dict[str, Any], mangle: Callable[[bytes], bytes]) -> None:
    data = pack(record)
    entries = run_entries(data, record)
    plant(box.attacker, {p: mangle(d) for p, d in entries.items()}, message=f"run {rid(data)}")


def id_mismatch(box: Box) -> int:
    _planted(box, run_map(["python", "x.py"], session="5e" * 32), lambda d: d + b"\x00")
    return 2  # the run and its session entry


def truncated_msgpack(box: Box) -> int:
    record = run_map(["python", "x.py"], session="5e" * 32, outputs=[_out("ab" * 32)])
    _planted(box, record, lambda d: d[:-7])
    return 3  # the run, its session entry, its artifact entry


def mistyped_field(box: Box) -> int:
    record = run_map(["python", "x.py"], session="5e" * 32, outputs=[_out("cd" * 32)])
    record["exit_code"] = "zero"
    _planted(box, record, lambda d: d)
    return 3


def _out(digest: str) -> dict[str, Any]:
    return {"path": "m.txt", "hash": digest, "size": 3}


VARIANTS = [
    garbage_at_shared_run,
    runs_replaced_by_a_blob,
    descendant_drops_runs,
    history_rewrite,
    id_mismatch,
    truncated_msgpack,
    mistyped_field,
]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.__name__)
def test_the_victim_keeps_its_runs_and_fsck_lists_and_clears_the_quarantine(
    box: Box, variant: Callable[[Box], int]
) -> None:
    bad = variant(box)
    push_ledger(box.attacker)
    git(box.victim, "fetch", "-q", "origin")

    first = roar(box.victim, "log", "--json")  # the command that merges
    warning = f"roar: skipped {bad} bad entr{'y' if bad == 1 else 'ies'} from origin"
    assert first.stderr == (f"{warning} (roar fsck lists them)\n" if bad else "")
    listed = [e["id"] for e in json.loads(first.stdout)]
    assert sorted(listed) == sorted(box.own)  # each once, none lost
    for args in (("log",), ("dag",), ("status",), ("show", box.own[0][:12]), ("show", "out.txt")):
        assert roar(box.victim, *args).stderr == ""
    roar(box.victim, "run", "-q", PY, "step.py", "in.txt", "out.txt")
    steps = json.loads(roar(box.victim, "dag", "--json").stdout)["steps"]
    assert [s["step"] for s in steps] == ["@1"]  # the re-run kept its number

    report = fsck_json(box.victim, rc=1 if bad else 0)
    assert len(report["problems"]) == bad
    assert all(p["kind"] == "quarantine" for p in report["problems"])
    assert all(p["reason"].startswith("from origin: ") for p in report["problems"])
    if bad:
        assert len(fsck_json(box.victim, "--repair")["repaired"]) == bad
        assert fsck_json(box.victim)["clean"] is True


def test_a_bad_record_asked_for_directly_is_a_one_line_error(pipeline: Path) -> None:
    run_id = json.loads(roar(pipeline, "log", "--json").stdout)[0]["id"]
    Ledger(find_repo(pipeline)).commit(
        [Entry(("runs", run_id[:2], run_id[2:4], run_id), b"\x93junk")], "damage"
    )
    shown = roar(pipeline, "show", run_id[:12], rc=1)
    assert shown.stdout == ""
    assert shown.stderr.startswith(f"roar: record run {run_id[:12]} is corrupt")
    assert len(shown.stderr.splitlines()) == 1
    logged = roar(pipeline, "log")
    assert logged.stdout == ""
    assert logged.stderr == shown.stderr.rstrip("\n") + " (skipped)\n"
    assert roar(pipeline, "dag").stderr == logged.stderr
    roar(pipeline, "run", "-q", PY, "step.py", "in.txt", "out.txt")  # recording goes on


def test_repair_rebuilds_a_lost_origins_map(box: Box) -> None:
    roar(box.attacker, "init")
    (box.attacker / "other.txt").write_text("theirs\n")
    roar(box.attacker, "run", "-q", PY, "step.py", "other.txt", "theirs.txt")
    push_ledger(box.attacker)
    git(box.victim, "fetch", "-q", "origin")
    roar(box.victim, "log")  # merges
    origins = box.victim / ".git" / "roar" / "origins"
    before = dict(line.split() for line in origins.read_text().splitlines())
    assert set(before.values()) == {"origin"} and len(before) == 2  # a session and a run
    assert not set(before) & set(box.own)
    origins.unlink()
    [fix] = fsck_json(box.victim, "--repair")["repaired"]
    assert fix["kind"] == "origins" and fix["action"] == "rebuilt (2)"
    assert dict(line.split() for line in origins.read_text().splitlines()) == before
