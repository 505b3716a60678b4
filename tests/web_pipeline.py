"""The demo pipeline the web view's tests look at, recorded once per test module with the
installed `roar` and the real tracer:

    @1 prep.py raw.csv clean.csv
    @2 train.py --data clean.csv --out model.pkl --lr 0.1    (run "train_a"), then --lr 0.01
    @3 eval.py model.pkl metrics.json                        (run "eval_a"), then again
    @1 prep.py again after raw.csv changed: @2 and @3 are stale
    @4 fail.py clean.csv: exits 3 (failed)

plus one run whose argv and output name hold markup and control characters ("hostile").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import git, roar
from conftest import build_once
from pipeline_scripts import EVAL, PREP, TRAIN

FAIL = """\
import sys
open(sys.argv[1]).read()
sys.exit(3)
"""

HOSTILE = """\
import sys
open(sys.argv[2], "w").write("x")
"""

# Markup and control characters: what a fetched record may carry in argv and paths.
EVIL_ARG = "<script>alert(1)</script>\x1b[31m\r\u202e"
EVIL_FILE = "out<img src=x onerror=alert(2)>\x1b[2J\x07.txt"


def last_run(repo: Path) -> str:
    entries: list[dict[str, Any]] = json.loads(roar(repo, "log", "-n", "1", "--json").stdout)
    return str(entries[0]["id"])


def record(repo: Path) -> dict[str, str]:
    """Record the pipeline in `repo` (a fresh git repository); the ids the tests name."""
    for name, text in (
        ("prep.py", PREP),
        ("train.py", TRAIN),
        ("eval.py", EVAL),
        ("fail.py", FAIL),
        ("hostile.py", HOSTILE),
    ):
        (repo / name).write_text(text)
    (repo / "raw.csv").write_text("a,1\nb,2\nc,3\n")
    git(repo, "add", "prep.py", "train.py", "eval.py", "fail.py", "hostile.py")
    git(repo, "commit", "-q", "-m", "pipeline")
    roar(repo, "init")
    ids: dict[str, str] = {}
    roar(repo, "run", "python", "prep.py", "raw.csv", "clean.csv")
    ids["prep"] = last_run(repo)
    train = ["python", "train.py", "--data", "clean.csv", "--out", "model.pkl"]
    roar(repo, "run", *train, "--lr", "0.1")
    ids["train_a"] = last_run(repo)
    roar(repo, "run", "python", "eval.py", "model.pkl", "metrics.json")
    ids["eval_a"] = last_run(repo)
    roar(repo, "run", *train, "--lr", "0.01")
    ids["train_b"] = last_run(repo)
    roar(repo, "run", "python", "eval.py", "model.pkl", "metrics.json")
    ids["eval_b"] = last_run(repo)
    out = json.loads(roar(repo, "show", "metrics.json", "--json").stdout)
    ids["metrics_b"] = out["hash"]
    ids["model_b"] = json.loads(roar(repo, "show", "model.pkl", "--json").stdout)["hash"]
    (repo / "raw.csv").write_text("a,1\nb,2\nc,3\nd,4\n")
    roar(repo, "run", "python", "prep.py", "raw.csv", "clean.csv")
    ids["prep_2"] = last_run(repo)
    roar(repo, "run", "python", "fail.py", "clean.csv", rc=None)
    ids["failed"] = last_run(repo)
    roar(repo, "run", "python", "hostile.py", EVIL_ARG, EVIL_FILE)
    ids["hostile"] = last_run(repo)
    return ids


def recorded_pipeline(factory: pytest.TempPathFactory, name: str) -> tuple[Path, dict[str, str]]:
    """(the repository, its ids), recorded once with an environment of its own."""
    return build_once(factory, name, record)
