"""Sessions: the pipeline being built in this clone, as numbered steps.

The runs themselves are immutable ledger records carrying (session, step). Which session is
active, and which runs were popped from it, is this clone's local state in
`.git/roar/session.json`. Everything else — which run is a step's current one, which are
superseded, which steps are stale — is derived here from the records.

Numbering a new run reads the session's index (`records.StepIndex`, one small entry per run
in the ledger), not the runs' records: a run's cost must not grow with its session, and a
record may list 100,000 files. The full view decodes only each step's current run.

Rules:
- A new run takes the number of the active step (same kind) with the same input and output
  paths (and, when it touched no data files, the same argv), superseding it; otherwise the
  next free number. `roar run @N` reuses N.
- A step is stale when an input it read (by path) is now produced, by the current run of
  another step, with different content — or when a step it depends on is stale. (What is
  on disk now is compared by staleness.py: `roar status`, `roar dag`, `roar update`.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from roargit.errors import RoarError
from roargit.ledger import Ledger
from roargit.pathguard import escape
from roargit.records import RunId, RunRecord, SessionId, SessionRecord, StepIndex, paths_key
from roargit.structs import NamedTuple

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
    plain = _plain_state(text)
    if plain is not None:
        return plain
    import json  # lazy: the state as write_state writes it is read without it (~1 ms)

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


_PLAIN_HEAD, _PLAIN_TAIL = b'{"id": "', b'", "popped": []}'


def _plain_state(text: bytes) -> LocalState | None:
    """The state file's usual bytes, `{"id": "<64 hex>", "popped": []}` as write_state
    writes them, read without the json module; None for anything else (json reads it)."""
    sid = text[len(_PLAIN_HEAD) : -len(_PLAIN_TAIL)]
    if (
        len(text) == len(_PLAIN_HEAD) + 64 + len(_PLAIN_TAIL)
        and text.startswith(_PLAIN_HEAD)
        and text.endswith(_PLAIN_TAIL)
        and not sid.strip(b"0123456789abcdef")
    ):
        return LocalState(SessionId(sid.decode("ascii")), frozenset())
    return None


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
    import json  # lazy: see read_state

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


class StepRuns(NamedTuple):
    """A step as the session's index tells it: its current run and those it superseded."""

    kind: str
    number: int
    current: StepIndex
    superseded: tuple[RunId, ...]  # newest first


def _skipped(warnings: list[str] | None, problem: Exception) -> None:
    if warnings is None:
        return

    line = escape(f"{problem} (skipped)")
    if line not in warnings:
        warnings.append(line)


# Process-local: a re-run (rerun.resolve) reads the session's index to find the step's
# command, and numbering the run reads it again under the session lock; the ledger's tip names
# its whole content, so while it has not moved the second read is the first one's answer.
_KEPT: dict[tuple[str, str, str, str, frozenset[str]], tuple[list[StepRuns], list[str]]] = {}


def load_index(
    ledger: Ledger,
    session_id: SessionId | None,
    popped: frozenset[str],
    warnings: list[str] | None = None,
    *,
    keep: bool = False,
) -> list[StepRuns]:
    """The session's steps from its index, build steps first, then by number. A run with no
    usable index entry (recorded before the index was kept) is read from its record; one
    whose record cannot be used either is skipped, with a line in `warnings`. With `keep`,
    the answer is kept for the next call in this process at the same ledger tip."""
    if session_id is None:
        return []
    key = None
    if keep or _KEPT:
        tip = ledger.tip()
        key = (str(ledger.paths.common_dir), ledger.ref, tip or "", session_id, popped)
        kept = _KEPT.get(key)
        if kept is not None:
            if warnings is not None:
                warnings.extend(w for w in kept[1] if w not in warnings)
            return list(kept[0])
    found: list[str] = []
    steps = _read_index(ledger, session_id, popped, found)
    if warnings is not None:
        warnings.extend(w for w in found if w not in warnings)
    if keep and key is not None:
        _KEPT.clear()
        _KEPT[key] = (steps, found)
    return list(steps)


def _read_index(
    ledger: Ledger, session_id: SessionId, popped: frozenset[str], warnings: list[str]
) -> list[StepRuns]:
    entries = [(rid, e) for rid, e in ledger.session_index(session_id) if rid not in popped]
    missing = [rid for rid, e in entries if e is None]
    rebuilt: dict[str, StepIndex] = {}
    for rid, found in zip(missing, ledger.runs_or_errors(missing), strict=True):
        if isinstance(found, RunRecord):
            rebuilt[rid] = StepIndex.of_run(rid, found)
        else:
            _skipped(warnings, found)
    return group_index([e or rebuilt[rid] for rid, e in entries if e or rid in rebuilt])


def group_index(index: list[StepIndex]) -> list[StepRuns]:
    by_step: dict[tuple[str, int], list[StepIndex]] = {}
    for e in index:
        by_step.setdefault((e.kind, e.step), []).append(e)
    out = []
    for key in sorted(by_step, key=lambda k: (k[0] != "build", k[1])):
        history = sorted(by_step[key], key=lambda e: (e.started_at, e.run), reverse=True)
        out.append(StepRuns(key[0], key[1], history[0], tuple(e.run for e in history[1:])))
    return out


def load_view(
    ledger: Ledger,
    session_id: SessionId | None,
    popped: frozenset[str],
    warnings: list[str] | None = None,
) -> SessionView:
    """The session's steps, each with its current run's record (only those are read). A run
    whose record is missing or cannot be used (a fetched one left out, a damaged one) is
    skipped, with a line in `warnings` when given: one bad record must not stop the queries
    or the numbering of the next run."""
    if session_id is None:
        return SessionView(None, ())
    steps = load_index(ledger, session_id, popped, warnings)
    bad: set[str] = set()
    while True:
        ids = [s.current.run for s in steps]
        current: list[tuple[RunId, RunRecord, tuple[RunId, ...]]] = []
        for s, found in zip(steps, ledger.runs_or_errors(ids), strict=True):
            if isinstance(found, RunRecord):
                current.append((s.current.run, found, s.superseded))
            else:
                _skipped(warnings, found)
                bad.add(s.current.run)
        if len(current) == len(steps):
            return _view(session_id, current)
        # A current run that cannot be read leaves its step to the run it superseded.
        steps = load_index(ledger, session_id, popped | bad)


def _view(
    session_id: SessionId, current: list[tuple[RunId, RunRecord, tuple[RunId, ...]]]
) -> SessionView:
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


NO_PATHS = paths_key(())


def assign_step(steps: list[StepRuns], kind: str, new: StepIndex) -> int:
    """The step number of a run whose index entry is `new` (its own `step` is not looked at)."""
    touched = new.inputs != NO_PATHS or new.outputs != NO_PATHS
    for s in steps:
        if (
            s.kind == kind
            and s.current.inputs == new.inputs
            and s.current.outputs == new.outputs
            # Two commands that touched no data files share no paths to compare: `roar run
            # true` must not supersede `roar run ./check.sh`. Only the same command re-runs.
            and (touched or s.current.argv == new.argv)
        ):
            return s.number
    numbers = [s.number for s in steps if s.kind == kind]
    return max(numbers, default=0) + 1
