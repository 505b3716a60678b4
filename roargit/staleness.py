"""Which steps of the session are stale: an input or a code file a step read has changed
since it ran, or a step it depends on is stale.

A step's data inputs are compared by BLAKE3 through the stat-keyed hash cache (an unchanged
file is not read again), a folder input by its files' stat data first (`folders.FolderCache`,
one lstat per file) and only when that moved by its manifest; a code input by the git blob id
of the file as it is now. A step re-run in the meantime by another step's run does not count:
only the current run of each step is compared. Nothing here writes but the hash cache.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from roargit import folders, pathguard
from roargit.hashing import HashCache
from roargit.ledger_trees import blob_oid
from roargit.records import FileRef, RunRecord
from roargit.session import SessionView, Step
from roargit.structs import NamedTuple


class Change(NamedTuple):
    """One input of a step that is not what the step read."""

    path: str
    kind: str  # "data" (a file or folder, by BLAKE3) or "code" (by git blob id)
    old: str  # as recorded
    new: str | None  # as it is now; None: gone (or a path that may not be read)


class Stale(NamedTuple):
    label: str
    run_id: str
    changes: tuple[Change, ...]  # its own inputs that changed
    upstream: tuple[str, ...]  # the stale steps it depends on


def _blob_id(path: str, width: int) -> str | None:
    """The git blob id of the file at `path` now (None when it cannot be read)."""

    try:
        if os.path.islink(path):
            data = os.fsencode(os.readlink(path))  # git stores the link's text
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError:
        return None
    return blob_oid(data, width)


def changed_inputs(
    runs: Sequence[RunRecord], root: Path, cache: HashCache, roar_dir: Path
) -> list[list[Change]]:
    """For each run, its inputs (data and code) that differ from what it recorded. The files
    of all runs are hashed together (one pass of the cache, hashing spread over cores)."""
    files: list[tuple[int, FileRef, str]] = []
    dirs: list[tuple[int, FileRef]] = []
    out: list[list[Change]] = [[] for _ in runs]
    for i, run in enumerate(runs):
        for f in run.inputs:
            # A path that fails the gate (`../x`, into .git) is never read: it shows as gone.
            if pathguard.problem(f.path, absolute_ok=True):
                out[i].append(Change(f.path, "data", f.hash, None))
            elif f.kind == "dir":
                dirs.append((i, f))
            else:
                files.append((i, f, pathguard.abs_path(f.path, root)))
        for c in run.code.inputs:
            if pathguard.problem(c.path):
                out[i].append(Change(c.path, "code", c.blob, None))
                continue
            now = _blob_id(pathguard.abs_path(c.path, root), len(c.blob))
            if now != c.blob:
                out[i].append(Change(c.path, "code", c.blob, now))
    hashes = cache.hash_many([a for _i, _f, a in files], missing_ok=True, errors={})
    for i, f, absolute in files:
        h = hashes.get(absolute)
        if h is None or h.digest != f.hash:
            out[i].append(Change(f.path, "data", f.hash, None if h is None else h.digest))
    known = folders.FolderCache(roar_dir)
    for i, f in dirs:
        now = _folder_digest(pathguard.abs_path(f.path.rstrip("/"), root), f.hash, cache, known)
        if now != f.hash:
            out[i].append(Change(f.path, "data", f.hash, now))
    for changes in out:
        changes.sort()
    return out


def _folder_digest(
    folder: str, recorded: str, cache: HashCache, known: folders.FolderCache
) -> str | None:
    """The manifest id of the folder as it is now (None when it is gone or empty). Its files'
    stat data as they were when `recorded` was made mean `recorded`, without hashing."""
    if not os.path.isdir(folder):
        return None
    members = folders._walk_bounded(folder, sys.maxsize) or []
    if not members:
        return None
    state = known.get(folder)
    if state is not None and state.manifest == recorded:
        seen = folders.stat_digest(folder, members)
        if seen is not None and seen[0] == state.stat_digest:
            return recorded
    hashes = cache.hash_many(members, missing_ok=True, errors={})
    digest, _data, _size, _count = folders.manifest_from_hashes(
        folder, members, {p: (h.digest, h.size) for p, h in hashes.items()}
    )
    return digest


def stale_steps(view: SessionView, root: Path, cache: HashCache, roar_dir: Path) -> list[Stale]:
    """The session's stale steps, in step order: those whose own inputs changed, and those
    downstream of one (by the view's dependencies, or by the view's own rule: an input that
    the current run of another step wrote differently since)."""
    # A step whose run failed is marked so, not stale: it produced nothing to be behind.
    steps = [s for s in view.steps if s.run.status == "ok"]
    changes = changed_inputs([s.run for s in steps], root, cache, roar_dir)
    by_label = {s.label: c for s, c in zip(steps, changes, strict=True)}
    stale: dict[str, Stale] = {}
    for s in steps:  # build steps first, then by number: upstream before downstream
        own = tuple(by_label[s.label])
        upstream = tuple(d for d in s.depends_on if d in stale)
        if own or upstream or s.state == "stale":
            stale[s.label] = Stale(s.label, s.run_id, own, upstream)
    return list(stale.values())


def upstream_closure(view: SessionView, step: Step) -> set[str]:
    """`step` and every step it depends on, directly or not."""
    by_label = {s.label: s for s in view.steps}
    found: set[str] = set()
    todo = [step.label]
    while todo:
        label = todo.pop()
        if label in found or label not in by_label:
            continue
        found.add(label)
        todo.extend(by_label[label].depends_on)
    return found
