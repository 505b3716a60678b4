"""Putting a run's bytes in the blob store, and the queue of those that could not go yet.

A store that fails (a read-only folder, a missing bucket, no credentials, an endpoint that is
down) never costs a run its record. The bytes are stored before the record is appended, so
that every output whose bytes could not be stored says why in the record
(`FileRef.not_stored`); each request to a remote store is bounded in time (`roar.store.timeout`,
`roar.store.retries`), and the first failure of a store stops further tries against it in that
command: the rest is queued at once, not tried one timeout at a time.

The queue lives in `.git/roar/uploads/queue/`, one small JSON file per blob and store (named
`<digest>-<store key>`), written atomically, so that concurrent runs need no lock to add to it.
Each entry names the store, the blob, its size, the file it came from, and where a copy of its
bytes was kept: the work-tree file may be overwritten before the retry, so a copy goes into the
local store (`.git/roar/blobs`, where `roar get` finds it) or, when that is the store that
failed, into `.git/roar/uploads/blobs`. Without a copy (the disk is full, say) the retry reads
the work-tree file, whose bytes are checked against the digest while they stream: a file that
changed since is dropped from the queue with a warning, never stored under a wrong name.

The queue is drained by the next command that talks to the store (a run that stored its own
outputs there, `roar get`, `roar reproduce`) and by `roar store sync`; an entry is removed
once the store holds its blob.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from blake3 import blake3

from roargit import config, pathguard, progress
from roargit.blobstore import BlobStore, Limits, check_digest
from roargit.errors import ConfigError, DigestMismatch
from roargit.hashing import FileHash
from roargit.records import FileRef
from roargit.redact import redact_value
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

QUEUE = "uploads/queue"
SPOOL = "uploads/blobs"
LOCK = "uploads/lock"

RETRY_HINT = "queued, retried by the next run or 'roar store sync'"


# -- which store, with which limits ----------------------------------------------------------


def default_store_url(paths: RepoPaths) -> str:
    return f"file://{paths.roar_dir / 'blobs'}"


def store_url(paths: RepoPaths, settings: Mapping[str, config.Value]) -> str:
    """The configured store (a relative folder taken from the repository's top), else the
    local one under `.git/roar/blobs`."""
    return config.resolve_store_url(paths, settings["roar.store.url"].value) or (
        default_store_url(paths)
    )


def store_limits(settings: Mapping[str, config.Value]) -> Limits:
    part = config.parse_size(settings["roar.store.partsize"].value)
    if part < 5 << 20:
        # S3 refuses smaller parts (all but the last) when the upload completes.
        raise ConfigError("roar.store.partsize must be at least 5M (S3's smallest part)")
    return Limits(
        timeout=config.parse_seconds(settings["roar.store.timeout"].value, "roar.store.timeout"),
        retries=config.parse_count(settings["roar.store.retries"].value, "roar.store.retries"),
        part_size=part,
    )


def open_store(url: str, settings: Mapping[str, config.Value]) -> BlobStore:
    """The store at `url`, its remote requests bounded by the settings' limits."""
    return BlobStore(url, limits=store_limits(settings))


# -- why a store failed ----------------------------------------------------------------------


class Failure(NamedTuple):
    """Why a store refused bytes: a cause a user can act on, and how."""

    cause: str  # "no credentials", "bucket missing", "endpoint unreachable", "permission",
    #             "disk full", "interrupted" or "error"
    what: str  # what happened, short (it goes into records)
    fix: str = ""  # what to do about it

    @property
    def text(self) -> str:
        return f"{self.what} ({self.fix})" if self.fix else self.what

    def line(self, url: str) -> str:
        return f"{url}: {self.text}"


_NO_CREDENTIALS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
)
_REJECTED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken")
_UNREACHABLE = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "FSTimeoutError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "HTTPClientError",
    }
)


_URL_PATH = re.compile(r"(https?://[^/\s\"']+)/[^\s\"']*")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def classify(exc: BaseException, url: str) -> Failure:
    """The cause of a store failure, with its fix."""
    names = {c.__name__ for c in type(exc).__mro__}
    code = exc.errno if isinstance(exc, OSError) else None
    # An OSError's own text repeats the file name; the store's URL says where already.
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    detail = " ".join(message.split()) or type(exc).__name__
    # An endpoint is named by its origin; the object path (and an upload id) is noise here.
    detail = _URL_PATH.sub(r"\1", detail)
    scheme = _scheme(url)
    remote = scheme != "file"
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", "interrupted")
    if names & _NO_CREDENTIALS or "Unable to locate credentials" in detail:
        how = {
            "s3": "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            "gs": "run 'gcloud auth application-default login'",
        }.get(scheme.rstrip("a"), f"configure credentials for {scheme}://")
        return Failure("no credentials", "no credentials", how)
    if any(word in detail for word in _REJECTED):
        return Failure("no credentials", f"credentials refused: {detail}", "check them")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return Failure("disk full", "disk full", "free some space on the store's disk")
    if "NoSuchBucket" in detail or (
        remote and isinstance(exc, FileNotFoundError) and "bucket" in detail.lower()
    ):
        return Failure("bucket missing", "bucket missing", "create it, or fix roar.store.url")
    if remote and isinstance(exc, FileNotFoundError):  # a 404 on a write: no such bucket
        return Failure(
            "bucket missing",
            f"bucket or endpoint not found: {detail}",
            "check roar.store.url and the endpoint URL",
        )
    if (
        names & _UNREACHABLE
        or isinstance(exc, TimeoutError | ConnectionError)
        or code in (errno.ETIMEDOUT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
    ):
        return Failure(
            "endpoint unreachable",
            "endpoint unreachable or too slow",
            f"{detail}; check the network and the endpoint, roar.store.timeout bounds each try",
        )
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM, errno.EROFS):
        how = (
            "check that these credentials may write there"
            if remote
            else "make it writable, or point roar.store.url elsewhere"
        )
        return Failure("permission", f"not writable: {detail}", how)
    return Failure("error", detail)


# -- the queue -------------------------------------------------------------------------------


class Pending(NamedTuple):
    """A blob waiting to go to a store."""

    store: str  # the store's URL
    digest: str
    size: int
    path: str  # absolute path of the file it was read from
    copy: str  # URL of a local store that holds a copy of the bytes; "" when none does
    reason: str  # why it is not in the store yet (the last failure)
    queued_at: int  # ns since the epoch

    def to_json(self) -> dict[str, Any]:
        return dict(self._asdict())


def _queue_dir(paths: RepoPaths) -> Path:
    return paths.roar_dir / QUEUE


def _entry_name(store: str, digest: str) -> str:
    return f"{digest}-{blake3(store.encode()).hexdigest()[:16]}"


def _parse_entry(data: bytes) -> Pending | None:
    """One queue file, checked (a damaged entry is skipped, never trusted)."""
    try:
        m = json.loads(data)
        entry = Pending(
            store=str(m["store"]),
            digest=check_digest(m["digest"]),
            size=int(m["size"]),
            path=str(m["path"]),
            copy=str(m.get("copy", "")),
            reason=str(m.get("reason", "")),
            queued_at=int(m.get("queued_at", 0)),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return entry if entry.store and os.path.isabs(entry.path) else None


def pending(paths: RepoPaths, store: str | None = None) -> list[Pending]:
    """The queue (for one store, when given), oldest first."""
    folder = _queue_dir(paths)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.startswith("."):
            continue  # a temp file being written
        try:
            entry = _parse_entry((folder / name).read_bytes())
        except OSError:
            continue
        if (
            entry is not None
            and name == _entry_name(entry.store, entry.digest)
            and (store is None or entry.store == store)
        ):
            found.append(entry)
    return sorted(found, key=lambda e: (e.queued_at, e.path))


def _enqueue(paths: RepoPaths, entry: Pending) -> None:
    folder = _queue_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(json.dumps(entry.to_json(), sort_keys=True))
        os.replace(tmp, folder / _entry_name(entry.store, entry.digest))
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _dequeue(paths: RepoPaths, entry: Pending) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_queue_dir(paths) / _entry_name(entry.store, entry.digest)).unlink()
    spool = f"file://{paths.roar_dir / SPOOL}"
    if entry.copy == spool and not any(
        n.startswith(entry.digest) for n in os.listdir(_queue_dir(paths))
    ):
        # The spool holds bytes only while some entry needs them (the local store keeps its
        # copies: they are what `roar get` reads).
        blob = BlobStore(spool).local_path(entry.digest)
        if blob is not None:
            with contextlib.suppress(FileNotFoundError):
                blob.unlink()


def _same_store(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        url = url.removeprefix("file://")
        return os.path.normpath(url) if "://" not in url else url.rstrip("/")

    return norm(a) == norm(b)


def _keep_copy(paths: RepoPaths, failed_url: str, path: str, digest: str) -> str:
    """Copy the bytes somewhere local that is not the failed store; its URL, or ""."""
    local = default_store_url(paths)
    spool = local if not _same_store(local, failed_url) else f"file://{paths.roar_dir / SPOOL}"
    try:
        BlobStore(spool).put_file(path, digest)
    except Exception:  # no room, say: the retry reads the work-tree file, checked by hash
        return ""
    return spool


@contextlib.contextmanager
def _drain_lock(paths: RepoPaths, wait: bool) -> Iterator[bool]:
    """One drainer at a time per clone (concurrent runs would upload the same blobs); True
    when this process holds it."""

    lock = paths.roar_dir / LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# -- storing a run's files -------------------------------------------------------------------


class Stored(NamedTuple):
    stored: int  # blobs the store holds now (put, or there already)
    not_stored: dict[str, str]  # absolute path -> why its bytes are in no store
    failure: Failure | None  # the store's failure, if it failed


def store_files(
    paths: RepoPaths,
    settings: Mapping[str, config.Value],
    outputs: Mapping[str, FileHash],
    sources: Mapping[str, FileHash],
    warnings: list[str],
) -> Stored:
    """Copy a run's outputs (and, for a team store, the source data it read) into the store.

    Never raises for the store's sake: what could not be stored is queued (with a copy of its
    bytes when one can be kept), `not_stored` says why for each output, and `warnings` gets
    one line naming the store, the cause and the fix. Files above `roar.store.maxBlobSize`
    are recorded by hash only, as before.
    """
    cap = config.parse_size(settings["roar.store.maxblobsize"].value)
    todo: list[tuple[str, FileHash, bool]] = []  # (path, hash, is an output)
    skipped = 0
    for files, is_output in ((outputs, True), (sources, False)):
        for path, h in files.items():
            if h.size > cap:
                skipped += is_output
            else:
                todo.append((path, h, is_output))
    if skipped:
        warnings.append(f"{skipped} output(s) above roar.store.maxBlobSize recorded by hash only")
    if not todo:
        return Stored(0, {}, None)
    url = store_url(paths, settings)
    failure: Failure | None = None
    store: BlobStore | None = None
    try:
        store = open_store(url, settings)
    except (Exception, KeyboardInterrupt) as exc:
        failure = classify(exc, url)
    stored = 0
    not_stored: dict[str, str] = {}
    left: list[tuple[str, FileHash, bool]] = []
    with progress.Progress(
        f"storing {len(todo)} file(s)", total=sum(h.size for _, h, _ in todo)
    ) as shown:
        for path, h, is_output in todo:
            if failure is not None or store is None:
                left.append((path, h, is_output))
                continue
            try:
                if not store.has(h.digest):
                    store.put_file(path, h.digest)
                stored += 1
            except DigestMismatch:  # changed since it was hashed: no bytes hold that hash now
                warnings.append(
                    f"{shown_path(paths, path)} changed after it was hashed: not stored"
                )
                not_stored[path] = "changed after it was hashed"
            except OSError as exc:
                if exc.filename == path:  # the file itself, not the store
                    warnings.append(f"{shown_path(paths, path)} could not be read back: not stored")
                    not_stored[path] = f"could not be read back: {exc.strerror or exc}"
                else:
                    failure = classify(exc, url)
                    left.append((path, h, is_output))
            except (Exception, KeyboardInterrupt) as exc:  # a store failure must not lose the run
                failure = classify(exc, url)
                left.append((path, h, is_output))
            shown.update(h.size)
    if left and failure is not None:
        # The reason goes into the record, which may be pushed: no secret rides along (a
        # URL with a password in it, say), and no essay.
        why = redact_value(f"{url}: {failure.what[:200]}")
        queued = _queue_all(paths, url, left, f"{why}; queued")
        outs = sum(is_output for _, _, is_output in left)
        what = " and ".join(
            part
            for part in (
                f"{outs} output(s)" if outs else "",
                f"{len(left) - outs} input(s)" if len(left) > outs else "",
            )
            if part
        )
        tail = RETRY_HINT if len(queued) == len(left) else _not_queued(len(left) - len(queued))
        warnings.append(f"could not store {what} in {failure.line(url)}; {tail}")
        for path, _, is_output in left:
            if is_output:
                not_stored[path] = f"{why}; queued" if path in queued else f"{why}; not queued"
    return Stored(stored, not_stored, failure)


def _not_queued(n: int) -> str:
    return f"{n} could not even be queued in .git/roar/uploads (is that disk full?)"


def _queue_all(
    paths: RepoPaths, url: str, left: list[tuple[str, FileHash, bool]], reason: str
) -> set[str]:
    """Queue each file (with a copy of its bytes when one can be kept); the paths queued."""
    queued = set()
    now = time.time_ns()
    for path, h, _ in left:
        copy = _keep_copy(paths, url, path, h.digest)
        try:
            _enqueue(paths, Pending(url, h.digest, h.size, path, copy, reason, now))
        except OSError:
            continue
        queued.add(path)
    return queued


def shown_path(paths: RepoPaths, path: str) -> str:
    root = str(paths.root) + "/"
    return path[len(root) :] if path.startswith(root) else path


# -- draining the queue ----------------------------------------------------------------------


class Synced(NamedTuple):
    stored: list[Pending]
    dropped: list[tuple[Pending, str]]  # no good bytes left anywhere to upload, and why
    left: list[Pending]
    failures: dict[str, Failure]  # store URL -> why its entries are left
    busy: bool  # another process was draining: nothing was tried


Progress = Callable[[str, Pending, str], None]  # ("stored" | "dropped" | "left", entry, why)


def sync(
    paths: RepoPaths,
    settings: Mapping[str, config.Value],
    *,
    store: str | None = None,
    wait: bool = True,
    on_entry: Progress | None = None,
) -> Synced:
    """Upload the queued blobs (for one store, when given) until a store fails.

    An entry whose bytes cannot be had any more (no copy, and the file changed or is gone)
    is dropped with its reason; one whose store fails is left, and the rest of that store's
    entries with it (no point in one timeout each)."""
    entries = pending(paths, store)
    if not entries:
        return Synced([], [], [], {}, False)
    with _drain_lock(paths, wait) as held:
        if not held:
            return Synced([], [], entries, {}, True)
        entries = pending(paths, store)  # what another drainer left
        result = Synced([], [], [], {}, False)
        by_store: dict[str, list[Pending]] = {}
        for e in entries:
            by_store.setdefault(e.store, []).append(e)
        for url, group in by_store.items():
            _sync_store(paths, settings, url, group, result, on_entry)
        return result


def _sync_store(
    paths: RepoPaths,
    settings: Mapping[str, config.Value],
    url: str,
    group: list[Pending],
    result: Synced,
    on_entry: Progress | None,
) -> None:
    def note(kind: str, e: Pending, why: str = "") -> None:
        if on_entry is not None:
            on_entry(kind, e, why)

    try:
        target = open_store(url, settings)
    except (Exception, KeyboardInterrupt) as exc:
        target = None
        result.failures[url] = classify(exc, url)
    for e in group:
        if url in result.failures or target is None:
            result.left.append(e)
            note("left", e, result.failures[url].text)
            continue
        try:
            why = _upload(target, e)
        except (Exception, KeyboardInterrupt) as exc:
            failure = classify(exc, url)
            result.failures[url] = failure
            e = e._replace(reason=redact_value(f"{url}: {failure.what[:200]}; queued"))
            result.left.append(e)
            with contextlib.suppress(OSError):
                _enqueue(paths, e)
            note("left", e, failure.text)
            continue
        _dequeue(paths, e)
        if why:
            result.dropped.append((e, why))
            note("dropped", e, why)
        else:
            result.stored.append(e)
            note("stored", e, "")


def _upload(target: BlobStore, e: Pending) -> str:
    """Put one queued blob in `target`: "" when it is there, else why it never can be.
    Store failures raise."""
    copy = BlobStore(e.copy).local_path(e.digest) if e.copy.startswith("file://") else None
    for source in (copy, e.path):
        if source is None:
            continue
        try:
            target.put_file(source, e.digest)  # checked against the digest as it streams
        except DigestMismatch:
            continue
        except OSError as exc:
            if exc.filename != os.fspath(source):
                raise  # the store's failure, not the source's
            continue
        return ""
    if target.has(e.digest):
        return ""
    return (
        f"{e.path} changed or was removed since it was queued, and no intact copy was kept: "
        f"blob {e.digest[:12]} is in no store"
    )


def drain_quietly(
    paths: RepoPaths, settings: Mapping[str, config.Value], url: str, warnings: list[str]
) -> None:
    """Retry what is queued for `url` without waiting for another drainer; one warning line
    for what happened (nothing when the queue is empty)."""
    try:
        result = sync(paths, settings, store=url, wait=False)
    except (Exception, KeyboardInterrupt) as exc:  # the queue is a convenience: never fatal
        warnings.append(f"could not retry queued uploads: {classify(exc, url).text}")
        return
    if result.stored:
        warnings.append(f"uploaded {len(result.stored)} queued blob(s) to {url}")
    warnings.extend(f"dropped from the upload queue: {why}" for _, why in result.dropped)
    failure = result.failures.get(url)
    if failure is not None and result.left:
        warnings.append(
            f"{len(result.left)} queued blob(s) still not in {failure.line(url)}; "
            "'roar store sync' retries"
        )


def retry_before_use(paths: RepoPaths) -> list[str]:
    """For a command about to talk to the configured store (`roar get`, `roar reproduce`):
    retry what is queued for it first; its warnings. Costs one directory listing when the
    queue is empty."""
    if not pending(paths):
        return []
    settings = config.read_all(paths)
    warnings: list[str] = []
    drain_quietly(paths, settings, store_url(paths, settings), warnings)
    return warnings


def mark_not_stored(
    refs: list[FileRef], not_stored: Mapping[str, str], root: Path
) -> list[FileRef]:
    """`refs` (FileRefs of a run) with `not_stored` set from absolute paths' reasons; a folder
    recorded as one artifact says how many of its files were not stored."""
    if not not_stored:
        return refs
    by_path: dict[str, int] = {}
    for i, ref in enumerate(refs):
        full = pathguard.abs_path(ref.path, root)
        by_path[os.path.normpath(full)] = i
    counts: dict[int, list[str]] = {}
    for path, why in not_stored.items():
        here = os.path.normpath(path)
        while True:
            found = by_path.get(here)
            if found is not None:
                counts.setdefault(found, []).append(why)
                break
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    out = list(refs)
    for i, whys in counts.items():
        ref = out[i]
        text = whys[0] if ref.kind != "dir" else f"{len(whys)} file(s): {whys[0]}"
        out[i] = ref._replace(not_stored=text)
    return out
