"""`roar update`: re-run the session's stale steps, upstream first, in the user's own tree.

Like `dvc repro`, for a pipeline nobody declared: the steps and their dependencies are those
the recorded runs show (session.py), a step is stale when an input or code file it read has
changed since it ran, or a step it depends on is stale (staleness.py). Each stale step runs
again under `roar run` (capture.record_run, as the same step number), in its recorded
folder. When its turn comes a step is checked again: a step that was stale only because of
a step upstream, which then wrote the same bytes again, has nothing to do and is skipped.
A step that fails stops the update: nothing downstream of it runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from roargit import pathguard, session, stdio
from roargit.capture import record_run
from roargit.errors import RoarError
from roargit.hashing import HashCache
from roargit.ledger import Ledger
from roargit.records import RunId
from roargit.redact import MARK
from roargit.repo import RepoPaths
from roargit.staleness import Change, changed_inputs, stale_steps, upstream_closure
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from roargit.capture import RunOutcome


class CannotRerun(RoarError):
    def __init__(self, label: str) -> None:
        super().__init__(
            f"{label}'s recorded command had secrets redacted: re-run it with "
            f"roar run {label} --FLAG=VALUE, passing them again"
        )


class NotAStep(RoarError):
    def __init__(self, target: str) -> None:
        super().__init__(f"no step of the current session wrote {target} (see roar dag)")


class Planned(NamedTuple):
    label: str
    kind: str
    number: int
    run_id: RunId  # the step's current run, the one found stale
    argv: tuple[str, ...]
    cwd: Path
    changes: tuple[Change, ...]  # its own inputs that changed
    upstream: tuple[str, ...]  # the stale steps it depends on


class Done(NamedTuple):
    step: Planned
    action: str  # "ran", "skipped" (nothing changed by its turn) or "failed"
    outcome: RunOutcome | None = None


def _view(paths: RepoPaths, ledger: Ledger) -> session.SessionView:
    state = session.read_state(paths.roar_dir)
    return session.load_view(ledger, state.session_id, state.popped)


def _target_step(view: session.SessionView, target: str, cwd: Path, root: Path) -> session.Step:
    parsed = session.parse_label(target)
    if parsed is not None:
        return view.step(session.label(*parsed))
    absolute = os.path.normpath(os.path.join(cwd, target))
    rel = absolute[len(str(root)) + 1 :] if absolute.startswith(f"{root}/") else absolute
    found = view.producer_of(rel) or view.producer_of(rel.rstrip("/") + "/")
    if found is None:
        raise NotAStep(target)
    return found


def plan(paths: RepoPaths, target: str | None = None, cwd: Path | None = None) -> list[Planned]:
    """The stale steps to run again, in the order they run: all of the session's, or with
    `target` (`@N`, or a path a step wrote) those it depends on and itself."""
    ledger = Ledger(paths, fast_start=True)
    try:
        view = _view(paths, ledger)
        stale = stale_steps(view, paths.root, HashCache(paths.roar_dir), paths.roar_dir)
        if target is not None:
            named = _target_step(view, target, cwd or paths.root, paths.root)
            wanted = upstream_closure(view, named)
            stale = [s for s in stale if s.label in wanted]
        steps = {s.label: s for s in view.steps}
        out = []
        for s in stale:
            step = steps[s.label]
            run = step.run
            where = Path(pathguard.abs_path(run.cwd, paths.root))
            out.append(
                Planned(
                    s.label,
                    step.kind,
                    step.number,
                    step.run_id,
                    run.argv,
                    where,
                    s.changes,
                    s.upstream,
                )
            )
        return out
    finally:
        ledger.close()


def check(planned: Sequence[Planned]) -> None:
    """Refuse, before anything runs, a plan with a step that cannot run again as recorded."""
    for p in planned:
        if any(MARK in word for word in p.argv):
            raise CannotRerun(p.label)


def run(
    paths: RepoPaths,
    planned: Sequence[Planned],
    announce: Callable[[Planned, tuple[Change, ...]], None],
) -> Iterator[Done]:
    """Run the planned steps in order, each as the same step under `roar run`; `announce`
    is told each step and what changed just before it runs. Stops after a failed step."""

    check(planned)
    cache = HashCache(paths.roar_dir)
    for p in planned:
        ledger = Ledger(paths, fast_start=True)
        try:
            current = _view(paths, ledger).step(p.label)
        finally:
            ledger.close()
        changes = tuple(changed_inputs([current.run], paths.root, cache, paths.roar_dir)[0])
        if not changes:
            yield Done(p, "skipped")
            continue
        announce(p, changes)
        # `> out.csv` and the like, again.
        with stdio.pointed_again(current.run.redirects, paths.root) as redirects:
            outcome = record_run(
                paths, list(p.argv), p.cwd, kind=p.kind, step=p.number, streams=redirects
            )
        failed = outcome.record.status != "ok" or outcome.signal is not None
        yield Done(p, "failed" if failed else "ran", outcome)
        if failed:
            return
