"""Reproducing in a fresh clone: lineage over `git fetch`, bytes from a shared blob store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import digest, git, roar, roar_json
from fixtures_s3 import s3_bucket_url, s3_endpoint  # noqa: F401
from pipeline_helpers import run_pipeline, write_pipeline

CONTINUE = """\
import sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
state = open(args["--from-checkpoint"]).read()
open(args["--output"], "w").write(state + "one more epoch\\n")
"""


def publish(repo: Path, remote: Path, store_url: str, env: dict[str, str] | None = None) -> str:
    """A teammate's clone: the pipeline with a team store in .roarconfig, pushed with its
    ledger. Returns model.pkl's hash."""
    write_pipeline(repo)
    git(repo, "config", "--file", ".roarconfig", "roar.store.url", store_url)
    (repo / "continue.py").write_text(CONTINUE)
    git(repo, "add", ".roarconfig", "continue.py")
    git(repo, "commit", "-q", "-m", "team store")
    git(repo, "remote", "add", "origin", str(remote))
    roar(repo, "init")
    model = run_pipeline(repo, env)
    git(repo, "push", "-q", "origin", "main", "refs/roar/ledger:refs/roar/ledger")
    return model


def fresh_clone(remote: Path, where: Path) -> Path:
    git(where.parent, "clone", "-q", str(remote), str(where))
    roar(where, "init")  # the fetch refspec for refs/roar/ledger
    git(where, "fetch", "-q")
    return where


def reproduce_in_clone(clone: Path, model: str, env: dict[str, str] | None = None) -> Any:
    plan = roar_json(clone, "reproduce", model[:12], "--no-reuse", env=env)
    raw = next(i for s in plan["steps"] for i in s["inputs"] if i["path"] == "raw.csv")
    assert raw["from"] == "store", raw  # source data: the team store has it
    return roar_json(clone, "reproduce", model[:12], "--run", "-y", "--no-reuse", env=env)


@pytest.mark.slow
def test_fresh_clone_with_file_store_identical_then_continue_from_checkpoint(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    store = tmp_path / "team-store"
    model = publish(git_repo, bare_remote, f"file://{store}")
    clone = fresh_clone(bare_remote, tmp_path / "elsewhere")
    assert not (clone / "raw.csv").exists()

    rep = reproduce_in_clone(clone, model)
    assert rep["identical"], rep
    assert [s["action"] for s in rep["steps"]] == ["ran"] * 3

    # Pick up the checkpoint and keep training: the new artifact's lineage walks back
    # through the checkpoint to the teammate's steps and source data.
    roar(clone, "reproduce", model[:12], "--run", "-y", "-o", "checkpoint.pt")
    assert digest(clone / "checkpoint.pt") == model
    roar(
        clone,
        "run",
        "-q",
        "python",
        "continue.py",
        "--from-checkpoint",
        "checkpoint.pt",
        "--output",
        "continued.pt",
    )
    lineage = roar_json(clone, "lineage", "continued.pt")
    producers = {r["id"] for r in lineage["runs"] if any(o["hash"] == model for o in r["outputs"])}
    teammate = roar_json(git_repo, "show", model[:12])["produced_by"]
    assert producers and set(roar_json(clone, "show", model[:12])["produced_by"]) >= set(teammate)
    commands = [r["argv"][1] for r in lineage["runs"]]
    assert commands[:1] == ["continue.py"] and "prep.py" in commands
    raw = digest(git_repo / "raw.csv")
    assert raw in {s["hash"] for s in lineage["sources"]}


@pytest.mark.slow
def test_fresh_clone_with_s3_store_identical(
    git_repo: Path,
    bare_remote: Path,
    tmp_path: Path,
    s3_bucket_url: tuple[str, dict[str, Any]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, options = s3_bucket_url
    # s3fs/botocore read the endpoint from the environment, as they would a real one's.
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    model = publish(git_repo, bare_remote, url)
    from roargit.blobstore import BlobStore

    assert BlobStore(url).has(model)
    clone = fresh_clone(bare_remote, tmp_path / "elsewhere")
    rep = reproduce_in_clone(clone, model)
    assert rep["identical"], rep
    get = roar_json(clone, "get", model[:12], "-o", "fetched.pkl")
    assert get["from"] == url and digest(clone / "fetched.pkl") == model
