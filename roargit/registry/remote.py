"""A registered hash from anywhere: look it up, and fetch its scope's lineage into a cache.

`roar reproduce HASH` (and `show`, `lineage`, `get`) outside any clone look the hash up in
the registry (`roar.registry`), fetch the scope's lineage into a clone of its own under the
cache (`$XDG_CACHE_HOME/roargit/scopes/<owner>/<project>`, else `~/.cache/roargit/…`) and
carry on there as in any clone: the fetched ledger is merged through the same gate as a
`roar fetch` (ledger_merge.sync_remotes: ledger_check), and the scope's store is one that clone
reads from (`fetched_stores`), never one it writes to.

A user the scope's repository refuses learns what the index says publicly (the scope, who
registered it, when) and nothing more.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blake3 import blake3

from roargit import codec, remote_ledgers
from roargit.blobstore import BlobStore
from roargit.errors import RecordCorrupt, RoarError
from roargit.git import run_git
from roargit.ledger import Ledger
from roargit.registry import index
from roargit.registry.index import NO_PROMPT, AccessDenied, IndexEntry, _denied
from roargit.registry.login import NotLoggedIn, Registry, configured, credential, http_get
from roargit.registry.scope import valid_scope_name
from roargit.repo import RepoPaths, ensure_roar_dir, find_repo
from roargit.reproduce import DestinationExists

SCOPE_REMOTE = "registry"
STORES_FILE = "registry-stores"


class NotRegistered(RoarError):
    def __init__(self, prefix: str, registry: str) -> None:
        super().__init__(f"{prefix} is not registered in {registry}")


class AmbiguousRegistered(RoarError):
    def __init__(self, prefix: str, found: list[IndexEntry]) -> None:
        names = ", ".join(e.hash[:16] for e in found[:5])
        super().__init__(f"{prefix} names {len(found)} registered artifacts: {names}")


class NoReadAccess(RoarError):
    def __init__(self, entry: IndexEntry) -> None:
        when = time.strftime("%Y-%m-%d", time.gmtime(entry.registered_at))
        super().__init__(
            f"{entry.hash[:16]} is registered in {entry.scope} by {entry.registered_by} on "
            f"{when}; you have no read access to it"
        )


def cache_root(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME", "/"), ".cache")
    return Path(base) / "roargit"


def _slug(url: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in url.split("://")[-1])[-40:].strip("-")
    return f"{keep}-{blake3(url.encode()).hexdigest()[:12]}"


def index_work(cache: Path, registry: Registry) -> Path:
    return index.work_repo(cache / "index" / _slug(registry.index_url))


def _entry_from_json(item: Any) -> IndexEntry:
    """An entry a server sent as JSON, through the same checks as one read from git."""

    if not isinstance(item, dict) or not isinstance(item.get("hash"), str):
        raise RecordCorrupt("index entry", "the registry sent something else")
    digest = item["hash"]
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise RecordCorrupt("index entry", "its hash is not 64 hex")
    fields = {k: item.get(k) for k in IndexEntry._fields}
    try:
        data = codec.encode(fields)
    except TypeError as exc:
        raise RecordCorrupt(f"index entry {digest[:12]}", str(exc)) from None
    return index.decode_entry(data, digest)


def lookup(cwd: Path, cache: Path, registry: Registry, prefix: str) -> list[IndexEntry]:
    """The index entries whose hash starts with `prefix`: one `GET /index/<prefix>` from a
    roar server, one shard fetch from any other git registry."""

    prefix = index.check_hash(prefix)
    if registry.api is None:
        return index.lookup(index_work(cache, registry), registry.index_url, prefix)
    url = f"{registry.api}/index/{prefix}"
    status, body = http_get(url)
    if status == 401:  # this server keeps even existence to its users
        auth = credential(cwd, registry.api)
        status, body = http_get(url, auth) if auth else (status, body)
    if status == 404:
        return []
    if status in (401, 403):
        raise AccessDenied(registry.api, "read the index")
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("entries"), list):
        raise index.RegistryUnreachable(registry.api, f"GET /index answered {status}")
    return [_entry_from_json(item) for item in body["entries"]]


def find_one(cwd: Path, cache: Path, registry: Registry, prefix: str) -> IndexEntry:
    found = lookup(cwd, cache, registry, prefix)
    if not found:
        raise NotRegistered(prefix, registry.url)
    if len(found) > 1:
        raise AmbiguousRegistered(prefix, found)
    return found[0]


def scope_clone(cache: Path, entry: IndexEntry) -> RepoPaths:
    """The cache's clone for the entry's scope (made when missing), the scope's store among
    those it reads."""

    if not valid_scope_name(entry.scope):  # decode_entry checked it; a path is made of it
        raise RecordCorrupt(f"index entry {entry.hash[:12]}", "its scope is not owner/project")
    owner, project = entry.scope.split("/")
    folder = cache / "scopes" / owner / project
    if not (folder / ".git").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        run_git(["init", "--quiet", str(folder)], folder)
    paths = find_repo(folder)
    ensure_roar_dir(paths)
    # Read from, never written to: a reproduction's own outputs stay in this clone's store.
    _note_store(paths, entry.store)
    return paths


def scope_remote(scope: str) -> str:
    """The name a scope's lineage is tracked under in a user's own clone
    (`refs/roar/remotes/<name>/ledger`): one that git and a file name both take."""
    owner, _, project = scope.partition("/")
    return f"registry-{len(owner)}-{owner}-{project}"


def fetched_stores(paths: RepoPaths) -> list[str]:
    """The stores of the scopes whose lineage was fetched into this clone (read by
    `roar reproduce` and `roar get` after the clone's own stores)."""
    try:
        text = (paths.roar_dir / STORES_FILE).read_text()
    except OSError:
        return []
    return [line for line in text.splitlines() if line and line.isprintable()]


def _note_store(paths: RepoPaths, url: str) -> None:
    if url in fetched_stores(paths):
        return
    ensure_roar_dir(paths)
    with open(paths.roar_dir / STORES_FILE, "a") as f:
        f.write(url + "\n")


def fetch_scope(paths: RepoPaths, entry: IndexEntry, remote: str = SCOPE_REMOTE) -> list[str]:
    """Fetch the scope's lineage into a clone (refs/roar/remotes/<remote>/) and merge it
    (the gate of any fetch); warnings. NoReadAccess when the scope's repository refuses
    this user."""

    base = f"refs/roar/remotes/{remote}"
    specs = [f"+refs/roar/ledger:{base}/ledger", f"+refs/roar/commits:{base}/commits"]
    proc = run_git(
        ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", entry.repo, *specs],
        paths.root,
        check=False,
        env=NO_PROMPT,
    )
    if proc.returncode != 0:
        if _denied(proc.stderr) or b"not found" in proc.stderr or b"404" in proc.stderr:
            raise NoReadAccess(entry)
        if b"couldn't find remote ref refs/roar/ledger" in proc.stderr:
            return []  # only source data was registered there: bytes, no lineage
        if b"couldn't find remote ref refs/roar/commits" in proc.stderr:
            proc = run_git(
                ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", entry.repo, specs[0]],
                paths.root,
                env=NO_PROMPT,
            )
        else:
            why = proc.stderr.decode(errors="replace").strip().splitlines()
            raise index.RegistryUnreachable(entry.repo, why[-1] if why else "git fetch failed")
    warnings = []
    for synced in remote_ledgers.merge_fetched(paths, f"{base}/commits"):
        if synced.error:
            warnings.append(f"the lineage of {entry.scope} was not merged: {synced.error}")
        elif synced.rejected:
            warnings.append(
                f"{len(synced.rejected)} entr(y/ies) of {entry.scope} were quarantined "
                "(roar fsck lists them)"
            )
    return warnings


def fetch_into_clone(cwd: Path, env: Mapping[str, str], paths: RepoPaths, prefix: str) -> list[str]:
    """In a user's own clone that does not know `prefix`: when the registry does, fetch its
    scope's lineage into this clone (tracked as a remote of its own, merged through the gate)
    and note its store, so that the command finds the records and the bytes, and runs
    recorded from here link to them (continuing from a teammate's checkpoint). Warnings."""

    registry = configured(cwd)
    if registry is None:
        return []
    ledger = Ledger(paths, fast_start=True)
    try:
        if ledger.find_artifacts(prefix) or ledger.find_runs(prefix):
            return []
    finally:
        ledger.close()
    found = lookup(cwd, cache_root(env), registry, prefix)
    if len(found) != 1:
        return []  # not registered (or ambiguous): the command says what it finds here
    _note_store(paths, found[0].store)
    return fetch_scope(paths, found[0], scope_remote(found[0].scope))


def enter(
    cwd: Path, env: Mapping[str, str], prefix: str
) -> tuple[RepoPaths, IndexEntry, list[str]]:
    """For a command run outside any clone: the registry's entry for `prefix`, its scope's
    lineage fetched into the cache clone; (that clone, the entry, warnings)."""

    registry = configured(cwd)
    if registry is None:
        raise NotLoggedIn()
    cache = cache_root(env)
    entry = find_one(cwd, cache, registry, prefix)
    paths = scope_clone(cache, entry)
    warnings = fetch_scope(paths, entry)
    return paths, entry, warnings


def knows(paths: RepoPaths, digest: str) -> bool:
    """Whether the clone's ledger holds artifact `digest`."""

    ledger = Ledger(paths, fast_start=True)
    try:
        return ledger.has_artifact(digest)
    finally:
        ledger.close()


def get_registered(entry: IndexEntry, dest: Path, *, force: bool = False) -> str:
    """Write a registered artifact's bytes from its scope's store to `dest` (verified while
    they stream; for source data, which no ledger knows); the store's URL."""

    if dest.exists() and not force:
        raise DestinationExists(dest)
    store = BlobStore(entry.store)
    store.get_file(entry.hash, dest)
    return store.url
