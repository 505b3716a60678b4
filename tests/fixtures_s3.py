"""A real S3 endpoint for tests: moto's server on loopback, one fresh bucket per test.

`s3_endpoint` (session) starts `ThreadedMotoServer` on 127.0.0.1 with a free port and
returns its URL; `s3_bucket_url` (function) creates a bucket with boto3 (s3fs's mkdir sends
a LocationConstraint that moto refuses for us-east-1) and returns
`("s3://<bucket>/<prefix>", storage_options)` for `BlobStore(url, options)` or fsspec.
Credentials are dummies, set in the environment for the test's duration only; nothing
leaves the machine.

`S3Process` runs the same server in a process of its own, so that a test can kill it (before,
or in the middle of, an upload: `die_at_part=N` makes it SIGKILL itself when the N-th part of a
multipart upload arrives) and start another on the same port. `python tests/fixtures_s3.py
[--port P] [--die-at-part N]` is that process; it prints its port, then serves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=_REGION,
        aws_access_key_id=_DUMMY_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=bucket)


def s3_env(endpoint: str) -> dict[str, str]:
    """What a `roar` subprocess needs to reach the endpoint with dummy credentials."""
    return {**_DUMMY_ENV, "AWS_ENDPOINT_URL": endpoint}


class S3Process:
    """A moto S3 server in a process of its own, on loopback (see the module docstring)."""

    def __init__(self, port: int = 0, die_at_part: int = 0) -> None:
        argv = [sys.executable, __file__, "--port", str(port), "--die-at-part", str(die_at_part)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.kill()
            raise RuntimeError(f"the S3 server did not start: {line!r}")
        self.port = int(line)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def iam_user(endpoint: str, bucket: str, name: str, prefixes: list[str]) -> dict[str, str]:
    """An IAM user whose policy allows reading and writing objects under `prefixes` of
    `bucket` (and nothing else); the environment a process needs to act as it."""
    import json

    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=_REGION,
        aws_access_key_id=_DUMMY_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    iam.create_user(UserName=name)
    resources = [f"arn:aws:s3:::{bucket}/{p.strip('/')}/*" for p in prefixes]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                # AWS checks s3:GetObject for a HEAD and s3:ListBucket for a V2 listing;
                # moto checks actions it names s3:HeadObject and s3:ListObjectsV2.
                "Action": ["s3:GetObject", "s3:HeadObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": resources,
            },
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListObjectsV2"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
        ],
    }
    iam.put_user_policy(UserName=name, PolicyName="prefixes", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    env = {k: v for k, v in _DUMMY_ENV.items() if k != "AWS_SESSION_TOKEN"}
    return {
        **env,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def enforce_iam(endpoint: str) -> None:
    """From now on the server checks every request's signature and IAM policy (moto lets
    requests through unchecked until told otherwise, which is how the users were made)."""
    import urllib.request

    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        # Plain text: werkzeug would read a form-encoded body as a form and leave it empty.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def _serve(port: int, die_at_part: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    parts = 0

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        nonlocal parts
        query = environ.get("QUERY_STRING", "")
        if die_at_part and "partNumber=" in query and "uploadId=" in query:
            parts += 1
            if parts >= die_at_part:
                # Killed as a crash would kill it: no response, the connection reset.
                os.kill(os.getpid(), signal.SIGKILL)
        return app(environ, start_response)

    server = make_server("127.0.0.1", port, wsgi, True, request_handler=MotoRequestHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--die-at-part", type=int, default=0)
    args = parser.parse_args()
    _serve(args.port, args.die_at_part)
