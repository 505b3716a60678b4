"""One contract, three stores: memory://, file:// and s3:// (moto on loopback)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from fixtures_s3 import s3_bucket_url, s3_endpoint  # noqa: F401

from roargit.blobstore import BlobStore
from roargit.errors import BlobCorrupt, BlobMissing, DigestMismatch


@dataclass
class Env:
    store: BlobStore
    #: replace a stored blob's bytes behind the store's back
    tamper: Callable[[str, bytes], None]
    #: every object/file name under the store's root (to check nothing stray is left)
    listing: Callable[[], list[str]]
    url: str
    options: dict[str, Any]


def rel(digest: str) -> str:
    return f"blake3/{digest[:2]}/{digest[2:4]}/{digest}"


@pytest.fixture(params=["memory", "file", "s3"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    if request.param == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        root = f"/roar-test-{uuid.uuid4().hex}"  # the memory filesystem is process-global

        def tamper_mem(digest: str, data: bytes) -> None:
            fs.pipe_file(f"{root}/{rel(digest)}", data)

        def listing_mem() -> list[str]:
            return [p.removeprefix(root + "/") for p in fs.find(root)]

        yield Env(BlobStore(f"memory://{root}"), tamper_mem, listing_mem, f"memory://{root}", {})
        if fs.exists(root):
            fs.rm(root, recursive=True)
    elif request.param == "file":
        root_path = tmp_path / "store"

        def tamper_file(digest: str, data: bytes) -> None:
            blob = root_path / rel(digest)
            blob.chmod(0o644)
            blob.write_bytes(data)

        def listing_file() -> list[str]:
            return sorted(
                str(p.relative_to(root_path)) for p in root_path.rglob("*") if p.is_file()
            )

        url = root_path.as_uri()
        yield Env(BlobStore(url), tamper_file, listing_file, url, {})
    else:
        import boto3

        url, options = request.getfixturevalue("s3_bucket_url")
        bucket, prefix = url.removeprefix("s3://").split("/", 1)
        client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1")

        def tamper_s3(digest: str, data: bytes) -> None:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{rel(digest)}", Body=data)

        def listing_s3() -> list[str]:
            resp = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
            return sorted(o["Key"].removeprefix(prefix + "/") for o in resp.get("Contents", []))

        yield Env(BlobStore(url, options), tamper_s3, listing_s3, url, options)


def test_round_trip_bytes_and_files(env: Env, tmp_path: Path) -> None:
    d = env.store.put_bytes(b"hello")
    assert d == blake3(b"hello").hexdigest()
    assert env.store.has(d)
    assert env.store.get_bytes(d) == b"hello"
    assert env.store.verify(d)
    assert env.listing() == [rel(d)]

    src = tmp_path / "src.bin"
    src.write_bytes(b"file content")
    d2 = env.store.put_file(src)
    assert d2 == blake3(b"file content").hexdigest()
    out = tmp_path / "out.bin"
    env.store.get_file(d2, out)
    assert out.read_bytes() == b"file content"
    assert sorted(env.store.iter_digests()) == sorted([d, d2])
    assert BlobStore(env.url, env.options).has(d2)  # a second client sees it at once


def test_empty_blob(env: Env, tmp_path: Path) -> None:
    d = env.store.put_bytes(b"")
    assert env.store.get_bytes(d) == b""
    env.store.get_file(d, tmp_path / "empty")
    assert (tmp_path / "empty").read_bytes() == b""


def test_put_twice_is_a_noop_and_never_overwrites(env: Env, tmp_path: Path) -> None:
    d = env.store.put_bytes(b"original")
    env.tamper(d, b"tampered")  # make an overwrite visible, should one happen
    assert env.store.put_bytes(b"original") == d
    src = tmp_path / "f"
    src.write_bytes(b"original")
    assert env.store.put_file(src) == d
    assert env.store.put_file(src, d) == d
    # Even a writer that lost the race (it found no blob, then one appeared) must not
    # replace it: go under the has() check.
    env.store._put(d, [b"original"], what="race")
    with pytest.raises(BlobCorrupt):
        env.store.get_bytes(d)
    assert env.listing() == [rel(d)]


def test_missing_blob(env: Env, tmp_path: Path) -> None:
    d = blake3(b"never stored").hexdigest()
    assert not env.store.has(d)
    with pytest.raises(BlobMissing):
        env.store.get_bytes(d)
    with pytest.raises(BlobMissing):
        env.store.verify(d)
    dest = tmp_path / "dest"
    with pytest.raises(BlobMissing):
        env.store.get_file(d, dest)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_blob_never_reaches_the_caller(env: Env, tmp_path: Path) -> None:
    d = env.store.put_bytes(b"good bytes")
    env.tamper(d, b"evil bytes")
    assert env.store.has(d)
    assert not env.store.verify(d)
    with pytest.raises(BlobCorrupt) as info:
        env.store.get_bytes(d)
    assert info.value.args[0].startswith(f"blob {d[:16]} in {env.url} is corrupt")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(BlobCorrupt):
        env.store.get_file(d, out_dir / "dest")
    assert list(out_dir.iterdir()) == []  # no dest, no temp
    (out_dir / "dest").write_bytes(b"previous")
    with pytest.raises(BlobCorrupt):
        env.store.get_file(d, out_dir / "dest")
    assert [p.name for p in out_dir.iterdir()] == ["dest"]
    assert (out_dir / "dest").read_bytes() == b"previous"


def test_wrong_digest_is_refused(env: Env, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"actual content")
    wrong = blake3(b"something else").hexdigest()
    with pytest.raises(DigestMismatch):
        env.store.put_file(src, wrong)
    assert not env.store.has(wrong)
    assert not env.store.has(blake3(b"actual content").hexdigest())
    assert env.listing() == []
    with pytest.raises(ValueError):
        env.store.put_file(src, "not-a-digest")
    with pytest.raises(ValueError):
        env.store.has("ABC")


def test_large_blob_streams(env: Env, tmp_path: Path) -> None:
    data = os.urandom(1 << 20) * 20  # 20 MiB
    src = tmp_path / "big"
    src.write_bytes(data)
    d = env.store.put_file(src)
    assert d == blake3(data).hexdigest()
    out = tmp_path / "big.out"
    env.store.get_file(d, out)
    assert out.read_bytes() == data
    assert env.store.verify(d)


def test_memory_stores_are_isolated() -> None:
    one = BlobStore(f"memory://roar-test-{uuid.uuid4().hex}")
    other = BlobStore(f"memory://roar-test-{uuid.uuid4().hex}")
    d = one.put_bytes(b"only here")
    assert one.has(d)
    assert not other.has(d)


def test_s3_multipart_upload_with_wrong_digest_leaves_nothing(
    s3_bucket_url: tuple[str, dict[str, Any]],  # noqa: F811
    tmp_path: Path,
) -> None:
    import boto3

    url, options = s3_bucket_url
    store = BlobStore(url, {**options, "default_block_size": 5 << 20})  # 5 MiB parts
    src = tmp_path / "big"
    src.write_bytes(os.urandom(12 << 20))
    wrong = blake3(b"not it").hexdigest()
    with pytest.raises(DigestMismatch):
        store.put_file(src, wrong)
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1")
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    d = store.put_file(src)  # and the right one goes through as a multipart upload
    assert store.verify(d)


@pytest.mark.slow
@pytest.mark.parametrize("part", [1, 2])  # killed during a write, or during the commit
def test_s3_server_killed_mid_multipart_upload_fails_in_bounded_time_and_closes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part: int
) -> None:
    """The writer is closed before the abort is tried: s3fs's __del__ (at exit, say, with
    fsspec's loop gone) then has nothing to send and cannot wait on the dead server."""
    import time

    from fixtures_s3 import S3Process, make_bucket, s3_env

    from roargit.blobstore import Limits

    for name, value in s3_env("").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    server = S3Process(die_at_part=part)
    try:
        make_bucket(server.endpoint, "bkt")
        store = BlobStore(
            "s3://bkt/store",
            {"endpoint_url": server.endpoint},
            Limits(timeout=2, retries=1, part_size=5 << 20),
        )
        writers: list[Any] = []
        begin = store._backend.begin

        def spy(rel: str) -> Any:
            writers.append(begin(rel))
            return writers[-1]

        monkeypatch.setattr(store._backend, "begin", spy)
        src = tmp_path / "big"
        src.write_bytes(os.urandom(12 << 20))
        started = time.monotonic()
        with pytest.raises(Exception, match="endpoint"):
            store.put_file(src)
        assert time.monotonic() - started < 30
        assert not server.alive
        [writer] = writers
        assert writer.f.closed and writer.f.mpu is None  # aborted (best-effort), closed
        writer.f.close()  # a no-op now, as __del__ will be
        started = time.monotonic()
        with pytest.raises(Exception, match="endpoint"):
            store.has(blake3(b"x").hexdigest())
        assert time.monotonic() - started < 15  # two tries of a refused connection
    finally:
        server.kill()
