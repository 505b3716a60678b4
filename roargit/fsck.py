"""`roar fsck`: is everything roargit keeps what its name says?

- the ledger: every entry has the shape, id and schema a merge would demand of it
  (ledger_check), every code tree (`code/<tree>` and each run's `code.tree`) and commit a run
  names is in the object database, every folder a run recorded has its manifest;
- the blob stores: each blob's bytes hash to its name;
- the quarantine: what merges of fetched ledgers left out.

`repair` clears the quarantine and removes corrupt blobs, storing the right bytes again when
an intact copy is found: in another configured store, or a work-tree file at a path the
artifact was recorded under that still holds those bytes. A corrupt ledger entry is listed,
never removed: the ledger only grows. When `.git/roar/origins` is gone, `repair` rebuilds it:
a session started by another clone came from the first fetched ledger that holds it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roargit import ledger_check
from roargit.blobstore import remove_blob
from roargit.errors import BlobMissing, RoarError
from roargit.hashing import hash_file
from roargit.ledger import LEDGER_REF, Ledger
from roargit.ledger_layout import fanout
from roargit.ledger_merge import remote_name, remote_refs
from roargit.pathguard import UnsafePath
from roargit.pathguard import check as check_path
from roargit.records import RunRecord
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from roargit.blobstore import BlobStore


class Problem(NamedTuple):
    kind: str  # "entry", "code", "manifest", "blob", "store" or "quarantine"
    where: str  # a ledger path, a run, or a store's URL
    id: str  # the object: a git object id, a blob's digest
    reason: str

    def line(self) -> str:
        """One line, escaped: `where` and `reason` may come from a fetched ledger."""
        ident = f" {self.id[:16]}" if self.id else ""
        return ledger_check.printable(f"{self.kind} {self.where}{ident}: {self.reason}")

    def to_json(self) -> dict[str, str]:
        return {k: ledger_check.printable(v) for k, v in self._asdict().items()}


class Report(NamedTuple):
    problems: list[Problem]
    records: int  # ledger records checked
    blobs: int  # blobs checked, all stores together
    stores: list[str]


class Repair(NamedTuple):
    kind: str  # "quarantine", "blob" or "origins"
    where: str
    id: str
    action: str  # "cleared", "restored from …", "removed (no intact copy found)"

    def line(self) -> str:
        ident = f" {self.id[:16]}" if self.id else ""
        return ledger_check.printable(f"{self.kind} {self.where}{ident}: {self.action}")


def check(paths: RepoPaths, stores: Sequence[BlobStore]) -> Report:
    problems: list[Problem] = []
    records = _check_ledger(paths, problems)
    blobs = 0
    for store in stores:
        blobs += _check_store(store, problems)
    for q in ledger_check.quarantined(paths.roar_dir):
        problems.append(Problem("quarantine", q.path, q.oid, f"from {q.remote}: {q.reason}"))
    return Report(problems, records, blobs, [s.url for s in stores])


def _check_ledger(paths: RepoPaths, problems: list[Problem]) -> int:
    import pygit2  # lazy: only the ledger walk needs it, and its import is slow

    repo = pygit2.Repository(str(paths.git_dir))
    try:
        ref = repo.references.get(LEDGER_REF)
        if ref is None:
            return 0
        root = repo[ref.target].peel(pygit2.Tree)
        rejected, found = ledger_check.check_tree(repo, root)
    except (pygit2.GitError, KeyError, ValueError) as exc:
        problems.append(Problem("entry", LEDGER_REF, "", f"cannot be read: {exc}"))
        return 0
    problems.extend(Problem("entry", r.path, r.oid, r.reason) for r in rejected)
    code: Any = root["code"] if "code" in root and root["code"].filemode == 0o040000 else None
    for entry in code or ():
        if entry.id not in repo:
            problems.append(Problem("code", f"code/{entry.name}", "", "not in the object database"))
    manifests: set[str] = set()
    runs: list[tuple[str, RunRecord]] = []
    for what, record_id, record in found:
        if what == "manifest":
            manifests.add(record_id)
        elif what == "run":
            runs.append((record_id, record))
    for run_id, run in runs:
        _check_run(repo, code, manifests, run_id, run, problems)
    return len(found)


def _check_run(
    repo: Any,
    code: Any,
    manifests: set[str],
    run_id: str,
    run: RunRecord,
    problems: list[Problem],
) -> None:
    where = f"run {run_id[:12]}"
    tree, commit = run.code.tree, run.code.commit
    if tree:
        if not _present(repo, tree):
            problems.append(Problem("code", where, tree, "its code tree is not in this repository"))
        elif code is None or tree not in code:
            problems.append(Problem("code", where, tree, "its code tree is not kept under code/"))
    if commit and not _present(repo, commit):
        problems.append(Problem("code", where, commit, "its commit is not in this repository"))
    for f in (*run.inputs, *run.outputs):
        if f.kind == "dir" and f.hash not in manifests:
            problems.append(
                Problem("manifest", where, f.hash, f"the manifest of folder {f.path} is missing")
            )


def _present(repo: Any, oid: str) -> bool:
    try:
        return oid in repo
    except (ValueError, TypeError):
        return False


def _check_store(store: BlobStore, problems: list[Problem]) -> int:
    n = 0
    try:
        for digest in store.iter_digests():
            n += 1
            try:
                intact = store.verify(digest)
            except BlobMissing:
                continue  # removed meanwhile
            if not intact:
                problems.append(
                    Problem("blob", store.url, digest, "its content does not match its name")
                )
    except (OSError, RoarError) as exc:
        problems.append(Problem("store", store.url, "", f"cannot be read: {exc}"))
    return n


# -- repairs -------------------------------------------------------------------------------


def repair(paths: RepoPaths, stores: Sequence[BlobStore], report: Report) -> list[Repair]:
    """Fix what can be fixed of `report` (see the module docstring); what was done."""

    done: list[Repair] = []
    rebuilt = rebuild_origins(paths)
    if rebuilt:
        done.append(Repair("origins", str(paths.roar_dir / "origins"), "", f"rebuilt ({rebuilt})"))
    held = [p for p in report.problems if p.kind == "quarantine"]
    if held:
        ledger_check.clear_quarantine(paths.roar_dir)
        done.extend(Repair("quarantine", p.where, p.id, "cleared") for p in held)
    by_url = {s.url: s for s in stores}
    for p in report.problems:
        if p.kind != "blob" or p.where not in by_url:
            continue
        store = by_url[p.where]
        remove_blob(store, p.id)
        source = _intact_copy(paths, stores, store, p.id)
        if source is None:
            done.append(Repair("blob", store.url, p.id, "removed (no intact copy found)"))
            continue
        what = source if isinstance(source, Path) else source.url
        try:
            if isinstance(source, Path):
                store.put_file(source, p.id)
            else:
                _copy(paths, source, store, p.id)
        except (OSError, RoarError) as exc:
            done.append(Repair("blob", store.url, p.id, f"removed; storing {what} failed: {exc}"))
            continue
        done.append(Repair("blob", store.url, p.id, f"removed and stored again from {what}"))
    return done


def _intact_copy(
    paths: RepoPaths, stores: Sequence[BlobStore], broken: BlobStore, digest: str
) -> BlobStore | Path | None:
    """Another store holding the blob intact, or a work-tree file with its bytes; None."""

    for other in stores:
        try:
            if other is not broken and other.has(digest) and other.verify(digest):
                return other
        except (OSError, RoarError):
            continue
    for path in _recorded_paths(paths, digest):
        try:
            if hash_file(path).digest == digest:
                return path
        except (OSError, RoarError):
            continue
    return None


def _copy(paths: RepoPaths, source: BlobStore, dest: BlobStore, digest: str) -> None:
    """One store's blob into another, through a temp file (a blob may be bigger than memory)."""
    tmp_dir = paths.roar_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"fsck-{os.getpid()}-{digest[:16]}"
    try:
        source.get_file(digest, tmp)
        dest.put_file(tmp, digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _recorded_paths(paths: RepoPaths, digest: str) -> list[Path]:
    """Work-tree files the artifact was recorded under (inside the repository only)."""

    ledger = Ledger(paths, fast_start=True)
    try:
        produced, consumed = ledger.artifact_runs(digest)
        found: list[Path] = []
        for run in ledger.runs_or_errors(list(dict.fromkeys([*produced, *consumed]))):
            if not isinstance(run, RunRecord):
                continue
            for f in (*run.inputs, *run.outputs):
                if f.hash != digest or f.kind != "file":
                    continue
                try:
                    rel = check_path(f.path)
                except UnsafePath:
                    continue
                path = paths.root / rel
                if path not in found and path.is_file() and not path.is_symlink():
                    found.append(path)
        return found
    finally:
        ledger.close()


def rebuild_origins(paths: RepoPaths) -> int | None:
    """Write `.git/roar/origins` again if it is gone (None when it is there, or when this
    clone's id is gone too and a session's clone cannot be told from ours); the number of
    records attributed. Derived from the records themselves: the runs of a session started by
    another clone came from the first fetched ledger (by remote name) that holds them."""
    roar_dir = paths.roar_dir
    try:
        local = (roar_dir / "clone-id").read_text().strip()
    except OSError:
        return None
    if (roar_dir / ledger_check.ORIGINS_FILE).exists() or not local:
        return None
    ledger = Ledger(paths)
    remotes = [(remote_name(ref), Ledger(paths, ref)) for ref in remote_refs(paths)]
    if not remotes:
        return None
    origins: dict[str, str] = {}
    for sid in ledger.sessions():
        try:
            if ledger.session(sid).clone == local:
                continue
        except (KeyError, RoarError):
            continue
        for record_id in [sid, *ledger.session_runs(sid)]:
            where = ("sessions", sid[:2], sid, "session") if record_id == sid else None
            for name, theirs in remotes:
                held = theirs._exists(*(where or ("runs", *fanout(record_id), record_id)))
                if held:
                    origins[record_id] = name
                    break
    ledger_check.write_origins(roar_dir, origins)
    return len(origins)
