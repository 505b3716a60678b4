"""Crafted records (as another clone could push them) make `roar get` and `roar reproduce`
refuse with one line and write nothing: no path climbing out, no absolute place, no write
through a committed symbolic link, nothing into .git."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from cli_helpers import git, roar

from roargit.blobstore import BlobStore
from roargit.folders import ManifestEntry, encode_manifest
from roargit.ledger import Ledger
from roargit.ledger_layout import manifest_entry
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId
from roargit.repo import find_repo
from roargit.uploads import default_store_url

EVIL = b"attacker bytes\n"


class Box(NamedTuple):
    top: Path  # watched: nothing below may change but the repository's own .git
    repo: Path
    outside: Path  # a folder beside the repository, holding a sentinel


def snapshot(top: Path, skip: Path) -> dict[str, tuple[int, int, bytes | str]]:
    seen: dict[str, tuple[int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d != skip]
        for name in [*dirnames, *filenames]:
            p = here / name
            st = os.lstat(p)
            body: bytes | str = ""
            if p.is_symlink():
                body = os.readlink(p)
            elif p.is_file():
                body = p.read_bytes()
            seen[str(p.relative_to(top))] = (st.st_mode, st.st_size, body)
    return seen


@pytest.fixture
def box(git_repo: Path) -> Iterator[Box]:
    top = git_repo.parent
    outside = top / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched\n")
    roar(git_repo, "init")
    before = snapshot(top, git_repo / ".git")
    yield Box(top, git_repo, outside)
    # The fixture's own check: whatever a test did, only .git may have changed.
    assert snapshot(top, git_repo / ".git") == before


def store(repo: Path, data: bytes) -> ArtifactId:
    return ArtifactId(BlobStore(default_store_url(find_repo(repo))).put_bytes(data))


def head(repo: Path) -> CodeState:
    return CodeState(
        git(repo, "rev-parse", "HEAD"), "main", False, git(repo, "rev-parse", "HEAD^{tree}")
    )


def plant(
    repo: Path,
    *,
    argv: tuple[str, ...] = ("sh", "-c", "echo hi > model.txt"),
    inputs: tuple[FileRef, ...] = (),
    outputs: tuple[FileRef, ...] = (),
    cwd: str = ".",
    manifests: tuple[bytes, ...] = (),
    step: int = 1,
) -> str:
    """A crafted run record, appended to the repository's ledger as a fetch would bring it."""
    paths = find_repo(repo)
    ledger = Ledger(paths)
    rec = RunRecord(
        argv=argv,
        cwd=cwd,
        started_at=1_700_000_000_000_000_000 + step,
        ended_at=1_700_000_001_000_000_000 + step,
        exit_code=0,
        status="ok",
        inputs=inputs,
        outputs=outputs,
        code=head(repo),
        session=SessionId("5" * 64),
        step=step,
    )
    from roargit.codec import record_id

    extra = [manifest_entry(record_id(m), m) for m in manifests]
    return ledger.append_run(rec, extra)


def refused(repo: Path, *args: str) -> str:
    proc = roar(repo, *args, rc=None)
    assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["../../../x", "ABSOLUTE", ".git/hooks/post-checkout"])
def test_get_refuses_an_output_recorded_outside_the_repository(box: Box, where: str) -> None:
    path = str(box.outside / "x") if where == "ABSOLUTE" else where
    digest = store(box.repo, EVIL)
    rid = plant(box.repo, outputs=(FileRef(path, digest, len(EVIL)),))
    line = refused(box.repo, "get", digest[:12])
    if where == "ABSOLUTE":
        assert line == (
            f"roar: artifact {digest[:16]} was recorded outside the repository, at '{path}': "
            "roar writes only inside it; give a destination with -o PATH"
        )
    else:
        assert line.startswith(f"roar: record {rid[:12]} names an unsafe path '{where}' (")
        assert line.endswith(": refused; nothing was written")
    # -o names the place: the bytes go there, and only there.
    roar(box.repo, "get", digest[:12], "-o", "copy.bin")
    assert (box.repo / "copy.bin").read_bytes() == EVIL
    (box.repo / "copy.bin").unlink()


def test_get_refuses_to_write_through_a_committed_symlink_folder(box: Box) -> None:
    (box.repo / "out").symlink_to(box.outside)
    git(box.repo, "add", "out")
    git(box.repo, "commit", "-q", "-m", "a link")
    digest = store(box.repo, EVIL)
    rid = plant(box.repo, outputs=(FileRef("out/x", digest, len(EVIL)),))
    line = refused(box.repo, "get", digest[:12])
    assert line == (
        f"roar: record {rid[:12]} names an unsafe path 'out/x' ('out' is a symbolic link): "
        "refused; nothing was written"
    )
    # And -o through the same link: below the folder given, nothing is followed.
    folder = encode_manifest([ManifestEntry("x", digest, len(EVIL))])
    plant(
        box.repo,
        outputs=(FileRef("data/", ArtifactId(folder[0]), len(EVIL), "dir"),),
        manifests=(folder[1],),
        step=2,
    )
    (box.repo / "dest").mkdir()
    (box.repo / "dest" / "x").symlink_to(box.outside / "sentinel")
    line = refused(box.repo, "get", folder[0][:12], "-o", "dest", "--force")
    assert "'x' (it is a symbolic link)" in line
    (box.repo / "dest" / "x").unlink()
    (box.repo / "dest").rmdir()
    (box.repo / "out").unlink()
    git(box.repo, "rm", "-q", "--cached", "out")


@pytest.mark.parametrize("entry", ["../../x", "a/../../../x", "/abs/x", ".git/config"])
def test_get_refuses_a_manifest_entry_that_leaves_its_folder(box: Box, entry: str) -> None:
    digest = store(box.repo, EVIL)
    good = ManifestEntry("fine.txt", digest, len(EVIL))
    folder_id, data = encode_manifest([good, ManifestEntry(entry, digest, len(EVIL))])
    rid = plant(
        box.repo,
        outputs=(FileRef("data/", ArtifactId(folder_id), 2 * len(EVIL), "dir"),),
        manifests=(data,),
    )
    for args in ((), ("-o", "got")):
        line = refused(box.repo, "get", folder_id[:12], *args)
        assert line.startswith(f"roar: record {rid[:12]} names an unsafe path '")
        assert line.endswith(": refused; nothing was written")
    # Nothing at all was written: not even the good entry, nor the folders.
    assert not (box.repo / "data").exists() and not (box.repo / "got").exists()


def test_reproduce_refuses_an_input_outside_the_worktree_before_writing(box: Box) -> None:
    digest = store(box.repo, EVIL)
    out = ArtifactId("7" * 64)
    rid = plant(
        box.repo,
        inputs=(FileRef("../../../../x", digest, len(EVIL)),),
        outputs=(FileRef("model.txt", out, 3),),
    )
    for args in (("--run", "-y"), ("--plan",), ("--run", "-y", "--no-reuse")):
        line = refused(box.repo, "reproduce", out[:12], *args)
        assert line == (
            f"roar: record {rid[:12]} names an unsafe path '../../../../x' "
            "(it climbs out with '..'): refused; nothing was written"
        )
    assert not (box.repo / ".git" / "roar" / "worktrees").exists()


def test_reproduce_refuses_an_absolute_working_folder(box: Box) -> None:
    out = ArtifactId("8" * 64)
    where = box.outside / "made" / "here"
    rid = plant(box.repo, cwd=str(where), outputs=(FileRef("model.txt", out, 3),))
    line = refused(box.repo, "reproduce", out[:12], "--run", "-y")
    assert line.startswith(f"roar: record {rid[:12]} names an unsafe path '{where}'")
    assert not (box.outside / "made").exists()


def test_reproduce_refuses_an_input_below_a_link_in_the_step_code(box: Box) -> None:
    (box.repo / "data").symlink_to(box.outside)
    git(box.repo, "add", "data")
    git(box.repo, "commit", "-q", "-m", "data is elsewhere")
    digest = store(box.repo, EVIL)
    out = ArtifactId("9" * 64)
    rid = plant(
        box.repo,
        inputs=(FileRef("data/new.csv", digest, len(EVIL)),),
        outputs=(FileRef("model.txt", out, 3),),
    )
    line = refused(box.repo, "reproduce", out[:12], "--run", "-y")
    assert line == (
        f"roar: record {rid[:12]} names an unsafe path 'data/new.csv' ('data' is a symbolic "
        "link in its code): refused; nothing was written"
    )
    (box.repo / "data").unlink()
    git(box.repo, "rm", "-q", "--cached", "data")


def test_reproduce_copies_the_target_out_without_following_a_link(box: Box) -> None:
    (box.repo / "make.py").write_text("open('model.txt', 'w').write('model\\n')\n")
    git(box.repo, "add", "make.py")
    git(box.repo, "commit", "-q", "-m", "make")
    roar(box.repo, "run", "-q", "python", "make.py")
    (box.repo / "model.txt").unlink()
    (box.repo / "copy.txt").symlink_to(box.outside / "sentinel")
    line = refused(box.repo, "reproduce", "model.txt", "--run", "-y", "-o", "copy.txt", "--force")
    assert "'copy.txt' (it is a symbolic link)" in line
    (box.repo / "copy.txt").unlink()
    roar(box.repo, "reproduce", "model.txt", "--run", "-y", "-o", "copy.txt")
    assert (box.repo / "copy.txt").read_text() == "model\n"
    for name in ("copy.txt", "make.py"):
        (box.repo / name).unlink()
    git(box.repo, "rm", "-q", "--cached", "make.py")


def test_a_fetched_record_names_the_remote_it_came_from(
    box: Box, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    remote = elsewhere / "remote.git"
    git(elsewhere, "init", "-q", "--bare", str(remote))
    git(box.repo, "remote", "add", "origin", str(remote))
    git(box.repo, "push", "-q", "origin", "HEAD:refs/heads/main")
    roar(box.repo, "init")
    attacker = elsewhere / "attacker"
    git(elsewhere, "clone", "-q", str(remote), str(attacker))
    roar(attacker, "init")
    digest = store(box.repo, EVIL)  # the team store, as the victim sees it
    rid = plant(attacker, outputs=(FileRef("../../../x", digest, len(EVIL)),))
    git(attacker, "push", "-q", "origin", "refs/roar/ledger:refs/roar/ledger")
    git(box.repo, "fetch", "-q", "origin")
    line = refused(box.repo, "get", digest[:12])
    assert line.startswith(f"roar: record {rid[:12]} from origin names an unsafe path '../../../x'")
    git(box.repo, "remote", "remove", "origin")


def test_a_committed_link_to_a_dataset_folder_is_read_in_place(
    box: Box, tmp_path_factory: pytest.TempPathFactory
) -> None:
    datasets = tmp_path_factory.mktemp("datasets")
    (datasets / "x.csv").write_text("a,b\n")
    (box.repo / "data").symlink_to(datasets)
    (box.repo / "make.py").write_text(
        "open('model.txt', 'w').write(open('data/x.csv').read() * 2)\n"
    )
    git(box.repo, "add", "data", "make.py")
    git(box.repo, "commit", "-q", "-m", "data lives elsewhere")
    roar(box.repo, "run", "-q", "python", "make.py")
    (box.repo / "model.txt").unlink()
    done = roar(box.repo, "reproduce", "model.txt", "--run", "-y").stdout
    assert "target" in done and "identical" in done
    assert (datasets / "x.csv").read_text() == "a,b\n"
    (box.repo / "data").unlink()
    (box.repo / "make.py").unlink()
    git(box.repo, "rm", "-q", "--cached", "data", "make.py")
