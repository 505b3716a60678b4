"""The keep ref, `refs/roar/commits` (KEEP_REF): the commits recorded runs used, kept reachable.

The ledger cannot hold a commit (a tree entry cannot make a commit reachable), so KEEP_REF is
a chain of commits with the empty tree whose extra parents are the recorded commits: a run
stays reproducible with its commit after its branch was rebased, deleted or force-pushed
away. It moves by compare-and-swap (`git update-ref REF NEW OLD`), and a fetched one is merged
as a union (both stay reachable). Also the small ref reads it moves by.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from roargit.errors import RoarError
from roargit.git import is_ancestor, run_git
from roargit.ledger import Ledger
from roargit.ledger_commit import jitter
from roargit.repo import RepoPaths

KEEP_REF = "refs/roar/commits"

#: Parents per keep commit (git allows more; a bounded fan-in keeps each object small).
KEEP_FANIN = 100


def rev(paths: RepoPaths, name: str) -> str | None:
    proc = run_git(["rev-parse", "-q", "--verify", f"{name}^{{commit}}"], paths.root, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip() or None


def swap_ref(paths: RepoPaths, ref: str, new: str, old: str | None) -> bool:
    zero = "0" * len(new)
    proc = run_git(["update-ref", ref, new, old or zero], paths.root, check=False)
    return proc.returncode == 0


def _empty_tree(paths: RepoPaths) -> str:
    return (
        run_git(["hash-object", "-t", "tree", "-w", "--stdin"], paths.root, input=b"")
        .stdout.decode()
        .strip()
    )


def keep_commit(paths: RepoPaths, parents: Sequence[str], message: str) -> str:
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


def keep_commits(
    paths: RepoPaths,
    commits: Sequence[str],
    old: str | None,
    ref: str = KEEP_REF,
    message: str = "roar: keep the commits recorded runs used",
) -> str | None:
    """Make `ref` (now at `old`) reach `commits` (compare-and-swap, retried); its tip (None
    when there is nothing to keep)."""
    for _ in range(50):
        todo = unkept_commits(paths, commits, [old] if old else [])
        if not todo:
            return old
        tip = old
        for i in range(0, len(todo), KEEP_FANIN):
            parents = ([tip] if tip else []) + todo[i : i + KEEP_FANIN]
            tip = keep_commit(paths, parents, message)
        assert tip is not None
        if swap_ref(paths, ref, tip, old):
            return tip
        time.sleep(jitter(0.02))
        old = rev(paths, ref)
    raise RoarError(f"could not update {ref}: too many writers")


def merge_keep(paths: RepoPaths, theirs_ref: str) -> bool:
    """Union a fetched KEEP_REF into ours (both stay reachable); True if ours moved."""
    for _ in range(50):
        theirs = rev(paths, theirs_ref)
        if theirs is None:
            return False
        ours = rev(paths, KEEP_REF)
        if ours is not None and (ours == theirs or is_ancestor(paths.root, theirs, ours)):
            return False
        if ours is None or is_ancestor(paths.root, ours, theirs):
            new = theirs
        else:
            new = keep_commit(paths, [ours, theirs], f"roar: merge {theirs_ref}")
        if swap_ref(paths, KEEP_REF, new, ours):
            return True
        time.sleep(jitter(0.02))
    raise RoarError(f"could not update {KEEP_REF}: too many writers")


def keeps(ledger: Ledger, keep: str | None, commits: Sequence[str]) -> bool:
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
