"""The web view's DAG page, server side: goal ≤ 1 s for a 200-step session and for a
1,000-step lineage (time from the request to the last byte of the page, the app called
directly as a WSGI server would: ledger reads, layout, SVG and HTML).

The ledger is one chain per size (step k reads what step k-1 wrote, as a real pipeline's
lineage does), written with `Ledger.import_records`; the 200-step chain is the active
session, the 1,000-step one is reached by its last output's lineage.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import median_seconds, verdict
from roargit import records, session
from roargit.ledger import Ledger
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId, SessionRecord
from roargit.repo import find_repo

GOAL_S = 1.0


def _digest(text: str) -> ArtifactId:
    from blake3 import blake3

    return ArtifactId(blake3(text.encode()).hexdigest())


def build_chain(repo: Path, steps: int, name: str = "chain", active: bool = True) -> str:
    """A session of `steps` runs, each reading what the one before wrote; the hash of the
    last output. With `active`, the session becomes this clone's active one."""
    t0 = 1_700_000_000 + len(name) * 100_000
    sess = SessionRecord(created_at=t0 * 10**9, clone=name, parent=None)
    sid = records.identify(sess)[0]
    last = _digest(f"{name} source")

    def generate() -> Any:
        nonlocal last
        yield sess
        prev = last
        for n in range(steps):
            out = _digest(f"{name} output {n}")
            yield RunRecord(
                argv=("python", f"step{n % 7}.py", f"--n={n}", "--in", f"data/{n}.bin"),
                cwd=".",
                started_at=(t0 + n) * 10**9,
                ended_at=(t0 + n) * 10**9 + 5 * 10**8,
                exit_code=0,
                status="ok",
                inputs=(FileRef(f"data/{n}.bin", prev, 1000),),
                outputs=(FileRef(f"data/{n + 1}.bin", out, 1000),),
                code=CodeState(commit="0" * 40, branch="main", dirty=False, tree=None),
                session=SessionId(sid),
                step=n + 1,
            )
            prev = last = out

    paths = find_repo(repo)
    Ledger(paths).import_records(generate(), per_commit=500)
    if active:
        session.write_state(paths.roar_dir, session.LocalState(SessionId(sid), frozenset()))
    return last


def page_seconds(repo: Path, path: str, query: str = "") -> tuple[float, int]:
    """Median seconds to answer one page, and the page's size in bytes."""
    from roargit.web.app import make_app

    app = make_app(find_repo(repo))
    size = 0

    def once() -> None:
        nonlocal size
        status: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}
        body = b"".join(app(environ, lambda s, h: status.append(s)))
        assert status[0].startswith("200"), status
        size = len(body)

    once()
    return median_seconds(once, 5), size


def main() -> None:
    roar = str(Path(sys.executable).parent / "roar")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run([roar, "init"], cwd=repo, check=True, capture_output=True)
        t = time.perf_counter()
        build_chain(repo, 200, "session")
        deep = build_chain(repo, 1000, "lineage-of-a-thousand", active=False)
        print(f"ledger: 200 + 1,000 runs built in {time.perf_counter() - t:.2f} s")
        s200, n200 = page_seconds(repo, "/dag")
        s1000, n1000 = page_seconds(repo, "/dag", f"ref={deep}")
        home, _ = page_seconds(repo, "/")
    print(
        f"/dag, session of 200 steps        {s200 * 1000:7.0f} ms  {n200 / 1e6:.1f} MB  "
        f"goal ≤ {GOAL_S:.0f} s: {verdict(s200, GOAL_S)}"
    )
    print(
        f"/dag?ref=, lineage of 1,000 steps {s1000 * 1000:7.0f} ms  {n1000 / 1e6:.1f} MB  "
        f"goal ≤ {GOAL_S:.0f} s: {verdict(s1000, GOAL_S)}"
    )
    print(f"/ (home, 20 recent runs)          {home * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
