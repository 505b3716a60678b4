"""The one wire format for records: canonical msgpack.

Canonical means the same value always encodes to the same bytes: maps are written with their
keys sorted (by their encoded bytes), only ints, strings, bytes, bools, None, lists and maps
are allowed (no floats, whose text forms differ across tools), and strings carrying undecodable
file-name bytes round-trip through surrogateescape. A record's id is the BLAKE3 of these bytes,
so two machines that record the same facts produce the same id.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from blake3 import blake3

from roargit import TYPE_CHECKING
from roargit.errors import RecordCorrupt, RecordTooNew

if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = 1
VERSION_KEY = "v"

_ERRORS = "surrogateescape"


def _canonical(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: map keys must be strings, not {type(key).__name__}")
            items.append((key.encode("utf-8", _ERRORS), key, _canonical(item, f"{where}.{key}")))
        items.sort(key=lambda kv: kv[0])
        return {key: item for _, key, item in items}
    if isinstance(value, (list, tuple)):
        return [_canonical(item, f"{where}[]") for item in value]
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return value
    raise TypeError(f"{where}: {type(value).__name__} is not allowed in a record")


def encode(record: dict[str, Any]) -> bytes:
    """Canonical bytes of a record map; stamps the schema version."""
    body = dict(record)
    body[VERSION_KEY] = SCHEMA_VERSION
    try:
        return _pack(body)
    except (_Unusual, struct.error):
        pass
    # What `_pack` leaves (an int beyond 64 bits, a subclass, a type no record holds) goes
    # the way msgpack itself packs it: the same bytes, or its error.
    import msgpack  # lazy: see _pack

    return msgpack.packb(_canonical(body, "record"), use_bin_type=True, unicode_errors=_ERRORS)


class _Unusual(Exception):
    """A value `_pack` leaves to msgpack."""


_FIXED = [bytes((b,)) for b in range(256)]
_U8, _U16, _U32, _U64 = (struct.Struct(f">B{c}").pack for c in "BHIQ")
_I8, _I16, _I32, _I64 = (struct.Struct(f">B{c}").pack for c in "bhiq")


def _by_key(item: tuple[bytes, Any]) -> bytes:
    return item[0]


def _pack(value: Any) -> bytes:
    """The canonical msgpack of `value` (maps by their keys' UTF-8 bytes, the smallest form of
    each int and length, strings as str8 and up, as msgpack's `packb(use_bin_type=True)`
    writes them), packed here: msgpack's import (with the datetime it loads) would cost a
    `roar run` more than packing its record does. Decoding, and the rows of a manifest, stay
    with msgpack. _Unusual for anything but exact dicts, lists, tuples, strings, ints, bytes,
    bools and None."""
    out: list[bytes] = []
    put = out.append

    def text(raw: bytes) -> None:
        n = len(raw)
        if n <= 31:
            put(_FIXED[0xA0 | n])
        elif n <= 0xFF:
            put(_U8(0xD9, n))
        elif n <= 0xFFFF:
            put(_U16(0xDA, n))
        else:
            put(_U32(0xDB, n))
        put(raw)

    def walk(v: Any) -> None:
        t = type(v)
        if t is str:
            text(v.encode("utf-8", _ERRORS))
        elif t is dict:
            items = []
            for key, item in v.items():
                if type(key) is not str:
                    raise _Unusual
                items.append((key.encode("utf-8", _ERRORS), item))
            items.sort(key=_by_key)
            n = len(items)
            put(_FIXED[0x80 | n] if n <= 15 else _U16(0xDE, n) if n <= 0xFFFF else _U32(0xDF, n))
            for raw, item in items:
                text(raw)
                walk(item)
        elif t is int:
            if 0 <= v <= 0x7F or -32 <= v < 0:
                put(_FIXED[v & 0xFF])
            elif v > 0:
                put(
                    _U8(0xCC, v) if v <= 0xFF else _U16(0xCD, v) if v <= 0xFFFF
                    else _U32(0xCE, v) if v <= 0xFFFFFFFF else _U64(0xCF, v)
                )  # fmt: skip
            else:
                put(
                    _I8(0xD0, v) if v >= -0x80 else _I16(0xD1, v) if v >= -0x8000
                    else _I32(0xD2, v) if v >= -0x80000000 else _I64(0xD3, v)
                )  # fmt: skip
        elif t is list or t is tuple:
            n = len(v)
            put(_FIXED[0x90 | n] if n <= 15 else _U16(0xDC, n) if n <= 0xFFFF else _U32(0xDD, n))
            for item in v:
                walk(item)
        elif v is None:
            put(b"\xc0")
        elif v is True:
            put(b"\xc3")
        elif v is False:
            put(b"\xc2")
        elif t is bytes:
            n = len(v)
            put(_U8(0xC4, n) if n <= 0xFF else _U16(0xC5, n) if n <= 0xFFFF else _U32(0xC6, n))
            put(v)
        else:
            raise _Unusual

    walk(value)
    return b"".join(out)


def encode_with_rows(record: dict[str, Any], key: str, rows: Sequence[tuple[Any, ...]]) -> bytes:
    """`encode(record | {key: rows})`, the same bytes, for rows of plain strings and ints that
    need no canonical walk one by one (a folder manifest may list millions of files)."""
    import msgpack  # lazy: see _pack

    head = _canonical({**record, key: [], VERSION_KEY: SCHEMA_VERSION}, "record")
    head[key] = rows  # the key keeps its sorted place; only its value is swapped
    return msgpack.packb(head, use_bin_type=True, unicode_errors=_ERRORS)


# Limits on what a record may hold. Records arrive from other clones, so a few crafted bytes
# must not make the reader allocate gigabytes: msgpack is told these maxima, each also capped
# by the input's length (an entry takes at least one byte), so a header that claims more
# than the bytes can hold is refused before anything is allocated. msgpack's own parser
# stops at 1024 levels of nesting; the record schema allows far fewer (records.MAX_DEPTH).
MAX_STR_BYTES = 1 << 20  # a string or binary value: 1 MiB
MAX_ENTRIES = 10_000_000  # an array's items, a map's pairs
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def unpack(data: bytes, name: str, source: str | None = None) -> Any:
    """The msgpack value in `data`, within the limits above; RecordCorrupt for anything
    else (not msgpack, trailing bytes, too long, too deep, an extension type)."""
    import msgpack  # lazy: see _pack

    n = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            unicode_errors=_ERRORS,
            use_list=True,
            max_str_len=min(n, MAX_STR_BYTES),
            max_bin_len=min(n, MAX_STR_BYTES),
            max_array_len=min(n, MAX_ENTRIES),
            max_map_len=min(n // 2, MAX_ENTRIES),
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise RecordCorrupt(
            name, f"not valid msgpack ({type(exc).__name__})", source=source
        ) from None


def decode(data: bytes, name: str, source: str | None = None) -> dict[str, Any]:
    """Parse record bytes into a map with a schema version this roargit reads; `name` says
    which object it is (and `source` which remote it came from) when the bytes are refused."""
    value = unpack(data, name, source)
    if not isinstance(value, dict):
        raise RecordCorrupt(name, "not a map", source=source)
    if VERSION_KEY not in value:
        raise RecordCorrupt(name, "is missing", source=source, field=VERSION_KEY)
    version = value[VERSION_KEY]
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordCorrupt(name, "must be an integer", source=source, field=VERSION_KEY)
    if version > SCHEMA_VERSION:
        raise RecordTooNew(name, version, SCHEMA_VERSION, source)
    if version < 1:
        raise RecordCorrupt(name, "must be at least 1", source=source, field=VERSION_KEY)
    return value


def record_id(data: bytes) -> str:
    return blake3(data).hexdigest()
