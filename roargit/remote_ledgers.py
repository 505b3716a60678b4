"""The remote ledgers a fetch brought (`refs/roar/remotes/<remote>/ledger`), and which of
them are merged into this clone's ledger.

Merging is a step of its own, done once per fetched tip: `roar fetch` (and a push that lost
a race) merges what it fetched; after a plain `git fetch`, which lineage travels with too, the
first roar command that reads the ledger finds a remote tip not merged yet and merges it
then, so `git fetch && roar show model.pkl` sees the fetched runs. Every later command only
compares the remote tips with the ones noted as merged in `.git/roar/merged.json` (one
`git for-each-ref`): it never merges, or moves a ref, again for the same tip.

A remote whose ledger could not be merged is not noted, so the next command tries again and
says why. The merge itself is `ledger_merge.sync_remotes` (ledger_check gates every entry).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from roargit import ledger_merge
from roargit.git import run_git
from roargit.keep_ref import merge_keep
from roargit.ledger import REMOTES_PREFIX, Ledger
from roargit.ledger_merge import Synced
from roargit.repo import RepoPaths, ensure_roar_dir

STATE_FILE = "merged.json"


def remote_tips(paths: RepoPaths) -> dict[str, str]:
    """{remote ledger ref: the commit it points at} for every fetched remote ledger."""
    out = run_git(
        ["for-each-ref", "--format=%(objectname) %(refname)", REMOTES_PREFIX], paths.git_dir
    ).stdout.decode()
    tips: dict[str, str] = {}
    for line in out.splitlines():
        oid, _, ref = line.partition(" ")
        if ref.endswith("/ledger"):
            tips[ref] = oid
    return tips


def _state_path(paths: RepoPaths) -> Path:
    return paths.roar_dir / STATE_FILE


def merged_tips(paths: RepoPaths) -> dict[str, str]:
    """The remote tips noted as merged ({} when none are, or the note is unreadable: the
    next merge finds them merged already and notes them again)."""
    try:
        data = json.loads(_state_path(paths).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def unmerged(paths: RepoPaths) -> dict[str, str]:
    """The fetched remote ledgers whose tip is not noted as merged, with that tip."""
    done = merged_tips(paths)
    return {ref: tip for ref, tip in remote_tips(paths).items() if done.get(ref) != tip}


def merge(paths: RepoPaths, ledger: Ledger) -> list[Synced]:
    """Merge every fetched remote ledger into `ledger` and note the tips merged; what each
    merge did (`Synced`: rejected entries, or the error that kept it out)."""
    # The tips read before the merge are noted after it: a fetch in between leaves a newer tip
    # that the next command merges, never a noted tip that was not merged.
    tips = remote_tips(paths)
    done = ledger_merge.sync_remotes(ledger)
    failed = {s.ref for s in done if s.error}
    _note(paths, {ref: tip for ref, tip in tips.items() if ref not in failed})
    return done


def merge_fetched(paths: RepoPaths, keep_ref: str) -> list[Synced]:
    """`merge` into the repository's own ledger (opened for it), then the fetched keep ref
    `keep_ref` into ours."""
    ledger = Ledger(paths)
    try:
        done = merge(paths, ledger)
    finally:
        ledger.close()
    merge_keep(paths, keep_ref)
    return done


def merge_new(paths: RepoPaths, ledger: Ledger) -> list[Synced]:
    """`merge`, when a fetch brought a remote tip not merged yet; else nothing at all."""
    if not unmerged(paths):
        return []
    return merge(paths, ledger)


def _note(paths: RepoPaths, tips: dict[str, str]) -> None:
    if merged_tips(paths) == tips:
        return
    f = ensure_roar_dir(paths) / STATE_FILE
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(tips, indent=1, sort_keys=True))
    os.replace(tmp, f)
