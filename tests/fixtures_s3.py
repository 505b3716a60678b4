"""A real S3 endpoint for tests: moto's server on loopback, one fresh bucket per test.

`s3_endpoint` (session) starts `ThreadedMotoServer` on 127.0.0.1 with a free port and
returns its URL; `s3_bucket_url` (function) creates a bucket with boto3 (s3fs's mkdir sends
a LocationConstraint that moto refuses for us-east-1) and returns
`("s3://<bucket>/<prefix>", storage_options)` for `BlobStore(url, options)` or fsspec.
Credentials are dummies, set in the environment for the test's duration only; nothing
leaves the machine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

_REGION = "us-east-1"
_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": _REGION,
    # Keep botocore from reading the real ~/.aws or asking the instance metadata service.
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    # The server needs no credentials; clients get dummies per test (below), so the
    # environment of the rest of the session is left alone.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket_url(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, Any]]]:
    import boto3

    # Dummy credentials for this test only (monkeypatch restores the environment), so that
    # s3fs/botocore never look for real ones.
    for name, value in _DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = f"roar-test-{uuid.uuid4().hex[:16]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=_REGION,
        aws_access_key_id=_DUMMY_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=bucket)
    options: dict[str, Any] = {
        "endpoint_url": s3_endpoint,
        "key": _DUMMY_ENV["AWS_ACCESS_KEY_ID"],
        "secret": _DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"region_name": _REGION},
    }
    yield f"s3://{bucket}/store", options
