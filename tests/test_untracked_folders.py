"""Code in a folder that is untracked as a whole (`experiments/`, `data/`): git's status lists
the folder as one entry, and the code files a run read from it join the run's snapshot after
the command (codestate.add_read_code). Reproduction then finds them, unread ones stay out,
and nothing of the snapshot's temporary pins is left behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cli_helpers import digest, git, roar, roar_json

PY = os.path.basename(sys.executable)

TRAIN = """import sys
sys.path.insert(0, "exp")
from helper import scale
import json
cfg = open("exp/config.yaml").read().split(":")[1].strip()
rows = open("data/raw.csv").read().split()
open("result.txt", "w").write(" ".join(str(scale(len(r), int(cfg))) for r in rows))
"""


def tree_files(repo: Path, tree: str) -> list[str]:
    return sorted(filter(None, git(repo, "ls-tree", "-r", "-z", "--name-only", tree).split("\0")))


def pins(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", "refs/roar/tmp").split()


def make_experiment(repo: Path) -> None:
    (repo / "exp").mkdir()
    (repo / "exp" / "train.py").write_text(TRAIN)
    (repo / "exp" / "helper.py").write_text("def scale(n, k):\n    return n * k\n")
    (repo / "exp" / "config.yaml").write_text("k: 3\n")
    (repo / "exp" / "scratch.py").write_text("unrelated = True\n")  # never read
    (repo / "data").mkdir()
    (repo / "data" / "raw.csv").write_text("a\nbb\nccc\n")


def test_code_read_from_an_untracked_folder_joins_the_snapshot(git_repo: Path) -> None:
    make_experiment(git_repo)
    rec = roar_json(git_repo, "run", PY, "exp/train.py")
    code = rec["code"]
    assert code["dirty"] is True
    assert tree_files(git_repo, code["tree"]) == [
        "README", "exp/config.yaml", "exp/helper.py", "exp/train.py"
    ]  # fmt: skip
    assert [c["path"] for c in code["inputs"]] == [
        "exp/config.yaml",
        "exp/helper.py",
        "exp/train.py",
    ]
    assert [i["path"] for i in rec["inputs"]] == ["data/raw.csv"]  # data, by hash
    assert git(git_repo, "show", f"{code['tree']}:exp/helper.py").startswith("def scale")
    assert pins(git_repo) == []
    # The snapshot's objects are named by the ledger: a gc keeps them.
    git(git_repo, "gc", "-q", "--prune=now")
    assert git(git_repo, "cat-file", "-t", code["tree"]) == "tree"

    # Reproduced from the snapshot alone: the worktree has the code the run read.
    result = digest(git_repo / "result.txt")
    rep = roar_json(git_repo, "reproduce", result[:12], "--run", "-y", "--no-reuse")
    assert rep["identical"], rep
    worktree = Path(rep["worktree"])
    assert (worktree / "exp" / "helper.py").exists() and not (
        worktree / "exp" / "scratch.py"
    ).exists()


def test_a_dirty_snapshot_grows_by_the_code_read_from_untracked_folders(git_repo: Path) -> None:
    (git_repo / "run.py").write_text("import sys\nsys.path.insert(0, 'lib')\nimport util\n")
    git(git_repo, "add", "run.py")
    git(git_repo, "commit", "-q", "-m", "run")
    (git_repo / "run.py").write_text(
        "import sys\nsys.path.insert(0, 'lib')\nimport util\nopen('out.txt', 'w').write(util.X)\n"
    )
    (git_repo / "notes.py").write_text("# untracked in a tracked folder: always snapshotted\n")
    (git_repo / "lib").mkdir()
    (git_repo / "lib" / "util.py").write_text("X = 'x'\n")
    rec = roar_json(git_repo, "run", PY, "run.py")
    tree = rec["code"]["tree"]
    assert tree_files(git_repo, tree) == ["README", "lib/util.py", "notes.py", "run.py"]
    assert "util.X" in git(git_repo, "show", f"{tree}:run.py")  # the edit, as before the run
    assert pins(git_repo) == []


def test_no_commit_yet_and_files_the_snapshot_must_not_take(tmp_path: Path) -> None:
    """Before the first commit the snapshot is the read code alone; an ignored file, a
    secret-looking one, a big one and one in a repository of its own stay out."""
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("*.gen.py\n")
    src = repo / "src"
    src.mkdir()
    (src / "main.py").write_text("x = 1\n")
    (src / "made.gen.py").write_text("x = 2\n")  # ignored
    (src / "secrets.yaml").write_text("token: t\n")  # secret-looking
    (src / "huge.py").write_text("#" * ((1 << 20) + 10))  # too big to be source
    (src / "vendor").mkdir()
    git(src / "vendor", "init", "-q")
    (src / "vendor" / "lib.py").write_text("y = 1\n")  # its own repository
    names = ["main.py", "made.gen.py", "secrets.yaml", "huge.py", "vendor/lib.py"]
    proc = roar(
        repo, "run", "--json", "sh", "-c", "cd src && cat " + " ".join(names) + " >/dev/null"
    )
    import json

    rec = json.loads(proc.stdout)
    assert rec["code"]["commit"] is None and rec["code"]["dirty"] is True
    assert tree_files(repo, rec["code"]["tree"]) == ["src/main.py"]
    assert "secret-looking" in proc.stderr and "src/secrets.yaml" in proc.stderr
    assert sorted(i["path"] for i in rec["inputs"]) == [
        "src/huge.py", "src/made.gen.py", "src/secrets.yaml", "src/vendor/lib.py"
    ]  # fmt: skip
    assert pins(repo) == []


def test_a_clean_run_over_an_untracked_data_folder_stays_clean(git_repo: Path) -> None:
    (git_repo / "data").mkdir()
    for i in range(50):
        (git_repo / "data" / f"part{i}.py.csv").write_text(f"{i}\n")  # data, whatever the name
    rec = roar_json(git_repo, "run", "sh", "-c", "cat data/* > all.csv")
    assert rec["code"]["dirty"] is False
    assert rec["code"]["tree"] == git(git_repo, "rev-parse", "HEAD^{tree}")
    assert pins(git_repo) == []
