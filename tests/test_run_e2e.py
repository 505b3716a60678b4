"""End to end: the installed `roar` on real processes, in real repositories.

A small pipeline with a fan-in step (prep → feat, and train reading both), a commit midway and
an uncommitted edit to one script; then re-runs, failures, secrets, folders, pop/reset/build,
awkward paths and bad REFs. JSON is compared whole: only the clock (`started_at`,
`duration_s`) and the machine description (`environment`) are checked by shape.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from cli_helpers import git, roar, roar_json
from conftest import build_once, copy_repo

PY = os.path.basename(sys.executable)  # `python` on PATH is this environment's (conftest)

PREP = """import sys
open(sys.argv[2], "w").write(open(sys.argv[1]).read().upper())
"""
FEAT = """import sys
open(sys.argv[2], "w").write(open(sys.argv[1]).read()[::-1])
"""
TRAIN = """import sys
a = open(sys.argv[1]).read()
b = open(sys.argv[2]).read()
lr = sys.argv[sys.argv.index("--lr") + 1]
open(sys.argv[3], "w").write(a + b + lr)
"""


def b3(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


def fref(repo: Path, rel: str) -> dict[str, Any]:
    p = repo / rel
    return {"path": rel, "hash": b3(p), "size": p.stat().st_size}


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")


def settle(run: dict[str, Any]) -> dict[str, Any]:
    """The run with its clock and machine fields checked by shape and blanked."""
    assert ISO.match(run["started_at"]), run["started_at"]
    assert isinstance(run["duration_s"], float | int) and run["duration_s"] >= 0
    env = run["environment"]
    assert {"python", "os", "cpu", "gpus", "hostname", "user", "packages", "env_vars"} <= set(env)
    assert run["recorded_by"] == {
        "name": "Test Author",
        "email": "author@example.com",
        "host": env["hostname"],
    }
    return {**run, "started_at": "T", "duration_s": 0, "environment": {}, "recorded_by": {}}


@dataclass
class Pipeline:
    repo: Path
    session: str
    ids: dict[str, str]  # "@1" → run id
    commits: dict[str, str]  # "@1" → HEAD at the time


def make_pipeline(repo: Path) -> Pipeline:
    (repo / "src").mkdir()
    (repo / "data").mkdir()
    (repo / "src" / "prep.py").write_text(PREP)
    (repo / "src" / "feat.py").write_text(FEAT)
    (repo / "src" / "train.py").write_text(TRAIN)
    git(repo, "add", "src")
    git(repo, "commit", "-q", "-m", "pipeline code")
    (repo / "data" / "raw.csv").write_text("a,b\n1,2\n")
    ids, commits = {}, {}

    first = roar(repo, "run", PY, "src/prep.py", "data/raw.csv", "data/clean.csv")
    ids["@1"] = roar_json(repo, "log", "-n", "1")[0]["id"]
    commits["@1"] = git(repo, "rev-parse", "HEAD")
    # The report goes to stderr, so the command's own stdout stays clean for pipes.
    assert first.stdout == ""
    assert f"@1  run {ids['@1'][:12]}  ok (exit 0)" in first.stderr
    assert f"in   data/raw.csv  {b3(repo / 'data/raw.csv')[:12]}" in first.stderr
    assert f"out  data/clean.csv  {b3(repo / 'data/clean.csv')[:12]}" in first.stderr

    # A commit midway: @2 runs on a newer HEAD than @1.
    (repo / "src" / "feat.py").write_text(FEAT + "# reversed on purpose\n")
    git(repo, "commit", "-q", "-am", "comment feat")
    quiet = roar(repo, "run", "-q", PY, "src/feat.py", "data/clean.csv", "data/feat.csv")
    assert quiet.stdout == quiet.stderr == ""
    ids["@2"] = roar_json(repo, "log", "-n", "1")[0]["id"]
    commits["@2"] = git(repo, "rev-parse", "HEAD")

    # An uncommitted edit: @3 runs on a dirty tree.
    (repo / "src" / "train.py").write_text(TRAIN + "# dirty edit\n")
    rec = roar_json(
        repo, "run", PY, "src/train.py", "data/clean.csv", "data/feat.csv", "model.pkl",
        "--lr", "0.1",
    )  # fmt: skip
    ids["@3"] = rec["id"]
    commits["@3"] = commits["@2"]
    return Pipeline(repo, rec["session"], ids, commits)


def expected_run(
    p: Pipeline, step: str, argv: list[str], ins: list[str], outs: list[str], code: dict[str, Any]
) -> dict[str, Any]:
    return {
        "kind": "run",
        "id": p.ids[step],
        "step": step,
        "session": p.session,
        "type": "run",
        "argv": argv,
        "cwd": ".",
        "status": "ok",
        "exit_code": 0,
        "inputs": [fref(p.repo, i) for i in ins],
        "outputs": [fref(p.repo, o) for o in outs],
        "code": code,
        "started_at": "T",
        "duration_s": 0,
        "capture": "ptrace",
        "complete": True,
        "recorded_by": {},
        "environment": {},
        "verifications": [],
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return build_once(tmp_path_factory, "pipeline", make_pipeline)[1]


@pytest.fixture
def pipeline(recorded: Pipeline, tmp_path: Path) -> Pipeline:
    """A copy of the recorded pipeline: prep, features (tracked), train on a dirty tree."""
    return replace(recorded, repo=copy_repo(recorded.repo, tmp_path / "repo"))


def test_pipeline_show_lineage_dag_json_exactly(pipeline: Pipeline) -> None:
    p = pipeline
    repo = p.repo
    head_tree = git(repo, "rev-parse", f"{p.commits['@1']}^{{tree}}")
    run1 = expected_run(
        p,
        "@1",
        [PY, "src/prep.py", "data/raw.csv", "data/clean.csv"],
        ["data/raw.csv"],
        ["data/clean.csv"],
        {
            "commit": p.commits["@1"],
            "branch": "main",
            "dirty": False,
            "tree": head_tree,
            "inputs": [{"path": "src/prep.py", "blob": git(repo, "hash-object", "src/prep.py")}],
        },
    )
    run2 = expected_run(
        p,
        "@2",
        [PY, "src/feat.py", "data/clean.csv", "data/feat.csv"],
        ["data/clean.csv"],
        ["data/feat.csv"],
        {
            "commit": p.commits["@2"],
            "branch": "main",
            "dirty": False,
            "tree": git(repo, "rev-parse", f"{p.commits['@2']}^{{tree}}"),
            "inputs": [{"path": "src/feat.py", "blob": git(repo, "hash-object", "src/feat.py")}],
        },
    )
    assert p.commits["@1"] != p.commits["@2"]
    shown3 = roar_json(repo, "show", "@3")
    snapshot = shown3["code"]["tree"]
    run3 = expected_run(
        p,
        "@3",
        [PY, "src/train.py", "data/clean.csv", "data/feat.csv", "model.pkl", "--lr", "0.1"],
        ["data/clean.csv", "data/feat.csv"],
        ["model.pkl"],
        {
            "commit": p.commits["@3"],
            "branch": "main",
            "dirty": True,
            "tree": snapshot,
            "inputs": [{"path": "src/train.py", "blob": git(repo, "hash-object", "src/train.py")}],
        },
    )
    assert settle(shown3) == run3
    assert settle(roar_json(repo, "show", p.ids["@1"][:10])) == run1
    assert settle(roar_json(repo, "show", "@2")) == run2

    # The dirty run's snapshot holds the edit, and nothing of the user's was touched.
    assert git(repo, "show", f"{snapshot}:src/train.py") == (TRAIN + "# dirty edit").rstrip()
    assert git(repo, "show", f"{snapshot}:src/prep.py") == PREP.rstrip()
    assert "data" not in git(repo, "ls-tree", "--name-only", snapshot).split()
    reachable = git(repo, "rev-list", "--objects", "refs/roar/ledger")
    assert snapshot in reachable
    assert git(repo, "stash", "list") == ""
    assert git(repo, "rev-parse", "HEAD") == p.commits["@3"]
    assert git(repo, "diff", "--cached", "--name-only") == ""
    assert git(repo, "status", "--porcelain", "src") == "M src/train.py"
    assert git(repo, "branch", "--format=%(refname)") == "refs/heads/main"

    model: dict[str, Any] = {
        "kind": "artifact",
        "hash": b3(repo / "model.pkl"),
        "size": (repo / "model.pkl").stat().st_size,
        "type": "file",
        "paths": ["model.pkl"],
        "produced_by": [p.ids["@3"]],
        "consumed_by": [],
    }
    assert roar_json(repo, "show", "model.pkl") == model
    assert roar_json(repo, "show", model["hash"][:8]) == model
    clean = roar_json(repo, "show", "data/clean.csv")
    assert clean == {
        "kind": "artifact",
        **{k: v for k, v in fref(repo, "data/clean.csv").items() if k != "path"},
        "type": "file",
        "paths": ["data/clean.csv"],
        "produced_by": [p.ids["@1"]],
        "consumed_by": [p.ids["@2"], p.ids["@3"]],
    }

    lineage = roar_json(repo, "lineage", "model.pkl")
    raw = fref(repo, "data/raw.csv")
    assert {**lineage, "runs": [settle(r) for r in lineage["runs"]]} == {
        "target": model,
        "runs": [run3, run1, run2],  # breadth-first from the target; inputs by path
        "links": [
            {
                "run": p.ids[reader],
                "path": path,
                "hash": fref(repo, path)["hash"],
                "producer": p.ids[producer],
                "by_bytes": False,
            }
            for reader, path, producer in (
                ("@3", "data/clean.csv", "@1"),
                ("@3", "data/feat.csv", "@2"),
                ("@2", "data/clean.csv", "@1"),
            )
        ],
        "sources": [
            {
                "kind": "artifact",
                "hash": raw["hash"],
                "size": raw["size"],
                "type": "file",
                "paths": ["data/raw.csv"],
            }
        ],
    }
    shallow = roar_json(repo, "lineage", "model.pkl", "--depth", "1")
    assert [r["id"] for r in shallow["runs"]] == [p.ids["@3"]]

    def step(label: str, argv: list[str], deps: list[str], outs: list[str]) -> dict[str, Any]:
        return {
            "step": label,
            "run": p.ids[label],
            "command": argv,
            "state": "ok",
            "depends_on": deps,
            "superseded": [],
            "outputs": outs,
            "verified": {"identical": 0, "differs": 0, "failed": 0},
        }

    steps = [
        step("@1", run1["argv"], [], ["data/clean.csv"]),
        step("@2", run2["argv"], ["@1"], ["data/feat.csv"]),
        step("@3", run3["argv"], ["@1", "@2"], ["model.pkl"]),
    ]
    assert roar_json(repo, "dag") == {"session": p.session, "steps": steps}
    assert roar_json(repo, "show") == {"kind": "session", "session": p.session, "steps": steps}
    assert roar_json(repo, "dag", "model.pkl") == {
        "session": None,
        "target": model,
        "steps": steps,
    }
    mermaid = roar(repo, "dag", "--mermaid").stdout
    assert "s1 --> s3" in mermaid and "s2 --> s3" in mermaid
    assert '"@1" -> "@2";' in roar(repo, "dag", "--dot").stdout

    log = roar_json(repo, "log")
    assert [e["id"] for e in log] == [p.ids["@3"], p.ids["@2"], p.ids["@1"]]
    assert [e["id"] for e in roar_json(repo, "log", "-n", "2")] == [p.ids["@3"], p.ids["@2"]]
    assert roar_json(repo, "status") == {
        "session": p.session,
        "outputs": [
            {"step": s, "path": f, "hash": b3(repo / f), "state": "present"}
            for s, f in (("@1", "data/clean.csv"), ("@2", "data/feat.csv"), ("@3", "model.pkl"))
        ],
        "stale_steps": [],
        "stale": [],
    }
    human = roar(repo, "show", "model.pkl").stdout
    assert p.ids["@3"][:12] in human and "data/raw.csv" in human and "(source)" in human


@pytest.mark.slow
def test_rerun_makes_downstream_stale_and_run_at_n_replaces_flags(pipeline: Pipeline) -> None:
    p = pipeline
    repo = p.repo
    (repo / "data" / "raw.csv").write_text("a,b\n3,4\n")
    again = roar_json(repo, "run", PY, "src/prep.py", "data/raw.csv", "data/clean.csv")
    assert again["step"] == "@1"
    dag = {s["step"]: s for s in roar_json(repo, "dag")["steps"]}
    assert dag["@1"]["superseded"] == [p.ids["@1"]] and dag["@1"]["state"] == "ok"
    assert dag["@2"]["state"] == dag["@3"]["state"] == "stale"
    status = roar_json(repo, "status")
    assert status["stale_steps"] == ["@2", "@3"]
    assert "stale steps: @2, @3" in roar(repo, "status").stdout

    rerun = roar_json(repo, "run", "@3", "--lr=0.5", "--epochs=2")
    assert rerun["step"] == "@3"
    assert rerun["argv"] == [
        PY, "src/train.py", "data/clean.csv", "data/feat.csv", "model.pkl", "--lr", "0.5",
        "--epochs=2",
    ]  # fmt: skip
    assert (repo / "model.pkl").read_text().endswith("0.5")
    dag = {s["step"]: s for s in roar_json(repo, "dag")["steps"]}
    assert dag["@3"]["superseded"] == [p.ids["@3"]]
    assert dag["@3"]["state"] == "stale"  # feat.csv still comes from the old clean.csv

    roar(repo, "run", "-q", "@2")
    roar(repo, "run", "-q", "@3")
    dag = roar_json(repo, "dag")
    assert [(s["step"], s["state"]) for s in dag["steps"]] == [
        ("@1", "ok"),
        ("@2", "ok"),
        ("@3", "ok"),
    ]
    assert roar_json(repo, "show", "@3")["argv"][-2:] == ["0.5", "--epochs=2"]
    assert roar_json(repo, "status")["stale_steps"] == []
    # The earlier model's lineage still walks to the bytes it was made from.
    (repo / "model.pkl").write_text("changed by hand")
    state = {o["path"]: o["state"] for o in roar_json(repo, "status")["outputs"]}
    assert state["model.pkl"] == "modified"
    (repo / "data" / "feat.csv").unlink()
    state = {o["path"]: o["state"] for o in roar_json(repo, "status")["outputs"]}
    assert state["data/feat.csv"] == "missing"


def test_failing_command_passes_its_exit_status_through_and_is_recorded(git_repo: Path) -> None:
    script = "import sys; open('partial.txt', 'w').write('half'); sys.exit(3)"
    result = roar(git_repo, "run", PY, "-c", script, rc=3)
    assert "failed (exit 3)" in result.stderr
    entry = roar_json(git_repo, "log", "-n", "1")[0]
    assert (entry["status"], entry["exit_code"], entry["step"]) == ("failed", 3, "@1")
    run = roar_json(git_repo, "show", "@1")
    assert run["outputs"] == [fref(git_repo, "partial.txt")]
    assert roar_json(git_repo, "dag")["steps"][0]["state"] == "failed"
    # A command that touched no data files is a step of its own, not a re-run of this one.
    roar(git_repo, "run", "-q", "true")
    assert [s["step"] for s in roar_json(git_repo, "dag")["steps"]] == ["@1", "@2"]
    assert roar(git_repo, "run", "-q", "--json", "false", rc=1).stdout.count('"failed"') == 1
    # roar's own errors are not the command's: a missing program is one line, exit 1.
    missing = roar(git_repo, "run", "-q", "no-such-program-xyz", rc=None)
    assert missing.returncode != 0


def test_secrets_in_env_and_argv_reach_no_git_object(git_repo: Path) -> None:
    token = "hf_" + "Q" * 34
    github = "ghp_" + "Z7" * 18
    password = "hunter2-very-secret"
    script = "open('out.txt', 'w').write('done')"
    rec = roar_json(
        git_repo, "run", PY, "-c", script, f"--token={github}", "--password", password,
        f"https://user:{password}@example.com/x",
        env={"HF_TOKEN": token, "MY_API_KEY": "plainvalue123"},
    )  # fmt: skip
    assert rec["argv"][3:] == [
        "--token=<redacted>",
        "--password",
        "<redacted>",
        "https://user:<redacted>@example.com/x",
    ]
    assert rec["environment"]["env_vars"]["HF_TOKEN"] == "<redacted>"
    objects = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=git_repo,
        capture_output=True,
        check=True,
    ).stdout
    assert b"<redacted>" in objects  # the record is there…
    for secret in (token, github, password, "plainvalue123"):
        assert secret.encode() not in objects  # …the secrets are not


def test_folder_dataset_is_one_artifact_and_its_files_find_their_runs(git_repo: Path) -> None:
    repo = git_repo
    images = repo / "data" / "images"
    images.mkdir(parents=True)
    for i in range(300):
        (images / f"{i:03d}.png").write_bytes(b"png %d\n" % i)
    (repo / "data" / "labels.csv").write_text("unrelated\n")
    (repo / "count.py").write_text(
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "n = sum(len(open(os.path.join(d, f), 'rb').read()) for f in sorted(os.listdir(d)))\n"
        "os.makedirs('out', exist_ok=True)\n"
        "for i in range(150):\n"
        "    open(f'out/part-{i}.txt', 'w').write(str(n + i))\n"
    )
    first = roar_json(repo, "run", PY, "count.py", "data/images")
    [folder] = first["inputs"]
    size = sum(f.stat().st_size for f in images.iterdir())
    assert (folder["path"], folder["type"], folder["size"]) == ("data/images/", "dir", size)
    [written] = first["outputs"]
    assert (written["path"], written["type"]) == ("out/", "dir")

    second = roar_json(repo, "run", PY, "count.py", "data/images")
    assert second["inputs"] == first["inputs"]  # unchanged folder, same artifact
    manifests = git(repo, "ls-tree", "-r", "--name-only", "refs/roar/ledger", "manifests")
    assert len(manifests.splitlines()) == 2  # data/images/ and out/, each stored once

    art = roar_json(repo, "show", "data/images/")
    assert art == {
        "kind": "artifact",
        "hash": folder["hash"],
        "size": size,
        "type": "dir",
        "paths": ["data/images/"],
        "produced_by": [],
        "consumed_by": [first["id"], second["id"]],
    }
    assert roar_json(repo, "show", "data/images") == art
    one = roar_json(repo, "show", "data/images/007.png")
    assert one == {
        "kind": "artifact",
        "hash": b3(images / "007.png"),
        "size": (images / "007.png").stat().st_size,
        "type": "file",
        "paths": ["data/images/007.png"],
        "produced_by": [],
        "consumed_by": [first["id"], second["id"]],
    }
    part = roar_json(repo, "show", "out/part-7.txt")
    assert part["produced_by"] == [first["id"], second["id"]]
    lineage = roar_json(repo, "lineage", "out/")
    assert [s["paths"] for s in lineage["sources"]] == [["data/images/"]]

    # The folder changes and is read again: `show` names it as most recently recorded,
    # whichever run id sorts first.
    (images / "300.png").write_bytes(b"png 300\n")
    third = roar_json(repo, "run", PY, "count.py", "data/images")
    [changed] = third["inputs"]
    assert changed["hash"] != folder["hash"]
    assert roar_json(repo, "show", "data/images/")["hash"] == changed["hash"]


def test_pop_removes_untracked_outputs_and_never_tracked_ones(git_repo: Path) -> None:
    repo = git_repo
    (repo / "notes.txt").write_text("tracked\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", "notes")
    roar(repo, "run", "-q", PY, "-c", "open('a.txt', 'w').write('a')")
    script = "open('b.txt', 'w').write('b'); open('notes.txt', 'a').write('more\\n')"
    roar(repo, "run", "-q", PY, "-c", script)
    popped = roar_json(repo, "pop")
    assert popped["popped"] == "@2"
    assert (popped["removed"], popped["kept"]) == (["b.txt"], ["notes.txt"])
    assert not (repo / "b.txt").exists()
    assert (repo / "notes.txt").read_text() == "tracked\nmore\n"
    assert [s["step"] for s in roar_json(repo, "dag")["steps"]] == ["@1"]
    assert roar_json(repo, "log")[0]["step"] is None  # still in the ledger, not a step
    assert "popped @1" in roar(repo, "pop").stdout
    assert not (repo / "a.txt").exists()
    empty = roar(repo, "pop", rc=1)
    assert empty.stderr == "roar: the session has no steps to pop\n"
    # The next run takes @1 again.
    assert roar_json(repo, "run", "true")["step"] == "@1"


def test_reset_starts_a_new_session_and_build_steps_come_first(git_repo: Path) -> None:
    repo = git_repo
    old = roar_json(repo, "run", PY, "-c", "open('x.txt', 'w').write('x')")
    new_session = roar_json(repo, "reset")["session"]
    assert new_session != old["session"]
    assert roar_json(repo, "dag") == {"session": new_session, "steps": []}
    assert roar_json(repo, "log")[0]["step"] is None
    assert roar_json(repo, "show", "x.txt")["produced_by"] == [old["id"]]

    built = roar_json(repo, "build", "sh", "-c", "echo built > env.txt")
    assert (built["step"], built["type"]) == ("@B1", "build")
    ran = roar_json(repo, "run", "sh", "-c", "cat env.txt > y.txt")
    assert ran["step"] == "@1" and ran["session"] == new_session
    dag = roar_json(repo, "dag")["steps"]
    assert [(s["step"], s["depends_on"]) for s in dag] == [("@B1", []), ("@1", ["@B1"])]
    assert roar_json(repo, "show", "@b1")["id"] == built["id"]


def test_paths_with_spaces_from_a_subdirectory(tmp_path: Path) -> None:
    repo = tmp_path / "my repo"
    (repo / "sub dir").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "gen.py").write_text(
        "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read() * 2)\n"
    )
    git(repo, "add", "gen.py")
    git(repo, "commit", "-q", "-m", "gen")
    (repo / "sub dir" / "in put.txt").write_text("hi\n")
    (repo / "untracked notes.yaml").write_text("wip\n")  # untracked code: a dirty tree
    (repo / "untracked notes.md").write_text("wip\n")  # not code: never in a snapshot
    sub = repo / "sub dir"
    rec = roar_json(sub, "run", PY, "../gen.py", "in put.txt", "out put.txt")
    assert rec["cwd"] == "sub dir"
    assert rec["inputs"] == [fref(repo, "sub dir/in put.txt")]
    assert rec["outputs"] == [fref(repo, "sub dir/out put.txt")]
    assert rec["code"]["inputs"][0]["path"] == "gen.py"
    assert rec["code"]["dirty"] is True
    assert git(repo, "show", f"{rec['code']['tree']}:untracked notes.yaml") == "wip"
    listed = git(repo, "ls-tree", "--name-only", rec["code"]["tree"]).splitlines()
    assert "untracked notes.md" not in listed and "sub dir" not in listed
    shown = roar_json(sub, "show", "out put.txt")
    assert shown["produced_by"] == [rec["id"]] and shown["paths"] == ["sub dir/out put.txt"]
    # `roar run @1` from elsewhere runs in the step's own directory.
    (sub / "in put.txt").write_text("ho\n")
    assert roar_json(repo, "run", "@1")["cwd"] == "sub dir"
    assert (sub / "out put.txt").read_text() == "ho\nho\n"


def test_bad_refs_are_one_line_errors(git_repo: Path) -> None:
    repo = git_repo
    (repo / "a.txt").write_bytes(b"ambiguous 1157\n")  # these two hash to 8f5264…
    (repo / "b.txt").write_bytes(b"ambiguous 3165\n")
    assert b3(repo / "a.txt")[:6] == b3(repo / "b.txt")[:6] == "8f5264"
    roar(repo, "run", "-q", "cat", "a.txt", "b.txt")

    def error(ref: str) -> str:
        result = roar(repo, "show", ref, rc=1)
        assert result.stdout == "" and result.stderr.count("\n") == 1
        return result.stderr

    assert error("xyz") == "roar: no artifact, run or step matches 'xyz'\n"
    assert error("abcdef0123") == "roar: no artifact, run or step matches 'abcdef0123'\n"
    assert "too short" in error("abc")
    ambiguous = error("8f5264")
    assert "ambiguous" in ambiguous
    assert b3(repo / "a.txt")[:16] in ambiguous and b3(repo / "b.txt")[:16] in ambiguous
    assert roar_json(repo, "show", b3(repo / "a.txt")[:8])["paths"] == ["a.txt"]
    (repo / "new.txt").write_text("never recorded\n")
    assert error("new.txt") == (
        f"roar: new.txt was never recorded by a run (its current hash is {b3(repo / 'new.txt')})\n"
    )
    assert "no step @7" in error("@7")
    assert roar(repo, "lineage", "xyz", rc=1).stderr.startswith("roar: no artifact")
    assert roar(repo, "dag", "xyz", rc=1).stderr.startswith("roar: no artifact")


def test_ctrl_c_to_the_process_group_is_recorded_as_interrupted(git_repo: Path) -> None:
    started = git_repo / "started"
    script = "import time; open('started', 'w').close(); time.sleep(60)"
    proc = subprocess.Popen(
        ["roar", "run", PY, "-c", script],
        cwd=git_repo,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted (exit 130)" in err
    entry = roar_json(git_repo, "log", "-n", "1")[0]
    assert (entry["status"], entry["exit_code"]) == ("interrupted", 130)
    assert roar_json(git_repo, "dag")["steps"][0]["state"] == "interrupted"


@pytest.mark.parametrize("flag", ["-q", "--json"])
def test_report_flags(git_repo: Path, flag: str) -> None:
    result = roar(git_repo, "run", flag, "sh", "-c", "echo hello")
    if flag == "-q":
        assert (result.stdout, result.stderr) == ("hello\n", "")
    else:
        assert result.stdout.startswith("hello\n")
        assert json.loads(result.stdout[len("hello\n") :])["argv"] == ["sh", "-c", "echo hello"]


def test_only_untracked_sources_join_the_snapshot_whatever_their_names(git_repo: Path) -> None:
    """The untracked files a dirty snapshot takes are those is_source_name (the default code
    rule) and .gitignore say: in folders git tracks, found in git's listing (searched, not
    split per file); in a folder untracked as a whole (one entry in that listing, however many
    data files it holds), those the run read. Of the tracked files changed, only code ones."""
    from roargit.codestate import is_source_name, work_tree_status
    from roargit.repo import find_repo

    repo = git_repo
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "setup.cfg").write_text("[x]\n")
    git(repo, "add", ".gitignore", "setup.cfg")
    git(repo, "commit", "-q", "-m", "ignore")
    (repo / "README").write_text("changed\n")  # tracked and modified, not code
    (repo / "setup.cfg").write_text("[y]\n")  # tracked and modified code
    (repo / "data").mkdir()
    for i in range(300):
        (repo / "data" / f"f{i:03d}.bin").write_bytes(b"%d" % i)
    ascii_names = [
        "Tool.PY", "sub/Makefile", "sub/makefile", "deep/er/Snakefile", "weird name.Yml",
        ".py", "x.py.bin", "mkfile", "Makefile.bak", "a.b.sh", "ignored/secret.py",
        "data/big.txt", "dvc.yaml", "data/prep.py",
    ]  # fmt: skip
    # ASCII listings are searched by position; others record by record.
    for names in (ascii_names, ["notes é.md", "café/run.R", "kelvin.m\u212a"]):
        for name in names:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text("x\n")
        status = work_tree_status(find_repo(repo))
        listed = [
            n for n in git(repo, "ls-files", "-o", "--exclude-standard", "-z").split("\0") if n
        ]
        expected = [n for n in listed if is_source_name(n) and "/" not in n]
        assert sorted(status.untracked) == sorted(expected)
        folders = {n.split("/")[0] + "/" for n in listed if "/" in n}
        assert sorted(status.untracked_dirs) == sorted(folders)
        assert "Tool.PY" in status.untracked and "ignored/" not in status.untracked_dirs
        assert status.modified == ("setup.cfg",)

    read = "data/f001.bin data/prep.py sub/Makefile deep/er/Snakefile ignored/secret.py"
    rec = roar_json(repo, "run", "sh", "-c", f"cat {read} >/dev/null")
    tree = rec["code"]["tree"]
    in_tree = git(repo, "ls-tree", "-r", "-z", "--name-only", tree).split("\0")
    # Read code from untracked folders joins; unread code there, data and ignored files do not.
    from_folders = ["data/prep.py", "deep/er/Snakefile", "sub/Makefile"]
    assert sorted(filter(None, in_tree)) == sorted(
        [".gitignore", "README", "setup.cfg", *expected, *from_folders]
    )
    assert [c["path"] for c in rec["code"]["inputs"]] == from_folders
    assert [i["path"] for i in rec["inputs"]] == ["data/f001.bin", "ignored/secret.py"]
    assert git(repo, "show", f"{tree}:README") != "changed"  # its committed version
    assert git(repo, "show", f"{tree}:setup.cfg") == "[y]"


def test_system_paths_is_is_system_path_for_each() -> None:
    from roargit.rules import is_system_path, system_paths

    home = "/home/u"
    paths = [
        "/usr/lib/python3.11/os.py", "/home/u/.cache/pip/x", "/home/u/.cache/huggingface/m.bin",
        "/data/run/a.bin", "/data/run/scratch.tmp", "/repo/.git/HEAD", "/repo/x/__pycache__/a.pyc",
        "/repo/.venv/lib/python3.11/site-packages/numpy/__init__.py", "/repo/libfoo.so",
        "/repo/.venv/pyvenv.cfg", "/repo/.venv/bin/python3", "/repo/data/f.bin", "/etc/hosts",
        "/repo/.gitignore", "/opt/bin/tool", "/repo/data/libraries.csv",
    ]  # fmt: skip
    for ignore in ([], ["*.tmp"], ["/repo/data/*"]):
        assert system_paths(paths, home, ignore) == {
            p for p in paths if is_system_path(p, home, ignore)
        }


def test_sort_accesses_tells_each_kind_of_path_apart(tmp_path: Path) -> None:
    """What a run touched, sorted in one pass: git's files, start-up files, packages, noise,
    temporaries, inputs (code reads among them), outputs, and reads of files gone since."""
    from importlib.metadata import version

    import msgpack

    from roargit.repo import RepoPaths
    from roargit.run_files import sort_accesses
    from roargit.trace_files import FileAccess

    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / ".git").mkdir()
    (tmp_path / "ext").mkdir()
    for name in ["data/a.bin", "data/b.bin", "out.bin", "script.py", "data/x.skip", ".git/HEAD"]:
        (root / name).write_text(name)
    (tmp_path / "ext" / "e.dat").write_text("e")
    r, ext = str(root), str(tmp_path / "ext" / "e.dat")
    site = os.path.dirname(os.path.dirname(msgpack.__file__))
    accesses = [
        FileAccess(f"{r}/data/gone.bin", read=True),
        FileAccess(f"{r}/data/a.bin", read=True, regular=True),
        FileAccess(f"{r}/data/b.bin", read=True),  # not listed by the trace: stat'ed
        FileAccess(f"{r}/out.bin", written=True, created=True, regular=True),
        FileAccess(f"{r}/never.bin", written=True),  # written, gone again: nothing
        FileAccess(f"{r}/tmp.bin", created=True, temporary=True),
        FileAccess(f"{r}/.git/HEAD", read=True, regular=True),
        FileAccess(f"{r}/script.py", read=True, regular=True),
        FileAccess(f"{r}/data/x.skip", read=True, regular=True),
        FileAccess(ext, read=True, regular=True),
        FileAccess(msgpack.__file__, read=True, regular=True),
        FileAccess(f"{site}/distutils-precedence.pth", read=True, regular=True),
        FileAccess("/usr/lib/python3.11/os.py", read=True, regular=True),
        FileAccess("/bin/sh", executed=True, regular=True),
        FileAccess(f"{r}/data/gone2.bin", read=True),
    ]
    files = {a.path: a for a in accesses}
    paths = RepoPaths(root, root / ".git", root / ".git")
    got = sort_accesses(files, paths, str(tmp_path / "home"), ["*.skip"])
    assert sorted(got.inputs) == sorted(
        [f"{r}/data/a.bin", f"{r}/data/b.bin", f"{r}/script.py", ext]
    )
    assert got.outputs == [f"{r}/out.bin"]
    assert sorted(got.code_reads) == ["data/a.bin", "data/b.bin", "script.py"]
    assert got.packages == {"msgpack": version("msgpack")}
    assert got.warnings == [
        "data/gone.bin was read, then deleted: not recorded",
        "data/gone2.bin was read, then deleted: not recorded",
    ]


def test_sort_accesses_of_grouped_folders_is_as_path_by_path(tmp_path: Path) -> None:
    """A traced run that reads whole folders (the summary groups each: trace_files.Accesses) is
    sorted as its accesses one by one are, for plain data folders (taken at once) and for
    folders whose names or place make special cases: git's, bytecode, start-up files,
    package dirs, `lib*` names, outside the repo, a `roar.ignore` glob."""
    from roargit.repo import RepoPaths
    from roargit.run_files import _plain_group, sort_accesses
    from roargit.trace import run_traced
    from roargit.trace_files import Accesses

    root = tmp_path / "repo"
    folders = {
        "data": "{}.bin",
        "out": "{}.bin",
        ".git/objects": "{}",
        "pkg/__pycache__": "{}.pyc",
        "env/lib/python3.11/site-packages/x": "{}.py",
        "mixed": "lib{}.so",
        "starts": "{}.pth",
        "eggs": "{}.egg-info",
        "bin": "{}",
    }
    for folder, name in folders.items():
        (root / folder).mkdir(parents=True)
        for i in range(10):
            (root / folder / name.format(i)).write_text(str(i))
    (tmp_path / "ext").mkdir()
    for i in range(10):
        (tmp_path / "ext" / f"{i}.dat").write_text(str(i))
    (root / "data" / "a.skip").write_text("s")
    script = (
        "cat data/* .git/objects/* pkg/__pycache__/* env/lib/python3.11/site-packages/x/* "
        "mixed/* starts/* eggs/* bin/* ../ext/* > /dev/null; "
        "for i in 0 1 2 3 4 5 6 7 8 9; do echo $i > out/$i.bin; done"
    )
    t = run_traced(["sh", "-c", script], root, stat_files=True)
    assert isinstance(t.files, Accesses) and len(t.files.groups) >= len(folders)
    paths = RepoPaths(root, root / ".git", root / ".git")
    for ignore in ([], ["*.skip"]):
        grouped = sort_accesses(t.files, paths, str(tmp_path / "home"), ignore)
        one_by_one = sort_accesses(dict(t.files), paths, str(tmp_path / "home"), ignore)
        for got, want in zip(grouped, one_by_one, strict=True):
            assert sorted(got) == sorted(want)
    r = str(root)
    # only the two plain folders are taken at once; every special case goes path by path
    home, git = str(tmp_path / "home"), (f"{r}/.git/",)
    at_once = {g.folder for g in t.files.groups if _plain_group(g, r + "/", git, {r}, home, [])}
    assert at_once == {f"{r}/data", f"{r}/out"}
    assert f"{r}/data/3.bin" in grouped.inputs and f"{r}/out/3.bin" in grouped.outputs
    assert f"{r}/data/3.bin" in one_by_one.inputs and "data/3.bin" in grouped.code_reads
    assert not any(p.startswith((f"{r}/.git/", f"{r}/pkg/")) for p in grouped.inputs)
    assert f"{r}/data/a.skip" not in grouped.inputs
