"""`roar run @N [--key=value…]`: a step of the session run again, with flags changed.

`@N` (`@BN` for a build step) names a step of the active session; its current run's command
runs again in the folder it ran in, keeping its number (session.py: a re-run supersedes).
`--key=value` words after it replace that flag's value in the recorded command, whichever
spelling the command used (`--lr 0.1` or `--lr=0.1`), or are appended when it has no such
flag. A recorded command whose secrets were redacted runs with the `<redacted>` marker in
their place: the caller says so, and the user passes them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from roargit import session
from roargit.ledger import Ledger
from roargit.pathguard import abs_path
from roargit.redact import MARK
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple


class Rerun(NamedTuple):
    """What `roar run @N …` runs, and as which step."""

    argv: list[str]
    cwd: Path
    kind: str  # "run" or "build"
    step: int
    redacted: bool  # the recorded command had secrets replaced by the marker
    # Where the shell pointed its standard streams (RunRecord.redirects): pointed there again
    # unless this invocation's shell points them itself.
    redirects: Mapping[str, str] = MappingProxyType({})


def apply_overrides(argv: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """`argv` with each `--key=value` of `overrides` replacing that flag's value (either
    spelling), or appended where `argv` has no such flag. A word without `=` replaces the
    same word, or is appended."""
    out = list(argv)
    for item in overrides:
        key, eq, value = item.partition("=")
        for i, tok in enumerate(out):
            if tok == key and eq:
                if i + 1 < len(out) and not out[i + 1].startswith("-"):
                    out[i + 1] = value
                else:
                    out.insert(i + 1, value)
                break
            if tok.startswith(key + "=") or tok == item:
                out[i] = item
                break
        else:
            out.append(item)
    return out


def resolve(paths: RepoPaths, command: Sequence[str], ledger: Ledger | None = None) -> Rerun | None:
    """The re-run `command` asks for when its first word is a step label (`@3`, `@B1`);
    None when it is an ordinary command. `NoSuchStep` when the active session has no such
    step. Reads the session's index, which numbering the run then reads again from memory
    (session.load_index), and the one record of the step's current run."""
    parsed = session.parse_label(command[0]) if command else None
    if parsed is None:
        return None
    kind, number = parsed
    ledger = ledger or Ledger(paths, fast_start=True)
    state = session.read_state(paths.roar_dir)
    steps = session.load_index(ledger, state.session_id, state.popped, keep=True)
    found = next((s for s in steps if s.kind == kind and s.number == number), None)
    if found is None:
        raise session.NoSuchStep(session.label(kind, number))
    old = ledger.run(found.current.run)
    return Rerun(
        argv=apply_overrides(old.argv, command[1:]),
        cwd=Path(abs_path(old.cwd, paths.root)),
        kind=kind,
        step=number,
        redacted=any(MARK in a for a in old.argv),
        redirects=old.redirects,
    )
