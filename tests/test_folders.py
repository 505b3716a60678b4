"""Which folders a run records whole, and the manifest codec."""

from __future__ import annotations

from pathlib import Path

import pytest

from roargit import folders
from roargit.errors import RecordCorrupt


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
    with pytest.raises(RecordCorrupt, match="not a folder manifest"):
        folders.decode_manifest_rows(b"\x93garbage", "m")
