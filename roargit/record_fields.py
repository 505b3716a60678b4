"""Reading records: what makes `records.decode` a gate. A record map from another clone is
read field by field against the record schema (docs/record-format.md) before a record object
exists (`read_record`, `read_step_index`).

Each check raises `Bad` with the dotted path of the field it refused and what the field must
be; `refusing` turns that into the record's one `RecordCorrupt`. Kept apart from records.py
so that what only writes records (`roar run`) does not load them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from roargit import TYPE_CHECKING, codec
from roargit.errors import RecordCorrupt
from roargit.records import (
    CAPTURE_MODES,
    FILE_KINDS,
    MAX_ARGV,
    MAX_DEPTH,
    RUN_KINDS,
    RUN_STATUSES,
    STREAMS,
    UNREADABLE_ACCESS,
    VERIFICATION_RESULTS,
    VERIFIED_STATUSES,
    ArtifactId,
    CodeInput,
    CodeState,
    FileRef,
    Identity,
    Record,
    RunId,
    RunRecord,
    SessionId,
    SessionRecord,
    StepIndex,
    Unreadable,
    VerificationRecord,
    VerifiedOutput,
)

if TYPE_CHECKING:
    from typing import Any


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
    with refusing(name, source):
        try:
            return environment(dict(m) if isinstance(m, Mapping) else m)
        except Bad as bad:
            raise bad.under("environment") from None


def environment(m: Any) -> dict[str, Any]:
    m = as_map(m)
    for key, value in m.items():
        if key in _ENV_STRINGS:
            str_(m, key)
        elif key in _ENV_SUBMAPS:
            strings, ints = _ENV_SUBMAPS[key]
            sub(m, key, lambda v, s=strings, i=ints: _fields(v, s, i))
        elif key == "gpus":
            items(m, key, lambda v: _fields(v, *_GPU_FIELDS))
        elif key in _ENV_STRMAPS:
            sub(m, key, _str_map)
        else:
            _unknown(key, value)
    return m


def _fields(m: Any, strings: tuple[str, ...], ints: tuple[str, ...]) -> dict[str, Any]:
    m = as_map(m)
    for key, value in m.items():
        if key in strings:
            str_(m, key)
        elif key in ints:
            int_(m, key)
        else:
            _unknown(key, value)
    return m


def _unknown(key: Any, value: Any) -> None:
    """A key this roargit does not read: it must still be plain data, for those who print it."""
    if not isinstance(key, str):
        raise Bad("", "must have string keys")
    try:
        _plain(value)
    except Bad as bad:
        raise bad.under(_key(key)) from None


def _str_map(m: Any) -> dict[str, str]:
    m = as_map(m)
    for key, value in m.items():
        if not isinstance(key, str):
            raise Bad("", "must have string keys")
        if not isinstance(value, str):
            raise Bad(_key(key), "must be a string")
    return m


def _plain(value: Any, depth: int = 0) -> Any:
    """`value` if it is plain data (as JSON would hold it, with int64s and no floats)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not codec.INT64_MIN <= value <= codec.INT64_MAX:
            raise Bad("", "must be an integer within int64")
        return value
    if depth >= MAX_DEPTH:
        raise Bad("", f"must nest at most {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        for i, item in enumerate(value):
            try:
                _plain(item, depth + 1)
            except Bad as bad:
                raise bad.under(f"[{i}]") from None
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Bad("", "must have string keys")
            try:
                _plain(item, depth + 1)
            except Bad as bad:
                raise bad.under(_key(key)) from None
        return value
    raise Bad("", "must be nil, a boolean, an integer, a string, a list or a map")


# -- field checks -------------------------------------------------------------------------
# Each raises Bad with the (relative) path of the field it refused and what the field must
# be; containers prefix their own path on the way out, and `refusing` turns the result into
# one RecordCorrupt. No message quotes a value from the record: it may be anything.


class Bad(Exception):
    """A field that failed its check: its dotted path, relative to the map checked, and why."""

    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why

    def under(self, parent: str) -> Bad:
        if not self.field:
            self.field = parent
        elif self.field.startswith("["):
            self.field = parent + self.field
        else:
            self.field = f"{parent}.{self.field}"
        return self


class refusing:
    """Turns a Bad raised inside into the record's RecordCorrupt."""

    def __init__(self, name: str, source: str | None) -> None:
        self.name = name
        self.source = source

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, bad: BaseException | None, tb: object) -> None:
        if isinstance(bad, Bad):
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


def as_map(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise Bad("", "must be a map")
    return m


def _get(m: dict[str, Any], key: str) -> Any:
    try:
        return m[key]
    except KeyError:
        raise Bad(key, "is missing") from None


def str_(m: dict[str, Any], key: str, default: str | None = None) -> str:
    value = m.get(key, default) if default is not None else _get(m, key)
    if not isinstance(value, str):
        raise Bad(key, "must be a string")
    return value


def opt_str(m: dict[str, Any], key: str) -> str | None:
    value = m.get(key)
    if value is not None and not isinstance(value, str):
        raise Bad(key, "must be a string or nil")
    return value


def paths(m: dict[str, Any], key: str) -> tuple[str, ...]:
    """An optional list of paths (each as `path` takes one)."""
    if key not in m:
        return ()
    items = list_(m, key)
    if len(items) > MAX_ARGV:
        raise Bad(key, f"must hold at most {MAX_ARGV} paths")
    return tuple(path({key: v}, key) for v in items)


def redirects(value: Any) -> Mapping[str, str]:
    m = as_map(value)
    for key in m:
        if key not in STREAMS:
            raise Bad("", f"keys must be {', '.join(STREAMS)}")
        path(m, key)
    return MappingProxyType(dict(m))


def path(m: dict[str, Any], key: str) -> str:
    value = _get(m, key)
    if not isinstance(value, str) or not value or "\0" in value:
        raise Bad(key, "must be a non-empty string without NUL")
    return value


def hex_(m: dict[str, Any], key: str) -> str:
    value = _get(m, key)
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise Bad(key, "must be 64 lowercase hex digits")
    return value


def _is_git_oid(value: Any) -> bool:
    # SHA-1 repositories name objects with 40 hex digits, SHA-256 ones with 64.
    return isinstance(value, str) and len(value) in (40, 64) and not value.strip("0123456789abcdef")


def git_oid(m: dict[str, Any], key: str) -> str:
    value = _get(m, key)
    if not _is_git_oid(value):
        raise Bad(key, "must be a git object id (40 or 64 lowercase hex digits)")
    return str(value)


def opt_git_oid(m: dict[str, Any], key: str) -> str | None:
    value = m.get(key)
    if value is not None and not _is_git_oid(value):
        raise Bad(key, "must be nil or a git object id (40 or 64 lowercase hex digits)")
    return value


def int_(m: dict[str, Any], key: str, minimum: int = codec.INT64_MIN) -> int:
    value = _get(m, key)
    if type(value) is not int or not minimum <= value <= codec.INT64_MAX:
        if minimum == codec.INT64_MIN:
            raise Bad(key, "must be an integer within int64")
        raise Bad(key, f"must be an integer from {minimum} to 2**63-1")
    return value


def bool_(m: dict[str, Any], key: str) -> bool:
    value = _get(m, key)
    if not isinstance(value, bool):
        raise Bad(key, "must be a boolean")
    return value


def choice(
    m: dict[str, Any], key: str, choices: tuple[str, ...], default: str | None = None
) -> str:
    value = m.get(key, default) if default is not None else _get(m, key)
    if not isinstance(value, str) or value not in choices:
        raise Bad(key, "must be one of " + ", ".join(f'"{c}"' for c in choices))
    return value


def list_(m: dict[str, Any], key: str) -> list[Any]:
    value = _get(m, key)
    if not isinstance(value, list):
        raise Bad(key, "must be a list")
    return value


def sub(m: dict[str, Any], key: str, read: Any, default: Any = None) -> Any:
    """`read` of the value under `key` (missing: `default`, or refused when that is None)."""
    value = m.get(key, default) if default is not None else _get(m, key)
    try:
        return read(value)
    except Bad as bad:
        raise bad.under(key) from None


def items(m: dict[str, Any], key: str, read: Any, optional: bool = False) -> tuple[Any, ...]:
    """`read` of each item of the list under `key`, as a tuple."""
    if optional and key not in m:
        return ()
    value = list_(m, key)
    out: list[Any] = []
    try:
        for item in value:
            out.append(read(item))
    except Bad as bad:
        raise bad.under(f"{key}[{len(out)}]") from None
    return tuple(out)


# -- the readers: a record object from a decoded map, field by field -----------------------


def read_record(m: Any, name: str, source: str | None = None) -> Record:
    """The run, session or verification in a decoded record map (`records.decode`)."""
    kind = m.get("type") if isinstance(m, dict) else None
    read = _RECORD_READERS.get(kind) if isinstance(kind, str) else None
    if read is None:
        raise RecordCorrupt(
            name, 'must be "run", "session" or "verification"', source=source, field="type"
        )
    with refusing(name, source):
        return read(m)


def read_step_index(m: Any, name: str, source: str | None = None) -> StepIndex:
    """The session-index entry in a decoded map (`records.decode_step_index`)."""
    with refusing(name, source):
        return _step_index(m)


def _file_ref(m: Any) -> FileRef:
    # A run may list 100,000 files: the common, valid entry is checked in one expression;
    # anything else takes the field-by-field path below, which names what is wrong.
    if type(m) is dict:
        path_, digest, size = m.get("path"), m.get("hash"), m.get("size")
        kind, not_stored = m.get("kind", "file"), m.get("not_stored", "")
        if (
            type(path_) is str
            and path_
            and "\0" not in path_
            and type(digest) is str
            and len(digest) == 64
            and not digest.strip("0123456789abcdef")
            and type(size) is int
            and 0 <= size <= codec.INT64_MAX
            and (kind == "file" or kind == "dir")
            and type(kind) is str
            and type(not_stored) is str
        ):
            return FileRef(path_, ArtifactId(digest), size, kind, not_stored)
    m = as_map(m)
    return FileRef(
        path=path(m, "path"),
        hash=ArtifactId(hex_(m, "hash")),
        size=int_(m, "size", 0),
        kind=choice(m, "kind", FILE_KINDS, "file"),
        not_stored=str_(m, "not_stored", ""),
    )


def _unreadable(m: Any) -> Unreadable:
    m = as_map(m)
    return Unreadable(
        path=path(m, "path"),
        access=choice(m, "access", UNREADABLE_ACCESS),
        size=int_(m, "size", -1),
        reason=str_(m, "reason"),
    )


def _code_input(m: Any) -> CodeInput:
    m = as_map(m)
    return CodeInput(path=path(m, "path"), blob=git_oid(m, "blob"))


def _code_state(m: Any) -> CodeState:
    m = as_map(m)
    return CodeState(
        commit=opt_git_oid(m, "commit"),
        branch=opt_str(m, "branch"),
        dirty=bool_(m, "dirty"),
        tree=opt_git_oid(m, "tree"),
        inputs=items(m, "inputs", _code_input),
    )


def _identity(m: Any) -> Identity:
    m = as_map(m)
    return Identity(name=str_(m, "name"), email=str_(m, "email"), host=str_(m, "host"))


def _run(m: Any) -> RunRecord:
    m = as_map(m)
    if m.get("type") != "run":
        raise Bad("type", 'must be "run"')
    argv = list_(m, "argv")
    if len(argv) > MAX_ARGV:
        raise Bad("argv", f"must hold at most {MAX_ARGV} words")
    for i, word in enumerate(argv):
        if not isinstance(word, str):
            raise Bad(f"argv[{i}]", "must be a string")
    return RunRecord(
        argv=tuple(argv),
        cwd=path(m, "cwd"),
        started_at=int_(m, "started_at"),
        ended_at=int_(m, "ended_at"),
        exit_code=int_(m, "exit_code"),
        status=choice(m, "status", RUN_STATUSES),
        inputs=items(m, "inputs", _file_ref),
        outputs=items(m, "outputs", _file_ref),
        code=sub(m, "code", _code_state),
        session=SessionId(hex_(m, "session")),
        step=int_(m, "step", 0),
        kind=choice(m, "kind", RUN_KINDS),
        capture=choice(m, "capture", CAPTURE_MODES),
        complete=bool_(m, "complete"),
        environment=sub(m, "environment", environment, {}),
        unreadable=items(m, "unreadable", _unreadable, optional=True),
        recorded_by=sub(m, "recorded_by", _identity) if "recorded_by" in m else None,
        redirects=sub(m, "redirects", redirects, {}),
        created_dirs=paths(m, "created_dirs"),
    )


def _session(m: Any) -> SessionRecord:
    m = as_map(m)
    if m.get("type") != "session":
        raise Bad("type", 'must be "session"')
    parent = m.get("parent")
    if parent is not None:
        parent = hex_(m, "parent")
    return SessionRecord(
        created_at=int_(m, "created_at"),
        clone=str_(m, "clone"),
        parent=SessionId(parent) if parent is not None else None,
    )


def _verified_output(m: Any) -> VerifiedOutput:
    m = as_map(m)
    new_hash = m.get("new_hash")
    return VerifiedOutput(
        path=path(m, "path"),
        hash=ArtifactId(hex_(m, "hash")),
        new_hash=ArtifactId(hex_(m, "new_hash")) if new_hash is not None else None,
        status=choice(m, "status", VERIFIED_STATUSES),
    )


def _verification(m: Any) -> VerificationRecord:
    m = as_map(m)
    if m.get("type") != "verification":
        raise Bad("type", 'must be "verification"')
    reproduction = m.get("reproduction")
    return VerificationRecord(
        run=RunId(hex_(m, "run")),
        result=choice(m, "result", VERIFICATION_RESULTS),
        outputs=items(m, "outputs", _verified_output),
        exit_code=int_(m, "exit_code"),
        started_at=int_(m, "started_at"),
        ended_at=int_(m, "ended_at"),
        by=sub(m, "by", _identity),
        clone=str_(m, "clone"),
        code=sub(m, "code", _code_state),
        environment=sub(m, "environment", environment, {}),
        reproduction=RunId(hex_(m, "reproduction")) if reproduction is not None else None,
    )


def _step_index(m: Any) -> StepIndex:
    m = as_map(m)
    if m.get("type") != "step":
        raise Bad("type", 'must be "step"')
    return StepIndex(
        run=RunId(hex_(m, "run")),
        session=SessionId(hex_(m, "session")),
        kind=choice(m, "kind", RUN_KINDS),
        step=int_(m, "step", 0),
        status=choice(m, "status", RUN_STATUSES),
        started_at=int_(m, "started_at"),
        argv=hex_(m, "argv"),
        inputs=hex_(m, "inputs"),
        outputs=hex_(m, "outputs"),
    )


_RECORD_READERS: dict[str, Callable[[Any], Record]] = {
    "run": _run,
    "session": _session,
    "verification": _verification,
}
