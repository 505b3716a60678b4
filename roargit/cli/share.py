"""`roar push`, `roar fetch`, `roar hooks`: sharing lineage with a git remote."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from roargit.cli import add_command
from roargit.cli.output import emit_json, human_size, say, short, show_text, warn
from roargit.errors import RoarError


def _paths() -> Any:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.repo import find_repo

    return find_repo(Path.cwd())


def _blob_json(b: Any) -> dict[str, Any]:
    return {"hash": b.digest, "size": b.size, "path": b.path}


def push_json(report: Any) -> dict[str, Any]:
    plan = report.blobs
    up = report.uploaded
    return {
        "remote": report.remote,
        "dry_run": report.dry_run,
        "pushed": report.pushed,
        "up_to_date": report.up_to_date,
        "attempts": report.attempts,
        "runs": report.runs,
        "sessions": report.sessions,
        "ledger_bytes": report.ledger_bytes,
        "snapshots": [
            {
                "tree": s.tree,
                "commit": s.commit,
                "size": s.size,
                "added": [{"path": p, "size": n} for p, n in s.added],
                "modified": [{"path": p, "size": n} for p, n in s.modified],
            }
            for s in report.snapshots
        ],
        "commits": report.commits,
        "store": None
        if plan is None
        else {
            "url": plan.store,
            "present": plan.present,
            "to_upload": [_blob_json(b) for b in plan.to_upload],
            "upload_bytes": sum(b.size for b in plan.to_upload),
            "unavailable": [_blob_json(b) for b in plan.unavailable],
            "too_big": [_blob_json(b) for b in plan.too_big],
            "secret": [_blob_json(b) for b in plan.secret],
            "uploaded": None if up is None else up.blobs,
            "uploaded_bytes": None if up is None else up.nbytes,
            "failed": []
            if up is None
            else [dict(_blob_json(b), error=why) for b, why in up.failed],
        },
        "sensitive": [{"kind": f.kind, "detail": f.detail, "runs": f.runs} for f in report.flags],
        "warnings": report.warnings,
    }


def _say_dry_run(report: Any) -> None:
    say(f"would push to {report.remote}:")
    say(f"  {len(report.runs)} run record(s), {report.sessions} session record(s), ")
    say(f"  {human_size(report.ledger_bytes)} of git objects the remote lacks")
    for rid in report.runs[:20]:
        say(f"    run {short(rid)}")
    if len(report.runs) > 20:
        say(f"    … and {len(report.runs) - 20} more")
    if report.snapshots:
        say(f"  {len(report.snapshots)} dirty-tree code snapshot(s):")
        for s in report.snapshots:
            base = short(s.commit or "")
            say(f"    {short(s.tree)}  {human_size(s.size)} differ from commit {base}")
            for p, n in s.added:
                say(f"      + {show_text(p)}  {human_size(n)}  (not in the commit)")
            for p, n in s.modified:
                say(f"      M {show_text(p)}  {human_size(n)}")
    if report.commits:
        say(
            f"  {len(report.commits)} commit(s) no branch of {report.remote} holds "
            "(they go under refs/roar/commits):"
        )
        for c in report.commits[:10]:
            say(f"    {short(c)}")
    plan = report.blobs
    if plan is None:
        say("  bytes: no team store (roar.store.url); they stay on this machine")
    else:
        total = sum(b.size for b in plan.to_upload)
        say(f"  bytes to {plan.store}: {len(plan.to_upload)} blob(s), {human_size(total)}")
        for b in plan.to_upload[:20]:
            say(f"    {short(b.digest)}  {human_size(b.size)}  {show_text(b.path)}")
        if len(plan.to_upload) > 20:
            say(f"    … and {len(plan.to_upload) - 20} more")
        if plan.present:
            say(f"    ({plan.present} already in the store)")
        for what, items in (
            ("not on this machine", plan.unavailable),
            ("above roar.store.maxBlobSize", plan.too_big),
            ("secret-looking names, never uploaded", plan.secret),
        ):
            if items:
                say(f"    {len(items)} blob(s) {what}")
    if report.flags:
        say("  check before sharing:")
        for f in report.flags:
            times = f" ({f.runs} runs)" if f.runs > 1 else ""
            say(f"    {f.kind:<15} {show_text(f.detail)}{times}")
    for w in report.warnings:
        warn(w)


def cmd_push(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.progress import Progress
    from roargit.share import push

    # Drawn only on a terminal, once the push has taken a while (progress.py): bytes to the
    # store first, then the git push.
    progress = None if args.quiet or args.json else Progress("pushing")
    try:
        report = push(
            _paths(), args.remote, dry_run=args.dry_run, progress=progress, blobs=not args.no_blobs
        )
    finally:
        if progress is not None:
            progress.close()
    failed = report.uploaded.failed if report.uploaded else []
    if args.json:
        emit_json(push_json(report))
        return 1 if failed else 0
    if report.dry_run:
        _say_dry_run(report)
        return 0
    for w in report.warnings:
        warn(w)
    for b, why in failed[:10]:
        warn(f"{show_text(b.path)} ({short(b.digest)}) not uploaded: {why}")
    if len(failed) > 10:
        warn(f"{len(failed) - 10} more blob(s) not uploaded")
    if args.quiet:
        return 1 if failed else 0
    plan, up = report.blobs, report.uploaded
    if report.up_to_date and not (up and up.blobs):
        say(f"{report.remote}: lineage up to date")
    else:
        say(f"pushed {len(report.runs)} run(s) to {report.remote}")
    if plan is not None and up is not None:
        if up.blobs:
            say(f"  uploaded {up.blobs} blob(s), {human_size(up.nbytes)} to {plan.store}")
        if plan.unavailable:
            say(f"  {len(plan.unavailable)} blob(s) the store lacks are not on this machine either")
        if plan.too_big:
            say(f"  {len(plan.too_big)} blob(s) above roar.store.maxBlobSize stay here")
    elif plan is None and report.blobs is None and not args.no_blobs:
        say("  no team store (roar.store.url): bytes stay on this machine")
    return 1 if failed else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.share import fetch

    result = fetch(_paths(), args.remote)
    for w in result.warnings:
        warn(w)
    if args.json:
        emit_json(
            {
                "remote": result.remote,
                "refspecs_added": result.refspecs_added,
                "before": result.before,
                "after": result.after,
                "runs_added": result.runs_added,
                "warnings": result.warnings,
            }
        )
    elif not args.quiet:
        if result.refspecs_added:
            say(f"git fetch {result.remote} now brings refs/roar/* along")
        say(f"fetched {result.remote}: {result.runs_added} new run(s)")
    return 0


def _chosen(args: argparse.Namespace) -> tuple[list[str], bool]:
    names = [n for n, on in (("pre-commit", args.pre_commit), ("pre-push", args.pre_push)) if on]
    if not names and not args.post_run:
        return ["pre-commit", "pre-push"], False
    return names, args.post_run


def cmd_hooks(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit import hooks

    paths = _paths()
    if args.action == "install":
        names, post = _chosen(args)
        for line in hooks.install(paths, names, post):
            say(line)
        return 0
    if args.action == "uninstall":
        names, post = _chosen(args)
        if not args.pre_commit and not args.pre_push and not args.post_run:
            post = True
        done = hooks.uninstall(paths, names, post)
        for line in done or ["nothing of roar's was installed"]:
            say(line)
        return 0
    if args.action == "status":
        st = hooks.status(paths)
        if args.json:
            emit_json(
                {
                    "folder": st.folder,
                    "hooks": [h._asdict() for h in st.hooks],
                    "post_run": st.post_run._asdict(),
                }
            )
            return 0
        say(f"hooks folder: {st.folder}")
        for h in st.hooks:
            state = (
                "installed" if h.installed else ("another hook" if h.foreign else "not installed")
            )
            extra = " (chains to the hook that was there)" if h.chained else ""
            say(f"  {h.name:<11} {state}{extra}")
        cmd = st.post_run.command
        say(f"  {'post-run':<11} {show_text(cmd) if cmd else 'not set (roar.hooks.postRun)'}")
        return 0
    # run: what the installed scripts call
    if args.hook == "pre-push":
        # lazy: loaded when this command runs, not at every command's start-up
        import os

        # git passes REMOTE URL; the pre-commit framework passes them in its environment.
        given = args.args or [
            os.environ.get("PRE_COMMIT_REMOTE_NAME", ""),
            os.environ.get("PRE_COMMIT_REMOTE_URL", ""),
        ]
        if len(given) < 2 or not given[0]:
            raise RoarError("usage: roar hooks run pre-push REMOTE URL")
        outcome = hooks.pre_push(paths, given[0], given[1])
    elif args.hook == "pre-commit":
        outcome = hooks.pre_commit(paths, args.args or None)
    else:
        raise RoarError(f"unknown hook '{args.hook}'")
    for m in outcome.messages:
        warn(m)
    return 0 if outcome.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "push",
        cmd_push,
        "send the lineage to a git remote and the bytes it names to the team store",
        """
  roar push                  to the current branch's remote (else origin)
  roar push upstream         to another remote
  roar push --dry-run        list what would leave this machine, and what to check first
  roar push --json""",
    )
    p.add_argument("remote", nargs="?", help="git remote (default: the branch's, else origin)")
    p.add_argument("-n", "--dry-run", action="store_true", help="only list what would go")
    p.add_argument("--no-blobs", action="store_true", help="push the lineage only, no bytes")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add_command(
        sub,
        "fetch",
        cmd_fetch,
        "bring other clones' lineage from a git remote and merge it",
        """
  roar fetch                 from the current branch's remote (else origin)
  roar fetch upstream
  roar fetch --json""",
    )
    p.add_argument("remote", nargs="?", help="git remote (default: the branch's, else origin)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add_command(
        sub,
        "hooks",
        cmd_hooks,
        "install, remove or show roar's git hooks (pre-commit, pre-push) and post-run hook",
        """
  roar hooks install                 pre-commit and pre-push (existing hooks keep running)
  roar hooks install --post-run      run roar.hooks.postRun after each roar run
  roar hooks uninstall               remove them, restoring hooks that were there
  roar hooks status""",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action in ("install", "uninstall"):
        q = actions.add_parser(action, help=f"{action} hooks (default: pre-commit, pre-push)")
        q.add_argument("--pre-commit", action="store_true")
        q.add_argument("--pre-push", action="store_true")
        q.add_argument("--post-run", action="store_true")
    q = actions.add_parser("status", help="what is installed")
    q.add_argument("--json", action="store_true")
    q = actions.add_parser("run", help="run a hook's check (the installed scripts call this)")
    q.add_argument("hook", choices=("pre-commit", "pre-push"))
    q.add_argument("args", nargs="*", help="what git passes (pre-push: REMOTE URL); files")
