"""hashing: digests match blake3, the cache saves reads, and never trusts what changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from roargit import bigfile, hash_helper, hash_rows, hashing, stable_read
from roargit.errors import FileChanged
from roargit.hashing import HashCache, hash_bytes, hash_file

EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_hash_bytes_known_values() -> None:
    assert hash_bytes(b"") == EMPTY
    data = bytes(range(251)) * 5000  # above the multi-thread threshold
    assert hash_bytes(data) == blake3(data).hexdigest()
    assert hash_bytes(memoryview(data)[:7]) == blake3(data[:7]).hexdigest()


@pytest.mark.parametrize(
    "size",
    [0, 1, 1023, stable_read.SMALL_FILE, stable_read.SMALL_FILE + 1, 2 * bigfile.CHUNK + 3],
)
def test_hash_file_matches_blake3_across_size_paths(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    assert hash_file(write(tmp_path / "f", data)) == (blake3(data).hexdigest(), size)


def test_hash_file_large(tmp_path: Path) -> None:
    data = os.urandom(1 << 20) * 64  # 64 MiB: overlapped reads, multi-threaded hasher
    got = hash_file(write(tmp_path / "big", data))
    assert got.digest == blake3(data).hexdigest()
    assert got.size == len(data)


def test_hash_file_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        hash_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(fifo)  # must not hang waiting for a writer
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "nope")


def test_cache_hit_reads_no_bytes(tmp_path: Path) -> None:
    files = [write(tmp_path / f"f{i}", os.urandom(100 + i)) for i in range(50)]
    cache = HashCache(tmp_path / "state", racy_window_ns=0)
    first = cache.hash_many(files)
    assert cache.stats.misses == 50
    assert cache.stats.bytes_read == sum(p.stat().st_size for p in files)

    again = HashCache(tmp_path / "state", racy_window_ns=0)  # a new process, in effect
    assert again.hash_many(files) == first
    assert (again.stats.hits, again.stats.misses, again.stats.bytes_read) == (50, 0, 0)
    assert again.lookup_many(files) == first
    for p in files:
        assert first[p] == (blake3(p.read_bytes()).hexdigest(), p.stat().st_size)


@pytest.mark.parametrize(
    "odd",
    [
        ["rel/a"],
        ["/a//b"],
        ["/a/./b"],
        ["/a/../b"],
        ["/a/.x"],  # clean, but looks like the above: checked one by one
        ["/a/b/"],
        ["/a\0/b", "rel"],  # a NUL (refused by open) may not hide a relative path
        ["/a\0b"],
        ["/\udcff/b"],  # a name not UTF-8, decoded as Python does
    ],
)
@pytest.mark.parametrize("at", [0, 1, 3])
def test_abspaths_of_a_batch_are_each_paths(odd: list[str], at: int) -> None:
    """The one check over a whole batch gives what `os.path.abspath` gives for each path,
    wherever among clean absolute ones the odd one is."""
    clean = ["/a/b", "/a/c d", "/x.y"]
    for paths in (clean, [*clean[:at], *odd, *clean[at:]]):
        assert hashing._abspaths(paths) == [os.path.abspath(p) for p in paths]
    mixed: list[str | Path] = [Path("/a"), "/b"]
    assert hashing._abspaths(mixed) == ["/a", "/b"]


def test_results_are_keyed_by_the_paths_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "a", b"a")
    monkeypatch.chdir(tmp_path)
    cache = HashCache(tmp_path / "state", racy_window_ns=0)
    names: list[str | Path] = ["a", tmp_path / "a", f"{tmp_path}//./a"]
    out = cache.hash_many(names)
    assert set(out) == {"a", tmp_path / "a", f"{tmp_path}//./a"}
    assert len(set(out.values())) == 1
    assert cache.stats.misses == 3
    assert cache.hash_file("a") == out["a"]
    assert cache.stats.hits == 1  # one entry, by absolute path


def test_a_change_in_a_big_folder_rewrites_one_of_its_rows(tmp_path: Path) -> None:
    import sqlite3

    files = [write(tmp_path / f"f{i}", b"%d" % i) for i in range(300)]
    state = tmp_path / "state"
    HashCache(state, racy_window_ns=0).hash_many(files)

    def rows() -> dict[bytes, bytes]:
        with sqlite3.connect(state / HashCache.FILENAME) as db:
            return dict(db.execute("SELECT dir, vals FROM dirs").fetchall())

    before = rows()
    assert len(before) == hash_rows.BUCKET_MASK + 1  # 300 names fill every bucket
    write(files[7], b"changed")
    HashCache(state, racy_window_ns=0).hash_many([files[7]])
    after = rows()
    assert after.keys() == before.keys()
    assert sum(after[k] != before[k] for k in after) == 1
    cache = HashCache(state, racy_window_ns=0)
    assert cache.hash_many(files)[files[7]].digest == blake3(b"changed").hexdigest()
    assert cache.stats.hits == len(files)


def test_a_folder_row_keeps_what_each_call_added(tmp_path: Path) -> None:
    """Rows are per folder: each write merges into what is there, replacing only its files."""
    a, b, c = (write(tmp_path / n, n.encode()) for n in "abc")
    (tmp_path / "sub").mkdir()
    other = write(tmp_path / "sub" / "d", b"d")
    state = tmp_path / "state"
    HashCache(state, racy_window_ns=0).hash_many([a])
    HashCache(state, racy_window_ns=0).hash_many([b, c, other])
    write(b, b"a longer b")
    HashCache(state, racy_window_ns=0).hash_many([b])
    cache = HashCache(state, racy_window_ns=0)
    got = cache.hash_many([a, b, c, other])
    assert (cache.stats.hits, cache.stats.misses) == (4, 0)
    assert got == {p: (blake3(p.read_bytes()).hexdigest(), p.stat().st_size) for p in got}
    assert len(got) == 4


def test_changed_file_is_rehashed(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"one")
    cache = HashCache(tmp_path / "state", racy_window_ns=0)
    assert cache.hash_file(f).digest == blake3(b"one").hexdigest()
    st = f.stat()
    f.write_bytes(b"two")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime (ctime moves)
    assert cache.hash_file(f).digest == blake3(b"two").hexdigest()
    assert cache.stats.misses == 2


def test_recent_files_are_hashed_but_not_cached(tmp_path: Path) -> None:
    """Racy-clean: a same-size rewrite within one timestamp tick would keep the stat key."""
    f = write(tmp_path / "f", b"fresh")
    cache = HashCache(tmp_path / "state")  # default window: one second
    assert cache.hash_file(f).digest == blake3(b"fresh").hexdigest()
    assert cache.stats.not_cached == 1
    assert cache.lookup_many([f]) == {}


def test_file_modified_while_hashed_is_not_cached(tmp_path: Path) -> None:
    # Big enough that hashing it spans many of the writer's appends even on a loaded machine
    # (the hasher releases the GIL), and hashing starts only once the writer is writing.
    f = write(tmp_path / "growing", os.urandom(64 << 20))
    stop = threading.Event()
    writing = threading.Event()

    def append() -> None:
        with open(f, "ab", buffering=0) as out:
            while not stop.is_set():
                out.write(b"x" * 4096)
                writing.set()
                time.sleep(0.0002)

    writer = threading.Thread(target=append)
    writer.start()
    assert writing.wait(10)
    cache = HashCache(tmp_path / "state", racy_window_ns=0)
    try:
        with pytest.raises(FileChanged) as info:
            cache.hash_many([f])
        with pytest.raises(FileChanged):
            hash_file(f)
    finally:
        stop.set()
        writer.join()
    assert info.value.paths == [str(f)]
    assert cache.lookup_many([f]) == {}
    assert cache.stats.not_cached == 1


def test_missing_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a", b"a")
    cache = HashCache(tmp_path / "state", racy_window_ns=0)
    with pytest.raises(FileNotFoundError):
        cache.hash_many([a, tmp_path / "gone"])
    assert set(cache.hash_many([a, tmp_path / "gone"], missing_ok=True)) == {a}
    with pytest.raises(IsADirectoryError):
        cache.hash_many([tmp_path])


def test_what_is_not_a_regular_file_is_named_so_with_or_without_a_row(tmp_path: Path) -> None:
    """A path the cache has no row for is opened without a stat first: a FIFO must not hang
    us, and a socket (which open refuses with ENXIO) is still 'not a regular file'."""
    import socket

    fifo, sock, ok = tmp_path / "fifo", tmp_path / "sock", write(tmp_path / "ok", b"ok")
    os.mkfifo(fifo)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    try:
        for racy in (0, hashing.RACY_WINDOW_NS):  # cached on the first turn, a row after
            cache = HashCache(tmp_path / "state", racy_window_ns=racy)
            errors: dict[Path, OSError] = {}
            got = cache.hash_many([fifo, sock, ok, tmp_path, tmp_path / "gone"], errors=errors)
            assert got == {ok: (blake3(b"ok").hexdigest(), 2)}
            assert sorted(errors) == sorted([fifo, sock, tmp_path, tmp_path / "gone"])
            assert "not a regular file" in str(errors[fifo])
            assert "not a regular file" in str(errors[sock])
            assert isinstance(errors[tmp_path], IsADirectoryError)
            assert isinstance(errors[tmp_path / "gone"], FileNotFoundError)
            for bad in (fifo, sock):
                with pytest.raises(OSError, match="not a regular file"):
                    cache.hash_many([ok, bad])
        assert cache.stats.hits == 3  # the second turn read `ok` from its row, thrice
    finally:
        listener.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_big_files_found_among_small_ones_are_hashed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Sizes are learnt only once a file is open: the big ones are handed to the pool (from
    the second) or hashed after the small ones, and none is lost or hashed wrong."""
    monkeypatch.setattr(stable_read, "POOL_FROM", 1000)
    sizes = [10, 5000, 20, 3000, 0, 1001, 1000, 7]
    files = [write(tmp_path / f"f{i}", os.urandom(n)) for i, n in enumerate(sizes)]
    cache = HashCache(tmp_path / "state", racy_window_ns=0, workers=workers)
    keys: dict[str, bytes] = {}
    got = cache.hash_many([*files, tmp_path / "gone"], missing_ok=True, keys=keys)
    assert list(got) == files or set(got) == set(files)
    for f in files:
        assert got[f] == (blake3(f.read_bytes()).hexdigest(), f.stat().st_size)
        assert keys[str(f)] == stable_read.stat_key(f.stat())
    assert (cache.stats.misses, cache.stats.bytes_read) == (len(files), sum(sizes))
    again = HashCache(tmp_path / "state", racy_window_ns=0, workers=workers)
    assert again.hash_many(files) == got
    assert again.stats.hits == len(files)


def _helper_batch(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Small files, then what the helper must hand back: a FIFO, a folder, a missing file,
    one above `stable_read.POOL_FROM`, and a name not UTF-8."""
    head = [write(tmp_path / f"f{i:03}", os.urandom(i % 50)) for i in range(300)]
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    odd = write(Path(os.fsdecode(bytes(tmp_path / "odd") + b"\xff")), b"odd")
    big = write(tmp_path / "big", os.urandom(stable_read.POOL_FROM + 1))
    tail = [fifo, *head[:3], folder, tmp_path / "gone", big, odd]
    return [*head, *tail, *head[-5:]], [fifo, folder]


@pytest.mark.parametrize("waits_for", ["its-first-answer", "all-its-answers"])
def test_a_helper_process_hashes_many_files_alongside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waits_for: str
) -> None:
    paths, unreadable = _helper_batch(tmp_path)
    monkeypatch.setattr(hashing, "_HELPER_FROM", 10)
    # Started in a repository that holds a module named like one it imports: not imported.
    (tmp_path / "repo").mkdir()
    write(tmp_path / "repo" / "blake3.py", b"raise SystemExit(9)\n")
    monkeypatch.chdir(tmp_path / "repo")
    # This side waits for the helper's answers before it hashes anything: on a busy machine
    # the helper might otherwise not get a turn before this side is done. Having answered
    # all, the helper waits to hear where this side stopped.
    helpers: list[hash_helper.Helper] = []
    start, hash_fresh = hash_helper.Helper.start, hashing._hash_fresh

    def recorded(*args: Any) -> hash_helper.Helper | None:
        helper = start(*args)
        helpers.extend([helper] if helper else [])
        return helper

    def after_its_answers(todo: list[Any], answered: Any, *args: Any) -> object:
        want = 1 if waits_for == "its-first-answer" or not helpers else len(todo)
        deadline = time.monotonic() + 60
        while helpers and answered[0] < want and time.monotonic() < deadline:
            time.sleep(0.002)
        return hash_fresh(todo, answered, *args)

    monkeypatch.setattr(hash_helper.Helper, "start", recorded)
    monkeypatch.setattr(hashing, "_hash_fresh", after_its_answers)
    cache = HashCache(tmp_path / "state", racy_window_ns=0, workers=2)
    errors: dict[Path, OSError] = {}
    keys: dict[str, bytes] = {}
    got = cache.hash_many(paths, missing_ok=True, errors=errors, keys=keys)
    assert len(helpers) == 1
    readable = [p for p in paths if p.is_file() and not p.is_fifo()]
    assert got == {p: (blake3(p.read_bytes()).hexdigest(), p.stat().st_size) for p in readable}
    assert keys == {str(p): stable_read.stat_key(p.stat()) for p in readable}
    assert sorted(errors) == sorted(unreadable)
    assert "not a regular file" in str(errors[tmp_path / "fifo"])
    # At least its first answer, and never what it must hand back.
    small = [p for p in readable if p.stat().st_size < stable_read.POOL_FROM]
    assert 1 <= cache.stats.helped <= len(small)
    if waits_for == "all-its-answers":
        assert cache.stats.helped == len(small)
    assert cache.stats.misses == len(readable)
    assert cache.stats.not_cached == 0
    # The helper wrote the rows of the files it hashed, this side the rest.
    again = HashCache(tmp_path / "state", racy_window_ns=0, workers=2)
    assert again.hash_many(set(readable)) == got
    assert again.stats.hits == len(got)

    # Files with a row that changed go to the helper too: it takes their stat afresh.
    changed = readable[:4]
    for p in changed:
        st = p.stat()
        p.write_bytes(bytes(b ^ 0xFF for b in p.read_bytes()) or b"x")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setattr(hashing, "_HELPER_FROM", 3)
    helpers.clear()
    third = HashCache(tmp_path / "state", racy_window_ns=0, workers=2)
    keys.clear()
    unique = list(dict.fromkeys(readable))
    now = third.hash_many(unique, keys=keys)
    assert len(helpers) == 1
    assert now == {p: (blake3(p.read_bytes()).hexdigest(), p.stat().st_size) for p in unique}
    assert keys == {str(p): stable_read.stat_key(p.stat()) for p in unique}
    assert third.stats.misses == len(changed)
    assert third.stats.helped >= 1


def test_a_helper_reports_recent_files_as_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The racy rule holds for what the helper hashed: nothing too recent gets a row."""
    files = [write(tmp_path / f"f{i:03}", b"%d" % i) for i in range(400)]
    monkeypatch.setattr(hashing, "_HELPER_FROM", 10)
    hash_fresh = hashing._hash_fresh

    def after_its_first_answer(todo: list[Any], answered: Any, *args: Any) -> object:
        deadline = time.monotonic() + 60
        while answered[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        return hash_fresh(todo, answered, *args)

    monkeypatch.setattr(hashing, "_hash_fresh", after_its_first_answer)
    cache = HashCache(tmp_path / "state", workers=2)  # default window: all are too recent
    got = cache.hash_many(files)
    assert got == {p: (blake3(p.read_bytes()).hexdigest(), p.stat().st_size) for p in files}
    assert cache.stats.helped >= 1
    assert cache.stats.not_cached == len(files)
    assert HashCache(tmp_path / "state", workers=2).lookup_many(files) == {}


# A helper that writes its counters as `Helper` reads them, and then some mischief.
_SAYS_ALL_ANSWERED = (
    "import mmap, os, sys, time; fd = int(sys.argv[2]); m = mmap.mmap(fd, os.fstat(fd).st_size);"
    " m[:8] = int(sys.argv[3]).to_bytes(8, sys.byteorder);"
)


@pytest.mark.parametrize(
    "how",
    [
        pytest.param({"sys.executable": "/nonexistent/python"}, id="cannot-start"),
        pytest.param({"_HELPER_MAIN": "raise SystemExit(3)"}, id="fails"),
        pytest.param({"_HELPER_MAIN": "import time; time.sleep(600)"}, id="hangs"),
        pytest.param(
            {"_HELPER_MAIN": _SAYS_ALL_ANSWERED + " sys.stdin.read(); print('.', end='')"},
            id="answers-nothing-it-claims",
        ),
        pytest.param(
            {"_HELPER_MAIN": _SAYS_ALL_ANSWERED + " time.sleep(600)"},
            id="never-says-it-stopped",
        ),
    ],
)
def test_hashing_goes_on_without_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: dict[str, str]
) -> None:
    paths, unreadable = _helper_batch(tmp_path)
    monkeypatch.setattr(hashing, "_HELPER_FROM", 10)
    monkeypatch.setattr(hash_helper, "STOP_TIMEOUT_S", 0.5)
    for name, value in how.items():
        if name == "sys.executable":
            monkeypatch.setattr(sys, "executable", value)
        else:
            monkeypatch.setattr(hash_helper, name, value)
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recorded(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", recorded)
    hash_fresh = hashing._hash_fresh
    claims = how.get("_HELPER_MAIN", "").startswith(_SAYS_ALL_ANSWERED)

    def after_its_claim(todo: list[Any], answered: Any, *args: Any) -> object:
        # One that claims answers gets to make its claim before this side is done.
        deadline = time.monotonic() + (60 if claims else 0)
        while answered[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        return hash_fresh(todo, answered, *args)

    monkeypatch.setattr(hashing, "_hash_fresh", after_its_claim)
    cache = HashCache(tmp_path / "state", racy_window_ns=0, workers=2)
    errors: dict[Path, OSError] = {}
    began = time.monotonic()
    got = cache.hash_many(paths, missing_ok=True, errors=errors)
    if claims and how["_HELPER_MAIN"].endswith("sleep(600)"):
        assert time.monotonic() - began >= hash_helper.STOP_TIMEOUT_S  # then it was killed
    readable = [p for p in paths if p.is_file() and not p.is_fifo()]
    assert got == {p: (blake3(p.read_bytes()).hexdigest(), p.stat().st_size) for p in readable}
    assert sorted(errors) == sorted(unreadable)
    assert cache.stats.helped == 0
    assert all(proc.poll() is not None for proc in started)  # none left running
    again = HashCache(tmp_path / "state", racy_window_ns=0, workers=2)
    assert again.hash_many(readable) == got
    assert again.stats.hits == len(got)


_WORKER = """
import json, sys
from roargit.hashing import HashCache
paths = json.loads(sys.argv[2])
out = {}
for i in range(0, len(paths), 25):  # many small transactions, to interleave with others
    cache = HashCache(sys.argv[1], racy_window_ns=0)
    out.update(cache.hash_many(paths[i : i + 25]))
    cache.close()
print(json.dumps({p: list(v) for p, v in out.items()}))
"""


def test_concurrent_processes_share_one_cache(tmp_path: Path) -> None:
    files = [str(write(tmp_path / f"f{i}", os.urandom(i * 7))) for i in range(300)]
    expected = {p: [blake3(Path(p).read_bytes()).hexdigest(), os.path.getsize(p)] for p in files}
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(Path(hashing.__file__).parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(state), json.dumps(files[k * 25 :] + files)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for k in range(8)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out) == expected
    cache = HashCache(state, racy_window_ns=0)
    assert cache.hash_many(files) == {p: tuple(v) for p, v in expected.items()}
    assert cache.stats.hits == len(files)


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    files = [write(tmp_path / f"f{i}", os.urandom(64)) for i in range(2000)]
    state = tmp_path / "state"
    with HashCache(state, racy_window_ns=0) as cache:
        truth = cache.hash_many(files)
    db = state / HashCache.FILENAME
    # Damage the pages in the middle (the header stays valid, so the open succeeds and the
    # damage shows up only when the rows are read).
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(size // 4))
    with HashCache(state, racy_window_ns=0) as cache:
        assert cache.hash_many(files) == truth
        assert cache.hash_many(files) == truth
    with HashCache(state, racy_window_ns=0) as cache:
        assert cache.hash_many(files) == truth
        assert cache.stats.hits == len(files)  # rebuilt, and in use again

    db.write_bytes(b"this is not a database" * 100)  # and a wrecked header
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with HashCache(state, racy_window_ns=0) as cache:
        assert cache.hash_many(files) == truth
        assert cache.hash_many(files) == truth
        assert cache.stats.hits == len(files)


def test_unusable_cache_location_still_hashes(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"data")
    blocker = write(tmp_path / "state", b"a file where the state folder should be")
    cache = HashCache(blocker, racy_window_ns=0)
    assert cache.hash_file(f).digest == blake3(b"data").hexdigest()
    assert cache.stats.cache_errors >= 1


@pytest.mark.parametrize(
    "damage",
    [
        # a flipped bit in a digest
        pytest.param(lambda vals: bytes([*vals[:-1], vals[-1] ^ 1]), id="bit"),
        # a value that now reads as TEXT, and not even UTF-8 (SQLite's || makes text)
        pytest.param(lambda vals: vals[:40].decode("latin-1") + "\xff", id="text"),
    ],
)
def test_damaged_row_that_still_parses_is_not_trusted(
    tmp_path: Path, damage: Callable[[bytes], object]
) -> None:
    import sqlite3

    f, g = write(tmp_path / "f", b"content"), write(tmp_path / "g", b"other")
    state = tmp_path / "state"
    with HashCache(state, racy_window_ns=0) as cache:
        truth = cache.hash_many([f, g])
    with sqlite3.connect(state / HashCache.FILENAME) as db:  # every row
        for key, vals in db.execute("SELECT dir, vals FROM dirs").fetchall():
            bad = damage(vals)
            if isinstance(bad, str):
                bad = bad.encode("latin-1")
                db.execute("UPDATE dirs SET vals = CAST(? AS TEXT) WHERE dir = ?", (bad, key))
            else:
                db.execute("UPDATE dirs SET vals = ? WHERE dir = ?", (bad, key))
    with HashCache(state, racy_window_ns=0) as cache:
        assert cache.hash_file(f) == truth[f]
        assert (cache.stats.misses, cache.stats.cache_errors) == (1, 1)
    with HashCache(state, racy_window_ns=0) as cache:  # the damaged row was replaced
        assert cache.hash_many([f, g]) == truth
        assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    with HashCache(state, racy_window_ns=0) as cache:
        assert cache.hash_many([f, g]) == truth
        assert cache.stats.hits == 2


def test_names_that_are_not_utf8(tmp_path: Path) -> None:
    f = Path(os.fsdecode(bytes(tmp_path / "x") + b"\xff\xfe"))
    write(f, b"odd name")
    with HashCache(tmp_path / "state", racy_window_ns=0) as cache:
        assert cache.hash_file(f).digest == blake3(b"odd name").hexdigest()
    with HashCache(tmp_path / "state", racy_window_ns=0) as cache:
        assert cache.hash_many([f]) == {f: (blake3(b"odd name").hexdigest(), 8)}
        assert cache.stats.hits == 1


@pytest.mark.parametrize(
    "pick",
    [
        pytest.param(lambda ps: ps[:3], id="few"),
        pytest.param(lambda ps: ps[::20], id="sparse-among-many"),  # ranges hit LIMIT
        pytest.param(lambda ps: ps[:11000], id="most-of-the-table"),  # whole-table scan
        pytest.param(lambda ps: [*ps[::2], "/nowhere", "/x"], id="half-plus-unknown"),
    ],
)
def test_every_lookup_strategy_finds_the_same_rows(
    tmp_path: Path, pick: Callable[[list[str]], list[str]]
) -> None:
    # The strategies choose by the number of folders asked about and cached.
    paths = [f"/data/{d:04}/file-{i}" for d in range(6000) for i in range(2)]
    rows = [(p, os.urandom(40), blake3(p.encode()).digest()) for p in paths]
    with HashCache(tmp_path / "state") as cache:
        cache._rows.insert(rows)
        wanted = pick(paths)
        found = cache._rows.select(wanted)
    chosen = set(wanted)
    expected = {p: (key, digest.hex()) for p, key, digest in rows if p in chosen}
    assert found == expected


# -- big files: a memory map under a read lease -------------------------------------------


def _pythonpath_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(hashing.__file__).parents[1])}


def _start_script(script: str, path: Path) -> subprocess.Popen[bytes]:
    """Run `script` on `path` in another Python, once it has printed that it is going."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_pythonpath_env(),
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
    return proc


def _lease_possible(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return bigfile.take_lease(fd)
    finally:
        os.close(fd)  # closing the file lets go of the lease


@pytest.fixture
def small_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mapped path for files of a few MiB, in windows of 1 MiB (page multiples)."""
    monkeypatch.setattr(stable_read, "MMAP_FROM", 2 << 20)
    monkeypatch.setattr(bigfile, "MAP_WINDOW", 1 << 20)


@pytest.mark.usefixtures("small_map")
def test_big_file_is_hashed_from_a_map_under_a_lease(tmp_path: Path) -> None:
    data = os.urandom((5 << 20) + 123)  # windows of 1 MiB, the last one short
    f = write(tmp_path / "big", data)
    if not _lease_possible(f):
        pytest.skip("no read lease here (file system, or leases disabled)")
    fd = os.open(f, os.O_RDONLY)
    try:
        hasher = blake3()
        assert bigfile.hash_mapped(fd, hasher) == len(data)
        assert hasher.hexdigest() == blake3(data).hexdigest()
        # The lease is let go at once: a writer that would rather fail than wait gets in.
        os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
    finally:
        os.close(fd)
    assert hash_file(f) == (blake3(data).hexdigest(), len(data))


_HOLD_OPEN = """
import sys
f = open(sys.argv[1], "r+b")
print("open", flush=True)
sys.stdin.read()
"""


@pytest.mark.usefixtures("small_map")
def test_file_open_for_writing_elsewhere_is_read_instead(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    f = write(tmp_path / "big", data)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN, str(f)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        fd = os.open(f, os.O_RDONLY)
        try:
            assert bigfile.hash_mapped(fd, blake3()) == 0  # no lease: no map
        finally:
            os.close(fd)
        assert hash_file(f) == (blake3(data).hexdigest(), len(data))
    finally:
        holder.communicate(b"", timeout=30)


_MAP_THEN_READ = """
import os, sys, time
from blake3 import blake3
from roargit import bigfile, hashing
bigfile.MAP_WINDOW = 1 << 20
print("go", flush=True)
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    fd = os.open(sys.argv[1], os.O_RDONLY)
    h = blake3()
    n = bigfile.hash_mapped(fd, h)
    h.update(os.pread(fd, 1 << 30, n))
    os.close(fd)
    print(n, h.hexdigest(), flush=True)
"""


def test_writer_mid_way_gets_the_file_and_the_rest_is_read(tmp_path: Path) -> None:
    """Opening for writing (without writing) breaks the lease: the hasher lets go after the
    window it is in, reads the rest, and the digest is still of the whole file."""
    data = os.urandom(1 << 20) * 32
    f = write(tmp_path / "big", data)
    hasher = _start_script(_MAP_THEN_READ, f)
    assert hasher.stdout is not None
    waited = []
    for _ in range(20):
        start = time.monotonic()
        with open(f, "r+b"):  # waits while the hasher holds its lease
            waited.append(time.monotonic() - start)
        time.sleep(0.02)
    out, err = hasher.communicate(timeout=60)
    assert hasher.returncode == 0, err.decode()
    results = [line.split() for line in out.decode().splitlines()]
    assert {digest for _, digest in results} == {blake3(data).hexdigest()}
    if _lease_possible(f):
        assert any(0 < int(n) < len(data) for n, _ in results)  # stopped mid-way
        assert any(int(n) == len(data) for n, _ in results)
    assert max(waited) < 10  # a window, never the kernel's lease-break-time


_HASH_UNTIL_EMPTY = """
import sys, time
from roargit import bigfile, hashing, stable_read
from roargit.errors import FileChanged
# Windows big enough that a truncate is likely to land while one is hashed: without the
# lease, that is SIGBUS.
stable_read.MMAP_FROM, bigfile.MAP_WINDOW = 2 << 20, 16 << 20
print("go", flush=True)
deadline, empty = time.monotonic() + 20, 0
while empty < 3 and time.monotonic() < deadline:
    try:
        h = hashing.hash_file(sys.argv[1])
        print(h.digest, h.size, flush=True)
        empty += h.size == 0
    except FileChanged:
        print("changed", flush=True)
"""


@pytest.mark.parametrize("how", ["truncate", "open-wb"])
def test_truncating_a_file_being_hashed_never_kills_us(tmp_path: Path, how: str) -> None:
    """The hasher runs in its own process, so that SIGBUS would show as its exit status."""
    data = os.urandom(1 << 20) * 64
    f = write(tmp_path / "big", data)
    hasher = _start_script(_HASH_UNTIL_EMPTY, f)
    assert hasher.stdout is not None
    hasher.stdout.readline()  # one whole hash done: it is hashing again now
    if how == "truncate":
        os.truncate(f, 0)  # waits while the hasher holds its lease
    else:
        f.open("wb").close()
    out, err = hasher.communicate(timeout=60)
    assert hasher.returncode == 0, (hasher.returncode, err.decode())  # -7: SIGBUS
    whole, empty = f"{blake3(data).hexdigest()} {len(data)}", f"{EMPTY} 0"
    results = out.decode().splitlines()
    assert results[-1] == empty
    assert set(results) <= {whole, empty, "changed"}


_AS_USER = """
import os, sys
from blake3 import blake3
from roargit import bigfile, hashing, stable_read
stable_read.MMAP_FROM, bigfile.MAP_WINDOW = 2 << 20, 1 << 20
bigfile._fs_type(0)  # loads libc while it still may
os.chdir(sys.argv[1])
os.setgid(65534)
os.setuid(65534)
for name in ("mine", "root's"):
    fd = os.open(name, os.O_RDONLY)
    print(name, bigfile.hash_mapped(fd, blake3()), hashing.hash_file(name).digest)
    os.close(fd)
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_leases_as_an_ordinary_user(tmp_path: Path) -> None:
    """Without CAP_LEASE a lease is granted on one's own files only; others' are read."""
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o755)
    data = os.urandom(3 << 20)
    mine, roots = write(home / "mine", data), write(home / "root's", data)
    os.chown(mine, 65534, 65534)
    roots.chmod(0o644)
    leases = _lease_possible(mine)
    proc = subprocess.run(
        [sys.executable, "-c", _AS_USER, str(home)],
        capture_output=True,
        env=_pythonpath_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    digest = blake3(data).hexdigest()
    mapped = len(data) if leases else 0
    assert proc.stdout.decode().splitlines() == [f"mine {mapped} {digest}", f"root's 0 {digest}"]


def test_a_cache_made_with_small_pages_gets_big_ones_once_it_is_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    files = [write(tmp_path / f"f{i}", b"%d" % i) for i in range(300)]
    state = tmp_path / "state"
    db = state / HashCache.FILENAME
    monkeypatch.setattr(hash_rows, "_PAGE_SIZE", 4096)
    with HashCache(state, racy_window_ns=0) as cache:
        truth = cache.hash_many(files)
    monkeypatch.undo()

    def page_size() -> int:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])

    assert page_size() == 4096
    other = sqlite3.connect(db)  # another process's connection: not now, and no waiting
    try:
        assert other.execute("SELECT count(*) FROM dirs").fetchone()[0] > 0
        began = time.monotonic()
        with HashCache(state, racy_window_ns=0) as cache:
            assert cache.hash_many(files) == truth
            assert cache.stats.hits == len(files)
        assert time.monotonic() - began < hash_rows._BUSY_TIMEOUT_S / 2
        assert page_size() == 4096
    finally:
        other.close()
    with HashCache(state, racy_window_ns=0) as cache:
        assert cache.hash_many(files) == truth
        assert cache.stats.hits == len(files)
    assert page_size() == hash_rows._PAGE_SIZE
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
