"""`roar diff` end to end: the installed `roar`, the real tracer, real git repositories.

Each scenario records a three-step pipeline (prep → train → eval), plants exactly one change,
records it again, and diffs the two `metrics.json`: the planted change must be the only root
cause, and everything downstream of it a consequence linked to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from cli_helpers import git, roar
from conftest import build_once, copy_repo
from pipeline_scripts import EVAL, PREP, TRAIN

DEDUP = """\
import sys
rows = open(sys.argv[1]).read().splitlines()
open(sys.argv[2], "w").write("\\n".join(dict.fromkeys(rows)) + "\\n")
"""

RAW = "a,1\nb,2\nb,2\nc,3\n"


def digest(path: Path) -> str:
    return blake3(path.read_bytes()).hexdigest()


def diff(repo: Path, a: str, b: str) -> dict[str, Any]:
    proc = roar(repo, "diff", a, b, "--json", rc=None)
    assert proc.returncode in (0, 1), proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == (0 if result["identical"] else 1)
    return result


def setup(repo: Path, train: str = TRAIN) -> None:
    for name, text in (
        ("prep.py", PREP),
        ("train.py", train),
        ("eval.py", EVAL),
        ("dedup.py", DEDUP),
    ):
        (repo / name).write_text(text)
    (repo / "raw.csv").write_text(RAW)  # untracked: data, not code
    git(repo, "add", "prep.py", "train.py", "eval.py", "dedup.py")
    git(repo, "commit", "-q", "-m", "pipeline")
    roar(repo, "init")


def pipeline(repo: Path, lr: str = "0.1", out: str = "", python: str = "python") -> None:
    if out:
        (repo / out).mkdir(exist_ok=True)
    roar(repo, "run", "python", "prep.py", "raw.csv", f"{out}clean.csv")
    roar(
        repo, "run", python, "train.py",
        "--data", f"{out}clean.csv", "--out", f"{out}model.pkl", "--lr", lr,
    )  # fmt: skip
    roar(repo, "run", "python", "eval.py", f"{out}model.pkl", f"{out}metrics.json")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline recorded once per module; tests work on copies."""

    def build(repo: Path) -> None:
        setup(repo)
        pipeline(repo)

    return build_once(tmp_path_factory, "recorded", build)[0]


@pytest.fixture
def repo(recorded: Path, tmp_path: Path) -> Path:
    """A copy of the recorded pipeline: prep → train --lr 0.1 → eval."""
    return copy_repo(recorded, tmp_path / "repo")


def rerun(repo: Path, *steps: str) -> None:
    for s in steps:
        roar(repo, "run", s)


def only_cause(result: dict[str, Any], category: str, step: str) -> dict[str, Any]:
    assert not result["identical"]
    causes = result["root_causes"]
    assert len(causes) == 1, causes
    cause = causes[0]
    assert cause["category"] == category
    assert cause["step"] == step
    [detail] = result["by_category"][category]
    assert {k: detail[k] for k in cause} == cause  # the same cause, with its details
    for other in ("code", "data", "params", "environment", "pipeline", "unexplained"):
        if other != category:
            assert result["by_category"][other] == [], other
    return cause


def consequences(result: dict[str, Any]) -> dict[str, list[int]]:
    """{artifact path or step label: the root causes it is linked to}."""
    out = {}
    for q in result["consequences"]:
        out[q["path"] if q["kind"] == "artifact" else q["step"]] = q["because"]
    return out


def test_param_change(repo: Path) -> None:
    before = digest(repo / "metrics.json")
    roar(repo, "run", "@2", "--lr=0.01")
    rerun(repo, "@3")
    result = diff(repo, before, "metrics.json")
    cause = only_cause(result, "params", "@2")
    assert (cause["what"], cause["a"], cause["b"]) == ("--lr", "0.1", "0.01")
    assert cause["script"] == "python train.py"
    assert consequences(result) == {"model.pkl": [1], "@3": [1], "metrics.json": [1]}
    states = {s["step"]: s["state"] for s in result["steps"]}
    assert states == {"@1": "same", "@2": "changed", "@3": "consequence"}

    human = roar(repo, "diff", before, "metrics.json", rc=None)
    assert human.returncode == 1
    assert human.stdout.splitlines()[0] == "1 root cause: --lr 0.1 → 0.01 on @2 python train.py"
    assert "\x1b[" not in human.stdout  # not a terminal: no colour


def test_source_data_change(repo: Path) -> None:
    before = digest(repo / "metrics.json")
    raw_before = digest(repo / "raw.csv")
    (repo / "raw.csv").write_text(RAW + "d,4\n")
    rerun(repo, "@1", "@2", "@3")
    result = diff(repo, before, "metrics.json")
    cause = only_cause(result, "data", "@1")
    assert (cause["what"], cause["a"], cause["b"]) == (
        "raw.csv",
        raw_before,
        digest(repo / "raw.csv"),
    )
    assert consequences(result) == {
        "clean.csv": [1], "@2": [1], "model.pkl": [1], "@3": [1], "metrics.json": [1],
    }  # fmt: skip


def test_code_change_committed(repo: Path) -> None:
    before = digest(repo / "metrics.json")
    (repo / "train.py").write_text(TRAIN.replace("len(rows) * a.lr", "len(rows) * a.lr * 2"))
    git(repo, "commit", "-q", "-am", "double the score")
    rerun(repo, "@2", "@3")
    result = diff(repo, before, "metrics.json")
    cause = only_cause(result, "code", "@2")
    assert cause["what"] == "train.py"
    detail = result["by_category"]["code"][0]
    assert detail["a_dirty"] is False and detail["b_dirty"] is False
    lines = [line for h in detail["hunks"] for line in h["lines"]]
    assert "-score = len(rows) * a.lr" in lines
    assert "+score = len(rows) * a.lr * 2" in lines
    assert consequences(result) == {"model.pkl": [1], "@3": [1], "metrics.json": [1]}
    human = roar(repo, "diff", before, "metrics.json", rc=None).stdout
    assert human.startswith("1 root cause: train.py changed at line 8 on @2 python train.py")
    assert "+score = len(rows) * a.lr * 2" in human


def test_code_change_in_a_dirty_tree(repo: Path) -> None:
    before = digest(repo / "metrics.json")
    (repo / "train.py").write_text(TRAIN.replace("rows={len(rows)}", "n={len(rows)}"))
    rerun(repo, "@2", "@3")  # not committed: the run's snapshot holds the change
    result = diff(repo, before, "metrics.json")
    cause = only_cause(result, "code", "@2")
    assert cause["what"] == "train.py"
    detail = result["by_category"]["code"][0]
    assert detail["a_dirty"] is False and detail["b_dirty"] is True
    lines = [line for h in detail["hunks"] for line in h["lines"]]
    assert any(line.startswith("+") and "n={len(rows)}" in line for line in lines)
    assert consequences(result) == {"model.pkl": [1], "@3": [1], "metrics.json": [1]}


def _wheel(out_dir: Path, version: str) -> Path:
    """A minimal pure-Python wheel (PEP 427) of `tinypkg`, written by hand: no network."""
    dist_info = f"tinypkg-{version}.dist-info"
    members = {
        "tinypkg/__init__.py": f"FACTOR = {version.split('.')[0]}\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    members[f"{dist_info}/RECORD"] = "".join(f"{p},,\n" for p in [*members, f"{dist_info}/RECORD"])
    path = out_dir / f"tinypkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


@pytest.mark.slow
def test_package_version_change(git_repo: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PIP_CONFIG_FILE": os.devnull}

    def install(version: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "-q", "--no-deps", "--no-index", "--disable-pip-version-check", "--force-reinstall",
             str(_wheel(wheels, version))],
            check=True, env=env,
        )  # fmt: skip

    install("1.0")
    train = "import tinypkg\n" + TRAIN.replace(
        "len(rows) * a.lr", "len(rows) * a.lr * tinypkg.FACTOR"
    )
    setup(git_repo, train)
    pipeline(git_repo, python=str(venv / "bin" / "python"))
    before = digest(git_repo / "metrics.json")
    install("2.0")
    rerun(git_repo, "@2", "@3")
    result = diff(git_repo, before, "metrics.json")
    cause = only_cause(result, "environment", "@2")
    assert (cause["what"], cause["a"], cause["b"]) == ("package tinypkg", "1.0", "2.0")
    assert consequences(result) == {"model.pkl": [1], "@3": [1], "metrics.json": [1]}
    human = roar(git_repo, "diff", before, "metrics.json", rc=None).stdout
    assert human.splitlines()[0].startswith("1 root cause: package tinypkg 1.0 → 2.0 on @2")


def test_extra_pipeline_step(repo: Path) -> None:
    before = digest(repo / "metrics.json")
    roar(repo, "reset")
    roar(repo, "run", "python", "prep.py", "raw.csv", "clean.csv")
    roar(repo, "run", "python", "dedup.py", "clean.csv", "dedup.csv")
    roar(repo, "run", "python", "train.py", "--data", "dedup.csv", "--out", "model.pkl",
         "--lr", "0.1")  # fmt: skip
    roar(repo, "run", "python", "eval.py", "model.pkl", "metrics.json")
    result = diff(repo, before, "metrics.json")
    cause = only_cause(result, "pipeline", "@2")
    assert (cause["what"], cause["a"], cause["b"]) == (
        "step added",
        None,
        "python dedup.py clean.csv dedup.csv",
    )
    # train reads another file through the same flag: a data path, not a params change
    assert consequences(result) == {
        "@2→@3": [1],
        "model.pkl": [1],
        "@3→@4": [1],
        "metrics.json": [1],
    }
    states = {s["step"]: s["state"] for s in result["steps"]}
    assert states == {"@1": "same", "@2": "added", "@2→@3": "consequence", "@3→@4": "consequence"}


def test_two_changes_at_once(repo: Path) -> None:
    before = digest(repo / "metrics.json")
    (repo / "raw.csv").write_text(RAW + "d,4\n")
    roar(repo, "run", "@1")
    roar(repo, "run", "@2", "--lr=0.5")
    roar(repo, "run", "@3")
    result = diff(repo, before, "metrics.json")
    causes = {(c["category"], c["step"], c["what"]): c["id"] for c in result["root_causes"]}
    assert set(causes) == {("data", "@1", "raw.csv"), ("params", "@2", "--lr")}
    data, lr = causes[("data", "@1", "raw.csv")], causes[("params", "@2", "--lr")]
    assert consequences(result) == {
        "clean.csv": [data],
        "model.pkl": sorted([data, lr]),
        "@3": sorted([data, lr]),
        "metrics.json": sorted([data, lr]),
    }
    human = roar(repo, "diff", before, "metrics.json", rc=None).stdout
    assert human.startswith("2 root causes: source data raw.csv changed")
    assert "--lr 0.1 → 0.5 on @2" in human.splitlines()[0]


def test_another_output_folder_is_not_a_params_change(git_repo: Path) -> None:
    setup(git_repo)
    pipeline(git_repo, out="out1/")
    prep_a = json.loads(roar(git_repo, "show", "@1", "--json").stdout)["id"]
    roar(git_repo, "reset")
    pipeline(git_repo, lr="0.01", out="out2/")
    prep_b = json.loads(roar(git_repo, "show", "@1", "--json").stdout)["id"]
    result = diff(git_repo, "out1/metrics.json", "out2/metrics.json")
    cause = only_cause(result, "params", "@2")
    assert (cause["what"], cause["a"], cause["b"]) == ("--lr", "0.1", "0.01")
    cons = {q["path"]: q.get("a_path") for q in result["consequences"] if q["kind"] == "artifact"}
    assert cons == {"out2/model.pkl": "out1/model.pkl", "out2/metrics.json": "out1/metrics.json"}
    # The same step into another folder: identical, exit 0, one line.
    proc = roar(git_repo, "diff", prep_a, prep_b, rc=None)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "identical lineages: 1 step with the same code, data, params and environment"
    ]


def test_identical_and_trouble(repo: Path) -> None:
    proc = roar(repo, "diff", "metrics.json", "@3", rc=None)
    assert proc.returncode == 0
    assert proc.stdout.startswith("identical")
    assert len(proc.stdout.splitlines()) == 1
    proc = roar(repo, "diff", "metrics.json", "nosuch.csv", rc=None)
    assert proc.returncode == 2
    assert proc.stderr == "roar: no artifact, run or step matches 'nosuch.csv'\n"
    assert proc.stdout == ""
    proc = roar(repo, "diff", "@9", "@3", rc=None)
    assert proc.returncode == 2
    assert proc.stderr.startswith("roar: no step @9")


def test_runs_from_another_clone(repo: Path, tmp_path: Path) -> None:
    ours = digest(repo / "metrics.json")
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(repo), str(other))
    (other / "raw.csv").write_text(RAW)
    roar(other, "init")
    pipeline(other, lr="0.2")
    theirs = digest(other / "metrics.json")
    with pytest.raises(AssertionError):
        roar(repo, "diff", ours, theirs)  # not fetched yet: unknown here
    git(repo, "fetch", "-q", str(other), "refs/roar/ledger:refs/roar/remotes/other/ledger")
    result = diff(repo, ours, theirs)
    cause = only_cause(result, "params", "@2")
    assert (cause["what"], cause["a"], cause["b"]) == ("--lr", "0.1", "0.2")
    assert consequences(result) == {"model.pkl": [1], "@3": [1], "metrics.json": [1]}


def test_colour_only_on_a_terminal(repo: Path) -> None:
    import pty

    before = digest(repo / "model.pkl")
    roar(repo, "run", "@2", "--lr=0.01")

    def on_tty(extra_env: dict[str, str]) -> str:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | extra_env
        proc = subprocess.Popen(
            ["roar", "diff", before, "model.pkl"], cwd=repo, stdout=slave, env=env
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait() == 1
        return b"".join(chunks).decode()

    assert "\x1b[31m" in on_tty({})
    assert "\x1b[" not in on_tty({"NO_COLOR": "1"})
