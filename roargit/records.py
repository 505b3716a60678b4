"""The records roargit keeps: runs, sessions and verifications, as frozen plain data.

NamedTuples rather than frozen dataclasses: `roar run` pays for every class made at import
(a frozen dataclass costs several times a NamedTuple to define) and for every instance (a
big run makes 100,000 FileRefs, and a frozen dataclass's __init__ is the slower one).

A record is immutable; its id is the BLAKE3 of its canonical encoding (see codec.py and
docs/record-format.md). `to_map` / `decode` are the only translation to and from the wire
shape. Records arrive from other clones, so `decode` is a gate: every field is checked
against the schema (type, presence, size, allowed values) before a record object exists, and
anything else is refused with one `RecordCorrupt` naming the record, where it came from and
the dotted path of the field (`environment.os must be a map`). The field checks are in
record_fields.py, with the readers that make record objects from a checked map, imported by
`decode` when it runs: `roar run` writes records and reads none, and its start-up pays for
every module it loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from roargit import TYPE_CHECKING, codec
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any, NewType

    RunId = NewType("RunId", str)
    SessionId = NewType("SessionId", str)
    ArtifactId = NewType("ArtifactId", str)
else:  # what NewType gives at run time, without importing typing (roargit.TYPE_CHECKING)
    RunId = SessionId = ArtifactId = str

RUN_KINDS = ("run", "build")
RUN_STATUSES = ("ok", "failed", "interrupted", "terminated")
CAPTURE_MODES = ("ptrace", "fallback")
FILE_KINDS = ("file", "dir")
UNREADABLE_ACCESS = ("input", "output")

#: The most words a command line may have (Linux's own limit, ARG_MAX, allows about this many
#: short words; more is not a command anyone ran).
MAX_ARGV = 100_000
#: How deeply an environment value that this roargit does not know may nest.
MAX_DEPTH = 32
#: The standard streams a run's redirects may name (RunRecord.redirects).
STREAMS = ("stdin", "stdout", "stderr")


class FileRef(NamedTuple):
    """A file (or, with kind "dir", a folder recorded by its manifest) a run read or wrote."""

    path: str
    hash: ArtifactId
    size: int
    kind: str = "file"
    # Why an output's bytes are in no store ("" when they are, or were never meant to be):
    # the record lands even when the store fails (the upload is queued and retried).
    not_stored: str = ""

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {"path": self.path, "hash": self.hash, "size": self.size}
        if self.kind != "file":
            m["kind"] = self.kind
        if self.not_stored:
            m["not_stored"] = self.not_stored
        return m


class Unreadable(NamedTuple):
    """A file the run read or wrote that roargit could not read back (no hash to give)."""

    path: str
    access: str  # "input" or "output"
    size: int  # -1 when not even its size could be read
    reason: str

    def to_map(self) -> dict[str, Any]:
        return {"path": self.path, "access": self.access, "size": self.size, "reason": self.reason}


class CodeInput(NamedTuple):
    """A git-tracked file the run read, by its git blob id (so diffs can show its lines)."""

    path: str
    blob: str

    def to_map(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob}


class CodeState(NamedTuple):
    """HEAD at run time; `tree` is the git tree the run saw (a snapshot when dirty)."""

    commit: str | None
    branch: str | None
    dirty: bool
    tree: str | None
    inputs: tuple[CodeInput, ...] = ()

    def to_map(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "branch": self.branch,
            "dirty": self.dirty,
            "tree": self.tree,
            "inputs": [i.to_map() for i in self.inputs],
        }


class Identity(NamedTuple):
    """Who recorded a run: git's user.name and user.email, and the host; each "" when unknown
    or withheld (roar.share.user, roar.share.hostname)."""

    name: str
    email: str
    host: str

    def to_map(self) -> dict[str, Any]:
        return {"name": self.name, "email": self.email, "host": self.host}


class RunRecord(NamedTuple):
    argv: tuple[str, ...]
    cwd: str
    started_at: int  # ns since the epoch
    ended_at: int
    exit_code: int
    status: str
    inputs: tuple[FileRef, ...]
    outputs: tuple[FileRef, ...]
    code: CodeState
    session: SessionId
    step: int
    kind: str = "run"
    capture: str = "ptrace"  # how accesses were seen: "ptrace" or "fallback"
    complete: bool = True  # False: the capture may have missed accesses (see warnings)
    environment: Mapping[str, Any] = MappingProxyType({})
    unreadable: tuple[Unreadable, ...] = ()  # written only when there are some (ids unchanged)
    recorded_by: Identity | None = None  # written only when known (older records have none)
    # The files the shell redirected the command's standard streams to ("stdin", "stdout",
    # "stderr" → recorded path; stdio.py), for reproduction to redirect them again. Written
    # only when there are some.
    redirects: Mapping[str, str] = MappingProxyType({})
    # Folders inside the work tree that the run made itself, outermost only: reproduction
    # leaves them for the command to make (`mkdir out` fails on one that is there). Written
    # only when there are some.
    created_dirs: tuple[str, ...] = ()

    @property
    def duration_ns(self) -> int:
        return max(0, self.ended_at - self.started_at)

    def to_map(self) -> dict[str, Any]:
        m = {
            "type": "run",
            "kind": self.kind,
            "argv": list(self.argv),
            "cwd": self.cwd,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "status": self.status,
            "inputs": [f.to_map() for f in self.inputs],
            "outputs": [f.to_map() for f in self.outputs],
            "code": self.code.to_map(),
            "session": self.session,
            "step": self.step,
            "capture": self.capture,
            "complete": self.complete,
            "environment": dict(self.environment),
        }
        if self.unreadable:
            m["unreadable"] = [u.to_map() for u in self.unreadable]
        if self.recorded_by is not None:
            m["recorded_by"] = self.recorded_by.to_map()
        if self.redirects:
            m["redirects"] = dict(self.redirects)
        if self.created_dirs:
            m["created_dirs"] = list(self.created_dirs)
        return m


class SessionRecord(NamedTuple):
    """The start of a pipeline in one clone; runs name it and number their steps within it."""

    created_at: int
    clone: str  # random id of the clone that started it
    parent: SessionId | None = None

    def to_map(self) -> dict[str, Any]:
        return {
            "type": "session",
            "created_at": self.created_at,
            "clone": self.clone,
            "parent": self.parent,
        }


VERIFIED_STATUSES = ("identical", "differs", "missing")
VERIFICATION_RESULTS = ("identical", "differs", "failed")


class VerifiedOutput(NamedTuple):
    """One output of the original run, as a reproduction wrote it again."""

    path: str
    hash: ArtifactId  # as the original run recorded it
    new_hash: ArtifactId | None  # as reproduced; None when the reproduction did not write it
    status: str  # "identical", "differs" or "missing"

    def to_map(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "hash": self.hash,
            "new_hash": self.new_hash,
            "status": self.status,
        }


class VerificationRecord(NamedTuple):
    """A reproduction's attestation about an original run: its outputs came out identical or
    not, by whom, where and when, with which code and environment. It never makes the
    reproduction a producer of the artifacts: the original run stays theirs."""

    run: RunId  # the original run
    result: str  # "identical" (every output), "differs", or "failed" (the command failed)
    outputs: tuple[VerifiedOutput, ...]
    exit_code: int
    started_at: int  # ns since the epoch
    ended_at: int
    by: Identity  # who reproduced it, as a run's recorded_by
    clone: str  # random id of the clone it ran in (.git/roar/clone-id)
    code: CodeState  # the code state it ran with
    environment: Mapping[str, Any] = MappingProxyType({})
    reproduction: RunId | None = None  # the reproduction's own run record, filed as no producer

    def to_map(self) -> dict[str, Any]:
        return {
            "type": "verification",
            "run": self.run,
            "result": self.result,
            "outputs": [o.to_map() for o in self.outputs],
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "by": self.by.to_map(),
            "clone": self.clone,
            "code": self.code.to_map(),
            "environment": dict(self.environment),
            "reproduction": self.reproduction,
        }


Record = RunRecord | SessionRecord | VerificationRecord


def encode(record: Record) -> bytes:
    return codec.encode(record.to_map())


def decode(data: bytes, name: str, source: str | None = None) -> Record:
    """The record in `data`, or RecordCorrupt / RecordTooNew: never another exception,
    whatever the bytes. `name` says which object it is (e.g. `run 3fa9c1d2e4b5`) and
    `source` the remote it was fetched from (None: recorded here)."""
    import roargit.record_fields as fields  # here: `roar run` decodes no record

    return fields.read_record(codec.decode(data, name, source), name, source)


def identify(record: Record) -> tuple[str, bytes]:
    """The record's id and its canonical bytes."""
    data = encode(record)
    return codec.record_id(data), data


# -- the session index ----------------------------------------------------------------------


def argv_key(argv: Iterable[str]) -> str:
    """BLAKE3 of a command line (its canonical encoding): equal commands, equal keys."""
    return codec.record_id(codec.encode({"argv": list(argv)}))


def paths_key(paths: Iterable[str]) -> str:
    """BLAKE3 of a set of paths (sorted, NUL-separated): equal sets, equal keys."""
    encoded = {p.encode("utf-8", "surrogateescape") for p in paths}
    return codec.record_id(b"\0".join(sorted(encoded)))


class StepIndex(NamedTuple):
    """A run's entry in its session's index (`sessions/<ab>/<S>/<cd>/i.<R>`): what numbering a
    new run and telling a step's current run from the ones it superseded need, so that a run
    need not decode every earlier run of its session (a run's record may list 100,000 files).
    Derived from the run record: a reader checks it against that record before trusting it
    from another clone (ledger_check), and rebuilds it from the record where it is missing."""

    run: RunId
    session: SessionId
    kind: str
    step: int
    status: str
    started_at: int
    argv: str  # BLAKE3 of the canonical encoding of the argv list
    inputs: str  # paths_key of the input paths
    outputs: str  # paths_key of the output paths

    @classmethod
    def of_run(cls, run_id: str, record: RunRecord) -> StepIndex:
        return cls(
            RunId(run_id),
            record.session,
            record.kind,
            record.step,
            record.status,
            record.started_at,
            argv_key(record.argv),
            paths_key(f.path for f in record.inputs),
            paths_key(f.path for f in record.outputs),
        )

    def to_map(self) -> dict[str, Any]:
        return {
            "type": "step",
            "run": self.run,
            "session": self.session,
            "kind": self.kind,
            "step": self.step,
            "status": self.status,
            "started_at": self.started_at,
            "argv": self.argv,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }


def encode_step_index(entry: StepIndex) -> bytes:
    return codec.encode(entry.to_map())


def decode_step_index(data: bytes, name: str, source: str | None = None) -> StepIndex:
    """The index entry in `data`, or RecordCorrupt / RecordTooNew, as `decode` gates records."""
    import roargit.record_fields as fields  # here: `roar run` decodes no record

    return fields.read_step_index(codec.decode(data, name, source), name, source)
