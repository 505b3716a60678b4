"""`roar run`, `roar build`, `roar pop`, `roar reset`: recording steps of the session."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from roargit import TYPE_CHECKING
from roargit.cli import add_command, report_bug
from roargit.cli.output import (
    emit_json,
    human_duration,
    human_size,
    say,
    short,
    show_argv,
    show_text,
    warn,
)
from roargit.errors import RoarError

if TYPE_CHECKING:
    import argparse
    from typing import Any


def run_json(run_id: str, record: Any, label: str) -> dict[str, Any]:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.record_json import run_to_json

    return run_to_json(run_id, record, label)


def _report(outcome: Any) -> None:
    rec = outcome.record
    say(
        f"{outcome.label}  run {short(outcome.run_id)}  {rec.status} (exit {rec.exit_code})  "
        f"{human_duration(rec.duration_ns)}  [{rec.capture}]"
    )
    for c in rec.code.inputs:
        say(f"  code {c.path}  {c.blob[:10]}")
    for f in rec.inputs:
        say(f"  in   {f.path}  {short(f.hash)}  {human_size(f.size)}")
    for f in rec.outputs:
        say(f"  out  {f.path}  {short(f.hash)}  {human_size(f.size)}")
    for u in rec.unreadable:
        size = human_size(u.size) if u.size >= 0 else "size unknown"
        tag = "in  " if u.access == "input" else "out "
        say(f"  {tag} {u.path}  unreadable ({u.reason})  {size}")
    if not rec.inputs and not rec.outputs and not rec.unreadable:
        say("  (no data files read or written)")
    if outcome.superseded:
        say(f"  supersedes run {short(outcome.superseded[0])}")


def _record(args: argparse.Namespace, kind: str) -> int:
    """Record the command's run; exit with its status (see docs/trace-format.md, "Exit
    status", for the exceptions)."""
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit import config, git
    from roargit.repo import find_repo

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise RoarError(f"nothing to run: roar {kind} [--] COMMAND [ARGS…]")
    paths = find_repo(Path.cwd())
    # What every run asks git before its command, asked now: git answers on one core while
    # the modules below load on the other (git.start_early). The ledger's reader first, asked
    # something at once (it opens the object database meanwhile): it soon waits for more,
    # where `git status` works on. posix_spawn returns once the child has exec'd, and a child
    # started while another works on the other core may wait a scheduler slice behind it.
    git.spawn_git(git.OBJECT_READER, paths.git_dir, early=True, prime=b"info HEAD\n")
    config.start_reading(paths)
    git.start_early(git.STATUS, paths.root)
    try:
        return _record_in(args, kind, paths, command)
    finally:
        config.drop_reading()
        git.drop_early()


def _record_in(args: argparse.Namespace, kind: str, paths: Any, command: list[str]) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.capture import NotRecorded, record_run
    from roargit.ledger import Ledger
    from roargit.rerun import resolve as resolve_rerun
    from roargit.stdio import STDERR, STDOUT, STREAM_NAMES, pointed_again, redirects, wrote_to

    step = None
    cwd = Path.cwd()
    ledger = Ledger(paths, fast_start=True)  # one reader for the re-run's lookup and the run
    again = resolve_rerun(paths, command, ledger)
    if again is not None:
        if again.redacted:
            warn(f"{command[0]}'s recorded command had secrets redacted; pass them again")
        command, cwd, kind, step = again.argv, again.cwd, again.kind, again.step
    streams = redirects()
    if args.json:  # roar's JSON follows the command's bytes on stdout: not its output alone
        streams = [s for s in streams if s.fd != STDOUT]
    # `roar run @2` points the step's recorded redirects (`> train.log`) again, but for a
    # stream this shell points itself.
    taken = {STREAM_NAMES[s.fd] for s in streams}
    again_streams = {k: v for k, v in (again.redirects if again else {}).items() if k not in taken}
    if not gc.isenabled():  # a process of its own (cli.main)
        # The collections Python makes while it tears its modules down at exit would walk
        # every object the imports made: those are set aside now. What the run makes is
        # still collected then (a sqlite connection in a cycle is closed, its WAL folded in).
        gc.freeze()
    try:
        with pointed_again(again_streams, paths.root) as extra:
            outcome = record_run(
                paths, command, cwd, kind=kind, step=step, streams=[*streams, *extra],
                ledger=ledger,
            )  # fmt: skip
    except NotRecorded as exc:
        if exc.cause is not None and not isinstance(exc.cause, (RoarError, OSError)):
            report_bug(exc.cause)  # a bug: its report and log, but the command's status
        warn(str(exc))
        return exc.exit_code
    # -q drops the report, never a warning: a warning says what was not captured or stored.
    # A recorded stderr (one the command wrote to) holds the command's bytes alone: roar adds
    # no report or warnings to it (`roar show` gives the run).
    stderr_recorded = any(s.fd == STDERR and wrote_to(s) for s in streams)
    quiet = args.quiet or stderr_recorded
    try:
        for w in outcome.warnings if not stderr_recorded else ():
            warn(w)
        if args.json:
            emit_json(run_json(outcome.run_id, outcome.record, outcome.label))
        elif not quiet:
            sys.stdout.flush()
            print("", file=sys.stderr)
            _report_to_stderr(outcome)
    except BrokenPipeError:
        # Whoever read roar's output has gone; the run is recorded and its status stands.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    settings = outcome.settings
    if settings is not None and settings["roar.hooks.postrun"].value.strip():
        # lazy: loaded when a post-run hook is configured
        from roargit.hooks import after_run

        hook_failed = after_run(paths, outcome)  # never changes the record or the exit status
        if hook_failed:
            warn(hook_failed)
    _keep_a_recorder(outcome)
    if outcome.signal is not None:
        return 128 + outcome.signal  # as a process ended by that signal would
    return outcome.record.exit_code


def _keep_a_recorder(outcome: Any) -> None:
    """Start the resident recorder the `roar` front end found missing (cli.recorder_socket),
    once a run has shown that the tracer works here: the next runs then skip the start-up."""
    import roargit.cli

    where = roargit.cli.recorder_socket
    if where is None or outcome.record.capture != "ptrace" or outcome.settings is None:
        return
    roargit.cli.recorder_socket = None
    try:
        idle = float(outcome.settings["roar.recorder.idle"].value)
    except ValueError:
        idle = 0.0
    from roargit import recorder

    recorder.start(where, idle)


def _report_to_stderr(outcome: Any) -> None:
    # The command's own stdout stays clean for pipes: roar's report goes to stderr.
    stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        _report(outcome)
    finally:
        sys.stdout = stdout


def cmd_run(args: argparse.Namespace) -> int:
    return _record(args, "run")


def cmd_build(args: argparse.Namespace) -> int:
    return _record(args, "build")


def cmd_pop(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.repo import find_repo
    from roargit.steps import pop_step

    result = pop_step(find_repo(Path.cwd()))
    if args.json:
        emit_json(
            {
                "popped": result.label,
                "run": result.run_id,
                "removed": list(result.removed),
                "kept": list(result.kept),
            }
        )
        return 0
    say(f"popped {result.label} (run {short(result.run_id)})")
    for p in result.removed:
        say(f"  removed {p} (roar get can bring it back)")
    for p in result.kept:
        say(f"  kept {p}")
    return 0


def _change_json(c: Any) -> dict[str, Any]:
    return {"path": c.path, "kind": c.kind, "old": c.old, "new": c.new}


def _say_changes(changes: Any, upstream: Any) -> None:
    for c in changes:
        new = short(c.new) if c.new else "gone"
        say(f"      {c.kind} {show_text(c.path)}  {short(c.old)} → {new}")
    if upstream and not changes:
        say(f"      after {', '.join(upstream)}")


def cmd_update(args: argparse.Namespace) -> int:
    """Re-run the stale steps (update.py); exit with a failed step's status, else 0."""
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit import update
    from roargit.repo import find_repo

    paths = find_repo(Path.cwd())
    planned = update.plan(paths, args.target, Path.cwd())
    if args.dry_run or not planned:
        if args.json:
            emit_json(
                [
                    {
                        "step": p.label,
                        "run": p.run_id,
                        "command": list(p.argv),
                        "changes": [_change_json(c) for c in p.changes],
                        "upstream": list(p.upstream),
                        "action": "would run",
                    }
                    for p in planned
                ]
            )
        elif not planned:
            say("nothing is stale")
        for p in [] if args.json else planned:
            say(f"{p.label:>4}  would run: {show_argv(p.argv)}")
            _say_changes(p.changes, p.upstream)
        return 0

    def announce(p: Any, changes: Any) -> None:
        # The whole command, escaped, before it runs: it comes from a record.
        if not args.json:
            say(f"{p.label:>4}  running: {show_argv(p.argv)}")
            _say_changes(changes, p.upstream)
            sys.stdout.flush()

    done = []
    status = 0
    for d in update.run(paths, planned, announce):
        done.append(d)
        if d.outcome is not None:
            for w in d.outcome.warnings:
                warn(w)
        if d.action == "skipped" and not args.json:
            say(f"{d.step.label:>4}  skipped: its inputs are as it read them")
        elif d.outcome is not None and not args.json:
            _report_to_stderr(d.outcome)
        if d.action == "failed" and d.outcome is not None:
            sig = d.outcome.signal
            status = 128 + sig if sig is not None else (d.outcome.record.exit_code or 1)
    if args.json:
        emit_json(
            [
                {
                    "step": d.step.label,
                    "run": d.step.run_id,
                    "command": list(d.step.argv),
                    "changes": [_change_json(c) for c in d.step.changes],
                    "upstream": list(d.step.upstream),
                    "action": d.action,
                    "new_run": d.outcome.run_id if d.outcome else None,
                    "exit_code": d.outcome.record.exit_code if d.outcome else None,
                }
                for d in done
            ]
        )
    return status


def cmd_reset(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.repo import find_repo
    from roargit.steps import reset_session

    sid = reset_session(find_repo(Path.cwd()))
    if args.json:
        emit_json({"session": sid})
    else:
        say(f"started a new session {short(sid)}; earlier runs stay in the ledger")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    import argparse  # lazy: `roar run` is parsed without it (cli.quick_record_args)

    for name, func, help_text, examples in (
        (
            "run",
            cmd_run,
            "run a command and record what it read and wrote as a step",
            """
  roar run python prepare.py data/raw.csv data/clean.csv
  roar run -- python train.py --lr 0.01 --out model.pkl
  roar run @2 --lr=0.001          re-run step 2 with one flag changed
  roar run -q make all            no report
  roar run --json ./eval.sh       print the record as JSON

After a first run, a recorder of yours stays warm for the next ones (roar.recorder.idle
seconds, 600 by default; 0 keeps none), so that a step costs milliseconds, not Python's
start-up; ROAR_RECORDER=off runs without it (docs/architecture.md).""",
        ),
        (
            "build",
            cmd_build,
            "record an environment step (@B1…) that reproduction runs first",
            """
  roar build pip install -r requirements.txt
  roar build make -C native""",
        ),
    ):
        p = add_command(sub, name, func, help_text, examples)
        p.add_argument("-q", "--quiet", action="store_true", help="print no report")
        p.add_argument("--json", action="store_true", help="print the run record as JSON")
        p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")

    p = add_command(
        sub,
        "pop",
        cmd_pop,
        "drop the last step from the session (its untracked outputs are removed)",
        """
  roar pop          undo the last step; git-tracked files are never deleted
  roar pop --json""",
    )
    p.add_argument("--json", action="store_true")
    p = add_command(
        sub,
        "update",
        cmd_update,
        "re-run the stale steps of the session, upstream first (see roar status)",
        """
  roar update                 re-run every step whose inputs or code changed, and those after
  roar update model.pkl       only what model.pkl needs (the step that wrote it and upstream)
  roar update @3 --dry-run    what would run, and why
  roar update --json""",
    )
    p.add_argument("target", nargs="?", help="@N, or a path a step wrote")
    p.add_argument("--dry-run", action="store_true", help="show what would run; run nothing")
    p.add_argument("--json", action="store_true")
    p = add_command(
        sub,
        "reset",
        cmd_reset,
        "start a new session (the old one stays in the ledger)",
        """
  roar reset""",
    )
    p.add_argument("--json", action="store_true")
