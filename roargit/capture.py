"""`roar run`: trace a command, sort what it touched, and record the run.

What a run touched is sorted into:
- code inputs: read files of the code tree (HEAD's, or the dirty snapshot) that are code by
  `roar.code` (codestate.CodeRule) or that the run executed, kept with their git blob ids;
  one the ledger already knows as an artifact is an input too;
- packages: files of installed distributions, kept as {name: version};
- noise: system files, interpreters' own files, caches, `.git/` and `roar.ignore` globs;
- artifacts: everything else read (inputs) or written (outputs), inside the repo or not,
  tracked in git or not: a committed CSV is data, by its BLAKE3 hash.
  A folder the run read or wrote most of becomes one artifact (see folders.py).
Outputs are copied to the blob store (up to `roar.store.maxBlobSize`) so their bytes stay
reachable by hash after the files are overwritten; with a team store configured
(`roar.store.url`), source data read from the work tree is copied there too.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from roargit import codestate, config, folders, loose_ref
from roargit.errors import GitFailed, RoarError
from roargit.git import run_git
from roargit.gitobjects import drop_stale_keeps, refs_under
from roargit.ledger import TMP_PREFIX, Ledger
from roargit.pathguard import rel_or_abs
from roargit.records import (
    CodeState,
    RunId,
    RunRecord,
    SessionId,
    StepIndex,
    argv_key,
    paths_key,
)
from roargit.redact import redact_argv
from roargit.repo import RepoPaths, ensure_roar_dir
from roargit.stdio import STDIN, STREAM_NAMES, Redirect, with_redirects, wrote_to
from roargit.structs import NamedTuple
from roargit.trace import LOG_PREFIX, Terminations, Trace, run_traced


class RunOutcome(NamedTuple):
    run_id: RunId
    record: RunRecord
    label: str
    warnings: tuple[str, ...]
    superseded: tuple[RunId, ...]
    stored: int  # output blobs copied to the store
    # SIGTERM or SIGHUP that reached roar during the run (the command got it, and the run is
    # "terminated" if it came while the command ran): roar then exits with 128 + it.
    signal: int | None = None
    # The settings the run was recorded with: what runs after it (the post-run hook) reads
    # them here instead of starting another `git config`.
    settings: Mapping[str, config.Value] | None = None


class NotRecorded(RoarError):
    """The command ran (or was never started, see `exit_code`) but its record could not be
    written. `exit_code` is what `roar run` exits with: the command's status (1 if that was
    0: a zero would claim a recorded run), or 128 + N when roar was sent signal N."""

    def __init__(self, message: str, exit_code: int, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.cause = cause


class TerminatedBeforeStart(NotRecorded):
    def __init__(self, sig: int) -> None:
        name = signal.Signals(sig).name
        super().__init__(f"{name} arrived before the command started: nothing was run", 128 + sig)


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, GitFailed):
        text = exc.stderr.decode(errors="replace")
        return "No space left on device" in text or "Disk quota exceeded" in text
    return False


def _not_recorded(exc: Exception, exit_code: int) -> NotRecorded:
    if _is_disk_full(exc):
        if isinstance(exc, OSError):
            detail = f"cannot write {exc.filename}" if exc.filename else str(exc)
        else:
            detail = str(exc)
        return NotRecorded(f"the disk is full: {detail}; the run was not recorded", exit_code, exc)
    return NotRecorded(f"{exc}; the run was not recorded", exit_code, exc)


def _off(value: str) -> bool:
    return value.strip().lower() in ("false", "no", "off", "0")


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
    streams: Sequence[Redirect] = (),
    index: bool = True,
    ledger: Ledger | None = None,
) -> RunOutcome:
    """Run `argv` in `cwd` under the tracer and append its record to the ledger.

    The run joins `session_id` when given (roar reproduce records into a session of its own),
    else the clone's active session. `streams` are the files the user's shell redirected
    roar's own standard streams to (`stdio.redirects()`): recorded as the command's. Without
    `index`, the run is filed as no producer or consumer of its files (Ledger.append_run).
    `ledger`: one the caller already reads (rerun.resolve's), so that the run starts no
    second reader of it."""
    # A big run makes a few objects for each path it touched, and no cycles: the cyclic
    # collector would walk them all again and again, so it waits until the run is recorded.
    if not gc.isenabled():
        return _record_run(paths, argv, cwd, kind, step, env, session_id, streams, index, ledger)
    gc.disable()
    try:
        return _record_run(paths, argv, cwd, kind, step, env, session_id, streams, index, ledger)
    finally:
        gc.enable()


#: Temporary files and folders under .git/roar/tmp, each named by the pid of the roar that
#: made it: its trace log (trace.LOG_PREFIX), the fallback's hook folder, the snapshot's
#: private index and object folder (codestate.snapshot_tree).
#: (Compiled where used, by `re`'s cache: most runs find nothing to clear.)
LEFTOVER = rf"(?:{re.escape(LOG_PREFIX)}|roar-audit-|index-|objects-)(\d+)(?:[-.]|$)"
TMP_REF = r"(\d+)-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: another user's process, alive
    return True


def clear_leftovers(paths: RepoPaths) -> None:
    """Remove what a roar that died mid-run (SIGKILL, a crash, a power cut) left: its files
    under .git/roar/tmp, its snapshot ref under refs/roar/tmp/ and a `.keep` of its packs.
    Each names the process that made it; only those of processes no longer alive go."""
    tmp = paths.roar_dir / "tmp"
    try:
        names = os.listdir(tmp)
    except OSError:
        names = []
    for name in names:
        m = re.match(LEFTOVER, name)
        if m is None or _alive(int(m[1])):
            continue
        path = tmp / name
        if path.is_dir() and not path.is_symlink():
            import shutil  # lazy: only a dead roar's leftovers need it (1.9 ms, bz2 and lzma)

            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # tidying up never stops a run
                path.unlink()
    dead = [
        ref
        for ref in refs_under(paths.common_dir, TMP_PREFIX)
        if (m := re.match(TMP_REF, ref[len(TMP_PREFIX) :])) and not _alive(int(m[1]))
    ]
    if dead:
        script = "".join(f"delete {ref}\n" for ref in dead).encode()
        run_git(["update-ref", "--stdin"], paths.git_dir, input=script, check=False)
    drop_stale_keeps(paths.common_dir / "objects" / "pack", _alive)


class _Progress:
    """How far a run got, for `_record_run` to say what a failure cost."""

    __slots__ = ("pinned", "recorded", "trace")

    def __init__(self) -> None:
        self.trace: Trace | None = None  # set once the command has run
        self.pinned: str | None = None  # the ref that keeps the dirty snapshot from gc
        self.recorded: RunId | None = None  # set once the record has landed


def _record_run(
    paths: RepoPaths,
    argv: Sequence[str],
    cwd: Path,
    kind: str,
    step: int | None,
    env: Mapping[str, str] | None,
    session_id: SessionId | None,
    streams: Sequence[Redirect] = (),
    index: bool = True,
    ledger: Ledger | None = None,
) -> RunOutcome:
    """`_trace_and_record`, with what keeps a run from being lost around it: SIGTERM and
    SIGHUP go to the command instead of ending roar; what a dead roar left is cleared first;
    the snapshot's ref is dropped however the run ends; and once the command has run, a
    failure to record it comes as NotRecorded with the status roar should exit with."""
    roar_dir = ensure_roar_dir(paths)
    clear_leftovers(paths)
    signals = Terminations()
    signals.install()
    progress = _Progress()
    try:
        outcome = _trace_and_record(
            paths,
            argv,
            cwd,
            kind,
            step,
            env,
            session_id,
            signals,
            progress,
            roar_dir,
            streams,
            index,
            ledger,
        )
        return outcome._replace(signal=signals.first)
    except NotRecorded:
        raise
    except Exception as exc:
        if progress.trace is None:
            raise
        if signals.first is not None:
            code = 128 + signals.first
        elif progress.recorded is not None:
            code = progress.trace.exit_code
        else:
            code = progress.trace.exit_code or 1
        if progress.recorded is not None:
            raise NotRecorded(
                f"{exc} (the run itself was recorded: {progress.recorded[:12]})", code, exc
            ) from exc
        raise _not_recorded(exc, code) from exc
    finally:
        # The record names the snapshot now (code/<tree>), or the run failed: the pin goes.
        pinned = progress.pinned
        if pinned is not None and not loose_ref.delete(paths.common_dir, pinned):
            run_git(["update-ref", "-d", pinned], paths.git_dir, check=False)
        signals.restore()


def _load_after_command() -> None:
    """What sorting, hashing and recording a run's accesses needs, imported while the command
    runs (trace.run_traced's `while_running`): ~3 ms of `roar run`'s start-up done on one core
    while the command starts on the other."""
    import roargit.clone
    import roargit.index_cache
    import roargit.ledger_trees
    import roargit.machine
    import roargit.run_files
    import roargit.session  # noqa: F401


def _while_command_runs(ledger: Ledger, roar_dir: Path, session_id: SessionId | None) -> None:
    """Work for the time the command runs (trace.run_traced's `while_running`): the modules
    that come after it, then the active session's index read ahead (`keep`: numbering the
    step takes it as it is if the ledger has not moved meanwhile, session.load_index)."""
    _load_after_command()
    if session_id is None:
        from roargit import session

        state = session.read_state(roar_dir)
        if state.session_id is not None:
            session.load_index(ledger, state.session_id, state.popped, keep=True)


def _trace_and_record(
    paths: RepoPaths,
    argv: Sequence[str],
    cwd: Path,
    kind: str,
    step: int | None,
    env: Mapping[str, str] | None,
    session_id: SessionId | None,
    signals: Terminations,
    progress: _Progress,
    roar_dir: Path,
    streams: Sequence[Redirect] = (),
    index: bool = True,
    given: Ledger | None = None,
) -> RunOutcome:
    run_env = dict(os.environ if env is None else env)
    settings = config.read_all(paths, identity=True)
    # fast_start: no pygit2 import on this path (gitobjects.py)
    ledger = given if given is not None else Ledger(paths, fast_start=True)
    root = str(paths.root)

    rule = codestate.code_rule(settings["roar.code"].value.strip())

    def known_data(rels: list[str]) -> set[str]:
        # `rels`: untracked code files small enough to snapshot. One whose bytes the ledger
        # knows as an artifact (a config a step generated, say) is data all the same.
        from roargit.hashing import HashCache  # lazy: few runs have untracked code to check

        with HashCache(roar_dir) as untracked:
            rows = untracked.hash_many(
                [os.path.join(root, r) for r in rels], missing_ok=True, errors={}
            )
        return {
            r
            for r in rels
            if (h := rows.get(os.path.join(root, r))) and ledger.has_artifact(h.digest)
        }

    # A dirty tree's snapshot is written before the command runs (the command may change the
    # code), under a ref of this run's own until the record names it (codestate.snapshot_tree).
    pin = f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
    early: list[str] = []
    untracked_dirs: list[str] = []
    code = codestate.capture(
        paths, ledger.reader, known_data, pin, early, rule, untracked_dirs=untracked_dirs
    )
    if code.dirty:
        progress.pinned = pin
    mode = settings["roar.trace.mode"].value
    grace = settings["roar.trace.daemongrace"].value
    run_env.setdefault("ROAR_TRACE_DAEMON_GRACE", grace)
    if signals.first is not None:
        raise TerminatedBeforeStart(signals.first)
    started = time.time_ns()
    folder_states = folders.FolderCache(roar_dir)
    trace = run_traced(
        list(argv),
        cwd,
        run_env,
        scan_root=paths.root,
        mode=None if mode == "auto" else mode,
        tmp_dir=roar_dir / "tmp",
        signals=signals,
        stat_files=folder_states.remembers_any(),
        while_running=lambda: _while_command_runs(ledger, roar_dir, session_id),
    )
    ended = time.time_ns()
    progress.trace = trace
    # Loaded while the command ran (_load_after_command): these are cache hits now.
    from roargit import run_files, session
    from roargit.clone import clone_id
    from roargit.hashing import HashCache
    from roargit.machine import capture_environment, recorder

    cache = HashCache(roar_dir)
    ledger.refresh()  # see runs that other processes recorded while this one ran
    code = codestate.resolve_tree(ledger.reader, code)

    home = run_env.get("HOME", "")
    ignore = [g.strip() for g in settings["roar.ignore"].value.split(",") if g.strip()]
    accesses = run_files.sort_accesses(with_redirects(trace.files, streams), paths, home, ignore)
    # Where the shell pointed the command's streams, for reproduction to point them again:
    # stdin's file wherever it lies, stdout's and stderr's when written and in the work tree.
    redirected = {
        STREAM_NAMES[r.fd]: rel
        for r in streams
        if (rel := rel_or_abs(os.path.normpath(r.path), root))
        and (r.fd == STDIN or (wrote_to(r) and not rel.startswith("/")))
    }
    # Folders the command made in the work tree: reproduction leaves them for it to make.
    made_dirs = tuple(
        rel
        for p in trace.created_dirs
        if p.startswith(root + "/") and (rel := p[len(root) + 1 :]).split("/")[0] != ".git"
    )
    warnings = early + list(trace.warnings) + accesses.warnings
    # Code is what the rule names or the run executed; every other file it read is data. The
    # rule searches the reads joined as one text (100,000 data files are passed over by their
    # endings, not put to it one by one), and the code tree is asked about those few alone.
    reads = accesses.code_reads
    named = rule.find("\0" + "\0".join(reads) + "\0") if reads else []
    if untracked_dirs and named:
        # The code the run read from folders untracked as a whole joins the snapshot now,
        # under a pin of its own; the tree it builds on stays reachable through the new one.
        late_pin = f"{pin}-read"
        grown = codestate.add_read_code(
            paths, code, untracked_dirs, named, known_data, late_pin, warnings
        )
        if grown is not code:
            old_pin, progress.pinned, code = progress.pinned, late_pin, grown
            if old_pin is not None and not loose_ref.delete(paths.common_dir, old_pin):
                run_git(["update-ref", "-d", old_pin], paths.git_dir, check=False)
    candidates = sorted({*named, *accesses.executed})
    code_inputs = codestate.code_inputs(ledger.reader, code.tree, candidates)
    in_code = {c.path for c in code_inputs}
    code_abs = [os.path.join(root, c) for c in in_code]
    data_in = accesses.inputs
    if in_code:
        skip = set(code_abs)
        data_in = [p for p in data_in if p not in skip]

    never = {"/", root, home, *map(str, paths.root.parents)}
    in_failed: dict[str, OSError] = {}
    out_failed: dict[str, OSError] = {}
    leaves = run_files.leaves_of(trace.files)
    in_paths, in_dirs, manifest_entries, _ = run_files.group_folders(
        data_in, cache, root, never, ledger, folder_states, in_failed, trace.stat_keys, leaves
    )
    in_paths.extend(code_abs)  # hashed too: a code file some run wrote is also an input
    out_paths, out_dirs, out_entries, out_folder_hashes = run_files.group_folders(
        accesses.outputs, cache, root, never, ledger, None, out_failed, None, leaves
    )
    in_paths.sort()
    out_paths.sort()
    failed: dict[str, OSError] = {}
    hashes = run_files.hash_settled(cache, [*in_paths, *out_paths], warnings, errors=failed)
    if failed:
        written = set(out_paths)
        for p, exc in failed.items():
            (out_failed if p in written else in_failed)[p] = exc
    unreadable = run_files.unreadable_files(in_failed, out_failed, root, warnings)
    inputs = []
    for ref in run_files.file_refs(in_paths, hashes, root):
        # A code file is an input artifact only when some run is known to have made it.
        if ref.path not in in_code or ledger.producers(ref.hash):
            inputs.append(ref)
    outputs = run_files.file_refs(out_paths, hashes, root)

    environment = capture_environment(
        run_env,
        accesses.packages,
        python=_interpreter(trace),
        include=[g.strip() for g in settings["roar.env.include"].value.split(",") if g.strip()],
    )
    # roar.share.*: what a record that may be pushed never holds (a record is immutable).
    share_host = not _off(settings["roar.share.hostname"].value)
    share_user = not _off(settings["roar.share.user"].value)
    if not share_host:
        environment = environment._replace(hostname="")
    if not share_user:
        environment = environment._replace(user="")
    no_one = config.Value("", "", "default")
    recorded_by = recorder(
        run_env,
        settings.get("user.name", no_one).value,
        settings.get("user.email", no_one).value,
        share_user=share_user,
        share_host=share_host,
    )
    status = "interrupted" if trace.interrupted else ("ok" if trace.exit_code == 0 else "failed")
    if signals.during_command:
        status = "terminated"
    if trace.mode != "ptrace":
        warnings.append(f"captured in {trace.mode} mode: reads by non-Python programs are missed")

    # The bytes go to the store before the record is appended, so that the record can say
    # which outputs' bytes are in no store (a failing store never costs the record: the
    # failure is queued, bounded in time by the store's limits).
    team_store = bool(settings["roar.store.url"].value)
    stored, store_failed = 0, False
    if out_paths or out_folder_hashes or (team_store and inputs):
        # Loaded only when there is something to store (a run that wrote nothing, like most
        # checks, pays no import for it).
        from roargit import uploads

        stored_to = run_files.store_run_files(
            paths, settings, ledger, out_paths, hashes, out_folder_hashes, inputs, team_store,
            warnings,
        )  # fmt: skip
        outputs = uploads.mark_not_stored(outputs, stored_to.not_stored, paths.root)
        out_dirs = uploads.mark_not_stored(out_dirs, stored_to.not_stored, paths.root)
        stored, store_failed = stored_to.stored, stored_to.failure is not None

    # Numbering the step and appending its run happen under the session lock, so that
    # concurrent runs in one clone never take the same step number.
    with session.locked(roar_dir):
        ledger.refresh()
        if session_id is None:
            state = session.read_state(roar_dir)
            if state.session_id is not None:
                sid, popped = state.session_id, state.popped
            else:  # a new session: none of its runs is popped
                sid = session.active_session(ledger, roar_dir, clone_id(paths), warnings)
                popped = frozenset()
        else:
            sid, popped = session_id, frozenset()
        # The session's index, not its runs' records: this run's cost must not grow with
        # the number of runs before it.
        steps = session.load_index(ledger, sid, popped, warnings)
        all_in = [*inputs, *in_dirs]
        all_out = [*outputs, *out_dirs]
        recorded_argv = redact_argv(argv)
        if step is None:
            new = StepIndex(
                RunId(""),
                sid,
                kind,
                0,
                status,
                started,
                argv_key(recorded_argv),
                paths_key(f.path for f in all_in),
                paths_key(f.path for f in all_out),
            )
            step = session.assign_step(steps, kind, new)
        previous = next((s for s in steps if s.kind == kind and s.number == step), None)

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
            unreadable=unreadable,
            recorded_by=recorded_by,
            redirects=redirected,
            created_dirs=made_dirs,
        )
        run_id = ledger.append_run(record, [*manifest_entries, *out_entries], index)
        progress.recorded = run_id
    if stored and not store_failed:
        from roargit import uploads  # loaded above already: the run stored something

        # The store took this run's bytes: a good moment to send what earlier runs queued.
        uploads.drain_quietly(paths, settings, uploads.store_url(paths, settings), warnings)
    # Closed now, not at exit: a resident recorder's child ends by os._exit, and the WAL is
    # folded in when the last connection closes.
    cache.close()
    superseded = (previous.current.run, *previous.superseded) if previous else ()
    return RunOutcome(
        run_id,
        record,
        session.label(kind, step),
        tuple(warnings),
        superseded,
        stored,
        settings=settings,
    )
