"""Sharing: the lineage goes to a git remote, the bytes it names to the team store.

`push` sends `refs/roar/ledger` and `refs/roar/commits` (KEEP_REF) with the user's own `git`,
so credential helpers, SSH config and hosting work unchanged; it never sends
`refs/roar/remotes/*` and never touches what a plain `git push` of branches sends (no
`remote.<name>.push` is set). Before the refs go, every blob the new records name that the
team store lacks is uploaded: from the local store (`.git/roar/blobs`), or from the work tree
when the file there still hashes to the recorded digest (source data), up to
`roar.store.maxBlobSize`. Files with secret-looking names are never uploaded. What runs queued
for the team store because it failed then (uploads.py) is drained first.

What a record needs to be reproduced elsewhere travels with it:
- its code tree: the ledger holds `code/<tree>` entries, so dirty-tree snapshots are pushed
  with the ledger;
- its commit: the ledger cannot hold one (a tree entry cannot make a commit reachable), so
  KEEP_REF is a chain of commits with the empty tree whose extra parents are the recorded
  commits. A run stays reproducible with its commit after its branch was rebased, deleted or
  force-pushed away.

A rejected push (another clone pushed first) fetches, merges the union (Ledger.merge through
`sync_remotes`, which quarantines bad entries) and tries again, a bounded number of times.
`fetch` brings the remote's `refs/roar/*` into `refs/roar/remotes/<remote>/` and merges it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from roargit import config, remote_ledgers, uploads
from roargit.blobstore import BlobStore
from roargit.clone import configure_remote, fetch_refspecs
from roargit.errors import GitFailed, RoarError
from roargit.folders import decode_manifest
from roargit.git import run_git
from roargit.gitobjects import tree_entries
from roargit.hashing import HashCache
from roargit.ledger import LEDGER_REF, REMOTES_PREFIX, Ledger, _jitter
from roargit.records import RunRecord
from roargit.redact import MARK, is_secret_path
from roargit.repo import RepoPaths

KEEP_REF = "refs/roar/commits"
SHARED_REFS = (LEDGER_REF, KEEP_REF)
#: Pushes that lose a race are retried after a fetch and merge, at most this many times.
MAX_PUSH_ATTEMPTS = 16
#: Parents per keep commit (git allows more; a bounded fan-in keeps each object small).
KEEP_FANIN = 100
#: Uploads in flight at once: a remote store is bound by round trips, a local one by fsync.
UPLOAD_THREADS = 8
#: A local store is asked and written from one thread up to this many blobs: below it,
#: starting threads costs more than the fsyncs they would overlap.
LOCAL_THREADS_AT = 64
STATE_FILE = "share.json"
TREE_MODE = 0o040000

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class NoRemote(RoarError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        have = ", ".join(known) if known else "none"
        super().__init__(
            f"no git remote named '{name}' (remotes: {have}); add one with git remote add"
        )


class PushRejected(RoarError):
    def __init__(self, remote: str, attempts: int, why: str) -> None:
        super().__init__(f"push to {remote} still rejected after {attempts} attempt(s): {why}")


def tracking_ref(remote: str, ref: str) -> str:
    return f"{REMOTES_PREFIX}{remote}/{ref.rsplit('/', 1)[1]}"


# -- remotes -------------------------------------------------------------------------------


def git_config(paths: RepoPaths) -> dict[str, list[str]]:
    """Every git config key in effect with its values, from one `git config --list` (git
    lower-cases a key's section and name; a subsection, such as a remote's name, keeps its
    case)."""
    out = run_git(["config", "-z", "--list"], paths.root, check=False).stdout
    found: dict[str, list[str]] = {}
    for item in out.split(b"\0"):
        if item:
            key, _, value = item.decode(errors="surrogateescape").partition("\n")
            found.setdefault(key, []).append(value)
    return found


def remote_names(paths: RepoPaths, cfg: dict[str, list[str]] | None = None) -> list[str]:
    """Configured remotes: those with a URL (what `git remote` lists)."""
    cfg = git_config(paths) if cfg is None else cfg
    return [
        k[len("remote.") : -len(".url")]
        for k in cfg
        if k.startswith("remote.") and k.endswith(".url")
    ]


def remote_for_url(cfg: Mapping[str, list[str]], url: str) -> str | None:
    """The configured remote that fetches from or pushes to `url`, if one does."""
    for key, values in cfg.items():
        for suffix in (".url", ".pushurl"):
            if key.startswith("remote.") and key.endswith(suffix) and url in values:
                return key[len("remote.") : -len(suffix)]
    return None


def looks_like_url(name: str) -> bool:
    """A remote name git would take as a URL or a path instead (git-push(1), GIT URLS)."""
    return "/" in name or ":" in name or name in (".", "..")


def resolve_remote(
    paths: RepoPaths, name: str | None, cfg: dict[str, list[str]] | None = None
) -> str:
    """`name`, or the current branch's remote, or `origin`; NoRemote if it is not configured."""
    cfg = git_config(paths) if cfg is None else cfg
    known = remote_names(paths, cfg)
    if name is None:
        name = "origin"
        try:
            head = (paths.git_dir / "HEAD").read_text().strip()
        except OSError:
            head = ""
        if head.startswith("ref: refs/heads/"):
            branch = head[len("ref: refs/heads/") :]
            configured = cfg.get(f"branch.{branch}.remote", [])
            if configured and configured[-1] in known:
                name = configured[-1]
    if name not in known:
        raise NoRemote(name, known)
    return name


def ensure_refspecs(paths: RepoPaths, remote: str, cfg: dict[str, list[str]] | None = None) -> bool:
    """Set up fetching for a remote added after `roar init` (clone.configure_remote)."""

    have = None if cfg is None else set(cfg.get(f"remote.{remote}.fetch", []))
    return configure_remote(paths, remote, have)


# -- small git helpers -------------------------------------------------------------------


def _rev(paths: RepoPaths, name: str) -> str | None:
    proc = run_git(["rev-parse", "-q", "--verify", f"{name}^{{commit}}"], paths.root, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip() or None


def roar_refs(paths: RepoPaths) -> dict[str, str]:
    """{ref: commit} of every ref under refs/roar/, in one `git for-each-ref`."""
    out = run_git(
        ["for-each-ref", "--format=%(refname) %(objectname)", "refs/roar/"], paths.root
    ).stdout.decode(errors="surrogateescape")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _is_ancestor(paths: RepoPaths, a: str, b: str) -> bool:
    proc = run_git(["merge-base", "--is-ancestor", a, b], paths.root, check=False)
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise GitFailed(["git", "merge-base", "--is-ancestor"], proc.returncode, b"", proc.stderr)


def _swap_ref(paths: RepoPaths, ref: str, new: str, old: str | None) -> bool:
    zero = "0" * len(new)
    proc = run_git(["update-ref", ref, new, old or zero], paths.root, check=False)
    return proc.returncode == 0


def _empty_tree(paths: RepoPaths) -> str:
    return (
        run_git(["hash-object", "-t", "tree", "-w", "--stdin"], paths.root, input=b"")
        .stdout.decode()
        .strip()
    )


def _keep_commit(paths: RepoPaths, parents: Sequence[str], message: str) -> str:
    args = ["commit-tree", _empty_tree(paths), "-m", message]
    for p in parents:
        args += ["-p", p]
    env = {
        "GIT_AUTHOR_NAME": "roar",
        "GIT_AUTHOR_EMAIL": "roar@localhost",
        "GIT_COMMITTER_NAME": "roar",
        "GIT_COMMITTER_EMAIL": "roar@localhost",
    }
    return run_git(args, paths.root, env=env).stdout.decode().strip()


def added_paths(
    paths: RepoPaths, base: str | None, tip: str, tops: str | Sequence[str]
) -> list[str]:
    """Paths of the entries under the `tops` folders of ledger commit `tip` that `base`
    lacks (diff-tree reads only the subtrees that differ: ten new records cost ten lookups,
    not the ledger)."""
    specs = [f"{t}/" for t in ((tops,) if isinstance(tops, str) else tops)]
    if base is None:
        out = run_git(["ls-tree", "-r", "-z", "--name-only", tip, "--", *specs], paths.root)
    else:
        out = run_git(
            ["diff-tree", "-r", "-z", "--name-only", "--diff-filter=A", base, tip, "--", *specs],
            paths.root,
        )
    return [p for p in os.fsdecode(out.stdout).split("\0") if p]


def added_entries(reader: Any, base: str | None, tip: str, tops: Sequence[str]) -> list[str] | None:
    """`added_paths` read through an open `cat-file` (ObjectReader): the two commits' trees
    are walked level by level where they differ, one pipelined read a level, so ten new
    records cost a handful of reads and no process. None when an object cannot be read (the
    caller asks `diff-tree`)."""
    width = len(tip) // 2
    pairs: list[tuple[str, str | None, str | None]] = [  # (path, our tree, their tree)
        (t, f"{tip}:{t}", f"{base}:{t}" if base else None) for t in tops
    ]
    found: list[str] = []
    while pairs:
        names = [n for _p, ours, theirs in pairs for n in (ours, theirs) if n]
        objs = iter(reader.read_many(names))
        step: list[tuple[str, str | None, str | None]] = []
        for path, ours, theirs in pairs:
            mine = next(objs) if ours else None
            other = next(objs) if theirs else None
            if ours and (mine is None or mine.type != "tree"):
                if path in tops and mine is None:
                    continue  # no such folder in this ledger
                return None
            if mine is None:
                continue
            old = {}
            if other is not None and other.type == "tree":
                old = {name: oid for _m, name, oid in tree_entries(other.data, width)}
            for mode, name, oid in tree_entries(mine.data, width):
                if old.get(name) == oid:
                    continue
                if mode == TREE_MODE:
                    was = old.get(name)
                    step.append((f"{path}/{name}", oid, was))
                elif name not in old:
                    found.append(f"{path}/{name}")
        pairs = step
    return found


def added_code_trees(paths: RepoPaths, base: str | None, tip: str) -> list[str]:
    if base is None:
        out = run_git(["ls-tree", "-z", "--name-only", f"{tip}:code"], paths.root, check=False)
        return [p for p in os.fsdecode(out.stdout).split("\0") if p]
    out = run_git(
        ["diff-tree", "-z", "--name-only", "--diff-filter=A", f"{base}:code", f"{tip}:code"],
        paths.root,
        check=False,
    )
    if out.returncode != 0:  # no code/ on one side
        return added_code_trees(paths, None, tip) if _has_code(paths, tip) else []
    return [p for p in os.fsdecode(out.stdout).split("\0") if p]


def _has_code(paths: RepoPaths, tip: str) -> bool:
    return run_git(["cat-file", "-e", f"{tip}:code"], paths.root, check=False).returncode == 0


def new_runs(
    paths: RepoPaths, ledger: Ledger, base: str | None, tip: str
) -> list[tuple[str, RunRecord]]:
    """The runs in ledger commit `tip` that `base` lacks, with their records."""
    return _read_runs(ledger, added_paths(paths, base, tip, "runs"))


def _read_runs(ledger: Ledger, run_paths: Sequence[str]) -> list[tuple[str, RunRecord]]:
    """The records at these `runs/…` paths (one that cannot be read is left out: it is not
    this command's to judge; `roar fsck` lists it)."""
    ids = [p.rsplit("/", 1)[-1] for p in run_paths]
    found = ledger.runs_or_errors(ids)
    return [(rid, rec) for rid, rec in zip(ids, found, strict=True) if isinstance(rec, RunRecord)]


# -- blobs ---------------------------------------------------------------------------------


class Blob(NamedTuple):
    digest: str
    size: int
    path: str  # where a record saw it (relative to the root, or absolute)
    source: str  # the file to upload from ("" when none was found)


class BlobPlan(NamedTuple):
    store: str
    to_upload: list[Blob]
    present: int  # named blobs the store already holds
    unavailable: list[Blob]  # not in the store, and not on this machine either
    too_big: list[Blob]  # above roar.store.maxBlobSize
    secret: list[Blob]  # secret-looking file names, never uploaded


def referenced_blobs(
    runs: Iterable[tuple[str, RunRecord]], manifest: Callable[[str], bytes | None]
) -> dict[str, tuple[int, str]]:
    """{digest: (size, path)} of every file the runs read or wrote; a folder artifact stands
    for the files its manifest lists."""

    found: dict[str, tuple[int, str]] = {}
    for _rid, rec in runs:
        for f in (*rec.inputs, *rec.outputs):
            if f.kind != "dir":
                found.setdefault(f.hash, (f.size, f.path))
                continue
            data = manifest(f.hash)
            if data is None:
                continue
            try:
                entries = decode_manifest(data, f"manifest {f.hash[:12]}")
            except RoarError:
                continue
            folder = f.path.rstrip("/")
            for e in entries:
                found.setdefault(e.hash, (e.size, f"{folder}/{e.path}"))
    return found


def plan_blobs(
    paths: RepoPaths,
    store: Any,
    local_store: Any,
    wanted: Mapping[str, tuple[int, str]],
    cap: int,
) -> BlobPlan:
    """Which of `wanted` the store lacks, and where on this machine each one's bytes are."""

    digests = list(wanted)
    held = list(_each(store, store.has, digests))
    plan = BlobPlan(store.url, [], 0, [], [], [])
    present = 0
    from_tree: list[Blob] = []
    for digest, has in zip(digests, held, strict=True):
        if has:
            present += 1
            continue
        size, path = wanted[digest]
        blob = Blob(digest, size, path, "")
        if is_secret_path(path):
            plan.secret.append(blob)
        elif size > cap:
            plan.too_big.append(blob)
        elif (local := local_store.local_path(digest)) is not None and local.is_file():
            plan.to_upload.append(blob._replace(source=str(local)))
        elif not path.startswith("/") and os.path.isfile(paths.root / path):
            from_tree.append(blob._replace(source=str(paths.root / path)))
        else:
            plan.unavailable.append(blob)
    if from_tree:
        # Source data: the work tree's file, if it still holds the recorded bytes.
        hashes = HashCache(paths.roar_dir).hash_many([b.source for b in from_tree], missing_ok=True)
        for b in from_tree:
            h = hashes.get(b.source)
            still = h is not None and h.digest == b.digest
            (plan.to_upload if still else plan.unavailable).append(b)
    return plan._replace(present=present)


class Uploaded(NamedTuple):
    blobs: int
    nbytes: int
    failed: list[tuple[Blob, str]]


def upload(store: Any, blobs: Sequence[Blob], progress: Progress | None = None) -> Uploaded:
    """Put each blob into the store from its source file (verified while it streams)."""

    total = sum(b.size for b in blobs)
    done = 0
    count = 0
    failed: list[tuple[Blob, str]] = []

    def put(b: Blob) -> str | None:
        try:
            store.put_file(b.source, b.digest)
        except (RoarError, OSError) as exc:
            return str(exc)
        return None

    if progress is not None:
        progress(0, total)
    for b, why in zip(blobs, _each(store, put, blobs), strict=True):
        if why is None:
            count += 1
            done += b.size
        else:
            failed.append((b, why))
        if progress is not None:
            progress(done, total)
    return Uploaded(count, done, failed)


def _each(store: Any, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """`fn` over `items`, answers in order as they come: on threads for a remote store (each
    call waits on a round trip) or many blobs, in this thread for a few blobs in a folder."""
    local = store.local_path("0" * 64) is not None
    if len(items) < 2 or (local and len(items) < LOCAL_THREADS_AT):
        yield from map(fn, items)
        return
    # lazy: concurrent.futures imports logging, a cost a push of a few blobs need not pay
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        yield from pool.map(fn, items)


# -- what this clone has sent where (local state) -----------------------------------------


def _state_path(paths: RepoPaths) -> Path:
    return paths.roar_dir / STATE_FILE


def _read_state(paths: RepoPaths) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(paths).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stored_tip(paths: RepoPaths, store_url: str, ledger: Ledger) -> str | None:
    """The ledger commit whose blobs were all offered to `store_url` by an earlier push."""
    tip = _read_state(paths).get("stored", {}).get(store_url)
    if not isinstance(tip, str) or not tip.isalnum():
        return None
    found = ledger.reader.info(tip)
    return tip if found is not None and found[1] == "commit" else None


def _note_stored(paths: RepoPaths, store_url: str, tip: str) -> None:
    state = _read_state(paths)
    stored = state.get("stored")
    if not isinstance(stored, dict):
        stored = state["stored"] = {}
    stored[store_url] = tip
    f = _state_path(paths)
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, f)


# -- commits that records need ----------------------------------------------------------


def unkept_commits(paths: RepoPaths, commits: Iterable[str], keep: Sequence[str]) -> list[str]:
    """The commits (present here) not reachable from any of the `keep` refs (which must
    exist), in order."""
    wanted = list(dict.fromkeys(c for c in commits if c))
    if not wanted:
        return []
    if keep:
        proc = run_git(
            ["rev-list", "--ignore-missing", "--stdin"],
            paths.root,
            input="".join(c + "\n" for c in wanted).encode()
            + "".join(f"^{k}\n" for k in keep).encode(),
            check=False,
        )
        if proc.returncode == 0:
            unreached = set(proc.stdout.decode().split())
            return [c for c in wanted if c in unreached]
    check = run_git(
        ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
        paths.root,
        input="".join(c + "\n" for c in wanted).encode(),
    ).stdout.decode()
    here = [line.split()[0] for line in check.splitlines() if line.endswith(" commit")]
    if not keep or not here:
        return here
    out = run_git(
        ["rev-list", "--stdin"],
        paths.root,
        input="".join(c + "\n" for c in here).encode() + "".join(f"^{k}\n" for k in keep).encode(),
    ).stdout.decode()
    unreached = set(out.split())
    return [c for c in here if c in unreached]


def keep_commits(paths: RepoPaths, commits: Sequence[str], old: str | None) -> str | None:
    """Make KEEP_REF (now at `old`) reach `commits` (compare-and-swap, retried); its tip."""
    for _ in range(50):
        todo = unkept_commits(paths, commits, [old] if old else [])
        if not todo:
            return old
        tip = old
        for i in range(0, len(todo), KEEP_FANIN):
            parents = ([tip] if tip else []) + todo[i : i + KEEP_FANIN]
            tip = _keep_commit(paths, parents, "roar: keep the commits recorded runs used")
        assert tip is not None
        if _swap_ref(paths, KEEP_REF, tip, old):
            return tip
        time.sleep(_jitter(0.02))
        old = _rev(paths, KEEP_REF)
    raise RoarError(f"could not update {KEEP_REF}: too many writers")


def merge_keep(paths: RepoPaths, theirs_ref: str) -> bool:
    """Union a fetched KEEP_REF into ours (both stay reachable); True if ours moved."""
    for _ in range(50):
        theirs = _rev(paths, theirs_ref)
        if theirs is None:
            return False
        ours = _rev(paths, KEEP_REF)
        if ours is not None and (ours == theirs or _is_ancestor(paths, theirs, ours)):
            return False
        if ours is None or _is_ancestor(paths, ours, theirs):
            new = theirs
        else:
            new = _keep_commit(paths, [ours, theirs], f"roar: merge {theirs_ref}")
        if _swap_ref(paths, KEEP_REF, new, ours):
            return True
        time.sleep(_jitter(0.02))
    raise RoarError(f"could not update {KEEP_REF}: too many writers")


# -- fetch ---------------------------------------------------------------------------------


class Fetched(NamedTuple):
    remote: str
    refspecs_added: bool
    before: str | None  # our ledger tip before
    after: str | None
    runs_added: int
    warnings: list[str]


def _git_fetch(paths: RepoPaths, remote: str) -> None:
    run_git(["fetch", "--quiet", "--no-tags", remote, *fetch_refspecs(remote)], paths.root)


def _merge_fetched(paths: RepoPaths, remote: str) -> list[str]:
    """Merge what a fetch brought (every remote's ledger not merged yet, and `remote`'s keep
    ref); the warnings to show."""
    warnings = []
    ledger = Ledger(paths)
    try:
        for synced in remote_ledgers.merge(paths, ledger):
            if synced.error:
                warnings.append(f"the ledger of {synced.remote} was not merged: {synced.error}")
            elif synced.rejected:
                warnings.append(
                    f"{len(synced.rejected)} entr(y/ies) from {synced.remote} were quarantined "
                    "(roar fsck lists them)"
                )
    finally:
        ledger.close()
    merge_keep(paths, tracking_ref(remote, KEEP_REF))
    return warnings


def fetch(paths: RepoPaths, remote: str | None = None) -> Fetched:
    name = resolve_remote(paths, remote)
    added = ensure_refspecs(paths, name)
    before = _rev(paths, LEDGER_REF)
    _git_fetch(paths, name)
    warnings = _merge_fetched(paths, name)
    after = _rev(paths, LEDGER_REF)
    count = 0
    if after is not None and after != before:
        count = len(added_paths(paths, before, after, "runs"))
    return Fetched(name, added, before, after, count, warnings)


# -- push ----------------------------------------------------------------------------------


class Snapshot(NamedTuple):
    """A dirty-tree code snapshot that would go: the files it holds that its commit lacks
    (untracked at run time) or holds otherwise (modified)."""

    tree: str
    commit: str | None
    added: list[tuple[str, int]]  # (path, size)
    modified: list[tuple[str, int]]

    @property
    def size(self) -> int:
        return sum(s for _p, s in self.added) + sum(s for _p, s in self.modified)


class Flag(NamedTuple):
    """Something in what would leave the machine that a person should look at."""

    kind: str  # hostname, user, env, redacted, untracked-code, secret-file, path
    detail: str
    runs: int  # how many of the records carry it


class PushReport(NamedTuple):
    remote: str
    dry_run: bool
    runs: list[str]  # run ids the remote lacks
    sessions: int
    snapshots: list[Snapshot]
    commits: list[str]  # recorded commits the remote's branches lack (go under KEEP_REF)
    ledger_bytes: int  # git objects the remote lacks, as stored here
    blobs: BlobPlan | None  # None: no team store (roar.store.url) configured
    uploaded: Uploaded | None
    flags: list[Flag]
    pushed: bool
    up_to_date: bool
    attempts: int
    warnings: list[str]


def _team_store(paths: RepoPaths, settings: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """(the team store, the local store), or None when no team store is configured. The
    store's URL is spelled as a run queues its failed uploads (uploads.store_url), so that
    push finds that queue."""
    url = uploads.store_url(paths, settings)
    local = uploads.default_store_url(paths)
    if url.rstrip("/") == local.rstrip("/"):
        return None
    return uploads.open_store(url, settings), BlobStore(local)


def _disk_usage(paths: RepoPaths, tips: Sequence[str], bases: Sequence[str]) -> int:
    proc = run_git(
        ["rev-list", "--objects", "--disk-usage", "--stdin"],
        paths.root,
        input="".join(t + "\n" for t in tips).encode() + "".join(f"^{b}\n" for b in bases).encode(),
        check=False,
    )
    try:
        return int(proc.stdout.decode().strip() or 0)
    except ValueError:
        return 0


def _snapshots(
    paths: RepoPaths, trees: Sequence[str], runs: Sequence[tuple[str, RunRecord]]
) -> list[Snapshot]:
    by_tree = {rec.code.tree: rec for _r, rec in runs if rec.code.tree and rec.code.dirty}
    out = []
    for tree in trees:
        rec = by_tree.get(tree)
        if rec is None:
            continue
        base = f"{rec.code.commit}^{{tree}}" if rec.code.commit else None
        if base is None or _rev(paths, rec.code.commit or "") is None:
            listing = run_git(
                ["ls-tree", "-r", "-z", "--format=%(objectname) A\t%(path)", tree],
                paths.root,
                check=False,
            )
            rows = [r.split(" ", 1) for r in os.fsdecode(listing.stdout).split("\0") if r]
        else:
            diff = run_git(
                ["diff-tree", "-r", "-z", "--no-renames", base, tree], paths.root, check=False
            )
            fields = os.fsdecode(diff.stdout).split("\0")
            rows = []
            for head, path in zip(fields[0::2], fields[1::2], strict=False):
                parts = head.split()
                if len(parts) >= 5 and parts[4] in ("A", "M", "T"):
                    rows.append([parts[3], f"{parts[4]}\t{path}"])
        sizes = _sizes(paths, [r[0] for r in rows])
        added: list[tuple[str, int]] = []
        modified: list[tuple[str, int]] = []
        for oid, rest in rows:
            status, _, path = rest.partition("\t")
            (added if status == "A" else modified).append((path, sizes.get(oid, 0)))
        out.append(Snapshot(tree, rec.code.commit, added, modified))
    return out


def _sizes(paths: RepoPaths, oids: Sequence[str]) -> dict[str, int]:
    if not oids:
        return {}
    out = run_git(
        ["cat-file", "--batch-check=%(objectname) %(objectsize)"],
        paths.root,
        input="".join(o + "\n" for o in oids).encode(),
        check=False,
    ).stdout.decode()
    sizes = {}
    for line in out.splitlines():
        oid, _, size = line.partition(" ")
        if size.isdigit():
            sizes[oid] = int(size)
    return sizes


def sensitive(runs: Sequence[tuple[str, RunRecord]], snapshots: Sequence[Snapshot]) -> list[Flag]:
    """What in these records and snapshots may say more than the user means to share:
    hostnames, user names, environment values redaction kept, redacted commands (a secret
    was there), absolute paths (they name this machine's folders), untracked code files in
    snapshots, and files whose names look secret."""
    counts: dict[tuple[str, str], int] = {}

    def note(kind: str, detail: str) -> None:
        counts[(kind, detail)] = counts.get((kind, detail), 0) + 1

    for _rid, rec in runs:
        env = rec.environment
        for key in ("hostname", "user"):
            value = env.get(key)
            if isinstance(value, str) and value:
                note(key, value)
        variables = env.get("env_vars")
        if isinstance(variables, Mapping):
            for name, value in variables.items():
                if isinstance(value, str) and value != MARK:
                    note("env", f"{name}={value}")
        if any(MARK in word for word in rec.argv):
            note("redacted", "a command had secrets redacted (the rest of it goes)")
        for f in (*rec.inputs, *rec.outputs):
            if f.path.startswith("/"):
                note("path", f.path)
            if is_secret_path(f.path):
                note("secret-file", f"{f.path} (recorded by hash; its bytes are not uploaded)")
    for snap in snapshots:
        for path, size in snap.added:
            note("untracked-code", f"{path} ({size} B, in snapshot {snap.tree[:12]})")
        for path, _size in (*snap.added, *snap.modified):
            if is_secret_path(path):
                note("secret-file", f"{path} (in snapshot {snap.tree[:12]})")
    order = ("secret-file", "untracked-code", "env", "redacted", "hostname", "user", "path")
    flags = [Flag(k, d, n) for (k, d), n in counts.items()]
    flags.sort(key=lambda f: (order.index(f.kind) if f.kind in order else 99, f.detail))
    return flags


def _push_refs(paths: RepoPaths, remote: str, refs: Sequence[str]) -> tuple[bool, bool, str]:
    """One `git push` of `refs` to the same names: (all accepted, all already there, why
    not). --no-verify: this may itself run inside a pre-push hook, which must not run again."""
    specs = [f"{r}:{r}" for r in refs]
    proc = run_git(["push", "--porcelain", "--no-verify", remote, *specs], paths.root, check=False)
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if "\t" in ln]
    rejected = [ln for ln in lines if ln.startswith("!")]
    if proc.returncode == 0 and not rejected:
        return True, all(ln.startswith("=") for ln in lines), ""
    if rejected:
        return False, False, rejected[0].split("\t")[-1].strip()
    raise GitFailed(["git", "push", remote], proc.returncode, proc.stdout, proc.stderr)


def _nothing(remote: str, dry_run: bool) -> PushReport:
    return PushReport(
        remote, dry_run, [], 0, [], [], 0, None, None, [], False, True, 0, ["nothing recorded yet"]
    )


def _on(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def push(
    paths: RepoPaths,
    remote: str | None = None,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    blobs: bool = True,
) -> PushReport:
    """Send this clone's lineage to `remote` and the bytes it names to the team store (see
    the module docstring). With `dry_run`, only say what would go.

    `remote` may also be a URL (as git passes it to a pre-push hook for `git push URL`): the
    remote configured with that URL when there is one, else the URL itself. A URL has no
    tracking refs, so what it lacks is found with one `ls-remote`, and a push it rejects is
    not merged and retried: that needs a named remote to fetch into."""
    cfg: dict[str, list[str]] = {}
    settings = config.read_all(paths, git_keys=cfg)
    anonymous = False
    if remote is not None and remote not in remote_names(paths, cfg) and looks_like_url(remote):
        named = remote_for_url(cfg, remote)
        anonymous = named is None
        remote = remote if named is None else named
    name = remote if anonymous and remote is not None else resolve_remote(paths, remote, cfg)
    if not dry_run and not anonymous:
        ensure_refspecs(paths, name, cfg)
    warnings: list[str] = []
    # The refs are read through the cat-file the records are read with: no process of their own.
    ledger = Ledger(paths, fast_start=True)
    try:
        tip = ledger.tip()
        if tip is None:
            return _nothing(name, dry_run)
        if anonymous:
            theirs = _remote_refs(paths, name, ledger)
        else:
            theirs = {r: ledger.tip(tracking_ref(name, r)) for r in SHARED_REFS}
        remote_tip = theirs.get(LEDGER_REF)
        added = added_entries(ledger.reader, remote_tip, tip, ("runs", "sessions"))
        if added is None:
            added = added_paths(paths, remote_tip, tip, ("runs", "sessions"))
        runs = _read_runs(ledger, [p for p in added if p.startswith("runs/")])
        sessions = sum(1 for p in added if p.endswith("/session"))
        stores = (
            _team_store(paths, settings)
            if blobs and _on(settings["roar.share.blobs"].value)
            else None
        )
        plan = None
        if stores is not None:
            store, local = stores
            if not dry_run:
                # Bytes a run could not store then (the store was down, say) go first.
                uploads.drain_quietly(paths, settings, store.url, warnings)
            base = stored_tip(paths, store.url, ledger)
            store_runs = runs if base == remote_tip else new_runs(paths, ledger, base, tip)
            wanted = referenced_blobs(store_runs, ledger.manifest)
            cap = config.parse_size(settings["roar.store.maxblobsize"].value)
            plan = plan_blobs(paths, store, local, wanted, cap)
        commits = [r.code.commit or "" for _i, r in runs]
        if dry_run:
            trees = added_code_trees(paths, remote_tip, tip)
            snapshots = _snapshots(paths, trees, runs)
            if anonymous:
                kept = [k for k in (theirs.get(KEEP_REF),) if k]
                unpushed = unkept_commits(paths, commits, kept)
            else:
                unpushed = unpushed_commits(paths, name, commits)
            bases = [b for b in theirs.values() if b]
            return PushReport(
                name, True, [r for r, _ in runs], sessions, snapshots, unpushed,
                _disk_usage(paths, [tip], bases), plan, None, sensitive(runs, snapshots), False,
                not runs, 0, warnings,
            )  # fmt: skip
        uploaded = None
        if plan is not None and stores is not None:
            uploaded = upload(stores[0], plan.to_upload, progress)
            if not uploaded.failed:
                _note_stored(paths, stores[0].url, tip)
        keep = ledger.tip(KEEP_REF)
        if not _keeps(ledger, keep, commits):
            keep = keep_commits(paths, commits, keep)
    finally:
        ledger.close()

    attempts = 0
    why = ""
    while attempts < MAX_PUSH_ATTEMPTS:
        attempts += 1
        local = {LEDGER_REF: tip, KEEP_REF: keep}
        ok, same, why = _push_refs(paths, name, [r for r, oid in local.items() if oid])
        if ok:
            # git itself moved refs/roar/remotes/<remote>/* to what it pushed: the fetch
            # refspecs (ensured above) map those refs (git-push(1), "opportunistic" updates).
            return PushReport(
                name, False, [r for r, _ in runs], sessions, [], [], 0, plan, uploaded,
                [], True, same, attempts, warnings,
            )  # fmt: skip
        if anonymous:
            raise PushRejected(
                name,
                attempts,
                f"{why}; add it as a remote (git remote add NAME URL) so that "
                "roar push can fetch what is there and merge it",
            )
        # Someone pushed first: take theirs, merge the union, and offer ours again.
        time.sleep(_jitter(min(0.5, 0.05 * attempts)))
        _git_fetch(paths, name)
        warnings.extend(_merge_fetched(paths, name))
        refs = roar_refs(paths)
        tip, keep = refs.get(LEDGER_REF, tip), refs.get(KEEP_REF)
    raise PushRejected(name, attempts, why)


def _keeps(ledger: Ledger, keep: str | None, commits: Sequence[str]) -> bool:
    """Whether the keep commit `keep` names every one of `commits` as a parent, read through
    the ledger's open `cat-file` (runs recorded at a commit already kept, the common case,
    cost no `rev-list`)."""
    wanted = {c for c in commits if c}
    if not wanted:
        return True
    if keep is None:
        return False
    found = ledger.reader.read(keep)
    if found is None or found.type != "commit":
        return False
    head = found.data.split(b"\n\n", 1)[0].decode(errors="replace")
    parents = {line[len("parent ") :] for line in head.splitlines() if line.startswith("parent ")}
    return wanted <= parents


def _remote_refs(paths: RepoPaths, url: str, ledger: Ledger) -> dict[str, str | None]:
    """{ref: commit} of SHARED_REFS at `url`, from one `ls-remote`, each only when this clone
    has that commit (one it lacks cannot serve as a base here)."""
    proc = run_git(["ls-remote", "--refs", url, *SHARED_REFS], paths.root, check=False)
    found: dict[str, str | None] = dict.fromkeys(SHARED_REFS)
    for line in proc.stdout.decode(errors="replace").splitlines():
        oid, _, ref = line.partition("\t")
        info = ledger.reader.info(oid) if ref in found else None
        if info is not None and info[1] == "commit":
            found[ref] = oid
    return found


def unpushed_commits(paths: RepoPaths, remote: str, commits: Iterable[str]) -> list[str]:
    """The recorded commits that no branch or keep ref of `remote` (as last fetched) holds."""
    wanted = list(dict.fromkeys(c for c in commits if c))
    if not wanted:
        return []
    keep = tracking_ref(remote, KEEP_REF)
    refs = (
        run_git(
            ["for-each-ref", "--format=%(refname)", f"refs/remotes/{remote}/", keep], paths.root
        )
        .stdout.decode()
        .split()
    )
    return unkept_commits(paths, wanted, refs)
