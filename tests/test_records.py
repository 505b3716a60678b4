from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roargit import codec, records
from roargit.errors import RecordCorrupt, RecordTooNew
from roargit.records import (
    ArtifactId,
    CodeInput,
    CodeState,
    FileRef,
    RunRecord,
    SessionId,
    SessionRecord,
    Unreadable,
)

hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
# File names may hold any bytes but NUL and '/'; decoded with surrogateescape they are str.
paths = (
    st.binary(min_size=1, max_size=40)
    .filter(lambda b: b"\0" not in b)
    .map(lambda b: b.decode("utf-8", "surrogateescape"))
)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
plain = st.recursive(
    st.none() | st.booleans() | ints | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
file_refs = st.builds(
    FileRef,
    path=paths,
    hash=hexes.map(ArtifactId),
    size=st.integers(0, 2**50),
    kind=st.sampled_from(["file", "dir"]),
    not_stored=st.sampled_from(["", "no credentials for s3://b"]),
)
unreadables = st.builds(
    Unreadable,
    path=paths,
    access=st.sampled_from(["input", "output"]),
    size=st.integers(-1, 2**50),
    reason=st.text(max_size=30),
)
oids = st.text("0123456789abcdef", min_size=40, max_size=40) | hexes
words = st.text(max_size=12)
environments = st.fixed_dictionaries(
    {},
    optional={
        "python": st.fixed_dictionaries(
            {"implementation": words, "version": words, "executable": words}
        ),
        "os": st.fixed_dictionaries({"system": words, "release": words, "distro": words}),
        "arch": words,
        "cpu": st.fixed_dictionaries({"model": words, "count": st.integers(0, 4096)}),
        "gpus": st.lists(
            st.fixed_dictionaries(
                {"name": words, "driver": words, "memory_mib": st.integers(0, 2**20)}
            ),
            max_size=2,
        ),
        "hostname": words,
        "user": words,
        "env_vars": st.dictionaries(words, words, max_size=3),
        "packages": st.dictionaries(words, words, max_size=3),
        "future": plain,  # a key a newer writer adds: any plain value
    },
)
code_states = st.builds(
    CodeState,
    commit=st.none() | st.text("0123456789abcdef", min_size=40, max_size=40),
    branch=st.none() | st.text(min_size=1, max_size=20),
    dirty=st.booleans(),
    tree=st.none() | st.text("0123456789abcdef", min_size=40, max_size=40),
    inputs=st.lists(st.builds(CodeInput, path=paths, blob=oids), max_size=3).map(tuple),
)
runs = st.builds(
    RunRecord,
    argv=st.lists(st.text(), min_size=1, max_size=6).map(tuple),
    cwd=paths,
    started_at=ints,
    ended_at=ints,
    exit_code=st.integers(-255, 255),
    status=st.sampled_from(records.RUN_STATUSES),
    inputs=st.lists(file_refs, max_size=4).map(tuple),
    unreadable=st.lists(unreadables, max_size=2).map(tuple),
    outputs=st.lists(file_refs, max_size=4).map(tuple),
    code=code_states,
    session=hexes.map(SessionId),
    step=st.integers(0, 10_000),
    kind=st.sampled_from(records.RUN_KINDS),
    capture=st.sampled_from(["ptrace", "fallback"]),
    complete=st.booleans(),
    environment=environments,
    redirects=st.dictionaries(st.sampled_from(records.STREAMS), paths, max_size=3),
    created_dirs=st.lists(paths, max_size=3).map(tuple),
)


@given(runs)
def test_run_record_round_trips_with_a_stable_id(run: RunRecord) -> None:
    rid, data = records.identify(run)
    assert records.decode(data, "run") == run
    assert records.identify(records.decode(data, "run"))[0] == rid


@given(st.builds(SessionRecord, created_at=ints, clone=st.text(), parent=st.none() | hexes))
def test_session_record_round_trips(session: SessionRecord) -> None:
    _, data = records.identify(session)
    assert records.decode(data, "session") == session


@given(st.dictionaries(st.text(max_size=10), plain, max_size=6))
def test_encoding_is_canonical_whatever_the_key_order(m: dict[str, object]) -> None:
    reordered = dict(reversed(list(m.items())))
    assert codec.encode(m) == codec.encode(reordered)


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError, match="float"):
        codec.encode({"lr": 0.1})


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        records.decode(data, "run 1234")
    except (RecordCorrupt, RecordTooNew) as exc:
        assert "run 1234" in str(exc)


def test_corrupt_and_truncated_records_name_the_object() -> None:
    _, data = records.identify(SessionRecord(created_at=1, clone="c"))
    with pytest.raises(RecordCorrupt, match=r"record session abc is corrupt"):
        records.decode(data[:-3], "session abc")
    with pytest.raises(RecordCorrupt, match=r"^record s is malformed: clone is missing$"):
        records.decode(codec.encode({"type": "session", "created_at": 1}), "s")


def test_newer_schema_is_refused_with_upgrade_hint() -> None:
    data = msgpack.packb({"v": codec.SCHEMA_VERSION + 1, "type": "run"})
    with pytest.raises(RecordTooNew, match="upgrade roargit"):
        records.decode(data, "run 42")


def test_unknown_type_and_bad_field_types_are_refused() -> None:
    with pytest.raises(RecordCorrupt, match='type must be "run", "session" or "verification"'):
        records.decode(codec.encode({"type": "dance"}), "x")
    with pytest.raises(RecordCorrupt, match="created_at must be an integer within int64"):
        records.decode(codec.encode({"type": "session", "created_at": "x", "clone": "c"}), "x")
