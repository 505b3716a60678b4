"""This clone's cache of decoded session-index buckets, so that a run's cost does not grow
with the number of runs before it in its session.

A session's index lies in the ledger as `sessions/<ab>/<S>/<cd>/i.<R>`, one small entry a
run, in up to 256 buckets by run id. Numbering a new run needs every entry; reading them
from git costs a tree and a blob a run (a 200-run session: some 8 ms of each `roar run`).
A run adds one entry, so it changes one bucket: each bucket's decoded entries are kept here
under the bucket's tree id, and only a bucket whose id is not known is read from git.

A tree id names its content, so a kept bucket is never stale; the file is derived state
(`.git/roar/session-index/<S>`), rebuilt from the ledger when missing, damaged or of
another version. It holds entries as this clone decoded and checked them, or wrote them: a
run that appends keeps the bucket it wrote (Ledger.append_run), so that the next run reads
and decodes nothing from git while no other writer moved the ledger. The file is written
with `marshal` (in C, with no import: a run loads no msgpack for it); it is this clone's
own, as trusted as the rest of `.git/`.
"""

from __future__ import annotations

import contextlib
import marshal
import os
from pathlib import Path

from roargit import TYPE_CHECKING
from roargit.records import RunId, SessionId, StepIndex

if TYPE_CHECKING:
    from typing import Any

_MAGIC = b"roar-session-index 2\n"
#: Buckets a read took from git that make the cache worth writing again when no run is
#: appended (a query): the file holds the whole session.
SAVE_AT = 16
#: (run id, its entry's fields or None where it has no usable one), in the bucket's order.
Bucket = list[tuple[RunId, "StepIndex | None"]]


def _file(roar_dir: Path, session_id: SessionId) -> Path:
    return roar_dir / "session-index" / session_id


def load(roar_dir: Path, session_id: SessionId) -> dict[str, Bucket]:
    """The kept buckets by tree id; empty when there are none that can be used."""
    try:
        data = _file(roar_dir, session_id).read_bytes()
        if not data.startswith(_MAGIC):
            return {}
        kept = marshal.loads(memoryview(data)[len(_MAGIC) :])
        return {
            oid: [
                (RunId(rid), None if fields is None else StepIndex(*fields))
                for rid, fields in bucket
            ]
            for oid, bucket in kept.items()
        }
    except (OSError, EOFError, ValueError, TypeError, AttributeError):
        return {}


def save(roar_dir: Path, session_id: SessionId, buckets: dict[str, Bucket]) -> None:
    """Keep `buckets` (those of the session's current tree), replacing what was kept. A
    cache that cannot be written costs the next run a read from git, never the run."""
    kept: dict[str, Any] = {
        oid: [(rid, None if e is None else tuple(e)) for rid, e in bucket]
        for oid, bucket in buckets.items()
    }
    path = _file(roar_dir, session_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = _MAGIC + marshal.dumps(kept)
    try:
        try:
            tmp.write_bytes(data)
        except FileNotFoundError:  # the first session of this clone: no folder yet
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
        os.replace(tmp, path)  # concurrent runs: the last one's whole file wins
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
