"""`roar get`: write an artifact's recorded bytes to a path, verified against its hash.

The short path beside `roar reproduce` (reproduce.py): nothing runs. The bytes come from a
blob store through reproduce's `Materialiser`, so every write is verified and goes through a
`pathguard.Root`; an artifact no store holds gets an error that says whether a reproduction
could recreate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roargit import pathguard, progress
from roargit.errors import RoarError
from roargit.folders import decode_manifest
from roargit.hashing import HashCache
from roargit.ledger import Ledger
from roargit.pathguard import Root, Source, escape
from roargit.plan import Locator, Planner, location
from roargit.records import FileRef
from roargit.repo import RepoPaths, ensure_roar_dir
from roargit.reproduce import DestinationExists, Materialiser, stores_for


class RecordedOutside(RoarError):
    def __init__(self, digest: str, path: str) -> None:
        super().__init__(
            f"artifact {digest[:16]} was recorded outside the repository, at '{escape(path)}': "
            "roar writes only inside it; give a destination with -o PATH"
        )


class NotInStores(RoarError):
    def __init__(self, digest: str, stores: Sequence[str], how: str) -> None:
        where = ", ".join(stores) or "no store"
        super().__init__(f"artifact {digest[:16]} is not in {where}; {how}")


@dataclass(frozen=True, slots=True)
class GetResult:
    hash: str
    path: str
    source: str  # where the bytes came from
    size: int
    already: bool  # the destination held these bytes already


def get_artifact(
    paths: RepoPaths, digest: str, dest: Path | None, *, force: bool = False
) -> GetResult:
    """Write artifact `digest` to `dest` (default: where it was recorded), verified.

    The recorded path, and every entry of a folder's manifest, pass pathguard before
    anything is written; the writes never follow a symbolic link below the repository (or
    below the folder `dest` names)."""

    ledger = Ledger(paths)
    cache = HashCache(ensure_roar_dir(paths))
    stores = stores_for(paths)
    planner = Planner(paths, ledger, Locator(paths, ledger, cache, stores))
    recorded: FileRef | None = None
    source: Source | None = None
    produced, consumed = ledger.artifact_runs(digest)
    for rid in [*produced, *consumed]:
        rec = planner.run(rid)
        recorded = next((f for f in (*rec.outputs, *rec.inputs) if f.hash == digest), None)
        if recorded is not None:
            source = pathguard.source_of(ledger, rid)
            break
    kind = recorded.kind if recorded is not None else "file"
    if dest is None:
        if recorded is None:
            raise RoarError(f"artifact {digest[:16]} has no recorded path: give one with -o PATH")
        if recorded.path.startswith("/"):
            pathguard.check(recorded.path, source, absolute_ok=True)
            raise RecordedOutside(digest, recorded.path)
        # Below the repository, by the recorded path.
        base, rel = paths.root, pathguard.check(recorded.path, source)
    elif kind == "dir":
        base, rel = dest, ""  # below the folder the user named
    else:
        base, rel = dest.parent, dest.name
    mat = Materialiser(paths, cache, stores)
    try:
        if kind == "dir":
            return _get_folder(mat, digest, base, rel, source, force)
        return _get_file(mat, digest, base, rel, source, force)
    except FileNotFoundError:
        how = _how_to_reproduce(planner, digest)
        raise NotInStores(digest, [location(s.url) for s in stores], how) from None


def _get_file(
    mat: Materialiser, digest: str, base: Path, rel: str, source: Source | None, force: bool
) -> GetResult:
    rel = pathguard.check(rel, source)
    dest = base / rel
    if mat.has(str(dest), digest):
        return GetResult(digest, str(dest), "already there", dest.stat().st_size, True)
    if base.is_dir():
        with Root(base, source) as root:
            root.preflight(rel)
    if dest.exists() and not force:
        raise DestinationExists(dest)
    base.mkdir(parents=True, exist_ok=True)
    with Root(base, source) as root, progress.Progress(f"getting {rel}"):
        how = mat.put(digest, root, rel, "", work_tree=False)
    return GetResult(digest, str(dest), how.removeprefix("store "), dest.stat().st_size, False)


def _get_folder(
    mat: Materialiser, digest: str, base: Path, folder: str, source: Source | None, force: bool
) -> GetResult:

    data = mat.ledger.manifest(digest)
    if data is None:
        raise FileNotFoundError(digest)
    entries = decode_manifest(data, f"manifest {digest[:12]}", digest=digest)
    # Every name is checked before the folder is made or anything written.
    rels = [
        pathguard.join(folder, e.path, source) if folder else pathguard.check(e.path, source)
        for e in entries
    ]
    dest = base / folder if folder else base
    if dest.exists() and not force:
        raise DestinationExists(dest)
    base.mkdir(parents=True, exist_ok=True)
    with Root(base, source) as root:
        for r in rels:
            root.preflight(r)
        sources = set()
        with progress.Progress(
            f"getting {len(entries)} file(s)", sum(e.size for e in entries)
        ) as p:
            for e, r in zip(entries, rels, strict=True):
                sources.add(mat.put(e.hash, root, r, "", work_tree=False))
                p.update(e.size)
    where = ", ".join(sorted(x.removeprefix("store ") for x in sources))
    return GetResult(digest, str(dest), where, sum(e.size for e in entries), False)


def _how_to_reproduce(planner: Any, digest: str) -> str:
    rid = planner.producer(digest)
    if rid is None:
        return "no recorded run produced it (source data): find the original file"
    return f"it can be recreated: roar reproduce {digest[:12]} --run -y"
