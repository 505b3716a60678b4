"""A command's redirected streams (`roar run python score.py < in.jsonl > out.jsonl`) are
recorded with the run, and reproduction and `roar update` point them at the same files again:
an output the command only ever printed is reproduced byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_helpers import digest, git, roar, roar_json

SCORE = """\
import sys
for line in sys.stdin:
    print(line.strip().upper())
print("scored", file=sys.stderr)
"""


def _run_redirected(repo: Path, *args: str, stdin: str, stdout: str, stderr: str) -> None:
    """`roar ARGS < stdin > stdout 2> stderr`, as a shell runs it."""
    with (
        open(repo / stdin, "rb") as i,
        open(repo / stdout, "wb") as o,
        open(repo / stderr, "wb") as e,
    ):
        proc = subprocess.run(["roar", *args], cwd=repo, stdin=i, stdout=o, stderr=e)
    assert proc.returncode == 0, (repo / stderr).read_text()


def _pipeline(repo: Path) -> str:
    (repo / "score.py").write_text(SCORE)
    (repo / "in.txt").write_text("alpha\nbeta\n")
    (repo / ".gitignore").write_text("out/\n")
    git(repo, "add", "score.py", "in.txt", ".gitignore")
    git(repo, "commit", "-q", "-m", "score")
    roar(repo, "init")
    (repo / "out").mkdir()
    _run_redirected(
        repo,
        "run",
        "-q",
        sys.executable,
        "score.py",
        stdin="in.txt",
        stdout="out/scores.txt",
        stderr="out/log.txt",
    )
    assert (repo / "out" / "scores.txt").read_text() == "ALPHA\nBETA\n"
    return digest(repo / "out" / "scores.txt")


def test_the_streams_are_recorded_and_pointed_again_by_reproduction(git_repo: Path) -> None:
    scores = _pipeline(git_repo)
    record = roar_json(git_repo, "show", "@1")
    assert record["redirects"] == {
        "stdin": "in.txt",
        "stdout": "out/scores.txt",
        "stderr": "out/log.txt",
    }
    assert {f["path"] for f in record["inputs"]} == {"in.txt"}
    assert {f["path"] for f in record["outputs"]} == {"out/scores.txt", "out/log.txt"}
    shown = roar(git_repo, "show", "@1").stdout
    assert "stdout    > out/scores.txt" in shown and "stdin     < in.txt" in shown

    rep = roar_json(git_repo, "reproduce", scores[:12], "--run", "-y", "--no-reuse")
    assert rep["identical"], rep
    worktree = Path(rep["worktree"])
    assert (worktree / "out" / "scores.txt").read_text() == "ALPHA\nBETA\n"
    assert (worktree / "out" / "log.txt").read_text() == "scored\n"


def test_roar_update_points_the_streams_again(git_repo: Path) -> None:
    _pipeline(git_repo)
    (git_repo / "in.txt").write_text("gamma\n")
    roar(git_repo, "update")
    assert (git_repo / "out" / "scores.txt").read_text() == "GAMMA\n"
    assert (git_repo / "out" / "log.txt").read_text() == "scored\n"
    status = roar(git_repo, "status")
    assert "stale" not in status.stdout


def test_a_hostile_redirect_is_refused_with_nothing_written(git_repo: Path) -> None:
    """A record's stdout path goes through pathguard like any write: `..` is refused."""
    from roargit.pathguard import Root, UnsafePath
    from roargit.stdio import reopen

    outside = git_repo.parent / "escaped.txt"
    with Root(git_repo) as root:
        for bad in ("../escaped.txt", "/tmp/abs.txt", ".git/hooks/post-commit"):
            try:
                reopen({"stdout": bad}, root)
            except UnsafePath:
                pass
            else:
                raise AssertionError(f"{bad} was not refused")
    os.symlink(outside, git_repo / "link.txt")
    with Root(git_repo) as root:
        try:
            reopen({"stdout": "link.txt"}, root)
        except UnsafePath:
            pass
        else:
            raise AssertionError("a link was followed")
    assert not outside.exists()


def test_a_grouped_trace_stays_grouped_with_a_redirect_taken_out_of_its_group(
    tmp_path: Path,
) -> None:
    """stdio.with_redirects on trace_files.Accesses: no object per path is made for the groups, and
    a redirected file that a group also holds leaves the group with its new access."""
    from roargit.stdio import Redirect, with_redirects
    from roargit.trace_files import Accesses, FileAccess, FileGroup

    folder = str(tmp_path)
    names = [f"{folder}/f{i}.txt" for i in range(5)]
    read = FileAccess(names[0], read=True, regular=True)
    groups = [FileGroup(folder, list(names), tuple(read)[1:])]
    files = Accesses({}, groups)
    out = tmp_path / "f3.txt"
    with open(out, "w") as f:
        f.write("printed\n")
        f.flush()
        fd = os.dup(f.fileno())
    try:
        merged = with_redirects(files, [Redirect(fd, str(out))])
    finally:
        os.close(fd)
    assert isinstance(merged, Accesses) and merged.groups[0].paths == [
        n for n in names if n != str(out)
    ]
    assert merged[str(out)].written and merged[str(out)].read  # it was read too
    assert len(merged) == 5 and merged[names[0]] == read


def test_roar_run_of_a_step_label_points_its_recorded_streams_again(git_repo: Path) -> None:
    """`roar run @1` re-runs the step as recorded, `> out/scores.txt` included, unless the
    shell points that stream itself now."""
    _pipeline(git_repo)
    (git_repo / "in.txt").write_text("delta\n")
    (git_repo / "out" / "scores.txt").write_text("stale\n")
    roar(git_repo, "run", "-q", "@1")
    assert (git_repo / "out" / "scores.txt").read_text() == "DELTA\n"
    assert (git_repo / "out" / "log.txt").read_text() == "scored\n"
    record = roar_json(git_repo, "show", "@1")
    assert record["redirects"]["stdout"] == "out/scores.txt"
    # This shell points stdout elsewhere: that one wins, the recorded one is left alone.
    with open(git_repo / "elsewhere.txt", "wb") as out:
        subprocess.run(["roar", "run", "-q", "@1"], cwd=git_repo, stdout=out, check=True)
    assert (git_repo / "elsewhere.txt").read_text() == "DELTA\n"
    assert roar_json(git_repo, "show", "@1")["redirects"]["stdout"] == "elsewhere.txt"
