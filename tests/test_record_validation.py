"""Records and manifests from other clones are untrusted: decoding is a gate.

Whatever the bytes, `records.decode` and the manifest decoders either return a value that
every reader can use, or raise RecordCorrupt / RecordTooNew with one line naming the record,
its source and the field. Nothing else escapes: no TypeError, AttributeError, OverflowError,
RecursionError or MemoryError from crafted input.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_records import environments, runs

from roargit import codec, folders, record_fields, records
from roargit.environment import Environment
from roargit.errors import RecordCorrupt, RecordTooNew, RoarError
from roargit.record_json import run_to_json, verification_to_json
from roargit.records import RunRecord, SessionRecord

NAME = "3fa9c1d2e4b5"


def _valid_run() -> dict[str, Any]:
    return {
        "type": "run",
        "v": 1,
        "kind": "run",
        "argv": ["python", "train.py"],
        "cwd": ".",
        "started_at": 1,
        "ended_at": 2,
        "exit_code": 0,
        "status": "ok",
        "inputs": [{"path": "data/raw.csv", "hash": "1" * 64, "size": 3}],
        "outputs": [
            {"path": "model.bin", "hash": "2" * 64, "size": 4, "not_stored": "queued"},
            {"path": "out/", "hash": "3" * 64, "size": 5, "kind": "dir"},
        ],
        "code": {
            "commit": "a" * 40,
            "branch": "main",
            "dirty": True,
            "tree": "b" * 40,
            "inputs": [{"path": "train.py", "blob": "c" * 40}],
        },
        "session": "5" * 64,
        "step": 1,
        "capture": "ptrace",
        "complete": True,
        "environment": {
            "python": {"implementation": "CPython", "version": "3.12", "executable": "/p"},
            "os": {"system": "Linux", "release": "6.8", "distro": "Ubuntu"},
            "arch": "x86_64",
            "cpu": {"model": "Xeon", "count": 8},
            "gpus": [{"name": "H100", "driver": "550", "memory_mib": 81920}],
            "hostname": "box",
            "user": "ada",
            "env_vars": {"OMP_NUM_THREADS": "8"},
            "packages": {"numpy": "2.1.0"},
        },
        "unreadable": [{"path": "/k", "access": "input", "size": -1, "reason": "denied"}],
    }


def _valid_session() -> dict[str, Any]:
    return {"type": "session", "v": 1, "created_at": 1, "clone": "c", "parent": "6" * 64}


def _valid_verification() -> dict[str, Any]:
    return {
        "type": "verification",
        "v": 1,
        "run": "7" * 64,
        "result": "differs",
        "outputs": [
            {"path": "model.bin", "hash": "2" * 64, "new_hash": "8" * 64, "status": "differs"},
            {"path": "log.txt", "hash": "3" * 64, "new_hash": None, "status": "missing"},
        ],
        "exit_code": 0,
        "started_at": 1,
        "ended_at": 2,
        "by": {"name": "Bob", "email": "bob@example.com", "host": "box"},
        "clone": "c",
        "code": {
            "commit": "a" * 40,
            "branch": None,
            "dirty": False,
            "tree": "b" * 40,
            "inputs": [],
        },
        "environment": {"python": {"version": "3.12"}, "packages": {"numpy": "2.1.0"}},
        "reproduction": "9" * 64,
    }


def _decode(m: Any, source: str | None = "origin") -> records.Record:
    return records.decode(msgpack.packb(m, use_bin_type=True), NAME, source=source)


def _set(m: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`m` with the field at dotted `path` (`inputs.0.hash`) set to `value`, or removed when
    `value` is DELETE."""
    node: Any = m
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return m


DELETE = object()


def test_the_valid_samples_decode() -> None:
    run = _decode(_valid_run())
    assert isinstance(run, RunRecord) and run.unreadable[0].size == -1
    assert isinstance(_decode(_valid_session()), SessionRecord)
    verification = _decode(_valid_verification())
    assert isinstance(verification, records.VerificationRecord)
    assert verification.outputs[1].new_hash is None and verification.by.email == "bob@example.com"
    # The canonical bytes read back as the same record (one codec, both ways).
    again = records.decode(records.encode(verification), NAME)
    assert again == verification


VERIFICATION_DAMAGE: list[tuple[str, Any, str]] = [
    ("run", DELETE, "run is missing"),
    ("run", "../" + "7" * 61, "run must be 64 lowercase hex digits"),
    ("result", "ok", 'result must be one of "identical", "differs", "failed"'),
    ("outputs", {}, "outputs must be a list"),
    ("outputs.0.path", "", "outputs[0].path must be a non-empty string without NUL"),
    ("outputs.0.path", "a\0b", "outputs[0].path must be a non-empty string without NUL"),
    ("outputs.0.hash", "2" * 63, "outputs[0].hash must be 64 lowercase hex digits"),
    ("outputs.0.new_hash", "X" * 64, "outputs[0].new_hash must be 64 lowercase hex digits"),
    ("outputs.1.status", "gone", 'outputs[1].status must be one of "identical", "differs"'),
    ("exit_code", "0", "exit_code must be an integer within int64"),
    ("started_at", 2**63, "started_at must be an integer within int64"),
    ("ended_at", DELETE, "ended_at is missing"),
    ("by", "bob", "by must be a map"),
    ("by.email", None, "by.email must be a string"),
    ("by.host", DELETE, "by.host is missing"),
    ("clone", 7, "clone must be a string"),
    ("code", DELETE, "code is missing"),
    ("code.tree", "../../x", "code.tree must be nil or a git object id"),
    ("environment.os", "Linux", "environment.os must be a map"),
    ("environment.future", {"a": 1.5}, "environment.future.a must be nil, a boolean"),
    ("reproduction", "r" * 64, "reproduction must be 64 lowercase hex digits"),
]


@pytest.mark.parametrize(("path", "value", "message"), VERIFICATION_DAMAGE)
def test_each_damaged_verification_field_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(RecordCorrupt) as caught:
        _decode(_set(_valid_verification(), path, value))
    text = str(caught.value)
    assert text.startswith(f"record {NAME} from origin is malformed: {message}"), text


def test_a_malformed_field_reads_as_one_line_with_its_path_and_source() -> None:
    with pytest.raises(RecordCorrupt) as caught:
        _decode(_set(_valid_run(), "environment.os", "Linux"))
    assert str(caught.value) == (
        "record 3fa9c1d2e4b5 from origin is malformed: environment.os must be a map"
    )
    assert isinstance(caught.value, RoarError)
    assert (caught.value.source, caught.value.field) == ("origin", "environment.os")
    with pytest.raises(RecordCorrupt) as caught:
        _decode(_set(_valid_run(), "environment.os", "Linux"), source=None)
    assert str(caught.value) == "record 3fa9c1d2e4b5 is malformed: environment.os must be a map"


RUN_DAMAGE: list[tuple[str, Any, str]] = [
    ("type", DELETE, 'type must be "run", "session" or "verification"'),
    ("kind", "job", 'kind must be one of "run", "build"'),
    ("argv", "python x.py", "argv must be a list"),
    ("argv", ["x"] * 100_001, "argv must hold at most 100000 words"),
    ("argv.1", 7, "argv[1] must be a string"),
    ("argv.1", b"bytes", "argv[1] must be a string"),
    ("cwd", "", "cwd must be a non-empty string without NUL"),
    ("cwd", "a\0b", "cwd must be a non-empty string without NUL"),
    ("cwd", DELETE, "cwd is missing"),
    ("started_at", True, "started_at must be an integer within int64"),
    ("started_at", 2**63, "started_at must be an integer within int64"),
    ("ended_at", 1.5, "ended_at must be an integer within int64"),
    ("exit_code", "0", "exit_code must be an integer within int64"),
    ("status", "done", "status must be one of"),
    ("status", ["ok"], "status must be one of"),
    ("inputs", {}, "inputs must be a list"),
    ("inputs.0", "data/raw.csv", "inputs[0] must be a map"),
    ("inputs.0.hash", "1" * 63, "inputs[0].hash must be 64 lowercase hex digits"),
    ("inputs.0.hash", "A" * 64, "inputs[0].hash must be 64 lowercase hex digits"),
    ("inputs.0.size", -1, "inputs[0].size must be an integer from 0 to 2**63-1"),
    ("inputs.0.path", DELETE, "inputs[0].path is missing"),
    ("outputs.1.kind", "link", 'outputs[1].kind must be one of "file", "dir"'),
    ("outputs.0.not_stored", 1, "outputs[0].not_stored must be a string"),
    ("code", DELETE, "code is missing"),
    ("code", [], "code must be a map"),
    ("code.dirty", DELETE, "code.dirty is missing"),
    ("code.dirty", 1, "code.dirty must be a boolean"),
    ("code.tree", "../../x", "code.tree must be nil or a git object id"),
    ("code.commit", "a" * 41, "code.commit must be nil or a git object id"),
    ("code.branch", 3, "code.branch must be a string or nil"),
    ("code.inputs.0.blob", "", "code.inputs[0].blob must be a git object id"),
    ("code.inputs.0.path", "", "code.inputs[0].path must be a non-empty string"),
    ("session", "s" * 64, "session must be 64 lowercase hex digits"),
    ("session", "../" + "5" * 61, "session must be 64 lowercase hex digits"),
    ("step", -1, "step must be an integer from 0 to 2**63-1"),
    ("capture", "magic", 'capture must be one of "ptrace", "fallback"'),
    ("complete", "yes", "complete must be a boolean"),
    ("environment", [], "environment must be a map"),
    ("environment.os", "Linux", "environment.os must be a map"),
    ("environment.os.distro", 24, "environment.os.distro must be a string"),
    ("environment.python", None, "environment.python must be a map"),
    ("environment.python.version", 3.12, "environment.python.version must be a string"),
    ("environment.arch", ["x86_64"], "environment.arch must be a string"),
    ("environment.cpu.count", "8", "environment.cpu.count must be an integer within int64"),
    ("environment.gpus", {"name": "H100"}, "environment.gpus must be a list"),
    ("environment.gpus.0", "H100", "environment.gpus[0] must be a map"),
    ("environment.gpus.0.memory_mib", "80G", "environment.gpus[0].memory_mib must be an"),
    ("environment.hostname", None, "environment.hostname must be a string"),
    ("environment.env_vars", ["A=1"], "environment.env_vars must be a map"),
    ("environment.env_vars.OMP_NUM_THREADS", 8, "environment.env_vars.OMP_NUM_THREADS must"),
    ("environment.packages.numpy", None, "environment.packages.numpy must be a string"),
    ("environment.future", b"\x00", "environment.future must be nil, a boolean"),
    ("environment.future", {"a": 1.5}, "environment.future.a must be nil, a boolean"),
    ("environment.future", [0, 2**64 - 1], r"environment.future[1] must be an integer within"),
    ("unreadable", "x", "unreadable must be a list"),
    ("unreadable.0.access", "both", 'unreadable[0].access must be one of "input", "output"'),
    ("unreadable.0.size", -2, "unreadable[0].size must be an integer from -1 to 2**63-1"),
    ("unreadable.0.reason", DELETE, "unreadable[0].reason is missing"),
]


@pytest.mark.parametrize(("path", "value", "message"), RUN_DAMAGE)
def test_each_damaged_run_field_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(RecordCorrupt) as caught:
        _decode(_set(_valid_run(), path, value))
    text = str(caught.value)
    assert text.startswith(f"record {NAME} from origin is malformed: {message}"), text


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("created_at", DELETE, "created_at is missing"),
        ("created_at", -(2**64) + 1, "not valid msgpack"),
        ("clone", None, "clone must be a string"),
        ("parent", "abc", "parent must be 64 lowercase hex digits"),
        ("v", 0, "v must be at least 1"),
        ("v", "1", "v must be an integer"),
        ("v", DELETE, "v is missing"),
    ],
)
def test_each_damaged_session_field_is_named(path: str, value: Any, message: str) -> None:
    try:
        m = _set(_valid_session(), path, value)
        data = msgpack.packb(m, use_bin_type=True)
    except (OverflowError, TypeError):
        data = b"\x85\xa1v\x01\xaacreated_at\xd3"  # an int64 cut short
    with pytest.raises(RecordCorrupt, match=message):
        records.decode(data, NAME, source="origin")


def test_a_key_with_control_characters_is_shown_escaped_on_one_line() -> None:
    run = _set(_valid_run(), "environment.x\x1b[2J\nfake", 1.5)
    with pytest.raises(RecordCorrupt) as caught:
        _decode(run)
    text = str(caught.value)
    assert "\n" not in text and "\x1b" not in text
    assert r"environment['x\x1b[2J\nfake'] must be nil" in text


def test_a_missing_environment_reads_as_empty_and_a_new_key_is_kept() -> None:
    run = _decode(_set(_valid_run(), "environment", DELETE))
    assert isinstance(run, RunRecord) and dict(run.environment) == {}
    run = _decode(_set(_valid_run(), "environment.tpu", {"name": "v5e", "cores": [1, 2]}))
    assert isinstance(run, RunRecord) and run.environment["tpu"]["cores"] == [1, 2]


def test_the_environment_check_is_the_one_environment_reads_through() -> None:
    env = _valid_run()["environment"]
    assert Environment.from_dict(env).to_dict() == env
    with pytest.raises(RecordCorrupt, match=r"environment\.cpu\.count must be an integer"):
        Environment.from_dict({**env, "cpu": {"model": "x", "count": True}})


@pytest.mark.parametrize(
    "data",
    [
        b"\xdd\xff\xff\xff\xff",  # an array that claims 4 billion items
        b"\xdf\xff\xff\xff\xff",  # a map that claims 4 billion pairs
        b"\xdb\xff\xff\xff\xff" + b"x" * 100,  # a 4 GiB string, cut short
        b"\x81\xa1v\xdb" + (2 << 20).to_bytes(4, "big") + b"x" * (2 << 20),  # a 2 MiB string
        b"\x91" * 5000 + b"\xc0",  # nested 5000 deep
        b"\x81\xa1v\xd4\x01\x00",  # an extension type
        b"\x82\xa1v\x01\xa4type\xa7session\xc0",  # bytes after the value
        b"\x82\xa1v\x01\xa4type\xa7sess",  # cut short
        b"\x81\x01\x01",  # an integer map key
    ],
)
def test_crafted_bytes_are_refused_without_allocating_or_recursing(data: bytes) -> None:
    with pytest.raises(RecordCorrupt, match="is corrupt: not valid msgpack"):
        records.decode(data, NAME)
    with pytest.raises(RecordCorrupt, match="is corrupt: not valid msgpack"):
        folders.decode_manifest(data, NAME)


def test_deep_values_under_a_new_environment_key_are_refused() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(RecordCorrupt, match="must nest at most 32 levels deep"):
        _decode(_set(_valid_run(), "environment.future", deep))


def test_too_new_keeps_its_source() -> None:
    with pytest.raises(RecordTooNew, match=f"^record {NAME} from origin has schema version 2"):
        _decode(_set(_valid_session(), "v", 2))


# -- property: nothing but RecordCorrupt / RecordTooNew, and what passes is usable --------

ints = st.integers(-(2**63), 2**64 - 1)
scalars = (
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.sampled_from(["run", "session", "manifest", "5" * 64, "a" * 40, "ok", "dir", ""])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4), inner, max_size=4)
    ),
    max_leaves=16,
)


def _check(data: bytes) -> None:
    """Decode `data` as a record and as a manifest; only the two refusals may escape, with
    one line naming the record; an accepted record must be usable by its readers."""
    try:
        record = records.decode(data, NAME, source="origin")
    except (RecordCorrupt, RecordTooNew) as exc:
        text = str(exc)
        assert text.startswith(f"record {NAME} from origin "), text
        assert text.isprintable(), text
    else:
        records.encode(record)  # canonical-encodable: no float, no bytes
        if isinstance(record, RunRecord):
            Environment.from_dict(record.environment)
            json.dumps(run_to_json("0" * 64, record, None))
        if isinstance(record, records.VerificationRecord):
            Environment.from_dict(record.environment)
            json.dumps(verification_to_json("0" * 64, record))
    for decode in (folders.decode_manifest, folders.decode_manifest_rows):
        try:
            decode(data, NAME, source="origin")
        except (RecordCorrupt, RecordTooNew) as exc:
            assert str(exc).isprintable()


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_random_msgpack_values(value: Any) -> None:
    _check(msgpack.packb(value, use_bin_type=True, strict_types=False))


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _check(data)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a map/list value (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return out
    for key, child in items:
        out.append((*path, key))
        out.extend(_nodes(child, (*path, key)))
    return out


def _mutate(m: Any, rnd: random.Random, replacement: Any) -> Any:
    """`m` with one node deleted, retyped or replaced."""
    nodes = _nodes(m)
    if not nodes:
        return copy.deepcopy(replacement)
    *parents, last = rnd.choice(nodes)
    node = m
    for p in parents:
        node = node[p]
    how = rnd.randrange(4)
    if how == 0:
        del node[last]  # a field (or item) removed
    elif how == 1:
        node[last] = _retyped(node[last])  # the same facts in another msgpack type
    else:
        node[last] = copy.deepcopy(replacement)  # a fresh copy: never a cycle
    return m


def _retyped(old: Any) -> Any:
    if isinstance(old, str):
        return [old]
    if isinstance(old, bool) or old is None:
        return int(bool(old))
    if isinstance(old, int):
        return str(old)
    if isinstance(old, list):
        return {str(i): v for i, v in enumerate(old)}
    if isinstance(old, dict):
        return list(old.values())
    return str(old)


def _sample_maps(rnd: random.Random) -> Any:
    run, session, verification = _valid_run(), _valid_session(), _valid_verification()
    manifest = {"files": [["a", "1" * 64, 1], ["b/c", "2" * 64, 2]], "type": "manifest", "v": 1}
    del run["v"], session["v"], verification["v"]  # codec.encode stamps it
    run["v"] = session["v"] = verification["v"] = 1
    return rnd.choice([run, session, verification, manifest])


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    """A random msgpack value, leaning to the edges a schema check must hold against."""
    pick = rnd.randrange(12 if depth < 3 else 9)
    if pick == 0:
        return None
    if pick == 1:
        return rnd.random() < 0.5
    if pick == 2:
        return rnd.choice([0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    if pick == 3:
        return rnd.random() * 10
    if pick == 4:
        return rnd.choice(["", "x", "a\0b", "../..", "\x1b[2J", "\udcff", "5" * 64, "a" * 40])
    if pick == 5:
        return rnd.randbytes(rnd.randrange(8))
    if pick == 6:
        return rnd.choice(
            ["run", "session", "verification", "manifest", "dir", "ok", "input", "identical"]
        )
    if pick in (7, 8):
        return rnd.randrange(-(2**40), 2**40)
    if pick in (9, 10):
        return [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    keys = ["path", "hash", "size", "kind", "os", "v", "type", "\n", "x" * 70]
    return {rnd.choice(keys): _random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))}


@pytest.mark.slow
@settings(max_examples=6000)
@given(st.integers(0, 2**64))
def test_valid_records_with_fields_deleted_retyped_or_replaced(seed: int) -> None:
    rnd = random.Random(seed)
    m = _sample_maps(rnd)
    for _ in range(rnd.randint(1, 3)):
        m = _mutate(m, rnd, _random_value(rnd))
    _check(msgpack.packb(m, use_bin_type=True, unicode_errors="surrogateescape"))


@settings(max_examples=2000)
@given(st.integers(0, 2**64))
def test_valid_records_truncated_or_with_bits_flipped(seed: int) -> None:
    rnd = random.Random(seed)
    m = _sample_maps(rnd)
    data = bytearray(
        codec.encode(m) if m["type"] != "manifest" else folders._encode_rows(m["files"])[1]
    )
    if rnd.random() < 0.3:
        data = data[: rnd.randrange(len(data))]
    else:
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
    _check(bytes(data))


@settings(max_examples=200)
@given(runs)
def test_generated_runs_with_bits_flipped(run: RunRecord) -> None:
    data = bytearray(records.encode(run))
    rnd = random.Random(len(data))
    data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    _check(bytes(data))


@settings(max_examples=300)
@given(environments)
def test_every_environment_a_writer_may_write_is_accepted(env: dict[str, Any]) -> None:
    assert record_fields.check_environment(env, NAME) == env


def test_canonical_manifest_bytes_are_the_codec_s() -> None:
    rows: list[Any] = [["a", "1" * 64, 1]]
    _, data = folders.encode_manifest([folders.ManifestEntry(*r) for r in rows])
    assert data == codec.encode({"files": rows, "type": "manifest"})


RECORDED_BY_DAMAGE: list[tuple[str, Any, str]] = [
    ("recorded_by", "ada", "recorded_by must be a map"),
    ("recorded_by", None, "recorded_by must be a map"),
    ("recorded_by.name", 7, "recorded_by.name must be a string"),
    ("recorded_by.email", DELETE, "recorded_by.email is missing"),
    ("recorded_by.host", ["lab"], "recorded_by.host must be a string"),
]


@pytest.mark.parametrize(("path", "value", "message"), RECORDED_BY_DAMAGE)
def test_each_damaged_recorded_by_field_is_named(path: str, value: Any, message: str) -> None:
    run = _valid_run()
    run["recorded_by"] = {"name": "Ada", "email": "ada@example.org", "host": "lab-3"}
    with pytest.raises(RecordCorrupt) as caught:
        _decode(_set(run, path, value))
    text = str(caught.value)
    assert text.startswith(f"record {NAME} from origin is malformed: {message}"), text


def test_recorded_by_is_optional_and_written_only_when_known() -> None:
    bare = _decode(_valid_run())
    assert isinstance(bare, RunRecord) and bare.recorded_by is None
    assert "recorded_by" not in bare.to_map()  # a record without it keeps its bytes and id
    assert run_to_json("r" * 64, bare, None)["recorded_by"] is None
    run = _valid_run()
    run["recorded_by"] = {"name": "Ada", "email": "", "host": "lab-3", "later": 1}
    rec = _decode(run)
    assert isinstance(rec, RunRecord)
    assert rec.recorded_by == records.Identity("Ada", "", "lab-3")
    again = records.decode(records.encode(rec), NAME)
    assert again == rec and records.encode(again) == records.encode(rec)
    assert run_to_json("r" * 64, rec, "@1")["recorded_by"] == {
        "name": "Ada",
        "email": "",
        "host": "lab-3",
    }
