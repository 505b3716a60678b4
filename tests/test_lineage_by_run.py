"""Lineage by run and path, not by bytes alone: an input links to the run that last wrote
those bytes at that path before the reader started, even when other runs (another pipeline,
the reader itself) wrote the same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_helpers import digest, git, roar, roar_json

PREP = """\
import sys
rows = open(sys.argv[1]).read().splitlines()
open(sys.argv[2], "w").write("\\n".join(r.upper() for r in rows) + "\\n")
"""
# The model depends on the number of rows only: pipelines on edited data write the same bytes.
TRAIN = """\
import json, sys
rows = open(sys.argv[1]).read().splitlines()
json.dump({"rows": len(rows)}, open("model.json", "w"))
"""
EVAL = """\
import json, sys
model = json.load(open("model.json"))
json.dump({"score": model["rows"] * 2}, open(sys.argv[1], "w"))
"""


def run_json(repo: Path, *argv: str) -> Any:
    return json.loads(roar(repo, "run", "--json", *argv).stdout)


def three_pipelines(repo: Path) -> dict[str, dict[str, str]]:
    """Pipelines A, C, E one after the other, C and E on edited raw.csv; each writes
    clean<X>.csv and metrics<X>.json, and all three write the same model.json bytes."""
    for name, text in (("prep.py", PREP), ("train.py", TRAIN), ("eval.py", EVAL)):
        (repo / name).write_text(text)
    git(repo, "add", "prep.py", "train.py", "eval.py")
    git(repo, "commit", "-q", "-m", "pipeline")
    roar(repo, "init")
    out: dict[str, dict[str, str]] = {}
    for x, raw in (("A", "a,1\nb,2\n"), ("C", "a,1\nb,999\n"), ("E", "q,7\nr,8\n")):
        (repo / "raw.csv").write_text(raw)
        ids = {}
        for step, argv in (
            ("prep", ["python", "prep.py", "raw.csv", f"clean{x}.csv"]),
            ("train", ["python", "train.py", f"clean{x}.csv"]),
            ("eval", ["python", "eval.py", f"metrics{x}.json"]),
        ):
            ids[step] = run_json(repo, *argv)["id"]
        ids["raw"] = digest(repo / "raw.csv")
        ids["model"] = digest(repo / "model.json")
        ids["clean"] = digest(repo / f"clean{x}.csv")
        out[x] = ids
    assert out["A"]["model"] == out["C"]["model"] == out["E"]["model"]
    return out


def test_identical_bytes_from_three_pipelines_link_each_to_its_own_runs(git_repo: Path) -> None:
    p = three_pipelines(git_repo)
    lin = roar_json(git_repo, "lineage", "metricsC.json")
    assert [r["id"] for r in lin["runs"]] == [p["C"]["eval"], p["C"]["train"], p["C"]["prep"]]
    assert [(s["paths"], s["hash"]) for s in lin["sources"]] == [(["raw.csv"], p["C"]["raw"])]
    links = {(k["run"], k["path"]): (k["producer"], k["by_bytes"]) for k in lin["links"]}
    assert links == {
        (p["C"]["eval"], "model.json"): (p["C"]["train"], False),
        (p["C"]["train"], "cleanC.csv"): (p["C"]["prep"], False),
    }
    # The tree names C's own clean file.
    text = roar(git_repo, "lineage", "metricsC.json").stdout
    assert "cleanC.csv" in text and "cleanE.csv" not in text and "cleanA.csv" not in text

    dag = roar_json(git_repo, "dag", "metricsC.json")
    assert [s["run"] for s in dag["steps"]] == [p["C"]["prep"], p["C"]["train"], p["C"]["eval"]]
    labels = [s["step"] for s in dag["steps"]]
    assert [s["depends_on"] for s in dag["steps"]] == [[], labels[:1], labels[1:2]]

    # The diff pairs the steps through these links: the data changed, nothing else.
    proc = roar(git_repo, "diff", "metricsA.json", "metricsC.json", "--json", rc=None)
    assert proc.returncode == 1, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    causes = [(c["category"], c["what"], c["a"], c["b"]) for c in result["root_causes"]]
    assert causes == [("data", "raw.csv", p["A"]["raw"], p["C"]["raw"])], causes
    assert not result["by_category"]["pipeline"]
    assert result["counts"] == {"a_steps": 3, "b_steps": 3, "paired": 3}
    text = roar(git_repo, "diff", "metricsA.json", "metricsC.json", rc=None).stdout
    assert "source data raw.csv changed" in text and "step added" not in text


def test_copy_step_output_is_its_own_and_the_input_a_source(git_repo: Path) -> None:
    roar(git_repo, "init")
    (git_repo / "data.dat").write_text("payload\n")
    run = run_json(git_repo, "sh", "-c", "cat data.dat > out.dat")
    h = digest(git_repo / "data.dat")
    assert digest(git_repo / "out.dat") == h
    assert [f["path"] for f in run["inputs"]] == ["data.dat"]
    assert [f["path"] for f in run["outputs"]] == ["out.dat"]

    lin = roar_json(git_repo, "lineage", "out.dat")
    assert [r["id"] for r in lin["runs"]] == [run["id"]]
    assert lin["links"] == []
    assert [(s["paths"], s["hash"]) for s in lin["sources"]] == [(["data.dat"], h)]
    assert roar_json(git_repo, "show", "out.dat")["produced_by"] == [run["id"]]
    tree = roar(git_repo, "show", "out.dat").stdout.split("lineage:\n")[1].splitlines()
    # No loop through the copy: the input once, as source data.
    assert [line.split()[0] for line in tree] == ["out.dat", "data.dat"]
    assert tree[1].endswith("(source)")

    # data.dat itself was written by no run: its lineage is empty.
    src = roar_json(git_repo, "lineage", "data.dat")
    assert src["runs"] == [] and src["links"] == []
    shown = roar(git_repo, "show", "data.dat").stdout
    assert "source" in shown


def test_a_byte_match_elsewhere_is_flagged(git_repo: Path) -> None:
    """An input no run wrote at its path, whose bytes a run wrote elsewhere: linked to that
    run, and the link says it was found by bytes alone."""
    roar(git_repo, "init")
    (git_repo / "seed.txt").write_text("seed\n")
    make = run_json(git_repo, "sh", "-c", "cat seed.txt > made.txt")
    # Copied outside roar: no run wrote copy.txt.
    (git_repo / "copy.txt").write_bytes((git_repo / "made.txt").read_bytes())
    use = run_json(git_repo, "sh", "-c", "cat copy.txt > used.txt")
    lin = roar_json(git_repo, "lineage", "used.txt")
    assert [r["id"] for r in lin["runs"]] == [use["id"], make["id"]]
    assert lin["links"] == [
        {
            "run": use["id"],
            "path": "copy.txt",
            "hash": digest(git_repo / "copy.txt"),
            "producer": make["id"],
            "by_bytes": True,
        }
    ]
    assert "(same bytes, written elsewhere)" in roar(git_repo, "lineage", "used.txt").stdout


def test_a_lineage_thousands_of_steps_deep_is_shown_whole(git_repo: Path) -> None:
    """show, lineage and dag walk a 1,500-step chain without recursing once per step."""
    from blake3 import blake3

    from roargit import records
    from roargit.ledger import Ledger
    from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId
    from roargit.repo import find_repo

    def h(data: bytes) -> ArtifactId:
        return ArtifactId(blake3(data).hexdigest())

    n = 1500
    commit = git(git_repo, "rev-parse", "HEAD")
    tree = git(git_repo, "rev-parse", "HEAD^{tree}")
    session = records.SessionRecord(1_700_000_000 * 10**9, "deep", None)
    sid = SessionId(records.identify(session)[0])
    items: list[records.Record] = [session]
    prev = h(b"source")
    for k in range(n):
        out = h(b"out %d" % k)
        items.append(
            RunRecord(
                argv=("python", "step.py", str(k)),
                cwd=".",
                started_at=(1_700_000_000 + k) * 10**9,
                ended_at=(1_700_000_000 + k) * 10**9 + 1,
                exit_code=0,
                status="ok",
                inputs=(FileRef(f"s{k}.bin", prev, 6),),
                outputs=(FileRef(f"s{k + 1}.bin", out, 6),),
                code=CodeState(commit, "main", False, tree),
                session=sid,
                step=k + 1,
            )
        )
        prev = out
    Ledger(find_repo(git_repo)).import_records(items, per_commit=len(items))
    shown = roar(git_repo, "show", prev[:12]).stdout
    assert "s0.bin" in shown and shown.rstrip().endswith("(source)")
    assert len(roar_json(git_repo, "lineage", prev[:12])["runs"]) == n
    steps = roar_json(git_repo, "dag", prev[:12])["steps"]
    assert [s["command"][2] for s in steps] == [str(k) for k in range(n)]
