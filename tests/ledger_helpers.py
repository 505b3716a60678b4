"""Builders for plain records used across ledger tests."""

from __future__ import annotations

from typing import Any

import pygit2

from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId


def hexid(n: int, salt: str = "") -> ArtifactId:
    from blake3 import blake3

    return ArtifactId(blake3(f"{salt}{n}".encode()).hexdigest())


def make_run(
    n: int,
    inputs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    session: str = "5" * 64,  # a session id is 64 hex digits
    step: int = 1,
) -> RunRecord:
    return RunRecord(
        argv=("python", "step.py", str(n)),
        cwd=".",
        started_at=1_700_000_000_000_000_000 + n,
        ended_at=1_700_000_001_000_000_000 + n,
        exit_code=0,
        status="ok",
        inputs=tuple(FileRef(f"in/{h[:8]}", ArtifactId(h), 10) for h in inputs),
        outputs=tuple(FileRef(f"out/{h[:8]}", ArtifactId(h), 20) for h in outputs),
        code=CodeState(commit=None, branch="main", dirty=False, tree=None),
        session=SessionId(session),
        step=step,
    )


def commit_at(led: Any, rev: str | None = None) -> pygit2.Commit:
    """The ledger commit at `rev` (its tip by default), as pygit2's commit type."""
    rev = rev if rev is not None else led.tip()
    assert rev is not None, "the ledger has no commit"
    commit = led.repo[rev]
    assert isinstance(commit, pygit2.Commit)
    return commit
