"""This clone's roargit state: `.git/roar/`, the clone's id, and the fetch refspecs that make
an ordinary `git fetch` bring other clones' ledgers along."""

from __future__ import annotations

import os

from roargit.git import run_git
from roargit.ledger import REMOTES_PREFIX
from roargit.repo import RepoPaths, ensure_roar_dir
from roargit.structs import NamedTuple

CLONE_ID_FILE = "clone-id"


class InitResult(NamedTuple):
    roar_dir: str
    created: bool
    remotes_configured: tuple[str, ...]


def clone_id(paths: RepoPaths) -> str:
    """A random id naming this clone, made once (sessions from different clones never clash)."""
    roar_dir = ensure_roar_dir(paths)
    f = roar_dir / CLONE_ID_FILE
    try:
        return f.read_text().strip()
    except FileNotFoundError:
        pass
    value = os.urandom(8).hex()  # not `secrets`: its import would cost every run
    tmp = f.with_suffix(f".{value}.tmp")
    tmp.write_text(value + "\n")
    try:
        # link() fails if another process won the race; then theirs is the id.
        f.hardlink_to(tmp)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return f.read_text().strip()


def fetch_refspecs(remote: str) -> tuple[str, ...]:
    """What a fetch of `remote` maps for roargit: its `refs/roar/*` into our
    `refs/roar/remotes/<remote>/`, except what is itself a copy or scratch there (negative
    refspecs, git 2.29). A glob, because a refspec naming one ref exactly fails the whole
    `git fetch` while the remote lacks that ref (before anyone pushed lineage there)."""
    return (
        f"+refs/roar/*:{REMOTES_PREFIX}{remote}/*",
        f"^{REMOTES_PREFIX}*",
        "^refs/roar/tmp/*",
    )


def configure_remote(paths: RepoPaths, remote: str, have: set[str] | None = None) -> bool:
    """Add the refspecs to `remote` where missing (`have`: its fetch refspecs, when the caller
    read them already); True when something was added. Fetch refspecs only: what `git push`
    sends stays as the user set it."""
    key = f"remote.{remote}.fetch"
    if have is None:
        have = set(
            run_git(["config", "--get-all", key], paths.root, check=False)
            .stdout.decode(errors="replace")
            .splitlines()
        )
    added = False
    for spec in fetch_refspecs(remote):
        if spec not in have:
            run_git(["config", "--add", key, spec], paths.root)
            added = True
    return added


def configure_remotes(paths: RepoPaths) -> tuple[str, ...]:
    """Configure every remote (see configure_remote); returns those changed."""
    remotes = run_git(["remote"], paths.root).stdout.decode().split()
    return tuple(r for r in remotes if configure_remote(paths, r))


def init_clone(paths: RepoPaths) -> InitResult:
    """Prepare `.git/roar/`; idempotent; writes nothing in the work tree."""
    created = not paths.roar_dir.exists()
    roar_dir = ensure_roar_dir(paths)
    clone_id(paths)
    return InitResult(str(roar_dir), created, configure_remotes(paths))
