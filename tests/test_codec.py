"""codec.encode packs records itself (no msgpack import on `roar run`'s path): its bytes must
be msgpack's, byte for byte, for every value a record may hold, and it must refuse what
msgpack's path refuses with the same errors."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roargit import codec

# Each int form's edges, and strings, bytes and containers across their length forms.
EDGES = [
    0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000, (1 << 63) - 1,
    (1 << 64) - 1, -1, -32, -33, -0x80, -0x81, -0x8000, -0x8001, -0x80000000, -0x80000001,
    -(1 << 63),
]  # fmt: skip
ints = st.one_of(st.sampled_from(EDGES), st.integers(-(1 << 63), (1 << 64) - 1))
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from([31, 32, 255, 256]).map(lambda n: "x" * n),
    # undecodable file-name bytes, as os.fsdecode gives them
    st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
blobs = st.one_of(st.binary(max_size=40), st.sampled_from([255, 256]).map(bytes))
leaves = st.one_of(st.none(), st.booleans(), ints, texts, blobs)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=18),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(texts, inner, max_size=18),
    ),
    max_leaves=30,
)


def msgpack_bytes(record: dict[str, Any]) -> bytes:
    body = {**record, codec.VERSION_KEY: codec.SCHEMA_VERSION}
    return msgpack.packb(
        codec._canonical(body, "record"), use_bin_type=True, unicode_errors="surrogateescape"
    )


@settings(max_examples=60)
@given(st.dictionaries(texts, values, max_size=20))
def test_encode_is_msgpack_s_canonical_bytes(record: dict[str, Any]) -> None:
    assert codec.encode(record) == msgpack_bytes(record)


def test_long_containers_and_every_int_edge() -> None:
    record = {
        "ints": EDGES,
        "list": list(range(70000)),
        "map": {f"k{i}": i for i in range(70000)},
        "text": "é" * 40000,
        "edges": ["x" * 65535, "x" * 65536, bytes(65535), bytes(65536), [0] * 65535],
        "map16": {f"k{i}": i for i in range(65535)},
    }
    assert codec.encode(record) == msgpack_bytes(record)


class Name(str):
    """A str subclass: left to msgpack, which packs it as a str."""


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"x": 1.5}, "record.x: float is not allowed in a record"),
        ({"x": [{1: 2}]}, "record.x[]: map keys must be strings, not int"),
        ({"x": {"y": {3}}}, "record.x.y: set is not allowed in a record"),
    ],
)
def test_what_no_record_holds_is_refused_as_before(record: dict[str, Any], error: str) -> None:
    with pytest.raises(TypeError, match=error.replace("[", r"\[").replace("]", r"\]")):
        codec.encode(record)


@pytest.mark.parametrize("big", [1 << 64, -(1 << 63) - 1])
def test_ints_beyond_64_bits_fail_as_msgpack_fails(big: int) -> None:
    with pytest.raises(OverflowError):
        codec.encode({"x": big})


def test_subclasses_are_packed_as_their_base() -> None:
    record = {"name": Name("a"), "list": [Name("b")]}
    assert codec.encode(record) == msgpack_bytes({"name": "a", "list": ["b"]})
