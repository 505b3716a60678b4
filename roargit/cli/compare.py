"""`roar diff A B`: what changed between two lineages, root causes first.

Exit status as diff(1): 0 identical, 1 different, 2 trouble (a bad REF, a corrupt record).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from roargit.cli import add_command
from roargit.cli.output import emit_json, say, short, show_text, warn
from roargit.errors import RoarError

CATEGORY_ORDER = ("code", "data", "params", "environment", "pipeline", "unexplained")


class Paint:
    """ANSI colour, only on a terminal and only without NO_COLOR (https://no-color.org)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self(text, "1")

    def red(self, text: str) -> str:
        return self(text, "31")

    def green(self, text: str) -> str:
        return self(text, "32")

    def yellow(self, text: str) -> str:
        return self(text, "33")

    def dim(self, text: str) -> str:
        return self(text, "2")

    def cyan(self, text: str) -> str:
        return self(text, "36")


def _v(value: str | None) -> str:
    if value is None:
        return "(absent)"
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return short(value)
    if len(value) == 40 and all(c in "0123456789abcdef" for c in value):
        return short(value, 10)
    return value


def _lines_changed(cause: dict[str, Any]) -> str:
    spans = [f"{a}" if a == b else f"{a}-{b}" for a, b in cause.get("lines") or []]
    if not spans:
        return ""
    return f" at line{'s' if len(spans) > 1 or '-' in spans[0] else ''} {', '.join(spans)}"


def cause_text(c: dict[str, Any]) -> str:
    """One phrase for a root cause: `--lr 0.1 → 0.01`, `numpy 1.26.4 → 2.1.0` (recorded
    text in it escaped: it is printed)."""
    return show_text(_cause_text(c))


def _cause_text(c: dict[str, Any]) -> str:
    cat, what, a, b = c["category"], c["what"], c.get("a"), c.get("b")
    if cat == "code" or (cat == "params" and "path" in c and a and len(a) == 40):
        if a is None or b is None:
            return what
        dirty = " (uncommitted)" if c.get("b_dirty") or c.get("a_dirty") else ""
        return f"{what} changed{_lines_changed(c)}{dirty}"
    if cat in ("data", "params") and "path" in c:
        if a is None or b is None:
            return what
        return f"{'source data' if cat == 'data' else 'config'} {what} changed ({_v(a)} → {_v(b)})"
    if cat == "pipeline":
        if what == "step added":
            return f"step added: {b}"
        if what == "step removed":
            return f"step removed: {a}"
        return f"{what} {_v(b)} (was {_v(a)})"
    if cat == "unexplained":
        return what
    return f"{what} {_v(a)} → {_v(b)}"


def _where(c: dict[str, Any]) -> str:
    return show_text(_where_raw(c))


def _where_raw(c: dict[str, Any]) -> str:
    steps = c.get("steps") or []
    if not steps or steps == ["-"]:
        return ""
    script = c.get("script")
    head = f"{steps[0]} {script}" if script else steps[0]
    more = ""
    if len(steps) > 1:
        more = f" (+{len(steps) - 1} more step{'s' if len(steps) > 2 else ''})"
    return f"on {head}{more}"


def render(result: dict[str, Any], paint: Paint) -> None:
    a, b = result["a"], result["b"]
    if result["identical"]:
        n = result["counts"]["b_steps"]
        if a["kind"] == b["kind"] and a["id"] == b["id"]:
            refs = show_text(f"{a['ref']} and {b['ref']}")
            say(f"identical: {refs} name the same {a['kind']} {short(a['id'])}")
        else:
            say(
                f"identical lineages: {n} step{'s' if n != 1 else ''} with the same code, data, "
                "params and environment"
            )
        return
    causes = result["root_causes"]
    head = "; ".join(f"{cause_text(c)} {_where(c)}".strip() for c in causes[:3])
    more = f"; and {len(causes) - 3} more" if len(causes) > 3 else ""
    noun = "root cause" if len(causes) == 1 else "root causes"
    say(paint.bold(f"{len(causes)} {noun}: ") + paint.red(head + more))
    for side, t in (("A", a), ("B", b)):
        seen = verification_summary(t.get("verifications") or [])
        seen = f"  ({seen})" if seen else ""
        say(paint.dim(show_text(f"{side}  {t['ref']}  {t['kind']} {short(t['id'])}{seen}")))
    say("")
    say(paint.bold("root causes"))
    for c in causes:
        say(f"  [{c['id']}] {c['category']:<12} {paint.red(cause_text(c))}  {_where(c)}".rstrip())
    if result["consequences"]:
        say("")
        say(paint.bold("consequences"))
        for q in result["consequences"]:
            why = ", ".join(f"[{i}]" for i in q["because"])
            if q["kind"] == "artifact":
                path = q["path"] if "a_path" not in q else f"{q['a_path']} → {q['path']}"
                say(
                    f"  {paint.yellow(show_text(path))}  {show_text(_v(q['a']))} → "
                    f"{show_text(_v(q['b']))}  "
                    + paint.dim(show_text(f"written by {q['step']}, because of {why}"))
                )
            else:
                ins = ", ".join(i["path"] for i in q.get("inputs", []) if i["path"])
                say(
                    f"  {paint.yellow(show_text(q['step'] + ' ' + q['script']))}  "
                    + paint.dim(show_text(f"re-ran on changed input {ins}, because of {why}"))
                )
    say("")
    say(paint.bold("by category"))
    for cat in CATEGORY_ORDER:
        entries = result["by_category"].get(cat, [])
        if not entries:
            if cat != "unexplained":
                say(f"  {cat:<12} " + paint.dim("no change"))
            continue
        for i, c in enumerate(entries):
            label = cat if i == 0 else ""
            say(f"  {label:<12} [{c['id']}] {cause_text(c)}  {_where(c)}".rstrip())
            for h in c.get("hunks") or []:
                say("               " + paint.cyan(show_text(h["header"])))
                for line in h["lines"]:
                    # A changed line of a recorded file: its bytes are not the terminal's.
                    text = "               " + show_text(line)
                    if line.startswith("+"):
                        text = paint.green(text)
                    elif line.startswith("-"):
                        text = paint.red(text)
                    say(text)
            if c.get("hunks_omitted"):
                say(f"               … {c['hunks_omitted']} more lines")
            if c.get("note"):
                say(paint.dim(f"               ({show_text(c['note'])})"))
    for w in result.get("warnings", []):
        print(f"roar: warning: {show_text(w)}", file=sys.stderr)


def verification_summary(verifications: list[dict[str, Any]]) -> str:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.record_json import verification_summary as summary

    return summary(verifications)


def cmd_diff(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.diff import compare
    from roargit.repo import find_repo
    from roargit.views import Context

    try:
        ctx = Context(find_repo(Path.cwd()), on_warning=warn)
        result = compare(ctx, args.a, args.b, Path.cwd())
    except RoarError as exc:
        # diff(1) keeps 1 for "different": trouble is 2.
        print(f"roar: {show_text(str(exc))}", file=sys.stderr)
        return 2
    if args.html:
        # lazy: loaded when this command runs, not at every command's start-up
        from roargit.web import export

        try:
            export.write(Path(args.html), export.diff_html(ctx, result))
        except RoarError as exc:
            print(f"roar: {show_text(str(exc))}", file=sys.stderr)
            return 2
    if args.json:
        emit_json(result)
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        render(result, Paint(color))
    return 0 if result["identical"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "diff",
        cmd_diff,
        "what changed between two lineages: root causes, then consequences",
        """
  roar diff 966927 model.pkl     an older model (by hash) against the current one
  roar diff @2 3fa9c1d2          a step against an earlier run of it (run id prefix)
  roar diff a1b2c3 d4e5f6 --json root_causes, consequences, by_category (docs/diff.md)
  roar diff @2 3fa9c1d2 --html diff.html   root causes and both DAGs, in one file

exit status: 0 identical, 1 different, 2 trouble""",
        description=(
            "Compare the lineages of A and B (artifact hash or path, run id, @N): pair their "
            "steps, name the root-cause differences (code, data, params, environment, "
            "pipeline) and what changed only because of them."
        ),
    )
    p.add_argument("a", metavar="A", help="a path, artifact hash prefix, run id prefix or @N")
    p.add_argument("b", metavar="B", help="the same kinds of REF as A")
    p.add_argument("--json", action="store_true", help="print as JSON (docs/diff.md)")
    p.add_argument(
        "--html", metavar="FILE", help="also write the diff as one self-contained web page"
    )
