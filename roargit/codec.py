"""The one wire format for records: canonical msgpack.

Canonical means the same value always encodes to the same bytes: maps are written with their
keys sorted (by their encoded bytes), only ints, strings, bytes, bools, None, lists and maps
are allowed (no floats, whose text forms differ across tools), and strings carrying undecodable
file-name bytes round-trip through surrogateescape. A record's id is the BLAKE3 of these bytes,
so two machines that record the same facts produce the same id.
"""

from __future__ import annotations

from typing import Any

import msgpack

from roargit.errors import RecordCorrupt, RecordTooNew

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
    return msgpack.packb(_canonical(body, "record"), use_bin_type=True, unicode_errors=_ERRORS)


def decode(data: bytes, name: str) -> dict[str, Any]:
    """Parse record bytes; `name` says which object it is when the bytes are refused."""
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=True, unicode_errors=_ERRORS, use_list=True
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise RecordCorrupt(name, f"not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise RecordCorrupt(name, "not a map")
    version = value.get(VERSION_KEY)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordCorrupt(name, "no schema version")
    if version > SCHEMA_VERSION:
        raise RecordTooNew(name, version, SCHEMA_VERSION)
    if version < 1:
        raise RecordCorrupt(name, f"impossible schema version {version}")
    return value


def record_id(data: bytes) -> str:
    from blake3 import blake3

    return blake3(data).hexdigest()
