"""A large ledger built fast, for benchmarks: `git fast-import` writes the records packed.

The records are real (canonical msgpack, real ids) and laid out exactly as `Ledger` lays them
out; only the writing is batched: `per_commit` runs share a commit (one per run, as `roar run`
leaves them, takes fast-import ~3 minutes for 100,000 runs here; lookups and appends depend on
the tree's shape, not on how many commits led to it).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from roargit import records
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId, SessionRecord

CHAIN = 25  # runs per lineage chain: run k of a chain reads what run k-1 wrote


@dataclass(frozen=True)
class BigLedger:
    runs: int
    last_output: str  # the output of the last run: a lineage of depth CHAIN - 1 behind it
    source: str  # a source artifact read by the first run of the last chain
    session: str


def _digest(text: str) -> ArtifactId:
    from blake3 import blake3

    return ArtifactId(blake3(text.encode()).hexdigest())


def build(repo: Path, n_runs: int, runs_per_session: int = 100, per_commit: int = 100) -> BigLedger:
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet", "--force"], cwd=repo, stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    out = proc.stdin
    mark = 0
    session = ""
    prev_output = _digest("none")
    source = prev_output
    t0 = 1_700_000_000
    lines: list[str] = []
    ids: list[str] = []
    for n in range(n_runs):
        if n % runs_per_session == 0:
            sess = SessionRecord(created_at=(t0 + n) * 10**9, clone="bench", parent=None)
            session, data = records.identify(sess)
            mark += 1
            out.write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
            lines.append(f"M 100644 :{mark} sessions/{session}/session")
        if n % CHAIN == 0:
            source = _digest(f"source {n}")
            prev_output = source
        output = _digest(f"output {n}")
        run = RunRecord(
            argv=("python", "step.py", f"--n={n}"),
            cwd=".",
            started_at=(t0 + n) * 10**9,
            ended_at=(t0 + n) * 10**9 + 5 * 10**8,
            exit_code=0,
            status="ok",
            inputs=(FileRef(f"data/in{n % CHAIN}.bin", prev_output, 1000),),
            outputs=(FileRef(f"data/in{(n % CHAIN) + 1}.bin", output, 1000),),
            code=CodeState(commit="0" * 40, branch="main", dirty=False, tree=None),
            session=SessionId(session),
            step=n % runs_per_session + 1,
        )
        rid, data = records.identify(run)
        mark += 1
        out.write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
        for f, tag in ((run.inputs[0], "c"), (run.outputs[0], "p")):
            h = f.hash
            lines.append(f"M 100644 :{mark} artifacts/{h[:2]}/{h[2:4]}/{h}/{tag}.{rid}")
        lines.append(f"M 100644 :{mark} runs/{rid[:2]}/{rid[2:4]}/{rid}")
        lines.append(f"M 100644 :{mark} sessions/{session}/{rid[:2]}/{rid}")
        ids.append(rid)
        prev_output = output
        if len(ids) == per_commit or n == n_runs - 1:
            msg = "".join(f"run {i}\n" for i in reversed(ids)).encode()
            out.write(
                b"commit refs/roar/ledger\ncommitter roar <roar@localhost> %d +0000\n"
                b"data %d\n%s\n" % (t0 + n, len(msg), msg)
            )
            out.write(("\n".join(lines) + "\n\n").encode())
            lines, ids = [], []
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    return BigLedger(n_runs, prev_output, source, session)
