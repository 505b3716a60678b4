"""Records as the query commands print them in JSON (docs/cli-json.md is the spec): a run, its
files, who recorded it, its verifications and the one line that sums those up.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

from roargit import TYPE_CHECKING
from roargit.records import FileRef, RunRecord, VerificationRecord

if TYPE_CHECKING:
    from typing import Any


def iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def who_json(rec: RunRecord) -> dict[str, str] | None:
    """Who recorded the run ({name, email, host}), or None for a record that does not say."""
    return None if rec.recorded_by is None else rec.recorded_by.to_map()


def files_json(files: Iterable[FileRef]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        m: dict[str, Any] = {"path": f.path, "hash": f.hash, "size": f.size}
        if f.kind != "file":
            m["type"] = f.kind
        if f.not_stored:
            m["not_stored"] = f.not_stored
        out.append(m)
    return out


def verification_to_json(vid: str, rec: VerificationRecord) -> dict[str, Any]:
    return {
        "id": vid,
        "run": rec.run,
        "result": rec.result,
        "by": rec.by.to_map(),
        "at": iso(rec.ended_at),
        "clone": rec.clone,
        "reproduction": rec.reproduction,
        "outputs": [o.to_map() for o in rec.outputs],
    }


def verification_summary(verifications: Sequence[dict[str, Any]]) -> str:
    """`reproduced identical ×2, last by bob <bob@example.com> on 2026-12-07` ("" for none):
    recorded text, to be escaped by whoever prints it."""
    if not verifications:
        return ""
    counts: dict[str, int] = {}
    for v in verifications:
        counts[v["result"]] = counts.get(v["result"], 0) + 1
    parts = [f"{r} ×{n}" if n > 1 else r for r, n in counts.items()]
    last = verifications[-1]
    by = last["by"]
    who = " ".join(x for x in (by["name"], f"<{by['email']}>" if by["email"] else "") if x)
    who = who or "someone"
    host = f" on {by['host']}" if by["host"] else ""
    return f"reproduced {', '.join(parts)}, last by {who}{host} at {last['at']}"


def run_to_json(
    run_id: str,
    rec: RunRecord,
    label: str | None,
    verifications: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    env = rec.environment
    return (
        {
            "kind": "run",
            "id": run_id,
            "step": label,
            "session": rec.session,
            "type": rec.kind,
            "argv": list(rec.argv),
            "cwd": rec.cwd,
            "status": rec.status,
            "exit_code": rec.exit_code,
            "inputs": files_json(rec.inputs),
            "outputs": files_json(rec.outputs),
            "code": {
                "commit": rec.code.commit,
                "branch": rec.code.branch,
                "dirty": rec.code.dirty,
                "tree": rec.code.tree,
                "inputs": [{"path": c.path, "blob": c.blob} for c in rec.code.inputs],
            },
            "started_at": iso(rec.started_at),
            "duration_s": round(rec.duration_ns / 1e9, 3),
            "capture": rec.capture,
            "complete": rec.complete,
            "recorded_by": who_json(rec),
            "environment": dict(env),
            "verifications": list(verifications),
        }
        | ({"unreadable": [u.to_map() for u in rec.unreadable]} if rec.unreadable else {})
        | ({"redirects": dict(rec.redirects)} if rec.redirects else {})
        | ({"created_dirs": list(rec.created_dirs)} if rec.created_dirs else {})
    )
