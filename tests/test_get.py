"""`roar get`: an artifact's bytes from the blob stores, verified, or how to recreate them."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import digest, git, roar, roar_json


def test_get_brings_back_an_overwritten_output(git_repo: Path) -> None:
    (git_repo / "make.py").write_text(
        "import sys\nopen('model.pkl', 'w').write('model ' + sys.argv[1])\n"
    )
    git(git_repo, "add", "make.py")
    git(git_repo, "commit", "-q", "-m", "make")
    roar(git_repo, "run", "-q", "python", "make.py", "v1")
    first = digest(git_repo / "model.pkl")
    roar(git_repo, "run", "-q", "python", "make.py", "v2")  # overwrites model.pkl
    assert digest(git_repo / "model.pkl") != first

    got = roar_json(git_repo, "get", first[:12], "-o", "old/model.pkl")
    assert got["hash"] == first and got["from"].endswith("/.git/roar/blobs")
    assert (git_repo / "old" / "model.pkl").read_text() == "model v1"

    # The recorded path holds other bytes: never replaced without --force.
    refused = roar(git_repo, "get", first[:12], rc=None)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert (git_repo / "model.pkl").read_text() == "model v2"
    roar(git_repo, "get", first[:12], "--force")
    assert (git_repo / "model.pkl").read_text() == "model v1"
    assert "already holds" in roar(git_repo, "get", first[:12]).stdout

    # Deleted: back to where it was recorded.
    (git_repo / "model.pkl").unlink()
    roar(git_repo, "get", first[:12])
    assert digest(git_repo / "model.pkl") == first


def test_get_refuses_corrupt_blobs_and_says_how_to_reproduce(git_repo: Path) -> None:
    (git_repo / "make.py").write_text("open('out.txt', 'w').write('bytes')\n")
    roar(git_repo, "run", "-q", "python", "make.py")
    out = digest(git_repo / "out.txt")
    blob = git_repo / ".git" / "roar" / "blobs" / "blake3" / out[:2] / out[2:4] / out
    blob.chmod(0o644)
    blob.write_text("other")  # damaged in the store
    proc = roar(git_repo, "get", out[:12], "-o", "copy.txt", rc=None)
    assert proc.returncode == 1 and "corrupt" in proc.stderr
    assert not (git_repo / "copy.txt").exists()

    blob.unlink()
    proc = roar(git_repo, "get", out[:12], "-o", "copy.txt", rc=None)
    assert proc.returncode == 1
    assert f"roar reproduce {out[:12]} --run -y" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
