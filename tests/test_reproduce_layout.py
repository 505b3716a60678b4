"""Reproduction gives each step the folder layout its run had: the common ML layout writes
into untracked folders (`work/`, `features/`) that a worktree or a fresh clone lacks."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import digest, git, roar, roar_json

PREPARE = """\
import sys
rows = open("data/raw.csv").read().splitlines()
open("work/clean.csv", "w").write("\\n".join(r.strip().lower() for r in rows) + "\\n")
"""
FEATURIZE = """\
rows = open("work/clean.csv").read().splitlines()
open("features/feats.csv", "w").write("\\n".join(f"{r},{len(r)}" for r in rows) + "\\n")
"""
TRAIN = """\
import json
rows = open("features/feats.csv").read().splitlines()
json.dump({"weights": [len(r) for r in rows]}, open("work/model.json", "w"))
"""
EVALUATE = """\
import json
model = json.load(open("work/model.json"))
json.dump({"score": sum(model["weights"])}, open("work/metrics.json", "w"))
"""
STEPS = (
    ("prepare.py", PREPARE),
    ("featurize.py", FEATURIZE),
    ("train.py", TRAIN),
    ("evaluate.py", EVALUATE),
)
OUTPUTS = ("work/clean.csv", "features/feats.csv", "work/model.json", "work/metrics.json")


def record_pipeline(repo: Path, store_url: str | None = None) -> dict[str, str]:
    """The four steps, their code committed, outputs in ignored folders made by hand as a
    user would (the scripts do not make them). Returns {output path: hash}."""
    for name, text in STEPS:
        (repo / name).write_text(text)
    (repo / ".gitignore").write_text("work/\nfeatures/\n")
    (repo / "data").mkdir()
    (repo / "data" / "raw.csv").write_text("Alpha\nBeta\nGamma\n")
    names = [n for n, _ in STEPS] + [".gitignore"]
    if store_url:
        git(repo, "config", "--file", ".roarconfig", "roar.store.url", store_url)
        names.append(".roarconfig")
    git(repo, "add", *names)
    git(repo, "commit", "-q", "-m", "pipeline")
    roar(repo, "init")
    (repo / "work").mkdir()
    (repo / "features").mkdir()
    for name, _ in STEPS:
        roar(repo, "run", "-q", "python", name)
    return {p: digest(repo / p) for p in OUTPUTS}


def assert_identical(rep: dict[str, object], hashes: dict[str, str]) -> None:
    assert rep["identical"], rep
    artifacts = rep["artifacts"]
    assert isinstance(artifacts, list)
    assert {a["path"]: a["status"] for a in artifacts} == dict.fromkeys(OUTPUTS, "identical")
    target = rep["target"]
    assert isinstance(target, dict)
    assert digest(Path(target["path"])) == hashes["work/metrics.json"]


def test_no_reuse_makes_the_untracked_output_folders(git_repo: Path) -> None:
    hashes = record_pipeline(git_repo)
    metrics = hashes["work/metrics.json"]
    rep = roar_json(git_repo, "reproduce", metrics[:12], "--run", "-y", "--no-reuse")
    assert [s["action"] for s in rep["steps"]] == ["ran"] * 4
    assert_identical(rep, hashes)
    worktree = Path(rep["worktree"])
    for p, h in hashes.items():
        assert digest(worktree / p) == h


def test_fresh_clone_makes_the_untracked_output_folders(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    hashes = record_pipeline(git_repo, f"file://{tmp_path / 'team-store'}")
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    git(git_repo, "push", "-q", "origin", "main", "refs/roar/ledger:refs/roar/ledger")
    clone = tmp_path / "elsewhere"
    git(tmp_path, "clone", "-q", str(bare_remote), str(clone))
    roar(clone, "init")
    git(clone, "fetch", "-q")
    assert not (clone / "work").exists() and not (clone / "features").exists()
    metrics = hashes["work/metrics.json"]
    # With reuse, the intermediates come from the team store and only the last step runs.
    rep = roar_json(clone, "reproduce", metrics[:12], "--run", "-y")
    assert rep["identical"], rep
    rep = roar_json(clone, "reproduce", metrics[:12], "--run", "-y", "--no-reuse")
    assert [s["action"] for s in rep["steps"]] == ["ran"] * 4
    assert_identical(rep, hashes)
    out = clone / "metrics.json"
    roar(clone, "reproduce", metrics[:12], "--run", "-y", "--no-reuse", "-o", str(out))
    assert digest(out) == metrics
    # The user's own work tree is left as it was.
    assert not (clone / "work").exists()


MAKES_ITS_FOLDER = """\
import os, sys
os.mkdir("out")  # fails if it is there: the reproduction must not make it first
os.makedirs("out/deep/er")
open("out/deep/er/result.txt", "w").write(open("data/raw.csv").read().upper())
os.mkdir("scratch")  # made, then removed: no folder of the run's
os.rmdir("scratch")
"""


def test_a_folder_the_run_made_is_left_for_it_to_make_again(git_repo: Path) -> None:
    (git_repo / "make.py").write_text(MAKES_ITS_FOLDER)
    (git_repo / "data").mkdir()
    (git_repo / "data" / "raw.csv").write_text("a,b\n")
    (git_repo / ".gitignore").write_text("out/\n")
    git(git_repo, "add", "make.py", "data/raw.csv", ".gitignore")
    git(git_repo, "commit", "-q", "-m", "make")
    roar(git_repo, "init")
    roar(git_repo, "run", "-q", "python", "make.py")
    record = roar_json(git_repo, "show", "@1")
    assert record["created_dirs"] == ["out"]  # outermost only; scratch is gone
    result = digest(git_repo / "out" / "deep" / "er" / "result.txt")
    rep = roar_json(git_repo, "reproduce", result[:12], "--run", "-y", "--no-reuse")
    assert rep["identical"], rep
    assert digest(Path(rep["worktree"]) / "out" / "deep" / "er" / "result.txt") == result
