"""A blob store that fails never costs a run: the record lands, the command's exit status is
kept, one warning names the store and the cause, and the bytes wait in a queue until a later
command (or `roar store sync`) stores them. Real processes: the installed `roar`, a moto S3
server in a process of its own that is killed, and folders that refuse writes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from cli_helpers import digest, git, roar, roar_json
from fixtures_s3 import S3Process, make_bucket, s3_endpoint, s3_env  # noqa: F401

from roargit import uploads
from roargit.blobstore import BlobStore
from roargit.repo import find_repo

WRITE = """\
import os, sys
size, name, status = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with open(name, "wb") as f:
    f.write(os.urandom(size))
sys.exit(status)
"""

BIG = 12 << 20  # above the 5 MiB part size set below: a multipart upload of three parts


def s3_repo(repo: Path, endpoint: str, bucket: str = "bkt") -> dict[str, str]:
    (repo / "write.py").write_text(WRITE)
    git(repo, "add", "write.py")
    git(repo, "commit", "-q", "-m", "writer")
    git(repo, "config", "roar.store.url", f"s3://{bucket}/roar")
    git(repo, "config", "roar.store.partsize", "5M")
    git(repo, "config", "roar.store.timeout", "3")
    git(repo, "config", "roar.store.retries", "1")
    return {**os.environ, **s3_env(endpoint)}


def run_timed(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[Any, float]:
    started = time.monotonic()
    proc = subprocess.run(
        ["roar", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return proc, time.monotonic() - started


def store_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "could not store" in line]


def step(repo: Path, label: str = "@1", env: dict[str, str] | None = None) -> Any:
    return roar_json(repo, "show", label, env=env)


def s3_store(url: str, endpoint: str) -> BlobStore:
    return BlobStore(url, {"endpoint_url": endpoint, "key": "testing", "secret": "testing"})


def queue(repo: Path) -> list[uploads.Pending]:
    return uploads.pending(find_repo(repo))


def restart(dead: S3Process, bucket: str = "bkt") -> S3Process:
    """A server back on the same port (a new moto: the bucket is made again)."""
    again = S3Process(port=dead.port)
    make_bucket(again.endpoint, bucket)
    return again


# -- S3 killed -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "during"])
def test_s3_killed_before_or_during_a_multipart_upload(
    git_repo: Path, tmp_path: Path, when: str
) -> None:
    s3 = S3Process(die_at_part=2 if when == "during" else 0)
    try:
        make_bucket(s3.endpoint, "bkt")
        env = s3_repo(git_repo, s3.endpoint)
        if when == "before":
            s3.kill()
        proc, took = run_timed(
            git_repo, "run", "python", "write.py", str(BIG), "big.bin", "3", env=env
        )
        assert not s3.alive
        assert proc.returncode == 3, proc.stderr  # the command's own exit status
        assert took < 30, took
        assert "internal error" not in proc.stderr
        [warning] = store_lines(proc.stderr)
        assert "s3://bkt/roar" in warning and "endpoint unreachable" in warning
        assert "roar store sync" in warning
        assert "@1" in proc.stderr  # the summary still follows

        run = step(git_repo, env=env)
        [out] = run["outputs"]
        big = digest(git_repo / "big.bin")
        assert out["hash"] == big and "endpoint unreachable" in out["not_stored"]
        [entry] = queue(git_repo)
        assert entry.digest == big and entry.copy  # a copy of the bytes is kept locally

        (git_repo / "big.bin").write_bytes(b"overwritten before the retry")
        back = restart(s3)
        try:
            synced = roar(git_repo, "store", "sync", env={**env, **s3_env(back.endpoint)})
            assert "1 stored, 0 dropped, 0 left" in synced.stdout
            assert s3_store("s3://bkt/roar", back.endpoint).verify(big)
            assert queue(git_repo) == []
        finally:
            back.kill()
    finally:
        s3.kill()


def test_sync_exits_1_while_the_store_is_down_and_reports_json(git_repo: Path) -> None:
    s3 = S3Process()
    make_bucket(s3.endpoint, "bkt")
    env = s3_repo(git_repo, s3.endpoint)
    s3.kill()
    roar(git_repo, "run", "-q", "python", "write.py", "1000", "small.bin", "0", env=env)
    proc, took = run_timed(git_repo, "store", "sync", "--json", env=env)
    assert proc.returncode == 1 and took < 30
    report = json.loads(proc.stdout)
    [left] = report["left"]
    assert left["hash"] == digest(git_repo / "small.bin") and left["store"] == "s3://bkt/roar"
    assert report["stored"] == [] and report["errors"][0]["cause"] == "endpoint unreachable"
    assert len(queue(git_repo)) == 1


def test_the_next_run_and_roar_get_retry_the_queue(git_repo: Path) -> None:
    """A store folder that cannot be made while a file stands in its way, then can."""
    (git_repo / "write.py").write_text(WRITE)
    (git_repo / "blocker").write_text("a file where the store's folder should be")
    git(git_repo, "config", "roar.store.url", "blocker/store")
    store = BlobStore(str(git_repo / "blocker" / "store"))
    roar(git_repo, "run", "python", "write.py", "1000", "a.bin", "0")
    a = digest(git_repo / "a.bin")
    assert [e.digest for e in queue(git_repo)] == [a]
    (git_repo / "blocker").unlink()
    proc = roar(git_repo, "run", "python", "write.py", "1000", "b.bin", "0")
    assert f"uploaded 1 queued blob(s) to {git_repo / 'blocker' / 'store'}" in proc.stderr
    assert queue(git_repo) == [] and store.verify(a)

    # Failing again: `roar get` retries before it reads.
    (git_repo / "second").write_text("in the way too")
    git(git_repo, "config", "roar.store.url", "second/store")
    roar(git_repo, "run", "python", "write.py", "1000", "c.bin", "0")
    c = digest(git_repo / "c.bin")
    assert len(queue(git_repo)) == 1
    (git_repo / "second").unlink()
    got = roar(git_repo, "get", c[:12], "-o", "c-copy.bin")
    assert "uploaded 1 queued blob(s)" in got.stderr
    assert digest(git_repo / "c-copy.bin") == c and queue(git_repo) == []
    assert BlobStore(str(git_repo / "second" / "store")).verify(c)


# -- missing bucket, no credentials ----------------------------------------------------------


def test_missing_bucket(git_repo: Path, s3_endpoint: str) -> None:  # noqa: F811
    env = s3_repo(git_repo, s3_endpoint, bucket="no-such-bucket")
    proc = roar(git_repo, "run", "python", "write.py", "100", "out.bin", "0", env=env)
    [warning] = store_lines(proc.stderr)
    assert "s3://no-such-bucket/roar: bucket missing (create it" in warning
    [out] = step(git_repo, env=env)["outputs"]
    assert "bucket missing" in out["not_stored"]
    make_bucket(s3_endpoint, "no-such-bucket")
    roar(git_repo, "store", "sync", env=env)
    assert s3_store("s3://no-such-bucket/roar", s3_endpoint).has(out["hash"])


def test_no_credentials(git_repo: Path, s3_endpoint: str) -> None:  # noqa: F811
    env = s3_repo(git_repo, s3_endpoint)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    proc = roar(git_repo, "run", "python", "write.py", "100", "out.bin", "5", env=env, rc=None)
    assert proc.returncode == 5
    [warning] = store_lines(proc.stderr)
    assert "no credentials (set AWS_PROFILE" in warning


# -- local folders ---------------------------------------------------------------------------


def lock(folder: Path) -> None:
    """Make an empty `folder` unwritable to this process: chmod when it is not root, else the
    immutable attribute (root ignores modes); skip the test where neither works."""
    folder.chmod(0o555)
    if _writable(folder):
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if _writable(folder):
            make_writable(folder)
            pytest.skip("no way to make a folder unwritable here (root without chattr +i)")


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "ro-store"
    folder.mkdir()
    lock(folder)
    try:
        yield folder
    finally:
        make_writable(folder)


def _writable(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


def make_writable(folder: Path) -> None:
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


def test_read_only_store_folder(git_repo: Path, unwritable: Path) -> None:
    (git_repo / "write.py").write_text(WRITE)
    git(git_repo, "config", "roar.store.url", str(unwritable))
    proc = roar(git_repo, "run", "python", "write.py", "2000", "model.bin", "7", rc=None)
    assert proc.returncode == 7
    assert "internal error" not in proc.stderr
    [warning] = store_lines(proc.stderr)
    assert f"could not store 1 output(s) in {unwritable}: not writable" in warning
    assert "queued, retried by the next run or 'roar store sync'" in warning
    [out] = step(git_repo)["outputs"]
    assert out["not_stored"].startswith(f"{unwritable}: not writable")
    shown = roar(git_repo, "show", "@1").stdout
    assert "not stored: " in shown
    model = digest(git_repo / "model.bin")
    # The bytes are kept in the local store meanwhile: roar get works at once.
    roar(git_repo, "get", model[:12], "-o", "copy.bin")
    assert digest(git_repo / "copy.bin") == model

    make_writable(unwritable)
    proc = roar(git_repo, "store", "sync")
    assert "1 stored" in proc.stdout
    assert BlobStore(str(unwritable)).verify(model)
    assert queue(git_repo) == []
    assert "the queue is empty" in roar(git_repo, "store", "sync").stdout


def test_store_under_a_file_and_a_full_queue_of_kinds(git_repo: Path) -> None:
    """A store path that cannot be a folder fails on every uid; inputs copied to a team
    store are queued and counted too."""
    (git_repo / "blocker").write_text("a file, not a folder")
    (git_repo / "copy.py").write_text("open('out.txt', 'w').write(open('raw.csv').read()[::-1])")
    (git_repo / "raw.csv").write_text("source data\n")
    git(git_repo, "config", "roar.store.url", "blocker/store")
    proc = roar(git_repo, "run", "python", "copy.py")
    [warning] = store_lines(proc.stderr)
    assert "1 output(s) and 1 input(s)" in warning and "Not a directory" in warning
    assert {e.path.rsplit("/", 1)[1] for e in queue(git_repo)} == {"out.txt", "raw.csv"}


def test_relative_store_url_is_taken_from_the_repository_top(git_repo: Path) -> None:
    (git_repo / "sub").mkdir()
    (git_repo / "sub" / "make.py").write_text("open('here.txt', 'w').write('from sub')\n")
    (git_repo / "make.py").write_text("open('top.txt', 'w').write('from the top')\n")
    git(git_repo, "config", "--file", ".roarconfig", "roar.store.url", "team-store")
    roar(git_repo / "sub", "run", "-q", "python", "make.py")
    roar(git_repo, "run", "-q", "python", "make.py")
    assert not (git_repo / "sub" / "team-store").exists()
    store = BlobStore(str(git_repo / "team-store"))
    assert sorted(store.iter_digests()) == sorted(
        [digest(git_repo / "sub" / "here.txt"), digest(git_repo / "top.txt")]
    )


# -- the queue's own rules -------------------------------------------------------------------


def test_a_changed_file_without_a_copy_is_dropped_not_stored_under_a_wrong_name(
    git_repo: Path, tmp_path: Path
) -> None:
    paths = find_repo(git_repo)
    target = tmp_path / "store"
    f = git_repo / "out.bin"
    f.write_bytes(b"recorded bytes")
    d = blake3(b"recorded bytes").hexdigest()
    entry = uploads.Pending(str(target), d, 14, str(f), "", "test", 1)
    uploads._enqueue(paths, entry)
    f.write_bytes(b"other bytes now")
    settings = uploads.config.read_all(paths)
    result = uploads.sync(paths, settings)
    assert result.stored == [] and len(result.dropped) == 1
    assert "changed or was removed" in result.dropped[0][1]
    assert not BlobStore(str(target)).has(d) and uploads.pending(paths) == []

    # With the bytes unchanged the work-tree file is used, checked against the digest.
    f.write_bytes(b"recorded bytes")
    uploads._enqueue(paths, entry)
    result = uploads.sync(paths, settings)
    assert [e.digest for e in result.stored] == [d] and BlobStore(str(target)).verify(d)


def test_damaged_queue_entries_are_ignored(git_repo: Path) -> None:
    paths = find_repo(git_repo)
    q = paths.roar_dir / uploads.QUEUE
    q.mkdir(parents=True)
    (q / "garbage").write_text("{not json")
    (q / ("0" * 64 + "-x")).write_text(json.dumps({"store": "/s", "digest": "nothex"}))
    assert uploads.pending(paths) == []


def test_classify_names_the_cause_and_the_fix() -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    def cause(exc: BaseException, url: str = "s3://b/r") -> str:
        return uploads.classify(exc, url).cause

    assert cause(NoCredentialsError()) == "no credentials"
    assert "AWS_PROFILE" in uploads.classify(NoCredentialsError(), "s3://b/r").fix
    assert cause(FileNotFoundError("The specified bucket does not exist")) == "bucket missing"
    assert cause(EndpointConnectionError(endpoint_url="http://x")) == "endpoint unreachable"
    assert cause(TimeoutError("slow")) == "endpoint unreachable"
    assert cause(PermissionError(errno.EACCES, "Permission denied", "/s"), "/s") == "permission"
    assert cause(OSError(errno.EROFS, "Read-only file system", "/s"), "/s") == "permission"
    assert cause(OSError(errno.ENOSPC, "No space left on device", "/s"), "/s") == "disk full"
    assert cause(ValueError("odd"), "/s") == "error"
    text = uploads.classify(OSError(errno.ENOSPC, "No space left", "/s/x"), "/s").text
    assert "/s/x" not in text  # the store's URL says where; the message says what


def test_resolve_store_url(git_repo: Path, tmp_path: Path) -> None:
    from roargit.config import resolve_store_url

    top = find_repo(git_repo)
    assert resolve_store_url(top, "") == ""
    assert resolve_store_url(top, "store") == str(git_repo / "store")
    assert resolve_store_url(top, "../shared/./store") == str(git_repo.parent / "shared/store")
    assert resolve_store_url(top, "file://store") == f"file://{git_repo / 'store'}"
    assert resolve_store_url(top, "/abs/store") == "/abs/store"
    assert resolve_store_url(top, "s3://bucket/prefix") == "s3://bucket/prefix"
    assert resolve_store_url(top, "~/store") == str(Path.home() / "store")
    # A linked worktree (roar reproduce makes them under .git/roar/worktrees) shares the
    # clone's ledger and .git/roar: it shares the store too.
    git(git_repo, "worktree", "add", "-q", "--detach", str(tmp_path / "wt"))
    wt = find_repo(tmp_path / "wt")
    assert wt.root != top.root
    assert resolve_store_url(wt, "store") == str(git_repo / "store")


def test_a_folder_output_says_how_many_of_its_files_were_not_stored(git_repo: Path) -> None:
    (git_repo / "blocker").write_text("a file, not a folder")
    (git_repo / "many.py").write_text(
        "import os\nos.makedirs('out')\n"
        "for i in range(120):\n    open(f'out/{i}.txt', 'w').write(str(i))\n"
    )
    git(git_repo, "config", "roar.store.url", "blocker/store")
    proc = roar(git_repo, "run", "python", "many.py")
    [warning] = store_lines(proc.stderr)
    assert "could not store 120 output(s)" in warning
    [out] = step(git_repo)["outputs"]
    assert out["type"] == "dir" and out["not_stored"].startswith("120 file(s): ")
    assert len(queue(git_repo)) == 120


def test_an_unwritable_local_store_keeps_its_copies_in_the_spool(git_repo: Path) -> None:
    (git_repo / "write.py").write_text(WRITE)
    blobs = git_repo / ".git" / "roar" / "blobs"
    blobs.mkdir(parents=True)
    lock(blobs)
    try:
        proc = roar(git_repo, "run", "python", "write.py", "3000", "out.bin", "0")
        [warning] = store_lines(proc.stderr)
        assert f"in file://{blobs}: not writable" in warning
        [entry] = queue(git_repo)
        assert entry.copy.endswith("/.git/roar/uploads/blobs")
        spool = BlobStore(entry.copy)
        assert spool.verify(entry.digest)
    finally:
        make_writable(blobs)
    roar(git_repo, "store", "sync")
    assert BlobStore(str(blobs)).verify(entry.digest)
    assert not spool.has(entry.digest) and queue(git_repo) == []


def test_roar_reproduce_retries_the_queue_first(git_repo: Path) -> None:
    (git_repo / "write.py").write_text(WRITE)
    git(git_repo, "add", "write.py")
    git(git_repo, "commit", "-q", "-m", "writer")
    (git_repo / "blocker").write_text("a file where the store's folder should be")
    git(git_repo, "config", "roar.store.url", "blocker/store")
    roar(git_repo, "run", "-q", "python", "write.py", "500", "out.bin", "0")
    out = digest(git_repo / "out.bin")
    assert [e.digest for e in queue(git_repo)] == [out]
    (git_repo / "blocker").unlink()
    proc = roar(git_repo, "reproduce", out[:12])
    assert f"uploaded 1 queued blob(s) to {git_repo / 'blocker' / 'store'}" in proc.stderr
    assert queue(git_repo) == [] and BlobStore(str(git_repo / "blocker/store")).verify(out)
