"""The records roargit keeps: runs, sessions and verifications, as frozen plain data.

NamedTuples rather than frozen dataclasses: `roar run` pays for every class made at import
(a frozen dataclass costs several times a NamedTuple to define) and for every instance (a
big run makes 100,000 FileRefs, and a frozen dataclass's __init__ is the slower one).

A record is immutable; its id is the BLAKE3 of its canonical encoding (see codec.py and
docs/record-format.md). `to_map` / `decode` are the only translation to and from the wire
shape. Records arrive from other clones, so `decode` is a gate: every field is checked
against the schema (type, presence, size, allowed values) before a record object exists, and
anything else is refused with one `RecordCorrupt` naming the record, where it came from and
the dotted path of the field (`environment.os must be a map`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from roargit import TYPE_CHECKING, codec
from roargit.errors import RecordCorrupt
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

    @classmethod
    def _read(cls, m: Any) -> FileRef:
        # A run may list 100,000 files: the common, valid entry is checked in one expression;
        # anything else takes the field-by-field path below, which names what is wrong.
        if type(m) is dict:
            path, digest, size = m.get("path"), m.get("hash"), m.get("size")
            kind, not_stored = m.get("kind", "file"), m.get("not_stored", "")
            if (
                type(path) is str
                and path
                and "\0" not in path
                and type(digest) is str
                and len(digest) == 64
                and not digest.strip("0123456789abcdef")
                and type(size) is int
                and 0 <= size <= codec.INT64_MAX
                and (kind == "file" or kind == "dir")
                and type(kind) is str
                and type(not_stored) is str
            ):
                return cls(path, ArtifactId(digest), size, kind, not_stored)
        m = _as_map(m)
        return cls(
            path=_path(m, "path"),
            hash=ArtifactId(_hex(m, "hash")),
            size=_int(m, "size", 0),
            kind=_choice(m, "kind", FILE_KINDS, "file"),
            not_stored=_str(m, "not_stored", ""),
        )


class Unreadable(NamedTuple):
    """A file the run read or wrote that roargit could not read back (no hash to give)."""

    path: str
    access: str  # "input" or "output"
    size: int  # -1 when not even its size could be read
    reason: str

    def to_map(self) -> dict[str, Any]:
        return {"path": self.path, "access": self.access, "size": self.size, "reason": self.reason}

    @classmethod
    def _read(cls, m: Any) -> Unreadable:
        m = _as_map(m)
        return cls(
            path=_path(m, "path"),
            access=_choice(m, "access", UNREADABLE_ACCESS),
            size=_int(m, "size", -1),
            reason=_str(m, "reason"),
        )


class CodeInput(NamedTuple):
    """A git-tracked file the run read, by its git blob id (so diffs can show its lines)."""

    path: str
    blob: str

    def to_map(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob}

    @classmethod
    def _read(cls, m: Any) -> CodeInput:
        m = _as_map(m)
        return cls(path=_path(m, "path"), blob=_git_oid(m, "blob"))


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

    @classmethod
    def _read(cls, m: Any) -> CodeState:
        m = _as_map(m)
        return cls(
            commit=_opt_git_oid(m, "commit"),
            branch=_opt_str(m, "branch"),
            dirty=_bool(m, "dirty"),
            tree=_opt_git_oid(m, "tree"),
            inputs=_items(m, "inputs", CodeInput._read),
        )


class Identity(NamedTuple):
    """Who recorded a run: git's user.name and user.email, and the host; each "" when unknown
    or withheld (roar.share.user, roar.share.hostname)."""

    name: str
    email: str
    host: str

    def to_map(self) -> dict[str, Any]:
        return {"name": self.name, "email": self.email, "host": self.host}

    @classmethod
    def _read(cls, m: Any) -> Identity:
        m = _as_map(m)
        return cls(name=_str(m, "name"), email=_str(m, "email"), host=_str(m, "host"))


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

    @classmethod
    def from_map(cls, m: Any, name: str, source: str | None = None) -> RunRecord:
        """The run in a decoded record map, checked field by field (see `decode`)."""
        with _refusing(name, source):
            return cls._read(m)

    @classmethod
    def _read(cls, m: Any) -> RunRecord:
        m = _as_map(m)
        if m.get("type") != "run":
            raise _Bad("type", 'must be "run"')
        argv = _list(m, "argv")
        if len(argv) > MAX_ARGV:
            raise _Bad("argv", f"must hold at most {MAX_ARGV} words")
        for i, word in enumerate(argv):
            if not isinstance(word, str):
                raise _Bad(f"argv[{i}]", "must be a string")
        return cls(
            argv=tuple(argv),
            cwd=_path(m, "cwd"),
            started_at=_int(m, "started_at"),
            ended_at=_int(m, "ended_at"),
            exit_code=_int(m, "exit_code"),
            status=_choice(m, "status", RUN_STATUSES),
            inputs=_items(m, "inputs", FileRef._read),
            outputs=_items(m, "outputs", FileRef._read),
            code=_sub(m, "code", CodeState._read),
            session=SessionId(_hex(m, "session")),
            step=_int(m, "step", 0),
            kind=_choice(m, "kind", RUN_KINDS),
            capture=_choice(m, "capture", CAPTURE_MODES),
            complete=_bool(m, "complete"),
            environment=_sub(m, "environment", _environment, {}),
            unreadable=_items(m, "unreadable", Unreadable._read, optional=True),
            recorded_by=_sub(m, "recorded_by", Identity._read) if "recorded_by" in m else None,
            redirects=_sub(m, "redirects", _redirects, {}),
            created_dirs=_paths(m, "created_dirs"),
        )


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

    @classmethod
    def from_map(cls, m: Any, name: str, source: str | None = None) -> SessionRecord:
        """The session in a decoded record map, checked field by field (see `decode`)."""
        with _refusing(name, source):
            return cls._read(m)

    @classmethod
    def _read(cls, m: Any) -> SessionRecord:
        m = _as_map(m)
        if m.get("type") != "session":
            raise _Bad("type", 'must be "session"')
        parent = m.get("parent")
        if parent is not None:
            parent = _hex(m, "parent")
        return cls(
            created_at=_int(m, "created_at"),
            clone=_str(m, "clone"),
            parent=SessionId(parent) if parent is not None else None,
        )


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

    @classmethod
    def _read(cls, m: Any) -> VerifiedOutput:
        m = _as_map(m)
        new_hash = m.get("new_hash")
        return cls(
            path=_path(m, "path"),
            hash=ArtifactId(_hex(m, "hash")),
            new_hash=ArtifactId(_hex(m, "new_hash")) if new_hash is not None else None,
            status=_choice(m, "status", VERIFIED_STATUSES),
        )


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

    @classmethod
    def from_map(cls, m: Any, name: str, source: str | None = None) -> VerificationRecord:
        """The verification in a decoded record map, checked field by field (see `decode`)."""
        with _refusing(name, source):
            return cls._read(m)

    @classmethod
    def _read(cls, m: Any) -> VerificationRecord:
        m = _as_map(m)
        if m.get("type") != "verification":
            raise _Bad("type", 'must be "verification"')
        reproduction = m.get("reproduction")
        return cls(
            run=RunId(_hex(m, "run")),
            result=_choice(m, "result", VERIFICATION_RESULTS),
            outputs=_items(m, "outputs", VerifiedOutput._read),
            exit_code=_int(m, "exit_code"),
            started_at=_int(m, "started_at"),
            ended_at=_int(m, "ended_at"),
            by=_sub(m, "by", Identity._read),
            clone=_str(m, "clone"),
            code=_sub(m, "code", CodeState._read),
            environment=_sub(m, "environment", _environment, {}),
            reproduction=RunId(_hex(m, "reproduction")) if reproduction is not None else None,
        )


Record = RunRecord | SessionRecord | VerificationRecord


def encode(record: Record) -> bytes:
    return codec.encode(record.to_map())


def decode(data: bytes, name: str, source: str | None = None) -> Record:
    """The record in `data`, or RecordCorrupt / RecordTooNew: never another exception,
    whatever the bytes. `name` says which object it is (e.g. `run 3fa9c1d2e4b5`) and
    `source` the remote it was fetched from (None: recorded here)."""
    m = codec.decode(data, name, source)
    kind = m.get("type")
    if kind == "run":
        return RunRecord.from_map(m, name, source)
    if kind == "session":
        return SessionRecord.from_map(m, name, source)
    if kind == "verification":
        return VerificationRecord.from_map(m, name, source)
    raise RecordCorrupt(
        name, 'must be "run", "session" or "verification"', source=source, field="type"
    )


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

    @classmethod
    def _read(cls, m: Any) -> StepIndex:
        m = _as_map(m)
        if m.get("type") != "step":
            raise _Bad("type", 'must be "step"')
        return cls(
            run=RunId(_hex(m, "run")),
            session=SessionId(_hex(m, "session")),
            kind=_choice(m, "kind", RUN_KINDS),
            step=_int(m, "step", 0),
            status=_choice(m, "status", RUN_STATUSES),
            started_at=_int(m, "started_at"),
            argv=_hex(m, "argv"),
            inputs=_hex(m, "inputs"),
            outputs=_hex(m, "outputs"),
        )


def encode_step_index(entry: StepIndex) -> bytes:
    return codec.encode(entry.to_map())


def decode_step_index(data: bytes, name: str, source: str | None = None) -> StepIndex:
    """The index entry in `data`, or RecordCorrupt / RecordTooNew, as `decode` gates records."""
    m = codec.decode(data, name, source)
    with _refusing(name, source):
        return StepIndex._read(m)


# -- the environment map ----------------------------------------------------------------
# What `Environment.to_dict` writes, and what readers (plan, diff, views, the CLI) take from
# it. Every key is optional (an older writer wrote fewer); a key this roargit does not know
# may hold any plain value (nil, booleans, int64s, strings, lists, string-keyed maps).

_ENV_STRINGS = ("arch", "hostname", "user")
_ENV_SUBMAPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # key: (string fields, integer fields)
    "python": (("implementation", "version", "executable"), ()),
    "os": (("system", "release", "distro"), ()),
    "cpu": (("model",), ("count",)),
}
_GPU_FIELDS: tuple[tuple[str, ...], tuple[str, ...]] = (("name", "driver"), ("memory_mib",))
_ENV_STRMAPS = ("env_vars", "packages")


def check_environment(m: Any, name: str, source: str | None = None) -> dict[str, Any]:
    """`m` as a run's environment map, checked as `decode` checks it; RecordCorrupt naming
    the field (`environment.os must be a map`) otherwise."""
    with _refusing(name, source):
        try:
            return _environment(dict(m) if isinstance(m, Mapping) else m)
        except _Bad as bad:
            raise bad.under("environment") from None


def _environment(m: Any) -> dict[str, Any]:
    m = _as_map(m)
    for key, value in m.items():
        if key in _ENV_STRINGS:
            _str(m, key)
        elif key in _ENV_SUBMAPS:
            strings, ints = _ENV_SUBMAPS[key]
            _sub(m, key, lambda v, s=strings, i=ints: _fields(v, s, i))
        elif key == "gpus":
            _items(m, key, lambda v: _fields(v, *_GPU_FIELDS))
        elif key in _ENV_STRMAPS:
            _sub(m, key, _str_map)
        else:
            _unknown(key, value)
    return m


def _fields(m: Any, strings: tuple[str, ...], ints: tuple[str, ...]) -> dict[str, Any]:
    m = _as_map(m)
    for key, value in m.items():
        if key in strings:
            _str(m, key)
        elif key in ints:
            _int(m, key)
        else:
            _unknown(key, value)
    return m


def _unknown(key: Any, value: Any) -> None:
    """A key this roargit does not read: it must still be plain data, for those who print it."""
    if not isinstance(key, str):
        raise _Bad("", "must have string keys")
    try:
        _plain(value)
    except _Bad as bad:
        raise bad.under(_key(key)) from None


def _str_map(m: Any) -> dict[str, str]:
    m = _as_map(m)
    for key, value in m.items():
        if not isinstance(key, str):
            raise _Bad("", "must have string keys")
        if not isinstance(value, str):
            raise _Bad(_key(key), "must be a string")
    return m


def _plain(value: Any, depth: int = 0) -> Any:
    """`value` if it is plain data (as JSON would hold it, with int64s and no floats)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not codec.INT64_MIN <= value <= codec.INT64_MAX:
            raise _Bad("", "must be an integer within int64")
        return value
    if depth >= MAX_DEPTH:
        raise _Bad("", f"must nest at most {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        for i, item in enumerate(value):
            try:
                _plain(item, depth + 1)
            except _Bad as bad:
                raise bad.under(f"[{i}]") from None
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad("", "must have string keys")
            try:
                _plain(item, depth + 1)
            except _Bad as bad:
                raise bad.under(_key(key)) from None
        return value
    raise _Bad("", "must be nil, a boolean, an integer, a string, a list or a map")


# -- field checks -------------------------------------------------------------------------
# Each raises _Bad with the (relative) path of the field it refused and what the field must
# be; containers prefix their own path on the way out, and `_refusing` turns the result into
# one RecordCorrupt. No message quotes a value from the record: it may be anything.


class _Bad(Exception):
    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why

    def under(self, parent: str) -> _Bad:
        if not self.field:
            self.field = parent
        elif self.field.startswith("["):
            self.field = parent + self.field
        else:
            self.field = f"{parent}.{self.field}"
        return self


class _refusing:
    """Turns a _Bad raised inside into the record's RecordCorrupt."""

    def __init__(self, name: str, source: str | None) -> None:
        self.name = name
        self.source = source

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, bad: BaseException | None, tb: object) -> None:
        if isinstance(bad, _Bad):
            raise RecordCorrupt(
                self.name, bad.why, source=self.source, field=bad.field or "record"
            ) from None


_SAFE_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _key(key: str) -> str:
    """A map key as a field-path step: plain names as they are, others quoted and escaped
    (a key may hold control characters, and messages are one line)."""
    if key and len(key) <= 64 and all(c in _SAFE_KEY for c in key):
        return key
    shown = key if len(key) <= 64 else key[:61] + "..."
    return "[" + ascii(shown) + "]"


def _as_map(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise _Bad("", "must be a map")
    return m


def _get(m: dict[str, Any], key: str) -> Any:
    try:
        return m[key]
    except KeyError:
        raise _Bad(key, "is missing") from None


def _str(m: dict[str, Any], key: str, default: str | None = None) -> str:
    value = m.get(key, default) if default is not None else _get(m, key)
    if not isinstance(value, str):
        raise _Bad(key, "must be a string")
    return value


def _opt_str(m: dict[str, Any], key: str) -> str | None:
    value = m.get(key)
    if value is not None and not isinstance(value, str):
        raise _Bad(key, "must be a string or nil")
    return value


STREAMS = ("stdin", "stdout", "stderr")


def _paths(m: dict[str, Any], key: str) -> tuple[str, ...]:
    """An optional list of paths (each as `_path` takes one)."""
    if key not in m:
        return ()
    items = _list(m, key)
    if len(items) > MAX_ARGV:
        raise _Bad(key, f"must hold at most {MAX_ARGV} paths")
    return tuple(_path({key: v}, key) for v in items)


def _redirects(value: Any) -> Mapping[str, str]:
    m = _as_map(value)
    for key in m:
        if key not in STREAMS:
            raise _Bad("", f"keys must be {', '.join(STREAMS)}")
        _path(m, key)
    return MappingProxyType(dict(m))


def _path(m: dict[str, Any], key: str) -> str:
    value = _get(m, key)
    if not isinstance(value, str) or not value or "\0" in value:
        raise _Bad(key, "must be a non-empty string without NUL")
    return value


def _hex(m: dict[str, Any], key: str) -> str:
    value = _get(m, key)
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise _Bad(key, "must be 64 lowercase hex digits")
    return value


def _is_git_oid(value: Any) -> bool:
    # SHA-1 repositories name objects with 40 hex digits, SHA-256 ones with 64.
    return isinstance(value, str) and len(value) in (40, 64) and not value.strip("0123456789abcdef")


def _git_oid(m: dict[str, Any], key: str) -> str:
    value = _get(m, key)
    if not _is_git_oid(value):
        raise _Bad(key, "must be a git object id (40 or 64 lowercase hex digits)")
    return str(value)


def _opt_git_oid(m: dict[str, Any], key: str) -> str | None:
    value = m.get(key)
    if value is not None and not _is_git_oid(value):
        raise _Bad(key, "must be nil or a git object id (40 or 64 lowercase hex digits)")
    return value


def _int(m: dict[str, Any], key: str, minimum: int = codec.INT64_MIN) -> int:
    value = _get(m, key)
    if type(value) is not int or not minimum <= value <= codec.INT64_MAX:
        if minimum == codec.INT64_MIN:
            raise _Bad(key, "must be an integer within int64")
        raise _Bad(key, f"must be an integer from {minimum} to 2**63-1")
    return value


def _bool(m: dict[str, Any], key: str) -> bool:
    value = _get(m, key)
    if not isinstance(value, bool):
        raise _Bad(key, "must be a boolean")
    return value


def _choice(
    m: dict[str, Any], key: str, choices: tuple[str, ...], default: str | None = None
) -> str:
    value = m.get(key, default) if default is not None else _get(m, key)
    if not isinstance(value, str) or value not in choices:
        raise _Bad(key, "must be one of " + ", ".join(f'"{c}"' for c in choices))
    return value


def _list(m: dict[str, Any], key: str) -> list[Any]:
    value = _get(m, key)
    if not isinstance(value, list):
        raise _Bad(key, "must be a list")
    return value


def _sub(m: dict[str, Any], key: str, read: Any, default: Any = None) -> Any:
    """`read` of the value under `key` (missing: `default`, or refused when that is None)."""
    value = m.get(key, default) if default is not None else _get(m, key)
    try:
        return read(value)
    except _Bad as bad:
        raise bad.under(key) from None


def _items(m: dict[str, Any], key: str, read: Any, optional: bool = False) -> tuple[Any, ...]:
    """`read` of each item of the list under `key`, as a tuple."""
    if optional and key not in m:
        return ()
    value = _list(m, key)
    out: list[Any] = []
    try:
        for item in value:
            out.append(read(item))
    except _Bad as bad:
        raise bad.under(f"{key}[{len(out)}]") from None
    return tuple(out)
