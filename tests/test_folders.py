"""Which folders a run records whole, and the manifest codec."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from blake3 import blake3

from roargit import codec, folders
from roargit.errors import RecordCorrupt, RecordTooNew

READ = (
    "import os, sys\n"
    "for f in os.listdir(sys.argv[1]):\n"
    "    open(os.path.join(sys.argv[1], f)).read()\n"
)


def _files(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{i:04d}.bin"
        p.write_bytes(b"%d" % i)
        out.append(str(p))
    return out


def test_the_dataset_folder_is_chosen_not_a_parent_with_a_few_other_files(tmp_path: Path) -> None:
    images = _files(tmp_path / "data" / "images", 300)
    _files(tmp_path / "data", 3)  # other steps' CSVs beside the dataset, not read
    chosen = folders.choose_folders(images, never={str(tmp_path)})
    assert list(chosen) == [str(tmp_path / "data" / "images")]
    assert chosen[str(tmp_path / "data" / "images")] == sorted(images)


def test_a_dataset_split_in_class_folders_is_one_folder(tmp_path: Path) -> None:
    read = [f for c in range(3) for f in _files(tmp_path / "train" / f"class{c}", 150)]
    _files(tmp_path / "val", 200)  # not read: the parent is not chosen
    chosen = folders.choose_folders(read, never={str(tmp_path)})
    assert list(chosen) == [str(tmp_path / "train")]


def test_too_few_or_too_sparse_reads_keep_files_apart(tmp_path: Path) -> None:
    few = _files(tmp_path / "few", 50)
    assert folders.choose_folders(few, never={str(tmp_path)}) == {}
    many = _files(tmp_path / "many", 300)
    assert folders.choose_folders(many[:200], never={str(tmp_path)}) == {}  # 2/3 < 90 %
    assert folders.choose_folders(many, never={str(tmp_path), str(tmp_path / "many")}) == {}


def test_manifest_round_trip_and_corruption() -> None:
    entries = [folders.ManifestEntry("b/x", "1" * 64, 3), folders.ManifestEntry("a", "2" * 64, 0)]
    digest, data = folders.encode_manifest(entries)
    assert folders.encode_manifest(list(reversed(entries))) == (digest, data)
    assert sorted(folders.decode_manifest(data, "m"), key=lambda e: e.path) == sorted(
        entries, key=lambda e: e.path
    )
    assert folders.decode_manifest_rows(data, "m") == {"a": "2" * 64, "b/x": "1" * 64}
    assert folders.decode_manifest(data, "m", digest=digest) == sorted(entries)
    with pytest.raises(RecordCorrupt, match=r"^record m is corrupt: not valid msgpack"):
        folders.decode_manifest_rows(b"\x93garbage", "m")


def test_a_manifest_is_a_canonical_record() -> None:
    rows = [("a", "2" * 64, 0), ("b/x", "1" * 64, 3)]
    digest, data = folders.encode_manifest([folders.ManifestEntry(*r) for r in rows])
    assert data == codec.encode({"type": "manifest", "files": [list(r) for r in rows]})
    assert list(msgpack.unpackb(data)) == ["files", "type", "v"]
    assert digest == blake3(data).hexdigest()


def test_a_manifest_written_in_the_old_key_order_still_reads_under_its_own_id() -> None:
    rows: list[Any] = [["a", "2" * 64, 0], ["b/x", "1" * 64, 3]]
    old = msgpack.packb({"type": "manifest", "v": 1, "files": rows}, use_bin_type=True)
    entries = folders.decode_manifest(old, "m", digest=blake3(old).hexdigest())
    assert entries == [folders.ManifestEntry(*r) for r in rows]


def _manifest(files: object, **extra: object) -> bytes:
    return msgpack.packb({"files": files, "type": "manifest", "v": 1, **extra})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_manifest([["a", "1" * 64, 1]]) + b"\xc0", "is corrupt: not valid msgpack"),
        (msgpack.packb([1, 2]), "is corrupt: not a map"),
        (msgpack.packb({"type": "manifest", "files": []}), "is malformed: v is missing"),
        (_manifest([], type="run"), 'is malformed: type must be "manifest"'),
        (msgpack.packb({"type": "manifest", "v": 1}), "is malformed: files is missing"),
        (_manifest({"a": 1}), "is malformed: files must be a list"),
        (_manifest([["a", "1" * 64]]), r"files\[0\] must be a \[path, hash, size\] list"),
        (_manifest([["", "1" * 64, 1]]), r"files\[0\].path must be a non-empty string"),
        (_manifest([["a\0b", "1" * 64, 1]]), r"files\[0\].path must be a non-empty string"),
        (_manifest([[b"a", "1" * 64, 1]]), r"files\[0\].path must be a non-empty string"),
        (_manifest([["a", "1" * 63, 1]]), r"files\[0\].hash must be 64 lowercase hex"),
        (_manifest([["a", "A" * 64, 1]]), r"files\[0\].hash must be 64 lowercase hex"),
        (_manifest([["a", "1" * 64, -1]]), r"files\[0\].size must be an integer from 0"),
        (_manifest([["a", "1" * 64, 2**63]]), r"files\[0\].size must be an integer from 0"),
        (_manifest([["a", "1" * 64, True]]), r"files\[0\].size must be an integer from 0"),
        (
            _manifest([["b", "1" * 64, 1], ["a", "1" * 64, 1]]),
            r"files\[1\].path must sort after the path before it",
        ),
        (
            _manifest([["a", "1" * 64, 1], ["a", "2" * 64, 1]]),
            r"files\[1\].path must sort after the path before it",
        ),
    ],
)
def test_a_malformed_manifest_is_refused_with_the_field(data: bytes, message: str) -> None:
    for decode in (folders.decode_manifest, folders.decode_manifest_rows):
        with pytest.raises(RecordCorrupt, match=message):
            decode(data, "manifest 0123456789ab", source="origin")
    with pytest.raises(RecordCorrupt, match=r"^record manifest 0123456789ab from origin is "):
        folders.decode_manifest(data, "manifest 0123456789ab", source="origin")


def test_a_manifest_is_checked_against_its_id_and_its_version() -> None:
    _, data = folders.encode_manifest([folders.ManifestEntry("a", "1" * 64, 1)])
    with pytest.raises(RecordCorrupt, match="does not match its id"):
        folders.decode_manifest(data, "m", digest="0" * 64)
    newer = msgpack.packb({"files": [], "type": "manifest", "v": 2})
    with pytest.raises(RecordTooNew, match="upgrade roargit"):
        folders.decode_manifest_rows(newer, "m")


def test_an_unchanged_folder_reuses_its_manifest_and_any_change_is_seen(git_repo: Path) -> None:
    data = git_repo / "data"
    _files(data, 150)
    time.sleep(1.1)  # older than the racy window: the folder's state may be remembered
    read = [sys.executable, "-c", READ, "data"]

    def folder_hash() -> str:
        out = subprocess.run(
            ["roar", "run", "--json", *read], cwd=git_repo, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        [entry] = json.loads(out.stdout)["inputs"]
        assert entry["type"] == "dir"
        return str(entry["hash"])

    first = folder_hash()
    assert len(list((git_repo / ".git" / "roar" / "folders").iterdir())) == 1
    assert folder_hash() == first
    (data / "0007.bin").write_bytes(b"x")  # same size as before, new bytes
    changed = folder_hash()
    assert changed != first
    where = f"refs/roar/ledger:manifests/{changed[:2]}/{changed[2:4]}/{changed}"
    blob = subprocess.run(
        ["git", "cat-file", "blob", where], cwd=git_repo, capture_output=True, check=True
    ).stdout
    manifest = folders.decode_manifest_rows(blob, "m")
    assert manifest["0007.bin"] == blake3(b"x").hexdigest()
    assert folder_hash() == changed  # racy: not remembered, so recomputed, same answer


def test_manifest_from_hashes_is_encode_manifest() -> None:
    folder = "/d"
    files = ["/d/b/x", "/d/a", "/d/c", "/d/sp ace"]
    hashes = {f: (blake3(f.encode()).hexdigest(), len(f)) for f in files if f != "/d/c"}
    entries = [folders.ManifestEntry(f[3:], h, n) for f, (h, n) in hashes.items()]
    digest, data = folders.encode_manifest(entries)
    assert folders.manifest_from_hashes(folder, files, hashes) == (
        digest,
        data,
        sum(e.size for e in entries),
        3,
    )


def test_stat_digest_from_the_hash_caches_keys_is_the_lstat_one(tmp_path: Path) -> None:
    from roargit.hashing import HashCache

    files = _files(tmp_path / "data", 20)
    folder = str(tmp_path / "data")
    expected = folders.stat_digest(folder, files)
    cache = HashCache(tmp_path / "state", racy_window_ns=0)
    for _ in range(2):  # hashed, then from the cache: the same keys either way
        keys: dict[str, bytes] = {}
        cache.hash_many(files, keys=keys)
        assert folders.stat_digest_of_keys(folder, files, keys) == expected
    del keys[files[3]]
    assert folders.stat_digest_of_keys(folder, files, keys) is None


def test_stat_digest_from_hex_keys_is_the_lstat_one(tmp_path: Path) -> None:
    """The tracer's keys (hex) give the lstat digest; files without one are lstat-ed, and a
    malformed key or a file gone gives no digest."""
    import struct

    folder = str(tmp_path / "data")
    files = sorted(_files(tmp_path / "data", 10) + _files(tmp_path / "data" / "sub", 3))
    expected = folders.stat_digest(folder, files)
    assert expected is not None
    keys = {}
    for f in files:
        st = Path(f).lstat()
        packed = struct.pack("<QQQqq", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                             st.st_ctime_ns)  # fmt: skip
        keys[f] = packed.hex().encode()
    assert folders.stat_digest_of_hex(folder, files, keys) == expected
    del keys[files[2]], keys[files[11]]  # files the run did not touch
    assert folders.stat_digest_of_hex(folder, files, keys) == expected
    assert folders.stat_digest_of_hex(folder, files, {**keys, files[0]: b"zz"}) is None
    assert folders.stat_digest_of_hex(folder, files, {**keys, files[0]: b"00"}) is None
    Path(files[2]).unlink()
    assert folders.stat_digest_of_hex(folder, files, keys) is None


def test_a_remembered_folder_whose_manifest_the_ledger_lacks_records_it_again(
    git_repo: Path,
) -> None:
    data = git_repo / "data"
    _files(data, 150)
    time.sleep(1.1)  # older than the racy window: the folder's state may be remembered
    read = ["roar", "run", "--json", sys.executable, "-c", READ, "data"]

    def run() -> str:
        out = subprocess.run(read, cwd=git_repo, capture_output=True, text=True, check=True)
        [entry] = json.loads(out.stdout)["inputs"]
        return str(entry["hash"])

    first = run()
    assert len(list((git_repo / ".git" / "roar" / "folders").iterdir())) == 1
    subprocess.run(["git", "update-ref", "-d", "refs/roar/ledger"], cwd=git_repo, check=True)
    assert run() == first
    where = f"refs/roar/ledger:manifests/{first[:2]}/{first[2:4]}/{first}"
    kind = subprocess.run(
        ["git", "cat-file", "-t", where], cwd=git_repo, capture_output=True, text=True
    )
    assert kind.stdout.strip() == "blob", kind.stderr


def test_a_walk_takes_the_traces_files_of_a_folder_that_holds_only_them(tmp_path: Path) -> None:
    """A folder whose entries are as many as the regular files the trace found in it is not
    scanned entry by entry; one with any other entry (a file, a subfolder) is."""
    data = tmp_path / "data"
    a, b = _files(data / "a", 10), _files(data / "b", 10)
    nested = _files(data / "b" / "sub", 3)
    (data / "a" / "other").write_text("x")
    full = folders._walk_bounded(str(data), 100)
    assert full == sorted([*a, *b, *nested, str(data / "a" / "other")])
    leaves = {str(data / "a"): a, str(data / "b"): b}  # neither holds only those
    assert folders._walk_bounded(str(data), 100, leaves) == full
    (data / "a" / "other").unlink()
    as_traced = [*a[:-1], str(data / "a" / "as-the-trace-named-it")]
    got = folders._walk_bounded(str(data), 100, {str(data / "a"): as_traced})
    assert got == sorted([*as_traced, *b, *nested])  # taken as it is: no scan of a/
    assert folders._walk_bounded(str(data), 20, leaves) is None  # 23 files: over the limit
