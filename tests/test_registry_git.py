"""A registry that is only git (no server): a bare index repository, bare scope repositories,
and a moto S3 store on loopback; and the HTTP rules of `roar registry serve`."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import digest, git
from fixtures_s3 import s3_bucket_url, s3_endpoint  # noqa: F401
from registry_helpers import Server, make_user, roar_as, serving
from test_registry_e2e import pipeline

from roargit.blobstore import BlobStore
from roargit.registry import index


def _bare(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return str(path)


@pytest.fixture
def git_registry(
    tmp_path: Path,
    s3_bucket_url: tuple[str, dict[str, Any]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str, dict[str, Any]]:
    url, options = s3_bucket_url
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    regs = tmp_path / "git-host"
    index_url = _bare(regs / "index.git")
    _bare(regs / "acme" / "vision.git")
    subprocess.run(
        ["roar", "registry", "init", index_url, "--repo", "{scope}.git",
         "--store", f"{url}/{{scope}}", "--scopes", "acme/vision"],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    return index_url, url, options


@pytest.mark.slow
def test_plain_git_registry_with_an_s3_store(
    tmp_path: Path, git_registry: tuple[str, str, dict[str, Any]]
) -> None:
    index_url, store_url, options = git_registry
    alice, bob = make_user(tmp_path, "alice"), make_user(tmp_path, "bob")
    for user in (alice, bob):
        checked = json.loads(roar_as(user, user.home, "login", index_url, "--json").stdout)
        assert checked["user"] == f"{user.name}@example.com" and checked["index_readable"]
    repo = tmp_path / "alice-repo"
    model = pipeline(alice, repo)
    roar_as(alice, repo, "scope", "use", "acme/vision")
    out = json.loads(roar_as(alice, repo, "register", "model.pkl", "-y", "--json").stdout)
    assert out["entry"]["registered_by"] == "alice@example.com"
    assert out["entry"]["store"] == f"{store_url}/acme/vision"
    assert BlobStore(f"{store_url}/acme/vision", options).has(model)

    empty = tmp_path / "bob-empty"
    empty.mkdir()
    roar_as(bob, empty, "reproduce", model[:10], "--run", "-y", "--no-reuse", "-o", "m.pkl")
    assert (empty / "m.pkl").read_bytes() == (repo / "model.pkl").read_bytes()
    plan = json.loads(roar_as(bob, empty, "reproduce", model, "--json").stdout)
    assert plan["target"]["hash"] == model


@pytest.mark.slow
def test_hostile_records_in_a_scope_are_quarantined(
    tmp_path: Path, git_registry: tuple[str, str, dict[str, Any]]
) -> None:
    index_url, _store, _options = git_registry
    alice, bob = make_user(tmp_path, "alice"), make_user(tmp_path, "bob")
    for user in (alice, bob):
        roar_as(user, user.home, "login", index_url)
    repo = tmp_path / "alice-repo"
    model = pipeline(alice, repo)
    roar_as(alice, repo, "scope", "use", "acme/vision")
    roar_as(alice, repo, "register", "model.pkl", "-y")
    # Someone with write access to the scope adds a record that is not what its name says.
    scope_repo = Path(index_url).parent / "acme" / "vision.git"
    evil = tmp_path / "evil"
    git(tmp_path, "init", "-q", str(evil))
    git(evil, "fetch", "-q", str(scope_repo), "refs/roar/ledger:refs/heads/ledger")
    git(evil, "checkout", "-q", "ledger")
    bad = "ee" * 32
    (evil / "runs" / "ee" / "ee").mkdir(parents=True)
    (evil / "runs" / "ee" / "ee" / bad).write_bytes(b"\x81\xa1v\x01 not a record")
    git(evil, "add", "runs")
    git(evil, "-c", "user.email=e@x", "-c", "user.name=e", "commit", "-q", "-m", "evil")
    git(evil, "push", "-q", str(scope_repo), "HEAD:refs/roar/ledger")

    empty = tmp_path / "bob-empty"
    empty.mkdir()
    proc = roar_as(bob, empty, "reproduce", model, "--run", "-y", "--no-reuse", "-o", "m.pkl")
    assert "quarantined" in proc.stderr
    assert digest(empty / "m.pkl") == model


# -- the server's HTTP rules -------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serving(tmp_path / "registry")


def _get(url: str, user: str | None = None, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if user is not None:
        cred = base64.b64encode(f"{user}:{token}".encode()).decode()
        req.add_header("Authorization", f"Basic {cred}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_server_rules(server: Server) -> None:
    u, alice, bob = server.url, server.tokens["alice"], server.tokens["bob"]
    upload = "info/refs?service=git-upload-pack"
    receive = "info/refs?service=git-receive-pack"
    assert _get(f"{u}/index.git/{upload}")[0] == 200  # existence is public
    assert _get(f"{u}/index.git/{receive}")[0] == 401
    assert _get(f"{u}/index.git/{receive}", "bob", bob)[0] == 200
    assert _get(f"{u}/acme/vision.git/{upload}")[0] == 401
    assert _get(f"{u}/acme/vision.git/{upload}", "bob", bob)[0] == 403
    assert _get(f"{u}/acme/vision.git/{upload}", "alice", alice)[0] == 200
    assert _get(f"{u}/acme/vision.git/{receive}", "alice", alice)[0] == 200
    assert _get(f"{u}/acme/shared.git/{receive}", "bob", bob)[0] == 200
    # A token is its owner's only; a wrong one is refused even where anyone may read.
    assert _get(f"{u}/acme/vision.git/{upload}", "bob", alice)[0] == 401
    assert _get(f"{u}/index.git/{upload}", "alice", "roar_wrong")[0] == 401
    # Only the smart protocol, only configured repositories, nothing outside them.
    assert _get(f"{u}/acme/vision.git/HEAD", "alice", alice)[0] == 404
    assert _get(f"{u}/acme/vision.git/info/refs", "alice", alice)[0] == 404
    assert _get(f"{u}/acme/other.git/{upload}", "alice", alice)[0] == 404
    assert _get(f"{u}/../registry.conf")[0] == 404
    assert _get(f"{u}/index/xyz")[0] == 400
    assert _get(f"{u}/index/{'ab' * 32}") == (404, b'{"entries": []}')
    status, body = _get(f"{u}/whoami", "alice", alice)
    assert status == 200 and json.loads(body) == {"user": "alice"}
    assert _get(f"{u}/whoami")[0] == 401
    log = server.log.read_text()
    assert '"GET /acme/vision.git/info/refs?service=git-upload-pack" 403' in log
    assert alice not in log and bob not in log  # tokens never reach the log


def test_token_added_while_serving(server: Server, tmp_path: Path) -> None:
    from roargit.registry.server import create_token

    token = create_token(server.config, "carol")
    status, body = _get(f"{server.url}/whoami", "carol", token)
    assert status == 200 and json.loads(body)["user"] == "carol"


def test_the_index_takes_only_entries_the_pusher_may_write(server: Server, tmp_path: Path) -> None:
    from roargit.registry.index import AccessDenied, IndexEntry

    host = server.url.removeprefix("http://")
    as_bob = f"http://bob:{server.tokens['bob']}@{host}/index.git"
    as_alice = f"http://alice:{server.tokens['alice']}@{host}/index.git"
    work = index.work_repo(tmp_path / "work")

    def entry(digest: str, scope: str, who: str) -> IndexEntry:
        return IndexEntry(digest, scope, "r", "s", 1, 1_790_000_000, who)

    a, b = "ab" * 32, "ab" + "cd" * 31
    assert index.add(work, as_bob, entry(a, "acme/shared", "bob")).added
    with pytest.raises(AccessDenied):  # bob may not write acme/vision
        index.add(work, as_bob, entry(b, "acme/vision", "bob"))
    with pytest.raises(AccessDenied):  # nor register in alice's name
        index.add(work, as_bob, entry(b, "acme/shared", "alice"))
    with pytest.raises(AccessDenied):  # no scope of that name here
        index.add(work, as_alice, entry(b, "acme/nowhere", "alice"))
    assert index.add(work, as_alice, entry(b, "acme/vision", "alice")).added
    # An entry is never changed: a shard rewritten without it is refused.
    tip = index.fetch_ref(work, as_bob, index.shard_ref(a))
    assert tip is not None
    rows = subprocess.run(["git", "ls-tree", tip], cwd=work, capture_output=True, text=True,
                          check=True).stdout.splitlines()  # fmt: skip
    kept = "".join(r + "\n" for r in rows if not r.endswith(a))
    tree = subprocess.run(["git", "mktree"], cwd=work, input=kept, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    commit = subprocess.run(["git", "commit-tree", tree, "-m", "drop"], cwd=work,
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    with pytest.raises(AccessDenied):
        index.push_ref(work, as_alice, commit, index.shard_ref(a), tip)
    settings = index.fetch_ref(work, as_alice, index.CONFIG_REF)
    with pytest.raises(AccessDenied):  # the settings are the server's
        index.push_ref(work, as_alice, commit, index.CONFIG_REF, settings)
    found = {e.hash: e.scope for e in index.lookup(work, as_bob, "abcdcd")}
    assert found == {b: "acme/vision"}
    assert [e.scope for e in index.lookup(work, as_bob, a)] == ["acme/shared"]


def _add_as(args: tuple[str, str, str]) -> bool:
    from roargit.registry.index import IndexEntry

    work, url, digest = args
    entry = IndexEntry(digest, "acme/shared", "r", "s", 1, 1_790_000_000, "alice")
    return index.add(index.work_repo(Path(work)), url, entry).added


def test_concurrent_adds_to_one_shard_through_the_server(server: Server, tmp_path: Path) -> None:
    """dulwich reports a lost compare-and-swap as a success; the server checks it itself."""
    from concurrent.futures import ProcessPoolExecutor

    host = server.url.removeprefix("http://")
    url = f"http://alice:{server.tokens['alice']}@{host}/index.git"
    digests = [f"5a{i:062x}" for i in range(8)]
    jobs = [(str(tmp_path / f"w{i}"), url, d) for i, d in enumerate(digests)]
    with ProcessPoolExecutor(8) as pool:
        assert all(pool.map(_add_as, jobs))
    found = index.lookup(index.work_repo(tmp_path / "check"), url, "5a0000")
    assert sorted(e.hash for e in found) == sorted(digests)


def test_requests_leave_no_file_open(server: Server, tmp_path: Path) -> None:
    def open_files() -> int:
        return len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir()))

    work = index.work_repo(tmp_path / "work")
    host = server.url.removeprefix("http://")
    url = f"http://alice:{server.tokens['alice']}@{host}/index.git"
    _add_as((str(tmp_path / "work"), url, "77" * 32))  # a pushed pack: files to hold open
    index.fetch_ref(work, url, index.shard_ref("77"))
    before = open_files()
    for i in range(30):
        index.fetch_ref(index.work_repo(tmp_path / f"w{i}"), url, index.shard_ref("77"))
    assert open_files() <= before + 2  # waitress's own sockets may come and go
