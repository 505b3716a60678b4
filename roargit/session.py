"""Sessions: the pipeline being built in this clone, as numbered steps.

The runs themselves are immutable ledger records carrying (session, step). Which session is
active, and which runs were popped from it, is this clone's local state in
`.git/roar/session.json`. Everything else — which run is a step's current one, which are
superseded, which steps are stale — is derived here from the records.

Rules:
- A new run takes the number of the active step (same kind) with the same input and output
  paths (and, when it touched no data files, the same argv), superseding it; otherwise the
  next free number. `roar run @N` reuses N.
- A step is stale when an input it read (by path) is now produced, by the current run of
  another step, with different content — or when a step it depends on is stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from roargit.errors import RoarError
from roargit.ledger import Ledger
from roargit.records import RunId, RunRecord, SessionId, SessionRecord

STATE_FILE = "session.json"


class NoSuchStep(RoarError):
    def __init__(self, label: str) -> None:
        super().__init__(f"no step {label} in the current session (see roar dag)")


class Step(NamedTuple):
    label: str  # "@3", or "@B1" for a build step
    number: int
    kind: str
    run_id: RunId
    run: RunRecord
    state: str  # "ok", "stale", or the run's status: "failed", "interrupted", "terminated"
    depends_on: tuple[str, ...]
    superseded: tuple[RunId, ...]  # earlier runs of this step, newest first


class SessionView(NamedTuple):
    session_id: SessionId | None
    steps: tuple[Step, ...]  # build steps first, then by number

    def step(self, label: str) -> Step:
        for s in self.steps:
            if s.label == label:
                return s
        raise NoSuchStep(label)

    def producer_of(self, path: str) -> Step | None:
        for s in reversed(self.steps):
            if any(o.path == path for o in s.run.outputs):
                return s
        return None


def label(kind: str, number: int) -> str:
    return f"@B{number}" if kind == "build" else f"@{number}"


def parse_label(text: str) -> tuple[str, int] | None:
    """'@3' → ('run', 3); '@B2' → ('build', 2); anything else → None."""
    if not text.startswith("@"):
        return None
    body = text[1:]
    kind = "run"
    if body[:1] in ("B", "b"):
        kind, body = "build", body[1:]
    return (kind, int(body)) if body.isdigit() else None


# -- local state ---------------------------------------------------------------------------


class LocalState(NamedTuple):
    session_id: SessionId | None
    popped: frozenset[str]
    # Why the state file could not be used (it is then read as no active session), or None.
    damaged: str | None = None


def read_state(roar_dir: Path) -> LocalState:
    """This clone's active session. A damaged state file reads as no session, with
    `damaged` saying why; only a writer moves it aside (`set_aside_damaged`)."""
    try:
        text = (roar_dir / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return LocalState(None, frozenset())
    try:
        data = json.loads(text)
        sid = data["id"]
        popped = data.get("popped", [])
        if not (sid is None or isinstance(sid, str)) or not isinstance(popped, list):
            raise TypeError("unexpected types")
        if not all(isinstance(p, str) for p in popped):
            raise TypeError("popped runs are not all ids")
        return LocalState(SessionId(sid) if sid else None, frozenset(popped))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        return LocalState(None, frozenset(), damaged=why)


def set_aside_damaged(roar_dir: Path) -> str | None:
    """Move a damaged state file to `session.json.corrupt-<UTC time>`, where it can be looked
    at, instead of letting a new session silently replace it; the message to show the user
    once, or None when the file is fine (or absent)."""
    state = read_state(roar_dir)
    if state.damaged is None:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = roar_dir / f"{STATE_FILE}.corrupt-{stamp}"
    if aside.exists():
        aside = roar_dir / f"{STATE_FILE}.corrupt-{stamp}-{os.getpid()}"
    try:
        (roar_dir / STATE_FILE).replace(aside)
    except FileNotFoundError:
        return None  # another process moved it first, and says so
    return (
        f".git/roar/{STATE_FILE} was damaged ({state.damaged}): moved to {aside.name}; "
        "a new session starts (earlier runs stay in the ledger)"
    )


def write_state(roar_dir: Path, state: LocalState) -> None:
    set_aside_damaged(roar_dir)  # kept for a look, never overwritten
    tmp = roar_dir / f"{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"id": state.session_id, "popped": sorted(state.popped)}))
    tmp.replace(roar_dir / STATE_FILE)


@contextlib.contextmanager
def locked(roar_dir: Path) -> Iterator[None]:
    """Hold this clone's session lock (flock: released by the kernel if we die)."""
    fd = os.open(roar_dir / "session.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def active_session(
    ledger: Ledger, roar_dir: Path, clone: str, warnings: list[str] | None = None
) -> SessionId:
    """The active session, started on first use. A damaged state file is moved aside first,
    with a line in `warnings` (call under `locked`)."""
    state = read_state(roar_dir)
    if state.session_id is not None:
        return state.session_id
    if state.damaged is not None:
        message = set_aside_damaged(roar_dir)
        if message is not None and warnings is not None:
            warnings.append(message)
    return new_session(ledger, roar_dir, clone, parent=None)


def new_session(ledger: Ledger, roar_dir: Path, clone: str, parent: SessionId | None) -> SessionId:
    sid = ledger.append_session(SessionRecord(time.time_ns(), clone, parent))
    write_state(roar_dir, LocalState(sid, frozenset()))
    return sid


# -- the derived view ---------------------------------------------------------------------


def load_view(
    ledger: Ledger,
    session_id: SessionId | None,
    popped: frozenset[str],
    warnings: list[str] | None = None,
) -> SessionView:
    """The session's steps. A run whose record is missing or cannot be used (a fetched one
    left out, a damaged one) is skipped, with a line in `warnings` when given: one bad record
    must not stop the queries or the numbering of the next run."""
    if session_id is None:
        return SessionView(None, ())
    ids = [rid for rid in ledger.session_runs(session_id) if rid not in popped]
    # Read together: a session re-run many times holds many runs, and `roar run` reads them all.
    runs = []
    for rid, found in zip(ids, ledger.runs_or_errors(ids), strict=True):
        if isinstance(found, RunRecord):
            runs.append((rid, found))
        elif warnings is not None:
            from roargit.ledger_check import printable

            line = printable(f"{found} (skipped)")
            if line not in warnings:
                warnings.append(line)
    return build_view(session_id, runs)


def build_view(session_id: SessionId, runs: list[tuple[RunId, RunRecord]]) -> SessionView:
    by_step: dict[tuple[str, int], list[tuple[RunId, RunRecord]]] = {}
    for rid, run in runs:
        by_step.setdefault((run.kind, run.step), []).append((rid, run))
    current: list[tuple[RunId, RunRecord, tuple[RunId, ...]]] = []
    for key in sorted(by_step, key=lambda k: (k[0] != "build", k[1])):
        history = sorted(by_step[key], key=lambda r: (r[1].started_at, r[0]), reverse=True)
        current.append((history[0][0], history[0][1], tuple(r[0] for r in history[1:])))

    steps: list[Step] = []
    state_of: dict[str, str] = {}
    for rid, run, older in current:
        me = label(run.kind, run.step)
        deps: list[str] = []
        stale = False
        for f in run.inputs:
            for prior in reversed(steps):
                out = next((o for o in prior.run.outputs if o.path == f.path), None)
                if out is None or prior.label == me:
                    continue
                deps.append(prior.label)
                if out.hash != f.hash or state_of[prior.label] == "stale":
                    stale = True
                break
        if run.status != "ok":
            state = run.status
        else:
            state = "stale" if stale else "ok"
        state_of[me] = state
        steps.append(
            Step(me, run.step, run.kind, rid, run, state, tuple(dict.fromkeys(deps)), older)
        )
    return SessionView(session_id, tuple(steps))


def assign_step(
    view: SessionView, kind: str, inputs: set[str], outputs: set[str], argv: tuple[str, ...]
) -> int:
    for s in view.steps:
        if (
            s.kind == kind
            and {f.path for f in s.run.inputs} == inputs
            and {f.path for f in s.run.outputs} == outputs
            # Two commands that touched no data files share no paths to compare: `roar run
            # true` must not supersede `roar run ./check.sh`. Only the same command re-runs.
            and (inputs or outputs or s.run.argv == argv)
        ):
            return s.number
    numbers = [s.number for s in view.steps if s.kind == kind]
    return max(numbers, default=0) + 1
