"""Rendering helpers shared by commands: JSON for scripts, short text for people."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from roargit import TYPE_CHECKING
from roargit.pathguard import escape as show_text

if TYPE_CHECKING:
    from typing import Any


def emit_json(value: Any) -> None:
    """The one way every command prints `--json`: one document and a newline, indented for a
    terminal, compact when piped to a program (json's C encoder serves only unindented
    output, and a big plan is many values)."""
    # lazy: only --json output needs it
    import json

    if sys.stdout.isatty():
        text = json.dumps(value, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(value, ensure_ascii=False)
    sys.stdout.write(text + "\n")


def show_word(word: str) -> str:
    """One argv word as a shell would need it typed: `shlex.quote`, or, when it holds a
    control character, bash's `$'…'` with the character escaped (what `printf %q` prints),
    so that a carriage return cannot hide the words before it."""
    # lazy: only a command shown for copying needs it
    import shlex

    shown = show_text(word)
    if shown == word:
        return shlex.quote(word)
    inner = show_text(word.replace("\\", "\\\\")).replace("'", "\\'")
    return f"$'{inner}'"


def show_argv(argv: Sequence[str]) -> str:
    """A recorded command, whole, quoted and inert: pasted into a shell, it is that argv."""
    return " ".join(show_word(w) for w in argv)


def shorten(text: str, width: int) -> str:
    """For one-line overviews (`roar log`, `roar dag`): cut with a visible `…`. Never for a
    command someone is asked to run."""
    return text if len(text) <= width else text[: width - 1] + "…"


def wrap_argv(head: str, argv: Sequence[str], width: int | None = None) -> list[str]:
    """`head` and the whole command in lines of about `width` columns (the terminal's),
    broken between words with a shell continuation (` \\`) and indented: pasted into a
    shell it is still that argv. A word wider than a line keeps a line of its own."""
    # lazy: only wrapping to the terminal's width needs it
    import shutil

    width = width or shutil.get_terminal_size((100, 24)).columns
    pad = " " * min(len(head) + 2, 16)
    lines: list[str] = []
    line, fresh = head, True
    for word in (show_word(w) for w in argv):
        if fresh or len(line) + 1 + len(word) + 2 <= width:
            line += ("" if fresh else " ") + word
            fresh = False
        else:
            lines.append(line + " \\")
            line = pad + word
    lines.append(line)
    return lines


def say(text: str = "") -> None:
    print(text)


def warn(text: str) -> None:
    """`roar: text` on stderr, each line made inert (warnings quote recorded paths, remote
    names, hook output)."""
    lines = "\n".join(show_text(line) for line in text.split("\n"))
    print(f"roar: {lines}", file=sys.stderr)


def short(hexid: str, n: int = 12) -> str:
    return hexid[:n]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_duration(ns: int) -> str:
    s = ns / 1e9
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"
