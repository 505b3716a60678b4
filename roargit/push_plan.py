"""What a push would send, read from the ledger: the records and code trees the remote's
ledger lacks, the dirty-tree snapshots among them, what in them a person should look at before
they leave the machine (`roar push --dry-run` lists it), and their size on disk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from roargit.git import run_git
from roargit.gitobjects import tree_entries
from roargit.keep_ref import rev
from roargit.ledger import Ledger
from roargit.records import RunRecord
from roargit.redact import MARK, is_secret_path
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

TREE_MODE = 0o040000


def added_paths(
    paths: RepoPaths, base: str | None, tip: str, tops: str | Sequence[str]
) -> list[str]:
    """Paths of the entries under the `tops` folders of ledger commit `tip` that `base`
    lacks (diff-tree reads only the subtrees that differ: ten new records cost ten lookups,
    not the ledger)."""
    specs = [f"{t}/" for t in ((tops,) if isinstance(tops, str) else tops)]
    if base is None:
        out = run_git(["ls-tree", "-r", "-z", "--name-only", tip, "--", *specs], paths.root)
    else:
        out = run_git(
            ["diff-tree", "-r", "-z", "--name-only", "--diff-filter=A", base, tip, "--", *specs],
            paths.root,
        )
    return [p for p in os.fsdecode(out.stdout).split("\0") if p]


def added_entries(reader: Any, base: str | None, tip: str, tops: Sequence[str]) -> list[str] | None:
    """`added_paths` read through an open `cat-file` (ObjectReader): the two commits' trees
    are walked level by level where they differ, one pipelined read a level, so ten new
    records cost a handful of reads and no process. None when an object cannot be read (the
    caller asks `diff-tree`)."""
    width = len(tip) // 2
    pairs: list[tuple[str, str | None, str | None]] = [  # (path, our tree, their tree)
        (t, f"{tip}:{t}", f"{base}:{t}" if base else None) for t in tops
    ]
    found: list[str] = []
    while pairs:
        names = [n for _p, ours, theirs in pairs for n in (ours, theirs) if n]
        objs = iter(reader.read_many(names))
        step: list[tuple[str, str | None, str | None]] = []
        for path, ours, theirs in pairs:
            mine = next(objs) if ours else None
            other = next(objs) if theirs else None
            if ours and (mine is None or mine.type != "tree"):
                if path in tops and mine is None:
                    continue  # no such folder in this ledger
                return None
            if mine is None:
                continue
            old = {}
            if other is not None and other.type == "tree":
                old = {name: oid for _m, name, oid in tree_entries(other.data, width)}
            for mode, name, oid in tree_entries(mine.data, width):
                if old.get(name) == oid:
                    continue
                if mode == TREE_MODE:
                    was = old.get(name)
                    step.append((f"{path}/{name}", oid, was))
                elif name not in old:
                    found.append(f"{path}/{name}")
        pairs = step
    return found


def added_code_trees(paths: RepoPaths, base: str | None, tip: str) -> list[str]:
    if base is None:
        out = run_git(["ls-tree", "-z", "--name-only", f"{tip}:code"], paths.root, check=False)
        return [p for p in os.fsdecode(out.stdout).split("\0") if p]
    out = run_git(
        ["diff-tree", "-z", "--name-only", "--diff-filter=A", f"{base}:code", f"{tip}:code"],
        paths.root,
        check=False,
    )
    if out.returncode != 0:  # no code/ on one side
        return added_code_trees(paths, None, tip) if _has_code(paths, tip) else []
    return [p for p in os.fsdecode(out.stdout).split("\0") if p]


def _has_code(paths: RepoPaths, tip: str) -> bool:
    return run_git(["cat-file", "-e", f"{tip}:code"], paths.root, check=False).returncode == 0


def new_runs(
    paths: RepoPaths, ledger: Ledger, base: str | None, tip: str
) -> list[tuple[str, RunRecord]]:
    """The runs in ledger commit `tip` that `base` lacks, with their records."""
    return read_runs(ledger, added_paths(paths, base, tip, "runs"))


def read_runs(ledger: Ledger, run_paths: Sequence[str]) -> list[tuple[str, RunRecord]]:
    """The records at these `runs/…` paths (one that cannot be read is left out: it is not
    this command's to judge; `roar fsck` lists it)."""
    ids = [p.rsplit("/", 1)[-1] for p in run_paths]
    found = ledger.runs_or_errors(ids)
    return [(rid, rec) for rid, rec in zip(ids, found, strict=True) if isinstance(rec, RunRecord)]


class Snapshot(NamedTuple):
    """A dirty-tree code snapshot that would go: the files it holds that its commit lacks
    (untracked at run time) or holds otherwise (modified)."""

    tree: str
    commit: str | None
    added: list[tuple[str, int]]  # (path, size)
    modified: list[tuple[str, int]]

    @property
    def size(self) -> int:
        return sum(s for _p, s in self.added) + sum(s for _p, s in self.modified)


class Flag(NamedTuple):
    """Something in what would leave the machine that a person should look at."""

    kind: str  # hostname, user, env, redacted, untracked-code, secret-file, path
    detail: str
    runs: int  # how many of the records carry it


def dirty_snapshots(
    paths: RepoPaths, trees: Sequence[str], runs: Sequence[tuple[str, RunRecord]]
) -> list[Snapshot]:
    by_tree = {rec.code.tree: rec for _r, rec in runs if rec.code.tree and rec.code.dirty}
    out = []
    for tree in trees:
        rec = by_tree.get(tree)
        if rec is None:
            continue
        base = f"{rec.code.commit}^{{tree}}" if rec.code.commit else None
        if base is None or rev(paths, rec.code.commit or "") is None:
            listing = run_git(
                ["ls-tree", "-r", "-z", "--format=%(objectname) A\t%(path)", tree],
                paths.root,
                check=False,
            )
            rows = [r.split(" ", 1) for r in os.fsdecode(listing.stdout).split("\0") if r]
        else:
            diff = run_git(
                ["diff-tree", "-r", "-z", "--no-renames", base, tree], paths.root, check=False
            )
            fields = os.fsdecode(diff.stdout).split("\0")
            rows = []
            for head, path in zip(fields[0::2], fields[1::2], strict=False):
                parts = head.split()
                if len(parts) >= 5 and parts[4] in ("A", "M", "T"):
                    rows.append([parts[3], f"{parts[4]}\t{path}"])
        sizes = _sizes(paths, [r[0] for r in rows])
        added: list[tuple[str, int]] = []
        modified: list[tuple[str, int]] = []
        for oid, rest in rows:
            status, _, path = rest.partition("\t")
            (added if status == "A" else modified).append((path, sizes.get(oid, 0)))
        out.append(Snapshot(tree, rec.code.commit, added, modified))
    return out


def _sizes(paths: RepoPaths, oids: Sequence[str]) -> dict[str, int]:
    if not oids:
        return {}
    out = run_git(
        ["cat-file", "--batch-check=%(objectname) %(objectsize)"],
        paths.root,
        input="".join(o + "\n" for o in oids).encode(),
        check=False,
    ).stdout.decode()
    sizes = {}
    for line in out.splitlines():
        oid, _, size = line.partition(" ")
        if size.isdigit():
            sizes[oid] = int(size)
    return sizes


def sensitive(runs: Sequence[tuple[str, RunRecord]], snapshots: Sequence[Snapshot]) -> list[Flag]:
    """What in these records and snapshots may say more than the user means to share:
    hostnames, user names, environment values redaction kept, redacted commands (a secret
    was there), absolute paths (they name this machine's folders), untracked code files in
    snapshots, and files whose names look secret."""
    counts: dict[tuple[str, str], int] = {}

    def note(kind: str, detail: str) -> None:
        counts[(kind, detail)] = counts.get((kind, detail), 0) + 1

    for _rid, rec in runs:
        env = rec.environment
        for key in ("hostname", "user"):
            value = env.get(key)
            if isinstance(value, str) and value:
                note(key, value)
        variables = env.get("env_vars")
        if isinstance(variables, Mapping):
            for name, value in variables.items():
                if isinstance(value, str) and value != MARK:
                    note("env", f"{name}={value}")
        if any(MARK in word for word in rec.argv):
            note("redacted", "a command had secrets redacted (the rest of it goes)")
        for f in (*rec.inputs, *rec.outputs):
            if f.path.startswith("/"):
                note("path", f.path)
            if is_secret_path(f.path):
                note("secret-file", f"{f.path} (recorded by hash; its bytes are not uploaded)")
    for snap in snapshots:
        for path, size in snap.added:
            note("untracked-code", f"{path} ({size} B, in snapshot {snap.tree[:12]})")
        for path, _size in (*snap.added, *snap.modified):
            if is_secret_path(path):
                note("secret-file", f"{path} (in snapshot {snap.tree[:12]})")
    order = ("secret-file", "untracked-code", "env", "redacted", "hostname", "user", "path")
    flags = [Flag(k, d, n) for (k, d), n in counts.items()]
    flags.sort(key=lambda f: (order.index(f.kind) if f.kind in order else 99, f.detail))
    return flags


def disk_usage(paths: RepoPaths, tips: Sequence[str], bases: Sequence[str]) -> int:
    proc = run_git(
        ["rev-list", "--objects", "--disk-usage", "--stdin"],
        paths.root,
        input="".join(t + "\n" for t in tips).encode() + "".join(f"^{b}\n" for b in bases).encode(),
        check=False,
    )
    try:
        return int(proc.stdout.decode().strip() or 0)
    except ValueError:
        return 0
