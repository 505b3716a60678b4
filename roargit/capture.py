"""`roar run`: trace a command, sort what it touched, and record the run.

What a run touched is sorted into:
- code inputs: read files that are part of the code tree (HEAD's, or the dirty snapshot),
  kept with their git blob ids; one the ledger already knows as an artifact is an input too;
- packages: files of installed distributions, kept as {name: version};
- noise: system files, interpreters' own files, caches, `.git/` and `roar.ignore` globs;
- artifacts: everything else read (inputs) or written (outputs), inside the repo or not.
  A folder the run read or wrote most of becomes one artifact (see folders.py).
Outputs are copied to the blob store (up to `roar.store.maxBlobSize`) so their bytes stay
reachable by hash after the files are overwritten; with a team store configured
(`roar.store.url`), source data read from the work tree is copied there too.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from roargit import codestate, config, folders, session, uploads
from roargit.clone import clone_id
from roargit.codestate import is_source_name
from roargit.environment import capture_environment, packages_for_paths, system_paths
from roargit.errors import FileChanged
from roargit.hashing import FileHash, HashCache
from roargit.ledger import Entry, Ledger
from roargit.records import ArtifactId, CodeState, FileRef, RunId, RunRecord, SessionId
from roargit.redact import redact_argv
from roargit.repo import RepoPaths, ensure_roar_dir
from roargit.trace import FileAccess, Trace, run_traced
from roargit.uploads import default_store_url, store_url  # noqa: F401 - imported from here


class RunOutcome(NamedTuple):
    run_id: RunId
    record: RunRecord
    label: str
    warnings: tuple[str, ...]
    superseded: tuple[RunId, ...]
    stored: int  # output blobs copied to the store


class Sorted(NamedTuple):
    # Absolute paths, in the trace's order (a caller sorts what is left after folders are
    # grouped: 100,000 paths of a grouped folder need no sort).
    inputs: list[str]
    outputs: list[str]
    code_reads: list[str]  # the inputs inside the repo, relative to its root
    packages: dict[str, str]
    warnings: list[str]


def rel_or_abs(path: str, root: str) -> str:
    """Paths inside the repo are recorded relative to its root, others absolute."""
    if path == root:
        return "."
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path


def abs_path(recorded: str, root: Path) -> str:
    return recorded if recorded.startswith("/") else str(root / recorded)


#: Source suffixes that are documents or plain text rather than programs or their configs.
TEXT_SUFFIXES = frozenset({".txt", ".md", ".rst"})


def is_program(rel: str) -> bool:
    return is_source_name(rel) and os.path.splitext(rel)[1].lower() not in TEXT_SUFFIXES


def named_files(argv: Sequence[str], cwd: Path, root: str) -> set[str]:
    """Files inside the repo named by a command-line word (or a `--flag=VALUE` value), as
    paths relative to the root."""
    found = set()
    for word in argv:
        for text in {word, word.partition("=")[2]}:
            if not text or text.startswith("-"):
                continue
            path = os.path.normpath(os.path.join(cwd, text))
            if path.startswith(root + "/") and os.path.isfile(path):
                found.add(path[len(root) + 1 :])
    return found


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _is_startup_file(path: str) -> bool:
    """Read by every interpreter start: .pth files and the hooks they install."""
    if path.endswith(".pth") or "/_distutils_hack/" in path:
        return True
    if "/__editable__" not in path and "/libpython" not in path:
        return False  # nearly every path: two substring tests, no split
    name = path.rsplit("/", 1)[-1]
    return name.startswith("__editable__") or (
        # The interpreter's own shared library (…/lib/libpython3.11.so.1.0 of a pyenv, conda or
        # /opt build): the noise rules know its stdlib dir and executable, not this file.
        name.startswith("libpython") and ".so" in name
    )


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

    noise = system_paths(files, home, ignore)
    inputs: list[str] = []
    outputs: list[str] = []
    code_reads: list[str] = []
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
                inputs.append(p)

    # One pass over what may be 100,000 paths: each rare case (git's files, start-up files,
    # package candidates) is told by prefix and substring tests before anything costlier, and
    # only package candidates wait for the package lookup.
    # Every interpreter reads its .pth files and editable-install finders at start-up: that is
    # not a use of those distributions, so they are dropped before packages are named.
    startup: set[str] = set()
    candidates: list[tuple[int, FileAccess]] = []
    for i, (p, a) in enumerate(files.items()):
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
        ) and _is_startup_file(p):
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
                else:
                    place(i, a)  # the warning
    packages, package_files = packages_for_paths([a.path for _, a in candidates], code_roots=[root])
    for i, a in candidates:
        if a.path not in package_files and a.path not in noise:
            place(i, a)
    warnings = [w for _, w in sorted(warned)]
    return Sorted(inputs, outputs, code_reads, packages, warnings)


def hash_settled(
    cache: HashCache,
    paths: list[str],
    warnings: list[str],
    keys: dict[str, bytes] | None = None,
) -> dict[str, FileHash]:
    """Hashes of the files that hold still; one still being written (by a process the run
    left behind, say) is left out with a warning rather than losing the whole record.
    `keys` is filled as `HashCache.hash_many` fills it."""
    try:
        return cache.hash_many(paths, missing_ok=True, keys=keys)
    except FileChanged as exc:
        moving = set(exc.paths)
        warnings.extend(f"{p} kept changing while hashed: not recorded" for p in exc.paths)
        return cache.hash_many([p for p in paths if p not in moving], missing_ok=True, keys=keys)


def _file_refs(abs_paths: list[str], hashes: Mapping[str, FileHash], root: str) -> list[FileRef]:
    return [
        FileRef(rel_or_abs(p, root), ArtifactId(hashes[p].digest), hashes[p].size)
        for p in abs_paths
        if p in hashes
    ]


def _group_folders(
    abs_paths: list[str],
    cache: HashCache,
    root: str,
    never: set[str],
    ledger: Ledger,
    known: folders.FolderCache | None = None,
) -> tuple[list[str], list[FileRef], list[Entry], dict[str, FileHash]]:
    """Replace the files of folders read/written nearly whole by one folder artifact each.

    With `known` (for folders the run read), a folder whose files' stat data are as they were
    when its manifest was last made reuses that manifest without a per-file lookup."""
    chosen = folders.choose_folders(abs_paths, never)
    if not chosen:
        return abs_paths, [], [], {}
    began = folders.now_ns()
    refs, entries = [], []
    grouped: set[str] = set()
    stats: dict[str, tuple[str, int]] = {}
    if known is not None:
        for folder, files in list(chosen.items()):
            state = known.get(folder)
            if state is None:
                continue  # nothing to compare: its stat digest comes from the hashing below
            seen = folders.stat_digest(folder, files)
            if seen is None:
                continue
            stats[folder] = seen
            if state.stat_digest == seen[0] and ledger.has_manifest(state.manifest):
                rel = rel_or_abs(folder, root) + "/"
                refs.append(FileRef(rel, ArtifactId(state.manifest), state.size, "dir"))
                grouped.update(files)
                del chosen[folder]
    members = [m for ms in chosen.values() for m in ms]
    keys: dict[str, bytes] = {}
    hashes = hash_settled(cache, members, [], keys) if members else {}
    for folder, files in chosen.items():
        digest, data, size, count = folders.manifest_from_hashes(folder, files, hashes)
        if not ledger.has_manifest(digest):
            entries.append(ledger.manifest_entry(digest, data))
        refs.append(FileRef(rel_or_abs(folder, root) + "/", ArtifactId(digest), size, "dir"))
        grouped.update(files)
        if known is not None and count == len(files):
            # The stat each digest was made against (consistent with the bytes hashed); a
            # first run so needs no lstat pass of its own.
            seen = folders.stat_digest_of_keys(folder, files, keys) or stats.get(folder)
            if seen is not None:
                stat, newest = seen
                known.put(folder, folders.FolderState(stat, digest, size), newest, began)
    return [p for p in abs_paths if p not in grouped], refs, entries, hashes


def _interpreter(trace: Trace) -> str | None:
    for proc in trace.processes:
        if os.path.basename(proc.executable).startswith("python"):
            return proc.executable
    return None


def record_run(
    paths: RepoPaths,
    argv: Sequence[str],
    cwd: Path,
    *,
    kind: str = "run",
    step: int | None = None,
    env: Mapping[str, str] | None = None,
    session_id: SessionId | None = None,
) -> RunOutcome:
    """Run `argv` in `cwd` under the tracer and append its record to the ledger.

    The run joins `session_id` when given (roar reproduce records into a session of its own),
    else the clone's active session."""
    # A big run makes a few objects for each path it touched (100,000+), and no cycles: the
    # cyclic collector would walk them all again and again (0.04-0.13 s of a 100,000-file
    # run), so it waits until the run is recorded.
    if not gc.isenabled():
        return _record_run(paths, argv, cwd, kind, step, env, session_id)
    gc.disable()
    try:
        return _record_run(paths, argv, cwd, kind, step, env, session_id)
    finally:
        gc.enable()


def _record_run(
    paths: RepoPaths,
    argv: Sequence[str],
    cwd: Path,
    kind: str,
    step: int | None,
    env: Mapping[str, str] | None,
    session_id: SessionId | None,
) -> RunOutcome:
    run_env = dict(os.environ if env is None else env)
    roar_dir = ensure_roar_dir(paths)
    settings = config.read_all(paths)
    ledger = Ledger(paths, fast_start=True)  # no pygit2 import on this path (gitobjects.py)
    cache = HashCache(roar_dir)
    root = str(paths.root)

    named = named_files(argv, cwd, root)

    def known_data(rels: list[str]) -> set[str]:
        # `rels`: untracked files with source names. One named on the command line
        # (`cat notes.txt`, `--vocab v.txt`) is the run's data, though .txt also names
        # sources: only programs stay code.
        data = {r for r in rels if r in named and not is_program(r)}
        sources = [
            r
            for r in rels
            if r not in data
            and _size(os.path.join(root, r)) <= codestate.MAX_UNTRACKED_SOURCE  # not hashed
        ]
        hashes = cache.hash_many([os.path.join(root, r) for r in sources], missing_ok=True)
        data.update(
            r
            for r in sources
            if (h := hashes.get(os.path.join(root, r))) and ledger.has_artifact(h.digest)
        )
        return data

    code = codestate.capture(paths, ledger.reader, known_data)
    mode = settings["roar.trace.mode"].value
    grace = settings["roar.trace.daemongrace"].value
    run_env.setdefault("ROAR_TRACE_DAEMON_GRACE", grace)
    started = time.time_ns()
    trace = run_traced(
        list(argv), cwd, run_env, scan_root=paths.root, mode=None if mode == "auto" else mode
    )
    ended = time.time_ns()
    ledger.refresh()  # see runs that other processes recorded while this one ran

    home = run_env.get("HOME", "")
    ignore = [g.strip() for g in settings["roar.ignore"].value.split(",") if g.strip()]
    accesses = sort_accesses(trace.files, paths, home, ignore)
    warnings = list(trace.warnings) + accesses.warnings

    code_inputs = codestate.code_inputs(ledger.reader, code.tree, accesses.code_reads)
    in_code = {c.path for c in code_inputs}

    never = {"/", root, home, *map(str, paths.root.parents)}
    in_paths, in_dirs, manifest_entries, _ = _group_folders(
        accesses.inputs, cache, root, never, ledger, folders.FolderCache(roar_dir)
    )
    out_paths, out_dirs, out_entries, out_folder_hashes = _group_folders(
        accesses.outputs, cache, root, never, ledger
    )
    in_paths.sort()
    out_paths.sort()
    hashes = hash_settled(cache, [*in_paths, *out_paths], warnings)
    inputs = []
    for ref in _file_refs(in_paths, hashes, root):
        # A code file is an input artifact only when some run is known to have made it.
        if ref.path not in in_code or ledger.artifact_runs(ref.hash)[0]:
            inputs.append(ref)
    outputs = _file_refs(out_paths, hashes, root)

    environment = capture_environment(
        run_env,
        accesses.packages,
        python=_interpreter(trace),
        include=[g.strip() for g in settings["roar.env.include"].value.split(",") if g.strip()],
    )
    status = "interrupted" if trace.interrupted else ("ok" if trace.exit_code == 0 else "failed")
    if trace.mode != "ptrace":
        warnings.append(f"captured in {trace.mode} mode: reads by non-Python programs are missed")

    # The bytes go to the store before the record is appended, so that the record can say
    # which outputs' bytes are in no store (a failing store never costs the record: the
    # failure is queued, bounded in time by the store's limits).
    team_store = bool(settings["roar.store.url"].value)
    stored_to = _store_run_files(
        paths, settings, ledger, out_paths, hashes, out_folder_hashes, inputs, team_store, warnings
    )
    outputs = uploads.mark_not_stored(outputs, stored_to.not_stored, paths.root)
    out_dirs = uploads.mark_not_stored(out_dirs, stored_to.not_stored, paths.root)

    # Numbering the step and appending its run happen under the session lock, so that
    # concurrent runs in one clone never take the same step number.
    with session.locked(roar_dir):
        ledger.refresh()
        if session_id is None:
            sid = session.active_session(ledger, roar_dir, clone_id(paths))
            popped = session.read_state(roar_dir).popped
        else:
            sid, popped = session_id, frozenset()
        view = session.load_view(ledger, sid, popped)
        all_in = [*inputs, *in_dirs]
        all_out = [*outputs, *out_dirs]
        recorded_argv = redact_argv(argv)
        if step is None:
            step = session.assign_step(
                view, kind, {f.path for f in all_in}, {f.path for f in all_out}, recorded_argv
            )
        previous = next((s for s in view.steps if s.kind == kind and s.number == step), None)

        record = RunRecord(
            argv=recorded_argv,
            cwd=rel_or_abs(str(cwd.resolve()), root),
            started_at=started,
            ended_at=ended,
            exit_code=trace.exit_code,
            status=status,
            inputs=tuple(sorted(all_in, key=lambda f: f.path)),
            outputs=tuple(sorted(all_out, key=lambda f: f.path)),
            code=CodeState(code.commit, code.branch, code.dirty, code.tree, tuple(code_inputs)),
            session=sid,
            step=step,
            kind=kind,
            capture=trace.mode,
            complete=trace.complete and trace.mode == "ptrace",
            environment=environment.to_dict(),
        )
        run_id = ledger.append_run(record, [*manifest_entries, *out_entries])
    stored = stored_to.stored
    if stored and stored_to.failure is None:
        # The store took this run's bytes: a good moment to send what earlier runs queued.
        uploads.drain_quietly(paths, settings, uploads.store_url(paths, settings), warnings)
    superseded = (previous.run_id, *previous.superseded) if previous else ()
    return RunOutcome(
        run_id, record, session.label(kind, step), tuple(warnings), superseded, stored
    )


def _store_run_files(
    paths: RepoPaths,
    settings: Mapping[str, config.Value],
    ledger: Ledger,
    out_paths: list[str],
    hashes: Mapping[str, FileHash],
    folder_hashes: Mapping[str, FileHash],
    inputs: list[FileRef],
    team_store: bool,
    warnings: list[str],
) -> uploads.Stored:
    """Outputs go to the store; with a team store, source data read from the work tree goes
    there too, so that a clone can reproduce from it (docs/reproduce.md). The local default
    store does not copy sources: they are already on this disk."""
    outputs = {p: hashes[p] for p in out_paths if p in hashes}
    outputs.update(folder_hashes)
    sources = {}
    if team_store:
        for f in inputs:
            if not f.path.startswith("/") and not ledger.artifact_runs(f.hash)[0]:
                path = abs_path(f.path, paths.root)
                if path in hashes:
                    sources[path] = hashes[path]
    return uploads.store_files(paths, settings, outputs, sources, warnings)
