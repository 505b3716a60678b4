"""`roar fsck`."""

from __future__ import annotations

import argparse
from pathlib import Path

from roargit.cli import add_command
from roargit.cli.output import emit_json, say


def cmd_fsck(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.fsck import check, repair
    from roargit.repo import find_repo
    from roargit.reproduce import stores_for

    paths = find_repo(Path.cwd())
    stores = stores_for(paths)
    report = check(paths, stores)
    repaired = []
    if args.repair:
        repaired = repair(paths, stores, report)
        report = check(paths, stores)
    if args.json:
        emit_json(
            {
                "clean": not report.problems,
                "problems": [p.to_json() for p in report.problems],
                "repaired": [
                    {"kind": r.kind, "where": r.where, "id": r.id, "action": r.action}
                    for r in repaired
                ],
                "checked": {
                    "records": report.records,
                    "blobs": report.blobs,
                    "stores": report.stores,
                },
            }
        )
        return 1 if report.problems else 0
    for r in repaired:
        say(f"repaired: {r.line()}")
    for p in report.problems:
        say(p.line())
    stores_text = ", ".join(report.stores) or "none"
    summary = (
        f"{report.records} record(s) and {report.blobs} blob(s) checked (stores: {stores_text})"
    )
    if report.problems:
        hint = "" if args.repair else "; roar fsck --repair fixes what it can"
        say(f"{len(report.problems)} problem(s); {summary}{hint}")
        return 1
    say(f"no problems: {summary}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "fsck",
        cmd_fsck,
        "check the ledger, the blob stores and the quarantine of fetched entries",
        """
  roar fsck                  list every problem, one a line (exit 1 if there is any)
  roar fsck --repair         clear the quarantine, replace or remove corrupt blobs
  roar fsck --json           the report as JSON (docs/cli-json.md)""",
        description=(
            "Check every ledger record against its id and the record schema, the shape of\n"
            "every ledger entry, that the code trees, commits and folder manifests runs name\n"
            "are present, that every blob in the configured stores hashes to its name, and\n"
            "list the entries of fetched ledgers that merges left out (the quarantine).\n"
            "--repair clears the quarantine and removes corrupt blobs, storing them again\n"
            "from an intact copy (another store, or a work-tree file with the same bytes)."
        ),
    )
    p.add_argument(
        "--repair", action="store_true", help="clear the quarantine, fix or drop corrupt blobs"
    )
    p.add_argument("--json", action="store_true", help="print as JSON (docs/cli-json.md)")
