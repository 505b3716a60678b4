"""What a run touched, sorted and hashed: the half of `roar run` that comes after the command.

`sort_accesses` tells noise (system files, interpreters' own files, caches, `.git/`,
`roar.ignore` globs) and package files from the files that matter, and those inside the repo
from the rest; `group_folders` makes a folder the run read or wrote nearly whole one artifact
(folders.py); `hash_settled` hashes what holds still; `store_run_files` sends outputs (and a
team store's source data) to the blob store. capture.py imports this module while the command
runs (trace.run_traced's `while_running`): its imports cost the run nothing then.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from roargit import TYPE_CHECKING, config, folders, progress
from roargit.errors import FileChanged
from roargit.hashing import FileHash, HashCache
from roargit.ledger import Entry, Ledger
from roargit.ledger_layout import manifest_entry
from roargit.packages import packages_for_paths
from roargit.pathguard import abs_path, rel_or_abs
from roargit.records import ArtifactId, FileRef, Unreadable
from roargit.redact import is_secret_path
from roargit.repo import RepoPaths
from roargit.rules import is_startup_file, none_is_noise, system_paths
from roargit.structs import NamedTuple
from roargit.trace_files import KEY_HEX, Accesses, FileAccess, FileGroup, StatKeys

if TYPE_CHECKING:
    from roargit.uploads import Stored


class Sorted(NamedTuple):
    # Absolute paths, in the trace's order (a caller sorts what is left after folders are
    # grouped: 100,000 paths of a grouped folder need no sort).
    inputs: list[str]
    outputs: list[str]
    code_reads: list[str]  # the inputs inside the repo, relative to its root
    executed: set[str]  # those of them the run executed (relative): code, whatever the name
    packages: dict[str, str]
    warnings: list[str]


def sort_accesses(
    files: Mapping[str, FileAccess], paths: RepoPaths, home: str, ignore: Sequence[str]
) -> Sorted:
    root = str(paths.root)
    root_slash = root + "/"
    cut = len(root_slash)
    git_dirs = tuple({str(paths.git_dir), str(paths.common_dir)})
    git_prefixes = tuple(g + "/" for g in git_dirs)
    # A work tree may itself lie inside a git dir (roar reproduce's worktrees under
    # .git/roar/worktrees/): its files are work-tree files, not git's.
    inner = any(root.startswith(g) for g in git_prefixes)
    own_git = root_slash + ".git/"

    # A folder's group of paths that the trace gave one access (trace_files.Accesses) is sorted at
    # once where none of them can be a special case below; the others go path by path.
    items: Iterable[tuple[str, FileAccess]] = files.items()
    every: Iterable[str] = files
    plain: list[FileGroup] = []
    if isinstance(files, Accesses):
        single, by_path = files.single, []
        git_parents = {os.path.dirname(g) for g in git_dirs}
        for g in files.groups:
            if _plain_group(g, root_slash, git_prefixes, git_parents, home, ignore):
                plain.append(g)
            else:
                fields = g.fields
                by_path.extend([(p, FileAccess(p, *fields)) for p in g.paths])
        items = [*single.items(), *by_path]
        every = [p for p, _ in items]
    noise = system_paths(every, home, ignore)
    # a folder's group goes in whole (FolderRuns): folders.choose then counts it at once
    inputs, outputs = folders.FolderRuns(), folders.FolderRuns()
    code_reads: list[str] = []
    executed: set[str] = set()
    warned: list[tuple[int, str]] = []  # (place in the trace, warning)
    isfile = os.path.isfile

    def place(i: int, a: FileAccess) -> None:
        p = a.path
        if a.written or a.created or a.renamed_from:
            if a.regular or isfile(p):  # the trace listed most of them
                outputs.append(p)
        elif a.read or a.executed:
            if not (a.regular or isfile(p)):
                warned.append((i, f"{rel_or_abs(p, root)} was read, then deleted: not recorded"))
            else:
                if p.startswith(root_slash):
                    code_reads.append(p[cut:])  # code or data, once the tree is known
                    if a.executed:
                        executed.add(p[cut:])
                inputs.append(p)

    # One pass over what may be 100,000 paths: each rare case (git's files, start-up files,
    # package candidates) is told by prefix and substring tests before anything costlier, and
    # only package candidates wait for the package lookup.
    # Every interpreter reads its .pth files and editable-install finders at start-up: that is
    # not a use of those distributions, so they are dropped before packages are named.
    startup: set[str] = set()
    candidates: list[tuple[int, FileAccess]] = []
    for i, (p, a) in enumerate(items):
        if a.temporary:
            continue
        if (p.startswith(git_prefixes) or p in git_dirs) and not (
            inner and p.startswith(root_slash) and not p.startswith(own_git)
        ):
            continue
        if (
            p.endswith(".pth")
            or "/_distutils_hack/" in p
            or "/__editable__" in p
            or "/libpython" in p
        ) and is_startup_file(p):
            startup.add(p)
        # Inside the repo only an environment's files (a .venv there) can be package files:
        # the repo's own sources never are (code_roots), so its data files skip the lookup.
        elif not p.startswith(root_slash) or "-packages/" in p or "/bin/" in p or ".egg" in p:
            candidates.append((i, a))
        elif p not in noise:
            # place(i, a) for a path inside the repo, written out: this runs for nearly
            # every path, and a call each measured a third of the loop.
            if a.written or a.created or a.renamed_from:
                if a.regular or isfile(p):
                    outputs.append(p)
            elif a.read or a.executed:
                if a.regular or isfile(p):
                    code_reads.append(p[cut:])
                    inputs.append(p)
                    if a.executed:
                        executed.add(p[cut:])
                else:
                    place(i, a)  # the warning
    for g in plain:  # regular files inside the repo, none special: as the loop above sorts them
        _read, written, created = g.fields[:3]
        if written or created:
            outputs.extend_run(g.folder, g.paths)
        elif _read:
            inputs.extend_run(g.folder, g.paths)
            rel = g.folder[cut:] + "/"
            code_reads.extend([rel + n for n in _names(g)])
    packages, package_files = packages_for_paths([a.path for _, a in candidates], code_roots=[root])
    for i, a in candidates:
        if a.path not in package_files and a.path not in noise:
            place(i, a)
    warnings = [w for _, w in sorted(warned)]
    return Sorted(inputs, outputs, code_reads, executed, packages, warnings)


#: Substrings that make a path a case of its own in `sort_accesses` (git's, a start-up file, a
#: package candidate). A group's paths are its folder and names, and no name holds "/": a part
#: holding "/" anywhere but at its start lies in the folder (the "/" after it included), one
#: starting with "/" and none after is one in the folder or the start of a name, and one
#: without "/" lies in the folder or in a name. So each is searched in the folder and "/"
#: once, and those that can reach into a name in "\0NAME\0NAME…\0" too.
_SPECIAL_PARTS = (
    "/_distutils_hack/", "/__editable__", "/libpython", ".pth\0", "-packages/", "/bin/", ".egg",
)  # fmt: skip
_SPECIAL_NAME_PARTS = ("\0__editable__", "\0libpython", ".pth\0", ".egg")


def _names(g: FileGroup) -> Sequence[str]:
    """The last components of `g`'s paths, in order."""
    if len(g.names) == len(g.paths):
        return g.names
    start = len(g.folder) + 1
    return [p[start:] for p in g.paths]


def _plain_group(
    g: FileGroup,
    root_slash: str,
    git_prefixes: tuple[str, ...],
    git_parents: set[str],
    home: str,
    ignore: Sequence[str],
) -> bool:
    """Whether every path of `g` is a regular file inside the repo that `sort_accesses` would
    take as data, by tests made on the folder, the names and the joined paths once."""
    if not g.fields[8] or g.fields[4] or ignore:  # not regular, executed; globs match per path
        return False
    folder_slash = g.folder + "/"
    if not folder_slash.startswith(root_slash) or folder_slash.startswith(git_prefixes):
        return False
    if g.folder in git_parents:
        return False  # a path of the group might be a git dir itself
    if any(s in folder_slash for s in _SPECIAL_PARTS):
        return False
    names = "\0" + "\0".join(_names(g)) + "\0"
    if any(s in names for s in _SPECIAL_NAME_PARTS):
        return False
    return none_is_noise(g.folder, "\0".join(g.paths) + "\0", home)


def hash_settled(
    cache: HashCache,
    paths: list[str],
    warnings: list[str],
    keys: dict[str, bytes] | None = None,
    errors: dict[str, OSError] | None = None,
) -> dict[str, FileHash]:
    """Hashes of the files that hold still; one still being written (by a process the run
    left behind, say) is left out with a warning rather than losing the whole record.
    `keys` and `errors` (files that could not be read) are filled as `HashCache.hash_many`
    fills them."""
    with progress.Progress(f"hashing {len(paths)} file(s)", unit="file"):
        try:
            return cache.hash_many(paths, missing_ok=True, keys=keys, errors=errors)
        except FileChanged as exc:
            moving = set(exc.paths)
            warnings.extend(f"{p} kept changing while hashed: not recorded" for p in exc.paths)
            rest = [p for p in paths if p not in moving]
            return cache.hash_many(rest, missing_ok=True, keys=keys, errors=errors)


def unreadable_files(
    inputs: Mapping[str, OSError],
    outputs: Mapping[str, OSError],
    root: str,
    warnings: list[str],
) -> tuple[Unreadable, ...]:
    """The files the run read or wrote that could not be read back: recorded by path, size
    (-1 when not even that could be had) and why, never a reason to lose the run."""
    out = []
    for access, failed in (("input", inputs), ("output", outputs)):
        for p, exc in failed.items():
            try:
                size = os.stat(p).st_size
            except OSError:
                size = -1
            why = (exc.strerror or str(exc)).lower()
            rel = rel_or_abs(p, root)
            out.append(Unreadable(rel, access, size, why))
            warnings.append(f"{rel} could not be read ({why}): recorded without its hash")
    return tuple(sorted(out))


def file_refs(abs_paths: list[str], hashes: Mapping[str, FileHash], root: str) -> list[FileRef]:
    return [
        FileRef(rel_or_abs(p, root), ArtifactId(hashes[p].digest), hashes[p].size)
        for p in abs_paths
        if p in hashes
    ]


def group_folders(
    abs_paths: list[str],
    cache: HashCache,
    root: str,
    never: set[str],
    ledger: Ledger,
    known: folders.FolderCache | None = None,
    failed: dict[str, OSError] | None = None,
    stat_keys: Mapping[str, bytes] | None = None,
    leaves: Mapping[str, list[str]] | None = None,
) -> tuple[list[str], list[FileRef], list[Entry], dict[str, FileHash]]:
    """Replace the files of folders read/written nearly whole by one folder artifact each.

    With `known` (for folders the run read), a folder whose files' stat data are as they were
    when its manifest was last made reuses that manifest without a per-file lookup; the stat
    data are the tracer's (`Trace.stat_keys`) where it took them. Where the tracer's keys come
    grouped by folder (trace_files.StatKeys) and none of the folder's folders moved either, it is
    not even listed (folders.unchanged_members). `leaves`: see folders.choose_folders."""
    prove = None
    if known is not None and isinstance(stat_keys, StatKeys) and stat_keys.groups:
        keyed = _keyed_leaves(stat_keys)

        def prove(folder: str) -> tuple[list[str], folders.FolderState] | None:
            assert known is not None
            state = known.get(folder)
            if state is None or not ledger.has_manifest(state.manifest):
                return None
            members = folders.unchanged_members(folder, state, keyed)
            return None if members is None else (members, state)

    # Before the walk: a folder's stat data taken in it then count as taken after `began`
    # (FolderCache.put's racy rule), as the files' keys taken by the hashing do.
    began = folders.now_ns()
    chosen = folders.choose(abs_paths, never, leaves, prove)
    if not chosen:
        return abs_paths, [], [], {}
    refs, entries = [], []
    grouped: set[str] = set()
    # The folders of the folders proved unchanged: every regular file directly in one is a
    # member (folders.unchanged_members), so a run's path there is taken without a lookup.
    proved: set[str] = set()
    stats: dict[str, tuple[str, int]] = {}
    for folder, c in list(chosen.items()):
        state = c.proved or (known.get(folder) if known is not None else None)
        if state is None:
            continue  # nothing to compare: its stat digest comes from the hashing below
        if c.proved is None:
            seen = (
                folders.stat_digest_of_hex(folder, c.members, stat_keys)
                if stat_keys
                else folders.stat_digest(folder, c.members)
            )
            if seen is None:
                continue
            stats[folder] = seen
            if state.stat_digest != seen[0] or not ledger.has_manifest(state.manifest):
                continue
            if c.dirs is not None and known is not None:
                # The files are as remembered (the walk listed every folder): what is kept of
                # the folders is brought up to date, so that the next run needs no listing.
                tree, dirs, newest = folders.tree_state(c.dirs)
                if (tree, dirs) != (state.tree, state.dirs):
                    fresh = state._replace(tree=tree, dirs=dirs)
                    known.put(folder, fresh, max(newest, seen[1]), began)
        rel = rel_or_abs(folder, root) + "/"
        refs.append(FileRef(rel, ArtifactId(state.manifest), state.size, "dir"))
        if c.proved is not None:
            proved.update(f"{folder}/{d}" if d else folder for d in state.dirs)
        else:
            grouped.update(c.members)
        del chosen[folder]
    members = [m for c in chosen.values() for m in c.members]
    keys: dict[str, bytes] = {}
    hashes = hash_settled(cache, members, [], keys, failed) if members else {}
    for folder, c in chosen.items():
        files = c.members
        digest, data, size, count = folders.manifest_from_hashes(folder, files, hashes)
        if not ledger.has_manifest(digest):
            entries.append(manifest_entry(digest, data))
        refs.append(FileRef(rel_or_abs(folder, root) + "/", ArtifactId(digest), size, "dir"))
        grouped.update(files)
        if known is not None and count == len(files):
            # The stat each digest was made against (consistent with the bytes hashed); a
            # first run so needs no lstat pass of its own.
            seen = folders.stat_digest_of_keys(folder, files, keys) or stats.get(folder)
            if seen is not None:
                stat, newest = seen
                tree, dirs, dirs_newest = (
                    folders.tree_state(c.dirs) if c.dirs is not None else ("", (), 0)
                )
                state = folders.FolderState(stat, digest, size, tree, dirs)
                known.put(folder, state, max(newest, dirs_newest), began)
    return _outside(abs_paths, grouped, proved), refs, entries, hashes


def _outside(files: list[str], grouped: set[str], within: set[str]) -> list[str]:
    """`files` but those in `grouped` and those directly in a folder of `within`; a run of
    FolderRuns in such a folder is left out at once."""
    out: list[str] = []
    at = 0
    for start, folder, paths in files.runs if isinstance(files, folders.FolderRuns) else ():
        end = start + len(paths)
        if folder not in within:
            continue
        if start < at or files[start:end] != paths:  # changed since it was made
            out, at = [], 0
            break
        out.extend([p for p in files[at:start] if _kept(p, grouped, within)])
        at = end
    out.extend([p for p in files[at:] if _kept(p, grouped, within)])
    return out


def _kept(path: str, grouped: set[str], within: set[str]) -> bool:
    return path not in grouped and (not within or path.rpartition("/")[0] not in within)


def _keyed_leaves(stat_keys: StatKeys) -> Callable[[str], folders.Leaf | None]:
    """folder -> its regular files that the trace took STAT keys of, as a folders.Leaf: a
    `files` record as it stands where it holds them all (its names come in byte order)."""
    by_folder: dict[str, list[FileGroup]] = {}
    for g in stat_keys.groups:
        by_folder.setdefault(g.folder, []).append(g)
    single: dict[str, list[str]] | None = None

    def leaf(folder: str) -> folders.Leaf | None:
        nonlocal single
        if single is None:
            single = {}
            for p in stat_keys.single:
                single.setdefault(p.rpartition("/")[0], []).append(p)
        groups, alone = by_folder.get(folder, []), single.get(folder, [])
        if len(groups) == 1 and not alone:
            g = groups[0]
            return folders.Leaf(g.paths, folders.fsencode("/".join(_names(g))), g.keys)
        if not groups and not alone:
            return None
        # Several records (paths with other access bits, or odd names): merged in name order.
        w = KEY_HEX
        rows = [(p, g.keys[j * w : (j + 1) * w]) for g in groups for j, p in enumerate(g.paths)]
        rows += [(p, stat_keys.single[p]) for p in alone]
        cut = len(folder) + 1
        rows.sort(key=lambda r: r[0][cut:].encode("utf-8", "surrogateescape"))
        names = b"/".join([r[0][cut:].encode("utf-8", "surrogateescape") for r in rows])
        return folders.Leaf([r[0] for r in rows], names, b"".join([r[1] for r in rows]))

    return leaf


def leaves_of(files: Mapping[str, FileAccess]) -> dict[str, list[str]]:
    """Folder -> the regular files in it that the trace grouped (trace_files.Accesses), for
    folders.choose_folders."""
    out: dict[str, list[str]] = {}
    for g in files.groups if isinstance(files, Accesses) else ():
        if g.fields[8]:  # regular when the run ended
            out[g.folder] = out[g.folder] + g.paths if g.folder in out else g.paths
    return out


def store_run_files(
    paths: RepoPaths,
    settings: Mapping[str, config.Value],
    ledger: Ledger,
    out_paths: list[str],
    hashes: Mapping[str, FileHash],
    folder_hashes: Mapping[str, FileHash],
    inputs: list[FileRef],
    team_store: bool,
    warnings: list[str],
) -> Stored:
    """Outputs go to the store; with a team store, source data read from the work tree goes
    there too, so that a clone can reproduce from it (docs/reproduce.md). The local default
    store does not copy sources: they are already on this disk."""
    outputs = {p: hashes[p] for p in out_paths if p in hashes}
    outputs.update(folder_hashes)
    sources = {}
    if team_store:
        for f in inputs:
            if f.path.startswith("/") or is_secret_path(f.path):  # .env & co: hash only
                continue
            if not ledger.producers(f.hash):
                path = abs_path(f.path, paths.root)
                if path in hashes:
                    sources[path] = hashes[path]
    from roargit import uploads  # only a run with something to store gets here (see above)

    return uploads.store_files(paths, settings, outputs, sources, warnings)
