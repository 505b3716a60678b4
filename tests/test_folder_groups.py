"""A remembered folder proved unchanged from the trace's `files` records and its folders' stat
data, without listing it; and every change that must undo that proof."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blake3 import blake3

from roargit import folders, run_files
from roargit.trace import run_traced
from roargit.trace_files import StatKeys

# Reads the files named on the command line, or every file under the folder given.
READ = (
    "import os, sys\n"
    "args = sys.argv[1:]\n"
    "if len(args) == 1 and os.path.isdir(args[0]):\n"
    "    args = [os.path.join(d, f) for d, _, fs in os.walk(args[0]) for f in fs]\n"
    "for f in args:\n"
    "    open(f, 'rb').read()\n"
)

# Names whose byte order differs from the order of their decoded text (U+FFFD against an
# undecodable byte), one with a space (no `files` record can hold it), one not ASCII.
ODD = [b"\xef\xbf\xbd.bin", b"\xf0.bin", b"with space", "\u00e9t\u00e9.bin".encode()]


def _dataset(data: Path) -> list[str]:
    """data/a (60 files and a subfolder of 10), data/b (50 and the odd names), data/empty."""
    made = []
    for sub, n in (("a", 60), ("a/deep", 10), ("b", 50)):
        (data / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            p = data / sub / f"{i:03d}.bin"
            p.write_bytes(b"%s %d" % (sub.encode(), i))
            made.append(str(p))
    for raw in ODD:
        odd = os.path.join(os.fsencode(data / "b"), raw)
        with open(odd, "wb") as f:
            f.write(raw)
        made.append(os.fsdecode(odd))
    (data / "empty").mkdir()
    return made


def _roar_run(repo: Path, *args: str) -> str:
    """The folder hash that `roar run` records for the run's one input."""
    out = subprocess.run(
        ["roar", "run", "--json", sys.executable, "-c", READ, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        errors="surrogateescape",  # the command line holds undecodable names
    )
    assert out.returncode == 0, out.stderr
    [entry] = json.loads(out.stdout)["inputs"]
    assert entry["type"] == "dir" and entry["path"] == "data/"
    return str(entry["hash"])


def _manifest_now(data: Path) -> str:
    """The folder's manifest id, from its files' bytes as they are."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(data) for f in fs]
    hashes = {}
    for f in files:
        with open(f, "rb") as fh:
            b = fh.read()
        hashes[f] = (blake3(b).hexdigest(), len(b))
    return folders.manifest_from_hashes(str(data), files, hashes)[0]


def _proved(repo: Path, data: Path, *args: str) -> list[str] | None:
    """What the remembered state of `data` and a trace of the read prove: its members, or None."""
    state = folders.FolderCache(repo / ".git" / "roar").get(str(data))
    assert state is not None
    t = run_traced([sys.executable, "-c", READ, *(args or [str(data)])], repo, stat_files=True)
    assert isinstance(t.stat_keys, StatKeys) and t.stat_keys.groups
    return folders.unchanged_members(str(data), state, run_files._keyed_leaves(t.stat_keys))


@pytest.fixture
def remembered(git_repo: Path) -> tuple[Path, Path, list[str], str]:
    """A repo whose data/ folder a run read and roar remembers: (repo, data, files, hash)."""
    data = git_repo / "data"
    files = _dataset(data)
    time.sleep(1.1)  # older than the racy window: the folder's state may be remembered
    first = _roar_run(git_repo, "data")
    assert first == _manifest_now(data)
    state = folders.FolderCache(git_repo / ".git" / "roar").get(str(data))
    assert state is not None
    assert set(state.dirs) == {"", "a", "a/deep", "b", "empty"}
    return git_repo, data, files, first


def test_an_unchanged_folder_is_proved_from_the_trace_without_a_listing(
    remembered: tuple[Path, Path, list[str], str],
) -> None:
    """The trace's groups (names in byte order, odd names merged from `file` records) give the
    digest that the walk and lstat gave; then the folder's members are the trace's files."""
    repo, data, files, first = remembered
    assert sorted(_proved(repo, data) or []) == sorted(files)
    assert _roar_run(repo, "data") == first


@pytest.mark.parametrize(
    "change",
    ["edited in place", "added, not read", "removed", "renamed", "replaced", "new subfolder"],
)
def test_any_change_undoes_the_proof_and_is_recorded(
    remembered: tuple[Path, Path, list[str], str], change: str
) -> None:
    repo, data, files, first = remembered
    target = data / "b" / "007.bin"
    read = files
    if change == "edited in place":  # same size; a new mtime and ctime
        target.write_bytes(target.read_bytes().replace(b"7", b"8"))
    elif change == "added, not read":  # the run reads only the files it read before
        (data / "a" / "new.bin").write_bytes(b"new")
    elif change == "removed":
        target.unlink()
        read = [f for f in files if f != str(target)]
    elif change == "renamed":
        target.rename(data / "b" / "zzz.bin")
        read = [f if f != str(target) else str(data / "b" / "zzz.bin") for f in files]
    elif change == "replaced":  # the same bytes in a new file of the same name
        content = target.read_bytes()
        target.unlink()
        target.write_bytes(content)
    else:
        (data / "a" / "deep" / "more").mkdir()
        (data / "a" / "deep" / "more" / "x.bin").write_bytes(b"x")
    args = [os.path.relpath(f, repo) for f in read]
    assert _proved(repo, data, *args) is None
    now = _roar_run(repo, *args)
    assert now == _manifest_now(data)
    assert (now == first) == (change == "replaced")


def test_a_new_empty_folder_undoes_the_proof_but_not_the_manifest(
    remembered: tuple[Path, Path, list[str], str],
) -> None:
    """A folder's stat data moved, its files did not: the manifest is the one remembered, and
    what is remembered of the folders is brought up to date (the next run proves it again)."""
    repo, data, files, first = remembered
    (data / "empty" / "inner").mkdir()
    assert _proved(repo, data) is None
    time.sleep(1.1)  # the folder's change older than the racy window
    assert _roar_run(repo, "data") == first
    assert sorted(_proved(repo, data) or []) == sorted(files)


def test_a_folder_state_of_the_earlier_definition_is_not_taken(tmp_path: Path) -> None:
    cache = folders.FolderCache(tmp_path, racy_window_ns=0)
    state = folders.FolderState("s" * 64, "m" * 64, 7, "t" * 64, ("", "a"))
    cache.put("/d", state, 0, folders.now_ns())
    assert cache.get("/d") == state
    (cache.dir / cache._file("/d").name).write_text(
        json.dumps({"stat": "s" * 64, "manifest": "m" * 64, "size": 7})
    )
    assert cache.get("/d") is None
    assert folders.unchanged_members("/d", state._replace(dirs=()), lambda _: None) is None


def test_a_folders_run_of_paths_is_counted_by_its_length_while_it_is_as_added() -> None:
    paths = folders.FolderRuns()
    paths.append("/x/1")
    a = [f"/d/a/{i}" for i in range(150)]
    paths.extend_run("/d/a", a)
    paths.append("/d/b/1")
    paths.extend_run("/d/b", [f"/d/b/{i}" for i in range(2, 150)])
    expected = {"/x": 1, "/d/a": 150, "/d/b": 149}
    assert folders._per_folder(paths) == expected
    assert folders.choose_folders(paths, never={"/d"}) == {}  # nothing there to list
    paths.insert(0, "/d/a/new")  # every run moved: counted path by path
    assert folders._per_folder(paths) == {**expected, "/d/a": 151}
    paths[5] = "/y/0"  # one of a run's paths is another
    assert folders._per_folder(paths) == {**expected, "/d/a": 150, "/y": 1}


@pytest.mark.parametrize(
    "folder",
    ["/r/data", "/r/bin", "/r/x-packages", "/r/_distutils_hack", "/r/a.egg-info", "/r/lib"],
)
@pytest.mark.parametrize(
    "name",
    ["f.bin", "x.pth", "libpython3.so", "__editable__.x", "y.egg", "a.pthx", "bin", "pth"],
)
def test_a_groups_special_parts_are_found_by_folder_and_names_as_in_its_paths(
    folder: str, name: str
) -> None:
    """Searched in the folder and the names, a group's special parts are found exactly where
    they are in its joined paths."""
    from roargit.trace_files import FileAccess, FileGroup

    names = [f"n{i}" for i in range(9)] + [name]
    paths = [f"{folder}/{n}" for n in names]
    fields = tuple(FileAccess("", read=True, regular=True))[1:]
    joined = "\0".join(paths) + "\0"
    per_path = not any(s in joined for s in run_files._SPECIAL_PARTS)
    for g in (FileGroup(folder, paths, fields, b"", names), FileGroup(folder, paths, fields)):
        plain = run_files._plain_group(g, "/r/", ("/r/.git/",), {"/r"}, "/home/u", [])
        assert plain == (per_path and run_files.none_is_noise(folder, joined, "/home/u"))


def test_the_paths_left_outside_grouped_folders_are_the_same_by_runs_or_path_by_path() -> None:
    paths = folders.FolderRuns()
    paths.extend(["/x/1", "/d/a/odd name", "/d/b/2"])
    paths.extend_run("/d/a", [f"/d/a/{i}" for i in range(20)])
    paths.extend_run("/d/c", [f"/d/c/{i}" for i in range(20)])
    paths.append("/d/a/late")
    grouped = {"/d/c/3", "/x/1"}
    within = {"/d/a", "/d/b"}
    expected = [p for p in paths if p not in grouped and p.rpartition("/")[0] not in within]
    assert run_files._outside(paths, grouped, within) == expected
    assert expected == [f"/d/c/{i}" for i in range(20) if i != 3]
    paths.insert(4, "/d/c/new")  # the runs moved: path by path
    assert run_files._outside(paths, grouped, within) == ["/d/c/new", *expected]
    assert run_files._outside(list(paths), set(), set()) == list(paths)


@pytest.mark.parametrize(
    "names",
    [
        ["a/1", "a/2", "b/1", "c/x/1"],  # folders of files only
        ["1", "a.b", "a/x", "z"],  # a folder's files around a subfolder's
        ["a/1", "a-b/1", "a/2", "a0/3"],  # names that sort between "a/" and "a0"
        ["a/\u00e9", "a/e", "b/\udcff"],  # not ASCII, undecodable
        ["b/2", "b/1", "a/1"],  # not sorted
    ],
)
def test_a_stat_digest_is_the_same_by_folder_stretches_or_path_by_path(names: list[str]) -> None:
    import binascii

    folder = "/d"
    files = [f"{folder}/{n}" for n in names]
    stats = b"".join(os.urandom(40) for _ in files)
    by_path = folders._stat_digest_by_path(folder, files, binascii.b2a_hex(stats))
    assert folders._stat_digest(folder, files, stats) == by_path
    order = sorted(range(len(files)), key=lambda i: os.fsencode(files[i]))
    resorted = b"".join(stats[i * 40 : (i + 1) * 40] for i in order)
    assert folders._stat_digest(folder, [files[i] for i in order], resorted) == by_path
