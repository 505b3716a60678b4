"""The records roargit keeps: runs and sessions, as frozen plain data.

NamedTuples rather than frozen dataclasses: `roar run` pays for every class made at import
(about 1.4 ms for a frozen dataclass, 0.2 ms for a NamedTuple) and for every instance (a big
run makes 100,000 FileRefs).

A record is immutable; its id is the BLAKE3 of its canonical encoding (see codec.py and
docs/record-format.md). `to_map` / `from_map` are the only translation to the wire shape, and
`from_map` checks every field so that a damaged record is refused with its name, not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, NewType

from roargit import codec
from roargit.errors import RecordCorrupt

RunId = NewType("RunId", str)
SessionId = NewType("SessionId", str)
ArtifactId = NewType("ArtifactId", str)

RUN_KINDS = ("run", "build")
RUN_STATUSES = ("ok", "failed", "interrupted", "terminated")


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
    def from_map(cls, m: Any, name: str) -> FileRef:
        m = _map(m, name, "file entry")
        return cls(
            path=_str(m, "path", name),
            hash=ArtifactId(_hex(m, "hash", name)),
            size=_int(m, "size", name),
            kind=_str(m, "kind", name, default="file"),
            not_stored=_str(m, "not_stored", name, default=""),
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
    def from_map(cls, m: Any, name: str) -> Unreadable:
        m = _map(m, name, "unreadable entry")
        access = _str(m, "access", name)
        if access not in ("input", "output"):
            raise RecordCorrupt(name, f"unknown access {access!r} of an unreadable file")
        return cls(
            path=_str(m, "path", name),
            access=access,
            size=_int(m, "size", name),
            reason=_str(m, "reason", name),
        )


class CodeInput(NamedTuple):
    """A git-tracked file the run read, by its git blob id (so diffs can show its lines)."""

    path: str
    blob: str

    def to_map(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob}

    @classmethod
    def from_map(cls, m: Any, name: str) -> CodeInput:
        m = _map(m, name, "code input")
        return cls(path=_str(m, "path", name), blob=_str(m, "blob", name))


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
    def from_map(cls, m: Any, name: str) -> CodeState:
        m = _map(m, name, "code state")
        return cls(
            commit=_opt_str(m, "commit", name),
            branch=_opt_str(m, "branch", name),
            dirty=_bool(m, "dirty", name),
            tree=_opt_str(m, "tree", name),
            inputs=tuple(CodeInput.from_map(i, name) for i in _list(m, "inputs", name)),
        )


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

    @property
    def duration_ns(self) -> int:
        return max(0, self.ended_at - self.started_at)

    def to_map(self) -> dict[str, Any]:
        return {
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
        } | ({"unreadable": [u.to_map() for u in self.unreadable]} if self.unreadable else {})

    @classmethod
    def from_map(cls, m: Any, name: str) -> RunRecord:
        m = _map(m, name, "record")
        if m.get("type") != "run":
            raise RecordCorrupt(name, f"expected a run record, found type {m.get('type')!r}")
        kind = _str(m, "kind", name)
        status = _str(m, "status", name)
        if kind not in RUN_KINDS:
            raise RecordCorrupt(name, f"unknown run kind {kind!r}")
        if status not in RUN_STATUSES:
            raise RecordCorrupt(name, f"unknown status {status!r}")
        argv = _list(m, "argv", name)
        if not all(isinstance(a, str) for a in argv):
            raise RecordCorrupt(name, "argv holds a non-string")
        return cls(
            argv=tuple(argv),
            cwd=_str(m, "cwd", name),
            started_at=_int(m, "started_at", name),
            ended_at=_int(m, "ended_at", name),
            exit_code=_int(m, "exit_code", name),
            status=status,
            inputs=tuple(FileRef.from_map(f, name) for f in _list(m, "inputs", name)),
            outputs=tuple(FileRef.from_map(f, name) for f in _list(m, "outputs", name)),
            code=CodeState.from_map(m.get("code"), name),
            session=SessionId(_str(m, "session", name)),
            step=_int(m, "step", name),
            kind=kind,
            capture=_str(m, "capture", name),
            complete=_bool(m, "complete", name),
            environment=_map(m.get("environment", {}), name, "environment"),
            unreadable=tuple(
                Unreadable.from_map(u, name) for u in _list(m, "unreadable", name, [])
            ),
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
    def from_map(cls, m: Any, name: str) -> SessionRecord:
        m = _map(m, name, "record")
        if m.get("type") != "session":
            raise RecordCorrupt(name, f"expected a session record, found type {m.get('type')!r}")
        parent = _opt_str(m, "parent", name)
        return cls(
            created_at=_int(m, "created_at", name),
            clone=_str(m, "clone", name),
            parent=SessionId(parent) if parent else None,
        )


Record = RunRecord | SessionRecord


def encode(record: Record) -> bytes:
    return codec.encode(record.to_map())


def decode(data: bytes, name: str) -> Record:
    m = codec.decode(data, name)
    kind = m.get("type")
    if kind == "run":
        return RunRecord.from_map(m, name)
    if kind == "session":
        return SessionRecord.from_map(m, name)
    raise RecordCorrupt(name, f"unknown record type {kind!r}")


def identify(record: Record) -> tuple[str, bytes]:
    """The record's id and its canonical bytes."""
    data = encode(record)
    return codec.record_id(data), data


# -- field checks: each names the record and field it refused ---------------------------


def _map(m: Any, name: str, what: str) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise RecordCorrupt(name, f"{what} is not a map")
    return m


def _get(m: dict[str, Any], key: str, name: str) -> Any:
    if key not in m:
        raise RecordCorrupt(name, f"field '{key}' is missing")
    return m[key]


def _str(m: dict[str, Any], key: str, name: str, default: str | None = None) -> str:
    value = m.get(key, default) if default is not None else _get(m, key, name)
    if not isinstance(value, str):
        raise RecordCorrupt(name, f"field '{key}' is not a string")
    return value


def _opt_str(m: dict[str, Any], key: str, name: str) -> str | None:
    value = m.get(key)
    if value is not None and not isinstance(value, str):
        raise RecordCorrupt(name, f"field '{key}' is not a string")
    return value


def _hex(m: dict[str, Any], key: str, name: str) -> str:
    value = _str(m, key, name)
    if len(value) != 64 or value.strip("0123456789abcdef"):
        raise RecordCorrupt(name, f"field '{key}' is not a 64-hex hash")
    return value


def _int(m: dict[str, Any], key: str, name: str) -> int:
    value = _get(m, key, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordCorrupt(name, f"field '{key}' is not an integer")
    return value


def _bool(m: dict[str, Any], key: str, name: str) -> bool:
    value = _get(m, key, name)
    if not isinstance(value, bool):
        raise RecordCorrupt(name, f"field '{key}' is not a boolean")
    return value


def _list(m: dict[str, Any], key: str, name: str, default: list[Any] | None = None) -> list[Any]:
    value = m.get(key, default) if default is not None else _get(m, key, name)
    if not isinstance(value, list):
        raise RecordCorrupt(name, f"field '{key}' is not a list")
    return value
