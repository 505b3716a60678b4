"""Command lines, as `roar diff` compares them.

A token (or the value of `--flag=value`) that names one of the step's own inputs or outputs —
relative to the run's cwd, or absolute — is replaced by a placeholder: `{in}`, `{out}`, or
`{dir}` for a folder holding some of them. Two runs of the same pipeline into other folders
then have equal command lines; what those paths held is compared as data, by hash.

The normalised tokens are read as items keyed by flag (`--lr`) or position (`argument 2`),
so a change is reported as `--lr 0.1 → 0.01`, not as "token 4 differs".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from roargit.records import RunRecord

_NUMBER = re.compile(r"^-\.?\d")
_VERSION_TAIL = re.compile(r"[\d.]+$")


@dataclass(frozen=True, slots=True)
class Token:
    raw: str
    norm: str
    path: str | None  # the recorded path of the input/output it names exactly


@dataclass(frozen=True, slots=True)
class Item:
    key: str  # "--lr", "argument 2", "program"
    norm: str | None  # normalised value; "" for a flag given without one
    raw: str | None
    path: str | None


@dataclass(frozen=True, slots=True)
class Change:
    what: str
    a: str | None  # None: absent on that side
    b: str | None


def is_flag(token: str) -> bool:
    return len(token) > 1 and token.startswith("-") and not _NUMBER.match(token)


class _Files:
    """The run's recorded input/output paths, for telling which tokens name them."""

    def __init__(self, rec: RunRecord) -> None:
        self.role: dict[str, str] = {}
        for role, files in (("in", rec.inputs), ("out", rec.outputs)):
            for f in files:
                p = f.path.rstrip("/")
                self.role[p] = "inout" if self.role.get(p, role) != role else role
        self.dirs: set[str] = set()
        for p in self.role:
            parent = p.rsplit("/", 1)[0] if "/" in p else ""
            while parent and parent not in self.dirs and parent != "/":
                self.dirs.add(parent)
                parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
        self.cwd = rec.cwd

    def lookup(self, value: str) -> tuple[str, str | None] | None:
        """(placeholder, exact path) for a token naming the run's files, else None."""
        if not value or value in (".", "..", "-", "/") or "\n" in value or "://" in value:
            return None
        if os.path.isabs(value):
            cand = os.path.normpath(value)
            if cand in self.role:
                return "{" + self.role[cand] + "}", cand
            for p, role in self.role.items():
                if not p.startswith("/") and cand.endswith("/" + p):
                    return "{" + role + "}", p
            return ("{dir}", None) if cand in self.dirs else None
        cand = os.path.normpath(os.path.join(self.cwd, value) if self.cwd != "." else value)
        if cand.startswith("..") or cand == ".":
            return None
        if cand in self.role:
            return "{" + self.role[cand] + "}", cand
        if cand in self.dirs:
            return "{dir}", None
        return None


# Parsed command lines by record identity: a diff asks about each run several times, and
# RunRecord (which holds a dict) cannot be a cache key itself. Bounded, and checked by `is`.
_PARSED: dict[int, tuple[RunRecord, list[Token], list[Item]]] = {}
_PARSED_MAX = 20_000


def _parsed(rec: RunRecord) -> tuple[list[Token], list[Item]]:
    hit = _PARSED.get(id(rec))
    if hit is not None and hit[0] is rec:
        return hit[1], hit[2]
    toks = _tokens(rec)
    its = _items(toks)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[id(rec)] = (rec, toks, its)
    return toks, its


def tokens(rec: RunRecord) -> list[Token]:
    return _parsed(rec)[0]


def items(rec: RunRecord) -> list[Item]:
    return _parsed(rec)[1]


def _tokens(rec: RunRecord) -> list[Token]:
    files = _Files(rec)
    out: list[Token] = []
    for i, raw in enumerate(rec.argv):
        if i == 0:
            out.append(Token(raw, raw, None))
            continue
        head, value = "", raw
        if is_flag(raw) and "=" in raw:
            key, _, value = raw.partition("=")
            head = key + "="
        found = files.lookup(value)
        if found is None:
            out.append(Token(raw, raw, None))
        else:
            out.append(Token(raw, head + found[0], found[1]))
    return out


def _items(toks: list[Token]) -> list[Item]:
    out: list[Item] = []
    seen: dict[str, int] = {}
    position = 0

    def key_for(base: str) -> str:
        n = seen.get(base, 0) + 1
        seen[base] = n
        return base if n == 1 else f"{base}[{n}]"

    i = 0
    if toks:
        out.append(Item("program", toks[0].norm, toks[0].raw, None))
        i = 1
    while i < len(toks):
        t = toks[i]
        if is_flag(t.raw):
            if "=" in t.raw:
                flag, _, raw_value = t.raw.partition("=")
                norm_value = t.norm.partition("=")[2]
                out.append(Item(key_for(flag), norm_value, raw_value, t.path))
            elif i + 1 < len(toks) and not is_flag(toks[i + 1].raw):
                nxt = toks[i + 1]
                out.append(Item(key_for(t.raw), nxt.norm, nxt.raw, nxt.path))
                i += 1
            else:
                out.append(Item(key_for(t.raw), "", "", None))
        else:
            position += 1
            out.append(Item(key_for(f"argument {position}"), t.norm, t.raw, t.path))
        i += 1
    return out


def file_keys(rec: RunRecord) -> dict[str, str]:
    """{recorded path: argv item key} for the files the command line names."""
    return {it.path: it.key for it in items(rec) if it.path is not None}


def argv_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    if [t.norm for t in tokens(a)] == [t.norm for t in tokens(b)]:
        return []
    ia = {it.key: it for it in items(a)}
    ib = {it.key: it for it in items(b)}
    changes: list[Change] = []
    for key in dict.fromkeys([*ib, *ia]):
        x, y = ia.get(key), ib.get(key)
        if x is not None and y is not None and x.norm == y.norm:
            continue
        changes.append(Change(key, _shown(x), _shown(y)))
    return changes


def _shown(it: Item | None) -> str | None:
    if it is None:
        return None
    return it.raw if it.raw else "(set)"


def script_of(rec: RunRecord) -> str:
    """What the step runs: the program and its script or module (`python train.py`)."""
    if not rec.argv:
        return "?"
    prog = os.path.basename(rec.argv[0])
    if prog.startswith(("python", "pypy", "Rscript", "ruby", "perl", "node", "julia")):
        prog = _VERSION_TAIL.sub("", prog) or prog
    toks = tokens(rec)
    i = 1
    while i < len(toks):
        t = toks[i]
        if t.raw in ("-m", "-c") and i + 1 < len(toks):
            return f"{prog} {t.raw} {toks[i + 1].norm}"
        if not is_flag(t.raw):
            return f"{prog} {t.norm}"
        i += 1
    return prog
