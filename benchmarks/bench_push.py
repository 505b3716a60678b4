"""Sharing: `roar push` to a local bare remote and a file:// team store, and the pre-commit hook.

Goals: push of 1,000 new records + 1,000 small blobs ≤ 3 s; incremental push of 10 new
records (and their blobs) ≤ 0.3 s, beside a bare `git push` of the same ledger update; the
pre-commit hook on a commit of 1,000 staged files, all of them recorded outputs of a
1,000-step session, ≤ 0.2 s — timed as the first check in the session (every record read),
after 10 more steps were recorded (the usual commit: only theirs are read) and with nothing
recorded since the last check. Each is timed as the whole `roar` process a user or git starts.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.timing import median_seconds, verdict
from roargit import records
from roargit.blobstore import BlobStore
from roargit.ledger import Ledger
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId, SessionRecord
from roargit.repo import find_repo

ROAR = [sys.executable, "-m", "roargit"]


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def roar(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROAR, *args], cwd=cwd, check=True, capture_output=True, text=True)


def timed(cwd: Path, *args: str) -> tuple[float, str]:
    t = time.perf_counter()
    proc = roar(cwd, *args)
    return time.perf_counter() - t, proc.stdout


def add_runs(repo: Path, first: int, count: int, session: str) -> None:
    """`count` runs, each writing one small file (in the work tree and the local store, as
    `roar run` leaves them), imported into the ledger at once."""
    paths = find_repo(repo)
    local = BlobStore(f"file://{paths.roar_dir / 'blobs'}")
    commit = git(repo, "rev-parse", "HEAD")
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    (repo / "out").mkdir(exist_ok=True)

    def generate() -> Iterator[records.Record]:
        for n in range(first, first + count):
            data = f"result {n}\n".encode() * 8
            (repo / "out" / f"r{n}.txt").write_bytes(data)
            digest = ArtifactId(local.put_bytes(data))
            yield RunRecord(
                argv=("python", "step.py", f"--n={n}"),
                cwd=".",
                started_at=(1_700_000_000 + n) * 10**9,
                ended_at=(1_700_000_000 + n) * 10**9 + 5 * 10**8,
                exit_code=0,
                status="ok",
                inputs=(),
                outputs=(FileRef(f"out/r{n}.txt", digest, len(data)),),
                code=CodeState(commit=commit, branch="main", dirty=False, tree=tree),
                session=SessionId(session),
                step=n + 1,
            )

    Ledger(paths).import_records(generate(), per_commit=count)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="roar-bench-push-"))
    try:
        remote = tmp / "remote.git"
        git(tmp, "init", "-q", "--bare", str(remote))
        repo = tmp / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "step.py").write_text("print('step')\n")
        git(repo, "add", "step.py")
        git(repo, "commit", "-q", "-m", "code")
        git(repo, "remote", "add", "origin", str(remote))
        git(repo, "push", "-q", "origin", "main")
        roar(repo, "init")
        roar(repo, "config", "set", "store.url", f"file://{tmp / 'store'}")
        session = SessionRecord(created_at=1_700_000_000 * 10**9, clone="bench", parent=None)
        sid, _ = records.identify(session)
        Ledger(find_repo(repo)).import_records([session])
        (find_repo(repo).roar_dir / "session.json").write_text(
            json.dumps({"id": sid, "popped": []})
        )

        add_runs(repo, 0, 1000, sid)
        first, out = timed(repo, "push", "--json")
        report = json.loads(out)
        sent = len(report["runs"])
        blobs = report["store"]["uploaded"]
        print(
            f"push of {sent} new records + {blobs} blobs: {first:.2f} s  (goal 3 s) "
            f"{verdict(first, 3.0)}"
        )

        # A twin of the clone, remote and store: the same 10 records are pushed by `roar push`
        # from one and by a bare `git push` of the ledger from the other, round by round, so
        # that the machine's load of the moment weighs on both.
        twin = tmp / "twin"
        twin.mkdir()
        for part in ("repo", "remote.git", "store"):
            shutil.copytree(tmp / part, twin / part, symlinks=True)
        twin_repo = twin / "repo"
        git(twin_repo, "remote", "set-url", "origin", str(twin / "remote.git"))
        roar(twin_repo, "config", "set", "store.url", f"file://{twin / 'store'}")
        samples, bare = [], []
        for k in range(5):
            add_runs(repo, 1000 + 10 * k, 10, sid)
            add_runs(twin_repo, 1000 + 10 * k, 10, sid)
            t, out = timed(repo, "push", "--json")
            report = json.loads(out)
            assert len(report["runs"]) == 10 and report["store"]["uploaded"] == 10, report
            samples.append(t)
            t = time.perf_counter()
            git(twin_repo, "push", "-q", "origin", "refs/roar/ledger:refs/roar/ledger")
            bare.append(time.perf_counter() - t)
        incremental = statistics.median(samples)
        git_push = statistics.median(bare)
        print(
            f"incremental push of 10 records + 10 blobs: {incremental:.3f} s median of 5 "
            f"(goal 0.3 s) {verdict(incremental, 0.3)}; a bare git push of the same ledger "
            f"update: {git_push:.3f} s (roar push adds {incremental - git_push:.3f} s)"
        )
        noop, _ = timed(repo, "push", "--json")
        print(f"push with nothing new: {noop:.3f} s")

        git(repo, "add", "out")
        staged = len(git(repo, "diff", "--cached", "--name-only").splitlines())
        roar(repo, "hooks", "run", "pre-commit")  # the hash cache, as after the runs
        kept = find_repo(repo).roar_dir / "precommit.json"

        def first_check() -> None:
            kept.unlink()  # as in a session no check has read yet
            roar(repo, "hooks", "run", "pre-commit")

        first = median_seconds(first_check, 5)
        print(
            f"pre-commit hook on {staged} staged files, all outputs of a {staged}-step "
            f"session, the first check in the session: {first:.3f} s median of 5 "
            f"(goal 0.2 s) {verdict(first, 0.2)}"
        )
        later = []
        for k in range(5):
            add_runs(repo, 2000 + 10 * k, 10, sid)
            git(repo, "add", "out")
            later.append(timed(repo, "hooks", "run", "pre-commit")[0])
        after = statistics.median(later)
        staged = len(git(repo, "diff", "--cached", "--name-only").splitlines())
        print(
            f"pre-commit hook on {staged} staged files, 10 steps recorded since the last "
            f"check: {after:.3f} s median of 5 (goal 0.2 s) {verdict(after, 0.2)}"
        )
        hook = median_seconds(lambda: roar(repo, "hooks", "run", "pre-commit"), 7)
        print(
            f"pre-commit hook on {staged} staged files, nothing recorded since the last "
            f"check: {hook:.3f} s median of 7 (goal 0.2 s) {verdict(hook, 0.2)}"
        )

        # The common shape: a session of 10 steps, a commit of 1,000 files, 10 of them outputs.
        small = tmp / "small"
        small.mkdir()
        git(small, "init", "-q", "-b", "main")
        (small / "step.py").write_text("print('step')\n")
        git(small, "add", "step.py")
        git(small, "commit", "-q", "-m", "code")
        roar(small, "init")
        Ledger(find_repo(small)).import_records([session])
        (find_repo(small).roar_dir / "session.json").write_text(
            json.dumps({"id": sid, "popped": []})
        )
        add_runs(small, 0, 10, sid)
        (small / "src").mkdir()
        for n in range(990):
            (small / "src" / f"m{n}.py").write_text(f"X = {n}\n")
        git(small, "add", "out", "src")
        roar(small, "hooks", "run", "pre-commit")
        typical = median_seconds(lambda: roar(small, "hooks", "run", "pre-commit"), 7)
        print(
            f"pre-commit hook on 1000 staged files, 10 of them outputs of a 10-step session: "
            f"{typical:.3f} s median of 7 (goal 0.2 s) {verdict(typical, 0.2)}"
        )
        python_start = median_seconds(lambda: subprocess.run([sys.executable, "-c", "pass"]), 7)
        print(f"  (python -c pass: {python_start:.3f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
