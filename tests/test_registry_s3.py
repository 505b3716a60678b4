"""Scope stores as prefixes of one S3 bucket, each user's key covering only their scopes'
prefixes (moto's server on loopback with its IAM checks on): a registry decides who may
read a scope's lineage, the store alone decides who may read its bytes, and the registry
never hands out bytes the reader's own key cannot fetch."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import digest, git
from fixtures_s3 import S3Process, enforce_iam, iam_user, make_bucket
from registry_helpers import (
    Server,
    files_under,
    login,
    make_user,
    roar_as,
    start_server,
    stop_server,
)

BUCKET = "roar-scopes"


@pytest.fixture
def s3() -> Iterator[S3Process]:
    # A process of its own: enforcing IAM there leaves the session's shared server alone.
    server = S3Process()
    try:
        yield server
    finally:
        server.kill()


def _client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _enforces_prefixes(own: dict[str, str], other_prefix: str) -> str | None:
    """Why this moto cannot stand in for per-prefix policies, None when it can: a key may
    write and read its own prefix and neither outside it."""
    from botocore.exceptions import ClientError

    client = _client(own)
    client.put_object(Bucket=BUCKET, Key=f"{own['PREFIX']}/probe", Body=b"probe")
    if client.get_object(Bucket=BUCKET, Key=f"{own['PREFIX']}/probe")["Body"].read() != b"probe":
        return "a key cannot read back what it wrote under its own prefix"
    try:
        client.put_object(Bucket=BUCKET, Key=f"{other_prefix}/probe", Body=b"probe")
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "AccessDenied":
            return f"a write outside the key's prefix failed otherwise: {exc}"
    else:
        return "moto let a key write outside the prefix its IAM policy allows"
    client.delete_object(Bucket=BUCKET, Key=f"{own['PREFIX']}/probe")
    return None


def _server_env() -> dict[str, str]:
    """The registry server's environment: no AWS credentials at all, so nothing it serves
    can come from the store on its own authority."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


def _pipeline(user_env: dict[str, str], user: Any, repo: Path, text: str) -> str:
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "raw.txt").write_text(text)
    (repo / "upper.py").write_text(
        "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())\n"
    )
    who = ["-c", f"user.email={user.name}@example.com", "-c", f"user.name={user.name}"]
    git(repo, *who, "add", "upper.py")
    git(repo, *who, "commit", "-q", "-m", "pipeline")
    roar_as(user, repo, "run", "-q", "python", "upper.py", "raw.txt", "out.txt",
            env_extra=user_env)  # fmt: skip
    return digest(repo / "out.txt")


def test_a_key_for_one_scope_prefix_reads_that_scope_only(s3: S3Process, tmp_path: Path) -> None:
    make_bucket(s3.endpoint, BUCKET)
    vision = iam_user(s3.endpoint, BUCKET, "alice", ["roar/acme/vision"])
    shared = iam_user(s3.endpoint, BUCKET, "bob", ["roar/acme/shared"])
    enforce_iam(s3.endpoint)
    why = _enforces_prefixes({**vision, "PREFIX": "roar/acme/vision"}, "roar/acme/shared")
    if why is not None:
        pytest.skip(f"moto cannot enforce per-prefix IAM policies here: {why}")

    server: Server = start_server(tmp_path / "registry", store=f"s3://{BUCKET}/roar",
                                  env=_server_env())  # fmt: skip
    try:
        alice, bob = make_user(tmp_path, "alice"), make_user(tmp_path, "bob")
        login(alice, server)
        login(bob, server)

        # bob registers into acme/shared with his key (the registry lets alice read it too).
        bob_repo = tmp_path / "bob-repo"
        theirs = _pipeline(shared, bob, bob_repo, "bob's data\n")
        roar_as(bob, bob_repo, "scope", "use", "acme/shared")
        roar_as(bob, bob_repo, "register", "out.txt", "-y", env_extra=shared)

        # alice registers into acme/vision with hers, and reproduces it from an empty folder.
        alice_repo = tmp_path / "alice-repo"
        mine = _pipeline(vision, alice, alice_repo, "alice's data\n")
        roar_as(alice, alice_repo, "scope", "use", "acme/vision")
        out = json.loads(roar_as(alice, alice_repo, "register", "out.txt", "-y", "--json",
                                 env_extra=vision).stdout)  # fmt: skip
        assert out["entry"]["store"] == f"s3://{BUCKET}/roar/acme/vision"
        assert out["store"]["uploaded"] == 2  # raw.txt and out.txt
        empty = tmp_path / "alice-empty"
        empty.mkdir()
        roar_as(alice, empty, "reproduce", mine, "--run", "-y", "--no-reuse", "-o", "out.txt",
                env_extra=vision)  # fmt: skip
        assert (empty / "out.txt").read_bytes() == (alice_repo / "out.txt").read_bytes()

        # acme/shared's lineage is hers to read; its bytes are not hers to fetch.
        log_before = server.log.read_text().count("\n")
        elsewhere = tmp_path / "alice-elsewhere"
        elsewhere.mkdir()
        proc = roar_as(alice, elsewhere, "get", theirs, "-o", "theirs.txt", check=False,
                       env_extra=vision)  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"s3://{BUCKET}/roar/acme/shared" in lines[0] and "denied" in lines[0], lines
        assert files_under(elsewhere) == []
        # The registry served its index and the scope's lineage, never the bytes: it holds no
        # key for the store, and no request went anywhere but git and the index.
        served = server.log.read_text().splitlines()[log_before:]
        assert served and all("/index/" in ln or ".git/" in ln for ln in served), served
        # Nor does its web view, which reads a store with the server's own credentials only.
        token = base64.b64encode(f"alice:{server.tokens['alice']}".encode()).decode()
        request = urllib.request.Request(f"{server.url}/ui/scope/acme/shared/blob/{theirs}",
                                         headers={"Authorization": f"Basic {token}"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        said = refused.value.read()
        assert refused.value.code == 502 and b"BOB'S DATA" not in said
        assert b"could not be read here" in said
        # Source data registered as its bytes alone: the same refusal, the same one line.
        raw = digest(bob_repo / "raw.txt")
        roar_as(bob, bob_repo, "register", "raw.txt", "-y", env_extra=shared)
        proc = roar_as(alice, elsewhere, "get", raw, check=False, env_extra=vision)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "denied" in proc.stderr and files_under(elsewhere) == []

        # Writing is the store's business too: the registry lets alice write acme/shared,
        # her key does not, and nothing is indexed that its scope's store does not hold.
        roar_as(alice, alice_repo, "scope", "use", "acme/shared")
        (alice_repo / "more.txt").write_text("more\n")
        roar_as(alice, alice_repo, "run", "-q", "python", "upper.py", "more.txt", "more.out",
                env_extra=vision)  # fmt: skip
        more = digest(alice_repo / "more.out")
        proc = roar_as(alice, alice_repo, "register", "more.out", "-y", check=False,
                       env_extra=vision)  # fmt: skip
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "denied" in proc.stderr
        found = roar_as(alice, elsewhere, "registry", "lookup", more, check=False)
        assert found.returncode == 1

        # bob, whose key covers acme/shared, gets the same bytes.
        roar_as(bob, tmp_path / "bob-repo", "get", theirs, "-o", "again.txt", env_extra=shared)
        assert digest(bob_repo / "again.txt") == theirs
    finally:
        stop_server(server)
