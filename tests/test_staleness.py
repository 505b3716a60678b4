"""Staleness and `roar update`, end to end: the installed `roar`, the real tracer, a real
repository. A step is stale when data or code it read changed since it ran, or a step it
depends on is stale; `roar update` re-runs exactly those, upstream first, skipping a step
whose inputs came out unchanged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from blake3 import blake3
from cli_helpers import git, roar, roar_json

PY = os.path.basename(sys.executable)

PREP = "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())\n"
FEAT = "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read()[::-1])\n"
TRAIN = "import sys\nopen(sys.argv[2], 'w').write(str(len(open(sys.argv[1]).read())))\n"


def b3(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


def pipeline(repo: Path) -> dict[str, str]:
    for name, text in (("prep.py", PREP), ("feat.py", FEAT), ("train.py", TRAIN)):
        (repo / name).write_text(text)
    (repo / "data").mkdir()
    (repo / "data" / "raw.csv").write_text("a,b\n1,2\n")
    (repo / "notes.txt").write_text("unrelated\n")
    git(repo, "add", "prep.py", "feat.py", "train.py", "data/raw.csv")
    git(repo, "commit", "-q", "-m", "pipeline")
    roar(repo, "run", PY, "prep.py", "data/raw.csv", "clean.csv")
    roar(repo, "run", PY, "feat.py", "clean.csv", "feat.csv")
    roar(repo, "run", PY, "train.py", "feat.csv", "model.txt")
    roar(repo, "run", "sh", "-c", "cat notes.txt > notes.out")
    return {s["step"]: s["run"] for s in roar_json(repo, "dag")["steps"]}


def states(repo: Path) -> dict[str, str]:
    return {s["step"]: s["state"] for s in roar_json(repo, "dag")["steps"]}


def test_a_data_edit_makes_its_step_and_those_after_it_stale_and_update_reruns_them(
    git_repo: Path,
) -> None:
    repo = git_repo
    ids = pipeline(repo)
    assert roar_json(repo, "status")["stale"] == []
    raw = repo / "data" / "raw.csv"
    old = b3(raw)
    raw.write_text("a,b\n3,4\n")  # committed data, edited
    status = roar_json(repo, "status")
    assert status["stale_steps"] == ["@1", "@2", "@3"]
    assert status["stale"] == [
        {
            "step": "@1",
            "run": ids["@1"],
            "changes": [{"path": "data/raw.csv", "kind": "data", "old": old, "new": b3(raw)}],
            "upstream": [],
        },
        {"step": "@2", "run": ids["@2"], "changes": [], "upstream": ["@1"]},
        {"step": "@3", "run": ids["@3"], "changes": [], "upstream": ["@2"]},
    ]
    human = roar(repo, "status").stdout
    assert f"data data/raw.csv  {old[:12]} → {b3(raw)[:12]}" in human
    assert states(repo) == {"@1": "stale", "@2": "stale", "@3": "stale", "@4": "ok"}

    dry = roar_json(repo, "update", "--dry-run")
    assert [(d["step"], d["action"]) for d in dry] == [(s, "would run") for s in ("@1", "@2", "@3")]
    assert states(repo)["@1"] == "stale"  # nothing ran

    result = roar(repo, "update")
    assert f"  @1  running: {PY} prep.py data/raw.csv clean.csv\n" in result.stdout
    assert (repo / "clean.csv").read_text() == "A,B\n3,4\n"
    assert (repo / "model.txt").read_text() == "8"
    after = roar_json(repo, "dag")["steps"]
    assert [(s["step"], s["state"]) for s in after] == [(s, "ok") for s in ("@1", "@2", "@3", "@4")]
    assert [s["superseded"] for s in after] == [[ids["@1"]], [ids["@2"]], [ids["@3"]], []]
    assert roar_json(repo, "status")["stale"] == []
    assert roar(repo, "update").stdout == "nothing is stale\n"


def test_a_code_edit_reruns_its_step_and_skips_one_whose_inputs_came_out_the_same(
    git_repo: Path,
) -> None:
    repo = git_repo
    ids = pipeline(repo)
    blob = git(repo, "hash-object", "feat.py")
    (repo / "feat.py").write_text(FEAT + "# the same output, a new comment\n")
    status = roar_json(repo, "status")
    assert status["stale"][0] == {
        "step": "@2",
        "run": ids["@2"],
        "changes": [
            {
                "path": "feat.py",
                "kind": "code",
                "old": blob,
                "new": git(repo, "hash-object", "feat.py"),
            }
        ],
        "upstream": [],
    }
    assert status["stale_steps"] == ["@2", "@3"]
    done = roar_json(repo, "update")
    assert [(d["step"], d["action"]) for d in done] == [("@2", "ran"), ("@3", "skipped")]
    assert done[0]["new_run"] and done[0]["exit_code"] == 0 and done[1]["new_run"] is None
    dag = {s["step"]: s for s in roar_json(repo, "dag")["steps"]}
    assert dag["@2"]["superseded"] == [ids["@2"]] and dag["@3"]["run"] == ids["@3"]
    assert roar_json(repo, "status")["stale"] == []


def test_update_of_a_target_runs_what_it_needs_and_a_failure_stops_it(git_repo: Path) -> None:
    repo = git_repo
    ids = pipeline(repo)
    (repo / "data" / "raw.csv").write_text("x,y\n5,6\n")
    done = roar_json(repo, "update", "feat.csv")
    assert [(d["step"], d["action"]) for d in done] == [("@1", "ran"), ("@2", "ran")]
    assert roar_json(repo, "status")["stale_steps"] == ["@3"]
    assert roar_json(repo, "dag")["steps"][2]["run"] == ids["@3"]

    (repo / "train.py").write_text("raise SystemExit(3)\n")
    (repo / "feat.py").write_text(FEAT + "# again\n")
    result = roar(repo, "update", rc=3)
    assert "@2  running:" in result.stdout and "@3  running:" in result.stdout
    assert states(repo)["@3"] == "failed"  # failed, not stale: update leaves it to the user
    assert roar_json(repo, "status")["stale_steps"] == []
    assert roar(repo, "update", "@7", rc=1).stderr.startswith("roar: no step @7")
    assert "no step of the current session wrote" in roar(repo, "update", "x.csv", rc=1).stderr


def test_a_folder_input_is_stale_when_one_of_its_files_changes(git_repo: Path) -> None:
    repo = git_repo
    shards = repo / "shards"
    shards.mkdir()
    for i in range(150):
        (shards / f"s{i:03d}.txt").write_text(f"{i}\n")
    rec = roar_json(repo, "run", "sh", "-c", "cat shards/* > all.txt")
    assert [f["path"] for f in rec["inputs"]] == ["shards/"]
    assert roar_json(repo, "status")["stale"] == []
    (shards / "s007.txt").write_text("changed\n")
    stale = roar_json(repo, "status")["stale"]
    assert [(s["step"], [c["path"] for c in s["changes"]]) for s in stale] == [("@1", ["shards/"])]
    assert roar_json(repo, "update")[0]["action"] == "ran"
    assert "changed" in (repo / "all.txt").read_text()
    assert roar_json(repo, "status")["stale"] == []
