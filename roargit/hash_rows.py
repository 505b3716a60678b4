"""The hash cache's database (`<state_dir>/hashcache.sqlite`): rows by folder.

hashing.HashCache decides what to ask and what to remember; this module keeps it. The rules
are the cache's (hashing.py's docstring): WAL and a busy timeout, so that many processes read
it without blocking and write it one transaction at a time; a row trusted only by its stat
key; a crc guarding each row from a damaged page that still parses; a corrupt database deleted
and rebuilt, any other failure costing a re-hash and never the run. sqlite3 is imported on
first use: a run that hashes nothing never loads it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from roargit import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3
    from typing import Any

    from roargit.hashing import CacheStats

#: A file's stat key: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns).
STAT_KEY = struct.Struct("<QQQqq")
_SCHEMA_VERSION = 5
#: A row holds a folder bucket's entries (72 bytes a file): with SQLite's default 4 KiB pages
#: most rows spill into overflow pages, each written and read on its own.
_PAGE_SIZE = 32768
#: How long a write waits for another process's transaction to end.
_BUSY_TIMEOUT_S = 60
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# Paths per range query in a lookup; also the IN-list size of the fallback (SQLite allows
# 32766 host parameters since 3.32, 999 before).
_RANGE = 900


class CacheDB:
    """One process's connection to the cache's database (reopened after a fork); errors are
    counted in `stats.cache_errors`."""

    def __init__(self, path: Path, stats: CacheStats) -> None:
        self.path = path
        self.stats = stats
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connect(self) -> sqlite3.Connection:
        import sqlite3  # on first use: a run that hashes nothing never loads it

        if self._db is not None and self._pid == os.getpid():
            return self._db
        # A connection inherited across fork must not be used by the child.
        self._db = None
        try:
            db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            self._discard_files()
            db = self._open()
        self._db, self._pid = db, os.getpid()
        return db

    def _open(self) -> sqlite3.Connection:
        import sqlite3  # as in _connect: only a run that hashes loads it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer waits for
        # the lock up front (honouring the busy timeout) instead of failing on upgrade.
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        # A damaged value may read back as TEXT, and not UTF-8: as bytes, the crc tells.
        db.text_factory = bytes
        try:
            # Effective only while the file is new and empty (see `_repage` for older ones).
            db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL loses at most the last transactions on power loss, never
            # consistency; fine for derived state.
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != _SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version != _SCHEMA_VERSION:
                    db.execute("DROP TABLE IF EXISTS files")  # schema 3 and before
                    db.execute("DROP TABLE IF EXISTS dirs")
                    db.execute(
                        # Rows hold files by the folder, not one each: SQLite's cost is per
                        # row, and a run reads and writes files by the folder. dir: the
                        # file-system encoding of the folder's path (names need not be
                        # UTF-8), NUL, and the bucket of the names (`_BUCKETS`). names: the
                        # files' names joined by NUL. vals: per name, in that order, the
                        # 40-byte stat key then the 32-byte digest. crc guards each row from
                        # a damaged page that still parses (SQLite has no page checksums).
                        "CREATE TABLE dirs (dir BLOB PRIMARY KEY, names BLOB NOT NULL,"
                        " vals BLOB NOT NULL, crc INTEGER NOT NULL) WITHOUT ROWID"
                    )
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("COMMIT")
            if db.execute("PRAGMA page_size").fetchone()[0] < _PAGE_SIZE:
                _repage(db)
        except BaseException:
            db.close()
            raise
        return db

    def _discard_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def _failed(self, exc: BaseException) -> None:
        """Forget the connection after a database error; delete a corrupt database.

        Derived state: a broken cache costs a re-hash, never the run.
        """
        import sqlite3  # as in _connect: only a run that hashes loads it

        self.stats.cache_errors += 1
        self.close()
        if isinstance(exc, sqlite3.DatabaseError) and _is_corrupt(exc):
            with contextlib.suppress(OSError):
                self._discard_files()

    def select(self, abspaths: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        """Cached (stat key, digest) for those of `abspaths` the database knows."""
        if not abspaths:
            return {}
        import sqlite3  # as in _connect: only a run that hashes loads it

        try:
            db = self._connect()
            db.execute("BEGIN")  # one read snapshot across all queries
            try:
                found, damaged = _select_rows(db, abspaths)
            finally:
                db.execute("COMMIT")
            # A damaged row is a miss; the re-hash replaces it.
            self.stats.cache_errors += damaged
            return found
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return {}

    def insert(self, rows: list[tuple[str, bytes, bytes]]) -> None:
        """Remember (absolute path, stat key, digest) `rows`, merged into their folders'."""
        if not rows:
            return
        import sqlite3  # as in _connect: only a run that hashes loads it

        fresh: dict[tuple[str, int], dict[str, bytes]] = {}
        crc32 = zlib.crc32
        for path, key, digest in rows:
            folder, _, name = path.rpartition("/")
            slot = (folder, crc32(name.encode(_FS_ENCODING, _FS_ERRORS)) & BUCKET_MASK)
            entries = fresh.get(slot)
            if entries is None:
                fresh[slot] = entries = {}
            entries[name] = key + digest
        by_dir = {_fsencode(f) + _BUCKETS[b]: entries for (f, b), entries in fresh.items()}
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")  # the merge reads what is there under the lock
            try:
                for bdir, names, vals in _sound_rows(db, by_dir)[0]:
                    merged = dict(zip(names, _split_vals(vals), strict=True))
                    merged.update(by_dir[bdir])
                    by_dir[bdir] = merged
                out = []
                # Sorted: B-tree inserts in key order touch each page once.
                for bdir, entries in sorted(by_dir.items()):
                    bnames = "\0".join(entries).encode(_FS_ENCODING, _FS_ERRORS)
                    vals = b"".join(entries.values())
                    out.append((bdir, bnames, vals, _crc(bdir, bnames, vals)))
                db.executemany("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?)", out)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)


def _fsencode(path: str) -> bytes:
    # os.fsencode, minus its checks: twice as fast, and this runs once per path.
    return path.encode(_FS_ENCODING, _FS_ERRORS)


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


_ROW_LEN = STAT_KEY.size + 32
#: A folder's files are spread over this many rows by their names' crc32, so that a change
#: to one file of a huge folder rewrites a part of its entries, not all of them.
BUCKET_MASK = 15
#: Row key = the folder's path, NUL (no path has one), the bucket.
_BUCKETS = [b"\0" + bytes([i]) for i in range(BUCKET_MASK + 1)]


def _crc(bdir: bytes, bnames: bytes, vals: bytes) -> int:
    return zlib.crc32(vals, zlib.crc32(bnames, zlib.crc32(bdir)))


def _split_vals(vals: bytes) -> list[bytes]:
    return [vals[i : i + _ROW_LEN] for i in range(0, len(vals), _ROW_LEN)]


def _sound_rows(
    db: sqlite3.Connection, want: Mapping[bytes, object]
) -> tuple[list[tuple[bytes, list[str], bytes]], int]:
    """The rows of the folders in `want` as (dir, names, vals), and how many were damaged."""
    out = []
    damaged = 0
    for bdir, bnames, vals, crc in _candidate_rows(db, want):
        if bdir not in want:
            continue
        names = bnames.decode(_FS_ENCODING, _FS_ERRORS).split("\0")
        if len(vals) != _ROW_LEN * len(names) or _crc(bdir, bnames, vals) != crc:
            damaged += 1
            continue
        out.append((bdir, names, vals))
    return out, damaged


def _select_rows(
    db: sqlite3.Connection, abspaths: Sequence[str]
) -> tuple[dict[str, tuple[bytes, str]], int]:
    """Rows for `abspaths` as {path: (stat key, hex digest)}, and how many were damaged."""
    if db.execute("SELECT 1 FROM dirs LIMIT 1").fetchone() is None:
        return {}, 0  # a new cache: spare the grouping below
    # {(folder, bucket): [(name, path)]}
    want: dict[tuple[str, int], list[tuple[str, str]]] = {}
    crc32 = zlib.crc32
    for path in abspaths:
        folder, _, name = path.rpartition("/")
        slot = (folder, crc32(name.encode(_FS_ENCODING, _FS_ERRORS)) & BUCKET_MASK)
        pairs = want.get(slot)
        if pairs is None:
            want[slot] = [(name, path)]
        else:
            pairs.append((name, path))
    by_dir = {_fsencode(f) + _BUCKETS[b]: pairs for (f, b), pairs in want.items()}
    found: dict[str, tuple[bytes, str]] = {}
    klen = STAT_KEY.size
    rows, damaged = _sound_rows(db, by_dir)
    for bdir, cached, vals in rows:
        at = dict(zip(cached, range(0, len(vals), _ROW_LEN), strict=True))
        for name, path in by_dir[bdir]:
            i = at.get(name)
            if i is not None:
                found[path] = (vals[i : i + klen], vals[i + klen : i + _ROW_LEN].hex())
    return found, damaged


def _candidate_rows(db: sqlite3.Connection, want: Mapping[bytes, object]) -> Iterable[Any]:
    """Rows that include those for `want`'s folders, fetched the cheapest way measured.

    A scan of the whole table is cheapest when the request is most of it; otherwise range
    scans over the sorted request, cheaper than `dir IN (...)` lists (SQLite sorts each
    list), which are cheaper than one query a folder. Ranges may also return cached folders
    that sort between the requested ones -- LIMIT caps that, and a range that hits it (a
    request sparse among many cached folders) falls back to IN for its folders.
    """
    if len(want) >= 5000:
        (count,) = db.execute("SELECT count(*) FROM dirs").fetchone()
        if count <= 2 * len(want):
            return db.execute("SELECT dir, names, vals, crc FROM dirs")
    wanted = sorted(want)
    rows: list[Any] = []
    for i in range(0, len(wanted), _RANGE):
        part = wanted[i : i + _RANGE]
        limit = 4 * len(part) + 64
        got = db.execute(
            "SELECT dir, names, vals, crc FROM dirs WHERE dir BETWEEN ? AND ? LIMIT ?",
            (part[0], part[-1], limit),
        ).fetchall()
        if len(got) == limit:
            marks = ",".join("?" * len(part))
            query = f"SELECT dir, names, vals, crc FROM dirs WHERE dir IN ({marks})"
            got = db.execute(query, part).fetchall()
        rows += got
    return rows


def _repage(db: sqlite3.Connection) -> None:
    """Rewrite a database made with smaller pages with `_PAGE_SIZE` ones, if no other
    connection has it open: page_size changes only by a VACUUM outside WAL mode, and leaving
    WAL needs the database to itself. Otherwise it is tried again by the next open."""
    import sqlite3  # as in _connect: only a run that hashes loads it

    # Another connection must not make us wait: it only means not now.
    db.execute("PRAGMA busy_timeout=0")
    try:
        if db.execute("PRAGMA journal_mode=DELETE").fetchone()[0].lower() == b"delete":
            db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            db.execute("VACUUM")
    except sqlite3.OperationalError:
        pass
    finally:
        db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_S * 1000}")
        db.execute("PRAGMA journal_mode=WAL")


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "not a database" in text or "malformed" in text
