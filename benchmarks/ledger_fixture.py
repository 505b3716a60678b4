"""A large ledger built fast, for benchmarks, through `Ledger.import_records`.

The records are real (canonical msgpack, real ids) and laid out by the ledger itself; only the
writing is batched: `per_commit` runs share a commit (one commit per run, as `roar run` leaves
them, takes fast-import ~3 minutes for 100,000 runs here; lookups and appends depend on the
tree's shape, not on how many commits led to it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from roargit import records
from roargit.ledger import Ledger
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId, SessionRecord
from roargit.repo import find_repo

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
    t0 = 1_700_000_000
    state = {"session": "", "source": "", "last": ""}

    def generate() -> Iterator[records.Record]:
        prev_output = _digest("none")
        for n in range(n_runs):
            if n % runs_per_session == 0:
                sess = SessionRecord(created_at=(t0 + n) * 10**9, clone="bench", parent=None)
                state["session"] = records.identify(sess)[0]
                yield sess
            if n % CHAIN == 0:
                state["source"] = prev_output = _digest(f"source {n}")
            output = _digest(f"output {n}")
            yield RunRecord(
                argv=("python", "step.py", f"--n={n}"),
                cwd=".",
                started_at=(t0 + n) * 10**9,
                ended_at=(t0 + n) * 10**9 + 5 * 10**8,
                exit_code=0,
                status="ok",
                inputs=(FileRef(f"data/in{n % CHAIN}.bin", prev_output, 1000),),
                outputs=(FileRef(f"data/in{(n % CHAIN) + 1}.bin", output, 1000),),
                code=CodeState(commit="0" * 40, branch="main", dirty=False, tree=None),
                session=SessionId(state["session"]),
                step=n % runs_per_session + 1,
            )
            state["last"] = prev_output = output

    Ledger(find_repo(repo)).import_records(generate(), per_commit=per_commit, when=t0)
    return BigLedger(n_runs, state["last"], state["source"], state["session"])
