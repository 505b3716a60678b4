"""`roar register` and reproduce-from-anywhere against a real `roar registry serve` on
loopback: two users (alice, bob), three scopes (acme/vision: alice only; acme/shared: both;
private)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
from cli_helpers import digest, git
from pipeline_helpers import write_pipeline
from registry_helpers import (
    Server,
    User,
    all_repos,
    every_object,
    files_under,
    login,
    make_user,
    repo_state,
    roar_as,
    serving,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serving(tmp_path / "registry")


@pytest.fixture
def alice(tmp_path: Path, server: Server) -> User:
    user = make_user(tmp_path, "alice")
    login(user, server)
    return user


@pytest.fixture
def bob(tmp_path: Path, server: Server) -> User:
    user = make_user(tmp_path, "bob")
    login(user, server)
    return user


def pipeline(user: User, repo: Path) -> str:
    """alice's three-step pipeline in a fresh clone; model.pkl's hash."""
    repo.mkdir()
    git(repo, "init", "-q")
    write_pipeline(repo, commit=False)
    git(repo, "-c", f"user.email={user.name}@example.com", "-c", f"user.name={user.name}",
        "add", "prep.py", "features.py", "train.py")  # fmt: skip
    git(repo, "-c", f"user.email={user.name}@example.com", "-c", f"user.name={user.name}",
        "commit", "-q", "-m", "pipeline")  # fmt: skip
    roar_as(user, repo, "run", "-q", "python", "prep.py", "raw.csv", "clean.csv")
    roar_as(user, repo, "run", "-q", "python", "features.py")
    roar_as(user, repo, "run", "-q", "python", "train.py", "--lr", "0.1")
    return digest(repo / "model.pkl")


def register(user: User, repo: Path, *args: str) -> dict:
    return json.loads(roar_as(user, repo, "register", *args, "--json").stdout)


class Registered(NamedTuple):
    repo: Path
    model: str  # model.pkl's hash
    out: dict  # `roar register --json`


def pipeline_registered(tmp_path: Path, alice: User, scope: str) -> Registered:
    """alice's pipeline in tmp_path/alice-repo, its model.pkl registered under `scope`."""
    repo = tmp_path / "alice-repo"
    model = pipeline(alice, repo)
    roar_as(alice, repo, "scope", "use", scope)
    return Registered(repo, model, register(alice, repo, "model.pkl", "-y"))


def test_register_then_reproduce_from_an_empty_folder(
    tmp_path: Path, server: Server, alice: User, bob: User
) -> None:
    repo, model, out = pipeline_registered(tmp_path, alice, "acme/shared")
    assert out["hash"] == model and out["already"] is False
    assert out["entry"]["scope"] == "acme/shared" and out["entry"]["registered_by"] == "alice"
    assert len(out["runs"]) == 3
    assert out["web"] == f"https://roar.example.com/artifact/{model}"

    # bob, in an empty folder outside any clone: the same bytes.
    published = files_under(server.store)
    empty = tmp_path / "bob-empty"
    empty.mkdir()
    proc = roar_as(bob, empty, "reproduce", model[:12], "--run", "-y", "--no-reuse",
                   "-o", "model.pkl")  # fmt: skip
    assert (empty / "model.pkl").read_bytes() == (repo / "model.pkl").read_bytes(), proc.stderr
    shown = json.loads(roar_as(bob, empty, "show", model, "--json").stdout)
    assert model in json.dumps(shown)
    roar_as(bob, empty, "get", model, "-o", "got.pkl")
    assert digest(empty / "got.pkl") == model
    # Nothing was written into the folder but what was asked for, nor into the scope's store.
    assert sorted(p.name for p in empty.iterdir()) == ["got.pkl", "model.pkl"]
    assert files_under(server.store) == published

    # Registering again is a no-op: no ref moves on the server, nothing new in the store.
    before = {r: repo_state(r) for r in all_repos(server.repos)}
    stored = files_under(server.store)
    again = register(alice, repo, "model.pkl", "-y")
    assert again["already"] is True and again["pushed"] is False
    assert again["store"]["uploaded"] == 0
    assert {r: repo_state(r) for r in all_repos(server.repos)} == before
    assert files_under(server.store) == stored


def test_no_read_access_learns_existence_only(
    tmp_path: Path, server: Server, alice: User, bob: User
) -> None:
    model = pipeline_registered(tmp_path, alice, "acme/vision").model
    log_before = server.log.read_text().count("\n")

    empty = tmp_path / "bob-empty"
    empty.mkdir()
    found = json.loads(roar_as(bob, empty, "registry", "lookup", model, "--json").stdout)
    assert found["entries"][0]["scope"] == "acme/vision"
    proc = roar_as(bob, empty, "reproduce", model, check=False)
    assert proc.returncode == 1
    assert "registered in acme/vision by alice on 20" in proc.stderr
    assert "you have no read access to it" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The server refused bob every request for the scope's repository: no record bytes left.
    bob_lines = [ln for ln in server.log.read_text().splitlines()[log_before:] if " bob " in ln]
    vision = [ln for ln in bob_lines if "/acme/vision.git" in ln]
    assert vision, bob_lines
    assert all(ln.split('" ')[1].startswith(("401", "403")) for ln in vision), vision
    assert not any('git-upload-pack" 200' in ln for ln in vision)


def test_private_never_reaches_the_server(tmp_path: Path, server: Server, alice: User) -> None:
    canary = "canary_7f3e9b2c51"
    repo = tmp_path / "alice-repo"
    pipeline(alice, repo)
    # A run with the canary in its argv, its environment and its (untracked) code.
    git(repo, "config", "roar.env.include", "CANARY_*")
    (repo / f"{canary}_helper.py").write_text(f"WORD = '{canary}'\n")
    (repo / "secretive.py").write_text(
        f"import sys\nsys.path.insert(0, '.')\nfrom {canary}_helper import WORD\n"
        "open('secret.out', 'w').write(WORD + sys.argv[1])\n"
    )
    roar_as(alice, repo, "run", "-q", "python", "secretive.py", canary,
            env_extra={"CANARY_NOTE": f"{canary}-env"})  # fmt: skip
    # It was recorded here (argv, environment and code snapshot), so the search below means
    # something.
    here = every_object(repo / ".git")
    assert canary.encode() in here and f"{canary}-env".encode() in here
    assert f"WORD = '{canary}'".encode() in here
    roar_as(alice, repo, "scope", "use", "private")
    requests = server.log.read_text().count("\n")
    proc = roar_as(alice, repo, "register", "secret.out", "-y", check=False)
    assert proc.returncode == 1 and "private" in proc.stderr
    assert server.log.read_text().count("\n") == requests  # not one request was made
    # The same clone registers its other lineage in a shared scope: the canary stays home.
    roar_as(alice, repo, "scope", "use", "acme/shared")
    register(alice, repo, "model.pkl", "-y")
    for r in all_repos(server.repos):
        assert canary.encode() not in every_object(r), r
    for f in server.store.rglob("*"):
        assert not f.is_file() or canary.encode() not in f.read_bytes(), f
    assert canary not in server.log.read_text()


def test_dry_run_writes_nothing_anywhere(tmp_path: Path, server: Server, alice: User) -> None:
    repo = tmp_path / "alice-repo"
    model = pipeline(alice, repo)
    roar_as(alice, repo, "scope", "use", "acme/shared")
    before = {r: repo_state(r) for r in [*all_repos(server.repos), repo / ".git"]}
    stored = files_under(server.store)
    out = register(alice, repo, "model.pkl", "--dry-run")
    assert out["dry_run"] is True and out["hash"] == model
    assert out["store"]["to_upload"] and out["store"]["uploaded"] is None
    assert {r: repo_state(r) for r in [*all_repos(server.repos), repo / ".git"]} == before
    assert files_under(server.store) == stored
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert roar_as(alice, empty, "registry", "lookup", model, check=False).returncode == 1


@pytest.mark.slow
def test_eight_concurrent_registrations_all_indexed(
    tmp_path: Path, server: Server, alice: User
) -> None:
    repo = tmp_path / "alice-repo"
    pipeline(alice, repo)
    (repo / "emit.py").write_text("import sys\nopen(sys.argv[1], 'w').write(sys.argv[2])\n")
    for i in range(8):
        roar_as(alice, repo, "run", "-q", "python", "emit.py", f"out{i}.txt", f"value {i}")
    roar_as(alice, repo, "scope", "use", "acme/shared")
    hashes = [digest(repo / f"out{i}.txt") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda i: register(alice, repo, f"out{i}.txt", "-y"), range(8)))
    assert sorted(d["hash"] for d in done) == sorted(hashes)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    for h in hashes:
        found = json.loads(roar_as(alice, empty, "registry", "lookup", h, "--json").stdout)
        assert [e["hash"] for e in found["entries"]] == [h]
    # Every record reached the scope's repository (pushes that lost a race merged and retried).
    shared = server.repos / "acme" / "shared.git"
    listing = git(shared, "ls-tree", "-r", "--name-only", "refs/roar/ledger", "runs")
    assert len(listing.splitlines()) == 8


def test_login_whoami_logout_and_scopes(tmp_path: Path, server: Server, alice: User) -> None:
    who = json.loads(roar_as(alice, alice.home, "whoami", "--json").stdout)
    assert who["user"] == "alice"
    listed = json.loads(roar_as(alice, alice.home, "scope", "list", "--json").stdout)
    assert listed["scopes"] == ["acme/shared", "acme/vision"]
    roar_as(alice, alice.home, "scope", "use", "acme/vision")
    shown = json.loads(roar_as(alice, alice.home, "scope", "show", "--json").stdout)
    assert shown["repo"] == f"{server.url}/acme/vision.git"
    assert shown["store"] == f"file://{server.store}/acme/vision"
    checked = json.loads(roar_as(alice, alice.home, "login", "--json").stdout)
    assert checked["index_readable"] and checked["scope_writable"] is True
    # A wrong token is refused, and says so.
    mallory = make_user(tmp_path, "mallory")
    proc = roar_as(mallory, mallory.home, "login", server.url, "--user", "alice", "--token",
                   "-", "--json", stdin="roar_wrong\n", check=False)  # fmt: skip
    assert proc.returncode == 1 and json.loads(proc.stdout)["user"] is None
    roar_as(alice, alice.home, "logout")
    assert roar_as(alice, alice.home, "whoami", check=False).returncode == 1


def test_continue_from_a_teammates_checkpoint(
    tmp_path: Path, server: Server, alice: User, bob: User
) -> None:
    model = pipeline_registered(tmp_path, alice, "acme/shared").model

    mine = tmp_path / "bob-repo"
    mine.mkdir()
    git(mine, "init", "-q")
    (mine / "go_on.py").write_text(
        "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read() + 'more\\n')\n"
    )
    # In bob's own clone, which has never seen the hash: its lineage comes from the scope.
    roar_as(bob, mine, "get", model, "-o", "checkpoint.pkl")
    assert digest(mine / "checkpoint.pkl") == model
    roar_as(bob, mine, "run", "-q", "python", "go_on.py", "checkpoint.pkl", "continued.pkl")
    lineage = json.loads(roar_as(bob, mine, "lineage", "continued.pkl", "--json").stdout)
    argvs = [" ".join(r["argv"]) for r in lineage["runs"]]
    assert any("go_on.py" in a for a in argvs)
    assert any("train.py" in a for a in argvs) and any("prep.py" in a for a in argvs)
    diff = roar_as(bob, mine, "diff", model, "continued.pkl", "--json", check=False)
    assert diff.returncode in (0, 1) and "Traceback" not in diff.stderr


def test_registered_elsewhere_first_is_left_alone(
    tmp_path: Path, server: Server, alice: User
) -> None:
    repo = pipeline_registered(tmp_path, alice, "acme/vision").repo
    roar_as(alice, repo, "scope", "use", "acme/shared")
    again = register(alice, repo, "model.pkl", "-y")
    assert again["already"] is True and again["entry"]["scope"] == "acme/vision"
    assert again["pushed"] is False and again["store"]["uploaded"] is None
    shared = server.repos / "acme" / "shared.git"
    assert git(shared, "for-each-ref") == ""
    assert not (server.store / "acme" / "shared").exists()


def test_register_says_what_is_missing(tmp_path: Path, server: Server) -> None:
    carol = make_user(tmp_path, "carol")
    repo = tmp_path / "carol-repo"
    pipeline(carol, repo)
    proc = roar_as(carol, repo, "register", "model.pkl", "-y", check=False)
    assert proc.returncode == 1 and "roar scope use" in proc.stderr
    roar_as(carol, repo, "scope", "use", "acme/shared")
    proc = roar_as(carol, repo, "register", "model.pkl", "-y", check=False)
    assert proc.returncode == 1 and "roar login" in proc.stderr
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    proc = roar_as(carol, empty, "reproduce", "abcdef123456", check=False)
    assert proc.returncode == 1 and "not a git repository" in proc.stderr.lower()
    proc = roar_as(carol, empty, "scope", "use", "../etc", check=False)
    assert proc.returncode == 1 and "not a scope" in proc.stderr


def test_bytes_only_the_team_store_holds_are_copied_through(
    tmp_path: Path, server: Server, alice: User, bob: User
) -> None:
    repo = tmp_path / "alice-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    team = tmp_path / "team-store"
    git(repo, "config", "roar.store.url", f"file://{team}")
    (repo / "emit.py").write_text("import sys\nopen(sys.argv[1], 'w').write('weights ' * 50)\n")
    roar_as(alice, repo, "run", "-q", "python", "emit.py", "ckpt.bin")
    h = digest(repo / "ckpt.bin")
    (repo / "ckpt.bin").unlink()
    local = repo / ".git" / "roar" / "blobs"
    for f in local.rglob(h):
        f.unlink()  # only the team store holds the bytes now
    roar_as(alice, repo, "scope", "use", "acme/shared")
    out = register(alice, repo, h, "-y")
    assert out["store"]["uploaded"] == 1 and not out["store"]["unavailable"]
    empty = tmp_path / "bob-empty"
    empty.mkdir()
    roar_as(bob, empty, "get", h)
    assert digest(empty / "ckpt.bin") == h


def test_source_data_registers_as_bytes_alone(
    tmp_path: Path, server: Server, alice: User, bob: User
) -> None:
    repo = tmp_path / "alice-repo"
    pipeline(alice, repo)
    raw = digest(repo / "raw.csv")
    roar_as(alice, repo, "scope", "use", "acme/shared")
    out = register(alice, repo, "raw.csv", "-y")
    assert out["runs"] == [] and out["store"]["uploaded"] == 1 and out["pushed"] is False
    # The runs that read it are downstream of it: none of them left the machine.
    assert git(server.repos / "acme" / "shared.git", "for-each-ref") == ""
    empty = tmp_path / "bob-empty"
    empty.mkdir()
    roar_as(bob, empty, "get", raw[:12], "-o", "raw.csv")
    assert (empty / "raw.csv").read_bytes() == (repo / "raw.csv").read_bytes()
