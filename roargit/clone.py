"""This clone's roargit state: `.git/roar/`, the clone's id, and the fetch refspecs that make
an ordinary `git fetch` bring other clones' ledgers along."""

from __future__ import annotations

import os
from typing import NamedTuple

from roargit.git import run_git
from roargit.ledger import LEDGER_REF, REMOTES_PREFIX
from roargit.repo import RepoPaths, ensure_roar_dir

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
    value = os.urandom(8).hex()  # not `secrets`: its import costs ~1.5 ms a run
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


def fetch_refspec(remote: str) -> str:
    return f"+{LEDGER_REF}:{REMOTES_PREFIX}{remote}/ledger"


def configure_remotes(paths: RepoPaths) -> tuple[str, ...]:
    """Add the ledger fetch refspec to every remote that lacks it; returns those changed."""
    remotes = run_git(["remote"], paths.root).stdout.decode().split()
    changed = []
    for remote in remotes:
        spec = fetch_refspec(remote)
        have = (
            run_git(["config", "--get-all", f"remote.{remote}.fetch"], paths.root, check=False)
            .stdout.decode()
            .splitlines()
        )
        if spec not in have:
            run_git(["config", "--add", f"remote.{remote}.fetch", spec], paths.root)
            changed.append(remote)
    return tuple(changed)


def init_clone(paths: RepoPaths) -> InitResult:
    """Prepare `.git/roar/`; idempotent; writes nothing in the work tree."""
    created = not paths.roar_dir.exists()
    roar_dir = ensure_roar_dir(paths)
    clone_id(paths)
    return InitResult(str(roar_dir), created, configure_remotes(paths))
