"""`roar reproduce` and `roar get`: recreate an artifact, or fetch its bytes from a store."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from roargit.cli import add_command
from roargit.cli.output import (
    emit_json,
    human_duration,
    human_size,
    say,
    short,
    show_text,
    warn,
    wrap_argv,
)
from roargit.errors import RoarError

SOURCE_TEXT = {
    "code": "code tree",
    "worktree": "work tree",
    "store": "store",
    "step": "from",
    "missing": "MISSING",
}
MARK = {"identical": "identical", "differs": "DIFFERS", "missing": "MISSING", "failed": "FAILED"}


def _target(ref: str) -> tuple[Any, str, str | None]:
    """(the repository's paths, the artifact's full hash, the path it was named by) for a
    REF."""
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.plan import NotAnArtifact
    from roargit.repo import find_repo
    from roargit.views import Context

    paths = find_repo(Path.cwd())
    ctx = Context(paths, on_warning=warn)  # merges a ledger a plain git fetch brought
    target = ctx.resolve(ref, Path.cwd())
    if target.kind != "artifact":
        raise NotAnArtifact(ref)
    return paths, target.id, target.path


def _retry_uploads(paths: Any) -> None:
    """Blobs earlier runs could not store go first: this command talks to that store."""
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.uploads import retry_before_use

    for w in retry_before_use(paths):
        warn(w)


def _render_plan(plan: Any) -> None:
    todo = [s for s in plan.steps if s.action == "run"]
    say(
        f"plan for {plan.target[:16]}  ({show_text(plan.target_path or 'no path')}): "
        f"{len(todo)} step(s) to run" + ("" if plan.reuse else ", no reuse")
    )
    for s in plan.steps:
        rec = s.run
        if s.action == "reuse":
            lines = wrap_argv(f"{s.label:>5}  skip  ", rec.argv)
            lines[-1] += "  (its outputs are available)"
            for line in lines:
                say(line)
            continue
        code = rec.code
        state = (
            f"snapshot {(code.tree or '')[:12]} (dirty, on {(code.commit or 'no commit')[:12]})"
            if code.dirty
            else f"commit {(code.commit or '?')[:12]}"
        )
        if not s.code_available:
            state += "  MISSING from this clone"
        # Whole, quoted and escaped: this is what will run (a carriage return in a word
        # cannot hide what comes before it).
        for line in wrap_argv(f"{s.label:>5}  run   ", rec.argv):
            say(line)
        cwd = f", cwd {show_text(rec.cwd)}" if rec.cwd != "." else ""
        say(f"         code  {state}{cwd}")
        for i in s.inputs:
            where = SOURCE_TEXT[i.source]
            if i.source == "step":
                where = f"from {i.detail}" + (" (will regenerate)" if plan.reuse else "")
            elif i.source == "store":
                where = f"store {i.detail}"
            elif i.source == "missing":
                where = f"MISSING ({i.detail})"
            say(
                f"         in    {show_text(i.file.path)}  {short(i.file.hash)}  {show_text(where)}"
            )
        for f in rec.outputs:
            say(f"         out   {show_text(f.path)}  {short(f.hash)}  {human_size(f.size)}")
    for w in plan.warnings:
        say(f"warning: {show_text(w)}")


def _render_report(report: Any) -> None:
    say("")
    for s in report.steps:
        extra = f"  ({s.note})" if s.note else ""
        took = (
            f"  {human_duration(int(s.duration_s * 1e9))}" if s.action in ("ran", "failed") else ""
        )
        say(f"{s.label:>5}  {s.action}{took}{show_text(extra)}")
        for o in s.outputs:
            say(f"         {MARK[o.status]:<9}  {show_text(o.path)}  {short(o.expected)}")
    say("")
    status = MARK[report.target_status]
    say(f"target {report.target[:16]}: {status}")
    if report.target_path:
        say(f"  reproduced at {show_text(report.target_path)}")
    if report.copied_to:
        say(f"  copied to {show_text(report.copied_to)}")
    elif report.target_path and report.target_status == "identical":
        get = f"roar get {report.target[:12]} -o PATH"
        say(f"  (the work tree is left as it is: add -o PATH, or run `{get}`)")
    say(f"  worktree {show_text(report.worktree)}")
    attested = sum(1 for s in report.steps if s.verification)
    if attested:
        # The original runs stay the producers; the reproduction is on record as their check.
        say(
            f"  recorded {attested} verification(s) of the original run(s): "
            f"roar show {report.target[:12]}"
        )


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The steps' own output goes to stderr, so roar's report (or JSON) on stdout is clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _ask(question: str) -> bool:
    """`question` (already made inert) on stderr; True for y/yes typed on the terminal."""
    if not sys.stdin.isatty():
        raise RoarError("not asking without a terminal: add -y to run the plan")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _progress(kind: str, data: dict[str, Any]) -> None:
    if kind == "step":
        warn("\n".join(wrap_argv(f"{data['step']}: ", data["command"])))
    elif kind == "done":
        warn(
            f"{data['step']}: exit {data['exit_code']}, "
            f"{data['identical']}/{data['outputs']} output(s) identical"
        )


def cmd_reproduce(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.hashing import HashCache
    from roargit.ledger import Ledger
    from roargit.plan import make_plan
    from roargit.reproduce import PlanIncomplete, execute, stores_for

    paths, digest, named_at = _target(args.ref)
    _retry_uploads(paths)
    ledger = Ledger(paths)
    plan = make_plan(
        paths,
        ledger,
        digest,
        cache=HashCache(paths.roar_dir),
        stores=stores_for(paths),
        reuse=not args.no_reuse,
        target_at=named_at,
    )
    running = args.run or args.step_by_step
    if not running:
        if args.json:
            emit_json(plan.to_json())
        else:
            _render_plan(plan)
        if not plan.ok:
            raise PlanIncomplete(plan)
        if not args.json:
            say(f"run it: roar reproduce {digest[:12]} --run -y")
        return 0
    if not args.json:
        _render_plan(plan)
    if not plan.ok:
        raise PlanIncomplete(plan)
    out = Path(args.output) if args.output else None
    todo = sum(s.action == "run" for s in plan.steps)
    if not args.yes and not args.step_by_step and not _ask(f"run {todo} step(s)?"):
        return 1

    def confirm(step: Any) -> bool:
        # The whole command, wrapped: the answer is about exactly this argv.
        lines = wrap_argv(f"{step.label}: ", step.run.argv)
        return _ask("\n".join(lines) + f"\nrun {step.label}?")

    with _stdout_to_stderr():
        report = execute(
            paths,
            plan,
            confirm=confirm if args.step_by_step else None,
            on_event=_quiet if args.json else _progress,
            out=out,
            force=args.force,
        )
    if args.json:
        emit_json({**report.to_json(), "plan": plan.to_json()})
    else:
        _render_report(report)
    return 0 if report.identical else 1


def _quiet(_kind: str, _data: dict[str, Any]) -> None:
    return None


def cmd_get(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.retrieval import get_artifact

    paths, digest, _named_at = _target(args.ref)
    _retry_uploads(paths)
    out = Path(args.output).absolute() if args.output else None
    result = get_artifact(paths, digest, out, force=args.force)
    if args.json:
        emit_json(
            {
                "hash": result.hash,
                "path": result.path,
                "from": result.source,
                "size": result.size,
                "already_there": result.already,
            }
        )
    elif result.already:
        say(f"{show_text(result.path)} already holds {short(result.hash)}")
    else:
        size, where = human_size(result.size), show_text(result.source)
        say(f"{show_text(result.path)}  {short(result.hash)}  {size}  from {where}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "reproduce",
        cmd_reproduce,
        "plan, or run, the recorded steps that recreate an artifact, and check its bytes",
        """
  roar reproduce 3fa9c1                  the plan: steps, code states, where each input comes from
  roar reproduce model.pkl --run -y      run it in .git/roar/worktrees/, compare every output
  roar reproduce 3fa9c1 --run -y -o model.pkl --force   and copy the result out
  roar reproduce 3fa9c1 --step-by-step   ask before each step
  roar reproduce 3fa9c1 --run -y --no-reuse   re-run every step back to the source data
  roar reproduce 3fa9c1 --json           the plan as JSON (docs/reproduce.md)

Exit status: 0 when the plan is complete (--plan) or the target came out byte-identical
(--run); 1 otherwise.""",
    )
    p.add_argument("ref", metavar="HASH", help="artifact hash prefix (6+ hex) or path")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print the plan only (the default)")
    mode.add_argument("--run", action="store_true", help="execute the plan")
    mode.add_argument(
        "--step-by-step", action="store_true", help="execute, asking before each step"
    )
    p.add_argument("-y", "--yes", action="store_true", help="run without asking")
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="run every step, even those whose outputs are available by hash",
    )
    p.add_argument("-o", "--output", metavar="PATH", help="copy the reproduced target to PATH")
    p.add_argument("--force", action="store_true", help="let -o replace an existing file")
    p.add_argument("--json", action="store_true", help="print the plan / report as JSON")

    p = add_command(
        sub,
        "get",
        cmd_get,
        "write an artifact's bytes from the blob stores, verified",
        """
  roar get 3fa9c1                 to the path it was recorded at (if free)
  roar get 3fa9c1 -o old-model.pkl
  roar get 3fa9c1 -o model.pkl --force
  roar get 3fa9c1 --json""",
    )
    p.add_argument("ref", metavar="HASH", help="artifact hash prefix (6+ hex)")
    p.add_argument("-o", "--output", metavar="PATH", help="where to write it")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--json", action="store_true")
