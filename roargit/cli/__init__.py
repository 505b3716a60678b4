"""The `roar` command line: parse, call one domain function, render.

argparse rather than typer: a do-nothing typer app takes several times longer to start than
an argparse one, more than the whole fixed-cost budget of `roar run` (benchmarks/bench_run.py
measures that budget). Each command module registers its own subcommands and imports its
heavy dependencies only when the command actually runs.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

from roargit import TYPE_CHECKING, __version__
from roargit.errors import RoarError
from roargit.pathguard import escape

if TYPE_CHECKING:
    import argparse
    from typing import Any

# Modules under roargit.cli that define `register(subparsers)`, in --help order.
COMMAND_MODULES = (
    "setup",
    "capture",
    "query",
    "reproduce",
    "compare",
    "store",
    "maintenance",
    "share",
    "web",
    "registry",
)

EPILOG = """\
examples:
  roar init                          prepare this repository
  roar run python train.py --lr 0.1  run and record a step
  roar show model.pkl                what produced this file, from what
  roar dag                           the session's pipeline
  roar reproduce 3fa9c1 --run -y     recreate an artifact, byte for byte

Every command has --help with examples; query commands take --json."""


def help_formatter(prog: str) -> argparse.HelpFormatter:
    import argparse  # lazy: `roar run` parses its arguments without it (see quick_record_args)

    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, just that command's (start-up time: building every
    command's parser and importing every command module would be paid by every command)."""
    import argparse  # lazy: see help_formatter

    parser = argparse.ArgumentParser(
        prog="roar",
        description="Git-native lineage: record what each command read and wrote.",
        epilog=EPILOG,
        formatter_class=help_formatter,
    )
    parser.add_argument("--version", action="version", version=f"roar {__version__}")
    parser.add_argument(
        "-C", dest="chdir", metavar="PATH", help="run as if roar was started in PATH"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if only is not None and COMMAND_OF.get(only) != name:
            continue
        try:
            module = importlib.import_module(f"roargit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"roargit.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


# Which module registers each command, so `roar run …` imports only roargit.cli.capture.
COMMAND_OF = {
    "init": "setup",
    "config": "setup",
    "run": "capture",
    "build": "capture",
    "pop": "capture",
    "reset": "capture",
    "update": "capture",
    "show": "query",
    "lineage": "query",
    "dag": "query",
    "log": "query",
    "status": "query",
    "reproduce": "reproduce",
    "get": "reproduce",
    "diff": "compare",
    "push": "share",
    "fetch": "share",
    "hooks": "share",
    "store": "store",
    "fsck": "maintenance",
    "ui": "web",
    "login": "registry",
    "logout": "registry",
    "whoami": "registry",
    "scope": "registry",
    "register": "registry",
    "registry": "registry",
}


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int | None],
    help: str,
    examples: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Register one subcommand; every command carries examples in its --help."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=help_formatter,
    )
    p.set_defaults(func=func)
    return p


def command_names(parser: argparse.ArgumentParser) -> list[str]:
    """The subcommands `parser` knows, in --help order."""
    import argparse  # lazy: see help_formatter

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def unknown_command(word: str, names: Sequence[str]) -> str:
    """One line for a mistyped command, naming the closest ones (as git does)."""
    # lazy: only a mistyped command needs it
    import difflib

    close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    hint = (
        "did you mean " + " or ".join(f"`roar {c}`" for c in close) + "?"
        if close
        else "see `roar --help` for the commands"
    )
    return f"roar: '{escape(word)}' is not a roar command; {hint}"


def crash_log_dir() -> Path:
    # lazy: only a bug report needs these
    import tempfile

    from roargit.repo import find_roar_dir

    try:
        return find_roar_dir(Path.cwd()) / "logs"
    except Exception:
        return Path(tempfile.gettempdir())


def report_bug(exc: BaseException) -> int:
    # lazy: only a bug report needs these
    import time
    import traceback

    try:
        log_dir = crash_log_dir()
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        log.write_text(
            f"roar {__version__}\nargv: {sys.argv!r}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
        where = f"; details in {log}"
    except OSError:
        where = ""
    print(f"roar: internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
    return 2


def _stdout_is_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll(2) says POLLERR then)."""
    # lazy: only a closed stdout is checked with it
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


#: The commands `quick_record_args` may parse: they take these flags, then the command.
RECORDING = ("run", "build")
_RECORDING_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--json": "json"}


def quick_record_args(args_list: Sequence[str]) -> SimpleNamespace | None:
    """`roar run [-q] [--json] COMMAND…` as argparse would parse it, without argparse.

    `roar run` is what users type most and its fixed cost is a budget (benchmarks/bench_run.py):
    importing argparse and building the parser is some 4 ms of it. Anything else (help, an
    unknown flag, a missing command) is left to argparse (None), which then answers as
    always; tests/test_cli_setup.py holds the two parsers to the same results."""
    if len(args_list) < 2 or args_list[0] not in RECORDING:
        return None
    flags = {"quiet": False, "json": False}
    for i, word in enumerate(args_list[1:], start=1):
        if word in _RECORDING_FLAGS:
            flags[_RECORDING_FLAGS[word]] = True
        elif word.startswith("-") and word != "--":
            return None
        else:
            command = list(args_list[i:])
            from roargit.cli.capture import cmd_build, cmd_run  # the module that registers them

            func = cmd_run if args_list[0] == "run" else cmd_build
            return SimpleNamespace(chdir=None, func=func, command=command, **flags)
    return None


#: Where the `roar` front end found no resident recorder listening (roargit/recorder.py):
#: this process starts one there once its run is recorded. Taken out of the environment at
#: once, so that neither the command nor its record sees it.
recorder_socket: str | None = None


def main(argv: Sequence[str] | None = None) -> int:
    global recorder_socket
    recorder_socket = os.environ.pop("ROAR_RECORDER_SOCKET", None) or recorder_socket
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Started with a standard stream closed (`roar run cmd 2>&-`), Python has None there:
    # roar's own messages then go nowhere instead of failing (the command gets the stream as
    # the shell left it).
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    if args_list == ["--version"]:  # answered before any command module is imported
        print(f"roar {__version__}")
        return 0
    quick = quick_record_args(args_list)
    if quick is not None:
        if argv is None:
            # This process records one run and ends: no cyclic garbage collection in it. A
            # run makes no cycles worth collecting (capture.record_run), and the modules it
            # loads make thousands of objects that would set off collections walking them
            # (see also cli.capture's gc.freeze).
            gc.disable()
        return _run_command(quick, None)
    first = next((a for a in args_list if not a.startswith("-")), None)
    direct = first if first in COMMAND_OF and args_list and args_list[0] == first else None
    parser = build_parser(direct)
    if first is not None and args_list[0] == first and first not in command_names(parser):
        print(unknown_command(first, command_names(parser)), file=sys.stderr)
        return 2
    return _run_command(None, (parser, args_list))


def _run_command(args: Any, parse: tuple[argparse.ArgumentParser, list[str]] | None) -> int:
    """Parse (unless `args` came parsed: a quick_record_args namespace), run the command, and
    turn its failures into one-line messages and exit statuses."""
    try:
        if args is None:
            assert parse is not None
            parser, args_list = parse
            args = parser.parse_args(args_list)
        if args.chdir:
            try:
                os.chdir(args.chdir)
            except OSError as exc:
                raise RoarError(f"-C {args.chdir}: {exc.strerror}") from None
        if args.command in ("reproduce", "show", "lineage", "get") and getattr(args, "ref", None):
            # Outside any clone, a registered hash is looked up and its scope's lineage
            # fetched into roar's cache, where the command then runs (docs/registry.md).
            from roargit.cli.registry import from_anywhere

            from_anywhere(args)
        if not getattr(args, "func", None):
            assert parse is not None  # a quick parse always names its function
            parse[0].print_help()
            return 0
        if sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
            # lazy: only a terminal shows progress bars
            from roargit import progress

            progress.enable()
        return int(args.func(args) or 0)
    except RoarError as exc:
        # Messages quote recorded paths and names: whatever they hold is printed inert.
        print(f"roar: {escape(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("roar: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not _stdout_is_gone():
            return report_bug(exc)
        # `roar log | head`: the reader left; not an error worth a report.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        return report_bug(exc)
