"""roar push / roar fetch with real bare remotes, file:// and moto s3:// team stores."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import digest, git, roar, roar_json
from conftest import Recorded
from fixtures_s3 import s3_bucket_url, s3_endpoint  # noqa: F401
from pipeline_helpers import run_pipeline, write_pipeline

from roargit.blobstore import BlobStore
from roargit.push_blobs import referenced_blobs
from roargit.push_plan import Snapshot, sensitive
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId
from roargit.redact import is_secret_path


@pytest.mark.parametrize(
    ("path", "secret"),
    [
        (".env", True),
        ("config/.env.local", True),
        (".netrc", True),
        ("keys/server.pem", True),
        ("aws_credentials.yaml", True),
        ("my-secrets.json", True),
        ("id_rsa", True),
        ("home/.ssh/id_ed25519.pub", True),
        ("id_utils.py", False),
        ("train.py", False),
        ("data/environment.csv", False),
        (".envrc.py", False),
    ],
)
def test_secret_looking_file_names(path: str, secret: bool) -> None:
    assert is_secret_path(path) is secret


def _run(inputs: tuple[FileRef, ...], outputs: tuple[FileRef, ...], **env: Any) -> RunRecord:
    return RunRecord(
        argv=("python", "x.py", "--token", "<redacted>"),
        cwd=".",
        started_at=1,
        ended_at=2,
        exit_code=0,
        status="ok",
        inputs=inputs,
        outputs=outputs,
        code=CodeState(commit=None, branch="main", dirty=True, tree="ab" * 20),
        session=SessionId("cd" * 32),
        step=1,
        environment=env,
    )


def test_sensitive_flags_and_referenced_blobs_of_records() -> None:
    h = [ArtifactId(f"{i:064x}") for i in range(4)]
    rec = _run(
        (FileRef(".env", h[0], 10), FileRef("/mnt/data/raw.csv", h[1], 20)),
        (FileRef("out/", h[2], 30, "dir"),),
        hostname="box",
        user="ada",
        env_vars={"LANG": "C", "API_KEY": "<redacted>"},
    )
    snap = Snapshot("ab" * 20, None, [("helper.py", 5), ("db_secret.yaml", 3)], [])
    flags = {(f.kind, f.detail.split()[0]) for f in sensitive([("r1", rec)], [snap])}
    assert {
        ("secret-file", ".env"),
        ("secret-file", "db_secret.yaml"),
        ("untracked-code", "helper.py"),
        ("env", "LANG=C"),
        ("hostname", "box"),
        ("user", "ada"),
        ("path", "/mnt/data/raw.csv"),
        ("redacted", "a"),
    } <= flags
    assert not any(d.startswith("API_KEY") for _k, d in flags)  # redacted: nothing to show

    from roargit.folders import ManifestEntry, encode_manifest

    digest, manifest = encode_manifest([ManifestEntry("a.bin", h[3], 7)])
    rec = rec._replace(outputs=(FileRef("out/", ArtifactId(digest), 7, "dir"),))
    found = referenced_blobs([("r1", rec)], {digest: manifest}.get)
    assert found[h[3]] == (7, "out/a.bin") and found[h[0]] == (10, ".env")


def run_ids(repo: Path) -> set[str]:
    return {r["id"] for r in roar_json(repo, "log")}


def remote_refs(remote: Path) -> dict[str, str]:
    out = git(remote, "for-each-ref", "--format=%(refname) %(objectname)")
    return {name: oid for name, oid in (line.split() for line in out.splitlines() if line)}


def make_clone(remote: Path, where: Path) -> Path:
    git(where.parent, "clone", "-q", str(remote), str(where))
    return where


def test_push_and_fetch_with_a_remote_added_after_init(
    three_steps: Recorded, bare_remote: Path, tmp_path: Path
) -> None:
    git_repo = three_steps.repo
    git(git_repo, "remote", "add", "origin", str(bare_remote))  # after init: no refspec yet
    git(git_repo, "push", "-q", "origin", "main")
    branches_before = remote_refs(bare_remote)

    out = roar_json(git_repo, "push")
    assert out["pushed"] and out["remote"] == "origin" and len(out["runs"]) == 3
    assert out["store"] is None  # no team store configured: bytes stay here
    refs = remote_refs(bare_remote)
    assert "refs/roar/ledger" in refs and "refs/roar/commits" in refs
    assert not [r for r in refs if r.startswith("refs/roar/remotes/")]
    assert {r: refs[r] for r in branches_before} == branches_before
    # What a plain `git push` sends is unchanged: no push refspec was configured.
    proc = subprocess.run(
        ["git", "config", "--get-all", "remote.origin.push"], cwd=git_repo, capture_output=True
    )
    assert proc.returncode == 1
    # The tracking copy moved with the push, so the next push has nothing to send.
    again = roar_json(git_repo, "push")
    assert again["up_to_date"] and again["runs"] == []

    other = make_clone(bare_remote, tmp_path / "other")
    fetched = roar_json(other, "fetch")
    assert fetched["runs_added"] == 3 and fetched["refspecs_added"]
    assert run_ids(other) == run_ids(git_repo)
    git(other, "fetch", "-q")  # plain git fetch works with the refspecs in place
    assert roar_json(other, "fetch")["runs_added"] == 0


def test_push_to_a_named_remote_and_unknown_remote(
    three_steps: Recorded, bare_remote: Path
) -> None:
    git_repo = three_steps.repo
    bad = roar(git_repo, "push", "nowhere", rc=None)
    assert bad.returncode == 1 and "no git remote named 'nowhere'" in bad.stderr
    git(git_repo, "remote", "add", "team", str(bare_remote))
    assert roar_json(git_repo, "push", "team")["pushed"]
    assert "refs/roar/ledger" in remote_refs(bare_remote)


def test_push_to_a_url_that_no_remote_names(
    three_steps: Recorded, bare_remote: Path, tmp_path: Path
) -> None:
    git_repo = three_steps.repo
    url = str(bare_remote)
    out = roar_json(git_repo, "push", url)
    assert out["pushed"] and out["remote"] == url and len(out["runs"]) == 3
    refs = remote_refs(bare_remote)
    assert "refs/roar/ledger" in refs and "refs/roar/commits" in refs
    assert not [r for r in roar_refs_here(git_repo) if r.startswith("refs/roar/remotes/")]
    # No tracking refs: what the URL holds is asked of it, so the next push sends nothing.
    again = roar_json(git_repo, "push", url)
    assert again["up_to_date"] and again["runs"] == []

    # Another clone pushed first: a URL cannot be fetched into and merged, so it says how.
    other = make_clone(bare_remote, tmp_path / "other")
    roar(other, "fetch")
    (other / "x.txt").write_text("x\n")
    roar(other, "run", "-q", "cp", "x.txt", "y.txt")
    assert roar_json(other, "push")["pushed"]
    (git_repo / "z.txt").write_text("z\n")
    roar(git_repo, "run", "-q", "cp", "z.txt", "w.txt")
    rejected = roar(git_repo, "push", url, rc=None)
    assert rejected.returncode == 1 and "git remote add" in rejected.stderr


def test_push_to_the_url_of_a_named_remote_uses_that_remote(
    three_steps: Recorded, bare_remote: Path
) -> None:
    git_repo = three_steps.repo
    git(git_repo, "remote", "add", "team", str(bare_remote))
    out = roar_json(git_repo, "push", str(bare_remote))
    assert out["pushed"] and out["remote"] == "team"
    assert "refs/roar/remotes/team/ledger" in roar_refs_here(git_repo)


def roar_refs_here(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)", "refs/roar/").split()


def test_push_uploads_what_runs_queued_for_the_store_first(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    write_pipeline(git_repo)
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    blocker = tmp_path / "store-parent"
    blocker.write_text("a file where the store's folder would go\n")
    url = f"file://{blocker}/store"
    roar(git_repo, "config", "set", "store.url", url)
    model = run_pipeline(git_repo)  # the store fails: the runs queue their bytes
    queue = git_repo / ".git" / "roar" / "uploads" / "queue"
    assert sorted(queue.iterdir())

    blocker.unlink()  # the store works again
    out = roar_json(git_repo, "push")
    assert any("queued blob(s)" in w for w in out["warnings"]), out["warnings"]
    assert not sorted(queue.iterdir())
    assert BlobStore(url).has(model)
    assert out["store"]["failed"] == [] and out["store"]["unavailable"] == []


def test_a_push_that_loses_the_race_merges_and_retries(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    write_pipeline(git_repo)
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    git(git_repo, "push", "-q", "origin", "main")
    a = make_clone(bare_remote, tmp_path / "a")
    b = make_clone(bare_remote, tmp_path / "b")
    for clone, name in ((a, "a"), (b, "b")):
        (clone / "raw.csv").write_text(f"{name},1\n")
        roar(clone, "run", "-q", "python", "prep.py", "raw.csv", f"{name}.csv")
    first = roar_json(a, "push")
    assert first["attempts"] == 1
    second = roar_json(b, "push")  # rejected (fetch first): fetch, merge, push again
    assert second["pushed"] and second["attempts"] == 2
    roar(a, "fetch")
    assert run_ids(a) == run_ids(b) and len(run_ids(a)) == 2


def test_blobs_recorded_before_the_store_was_set_go_with_the_next_push(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    write_pipeline(git_repo)
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    model = run_pipeline(git_repo)
    git(git_repo, "push", "-q", "origin", "main")
    assert roar_json(git_repo, "push")["store"] is None  # lineage went, bytes stayed

    store = tmp_path / "team-store"
    git(git_repo, "config", "--file", ".roarconfig", "roar.store.url", f"file://{store}")
    git(git_repo, "add", ".roarconfig")
    git(git_repo, "commit", "-q", "-m", "team store")
    git(git_repo, "push", "-q", "origin", "main")
    dry = roar_json(git_repo, "push", "--dry-run")
    assert dry["runs"] == []  # the remote has every record already
    going = {b["path"] for b in dry["store"]["to_upload"]}
    assert {"raw.csv", "clean.csv", "features.csv", "model.pkl"} <= going
    assert not store.exists()  # a dry run sends nothing

    out = roar_json(git_repo, "push")
    assert out["store"]["uploaded"] >= 4 and out["store"]["failed"] == []
    assert BlobStore(f"file://{store}").has(model)
    assert BlobStore(f"file://{store}").has(digest(git_repo / "raw.csv"))  # source data too
    assert roar_json(git_repo, "push")["store"]["uploaded"] == 0

    clone = make_clone(bare_remote, tmp_path / "fresh")
    roar(clone, "fetch")
    rep = roar_json(clone, "reproduce", model[:12], "--run", "-y", "--no-reuse")
    assert rep["identical"], rep


def test_reproduce_in_a_fresh_clone_after_the_branch_was_deleted_and_force_pushed_away(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    store = tmp_path / "team-store"
    write_pipeline(git_repo)
    git(git_repo, "config", "--file", ".roarconfig", "roar.store.url", f"file://{store}")
    git(git_repo, "add", ".roarconfig")
    git(git_repo, "commit", "-q", "-m", "team store")
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    git(git_repo, "push", "-q", "origin", "main")
    base = git(git_repo, "rev-parse", "HEAD")
    git(git_repo, "checkout", "-q", "-b", "experiment")
    train = git_repo / "train.py"
    train.write_text(train.read_text().replace("lr={lr}", "lr={lr}, exp=1"))
    git(git_repo, "commit", "-q", "-am", "experiment")
    experiment = git(git_repo, "rev-parse", "HEAD")
    (git_repo / "features.py").write_text(  # dirty: a change never committed anywhere
        (git_repo / "features.py").read_text().replace('",f"', '",g"')
    )
    model = run_pipeline(git_repo)
    git(git_repo, "push", "-q", "origin", "experiment")
    assert roar_json(git_repo, "push")["pushed"]
    # The branch goes: deleted on the remote, main force-pushed back, gone locally too.
    git(git_repo, "checkout", "-q", "-f", "main")
    git(git_repo, "push", "-q", "origin", ":experiment")
    git(git_repo, "push", "-q", "-f", "origin", f"{base}:main")
    git(git_repo, "branch", "-q", "-D", "experiment")

    clone = make_clone(bare_remote, tmp_path / "fresh")
    roar(clone, "fetch")
    assert git(clone, "cat-file", "-t", experiment) == "commit"  # kept by refs/roar/commits
    rep = roar_json(clone, "reproduce", model[:12], "--run", "-y", "--no-reuse")
    assert rep["identical"], rep


def test_dry_run_names_a_planted_env_file_and_never_uploads_it(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    store = tmp_path / "team-store"
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    (git_repo / "load.py").write_text(
        "import sys\nsecret = open('.env').read()\nopen('out.txt', 'w').write(str(len(secret)))\n"
    )
    git(git_repo, "add", "load.py")
    git(git_repo, "commit", "-q", "-m", "load")
    (git_repo / ".env").write_text("API_TOKEN=hunter2\n")
    (git_repo / "db_credentials.yaml").write_text("password: hunter2\n")  # source-named
    (git_repo / "helper.py").write_text("X = 1\n")  # untracked code
    roar(git_repo, "config", "set", "store.url", f"file://{store}")
    run = roar(git_repo, "run", "-q", "python", "load.py")
    assert "db_credentials.yaml" in run.stderr  # left out of the snapshot, said so

    dry = roar(git_repo, "push", "--dry-run")
    assert ".env" in dry.stdout and "secret-file" in dry.stdout
    assert "helper.py" in dry.stdout and "untracked-code" in dry.stdout
    info = roar_json(git_repo, "push", "--dry-run")
    snapshot_files = {f["path"] for s in info["snapshots"] for f in s["added"]}
    assert "helper.py" in snapshot_files and "db_credentials.yaml" not in snapshot_files
    kinds = {(f["kind"], f["detail"].split()[0]) for f in info["sensitive"]}
    assert ("secret-file", ".env") in kinds and ("untracked-code", "helper.py") in kinds
    assert {"hostname", "user"} <= {k for k, _d in kinds}
    assert [b["path"] for b in info["store"]["secret"]] == [".env"]

    roar(git_repo, "push")
    assert not BlobStore(f"file://{store}").has(digest(git_repo / ".env"))
    # Nothing under the pushed refs holds the file's bytes.
    blob = git(git_repo, "hash-object", "db_credentials.yaml")
    listing = git(bare_remote, "rev-list", "--objects", "--all")
    assert blob not in listing


def test_push_to_an_s3_store(
    git_repo: Path,
    bare_remote: Path,
    s3_bucket_url: tuple[str, dict[str, Any]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, options = s3_bucket_url
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    write_pipeline(git_repo)
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    model = run_pipeline(git_repo)  # recorded with no team store
    roar(git_repo, "config", "set", "store.url", url)
    out = roar_json(git_repo, "push")
    assert out["store"]["url"] == url and out["store"]["failed"] == []
    s3 = BlobStore(url, options)
    assert s3.has(model) and s3.has(digest(git_repo / "raw.csv"))


def _record_and_push(clone: Path, name: str) -> dict[str, Any]:
    for i in range(2):
        (clone / f"{name}-{i}.in").write_text(f"{name} {i}\n")
        roar(clone, "run", "-q", "python", "prep.py", f"{name}-{i}.in", f"{name}-{i}.out")
    proc = roar(clone, "push", "--json")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.slow
def test_eight_clones_recording_and_pushing_at_once_lose_nothing(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    write_pipeline(git_repo)
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    git(git_repo, "push", "-q", "origin", "main")
    clones = [make_clone(bare_remote, tmp_path / f"c{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(_record_and_push, clones, [f"c{i}" for i in range(8)]))
    assert all(r["pushed"] for r in results)
    everything: set[str] = set()
    for clone in clones:
        roar(clone, "fetch")
        everything |= run_ids(clone)
    assert len(everything) == 16
    assert sorted(r for r in remote_refs(bare_remote) if r.startswith("refs/roar/")) == [
        "refs/roar/commits",
        "refs/roar/ledger",
    ]
    for clone in clones:
        assert run_ids(clone) == everything


def test_share_settings_keep_host_and_user_names_out_of_records(
    git_repo: Path, bare_remote: Path
) -> None:
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    roar(git_repo, "config", "set", "share.hostname", "false")
    roar(git_repo, "config", "set", "share.user", "false")
    (git_repo / "a.txt").write_text("a\n")
    run = json.loads(roar(git_repo, "run", "--json", "cp", "a.txt", "b.txt").stdout)
    assert run["environment"]["hostname"] == "" and run["environment"]["user"] == ""
    kinds = {f["kind"] for f in roar_json(git_repo, "push", "--dry-run")["sensitive"]}
    assert "hostname" not in kinds and "user" not in kinds


def test_added_entries_read_through_cat_file_match_diff_tree(three_steps: Recorded) -> None:
    from roargit.ledger import Ledger
    from roargit.push_plan import added_entries, added_paths
    from roargit.repo import find_repo

    repo = three_steps.repo
    paths = find_repo(repo)
    first = git(repo, "rev-list", "--max-parents=0", "refs/roar/ledger").split()[0]
    (repo / "x.txt").write_text("x\n")
    roar(repo, "run", "-q", "cp", "x.txt", "y.txt")
    ledger = Ledger(paths, fast_start=True)
    try:
        tip = ledger.tip()
        assert tip is not None
        for base in (None, first, tip):
            tops = ("runs", "sessions", "no-such-folder")
            found = added_entries(ledger.reader, base, tip, tops)
            assert found is not None
            assert sorted(found) == sorted(added_paths(paths, base, tip, tops[:2]))
        assert added_entries(ledger.reader, tip, tip, ("runs",)) == []
    finally:
        ledger.close()
