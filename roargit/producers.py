"""Which run made an artifact: of the runs that wrote its bytes, the one a reader read them
from (`choose_producer`). Lineage queries (views.py) and reproduction plans (plan.py) both
ask it, so it is neither's.
"""

from __future__ import annotations

from collections.abc import Sequence

from roargit.records import RunId, RunRecord


def choose_producer(
    digest: str,
    path: str | None,
    candidates: Sequence[tuple[RunId, RunRecord]],
    reader: tuple[str, RunRecord] | None,
) -> tuple[RunId | None, bool]:
    """Which of the runs that wrote `digest` made the file at `path` that `reader` read:
    (that run, whether it was found by bytes alone).

    By run and path first: the run that last wrote these bytes at this path before the
    reader started. Only when no run did is it some run that wrote these bytes elsewhere
    (the second value is then True): one that finished before the reader started, a
    successful one, the newest. Never the reader itself, a run that started after it, nor a
    run that read these bytes at this path (it found them there, so it did not make them)."""
    before = reader[1].started_at if reader is not None else None
    rid_reader = reader[0] if reader is not None else None
    # A run that started after the reader cannot have made what it read.
    usable = [
        (rid, rec)
        for rid, rec in candidates
        if rid != rid_reader and (before is None or rec.started_at < before)
    ]
    if path is not None:
        here = [
            (rid, rec)
            for rid, rec in usable
            if any(o.path == path and o.hash == digest for o in rec.outputs)
        ]
        if here:
            return max(here, key=lambda c: _rank(c, before))[0], False
        usable = [
            (rid, rec)
            for rid, rec in usable
            if not any(i.path == path and i.hash == digest for i in rec.inputs)
        ]
    if not usable:
        return None, False
    return max(usable, key=lambda c: _rank(c, before))[0], path is not None


def _rank(c: tuple[RunId, RunRecord], before: int | None) -> tuple[bool, bool, int, str]:
    rid, rec = c
    causal = before is None or rec.ended_at <= before
    return (causal, rec.status == "ok", rec.ended_at, rid)
