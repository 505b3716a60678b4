"""Data is data wherever it lives; code is what the code rule (`roar.code`) names or a run
executed. The installed `roar`, the real tracer, real repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from blake3 import blake3
from cli_helpers import git, roar, roar_json

from roargit.codestate import DEFAULT_CODE_GLOBS, CodeRule

PY = os.path.basename(sys.executable)

PREP = "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())\n"


def b3(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


# -- the rule ---------------------------------------------------------------------------------


def test_default_rule_names_code_and_configuration_not_data() -> None:
    rule = CodeRule()
    code = [
        "train.py", "src/pkg/mod.PY", "nb/explore.ipynb", "run.sh", "Makefile", "sub/Dockerfile",
        "conf/params.yaml", "pyproject.toml", "setup.cfg", "requirements.txt",
        "requirements-dev.txt", "native/CMakeLists.txt", "src/kernel.cu",
    ]  # fmt: skip
    data = [
        "data/raw.csv", "notes.txt", "data/shard-001.txt", "README.md", "model.pkl",
        "data/x.json", "images/a.png", "mkfile", "x.py.bin", ".py", "Makefile.bak",
    ]  # fmt: skip
    assert [p for p in code if not rule.matches(p)] == []
    assert [p for p in data if rule.matches(p)] == []


def test_configured_rule_adds_excludes_and_anchors() -> None:
    rule = CodeRule("default,*.json,!data/**,conf/*.txt")
    assert rule.matches("params.json") and rule.matches("a/b/params.json")
    assert not rule.matches("data/params.json") and not rule.matches("data/sub/prep.py")
    assert rule.matches("conf/list.txt") and not rule.matches("x/conf/list.txt")
    assert rule.matches("src/prep.py")
    only = CodeRule("scripts/")
    assert only.matches("scripts/a/b.bin") and not only.matches("src/prep.py")
    assert CodeRule("").spec == "" and CodeRule("").matches("x.py")  # empty: the default
    assert set(DEFAULT_CODE_GLOBS) >= {"*.py", "Makefile", "*.yaml"}


@pytest.mark.parametrize("spec", ["", "default,!data/**", "src/**,*.R", "*.csv,Makefile"])
def test_find_in_a_listing_agrees_with_matches(spec: str) -> None:
    rule = CodeRule(spec)
    names = [
        "a.py", "data/b.py", "src/x/y.bin", "Tool.R", "k.csv", "sub/Makefile", "notes.txt",
        "requirements.txt", "CMakeLists.txt", "café/run.r", "data/raw.csv", "x.py.bin",
    ]  # fmt: skip
    for listing in (names, [n for n in names if n.isascii()]):
        text = "\0" + "\0".join(listing) + "\0"
        assert rule.find(text) == [n for n in listing if rule.matches(n)]


# -- runs -------------------------------------------------------------------------------------


def test_committed_csv_is_a_source_artifact_by_hash_and_code_keeps_its_blob(
    git_repo: Path,
) -> None:
    repo = git_repo
    (repo / "data").mkdir()
    (repo / "prep.py").write_text(PREP)
    (repo / "params.yaml").write_text("lr: 0.1\n")
    (repo / "data" / "raw.csv").write_text("a,b\n1,2\n")
    git(repo, "add", "prep.py", "params.yaml", "data/raw.csv")
    git(repo, "commit", "-q", "-m", "pipeline and its data")
    script = "import sys; open('params.yaml').read(); exec(open('prep.py').read())"
    rec = roar_json(repo, "run", PY, "-c", script, "data/raw.csv", "clean.csv")
    raw = repo / "data" / "raw.csv"
    assert rec["inputs"] == [{"path": "data/raw.csv", "hash": b3(raw), "size": 8}]
    assert rec["code"]["dirty"] is False
    assert rec["code"]["inputs"] == [
        {"path": "params.yaml", "blob": git(repo, "hash-object", "params.yaml")},
        {"path": "prep.py", "blob": git(repo, "hash-object", "prep.py")},
    ]
    lineage = roar_json(repo, "lineage", "clean.csv")
    assert [(s["paths"], s["hash"]) for s in lineage["sources"]] == [(["data/raw.csv"], b3(raw))]

    # An edit of the committed data is no code change: no snapshot, and diff says "data".
    before = b3(repo / "clean.csv")
    raw.write_text("a,b\n3,4\n")
    again = roar_json(repo, "run", PY, "-c", script, "data/raw.csv", "clean.csv")
    assert again["code"]["dirty"] is False
    assert again["code"]["tree"] == rec["code"]["tree"]
    result = json.loads(
        subprocess.run(
            ["roar", "diff", before, "clean.csv", "--json"],
            cwd=repo,
            capture_output=True,
            text=True,
        ).stdout
    )
    causes = [(c["category"], c["what"], c["a"], c["b"]) for c in result["root_causes"]]
    assert causes == [("data", "data/raw.csv", rec["inputs"][0]["hash"], b3(raw))]
    data = result["by_category"]["data"][0]
    assert (data["path"], data["a_size"], data["b_size"]) == ("data/raw.csv", 8, 8)


def test_untracked_text_data_never_enters_a_snapshot(git_repo: Path) -> None:
    repo = git_repo
    (repo / "shards").mkdir()
    for i in range(300):
        (repo / "shards" / f"s{i:03d}.txt").write_text(f"line {i}\n")
    (repo / "notes.txt").write_text("mine\n")
    rec = roar_json(repo, "run", "sh", "-c", "cat shards/*.txt notes.txt > all.out")
    assert rec["code"]["dirty"] is False  # nothing but data is new
    assert rec["code"]["inputs"] == []
    paths = {f["path"] for f in rec["inputs"]}
    assert "notes.txt" in paths and ("shards/" in paths or "shards/s000.txt" in paths)
    # A new script makes the tree dirty; the data files still stay out of the snapshot.
    (repo / "cat.sh").write_text("cat shards/*.txt notes.txt > all2.out\n")
    rec = roar_json(repo, "run", "sh", "cat.sh")
    tree = rec["code"]["tree"]
    listed = git(repo, "ls-tree", "-r", "--name-only", tree).splitlines()
    assert "cat.sh" in listed and "notes.txt" not in listed
    assert not any(p.startswith("shards/") for p in listed)
    assert [c["path"] for c in rec["code"]["inputs"]] == ["cat.sh"]


def test_an_executed_file_is_code_whatever_its_name_and_roar_code_is_read(
    git_repo: Path,
) -> None:
    repo = git_repo
    (repo / "tool").write_text('#!/bin/sh\ncat "$1" "$1" > "$2"\n')
    (repo / "tool").chmod(0o755)
    (repo / "in.json").write_text("{}\n")
    git(repo, "add", "tool", "in.json")
    git(repo, "commit", "-q", "-m", "tool")
    rec = roar_json(repo, "run", "./tool", "in.json", "out.json")
    assert [c["path"] for c in rec["code"]["inputs"]] == ["tool"]
    assert [f["path"] for f in rec["inputs"]] == ["in.json"]
    roar(repo, "config", "set", "code", "default,*.json")
    rec = roar_json(repo, "run", "./tool", "in.json", "out2.json")
    assert [c["path"] for c in rec["code"]["inputs"]] == ["in.json", "tool"]
    assert rec["inputs"] == []


def test_work_tree_status_reads_head_and_odd_names_from_one_git_status(
    git_repo: Path, tmp_path: Path
) -> None:
    """codestate.work_tree_status: HEAD's commit and branch, changed tracked code, untracked
    code (a name that starts like a status record included), with no cat-file asked."""
    from roargit.codestate import work_tree_status
    from roargit.repo import find_repo

    unborn = tmp_path / "unborn"
    git(tmp_path, "init", "-q", str(unborn))
    (unborn / "c.py").write_text("")
    empty = work_tree_status(find_repo(unborn))
    assert (empty.commit, empty.branch, empty.untracked) == (None, None, ("c.py",))
    paths = find_repo(git_repo)
    (git_repo / "a.py").write_text("x = 1\n")
    (git_repo / "data.csv").write_text("1,2\n")
    git(git_repo, "add", "a.py", "data.csv")
    git(git_repo, "commit", "-q", "-m", "a")
    head = git(git_repo, "rev-parse", "HEAD").strip()
    branch = git(git_repo, "symbolic-ref", "--short", "HEAD").strip()
    (git_repo / "a.py").write_text("x = 2\n")
    (git_repo / "data.csv").write_text("3,4\n")  # data: no snapshot
    (git_repo / "? odd.py").write_text("y = 1\n")
    (git_repo / "new dir").mkdir()
    (git_repo / "new dir" / "b.py").write_text("z = 1\n")
    st = work_tree_status(paths)
    assert (st.commit, st.branch) == (head, branch)
    assert st.modified == ("a.py",)
    # A folder untracked as a whole is one entry: its code joins a snapshot when read.
    assert st.untracked == ("? odd.py",) and st.untracked_dirs == ("new dir/",)
    git(git_repo, "checkout", "-q", "--detach")
    assert work_tree_status(paths).branch is None and work_tree_status(paths).commit == head


@pytest.mark.parametrize(
    "spec", ["", "default,!tests/**", "src/**,*.csv", "*.PY,Makefile,conf/*.j2"]
)
def test_find_in_a_listing_agrees_with_matching_each_path(spec: str) -> None:
    """CodeRule.find searches a NUL-separated listing by endings (a regex for the dotted
    ones, str.find for whole names); it must give what matching every path gives."""
    rule = CodeRule(spec)
    names = [
        "data/f0001.bin", "src/Makefile", "a/GNUmakefile", "x/requirements-dev.txt",
        "notes.txt", "CMakeLists.txt", "b/c.PY", "tests/t.py", "src/deep/m.py", ".py",
        "conf/a.j2", "conf/b/a.j2", "Makefile.bak", "dockerfile", "q/x.csv", "src/x.bin",
    ]  # fmt: skip
    text = "\0" + "\0".join(names * 3) + "\0"
    assert rule.find(text) == [n for n in names * 3 if rule.matches(n)]
