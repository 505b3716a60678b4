"""roar's git hooks (installed beside hooks already there, and through the pre-commit
framework) and the post-run hook, on real repositories and remotes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import git, roar, roar_json

PRODUCE = "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read() * 2)\n"


def setup_pipeline(repo: Path) -> None:
    (repo / "double.py").write_text(PRODUCE)
    (repo / "in.txt").write_text("abc\n")
    git(repo, "add", "double.py", "in.txt")
    git(repo, "commit", "-q", "-m", "pipeline")
    roar(repo, "run", "-q", "python", "double.py", "in.txt", "out.txt")


def commit(repo: Path, *files: str) -> subprocess.CompletedProcess[str]:
    git(repo, "add", *files)
    return subprocess.run(
        ["git", "commit", "-m", "results"], cwd=repo, capture_output=True, text=True
    )


def own_hook(path: Path, log: Path, reads_stdin: bool = False) -> None:
    """A hook the user had before roar: it logs that it ran (and what git fed it)."""
    body = f'cat >> "{log}"\n' if reads_stdin else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "own $(basename "$0") $*" >> "{log}"\n{body}exit 0\n')
    path.chmod(0o755)


def test_hooks_chain_to_the_hooks_already_there(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    log = tmp_path / "own.log"
    hooks = git_repo / ".git" / "hooks"
    setup_pipeline(git_repo)
    own_hook(hooks / "pre-commit", log)
    own_hook(hooks / "pre-push", log, reads_stdin=True)
    git(git_repo, "remote", "add", "origin", str(bare_remote))

    out = roar(git_repo, "hooks", "install").stdout
    assert "kept as pre-commit.roar-chained" in out and "kept as pre-push.roar-chained" in out
    status = roar_json(git_repo, "hooks", "status")
    assert [(h["name"], h["installed"], h["chained"]) for h in status["hooks"]] == [
        ("pre-commit", True, True),
        ("pre-push", True, True),
    ]
    roar(git_repo, "hooks", "install")  # again: idempotent, the chained hooks stay
    assert (hooks / "pre-commit.roar-chained").read_text().startswith("#!/bin/sh\necho")

    (git_repo / "out.txt").write_text("edited by hand\n")
    done = commit(git_repo, "out.txt")
    assert done.returncode == 0  # warn is the default
    assert "out.txt holds bytes no recorded run produced" in done.stderr and "@1" in done.stderr
    assert "own pre-commit.roar-chained" in log.read_text()  # it ran, from its new name

    push = subprocess.run(
        ["git", "push", "origin", "main"], cwd=git_repo, capture_output=True, text=True
    )
    assert push.returncode == 0, push.stderr
    text = log.read_text()
    assert "own pre-push.roar-chained origin" in text
    assert "refs/heads/main" in text  # its stdin, intact
    refs = git(bare_remote, "for-each-ref", "--format=%(refname)")
    assert "refs/roar/ledger" in refs and "refs/heads/main" in refs  # lineage went along
    assert "lineage pushed to origin" in push.stderr

    roar(git_repo, "hooks", "uninstall")
    assert "roar-managed" not in (hooks / "pre-commit").read_text()
    assert not (hooks / "pre-commit.roar-chained").exists()


def test_a_failing_own_hook_still_blocks(git_repo: Path, tmp_path: Path) -> None:
    hook = git_repo / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\necho no >&2\nexit 3\n")
    hook.chmod(0o755)
    roar(git_repo, "hooks", "install", "--pre-commit")
    (git_repo / "x.txt").write_text("x\n")
    assert commit(git_repo, "x.txt").returncode != 0


def test_hooks_install_where_core_hookspath_points(git_repo: Path, tmp_path: Path) -> None:
    shared = tmp_path / "team-hooks"
    git(git_repo, "config", "core.hooksPath", str(shared))
    log = tmp_path / "own.log"
    own_hook(shared / "pre-commit", log)
    roar(git_repo, "hooks", "install", "--pre-commit")
    assert (shared / "pre-commit.roar-chained").exists()
    assert not (git_repo / ".git" / "hooks" / "pre-commit").exists()
    (git_repo / "y.txt").write_text("y\n")
    assert commit(git_repo, "y.txt").returncode == 0
    assert "own pre-commit" in log.read_text()


def test_pre_commit_fails_per_setting_and_passes_produced_bytes(git_repo: Path) -> None:
    setup_pipeline(git_repo)
    roar(git_repo, "hooks", "install", "--pre-commit")
    roar(git_repo, "config", "set", "hooks.preCommit", "fail")
    ok = commit(git_repo, "out.txt")  # bytes the recorded run produced
    assert ok.returncode == 0 and "roar" not in ok.stderr

    (git_repo / "out.txt").write_text("tampered\n")
    git(git_repo, "add", "out.txt")
    (git_repo / "out.txt").write_text("abc\nabc\n")  # the work tree differs: the index counts
    bad = commit(git_repo, "double.py")
    assert bad.returncode != 0 and "roar run @1" in bad.stderr


def test_pre_commit_flags_outputs_of_a_stale_step(git_repo: Path) -> None:
    setup_pipeline(git_repo)
    roar(git_repo, "run", "-q", "python", "double.py", "out.txt", "final.txt")  # @2 reads out.txt
    roar(git_repo, "run", "-q", "python", "double.py", "in.txt", "out.txt")  # @1 again, same
    (git_repo / "in.txt").write_text("new input\n")
    roar(git_repo, "run", "-q", "python", "double.py", "in.txt", "out.txt")  # @1: new out.txt
    roar(git_repo, "hooks", "install", "--pre-commit")
    done = commit(git_repo, "final.txt")
    assert "final.txt comes from stale step @2" in done.stderr


def test_post_run_hook_sees_the_run_and_never_changes_it(git_repo: Path, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    (git_repo / "double.py").write_text(PRODUCE)
    (git_repo / "in.txt").write_text("abc\n")
    roar(
        git_repo,
        "config",
        "set",
        "hooks.postRun",
        f'printf "%s|%s|%s|%s|%s" "$ROAR_RUN_ID" "$ROAR_RUN_STATUS" "$ROAR_RUN_STEP" '
        f'"$ROAR_RUN_EXIT_CODE" "$ROAR_RUN_OUTPUTS" > {seen}',
    )
    run = json.loads(
        roar(git_repo, "run", "--json", "python", "double.py", "in.txt", "out.txt").stdout
    )
    rid, status, step, code, outputs = seen.read_text().split("|")
    assert (rid, status, step, code, outputs) == (run["id"], "ok", "@1", "0", "out.txt")

    roar(git_repo, "config", "set", "hooks.postRun", "echo failing >&2; exit 7")
    failed = roar(git_repo, "run", "python", "double.py", "in.txt", "out2.txt")
    assert failed.returncode == 0
    assert "post-run hook" in failed.stderr and "exited 7" in failed.stderr
    assert len(roar_json(git_repo, "log")) == 2

    # A failing command keeps its own status, hook or not.
    bad = roar(git_repo, "run", "python", "-c", "raise SystemExit(3)", rc=None)
    assert bad.returncode == 3


def test_install_post_run_sets_the_default_command(git_repo: Path) -> None:
    roar(git_repo, "hooks", "install", "--post-run")
    assert roar(git_repo, "config", "get", "hooks.postRun").stdout.strip() == "roar push --quiet"
    assert roar_json(git_repo, "hooks", "status")["post_run"]["command"] == "roar push --quiet"
    roar(git_repo, "hooks", "uninstall", "--post-run")
    assert roar_json(git_repo, "hooks", "status")["post_run"]["command"] == ""


def _framework_config(repo: Path) -> None:
    """The hooks of this checkout's .pre-commit-hooks.yaml as a local repository of the
    pre-commit framework (language system: the `roar` installed here, no network)."""
    import yaml

    manifest = Path(__file__).resolve().parents[1] / ".pre-commit-hooks.yaml"
    hooks = yaml.safe_load(manifest.read_text())
    for h in hooks:
        h["language"] = "system"
    config = {"repos": [{"repo": "local", "hooks": hooks}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    git(repo, "add", ".pre-commit-config.yaml")


@pytest.mark.skipif(
    not (Path(sys.executable).parent / "pre-commit").exists(), reason="pre-commit is not installed"
)
def test_through_the_pre_commit_framework(git_repo: Path, bare_remote: Path) -> None:
    setup_pipeline(git_repo)
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    _framework_config(git_repo)
    roar(git_repo, "config", "set", "hooks.preCommit", "fail")
    env = dict(os.environ, PRE_COMMIT_HOME=str(git_repo.parent / "pre-commit-home"))

    def framework(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pre-commit", *args], cwd=git_repo, capture_output=True, text=True, env=env
        )

    git(git_repo, "add", "out.txt")
    assert framework("run").returncode == 0
    (git_repo / "out.txt").write_text("edited\n")
    git(git_repo, "add", "out.txt")
    failed = framework("run")
    assert failed.returncode != 0 and "roar run @1" in failed.stdout

    (git_repo / "out.txt").write_text("abc\nabc\n")
    git(git_repo, "add", "out.txt")
    assert framework("install", "-t", "pre-commit", "-t", "pre-push").returncode == 0
    git(git_repo, "commit", "-q", "-m", "results")
    push = subprocess.run(
        ["git", "push", "origin", "main"], cwd=git_repo, capture_output=True, text=True, env=env
    )
    assert push.returncode == 0, push.stdout + push.stderr
    assert "refs/roar/ledger" in git(bare_remote, "for-each-ref", "--format=%(refname)")


def test_pre_push_store_failure_warns_unless_strict(
    git_repo: Path, bare_remote: Path, tmp_path: Path
) -> None:
    setup_pipeline(git_repo)
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folders would go\n")
    roar(git_repo, "config", "set", "store.url", f"file://{blocker}/store")
    roar(git_repo, "hooks", "install", "--pre-push")

    def push() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "push", "origin", "main"], cwd=git_repo, capture_output=True, text=True
        )

    warned = push()
    assert warned.returncode == 0 and "not uploaded" in warned.stderr
    assert "refs/roar/ledger" in git(bare_remote, "for-each-ref", "--format=%(refname)")

    roar(git_repo, "config", "set", "hooks.strict", "true")
    git(git_repo, "commit", "-q", "--allow-empty", "-m", "more")
    blocked = push()
    assert blocked.returncode != 0
    assert git(bare_remote, "rev-parse", "main") != git(git_repo, "rev-parse", "main")


def test_pre_push_to_a_bare_url_pushes_lineage_there(git_repo: Path, tmp_path: Path) -> None:
    setup_pipeline(git_repo)
    bare = tmp_path / "elsewhere.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    roar(git_repo, "hooks", "install", "--pre-push")
    push = subprocess.run(
        ["git", "push", str(bare), "main"], cwd=git_repo, capture_output=True, text=True
    )
    assert push.returncode == 0, push.stderr
    assert "lineage pushed" in push.stderr
    refs = git(bare, "for-each-ref", "--format=%(refname)").split()
    assert "refs/roar/ledger" in refs and "refs/heads/main" in refs


def test_pre_commit_keeps_what_it_read_and_reads_only_runs_added_since(git_repo: Path) -> None:
    from roargit.hooks import OUTPUTS_FILE, current_steps, session_outputs
    from roargit.ledger import Ledger
    from roargit.repo import find_repo
    from roargit.session import load_view, read_state

    setup_pipeline(git_repo)
    roar(git_repo, "run", "-q", "python", "double.py", "out.txt", "final.txt")  # @2 reads out.txt
    roar(git_repo, "hooks", "install", "--pre-commit")
    roar(git_repo, "config", "set", "hooks.preCommit", "fail")
    assert commit(git_repo, "out.txt", "final.txt").returncode == 0
    kept = git_repo / ".git" / "roar" / OUTPUTS_FILE
    first = json.loads(kept.read_text())
    assert len(first["runs"]) == 2

    # @1 again on a new input: its new record is read, the two others come from the file.
    (git_repo / "in.txt").write_text("new input\n")
    roar(git_repo, "run", "-q", "python", "double.py", "in.txt", "out.txt")
    (git_repo / "final.txt").write_text("by hand\n")
    done = commit(git_repo, "final.txt")
    assert done.returncode != 0 and "final.txt holds bytes no recorded run" in done.stderr
    second = json.loads(kept.read_text())
    assert len(second["runs"]) == 3 and second["tree"] != first["tree"]
    git(git_repo, "checkout", "-q", "HEAD", "--", "final.txt")  # the bytes @2 wrote
    stale = roar(git_repo, "hooks", "run", "pre-commit", "final.txt", rc=None)
    assert stale.returncode != 0 and "final.txt comes from stale step @2" in stale.stderr

    # The same steps and states as the session's own view.
    paths = find_repo(git_repo)
    state = read_state(paths.roar_dir)
    assert state.session_id is not None
    ledger = Ledger(paths, fast_start=True)
    try:
        view = load_view(ledger, state.session_id, state.popped)
        mine = current_steps(session_outputs(paths, ledger, state.session_id), state.popped)
    finally:
        ledger.close()
    assert [(s, st) for s, st, _r in mine] == [(s.label, s.state) for s in view.steps]
    assert [r.outputs for _s, _st, r in mine] == [
        tuple(f._replace(size=0) for f in s.run.outputs) for s in view.steps
    ]

    # A damaged file is read as none and written again from the ledger.
    kept.write_text("{not json")
    again = roar(git_repo, "hooks", "run", "pre-commit", "final.txt", rc=None)
    assert "final.txt comes from stale step @2" in again.stderr
    assert len(json.loads(kept.read_text())["runs"]) == 3


def test_pre_commit_reads_a_touched_output_from_the_index(git_repo: Path) -> None:
    setup_pipeline(git_repo)
    roar(git_repo, "config", "set", "hooks.preCommit", "fail")
    git(git_repo, "add", "out.txt")
    os.utime(git_repo / "out.txt", (2_000_000_000, 2_000_000_000))  # stat differs, bytes same
    assert roar(git_repo, "hooks", "run", "pre-commit", rc=None).returncode == 0
    (git_repo / "out.txt").write_text("edited after git add\n")  # the staged bytes count
    assert roar(git_repo, "hooks", "run", "pre-commit", rc=None).returncode == 0
