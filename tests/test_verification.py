"""Reproductions attest instead of replacing: a reproduction records a verification of the
original run, and the original stays the producer in show, lineage, dag and diff."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_helpers import digest, git, roar, roar_json
from test_reproduce_clone import fresh_clone, publish


def test_bob_reproduces_alices_checkpoint_and_continues(
    git_repo: Path, bare_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Who ran it comes from git's user.name and user.email (the environment's author would
    # win over them).
    monkeypatch.delenv("GIT_AUTHOR_NAME")
    monkeypatch.delenv("GIT_AUTHOR_EMAIL")
    alice = git_repo
    git(alice, "config", "user.name", "Alice")
    git(alice, "config", "user.email", "alice@example.com")
    model = publish(alice, bare_remote, f"file://{tmp_path / 'team-store'}")
    original = roar_json(alice, "show", model[:12])
    assert len(original["produced_by"]) == 1
    producer = original["produced_by"][0]
    alice_runs = {r["id"] for r in roar_json(alice, "lineage", model[:12])["runs"]}

    bob = fresh_clone(bare_remote, tmp_path / "bob")
    git(bob, "config", "user.name", "Bob")
    git(bob, "config", "user.email", "bob@example.com")
    for _ in range(2):
        rep = roar_json(bob, "reproduce", model[:12], "--run", "-y", "--no-reuse")
        assert rep["identical"], rep
        assert all(s["verification"] for s in rep["steps"])

    # Bob's reproductions are no producers: Alice's run is, with two verifications.
    shown = roar_json(bob, "show", model[:12])
    assert shown["produced_by"] == [producer]
    run = roar_json(bob, "show", producer[:12])
    assert [v["result"] for v in run["verifications"]] == ["identical", "identical"]
    last = run["verifications"][-1]
    assert last["run"] == producer and last["by"]["name"] == "Bob"
    assert last["by"]["email"] == "bob@example.com" and last["by"]["host"]
    assert {o["status"] for o in last["outputs"]} == {"identical"}
    assert last["reproduction"] and last["reproduction"] not in shown["produced_by"]
    text = roar(bob, "show", model[:12]).stdout
    assert text.count("produced by") == 1
    assert "reproduced identical ×2, last by Bob <bob@example.com>" in text
    assert "Alice <alice@example.com>" in text  # who recorded the original
    dag = roar_json(bob, "dag", model[:12])
    assert {s["run"] for s in dag["steps"]} == alice_runs
    assert all(s["verified"] == {"identical": 2, "differs": 0, "failed": 0} for s in dag["steps"])
    assert "reproduced identical ×2" in roar(bob, "dag", model[:12]).stdout
    # diff compares Alice's runs, and says they were verified.
    same = roar(bob, "diff", model[:12], model[:12], "--json", rc=None)
    assert json.loads(same.stdout)["b"]["verifications"][-1]["by"]["name"] == "Bob"

    # Bob continues from the checkpoint: his result's lineage reaches Alice's runs and data.
    roar(bob, "reproduce", model[:12], "--run", "-y", "-o", "checkpoint.pt")
    roar(
        bob, "run", "-q", "python", "continue.py",
        "--from-checkpoint", "checkpoint.pt", "--output", "continued.pt",
    )  # fmt: skip
    lin = roar_json(bob, "lineage", "continued.pt")
    assert alice_runs <= {r["id"] for r in lin["runs"]}
    assert digest(alice / "raw.csv") in {s["hash"] for s in lin["sources"]}
    checkpoint = next(k for k in lin["links"] if k["path"] == "checkpoint.pt")
    assert checkpoint["producer"] == producer and checkpoint["by_bytes"]

    # The verifications travel with the ledger, and pass the checks of a merge and of fsck.
    git(bob, "push", "-q", "origin", "refs/roar/ledger:refs/roar/ledger")
    git(alice, "fetch", "-q", "origin")
    assert len(roar_json(alice, "show", producer[:12])["verifications"]) >= 2
    assert roar_json(alice, "show", model[:12])["produced_by"] == [producer]
    fsck = roar(alice, "fsck", "--json", rc=None)
    assert json.loads(fsck.stdout)["clean"], fsck.stdout


def test_identity_is_withheld_as_the_share_settings_say(git_repo: Path) -> None:
    (git_repo / "make.py").write_text("open('out.txt', 'w').write('x')\n")
    git(git_repo, "add", "make.py")
    git(git_repo, "commit", "-q", "-m", "make")
    git(git_repo, "config", "user.name", "Carol")
    git(git_repo, "config", "user.email", "carol@example.com")
    git(git_repo, "config", "roar.share.user", "false")
    git(git_repo, "config", "roar.share.hostname", "false")
    roar(git_repo, "run", "-q", "python", "make.py")
    out = digest(git_repo / "out.txt")
    rep = roar_json(git_repo, "reproduce", out[:12], "--run", "-y")
    assert rep["identical"]
    producer = roar_json(git_repo, "show", out[:12])["produced_by"][0]
    (v,) = roar_json(git_repo, "show", producer[:12])["verifications"]
    assert v["by"] == {"name": "", "email": "", "host": ""}
    everything = subprocess.run(
        ["git", "log", "-p", "--text", "refs/roar/ledger"], cwd=git_repo, capture_output=True
    ).stdout
    assert b"Carol" not in everything and b"carol@example.com" not in everything


def test_reproducing_the_output_of_a_failed_run_is_no_success(git_repo: Path) -> None:
    (git_repo / "half.py").write_text(
        "import sys\nopen('partial.txt', 'w').write('half done')\nsys.exit(3)\n"
    )
    git(git_repo, "add", "half.py")
    git(git_repo, "commit", "-q", "-m", "half")
    roar(git_repo, "run", "-q", "python", "half.py", rc=None)
    partial = digest(git_repo / "partial.txt")
    plan = roar_json(git_repo, "reproduce", partial[:12])
    assert any("failed (exit 3)" in w for w in plan["warnings"])
    proc = roar(git_repo, "reproduce", partial[:12], "--run", "-y", "--json", rc=None)
    assert proc.returncode == 1
    rep = json.loads(proc.stdout)
    assert rep["target"]["status"] == "failed" and not rep["identical"]
    text = roar(git_repo, "reproduce", partial[:12], "--run", "-y", rc=None).stdout
    assert f"target {partial[:16]}: FAILED" in text
    producer = roar_json(git_repo, "show", partial[:12])["produced_by"][0]
    results = [v["result"] for v in roar_json(git_repo, "show", producer[:12])["verifications"]]
    assert results == ["failed", "failed"]


def test_identical_producers_are_grouped(git_repo: Path) -> None:
    (git_repo / "make.py").write_text("open('out.txt', 'w').write('same')\n")
    git(git_repo, "add", "make.py")
    git(git_repo, "commit", "-q", "-m", "make")
    for _ in range(3):
        roar(git_repo, "run", "-q", "python", "make.py")
    shown = roar_json(git_repo, "show", "out.txt")
    assert len(shown["produced_by"]) == 3
    lines = [
        ln for ln in roar(git_repo, "show", "out.txt").stdout.splitlines() if "produced by" in ln
    ]
    assert len(lines) == 1 and "(and 2 earlier identical)" in lines[0], lines
    assert shown["produced_by"][-1][:12] in lines[0]


def test_a_fetched_verification_must_verify_the_run_it_is_filed_under(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    """Another clone's verifications are untrusted: one filed under a run it does not verify,
    or whose bytes do not decode, is quarantined by the merge; a right one is taken."""
    from roargit import records
    from roargit.ledger import LEDGER_REF, Entry, Ledger
    from roargit.ledger_layout import fanout
    from roargit.records import ArtifactId, CodeState, Identity, RunId, VerifiedOutput
    from roargit.repo import find_repo

    (git_repo / "make.py").write_text("open('out.txt', 'w').write('x')\n")
    git(git_repo, "add", "make.py")
    git(git_repo, "commit", "-q", "-m", "make")
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    roar(git_repo, "init")
    made = json.loads(roar(git_repo, "run", "--json", "python", "make.py").stdout)
    other = json.loads(roar(git_repo, "run", "--json", "python", "make.py").stdout)
    git(git_repo, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")

    mallory = tmp_path / "mallory"
    git(tmp_path, "clone", "-q", str(bare_remote), str(mallory))
    git(mallory, "fetch", "-q", "origin", f"+{LEDGER_REF}:{LEDGER_REF}")
    out = made["outputs"][0]

    def verification(run: str, who: str) -> records.VerificationRecord:
        return records.VerificationRecord(
            run=RunId(run),
            result="identical",
            outputs=(
                VerifiedOutput(out["path"], out["hash"], ArtifactId(out["hash"]), "identical"),
            ),
            exit_code=0,
            started_at=1,
            ended_at=2,
            by=Identity(who, f"{who}@example.com", "box"),
            clone="mallory",
            code=CodeState(None, None, False, None),
        )

    good_id, good = records.identify(verification(made["id"], "honest"))
    liar_id, liar = records.identify(verification(other["id"], "liar"))
    junk = b"\x93not a record"
    junk_id = records.codec.record_id(junk)
    led = Ledger(find_repo(mallory))
    led.commit(
        [
            Entry(("verifications", *fanout(made["id"]), made["id"], good_id), good),
            # Says it verifies `other`, filed under `made`.
            Entry(("verifications", *fanout(made["id"]), made["id"], liar_id), liar),
            Entry(("verifications", *fanout(made["id"]), made["id"], junk_id), junk),
        ],
        "crafted",
    )
    git(mallory, "push", "-q", "origin", f"{LEDGER_REF}:{LEDGER_REF}")
    git(git_repo, "fetch", "-q", "origin")
    shown = roar(git_repo, "show", made["id"][:12], "--json")
    assert "skipped 2 bad entries from origin" in shown.stderr
    found = json.loads(shown.stdout)["verifications"]
    assert [v["by"]["name"] for v in found] == ["honest"]
    fsck = json.loads(roar(git_repo, "fsck", "--json", rc=None).stdout)
    reasons = [p["reason"] for p in fsck["problems"] if p["kind"] == "quarantine"]
    assert len(reasons) == 2 and any("does not verify run" in r for r in reasons), reasons
