"""Git hooks (pre-commit, pre-push) and roargit's own post-run hook.

Installed git hooks are small shell scripts in the folder git runs hooks from (`git rev-parse
--git-path hooks`, which follows `core.hooksPath`). A hook that was already there is kept:
it is renamed `<hook>.roar-chained` and run first, with the same arguments and input, and its
failure still stops the commit or push; `uninstall` puts it back. The scripts call this
package's interpreter (`python -m roargit hooks run …`), or `roar` on PATH when that
interpreter is gone.

- pre-push: `share.push` to the remote being pushed to (or the URL, for `git push URL`) —
  lineage and bytes. A failure warns and lets the code push go on, unless
  `roar.hooks.strict` is true. The whole ledger goes, not the records of the pushed commits
  alone: it is one ref, and git sends only what the remote lacks (docs/sharing.md says why).
- pre-commit: staged files that the session recorded as outputs must hold bytes that a
  recorded run produced, and not come from a stale step; otherwise a warning naming the step
  to re-run (a failure with `roar.hooks.preCommit=fail` or `roar.hooks.strict`).
- post-run: the shell command in `roar.hooks.postRun` runs after each `roar run`, with
  ROAR_RUN_ID, ROAR_RUN_STATUS, ROAR_RUN_STEP, ROAR_RUN_EXIT_CODE and ROAR_RUN_OUTPUTS (one
  path a line) in its environment. Its failure is reported; the run's record and exit status
  stay as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blake3 import blake3

from roargit import config
from roargit.errors import RoarError
from roargit.folders import decode_manifest_rows
from roargit.git import run_git
from roargit.gitobjects import ObjectReader, tree_entries
from roargit.hashing import HashCache
from roargit.ledger import Ledger
from roargit.records import ArtifactId, FileRef
from roargit.repo import RepoPaths
from roargit.session import label as step_label
from roargit.session import read_state
from roargit.structs import NamedTuple

GIT_HOOKS = ("pre-commit", "pre-push")
MARKER = "# roar-managed hook"
CHAINED = ".roar-chained"
#: What `roar hooks install --post-run` sets when roar.hooks.postRun is empty.
DEFAULT_POST_RUN = "roar push --quiet"
#: A session's runs are filed in 256 folders by id; one that fills this many holds about
#: ledger.SWITCH_TO_PYGIT2_AT runs, past which pygit2's reads pay for its import.
BIG_SESSION_FOLDERS = 112
#: What the pre-commit check read of the active session's records (session_outputs).
OUTPUTS_FILE = "precommit.json"


class HookConflict(RoarError):
    pass


def hooks_dir(paths: RepoPaths) -> Path:
    out = run_git(["rev-parse", "--git-path", "hooks"], paths.root).stdout
    where = Path(os.fsdecode(out.strip()))
    return where if where.is_absolute() else paths.root / where


def is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return MARKER.encode() in f.read(4096)
    except OSError:
        return False


def hook_script(name: str, python: str) -> str:
    """The shell script installed as git hook `name`."""
    py = shlex.quote(python)
    reads_input = name == "pre-push"  # git writes the refs being pushed to its stdin
    lines = [
        "#!/bin/sh",
        f"{MARKER} ({name}): `roar hooks uninstall` removes it and restores any hook it chains",
        f'chained="$(dirname "$0")/{name}{CHAINED}"',
    ]
    if reads_input:
        lines.append("input=$(cat; echo x); input=${input%x}")
        feed = 'printf "%s" "$input" | '
    else:
        feed = ""
    lines += [
        'if [ -x "$chained" ]; then',
        f'    {feed}"$chained" "$@" || exit $?',
        "fi",
        # Not `exec`: in a pipeline it would replace a subshell, and the script go on.
        f"if [ -x {py} ]; then",
        f'    {feed}{py} -m roargit hooks run {name} "$@"',
        "    exit $?",
        "elif command -v roar >/dev/null 2>&1; then",
        f'    {feed}roar hooks run {name} "$@"',
        "    exit $?",
        "fi",
        f'echo "roar: not installed here; {name} hook skipped" >&2',
        "exit 0",
        "",
    ]
    return "\n".join(lines)


class HookState(NamedTuple):
    name: str
    path: str
    installed: bool  # ours is there
    chained: bool  # and runs a hook that was there before
    foreign: bool  # another hook is there, not chained to ours


class PostRunState(NamedTuple):
    command: str
    origin: str


class Status(NamedTuple):
    folder: str
    hooks: list[HookState]
    post_run: PostRunState


def status(paths: RepoPaths) -> Status:
    folder = hooks_dir(paths)
    states = []
    for name in GIT_HOOKS:
        f = folder / name
        ours = is_ours(f)
        chained = (folder / f"{name}{CHAINED}").exists()
        foreign = f.exists() and not ours
        states.append(HookState(name, str(f), ours, ours and chained, foreign))
    value = config.read_all(paths)["roar.hooks.postrun"]
    return Status(str(folder), states, PostRunState(value.value, value.origin))


def install(
    paths: RepoPaths, names: Sequence[str], post_run: bool, python: str | None = None
) -> list[str]:
    """Install the named git hooks (and enable the post-run hook); what was done, in words."""
    python = python or sys.executable
    folder = hooks_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        if name not in GIT_HOOKS:
            raise HookConflict(f"unknown hook '{name}' (known: {', '.join(GIT_HOOKS)})")
        f = folder / name
        chained = folder / f"{name}{CHAINED}"
        if (f.exists() or f.is_symlink()) and not is_ours(f):
            if chained.exists() or chained.is_symlink():
                raise HookConflict(
                    f"{f} is not roar's and {chained.name} exists too: move one of them away"
                )
            os.replace(f, chained)
            done.append(f"{name}: the existing hook is kept as {chained.name} and runs first")
        tmp = f.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_text(hook_script(name, python))
        tmp.chmod(0o755)
        os.replace(tmp, f)
        done.append(f"{name}: installed in {folder}")
    if post_run:
        value = config.read_all(paths)["roar.hooks.postrun"]
        if value.value:
            done.append(f"post-run: already set to {value.value!r} ({value.origin})")
        else:
            config.set_value(paths, "hooks.postRun", DEFAULT_POST_RUN)
            done.append(f"post-run: roar.hooks.postRun = {DEFAULT_POST_RUN!r}")
    return done


def uninstall(paths: RepoPaths, names: Sequence[str], post_run: bool) -> list[str]:
    folder = hooks_dir(paths)
    done = []
    for name in names:
        f = folder / name
        chained = folder / f"{name}{CHAINED}"
        if not is_ours(f):
            continue
        if chained.exists() or chained.is_symlink():
            os.replace(chained, f)
            done.append(f"{name}: removed; the hook it chained to is back in place")
        else:
            f.unlink()
            done.append(f"{name}: removed")
    if post_run:
        value = config.read_all(paths)["roar.hooks.postrun"]
        if value.origin == "git" and value.value == DEFAULT_POST_RUN:
            config.unset(paths, "hooks.postRun")
            done.append("post-run: roar.hooks.postRun unset")
    return done


def _true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


# -- the hooks' bodies -----------------------------------------------------------------------


class Outcome(NamedTuple):
    ok: bool  # False: the hook stops the commit or push
    messages: list[str]


def pre_push(paths: RepoPaths, remote: str, url: str) -> Outcome:
    """Push lineage and bytes to the remote git is pushing to; never blocks unless strict."""
    # share loads the stores and the push plan: only a pre-push needs them.
    from roargit import share

    strict = _true(config.read_all(paths)["roar.hooks.strict"].value)
    try:
        # git passes the URL as REMOTE too when `git push URL` names no remote.
        report = share.push(paths, remote if remote else url)
    except RoarError as exc:
        return Outcome(not strict, [f"pre-push: lineage not pushed to {remote}: {exc}"])
    messages = [f"pre-push: {w}" for w in report.warnings if w != "nothing recorded yet"]
    failed = report.uploaded.failed if report.uploaded else []
    for blob, why in failed[:5]:
        messages.append(f"pre-push: {blob.path} not uploaded: {why}")
    if len(failed) > 5:
        messages.append(f"pre-push: {len(failed) - 5} more blob(s) not uploaded")
    if report.pushed and not report.up_to_date:
        messages.append(f"pre-push: lineage pushed to {remote} ({len(report.runs)} new run(s))")
    return Outcome(not (strict and failed), messages)


class Finding(NamedTuple):
    path: str
    step: str  # the step to re-run, "@3"
    why: str  # "modified" (bytes no run produced) or "stale"


def staged_files(paths: RepoPaths) -> list[str]:
    out = run_git(
        ["diff", "--cached", "--name-only", "-z", "--no-renames", "--diff-filter=ACMT"],
        paths.root,
    ).stdout
    return [p for p in os.fsdecode(out).split("\0") if p]


def check_staged(paths: RepoPaths, files: Sequence[str] | None = None) -> list[Finding]:
    """Staged files the active session recorded as outputs whose staged bytes no recorded run
    produced, or that come from a stale step."""
    state = read_state(paths.roar_dir)
    if state.session_id is None:
        return []
    staged = staged_files(paths) if files is None else list(files)
    if not staged:
        return []
    ledger = Ledger(paths, fast_start=True)
    try:
        runs = session_outputs(paths, ledger, state.session_id)
        produced: dict[str, tuple[str, str, str]] = {}  # path: (recorded hash, step, state)
        folders: list[tuple[str, str, str, str]] = []  # (prefix, manifest, step, state)
        for step, st, run in current_steps(runs, state.popped):
            for f in run.outputs:
                if f.kind == "dir":
                    folders.append((f.path.rstrip("/") + "/", f.hash, step, st))
                else:
                    produced[f.path] = (f.hash, step, st)
        # path: (recorded hash, or the folder's (prefix, manifest); step; its state)
        todo: dict[str, tuple[str | tuple[str, str], str, str]] = {}
        for p in staged:
            if p in produced:
                todo[p] = produced[p]
                continue
            for prefix, manifest, label, st in folders:
                if p.startswith(prefix):
                    todo[p] = ((prefix, manifest), label, st)
                    break
        if not todo:
            return []
        digests = staged_digests(paths, list(todo))
        findings = []
        manifests: dict[str, dict[str, str]] = {}
        for p, (recorded, label, st) in todo.items():
            digest = digests.get(p)
            if digest is None:
                continue
            if isinstance(recorded, tuple):
                prefix, manifest = recorded
                if manifest not in manifests:
                    manifests[manifest] = _manifest_rows(ledger, manifest)
                matches = manifests[manifest].get(p[len(prefix) :]) == digest
            else:
                matches = recorded == digest
            if matches:
                if st == "stale":
                    findings.append(Finding(p, label, "stale"))
                continue
            if not ledger.artifact_runs(digest)[0]:
                findings.append(Finding(p, label, "modified"))
        return findings
    finally:
        ledger.close()


class RunOutputs(NamedTuple):
    """What the pre-commit check needs of a run record: where its step stands, what it read
    and wrote (sizes left out)."""

    kind: str
    step: int
    status: str
    started_at: int
    inputs: tuple[tuple[str, str], ...]  # (path, hash)
    outputs: tuple[FileRef, ...]


def session_outputs(paths: RepoPaths, ledger: Any, session_id: str) -> dict[str, RunOutputs]:
    """Every readable run of the session, by id.

    Records are immutable, so what was read of them is kept in `.git/roar/precommit.json`
    with the session folder's tree id: while that tree is the same, nothing is read; once runs
    were added, one `diff-tree` of the two trees names them and only their records are read.
    A session read whole for the first time goes through pygit2 when it is big."""
    tip = ledger.tip()
    if tip is None:
        return {}
    found = ledger.reader.read(f"{tip}:sessions/{session_id[:2]}/{session_id}")
    if found is None or found.type != "tree":
        return {}
    cached = _load_outputs(paths, session_id)
    if cached is not None and cached[0] == found.oid:
        return cached[1]
    runs: dict[str, RunOutputs] = {}
    new: list[str] | None = None
    if cached is not None:
        proc = run_git(
            ["diff-tree", "-r", "-z", "--name-only", "--diff-filter=A", cached[0], found.oid],
            paths.root,
            check=False,
        )
        if proc.returncode == 0:
            runs = dict(cached[1])
            names = (p.rsplit("/", 1)[-1] for p in os.fsdecode(proc.stdout).split("\0") if p)
            new = [n for n in names if n != "session" and not n.startswith("i.")]
    if new is not None:
        runs.update(_read_outputs(ledger, new))
    elif len(tree_entries(found.data, len(tip) // 2)) < BIG_SESSION_FOLDERS:
        runs = _read_outputs(ledger, ledger.session_runs(session_id))
    else:
        # Reading this many records costs more through cat-file than pygit2's import.
        whole = Ledger(paths)
        try:
            runs = _read_outputs(whole, whole.session_runs(session_id))
        finally:
            whole.close()
    _save_outputs(paths, session_id, found.oid, runs)
    return runs


def _read_outputs(ledger: Any, run_ids: Sequence[str]) -> dict[str, RunOutputs]:
    """The records' RunOutputs; one that cannot be read is left out (as the session's view
    skips it: `roar fsck` lists it)."""
    out = {}
    for rid, rec in zip(run_ids, ledger.runs_or_errors(run_ids), strict=True):
        if isinstance(rec, RoarError):
            continue
        out[rid] = RunOutputs(
            rec.kind,
            rec.step,
            rec.status,
            rec.started_at,
            tuple((f.path, f.hash) for f in rec.inputs),
            tuple(FileRef(f.path, f.hash, 0, f.kind) for f in rec.outputs),
        )
    return out


def current_steps(
    runs: Mapping[str, RunOutputs], popped: frozenset[str]
) -> list[tuple[str, str, RunOutputs]]:
    """(label, state, run) of each step's current run, build steps first, then by number:
    the rule of session.load_view (the newest run of a step is current; a step is stale when
    an input differs from what the last earlier step that wrote its path wrote, or that step
    is stale; a run that did not end well has its status for a state)."""
    by_step: dict[tuple[str, int], tuple[int, str]] = {}
    for rid, r in runs.items():
        if rid in popped:
            continue
        key = (r.kind, r.step)
        if key not in by_step or (r.started_at, rid) > by_step[key]:
            by_step[key] = (r.started_at, rid)
    steps = []
    written: dict[str, tuple[str, str]] = {}  # path: (hash, state) of the last step that wrote it
    for kind, number in sorted(by_step, key=lambda k: (k[0] != "build", k[1])):
        run = runs[by_step[(kind, number)][1]]
        stale = False
        for path, digest in run.inputs:
            before = written.get(path)
            if before is not None and (before[0] != digest or before[1] == "stale"):
                stale = True
                break
        state = run.status if run.status != "ok" else ("stale" if stale else "ok")
        for f in run.outputs:
            written[f.path] = (f.hash, state)
        steps.append((step_label(kind, number), state, run))
    return steps


def _outputs_file(paths: RepoPaths) -> Path:
    return paths.roar_dir / OUTPUTS_FILE


def _load_outputs(paths: RepoPaths, session_id: str) -> tuple[str, dict[str, RunOutputs]] | None:
    """(the session tree's id, its runs) as last kept; None when there is nothing usable (a
    damaged file is read as none: it is rebuilt from the ledger)."""
    try:
        data = json.loads(_outputs_file(paths).read_bytes())
        if data.get("version") != 1 or data.get("session") != session_id:
            return None
        runs = {
            str(rid): RunOutputs(
                str(kind),
                int(step),
                str(status),
                int(started),
                tuple((str(p), str(h)) for p, h in inputs),
                tuple(FileRef(str(p), ArtifactId(str(h)), 0, str(k)) for p, h, k in outputs),
            )
            for rid, (kind, step, status, started, inputs, outputs) in data["runs"].items()
        }
        return str(data["tree"]), runs
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _save_outputs(
    paths: RepoPaths, session_id: str, tree: str, runs: Mapping[str, RunOutputs]
) -> None:
    data = {
        "version": 1,
        "session": session_id,
        "tree": tree,
        "runs": {
            rid: [
                r.kind,
                r.step,
                r.status,
                r.started_at,
                [list(i) for i in r.inputs],
                [[f.path, f.hash, f.kind] for f in r.outputs],
            ]
            for rid, r in runs.items()
        },
    }
    f = _outputs_file(paths)
    tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, f)
    except OSError:  # kept to save time only: the next check reads the ledger again
        with contextlib.suppress(OSError):
            tmp.unlink()


def _manifest_rows(ledger: Any, digest: str) -> dict[str, str]:
    data = ledger.manifest(digest)
    if data is None:
        return {}
    try:
        return decode_manifest_rows(data, f"manifest {digest[:12]}")
    except RoarError:
        return {}


def staged_digests(paths: RepoPaths, files: Sequence[str]) -> dict[str, str]:
    """BLAKE3 of each file's staged bytes: from the work tree through the hash cache when the
    file there is what is staged, else read from the index."""
    # Many pathspecs cost git more to match than listing every unstaged change.
    limit = ["--", *files] if len(files) <= 50 else []
    # Plumbing: no diff configuration to read; an entry whose stat data is stale (a touched
    # file) is listed and read from the index below, which gives the same digest.
    listing = run_git(["diff-files", "--name-only", "-z", *limit], paths.root).stdout
    unstaged = set(os.fsdecode(listing).split("\0"))
    clean = [p for p in files if p not in unstaged]
    out: dict[str, str] = {}
    if clean:
        hashes = HashCache(paths.roar_dir).hash_many(
            [str(paths.root / p) for p in clean], missing_ok=True
        )
        for p in clean:
            h = hashes.get(str(paths.root / p))
            if h is not None:
                out[p] = h.digest
    dirty = [p for p in files if p in unstaged]
    if dirty:
        reader = ObjectReader(paths.git_dir)
        try:
            for p, obj in zip(dirty, reader.read_many([f":{p}" for p in dirty]), strict=True):
                if obj is not None and obj.type == "blob":
                    out[p] = blake3(obj.data).hexdigest()
        finally:
            reader.close()
    return out


def pre_commit(paths: RepoPaths, files: Sequence[str] | None = None) -> Outcome:
    settings = config.read_all(paths)
    mode = settings["roar.hooks.precommit"].value.strip().lower() or "warn"
    if mode == "off":
        return Outcome(True, [])
    findings = check_staged(paths, files)
    messages = []
    for f in findings:
        if f.why == "stale":
            messages.append(
                f"pre-commit: {f.path} comes from stale step {f.step}: its inputs changed "
                f"since; run `roar update` (or `roar run {f.step}`)"
            )
        else:
            messages.append(
                f"pre-commit: {f.path} holds bytes no recorded run produced (edited by hand?); "
                f"re-run step {f.step} (`roar run {f.step}`)"
            )
    fail = mode == "fail" or _true(settings["roar.hooks.strict"].value)
    return Outcome(not (findings and fail), messages)


def post_run(
    paths: RepoPaths,
    command: str,
    run_id: str,
    status: str,
    exit_code: int,
    step: str,
    outputs: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Run the post-run command (a shell command line) in the repository's top folder, its
    output going to stderr; why it failed, or None."""
    if not command.strip():
        return None
    full = dict(os.environ if env is None else env)
    full.update(
        {
            "ROAR_RUN_ID": run_id,
            "ROAR_RUN_STATUS": status,
            "ROAR_RUN_EXIT_CODE": str(exit_code),
            "ROAR_RUN_STEP": step,
            "ROAR_RUN_OUTPUTS": "\n".join(outputs),
        }
    )
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=paths.root,
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
        )
    except OSError as exc:
        return f"post-run hook could not start: {exc}"
    if proc.returncode != 0:
        return f"post-run hook `{command}` exited {proc.returncode}; the run is recorded as it was"
    return None


def after_run(paths: RepoPaths, outcome: Any) -> str | None:
    """The post-run hook for a recorded `roar run` (RunOutcome), if one is configured."""
    try:
        settings = outcome.settings
        command = settings["roar.hooks.postrun"].value
    except RoarError as exc:
        return f"post-run hook not run: {exc}"
    if not command.strip():
        return None
    rec = outcome.record
    return post_run(
        paths,
        command,
        outcome.run_id,
        rec.status,
        rec.exit_code,
        outcome.label,
        [f.path for f in rec.outputs],
    )
