"""Helpers for the reproduce/get tests (no tests here): drive the installed `roar` on real
pipelines."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blake3 import blake3

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


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def roar(
    cwd: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(
        ["roar", *args], cwd=cwd, capture_output=True, text=True, env=full, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"roar {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def roar_json(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> Any:
    return json.loads(roar(cwd, *args, "--json", env=env).stdout)


def digest(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


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
