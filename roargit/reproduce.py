"""`roar reproduce`: recreate an artifact's bytes, and check that they are.

Executing a plan (plan.py) happens in an isolated git worktree under
`.git/roar/worktrees/<target>` — never the user's work tree. For each step to run:

1. the worktree is set to the step's exact code state: HEAD moves to the recorded commit
   (when this clone has it) and `git read-tree -u --reset` writes the recorded tree, which
   is the dirty snapshot when the run was made from a dirty tree;
2. each input is put at its recorded path and verified: already there with the right bytes,
   made by an earlier step of this reproduction, copied from the user's work tree, or read
   from a blob store (verified while it streams); the folders its files lay in are made
   when missing (`layout`);
3. the command runs under the tracer, so the reproduction is recorded too (in a session of
   its own, with the original step numbers), and every output is hashed; that run is filed
   as no producer of its bytes (the original run stays their producer);
4. each recorded output is compared by path: `identical`, `differs` or `missing`, and a
   verification record of the original run says so, with who, where, when, and the code and
   environment it ran with.

A failed step stops the reproduction. The result is `identical` only when the target's bytes
came out the same from a step that succeeded. The worktree is kept (the report says where)
until the next reproduction of the same target.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from roargit import config, pathguard, stdio
from roargit.blobstore import BlobStore, StoreDenied
from roargit.capture import record_run
from roargit.clone import clone_id
from roargit.errors import BlobCorrupt, BlobMissing, RoarError
from roargit.folders import decode_manifest
from roargit.git import run_git
from roargit.hashing import HashCache
from roargit.ledger import Ledger
from roargit.pathguard import Root, escape
from roargit.plan import Plan, PlanStep, location
from roargit.records import (
    ArtifactId,
    FileRef,
    Identity,
    RunId,
    RunRecord,
    SessionId,
    SessionRecord,
    VerificationRecord,
    VerifiedOutput,
)
from roargit.repo import RepoPaths, ensure_roar_dir, find_repo
from roargit.uploads import default_store_url, store_url

WORKTREES = "worktrees"


class PlanIncomplete(RoarError):
    def __init__(self, plan: Plan) -> None:
        missing = plan.missing
        first_step, first = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        if first.file.kind == "tree":
            super().__init__(
                f"{first_step.label}'s code tree {first.file.hash[:12]} is not in this clone: "
                f"fetch the ledger (git fetch brings refs/roar/*){more}"
            )
            return
        # The local store alone: the team's was never configured here (a teammate's clone
        # whose branch with the .roarconfig that names it has not been pulled, say).
        hint = (
            "; this clone has no team store: pull the commit whose .roarconfig sets "
            "store.url, or roar config set store.url URL"
            if len(plan.stores) < 2
            else ""
        )
        super().__init__(
            f"{first_step.label} needs {escape(first.file.path)} ({first.file.hash[:12]}), "
            "which is reachable nowhere: not in the work tree, the code, any blob store, or "
            f"made by a recorded step{more}{hint}"
        )


class DestinationExists(RoarError):
    def __init__(self, path: Path | str) -> None:
        super().__init__(
            f"{escape(str(path))} exists: choose another path or pass --force to replace it"
        )


class InputUnavailable(RoarError):
    def __init__(self, label: str, f: FileRef, why: str) -> None:
        super().__init__(f"{label}: cannot put {escape(f.path)} ({f.hash[:12]}) in place: {why}")


# -- stores --------------------------------------------------------------------------------


def stores_for(paths: RepoPaths, settings: dict[str, Any] | None = None) -> list[BlobStore]:
    """The configured store (`roar.store.url`), the local one under `.git/roar/blobs`, and
    the stores of registered scopes fetched into this clone (registry.remote). S3 endpoints
    and credentials come from the environment (AWS_ENDPOINT_URL, …)."""
    # registry.remote imports this module (DestinationExists).
    from roargit.registry.remote import fetched_stores

    settings = settings if settings is not None else config.read_all(paths)
    urls = [store_url(paths, settings), default_store_url(paths), *fetched_stores(paths)]
    return [BlobStore(u) for u in dict.fromkeys(urls)]


# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputCheck:
    path: str
    expected: str
    actual: str | None  # None: the step did not write it
    status: str  # "identical", "differs" or "missing"


@dataclass(slots=True)
class StepResult:
    label: str
    run_id: RunId
    action: str  # "ran", "reused", "failed", "skipped by user" or "not run"
    new_run: RunId | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    outputs: list[OutputCheck] = field(default_factory=list)
    note: str = ""
    verification: str | None = None  # id of the verification record of the original run


@dataclass(slots=True)
class Report:
    target: str
    target_status: str  # "identical", "differs", "missing" or "failed"
    target_path: str | None  # where the reproduced target lies (absolute), if it does
    worktree: str
    session: SessionId | None
    steps: list[StepResult]
    copied_to: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.target_status == "identical"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "reproduction",
            "target": {
                "hash": self.target,
                "status": self.target_status,
                "path": self.target_path,
                "copied_to": self.copied_to,
            },
            "identical": self.identical,
            "worktree": self.worktree,
            "session": self.session,
            "steps": [
                {
                    "step": s.label,
                    "run": s.run_id,
                    "action": s.action,
                    "new_run": s.new_run,
                    "exit_code": s.exit_code,
                    "duration_s": round(s.duration_s, 3),
                    "note": s.note,
                    "verification": s.verification,
                    "outputs": [
                        {
                            "path": o.path,
                            "hash": o.expected,
                            "new_hash": o.actual,
                            "status": o.status,
                        }
                        for o in s.outputs
                    ],
                }
                for s in self.steps
            ],
            "artifacts": [
                {"step": s.label, "path": o.path, "hash": o.expected, "status": o.status}
                for s in self.steps
                for o in s.outputs
            ],
            "warnings": list(self.warnings),
        }


# -- events, for the CLI's progress lines ----------------------------------------------------

Event = Callable[[str, dict[str, Any]], None]
Confirm = Callable[[PlanStep], bool]


def _quiet(_kind: str, _data: dict[str, Any]) -> None:
    return None


# -- the worktree --------------------------------------------------------------------------


def worktree_dir(paths: RepoPaths, target: str) -> Path:
    return paths.roar_dir / WORKTREES / target[:16]


def prepare_worktree(paths: RepoPaths, where: Path, commit: str | None) -> RepoPaths:
    """A fresh detached worktree at `where` (an old one there is removed first)."""
    if where.exists() or (paths.common_dir / "worktrees" / where.name).exists():
        run_git(["worktree", "remove", "--force", str(where)], paths.root, check=False)
        if where.exists():
            shutil.rmtree(where)
        run_git(["worktree", "prune"], paths.root, check=False)
    where.parent.mkdir(parents=True, exist_ok=True)
    start = commit or "HEAD"
    run_git(["worktree", "add", "--detach", "--no-checkout", "-q", str(where), start], paths.root)
    return find_repo(where)


def checkout_code(wt: RepoPaths, step: PlanStep) -> None:
    """HEAD at the step's commit (when present), index and files at its exact tree."""
    code = step.run.code
    if code.commit and step.commit_available:
        run_git(["update-ref", "--no-deref", "HEAD", code.commit], wt.root)
    run_git(["read-tree", "-u", "--reset", code.tree or "HEAD"], wt.root)


# -- materialising inputs -------------------------------------------------------------------


class Materialiser:
    """Puts recorded bytes at a path below a `Root`, verified, from wherever they can be had.
    Every write goes through the root (pathguard): it never follows a link out of it."""

    def __init__(self, user: RepoPaths, cache: HashCache, stores: Sequence[BlobStore]):
        self.user = user
        self.ledger = Ledger(user)
        self.cache = cache
        self.stores = stores
        self.made: dict[str, str] = {}  # hash -> a file in the worktree with those bytes
        self.code_state: tuple[str | None, str | None] | None = None  # checked out now

    def has(self, path: str, digest: str) -> bool:
        found = self.cache.hash_many([path], missing_ok=True).get(path)
        return found is not None and found.digest == digest

    def put(
        self, digest: str, root: Root, rel: str, recorded: str, *, work_tree: bool = True
    ) -> str:
        """Make `rel` below `root` hold `digest`; returns where the bytes came from.
        FileNotFoundError when no copy is found (`work_tree`: look at `recorded` in the
        user's work tree too)."""
        dest = os.path.join(root.path, rel)
        if self.has(dest, digest):
            return "in place"  # nothing to write (even if a link leads there)
        root.preflight(rel)
        candidates = []
        if digest in self.made:
            candidates.append(("step", self.made[digest]))
        if work_tree and recorded and not recorded.startswith("/"):
            candidates.append(("worktree", str(self.user.root / recorded)))
        for how, src in candidates:
            if src != dest and self.has(src, digest):
                root.copy_in(rel, src)
                if self.has(dest, digest):
                    return how
        corrupt: BlobCorrupt | StoreDenied | None = None
        for store in self.stores:
            try:
                root.write(rel, _filler(store, digest))
            except BlobMissing:
                continue
            # Never used; another store may hold good bytes, or let this user read them.
            except (BlobCorrupt, StoreDenied) as exc:
                corrupt = exc
                continue
            return f"store {location(store.url)}"
        if corrupt is not None:
            raise corrupt
        raise FileNotFoundError(digest)

    def put_ref(self, f: FileRef, root: Root, label: str) -> str:
        source = root.source
        if f.path.startswith("/"):
            pathguard.check(f.path, source, absolute_ok=True)
            if f.kind == "file" and self.has(f.path, f.hash):
                return "in place"
            raise InputUnavailable(label, f, "it lies outside the repository and has changed")
        rel = pathguard.check(f.path, source)
        try:
            if f.kind != "dir":
                return self.put(f.hash, root, rel, rel)
            entries = self.manifest(f.hash, rel, root)
            hows = {self.put(e.hash, root, p, p) for e, p in entries}
            return ", ".join(sorted(hows))
        except FileNotFoundError:
            raise InputUnavailable(label, f, "no copy with those bytes was found") from None

    def manifest(self, digest: str, folder: str, root: Root) -> list[tuple[Any, str]]:
        """A folder artifact's entries, each with its path below `root` (`folder/entry`),
        every one checked and pre-flighted before any is written."""

        data = self.ledger.manifest(digest)
        if data is None:
            raise FileNotFoundError(digest)
        src = root.source
        entries = [
            (e, pathguard.join(folder, e.path, src) if folder else pathguard.check(e.path, src))
            for e in decode_manifest(data, f"manifest {digest[:12]}", digest=digest)
        ]
        for _e, rel in entries:
            root.preflight(rel)
        return entries


# -- running the plan ------------------------------------------------------------------------


def execute(
    paths: RepoPaths,
    plan: Plan,
    *,
    confirm: Confirm | None = None,
    on_event: Event = _quiet,
    out: Path | None = None,
    force: bool = False,
    env: dict[str, str] | None = None,
) -> Report:
    """Run `plan` in an isolated worktree; see the module docstring."""

    if not plan.ok:
        raise PlanIncomplete(plan)
    roar_dir = ensure_roar_dir(paths)
    cache = HashCache(roar_dir)
    if out is not None and out.exists() and not force and not _holds(cache, out, plan.target):
        raise DestinationExists(out)
    _check_out(out)
    ledger = Ledger(paths)
    stores = stores_for(paths)
    todo = [s for s in plan.steps if s.action == "run"]
    first_commit = next(
        (s.run.code.commit for s in todo if s.run.code.commit and s.commit_available), None
    )
    where = worktree_dir(paths, plan.target)
    wt = prepare_worktree(paths, where, first_commit)
    sid = ledger.append_session(SessionRecord(time.time_ns(), clone_id(paths), None))
    mat = Materialiser(paths, cache, stores)
    clone = clone_id(paths)
    results: list[StepResult] = []
    report = Report(plan.target, "missing", None, str(where), sid, results, None, [])
    stopped = ""
    for step in plan.steps:
        if step.action == "reuse":
            results.append(
                StepResult(step.label, step.run_id, "reused", note="its outputs are available")
            )
            continue
        if stopped:
            results.append(StepResult(step.label, step.run_id, "not run", note=stopped))
            continue
        if confirm is not None and not confirm(step):
            stopped = "stopped before it"
            results.append(StepResult(step.label, step.run_id, "skipped by user"))
            continue
        on_event("step", {"step": step.label, "command": list(step.run.argv)})
        result = _run_step(wt, step, mat, sid, env, record_run, on_event, clone)
        results.append(result)
        if result.action == "failed":
            stopped = f"{step.label} failed"
    _conclude(report, plan, where)
    if out is not None and report.target_path is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with Root(out.parent) as dest:
            report.copied_to = dest.copy_in(out.name, report.target_path)
    return report


def _filler(store: BlobStore, digest: str) -> Callable[[BinaryIO], None]:
    return lambda f: store.write_to(digest, f.write)


def _holds(cache: HashCache, path: Path, digest: str) -> bool:
    """Whether `path` is a file (not a link) that holds those bytes already: copying the
    same bytes over it replaces nothing."""
    if path.is_symlink() or not path.is_file():
        return False
    found = cache.hash_many([str(path)], missing_ok=True).get(str(path))
    return found is not None and found.digest == digest


def _check_out(out: Path | None) -> None:
    """Refuse an `-o` path that could not be written (a link there, say) before any step runs."""
    if out is not None and out.parent.is_dir():
        with Root(out.parent) as dest:
            dest.preflight(out.name)


def _run_step(
    wt: RepoPaths,
    step: PlanStep,
    mat: Materialiser,
    sid: SessionId,
    env: dict[str, str] | None,
    record_run: Callable[..., Any],
    on_event: Event,
    clone: str,
) -> StepResult:
    rec = step.run
    # Consecutive steps usually share a code state: two git processes saved per step.
    state = (rec.code.commit, rec.code.tree)
    if mat.code_state != state:
        checkout_code(wt, step)
        mat.code_state = state
    # A fresh root each step: the checkout above may have replaced any folder below it.
    source = pathguard.source_of(mat.ledger, step.run_id)
    with Root(wt.root, source) as root:
        for i in step.inputs:
            how = mat.put_ref(i.file, root, step.label)
            on_event("input", {"step": step.label, "path": i.file.path, "from": how})
        for folder in layout(rec):
            # One already there (a committed link to a dataset folder, say) is left as it is.
            if not os.path.isdir(os.path.join(root.path, folder)):
                root.makedirs(folder)
        cwd = Path(root.makedirs(rec.cwd))
    t0 = time.perf_counter()
    # Filed as no producer: a reproduction attests to the original run (its verification,
    # below), it does not replace it in the lineage. `> out.jsonl` and the like, again.
    with stdio.pointed_again(rec.redirects, wt.root, source) as redirects:
        outcome = record_run(
            wt,
            list(rec.argv),
            cwd,
            kind=rec.kind,
            step=rec.step,
            env=env,
            session_id=sid,
            index=False,
            streams=redirects,
        )
    took = time.perf_counter() - t0
    new = {f.path: f for f in outcome.record.outputs}
    checks = []
    for f in rec.outputs:
        got = new.get(f.path)
        if got is None:
            status, actual = "missing", None
        else:
            status = "identical" if got.hash == f.hash else "differs"
            actual = got.hash
            if f.kind == "file":
                mat.made[got.hash] = str(_abs(wt.root, f.path))
            else:
                _remember_folder(mat, wt, f.path, got.hash)
        checks.append(OutputCheck(f.path, f.hash, actual, status))
    failed = outcome.record.exit_code != 0
    vid = mat.ledger.append_verification(verification_of(step.run_id, outcome, checks, clone))
    on_event(
        "done",
        {
            "step": step.label,
            "exit_code": outcome.record.exit_code,
            "identical": sum(c.status == "identical" for c in checks),
            "outputs": len(checks),
        },
    )
    return StepResult(
        step.label,
        step.run_id,
        "failed" if failed else "ran",
        outcome.run_id,
        outcome.record.exit_code,
        took,
        checks,
        f"exit status {outcome.record.exit_code}" if failed else "",
        vid,
    )


#: What a verification keeps of the environment a step ran in: what it ran with, not the
#: variables of the shell it ran from (the reproduction's own run record holds those).
_ENV_SUMMARY = ("python", "os", "arch", "cpu", "gpus", "packages")


def verification_of(
    original: RunId, outcome: Any, checks: Sequence[OutputCheck], clone: str
) -> VerificationRecord:
    """The verification of `original` by the reproduction `outcome` (its run's record says
    who ran it, as roar run records it, withheld as roar.share.* say)."""
    new = outcome.record
    if new.exit_code != 0:
        result = "failed"
    elif all(c.status == "identical" for c in checks):
        result = "identical"
    else:
        result = "differs"
    env = {k: v for k, v in new.environment.items() if k in _ENV_SUMMARY}
    return VerificationRecord(
        run=original,
        result=result,
        outputs=tuple(
            VerifiedOutput(
                c.path,
                ArtifactId(c.expected),
                ArtifactId(c.actual) if c.actual else None,
                c.status,
            )
            for c in checks
        ),
        exit_code=new.exit_code,
        started_at=new.started_at,
        ended_at=new.ended_at,
        by=new.recorded_by or Identity("", "", ""),
        clone=clone,
        code=new.code,
        environment=env,
        reproduction=outcome.run_id,
    )


def layout(rec: RunRecord) -> list[str]:
    """The folders inside the repository that the run's files lay in: the folder of each
    input and output, and each folder it recorded whole. A worktree or a fresh clone lacks
    the untracked ones (`work/`, `features/`) that commands write into without making them.
    A folder the run made itself (`created_dirs`) is left for the command to make again
    (`mkdir out` fails on one that is there): the folder that held it is made instead.
    Absolute paths lie outside the repository and are never made."""
    made = set(rec.created_dirs)

    def before_the_run(folder: str) -> str:
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            if "/".join(parts[:i]) in made:
                return "/".join(parts[: i - 1])
        return folder

    folders: set[str] = set()
    for f in (*rec.inputs, *rec.outputs):
        if f.path.startswith("/"):
            continue
        folder = f.path.rstrip("/") if f.kind == "dir" else f.path.rpartition("/")[0]
        if folder:
            folders.add(before_the_run(folder))
    folders.update(before_the_run(d.rpartition("/")[0]) for d in made)
    folders.discard("")
    return sorted(folders)


def _abs(root: Path, recorded: str) -> Path:
    return Path(pathguard.abs_path(recorded.rstrip("/"), root))


def _remember_folder(mat: Materialiser, wt: RepoPaths, recorded: str, digest: str) -> None:
    data = Ledger(wt).manifest(digest)
    if data is None:
        return
    base = _abs(wt.root, recorded)
    for e in decode_manifest(data, f"manifest {digest[:12]}", digest=digest):
        mat.made[e.hash] = str(base / e.path)


def _conclude(report: Report, plan: Plan, where: Path) -> None:
    final = next((s for s in reversed(plan.steps) if s.action == "run"), None)
    for r in report.steps:
        if final is None or r.run_id != final.run_id:
            continue
        for o in r.outputs:
            if o.expected == plan.target:
                # Bytes a failing command left are no reproduction, identical or not (the
                # original run may have failed the same way).
                report.target_status = "failed" if r.action == "failed" else o.status
                if o.actual is not None:
                    report.target_path = str(_abs(where, o.path))
