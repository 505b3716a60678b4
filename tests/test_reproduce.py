"""`roar reproduce` end to end: real repositories, the real tracer, the installed `roar`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli_helpers import digest, git, roar, roar_json
from conftest import Recorded
from pipeline_helpers import run_pipeline, write_pipeline


def test_three_steps_all_outputs_deleted_reproduce_identical(three_steps: Recorded) -> None:
    git_repo, model = three_steps
    for name in ("clean.csv", "features.csv", "model.pkl"):
        (git_repo / name).unlink()

    plan = roar_json(git_repo, "reproduce", model[:12], "--no-reuse")
    assert plan["ok"] and [s["action"] for s in plan["steps"]] == ["run"] * 3
    assert [s["command"][1] for s in plan["steps"]] == ["prep.py", "features.py", "train.py"]
    # (Absolute paths: files outside the repository, used in place, such as an interpreter's
    # shared library outside the tests' $HOME.)
    sources = {
        i["path"]: i["from"]
        for s in plan["steps"]
        for i in s["inputs"]
        if not i["path"].startswith("/")
    }
    assert sources == {"raw.csv": "worktree", "clean.csv": "step", "features.csv": "step"}
    assert all(s["code"]["commit"] and not s["code"]["dirty"] for s in plan["steps"])

    rep = roar_json(git_repo, "reproduce", model[:12], "--run", "-y", "--no-reuse")
    assert rep["identical"] and rep["target"]["status"] == "identical"
    assert [s["action"] for s in rep["steps"]] == ["ran"] * 3
    assert {a["path"]: a["status"] for a in rep["artifacts"]} == {
        "clean.csv": "identical",
        "features.csv": "identical",
        "model.pkl": "identical",
    }
    where = Path(rep["target"]["path"])
    assert where.is_relative_to(git_repo / ".git" / "roar") and digest(where) == model
    # Never the user's working tree; the user's session is untouched.
    assert not (git_repo / "model.pkl").exists()
    assert git(git_repo, "status", "--porcelain") == "?? raw.csv"
    dag = roar_json(git_repo, "dag")
    assert [s["step"] for s in dag["steps"]] == ["@1", "@2", "@3"]
    assert all(s["superseded"] == [] for s in dag["steps"])
    # The reproduction attests (a verification of each step it re-ran) and produces nothing:
    # model.pkl keeps its one producer.
    shown = roar_json(git_repo, "show", model[:12])
    assert len(shown["produced_by"]) == 1
    run = roar_json(git_repo, "show", shown["produced_by"][0][:12])
    assert [v["result"] for v in run["verifications"]] == ["identical"]
    assert run["verifications"][0]["reproduction"] == rep["steps"][-1]["new_run"]

    # Reuse (the default): the intermediates are in the local store, only @3 runs; -o copies.
    out = git_repo / "restored.pkl"
    proc = roar(git_repo, "reproduce", model[:12], "--run", "-y", "-o", str(out))
    assert "identical" in proc.stdout and "@2  reused" in proc.stdout and "@3  ran" in proc.stdout
    assert digest(out) == model
    # The same bytes there already: nothing to replace, no --force needed.
    roar(git_repo, "reproduce", model[:12], "--run", "-y", "-o", str(out))
    assert digest(out) == model
    out.write_text("other bytes\n")
    again = roar(git_repo, "reproduce", model[:12], "--run", "-y", "-o", str(out), rc=None)
    assert again.returncode == 1 and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert out.read_text() == "other bytes\n"
    # The plan's hint is a command that runs without a terminal.
    assert (
        f"run it: roar reproduce {model[:12]} --run -y"
        in roar(git_repo, "reproduce", model[:12]).stdout
    )


def test_clock_dependent_output_is_reported_as_differing(git_repo: Path) -> None:
    (git_repo / "stamp.py").write_text(
        "import time\nopen('stamp.txt', 'w').write(str(time.time_ns()))\n"
        "open('const.txt', 'w').write('same')\n"
    )
    git(git_repo, "add", "stamp.py")
    git(git_repo, "commit", "-q", "-m", "stamp")
    roar(git_repo, "run", "-q", "python", "stamp.py")
    stamp = digest(git_repo / "stamp.txt")
    proc = roar(git_repo, "reproduce", stamp[:12], "--run", "-y", rc=None)
    assert proc.returncode == 1
    assert "DIFFERS    stamp.txt" in proc.stdout and "identical  const.txt" in proc.stdout
    assert f"target {stamp[:16]}: DIFFERS" in proc.stdout
    rep = roar_json_allow_fail(git_repo, "reproduce", stamp[:12], "--run", "-y")
    assert rep["target"]["status"] == "differs" and not rep["identical"]


def test_dirty_tree_later_committed_differently_uses_the_snapshot(git_repo: Path) -> None:
    write_pipeline(git_repo)
    roar(git_repo, "run", "-q", "python", "prep.py", "raw.csv", "clean.csv")
    # An uncommitted edit, then a run: the run saw a snapshot tree.
    (git_repo / "features.py").write_text(
        (git_repo / "features.py").read_text().replace('",f"', '",dirty"')
    )
    roar(git_repo, "run", "-q", "python", "features.py")
    features = digest(git_repo / "features.csv")
    # The edit is later committed differently.
    (git_repo / "features.py").write_text(
        (git_repo / "features.py").read_text().replace('",dirty"', '",committed"')
    )
    git(git_repo, "commit", "-q", "-am", "a different edit")
    (git_repo / "features.csv").unlink()

    plan = roar_json(git_repo, "reproduce", features[:12])
    step = plan["steps"][-1]
    assert step["code"]["dirty"] and step["code"]["tree"] != git(
        git_repo, "rev-parse", "HEAD^{tree}"
    )
    rep = roar_json(git_repo, "reproduce", features[:12], "--run", "-y")
    assert rep["identical"]
    assert ",dirty" in Path(rep["target"]["path"]).read_text()


def test_unreachable_input_fails_at_plan_time(git_repo: Path) -> None:
    write_pipeline(git_repo)
    roar(git_repo, "run", "-q", "python", "prep.py", "raw.csv", "clean.csv")
    clean = digest(git_repo / "clean.csv")
    (git_repo / "raw.csv").unlink()  # source data, never an output: stored nowhere

    proc = roar(git_repo, "reproduce", clean[:12], rc=None)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "raw.csv" in err[0] and "reachable nowhere" in err[0]
    assert "this clone has no team store" in err[0]  # where the bytes might have been
    assert "MISSING" in proc.stdout
    plan = roar_json_allow_fail(git_repo, "reproduce", clean[:12])
    assert not plan["ok"] and plan["missing"][0]["path"] == "raw.csv"
    run = roar(git_repo, "reproduce", clean[:12], "--run", "-y", rc=None)
    assert run.returncode == 1 and not (git_repo / ".git" / "roar" / "worktrees").exists()
    # With a team store configured, the store was asked: no hint about configuring one.
    git(git_repo, "config", "roar.store.url", str(git_repo.parent / "team-store"))
    proc = roar(git_repo, "reproduce", clean[:12], rc=1)
    assert "reachable nowhere" in proc.stderr and "no team store" not in proc.stderr


def test_size_cap_records_by_hash_only_and_plan_regenerates(git_repo: Path) -> None:
    write_pipeline(git_repo)
    git(git_repo, "config", "roar.store.maxblobsize", "4")
    model = run_pipeline(git_repo)
    for name in ("clean.csv", "features.csv", "model.pkl"):
        (git_repo / name).unlink()
    proc = roar(git_repo, "reproduce", model[:12])
    # Nothing was stored (all above 4 bytes): the plan regenerates every step.
    assert "from @2 (will regenerate)" in proc.stdout and "from @1 (will regenerate)" in proc.stdout
    get = roar(git_repo, "get", model[:12], "-o", "x.pkl", rc=None)
    assert get.returncode == 1 and "roar reproduce" in get.stderr


def test_bad_refs_are_one_line_errors(git_repo: Path) -> None:
    write_pipeline(git_repo)
    roar(git_repo, "run", "-q", "python", "prep.py", "raw.csv", "clean.csv")
    raw = digest(git_repo / "raw.csv")
    for args, text in (
        (("reproduce", "abcdef0123"), "no artifact"),
        (("reproduce", "abc"), "too short"),
        (("reproduce", raw[:12]), "source data"),
        (("reproduce", "@1"), "names a run"),
    ):
        proc = roar(git_repo, *args, rc=None)
        assert proc.returncode == 1, args
        assert text in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "examples:" in roar(git_repo, "reproduce", "--help").stdout


def roar_json_allow_fail(cwd: Path, *args: str) -> dict[str, Any]:
    import json

    proc = roar(cwd, *args, "--json", rc=None)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
