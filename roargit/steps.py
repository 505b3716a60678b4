"""Editing the session: pop the last step, start a new session."""

from __future__ import annotations

import os

from roargit import config, session
from roargit.blobstore import BlobStore
from roargit.clone import clone_id
from roargit.errors import RoarError
from roargit.git import run_git
from roargit.hashing import HashCache
from roargit.ledger import Ledger
from roargit.pathguard import abs_path
from roargit.records import RunId, SessionId
from roargit.repo import RepoPaths, ensure_roar_dir
from roargit.structs import NamedTuple
from roargit.uploads import store_url


class EmptySession(RoarError):
    def __init__(self) -> None:
        super().__init__("the session has no steps to pop")


class PopResult(NamedTuple):
    label: str
    run_id: RunId
    removed: tuple[str, ...]  # untracked outputs deleted (their bytes are in the blob store)
    kept: tuple[str, ...]  # outputs left in place: tracked, changed since, or not stored


def pop_step(paths: RepoPaths) -> PopResult:
    """Drop the highest-numbered step. Its outputs are deleted only when they are untracked,
    still hold the recorded bytes, and those bytes are in the local blob store."""

    roar_dir = ensure_roar_dir(paths)
    ledger = Ledger(paths)
    state = session.read_state(roar_dir)
    view = session.load_view(ledger, state.session_id, state.popped)
    runs = [s for s in view.steps if s.kind == "run"] or list(view.steps)
    if not runs:
        raise EmptySession()
    last = runs[-1]
    tracked = set(
        os.fsdecode(p) for p in run_git(["ls-files", "-z"], paths.root).stdout.split(b"\0") if p
    )
    store = BlobStore(store_url(paths, config.read_all(paths)))
    cache = HashCache(roar_dir)
    removed, kept = [], []
    for out in last.run.outputs:
        path = abs_path(out.path, paths.root)
        if out.kind != "file" or out.path in tracked or not os.path.isfile(path):
            kept.append(out.path)
            continue
        current = cache.hash_many([path], missing_ok=True).get(path)
        if current is None or current.digest != out.hash or not store.has(out.hash):
            kept.append(out.path)
            continue
        os.unlink(path)
        removed.append(out.path)
    popped = {last.run_id, *last.superseded}
    session.write_state(
        roar_dir, session.LocalState(state.session_id, state.popped | frozenset(popped))
    )
    return PopResult(last.label, last.run_id, tuple(removed), tuple(kept))


def reset_session(paths: RepoPaths) -> SessionId:
    roar_dir = ensure_roar_dir(paths)
    ledger = Ledger(paths)
    state = session.read_state(roar_dir)
    return session.new_session(ledger, roar_dir, clone_id(paths), parent=state.session_id)
