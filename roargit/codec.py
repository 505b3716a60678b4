"""The one wire format for records: canonical msgpack.

Canonical means the same value always encodes to the same bytes: maps are written with their
keys sorted (by their encoded bytes), only ints, strings, bytes, bools, None, lists and maps
are allowed (no floats, whose text forms differ across tools), and strings carrying undecodable
file-name bytes round-trip through surrogateescape. A record's id is the BLAKE3 of these bytes,
so two machines that record the same facts produce the same id.
"""

from __future__ import annotations

from collections.abc import Sequence

from blake3 import blake3

from roargit import TYPE_CHECKING
from roargit.errors import RecordCorrupt, RecordTooNew

if TYPE_CHECKING:
    from typing import Any

# msgpack (with the datetime it imports) is imported where it is used: `roar run` needs no
# record's bytes before its command starts, and loads it while the command runs
# (capture._load_after_command).

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
    import msgpack  # lazy: see the note at the imports

    body = dict(record)
    body[VERSION_KEY] = SCHEMA_VERSION
    return msgpack.packb(_canonical(body, "record"), use_bin_type=True, unicode_errors=_ERRORS)


def encode_with_rows(record: dict[str, Any], key: str, rows: Sequence[tuple[Any, ...]]) -> bytes:
    """`encode(record | {key: rows})`, the same bytes, for rows of plain strings and ints that
    need no canonical walk one by one (a folder manifest may list millions of files)."""
    import msgpack  # lazy: see the note at the imports

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
    import msgpack  # lazy: see the note at the imports

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
