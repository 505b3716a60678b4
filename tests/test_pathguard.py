"""pathguard: the one gate for recorded paths, and writes that never follow a link out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roargit import pathguard
from roargit.errors import RoarError
from roargit.pathguard import Root, Source, UnsafePath, check, escape

BAD = [
    "",
    "..",
    "../x",
    "../../x",
    "a/../../x",
    "a/..",
    "/etc/passwd",
    "/",
    "a\0b",
    ".git",
    ".git/config",
    "a/.git/hooks/pre-commit",
    ".GIT/config",
    "sub/.Git",
    "./a",
    "a/./b",
    "a//b",
    ".",
    "a//",
]


@pytest.mark.parametrize("path", BAD)
def test_every_bad_shape_is_refused(path: str) -> None:
    with pytest.raises(UnsafePath) as err:
        check(path, Source("3fa9c1d2e4b5" + "0" * 52, "origin"))
    assert isinstance(err.value, RoarError)
    msg = str(err.value)
    assert msg.startswith("record 3fa9c1d2e4b5 from origin names an unsafe path '")
    assert msg.endswith(": refused; nothing was written")
    assert "\n" not in msg and "\0" not in msg


@pytest.mark.parametrize(
    "path", ["x", "a/b/c.csv", "data/", "..x", "x..", ".gitignore", "a/.github/w"]
)
def test_good_relative_paths_pass(path: str) -> None:
    assert check(path) == path.rstrip("/")


def test_absolute_paths_pass_only_to_be_read() -> None:
    assert check("/mnt/data/x.csv", absolute_ok=True) == "/mnt/data/x.csv"
    for bad in ("/mnt/../etc/x", "/a//b", "/a/.git/config"):
        with pytest.raises(UnsafePath):
            check(bad, absolute_ok=True)
    assert check(".", root_ok=True) == "."


def test_the_message_escapes_the_path_and_has_no_origin_for_local_records() -> None:
    err = UnsafePath("../\x1b[2J\r/x", Source("ab" * 32))
    assert str(err) == (
        f"record {'ab' * 6} names an unsafe path '../\\x1b[2J\\r/x': refused; nothing was written"
    )


def test_a_manifest_entry_is_checked_alone_and_joined() -> None:
    assert pathguard.join("data/", "a/b.png") == "data/a/b.png"
    for entry in ("../../x", "/x", "a/../../x", ".git/x"):
        with pytest.raises(UnsafePath):
            pathguard.join("data", entry)


def test_source_of_asks_the_ledger_when_it_can() -> None:
    class WithOrigin:
        def origin(self, rid: str) -> str | None:
            return "upstream" if rid == "r1" else None

    assert pathguard.source_of(WithOrigin(), "r1") == Source("r1", "upstream")
    assert pathguard.source_of(WithOrigin(), "r2") == Source("r2", None)
    assert pathguard.source_of(object(), "r3") == Source("r3", None)


# -- writes ------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, bytes | str]:
    """Everything under `root`: file bytes, link targets, folders."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """A root to write below, and a folder outside it that must never change."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "keep").write_bytes(b"outside\n")
    return root, outside


def test_good_paths_are_written_atomically_with_their_folders(sandbox: tuple[Path, Path]) -> None:
    root, _ = sandbox
    with Root(root) as r:
        assert r.write("a/b/c.bin", lambda f: f.write(b"one")) == str(root / "a/b/c.bin")
        r.write("a/b/d.bin", lambda f: f.write(b"two"))
        r.write("top", lambda f: f.write(b"3"))
        r.write("a/b/c.bin", lambda f: f.write(b"replaced"))
    assert tree(root) == {
        "a": "dir",
        "a/b": "dir",
        "a/b/c.bin": b"replaced",
        "a/b/d.bin": b"two",
        "top": b"3",
    }
    mode = (root / "top").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_a_failing_fill_leaves_the_old_file_and_no_temporary(sandbox: tuple[Path, Path]) -> None:
    root, _ = sandbox
    (root / "f").write_bytes(b"old")

    def boom(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise RuntimeError("corrupt at the end")

    with Root(root) as r, pytest.raises(RuntimeError):
        r.write("f", boom)
    assert tree(root) == {"f": b"old"}


def test_a_symlinked_parent_folder_is_refused_and_nothing_written(
    sandbox: tuple[Path, Path],
) -> None:
    root, outside = sandbox
    (root / "data").symlink_to(outside)
    (root / "real").mkdir()
    (root / "real" / "deep").symlink_to(outside)
    before = tree(outside)
    with Root(root, Source("cd" * 32, "origin")) as r:
        for rel in ("data/x", "data/sub/x", "real/deep/x", "real/deep/a/b/x"):
            with pytest.raises(UnsafePath) as err:
                r.write(rel, lambda f: f.write(b"evil"))
            assert "is a symbolic link" in str(err.value)
            assert str(err.value).startswith(f"record {'cd' * 6} from origin names")
            with pytest.raises(UnsafePath):
                r.preflight(rel)
            with pytest.raises(UnsafePath):
                r.makedirs(rel)
    assert tree(outside) == before
    assert sorted(tree(root)) == ["data", "real", "real/deep"]


def test_a_symlink_as_the_final_component_is_refused(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    (root / "model.pkl").symlink_to(outside / "keep")
    (root / "dangling").symlink_to(outside / "new")
    with Root(root) as r:
        for rel in ("model.pkl", "dangling"):
            with pytest.raises(UnsafePath, match="it is a symbolic link"):
                r.write(rel, lambda f: f.write(b"evil"))
            with pytest.raises(UnsafePath):
                r.preflight(rel)
    assert (outside / "keep").read_bytes() == b"outside\n"
    assert not (outside / "new").exists()
    assert (root / "model.pkl").is_symlink()


def test_bad_names_are_refused_before_any_folder_is_made(sandbox: tuple[Path, Path]) -> None:
    root, outside = sandbox
    with Root(root) as r:
        for rel in ("../outside/x", "a/../../outside/x", str(outside / "x"), ".git/hooks/x"):
            with pytest.raises(UnsafePath):
                r.write(rel, lambda f: f.write(b"evil"))
            with pytest.raises(UnsafePath):
                r.makedirs(rel)
    assert tree(root) == {}
    assert tree(outside) == {"keep": b"outside\n"}


def test_a_file_on_the_way_or_a_folder_in_the_place_is_refused(sandbox: tuple[Path, Path]) -> None:
    root, _ = sandbox
    (root / "f").write_bytes(b"a file")
    (root / "d").mkdir()
    with Root(root) as r:
        with pytest.raises(UnsafePath, match="'f' is not a folder"):
            r.write("f/x", lambda f: f.write(b"x"))
        with pytest.raises(UnsafePath, match="other than a file"):
            r.write("d", lambda f: f.write(b"x"))
        with pytest.raises(FileExistsError):
            r.write("f", lambda f: f.write(b"x"), replace=False)
    assert (root / "f").read_bytes() == b"a file"


def test_makedirs_walks_without_following_and_dot_is_the_root(sandbox: tuple[Path, Path]) -> None:
    root, _ = sandbox
    with Root(root) as r:
        assert r.makedirs(".") == str(root)
        assert r.makedirs("a/b/c") == str(root / "a/b/c")
        assert r.makedirs("a/b") == str(root / "a/b")
        assert not r.exists("a/b/c/x")
        r.write("a/b/c/x", lambda f: f.write(b"x"))
        assert r.exists("a/b/c/x")
    assert (root / "a/b/c/x").read_bytes() == b"x"


def test_a_folder_swapped_for_a_link_between_writes_is_not_followed(
    sandbox: tuple[Path, Path],
) -> None:
    root, outside = sandbox
    with Root(root) as r:
        r.write("a/one", lambda f: f.write(b"1"))
        (root / "a" / "one").unlink()
        (root / "a").rmdir()
        (root / "a").symlink_to(outside)
        # The folder kept open from the first write is the removed one, not the link's.
        with pytest.raises(OSError):
            r.write("a/two", lambda f: f.write(b"2"))
    with Root(root) as r, pytest.raises(UnsafePath):
        r.write("a/two", lambda f: f.write(b"2"))
    assert tree(outside) == {"keep": b"outside\n"}


# -- escaping ----------------------------------------------------------------------------


def test_escape_makes_control_characters_visible() -> None:
    assert escape("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert escape("a\rb\nc\td") == "a\\rb\\nc\\td"
    assert escape("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert escape("\x00\x07\x7f\x85\x9b") == "\\x00\\x07\\x7f\\x85\\x9b"
    assert escape("abc\u202edcba\u2066x\u2069") == "abc\\u202edcba\\u2066x\\u2069"
    assert escape(b"caf\xe9".decode("utf-8", "surrogateescape")) == "caf\\xe9"


@given(st.text())
def test_escaped_text_holds_no_control_character(text: str) -> None:
    shown = escape(text)
    assert all(not pathguard._needs_escape(c) for c in shown)
    shown.encode("utf-8")  # printable: no lone surrogate left
