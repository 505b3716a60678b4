"""`roar register`: publish what an artifact needs to be reproduced to its scope, then index it.

The closure of an artifact is what `roar reproduce` in another clone needs, and nothing more:
the records of the runs upstream of it (`Context.lineage`, plus the build steps of their
sessions, as the plan takes them), their session records, the manifests of the folders they
read or wrote, their code trees (dirty-tree snapshots) and commits, and the bytes those
records name, up to `roar.store.maxBlobSize`. Source data (a dataset no recorded run made)
is its bytes alone: the runs that read it are downstream, and stay home. Other runs of the
clone stay where they are: the scope's ledger is built from the closure alone, on a ref of
its own (`refs/roar/registry/<owner>/<project>/ledger`, with `…/commits` keeping the
commits reachable), never from `refs/roar/ledger`.

Publishing, in this order so that nothing is indexed before it can be read:
1. the bytes go to the scope's store (push_blobs.upload; secret-looking files never do);
2. the scope ledger and keep ref are pushed to the scope's repository as `refs/roar/ledger`
   and `refs/roar/commits`; a push that loses a race fetches theirs, merges the union
   (ledger_merge.merge: the fetched side passes ledger_check) and tries again;
3. the index entry is added (index.add: compare-and-swap on its shard).

Every step is idempotent: registering again uploads nothing, pushes nothing new, and finds
the entry in place. A dry run reads the index and the store but writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from roargit import config, ledger_merge, records
from roargit.blobstore import BlobStore
from roargit.errors import GitFailed, RoarError
from roargit.git import is_ancestor, push_refs, run_git
from roargit.keep_ref import keep_commit, keep_commits, rev, swap_ref
from roargit.ledger import Entry, Ledger
from roargit.ledger_commit import jitter
from roargit.ledger_layout import fanout, run_entries
from roargit.plan import NotProduced
from roargit.push_blobs import BlobPlan, Uploaded, plan_blobs, referenced_blobs
from roargit.push_blobs import upload as put_all
from roargit.push_plan import Flag, Snapshot, added_code_trees, dirty_snapshots, sensitive
from roargit.records import RunRecord, SessionRecord
from roargit.registry import index
from roargit.registry.index import NO_PROMPT, AccessDenied, IndexEntry, _denied
from roargit.registry.scope import PRIVATE, NoScope, PrivateScope, Scope
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple
from roargit.uploads import default_store_url, store_url

REF_PREFIX = "refs/roar/registry/"
MAX_PUSH_ATTEMPTS = 16

Progress = Callable[[int, int], None]


class NotRegistrable(RoarError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"{ref} names a run, not an artifact: register a file or its hash")


class ScopePushRejected(RoarError):
    def __init__(self, url: str, attempts: int, why: str) -> None:
        super().__init__(f"push to {url} still rejected after {attempts} attempt(s): {why}")


class Closure(NamedTuple):
    digest: str
    size: int
    path: str | None  # where the artifact was recorded
    runs: list[tuple[str, RunRecord]]
    sessions: list[tuple[str, SessionRecord]]
    manifests: list[str]  # folder manifests the runs name
    commits: list[str]  # recorded commits


class Report(NamedTuple):
    digest: str
    scope: Scope
    registry: str
    dry_run: bool
    closure: Closure
    snapshots: list[Snapshot]
    flags: list[Flag]
    blobs: BlobPlan
    uploaded: Uploaded | None
    pushed: bool  # the scope repository moved
    entry: IndexEntry  # the index's entry (an earlier one when `already`)
    already: bool  # the hash was registered before
    web: str  # a link to the artifact on the registry's web page ("" when none)
    warnings: list[str]


def scope_refs(scope: Scope) -> tuple[str, str]:
    base = f"{REF_PREFIX}{scope.name}"
    return f"{base}/ledger", f"{base}/commits"


def require_shared(scope_name: str | None) -> str:
    if scope_name is None:
        raise NoScope()
    if scope_name == PRIVATE:
        raise PrivateScope()
    return scope_name


# -- the closure --------------------------------------------------------------------------


def closure(ctx: Any, target: Any) -> Closure:
    """What artifact `target` (views.Target) needs, read through a views.Context."""

    if target.kind != "artifact":
        raise NotRegistrable(target.id)
    # Upstream as `roar lineage` walks it: each input to the run whose write it read.
    first = ctx.producer(target.id, target.path)
    if first is None:
        return _source_data(ctx, target, NotProduced)
    run_ids: list[str] = []
    queue = [first]
    while queue:
        rid = queue.pop()
        if rid in run_ids:
            continue
        run_ids.append(rid)
        for f in ctx.run(rid).inputs:
            producer, _by_bytes = ctx.input_producer(rid, f)
            if producer is not None and producer not in run_ids:
                queue.append(producer)
    ledger: Ledger = ctx.ledger
    records = dict(zip(run_ids, ctx.runs(run_ids), strict=True))
    # The build steps of each session come along, as the plan runs them first.
    sessions = list(dict.fromkeys(rec.session for rec in records.values()))
    for sid in sessions:
        extra = [r for r in ledger.session_runs(sid) if r not in records]
        for rid, rec in zip(extra, ledger.runs(extra), strict=True):
            if rec.kind == "build":
                records[rid] = rec
    session_records = []
    for sid in sessions:
        try:
            session_records.append((sid, ledger.session(sid)))
        except RoarError:
            continue  # a run may outlive its session record; the plan does not need it
    manifests = sorted(
        {f.hash for rec in records.values() for f in (*rec.inputs, *rec.outputs) if f.kind == "dir"}
    )
    size, path = 0, None
    for rec in records.values():
        for f in rec.outputs:
            if f.hash == target.id:
                size, path = f.size, f.path
    commits = list(dict.fromkeys(rec.code.commit for rec in records.values() if rec.code.commit))
    return Closure(
        target.id, size, path, list(records.items()), session_records, manifests, commits
    )


def _source_data(ctx: Any, target: Any, not_produced: Any) -> Closure:
    """Source data (a dataset no recorded run made): its bytes alone. The runs that read it
    are downstream of it, so none of them goes along."""
    consumers = ctx.ledger.artifact_runs(target.id)[1]
    for rec in ctx.runs(consumers[:1]):
        for f in rec.inputs:
            if f.hash == target.id and f.kind != "dir":
                return Closure(target.id, f.size, f.path, [], [], [], [])
    raise not_produced(target.id)


def ledger_entries(ledger: Ledger, found: Closure) -> list[Entry]:
    entries: list[Entry] = []
    for rid, rec in found.runs:
        _id, data = records.identify(rec)
        entries.extend(run_entries(rid, data, rec))
    for sid, srec in found.sessions:
        _id, data = records.identify(srec)
        entries.append(Entry(("sessions", sid[:2], sid, "session"), data))
    for digest in found.manifests:
        manifest = ledger.manifest(digest)
        if manifest is not None:
            entries.append(Entry(("manifests", *fanout(digest), digest), manifest))
    return entries


# -- bytes ----------------------------------------------------------------------------------


def plan_bytes(
    paths: RepoPaths, ledger: Ledger, found: Closure, scope: Scope, cap: int, team: Any | None
) -> BlobPlan:
    """Which of the closure's blobs the scope's store lacks, and where each one's bytes are
    (the local store, the work tree, or the team store, whose bytes are copied through)."""

    wanted = referenced_blobs(found.runs, ledger.manifest)
    if not found.runs:  # source data: its own bytes
        wanted[found.digest] = (found.size, found.path or found.digest)
    store = BlobStore(scope.store)
    plan = plan_blobs(paths, store, BlobStore(default_store_url(paths)), wanted, cap)
    if team is None or not plan.unavailable:
        return plan
    in_team = [b for b in plan.unavailable if team.has(b.digest)]
    kept = [b for b in plan.unavailable if b not in in_team]
    via = [b._replace(source=f"store:{b.digest}") for b in in_team]
    return plan._replace(to_upload=plan.to_upload + via, unavailable=kept)


def upload(
    paths: RepoPaths, scope: Scope, plan: BlobPlan, team: Any | None, progress: Progress | None
) -> Uploaded:
    """push_blobs.upload, with blobs that only the team store holds fetched through a temporary
    file under .git/roar/tmp (verified on the way in and on the way out)."""

    store = BlobStore(scope.store)
    direct = [b for b in plan.to_upload if not b.source.startswith("store:")]
    via = [b for b in plan.to_upload if b.source.startswith("store:")]
    done = put_all(store, direct, progress)
    if not via or team is None:
        return done
    tmp = paths.roar_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    failed = list(done.failed)
    count, nbytes = done.blobs, done.nbytes
    for b in via:
        local = tmp / f"register-{os.getpid()}-{b.digest[:16]}"
        try:
            team.get_file(b.digest, local)
            store.put_file(local, b.digest)
            count, nbytes = count + 1, nbytes + b.size
        except (RoarError, OSError) as exc:
            failed.append((b, str(exc)))
        finally:
            local.unlink(missing_ok=True)
    return Uploaded(count, nbytes, failed)


# -- the scope's repository --------------------------------------------------------------------


def keep(paths: RepoPaths, ref: str, commits: Sequence[str]) -> str | None:
    """Make `ref` reach `commits` (compare-and-swap, retried); its tip (None when there is
    nothing to keep)."""
    return keep_commits(
        paths, commits, rev(paths, ref), ref, "roar: keep the commits registered runs used"
    )


def _merge_keep(paths: RepoPaths, ref: str, theirs: str) -> None:
    for _ in range(50):
        ours = rev(paths, ref)
        if ours is not None and (ours == theirs or is_ancestor(paths.root, theirs, ours)):
            return
        if ours is None or is_ancestor(paths.root, ours, theirs):
            new = theirs
        else:
            new = keep_commit(paths, [ours, theirs], "roar: merge the scope's keep ref")
        if swap_ref(paths, ref, new, ours):
            return
        time.sleep(jitter(0.02))


def _push(paths: RepoPaths, url: str, refs: dict[str, str]) -> tuple[bool, bool, str]:
    """(accepted, nothing changed, why not)."""
    specs = [f"{local}:{remote}" for remote, local in refs.items()]
    try:
        return push_refs(paths.root, url, specs, env=NO_PROMPT)
    except GitFailed as exc:
        if _denied(exc.stderr):
            raise AccessDenied(url, "write to the scope") from None
        raise


def _fetch_theirs(paths: RepoPaths, url: str, scope: Scope) -> dict[str, str]:
    """The scope repository's ledger and keep ref, fetched to scratch refs: {name: commit}."""

    base = f"refs/roar/tmp/registry-{os.getpid()}"
    specs = [f"+refs/roar/ledger:{base}-ledger", f"+refs/roar/commits:{base}-commits"]
    found = {}
    for spec in specs:
        proc = run_git(
            ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", url, spec],
            paths.root,
            check=False,
            env=NO_PROMPT,
        )
        local = spec.split(":")[1]
        if proc.returncode == 0 and (tip := rev(paths, local)) is not None:
            found[spec.split(":")[0][1:]] = tip
        run_git(["update-ref", "-d", local], paths.root, check=False)
    return found


def publish_lineage(paths: RepoPaths, scope: Scope, found: Closure) -> tuple[bool, list[str]]:
    """Put the closure on the scope's refs here and push them to the scope's repository;
    (whether the repository moved, warnings)."""
    ledger_ref, keep_ref = scope_refs(scope)
    ledger = Ledger(paths, ledger_ref)
    warnings: list[str] = []
    try:
        source = Ledger(paths, fast_start=True)
        try:
            entries = ledger_entries(source, found)
        finally:
            source.close()
        ledger.commit(entries, "register")
        keep(paths, keep_ref, found.commits)
        why = ""
        for _attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
            refs = {"refs/roar/ledger": rev(paths, ledger_ref)}
            if (kept := rev(paths, keep_ref)) is not None:
                refs["refs/roar/commits"] = kept
            ok, same, why = _push(paths, scope.repo, {k: v for k, v in refs.items() if v})
            if ok:
                return not same, warnings
            # Someone registered into this scope first: take theirs, merge, offer ours again.
            time.sleep(jitter(min(0.5, 0.05 * _attempt)))
            theirs = _fetch_theirs(paths, scope.repo, scope)
            if "refs/roar/ledger" in theirs:
                merged = ledger_merge.merge(
                    ledger, theirs["refs/roar/ledger"], f"merge {scope.name}", scope.name
                )
                if merged is not None and merged.rejected:
                    warnings.append(
                        f"{len(merged.rejected)} entr(y/ies) of scope {scope.name} were left out"
                    )
            if "refs/roar/commits" in theirs:
                _merge_keep(paths, keep_ref, theirs["refs/roar/commits"])
        raise ScopePushRejected(scope.repo, MAX_PUSH_ATTEMPTS, why)
    finally:
        ledger.close()


# -- register -----------------------------------------------------------------------------------


def register(
    paths: RepoPaths,
    ctx: Any,
    target: Any,
    scope: Scope,
    registry_url: str,
    work: Path,
    who: str,
    *,
    dry_run: bool = False,
    confirm: Callable[[Report], bool] | None = None,
    progress: Progress | None = None,
    existing: Callable[[str], IndexEntry | None] | None = None,
    web: str = "",
) -> Report | None:
    """Register artifact `target` in `scope` (see the module docstring). `confirm` sees the
    report of what would be published and says whether to go on (None: go on); None is
    returned when it declines. `existing(hash)` looks the hash up in the index (None: ask
    only when publishing); a hash registered in another scope first is left as it is.
    `web`: a link to the artifact on the registry's web page, for the report."""

    found = closure(ctx, target)
    settings = config.read_all(paths)
    cap = config.parse_size(settings["roar.store.maxblobsize"].value)
    team = _team_store(paths, settings)
    ledger: Ledger = ctx.ledger
    plan = plan_bytes(paths, ledger, found, scope, cap, team)
    dirty = {rec.code.tree for _r, rec in found.runs if rec.code.dirty and rec.code.tree}
    tip = ledger.tip()
    trees = [t for t in added_code_trees(paths, None, tip) if t in dirty] if tip else []
    snapshots = dirty_snapshots(paths, trees, found.runs)
    flags = sensitive(found.runs, snapshots)
    entry = IndexEntry(
        found.digest, scope.name, scope.repo, scope.store, found.size, int(time.time()), who
    )
    before = existing(found.digest) if existing is not None else None
    report = Report(
        found.digest, scope, registry_url, dry_run, found, snapshots, flags, plan, None, False,
        before or entry, before is not None, web, [],
    )  # fmt: skip
    if dry_run or (before is not None and before.scope != scope.name):
        return report  # registered elsewhere first: the index keeps that entry
    if confirm is not None and not confirm(report):
        return None
    uploaded = upload(paths, scope, plan, team, progress)
    if uploaded.failed:
        b, why = uploaded.failed[0]
        raise RoarError(
            f"{len(uploaded.failed)} blob(s) could not be stored in {scope.store} "
            f"(first: {b.path}: {why}); nothing was indexed"
        )
    pushed, warnings = publish_lineage(paths, scope, found) if found.runs else (False, [])
    added = index.add(work, registry_url, entry)
    return report._replace(
        uploaded=uploaded,
        pushed=pushed,
        entry=added.entry,
        already=not added.added,
        warnings=warnings,
    )


def _team_store(paths: RepoPaths, settings: Any) -> Any | None:
    url = store_url(paths, settings)
    return None if url == default_store_url(paths) else BlobStore(url)
