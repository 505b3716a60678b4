"""An attacker's toolkit (no tests here): craft ledger entries with git plumbing and push them.

Everything here goes around roargit's writers on purpose: a hostile clone is not bound to use
them. Records are encoded with msgpack and named with BLAKE3 as docs/record-format.md says.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
from blake3 import blake3
from cli_helpers import git

LEDGER = "refs/roar/ledger"


def canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def pack(record: Mapping[str, Any]) -> bytes:
    return msgpack.packb(canonical({**record, "v": 1}), use_bin_type=True)


def rid(data: bytes) -> str:
    return blake3(data).hexdigest()


def run_map(
    argv: list[str],
    *,
    inputs: list[dict[str, Any]] = (),  # type: ignore[assignment]
    outputs: list[dict[str, Any]] = (),  # type: ignore[assignment]
    cwd: str = ".",
    session: str = "0" * 64,
    step: int = 1,
    commit: str | None = None,
    tree: str | None = None,
    environment: Any = None,
) -> dict[str, Any]:
    """A run record's map, every field as the document lists it."""
    return {
        "type": "run",
        "kind": "run",
        "argv": argv,
        "cwd": cwd,
        "started_at": 1_700_000_000_000_000_000,
        "ended_at": 1_700_000_001_000_000_000,
        "exit_code": 0,
        "status": "ok",
        "inputs": list(inputs),
        "outputs": list(outputs),
        "code": {"commit": commit, "branch": "main", "dirty": False, "tree": tree, "inputs": []},
        "session": session,
        "step": step,
        "capture": "ptrace",
        "complete": True,
        "environment": {} if environment is None else environment,
    }


def fan(hexid: str) -> str:
    return f"{hexid[:2]}/{hexid[2:4]}"


def run_entries(data: bytes, record: Mapping[str, Any], run_id: str | None = None) -> dict:
    """The ledger paths a run's record is filed under, as roargit files them."""
    run_id = run_id or rid(data)
    sid = record["session"]
    entries = {
        f"runs/{fan(run_id)}/{run_id}": data,
        f"sessions/{sid[:2]}/{sid}/{run_id[:2]}/{run_id}": data,
    }
    for tag, files in (("c", record["inputs"]), ("p", record["outputs"])):
        for f in files:
            entries[f"artifacts/{fan(f['hash'])}/{f['hash']}/{tag}.{run_id}"] = data
            if f.get("kind") == "dir":
                key = rid(f["path"].rstrip("/").encode())
                entries[f"folders/{key[:2]}/{key}/{tag}.{run_id}"] = data
    return entries


def plant(
    repo: Path,
    add: Mapping[str, bytes] = {},
    drop: tuple[str, ...] = (),
    *,
    parent: str | None = "tip",
    message: str = "run x",
) -> str:
    """A new ledger commit: the tip's tree (or none) with `drop` removed and `add` written,
    built in a scratch index; the ref moves to it. Returns the commit id."""
    tip = git(repo, "rev-parse", "--verify", "-q", LEDGER) if parent == "tip" else parent
    env = {"GIT_INDEX_FILE": str(repo / ".git" / "attacker-index")}
    if tip:
        git(repo, "read-tree", tip, env=env)
    else:
        git(repo, "read-tree", "--empty", env=env)
    for path in drop:
        git(repo, "rm", "-r", "-q", "--cached", "--ignore-unmatch", path, env=env)
    for path, data in add.items():
        oid = git(repo, "hash-object", "-w", "--stdin", data=data)
        git(repo, "update-index", "--add", "--cacheinfo", f"100644,{oid},{path}", env=env)
    tree = git(repo, "write-tree", env=env)
    args = ["commit-tree", tree, "-m", message]
    if tip:
        args += ["-p", tip]
    commit = git(repo, *args)
    git(repo, "update-ref", LEDGER, commit)
    return commit


def push_ledger(repo: Path, remote: str = "origin") -> None:
    git(repo, "push", "-q", "-f", remote, f"{LEDGER}:{LEDGER}")
