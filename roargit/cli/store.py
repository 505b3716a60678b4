"""`roar store sync`: upload the blobs that runs could not store (the queue in .git/roar)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from roargit.cli import add_command
from roargit.cli.output import emit_json, human_size, say, short, show_text, warn


def _entry_json(e: Any, why: str = "") -> dict[str, Any]:
    out = {"store": e.store, "hash": e.digest, "size": e.size, "path": e.path}
    if why:
        out["reason"] = why
    return out


def cmd_sync(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit import config, uploads
    from roargit.repo import find_repo

    paths = find_repo(Path.cwd())
    settings = config.read_all(paths)
    queue = uploads.pending(paths)
    if not queue:
        if args.json:
            emit_json({"stored": [], "dropped": [], "left": [], "errors": []})
        else:
            say("nothing to upload: the queue is empty")
        return 0
    total = len(queue)
    done = 0

    def progress(kind: str, e: Any, why: str) -> None:
        nonlocal done
        done += 1
        if args.json:
            return
        shown = show_text(uploads.shown_path(paths, e.path))
        mark = {"stored": "stored ", "dropped": "DROPPED", "left": "left   "}[kind]
        line = f"[{done}/{total}] {mark} {short(e.digest)}  {human_size(e.size):>9}  {shown}"
        print(line, file=sys.stderr, flush=True)

    if not args.json:
        stores = sorted({e.store for e in queue})
        warn(f"uploading {total} queued blob(s) to {', '.join(stores)}")
    result = uploads.sync(paths, settings, on_entry=progress)
    if args.json:
        emit_json(
            {
                "stored": [_entry_json(e) for e in result.stored],
                "dropped": [_entry_json(e, why) for e, why in result.dropped],
                "left": [_entry_json(e, e.reason) for e in result.left],
                "errors": [
                    {"store": url, "cause": f.cause, "message": f.text}
                    for url, f in sorted(result.failures.items())
                ],
            }
        )
    else:
        for _, why in result.dropped:
            warn(f"dropped: {why}")
        for url, f in sorted(result.failures.items()):
            warn(f"could not upload to {f.line(url)}")
        say(
            f"{len(result.stored)} stored, {len(result.dropped)} dropped, "
            f"{len(result.left)} left in the queue"
        )
    return 1 if result.left else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "store",
        lambda _args: p.print_help(),
        "the blob store: upload what runs could not store",
        """
  roar store sync          upload every queued blob; exit 1 if any is left
  roar store sync --json   the same, reporting stored, dropped and left blobs as JSON""",
        description=(
            "When the blob store fails during a run (no credentials, a missing bucket, an\n"
            "endpoint that is down, a folder that is not writable), the run is recorded all\n"
            "the same and the bytes wait in a queue under .git/roar/uploads. The next run,\n"
            "roar get or roar reproduce that reaches the store retries them; so does this."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    q = actions.add_parser("sync", help="upload the queued blobs; exit 1 if any is left")
    q.set_defaults(func=cmd_sync)
    q.add_argument("--json", action="store_true", help="print the result as JSON")
