"""loose_ref.compare_and_swap moves a ref as `git update-ref` would, or leaves it to git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import git

from roargit.loose_ref import compare_and_swap

REF = "refs/roar/ledger"


def _commits(repo: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        git(repo, "commit", "-q", "--allow-empty", "-m", f"c{i}")
        out.append(git(repo, "rev-parse", "HEAD").strip())
    return out


def _value(repo: Path) -> str:
    return git(repo, "rev-parse", "--verify", REF).strip()


def test_moves_a_loose_ref_only_from_the_value_it_names(git_repo: Path) -> None:
    a, b, c = _commits(git_repo, 3)
    git(git_repo, "update-ref", REF, a)
    dot_git = git_repo / ".git"
    assert compare_and_swap(dot_git, REF, b, c) is False  # it names a, not b
    assert _value(git_repo) == a
    assert compare_and_swap(dot_git, REF, a, b) is True
    assert _value(git_repo) == b
    assert (dot_git / REF).read_text() == b + "\n"
    assert not (dot_git / f"{REF}.lock").exists()
    git(git_repo, "fsck", "--no-dangling")


def test_a_held_lock_is_a_refusal_and_is_left_alone(git_repo: Path) -> None:
    a, b = _commits(git_repo, 2)
    git(git_repo, "update-ref", REF, a)
    lock = git_repo / ".git" / f"{REF}.lock"
    lock.write_text("another writer\n")
    assert compare_and_swap(git_repo / ".git", REF, a, b) is False
    assert lock.read_text() == "another writer\n" and _value(git_repo) == a


def test_a_packed_ref_is_read_under_the_lock_and_shadowed(git_repo: Path) -> None:
    a, b = _commits(git_repo, 2)
    git(git_repo, "update-ref", REF, a)
    (git_repo / ".git" / "refs" / "roar" / "keep").write_text(a + "\n")  # keeps the folder
    git(git_repo, "pack-refs", "--all", "--prune")
    assert not (git_repo / ".git" / REF).exists()
    assert compare_and_swap(git_repo / ".git", REF, b, a) is False
    assert compare_and_swap(git_repo / ".git", REF, a, b) is True
    assert _value(git_repo) == b
    git(git_repo, "pack-refs", "--all", "--prune")  # git takes it from here
    assert _value(git_repo) == b


def test_what_is_git_s_to_do_is_left_to_git(git_repo: Path) -> None:
    a, b = _commits(git_repo, 2)
    dot_git = git_repo / ".git"
    assert compare_and_swap(dot_git, REF, a, b) is None  # no such ref yet
    git(git_repo, "update-ref", "--create-reflog", "-m", "made", REF, a)
    assert (dot_git / "logs" / REF).exists()
    assert compare_and_swap(dot_git, REF, a, b) is None  # it has a reflog: git appends
    git(git_repo, "symbolic-ref", "refs/roar/other", "refs/heads/main")
    assert compare_and_swap(dot_git, "refs/roar/other", a, b) is None
    assert _value(git_repo) == a


def test_the_ref_keeps_the_permissions_it_had(git_repo: Path) -> None:
    a, b = _commits(git_repo, 2)
    git(git_repo, "update-ref", REF, a)
    os.chmod(git_repo / ".git" / REF, 0o664)  # as core.sharedRepository=group leaves it
    assert compare_and_swap(git_repo / ".git", REF, a, b) is True
    assert (git_repo / ".git" / REF).stat().st_mode & 0o777 == 0o664


def test_many_writers_each_move_it_once(git_repo: Path) -> None:
    """Writers racing with `git update-ref` itself: every move is from the value it read."""
    commits = _commits(git_repo, 1)
    git(git_repo, "update-ref", REF, commits[0])
    before = int(git(git_repo, "rev-list", "--count", REF))
    script = (
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "from roargit.loose_ref import compare_and_swap\n"
        "repo, n = Path(sys.argv[1]), int(sys.argv[2])\n"
        "moved = 0\n"
        "while moved < n:\n"
        "    old = subprocess.run(['git', 'rev-parse', 'refs/roar/ledger'], cwd=repo,"
        " capture_output=True, text=True).stdout.strip()\n"
        "    new = subprocess.run(['git', 'commit-tree', '-p', old, '-m', 'w', old + '^{tree}'],"
        " cwd=repo, capture_output=True, text=True).stdout.strip()\n"
        "    if compare_and_swap(repo / '.git', 'refs/roar/ledger', old, new):\n"
        "        moved += 1\n"
    )
    import sys

    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(git_repo), "15"]) for _ in range(4)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    # Every move was a compare-and-swap: the chain holds all 60 commits, none lost.
    assert int(git(git_repo, "rev-list", "--count", REF)) == before + 60


def test_a_pin_is_made_and_removed_as_git_would(git_repo: Path) -> None:
    from roargit.loose_ref import create, delete

    a, b = _commits(git_repo, 2)
    dot_git = git_repo / ".git"
    pin = "refs/roar/tmp/123-abcd"
    assert compare_and_swap(dot_git, pin, a, b) is None  # no such ref: not a move
    assert create(dot_git, pin, a) is True
    assert git(git_repo, "rev-parse", pin).strip() == a
    assert create(dot_git, pin, b) is False  # exists already
    assert delete(dot_git, pin) is True
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", pin], cwd=git_repo).returncode
    assert delete(dot_git, pin) is True  # not there: nothing to do
    assert create(dot_git, pin, a) is True
    git(git_repo, "pack-refs", "--all")
    assert delete(dot_git, pin) is None  # packed too: git rewrites packed-refs
    assert create(dot_git, pin, b) is False


def test_read_gives_a_loose_or_packed_ref_as_git_does(git_repo: Path) -> None:
    from roargit.loose_ref import read

    a, b = _commits(git_repo, 2)
    dot_git = git_repo / ".git"
    assert read(dot_git, REF) == (True, None)  # no such ref
    git(git_repo, "update-ref", REF, a)
    assert read(dot_git, REF) == (True, a)
    (git_repo / ".git" / "refs" / "roar" / "keep").write_text(a + "\n")
    git(git_repo, "pack-refs", "--all", "--prune")
    assert read(dot_git, REF) == (True, a)  # from packed-refs
    git(git_repo, "update-ref", REF, b)
    assert read(dot_git, REF) == (True, b)  # the loose one wins
    git(git_repo, "symbolic-ref", "refs/roar/sym", REF)
    assert read(dot_git, "refs/roar/sym") == (False, None)  # git's to follow
