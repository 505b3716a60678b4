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

A rejected push (another clone pushed first) fetches, merges the union (ledger_merge.merge
through `sync_remotes`, which quarantines bad entries) and tries again, a bounded number of times.
`fetch` brings the remote's `refs/roar/*` into `refs/roar/remotes/<remote>/` and merges it.

What goes is found in push_plan, the bytes go by push_blobs, the commits by keep_ref.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from roargit import config, remote_ledgers, uploads
from roargit.clone import configure_remote, fetch_refspecs
from roargit.errors import RoarError
from roargit.git import push_refs, run_git
from roargit.keep_ref import (
    KEEP_REF,
    keep_commits,
    keeps,
    rev,
    unkept_commits,
)
from roargit.ledger import LEDGER_REF, REMOTES_PREFIX, Ledger
from roargit.ledger_commit import jitter
from roargit.push_blobs import (
    BlobPlan,
    Progress,
    Uploaded,
    note_stored,
    plan_blobs,
    referenced_blobs,
    stored_tip,
    team_store,
    upload,
)
from roargit.push_plan import (
    Flag,
    Snapshot,
    added_code_trees,
    added_entries,
    added_paths,
    dirty_snapshots,
    disk_usage,
    new_runs,
    read_runs,
    sensitive,
)
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

SHARED_REFS = (LEDGER_REF, KEEP_REF)

#: Pushes that lose a race are retried after a fetch and merge, at most this many times.
MAX_PUSH_ATTEMPTS = 16


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


def roar_refs(paths: RepoPaths) -> dict[str, str]:
    """{ref: commit} of every ref under refs/roar/, in one `git for-each-ref`."""
    out = run_git(
        ["for-each-ref", "--format=%(refname) %(objectname)", "refs/roar/"], paths.root
    ).stdout.decode(errors="surrogateescape")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


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
    for synced in remote_ledgers.merge_fetched(paths, tracking_ref(remote, KEEP_REF)):
        if synced.error:
            warnings.append(f"the ledger of {synced.remote} was not merged: {synced.error}")
        elif synced.rejected:
            warnings.append(
                f"{len(synced.rejected)} entr(y/ies) from {synced.remote} were quarantined "
                "(roar fsck lists them)"
            )
    return warnings


def fetch(paths: RepoPaths, remote: str | None = None) -> Fetched:
    name = resolve_remote(paths, remote)
    added = ensure_refspecs(paths, name)
    before = rev(paths, LEDGER_REF)
    _git_fetch(paths, name)
    warnings = _merge_fetched(paths, name)
    after = rev(paths, LEDGER_REF)
    count = 0
    if after is not None and after != before:
        count = len(added_paths(paths, before, after, "runs"))
    return Fetched(name, added, before, after, count, warnings)


# -- push ----------------------------------------------------------------------------------


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
        runs = read_runs(ledger, [p for p in added if p.startswith("runs/")])
        sessions = sum(1 for p in added if p.endswith("/session"))
        stores = (
            team_store(paths, settings)
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
            snapshots = dirty_snapshots(paths, trees, runs)
            if anonymous:
                kept = [k for k in (theirs.get(KEEP_REF),) if k]
                unpushed = unkept_commits(paths, commits, kept)
            else:
                unpushed = unpushed_commits(paths, name, commits)
            bases = [b for b in theirs.values() if b]
            return PushReport(
                name, True, [r for r, _ in runs], sessions, snapshots, unpushed,
                disk_usage(paths, [tip], bases), plan, None, sensitive(runs, snapshots), False,
                not runs, 0, warnings,
            )  # fmt: skip
        uploaded = None
        if plan is not None and stores is not None:
            uploaded = upload(stores[0], plan.to_upload, progress)
            if not uploaded.failed:
                note_stored(paths, stores[0].url, tip)
        keep = ledger.tip(KEEP_REF)
        if not keeps(ledger, keep, commits):
            keep = keep_commits(paths, commits, keep)
    finally:
        ledger.close()

    attempts = 0
    why = ""
    while attempts < MAX_PUSH_ATTEMPTS:
        attempts += 1
        local = {LEDGER_REF: tip, KEEP_REF: keep}
        ok, same, why = push_refs(paths.root, name, [f"{r}:{r}" for r, oid in local.items() if oid])
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
        time.sleep(jitter(min(0.5, 0.05 * attempts)))
        _git_fetch(paths, name)
        warnings.extend(_merge_fetched(paths, name))
        refs = roar_refs(paths)
        tip, keep = refs.get(LEDGER_REF, tip), refs.get(KEEP_REF)
    raise PushRejected(name, attempts, why)


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
