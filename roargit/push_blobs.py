"""The bytes a push sends to the team store: every blob the new records name (a folder
artifact stands for the files its manifest lists) that the store lacks, from the local store or
from the work tree when the file there still hashes to the recorded digest, never a
secret-looking file or one past `roar.store.maxBlobSize`; and which ledger commit's blobs were
all offered to which store (`.git/roar/share.json`), so that the next push starts there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from roargit import uploads
from roargit.blobstore import BlobStore
from roargit.errors import RoarError
from roargit.folders import decode_manifest
from roargit.hashing import HashCache
from roargit.ledger import Ledger
from roargit.records import RunRecord
from roargit.redact import is_secret_path
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

#: Uploads in flight at once: a remote store is bound by round trips, a local one by fsync.
UPLOAD_THREADS = 8

#: A local store is asked and written from one thread up to this many blobs: below it,
#: starting threads costs more than the fsyncs they would overlap.
LOCAL_THREADS_AT = 64

STATE_FILE = "share.json"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


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


def note_stored(paths: RepoPaths, store_url: str, tip: str) -> None:
    state = _read_state(paths)
    stored = state.get("stored")
    if not isinstance(stored, dict):
        stored = state["stored"] = {}
    stored[store_url] = tip
    f = _state_path(paths)
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, f)


def team_store(paths: RepoPaths, settings: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """(the team store, the local store), or None when no team store is configured. The
    store's URL is spelled as a run queues its failed uploads (uploads.store_url), so that
    push finds that queue."""
    url = uploads.store_url(paths, settings)
    local = uploads.default_store_url(paths)
    if url.rstrip("/") == local.rstrip("/"):
        return None
    return uploads.open_store(url, settings), BlobStore(local)
