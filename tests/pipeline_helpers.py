"""A small three-step pipeline (prep → features → train) for the tests that record, share and
reproduce it through the installed `roar`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cli_helpers import digest, git, roar

PREP = """\
import sys
src, dst = sys.argv[1], sys.argv[2]
open(dst, "w").write(open(src).read().upper())
"""
FEATURES = """\
import sys
rows = open("clean.csv").read().splitlines()
open("features.csv", "w").write("\\n".join(r + ",f" for r in rows) + "\\n")
"""
TRAIN = """\
import sys
lr = sys.argv[sys.argv.index("--lr") + 1]
data = open("features.csv").read()
open("model.pkl", "w").write(f"model(lr={lr}, n={len(data)})\\n" + data[::-1])
"""


def write_pipeline(repo: Path, *, commit: bool = True) -> None:
    """prep.py, features.py, train.py (committed) and raw.csv (untracked source data)."""
    (repo / "prep.py").write_text(PREP)
    (repo / "features.py").write_text(FEATURES)
    (repo / "train.py").write_text(TRAIN)
    (repo / "raw.csv").write_text("a,b\nc,d\ne,f\n")
    if commit:
        git(repo, "add", "prep.py", "features.py", "train.py")
        git(repo, "commit", "-q", "-m", "pipeline")


def run_pipeline(repo: Path, env: Mapping[str, str] | None = None) -> str:
    """The three steps; returns model.pkl's hash."""
    roar(repo, "run", "-q", "python", "prep.py", "raw.csv", "clean.csv", env=env)
    roar(repo, "run", "-q", "python", "features.py", env=env)
    roar(repo, "run", "-q", "python", "train.py", "--lr", "0.1", env=env)
    return digest(repo / "model.pkl")
