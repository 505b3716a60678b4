"""The registry index: which scope, lineage repository and store hold an artifact.

The index lives in a git repository (any git host, or `roar registry serve`) as 256 shard
refs, `refs/roar/index/<first two hex of the hash>`. Each points at a commit whose tree holds
one blob per registered artifact, named by its hash: a small canonical msgpack map (codec)
with the scope, the scope's lineage repository URL, its store URL, the size, when and by whom
it was registered. An entry says that the hash exists and where; it carries no lineage.

A lookup fetches one shard ref (`git fetch URL refs/roar/index/ab`: with protocol v2 the
server advertises only that ref), never the whole index. Each shard tip is a root commit
(the index needs no history), so the fetch brings one commit, one tree and the entries this
cache lacks. An update is a compare-and-swap on one shard: the push names the tip that was
fetched as the ref's expected value (`--force-with-lease=REF:OLD`; receive-pack checks it
under the ref's lock), so of two concurrent registrations in one shard one wins and the
other fetches again and re-applies its entry: none is lost.

The registry's settings (`refs/roar/config`, a commit whose tree holds `registry.conf` in
git-config format) say where scopes live: `scopes.repo` and `scopes.store`, templates in
which `{scope}` stands for `owner/project`; a relative repo template is relative to the
index's URL.

Every git command runs in a local bare "work" repository (a cache), with GIT_TERMINAL_PROMPT=0:
credentials come from the user's credential helpers, never from a prompt in the middle of a
lookup.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roargit import codec
from roargit.errors import RecordCorrupt, RoarError
from roargit.git import run_git
from roargit.gitobjects import ObjectReader
from roargit.ledger_commit import jitter
from roargit.registry.scope import check_name, valid_scope_name
from roargit.structs import NamedTuple

INDEX_PREFIX = "refs/roar/index/"
CONFIG_REF = "refs/roar/config"
CONFIG_FILE = "registry.conf"
#: Registrations that lose a race on their shard fetch and try again, at most this many times.
MAX_ATTEMPTS = 40
#: Entry fields are short: a URL, a scope name, a user name.
MAX_FIELD = 4096
MIN_PREFIX = 6

_HEX = re.compile(r"[0-9a-f]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
_IDENTITY = {
    "GIT_AUTHOR_NAME": "roar",
    "GIT_AUTHOR_EMAIL": "roar@localhost",
    "GIT_COMMITTER_NAME": "roar",
    "GIT_COMMITTER_EMAIL": "roar@localhost",
}


class IndexEntry(NamedTuple):
    hash: str
    scope: str
    repo: str  # the scope's lineage repository (git URL)
    store: str  # the scope's blob store (fsspec URL)
    size: int
    registered_at: int  # seconds since the epoch
    registered_by: str

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


class AccessDenied(RoarError):
    def __init__(self, url: str, what: str = "read") -> None:
        self.url = url
        super().__init__(f"{url}: the registry refused to let you {what} (check `roar whoami`)")


class RegistryUnreachable(RoarError):
    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"registry {url} cannot be reached: {why}")


class IndexBusy(RoarError):
    def __init__(self, shard: str, attempts: int) -> None:
        super().__init__(
            f"could not update index shard {shard} after {attempts} attempts: too many writers"
        )


class BadPrefix(RoarError):
    def __init__(self, text: str) -> None:
        super().__init__(
            f"'{text}' is not an artifact hash: give {MIN_PREFIX} to 64 hex characters"
        )


# -- entries -------------------------------------------------------------------------------


def check_hash(text: str) -> str:
    """A hash or prefix, lower-cased, or BadPrefix."""
    text = text.strip().lower()
    if not (MIN_PREFIX <= len(text) <= 64) or not _HEX.fullmatch(text):
        raise BadPrefix(text)
    return text


def shard_ref(digest: str) -> str:
    return INDEX_PREFIX + digest[:2]


def encode_entry(entry: IndexEntry) -> bytes:
    return codec.encode(entry._asdict())


def _text(value: Any, field: str, name: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_FIELD or not value.isprintable():
        raise RecordCorrupt(name, f"its {field} is not a short printable string")
    return value


def decode_entry(data: bytes, digest: str) -> IndexEntry:
    """The entry stored under `digest`, checked (index entries come from the network)."""

    name = f"index entry {digest[:12]}"
    body = codec.decode(data, name)
    if body.get("hash") != digest:
        raise RecordCorrupt(name, "it names another hash")
    scope = _text(body.get("scope"), "scope", name)
    if not valid_scope_name(scope):
        raise RecordCorrupt(name, "its scope is not owner/project")
    size, when = body.get("size"), body.get("registered_at")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RecordCorrupt(name, "its size is not a count of bytes")
    if not isinstance(when, int) or isinstance(when, bool) or when < 0:
        raise RecordCorrupt(name, "its time is not a count of seconds")
    return IndexEntry(
        digest,
        scope,
        _text(body.get("repo"), "repo", name),
        _text(body.get("store"), "store", name),
        size,
        when,
        _text(body.get("registered_by"), "registered_by", name),
    )


# -- the local work repository -----------------------------------------------------------


def work_repo(folder: Path) -> Path:
    """A bare repository at `folder` (made when missing) that fetches and pushes happen in."""
    if not (folder / "HEAD").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        run_git(["init", "--quiet", "--bare", str(folder)], folder)
        # A cache: nothing here is precious, and an automatic gc must not stall a lookup.
        run_git(["config", "gc.auto", "0"], folder)
    return folder


def _git(work: Path, args: Sequence[str], **kw: Any) -> Any:
    env = {**NO_PROMPT, **_IDENTITY, **kw.pop("env", {})}
    return run_git(args, work, env=env, **kw)


def _denied(stderr: bytes) -> bool:
    text = stderr.decode(errors="replace")
    return any(
        s in text
        for s in ("Authentication failed", " 401", " 403", "terminal prompts disabled", "denied")
    )


def _missing_ref(stderr: bytes) -> bool:
    return b"couldn't find remote ref" in stderr or b"no such ref" in stderr


def fetch_ref(work: Path, url: str, ref: str) -> str | None:
    """Fetch one ref of `url` (its tip only) into `work`; the commit, or None when the
    registry has no such ref. AccessDenied / RegistryUnreachable otherwise."""
    scratch = f"refs/roar/tmp/{os.getpid()}-{time.monotonic_ns()}"
    for attempt in range(5):
        proc = _git(
            work,
            ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", url, f"+{ref}:{scratch}"],
            check=False,
        )  # fmt: skip
        if proc.returncode == 0:
            break
        if _missing_ref(proc.stderr):
            return None
        if _denied(proc.stderr):
            raise AccessDenied(url)
        if attempt == 4:
            why = proc.stderr.decode(errors="replace").strip().splitlines()
            raise RegistryUnreachable(url, why[-1] if why else f"git fetch: {proc.returncode}")
        # Over smart HTTP the refs are read in one request and the objects asked for in the
        # next: a registration in between moves the shard, and a server may refuse a tip it
        # no longer advertises. Another fetch holding a lock here is the other passing cause.
        time.sleep(0.05 * (attempt + 1))
    found = _git(work, ["rev-parse", "--verify", "-q", f"{scratch}^{{commit}}"], check=False)
    tip = found.stdout.decode().strip() or None
    # The tip stays named here under the ref's own name (last writer wins: it is a cache),
    # so that the next fetch offers it and receives only the entries added since.
    _git(work, ["update-ref", "-d", scratch], check=False)
    if tip:
        _git(work, ["update-ref", ref, tip], check=False)  # a concurrent fetch may hold it
    return tip


def _tree_rows(work: Path, commit: str) -> list[tuple[str, str, str, str]]:
    """(mode, type, oid, name) of each entry of the commit's tree."""
    out = _git(work, ["ls-tree", "-z", commit]).stdout.decode(errors="surrogateescape")
    rows = []
    for item in out.split("\0"):
        if item:
            head, _, name = item.partition("\t")
            mode, kind, oid = head.split(" ")
            rows.append((mode, kind, oid, name))
    return rows


def _read_blobs(work: Path, oids: Sequence[str]) -> list[bytes | None]:
    reader = ObjectReader(work)
    try:
        objs = reader.read_many(list(oids))
    finally:
        reader.close()
    return [None if o is None or o.type != "blob" else o.data for o in objs]


def entries_in(work: Path, commit: str, prefix: str) -> list[IndexEntry]:
    """The entries of a shard commit whose hash starts with `prefix`; ill-formed ones are
    left out (RecordCorrupt is raised only when every match is ill-formed)."""
    rows = [r for r in _tree_rows(work, commit) if r[3].startswith(prefix) and r[1] == "blob"]
    rows = [r for r in rows if _HEX64.fullmatch(r[3])]
    found: list[IndexEntry] = []
    error: RecordCorrupt | None = None
    for row, data in zip(rows, _read_blobs(work, [r[2] for r in rows]), strict=True):
        try:
            found.append(decode_entry(data or b"", row[3]))
        except RecordCorrupt as exc:
            error = exc
    if not found and error is not None:
        raise error
    return found


def lookup(work: Path, url: str, prefix: str) -> list[IndexEntry]:
    """The entries whose hash starts with `prefix` (6 to 64 hex), read from the registry
    at `url` by fetching the one shard ref they would be in."""
    prefix = check_hash(prefix)
    tip = fetch_ref(work, url, shard_ref(prefix))
    return [] if tip is None else entries_in(work, tip, prefix)


class Added(NamedTuple):
    entry: IndexEntry  # the entry the index holds (an earlier one, when `added` is False)
    added: bool
    attempts: int


def add(work: Path, url: str, entry: IndexEntry) -> Added:
    """Add `entry` to the registry's index (compare-and-swap on its shard, retried). A hash
    already registered keeps its first entry: registering again changes nothing."""

    ref = shard_ref(entry.hash)
    data = encode_entry(entry)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        old = fetch_ref(work, url, ref)
        rows = _tree_rows(work, old) if old else []
        if any(r[3] == entry.hash for r in rows):
            return Added(entries_in(work, str(old), entry.hash)[0], False, attempt)
        blob = _git(work, ["hash-object", "-w", "--stdin"], input=data).stdout.decode().strip()
        rows.append(("100644", "blob", blob, entry.hash))
        listing = "".join(f"{m} {k} {o}\t{n}\0" for m, k, o, n in rows).encode()
        tree = _git(work, ["mktree", "-z"], input=listing).stdout.decode().strip()
        # A root commit: the shard's tip is all a lookup needs, and fetching it never brings
        # history (a shallow fetch would, and not every server takes a push from one).
        args = ["commit-tree", tree, "-m", f"register {entry.hash} in {entry.scope}"]
        commit = _git(work, args).stdout.decode().strip()
        if push_ref(work, url, commit, ref, old):
            return Added(entry, True, attempt)
        time.sleep(jitter(min(0.5, 0.02 * attempt)))
    raise IndexBusy(ref, MAX_ATTEMPTS)


def push_ref(work: Path, url: str, new: str, ref: str, old: str | None) -> bool:
    """Move `ref` at `url` from `old` (None: absent) to `new`; False when it had moved."""
    lease = f"--force-with-lease={ref}:{old or ''}"
    proc = _git(work, ["push", "--porcelain", "--quiet", lease, url, f"{new}:{ref}"], check=False)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode == 0:
        return True
    if (
        "[rejected]" in out
        or "stale info" in out
        or "failed to update ref" in out
        or ("\t[remote rejected]" in out and "lock" in out)
    ):
        return False
    if _denied(proc.stderr) or "[remote rejected]" in out:
        raise AccessDenied(url, "write to the index")
    why = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
    raise RegistryUnreachable(url, why[-1] if why else f"git push exited {proc.returncode}")


# -- the registry's settings ---------------------------------------------------------------


def read_settings(work: Path, url: str) -> dict[str, str]:
    """`refs/roar/config`'s registry.conf as {key: value} (git-config keys, lower case);
    empty when the registry has none."""
    tip = fetch_ref(work, url, CONFIG_REF)
    if tip is None:
        return {}
    proc = _git(work, ["config", "--blob", f"{tip}:{CONFIG_FILE}", "--list", "-z"], check=False)
    found: dict[str, str] = {}
    for item in proc.stdout.split(b"\0"):
        if item:
            key, _, value = item.decode(errors="replace").partition("\n")
            if value.isprintable() and len(value) <= MAX_FIELD:
                found[key.lower()] = value
    return found


def settings_commit(work: Path, text: str) -> str:
    """A root commit holding `text` as registry.conf, written in `work`."""
    blob = _git(work, ["hash-object", "-w", "--stdin"], input=text.encode()).stdout.decode()
    listing = f"100644 blob {blob.strip()}\t{CONFIG_FILE}\0".encode()
    tree = _git(work, ["mktree", "-z"], input=listing).stdout.decode().strip()
    return _git(work, ["commit-tree", tree, "-m", "registry settings"]).stdout.decode().strip()


def settings_text(repo: str, store: str, scopes: Sequence[str], web: str | None) -> str:
    """registry.conf for these scope templates (`{scope}` stands for owner/project)."""

    for value in (repo, store, web or ""):
        if not value.isprintable():
            raise RoarError(f"'{value}' cannot go in the registry's settings")
    for name in scopes:
        check_name(name)

    def quoted(value: str) -> str:  # git-config: '#' and ';' start a comment outside quotes
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[scopes]", f"\trepo = {quoted(repo)}", f"\tstore = {quoted(store)}"]
    if scopes:
        lines.append(f"\tnames = {' '.join(sorted(scopes))}")
    if web:
        lines += ["[registry]", f"\tweb = {quoted(web)}"]
    return "\n".join(lines) + "\n"


def publish_settings(
    work: Path, url: str, repo: str, store: str, scopes: Sequence[str], web: str | None
) -> str:
    """Write the registry's settings (compare-and-swap on refs/roar/config, retried); the
    text written."""
    text = settings_text(repo, store, scopes, web)
    for _attempt in range(MAX_ATTEMPTS):
        old = fetch_ref(work, url, CONFIG_REF)
        if push_ref(work, url, settings_commit(work, text), CONFIG_REF, old):
            return text
    raise IndexBusy(CONFIG_REF, MAX_ATTEMPTS)
