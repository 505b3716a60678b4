"""Merging fetched ledgers into ours: a union of trees (ledger_check takes only well-formed
entries of the other side), written as a merge commit or a fast-forward, and the remote
ledgers under `refs/roar/remotes/` merged in turn. A fetched commit is read from its raw text
and written as raw text: libgit2 refuses a whole commit over a malformed signature, and a
fetched one is the other clone's to malform.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from roargit import ledger_check
from roargit.errors import RecordCorrupt, RoarError
from roargit.git import is_ancestor, run_git
from roargit.ledger import REMOTES_PREFIX, Ledger, load_pygit2
from roargit.ledger_commit import MAX_ATTEMPTS, LedgerBusy, jitter
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    import pygit2

    from roargit.ledger_check import Rejected


class Merged(NamedTuple):
    tip: str  # the ledger's new tip
    rejected: list[Rejected]  # entries of the other side left out
    added: list[str]  # ids of the records taken from it


class Synced(NamedTuple):
    """One remote ledger merged (or not: `error`) by `sync_remotes`."""

    ref: str
    remote: str
    tip: str | None
    rejected: tuple[Rejected, ...]
    error: str = ""


def merge(
    ledger: Ledger, other: str, message: str = "merge", source: str | None = None
) -> Merged | None:
    """Union another ledger commit (fetched: untrusted) into ours. Every local record stays;
    of the other side only well-formed entries are taken (ledger_check). The result is a
    merge commit with both parents, or a fast-forward when the other side holds all of ours
    and nothing of it was refused. None if `other` is merged already."""
    paths = ledger.paths
    for _attempt in range(MAX_ATTEMPTS):
        old = ledger.tip()
        if old == other or (old is not None and is_ancestor(paths.git_dir, other, old)):
            return None
        repo = ledger.repo
        theirs = repo[_root_of(repo, other)]
        if not isinstance(theirs, load_pygit2().Tree):
            raise RecordCorrupt(f"ledger commit {other[:12]}", "its tree is not a tree")
        ours = None if old is None else repo[_root_of(repo, old)]
        found = ledger_check.union(repo, ours, theirs, source)
        tree = found.tree if found.tree is not None else str(repo.TreeBuilder().write())
        if tree == str(theirs.id) and (old is None or is_ancestor(paths.git_dir, old, other)):
            new = other  # a fast-forward: theirs holds every local entry, all of it right
        else:
            new = _write_merge(repo, tree, [other] if old is None else [old, other], message)
        if ledger.swap(old, new, message):
            ledger.pin(new)
            return Merged(new, found.rejected, found.added)
        time.sleep(jitter(0.01))
    raise LedgerBusy(ledger.ref, MAX_ATTEMPTS)


def _root_of(repo: pygit2.Repository, commit: str) -> str:
    """The tree of a commit, read from its raw text: libgit2 refuses a whole commit over
    a malformed signature, and a fetched one is the other clone's to malform."""
    kind, data = repo.odb.read(commit)
    if kind != 1 or not data.startswith(b"tree "):  # GIT_OBJECT_COMMIT
        raise RecordCorrupt(f"ledger commit {commit[:12]}", "is not a commit")
    return data[5 : data.index(b"\n")].decode()


def _write_merge(repo: pygit2.Repository, tree: str, parents: list[str], message: str) -> str:
    """A merge commit, written as raw text (libgit2's writer would parse the parents)."""
    who = b"roar <roar@localhost> %d +0000" % int(time.time())
    text = b"tree %s\n" % tree.encode()
    text += b"".join(b"parent %s\n" % p.encode() for p in parents)
    text += b"author %s\ncommitter %s\n\n%s" % (who, who, message.encode())
    return str(repo.odb.write(1, text))


def remote_refs(paths: RepoPaths) -> list[str]:
    """The fetched remote ledgers' refs."""
    out = run_git(
        ["for-each-ref", "--format=%(refname)", REMOTES_PREFIX], paths.git_dir
    ).stdout.decode()
    return sorted(r for r in out.split() if r.endswith("/ledger"))


def sync_remotes(ledger: Ledger) -> list[Synced]:
    """Merge every fetched remote ledger not merged yet. Entries left out are quarantined
    (ledger_check), records taken are noted as that remote's; a remote whose ledger cannot
    be merged at all is reported in `error`, and the others are still merged."""
    done = []
    for ref in remote_refs(ledger.paths):
        remote = remote_name(ref)
        try:
            tip = ledger.tip(ref)
            merged = None if tip is None else merge(ledger, tip, f"merge {ref}", remote)
        except (RoarError, ValueError, KeyError, OSError, load_pygit2().GitError) as exc:
            done.append(Synced(ref, remote, None, (), f"{type(exc).__name__}: {exc}"))
            continue
        if merged is None:
            continue
        roar_dir = ledger.paths.roar_dir
        ledger_check.quarantine(roar_dir, remote, merged.rejected, str(tip))
        ledger_check.note_origins(roar_dir, remote, merged.added)
        ledger.noted_origins(remote, merged.added)
        done.append(Synced(ref, remote, merged.tip, tuple(merged.rejected)))
    return done


def remote_name(ref: str) -> str:
    """'refs/roar/remotes/origin/ledger' -> 'origin'."""
    return ref[len(REMOTES_PREFIX) : -len("/ledger")]
