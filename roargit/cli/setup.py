"""`roar init` and `roar config`."""

from __future__ import annotations

import argparse
from pathlib import Path

from roargit.cli import add_command
from roargit.cli.output import emit_json, say
from roargit.errors import ConfigError


def cmd_init(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.clone import init_clone
    from roargit.repo import find_repo

    result = init_clone(find_repo(Path.cwd()))
    if args.json:
        emit_json(
            {
                "roar_dir": result.roar_dir,
                "created": result.created,
                "remotes_configured": list(result.remotes_configured),
            }
        )
    else:
        verb = "Initialized" if result.created else "Already initialized:"
        say(f"{verb} roar in {result.roar_dir}")
        for remote in result.remotes_configured:
            say(f"  git fetch {remote} now brings refs/roar/* along")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit import config
    from roargit.repo import find_repo

    paths = find_repo(Path.cwd())
    if args.action == "list":
        values = sorted(config.read_all(paths).values(), key=lambda v: v.key)
        if args.json:
            emit_json([{"key": v.key, "value": v.value, "origin": v.origin} for v in values])
        else:
            for v in values:
                say(f"{v.key}={v.value}  ({v.origin})")
        return 0
    if args.action == "get":
        value = config.get(paths, args.key)
        if value is None:
            return 1
        if args.json:
            emit_json({"key": value.key, "value": value.value, "origin": value.origin})
        else:
            say(value.value)
        return 0
    if args.action == "set":
        config.set_value(paths, args.key, args.value, team=args.team)
        return 0
    if not config.unset(paths, args.key, team=args.team):
        raise ConfigError(f"{config.normalise_key(args.key)} is not set there")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "init",
        cmd_init,
        "prepare this repository for roar (idempotent)",
        """
  roar init          create .git/roar/ and set up fetching of other clones' ledgers
  roar init --json   the same, reporting what was done as JSON""",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add_command(
        sub,
        "config",
        cmd_config,
        "read and write roar settings (git config roar.*, team defaults in .roarconfig)",
        """
  roar config list                            every setting, value and where it comes from
  roar config get store.url                   one value (exit 1 when unset)
  roar config set store.url s3://bucket/roar  your own setting (git config --local)
  roar config set --team store.url s3://b/r   the team default, in .roarconfig (commit it)
  roar config unset store.url""",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    p_list = actions.add_parser("list", help="every setting in effect")
    p_get = actions.add_parser("get", help="one value; exit 1 when unset")
    p_get.add_argument("key", help="e.g. store.url (the roar. prefix is optional)")
    p_set = actions.add_parser("set", help="set a value")
    p_set.add_argument("key")
    p_set.add_argument("value")
    p_unset = actions.add_parser("unset", help="remove a value")
    p_unset.add_argument("key")
    for q in (p_set, p_unset):
        q.add_argument("--team", action="store_true", help="write .roarconfig, not git config")
    for q in (p_list, p_get):
        q.add_argument("--json", action="store_true", help="print as JSON")
