from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_helpers import git, roar

from roargit import __version__
from roargit.cli import build_parser, main


def test_init_from_a_subdirectory_is_idempotent_and_leaves_the_work_tree_alone(
    git_repo: Path,
) -> None:
    sub = git_repo / "src" / "deep"
    sub.mkdir(parents=True)
    first = roar(sub, "init", "--json", rc=None)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["created"] is True
    again = roar(sub, "init", "--json", rc=None)
    assert json.loads(again.stdout)["created"] is False
    assert (git_repo / ".git" / "roar" / "clone-id").is_file()
    assert git(git_repo, "status", "--porcelain", "--ignored") == ""


def test_init_outside_a_repo_says_so_in_one_line(tmp_path: Path) -> None:
    result = roar(tmp_path, "init", rc=1)
    assert result.stderr.count("\n") == 1
    assert "not a git repository" in result.stderr
    assert result.stderr.endswith("; run `git init` first\n")


def test_a_mistyped_command_names_the_closest_ones(git_repo: Path) -> None:
    typo = roar(git_repo, "sho", "model.pkl", rc=2)
    assert typo.stderr == "roar: 'sho' is not a roar command; did you mean `roar show`?\n"
    assert "`roar reproduce`" in roar(git_repo, "reproduec", rc=2).stderr
    other = roar(git_repo, "xyzzy", rc=2)
    assert (
        other.stderr == "roar: 'xyzzy' is not a roar command; see `roar --help` for the commands\n"
    )
    assert roar(git_repo, "-C", str(git_repo / "nowhere"), "log", rc=1).stderr.startswith(
        "roar: -C "
    )


def test_init_makes_git_fetch_bring_ledgers(git_repo: Path, bare_remote: Path) -> None:
    git(git_repo, "remote", "add", "origin", str(bare_remote))
    result = roar(git_repo, "init", rc=None)
    assert "git fetch origin" in result.stdout
    specs = git(git_repo, "config", "--get-all", "remote.origin.fetch").splitlines()
    assert "+refs/roar/*:refs/roar/remotes/origin/*" in specs
    assert "^refs/roar/remotes/*" in specs  # never other clones' copies
    roar(git_repo, "init", rc=None)
    assert len(git(git_repo, "config", "--get-all", "remote.origin.fetch").splitlines()) == 4
    git(git_repo, "fetch", "-q", "origin")  # a remote nobody pushed lineage to: no error


def test_config_layers_git_over_team_file_over_defaults(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(git_repo)
    assert main(["config", "set", "--team", "store.url", "file:///team"]) == 0
    assert "url = file:///team" in (git_repo / ".roarconfig").read_text()
    assert main(["config", "get", "--json", "store.url"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "key": "roar.store.url",
        "value": "file:///team",
        "origin": "team",
    }
    assert main(["config", "set", "roar.store.url", "file:///mine"]) == 0
    main(["config", "get", "store.url"])
    assert capsys.readouterr().out == "file:///mine\n"
    assert main(["config", "unset", "store.url"]) == 0
    main(["config", "list", "--json"])
    listed = {v["key"]: v for v in json.loads(capsys.readouterr().out)}
    assert listed["roar.store.url"]["origin"] == "team"
    assert listed["roar.trace.mode"] == {
        "key": "roar.trace.mode",
        "value": "auto",
        "origin": "default",
    }
    assert main(["config", "unset", "store.url"]) == 1
    assert "not set there" in capsys.readouterr().err
    assert main(["config", "get", "never.set"]) == 1


def test_bad_config_key_is_one_line(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(git_repo)
    assert main(["config", "set", "roar..x", "1"]) == 1
    assert capsys.readouterr().err.startswith("roar: 'roar..x' is not a valid key")


def test_version_and_git_roar_alias(git_repo: Path) -> None:
    assert roar(git_repo, "--version", rc=None).stdout.strip() == f"roar {__version__}"
    alias = subprocess.run(
        ["git", "roar", "--version"], cwd=git_repo, capture_output=True, text=True
    )
    assert alias.stdout.strip() == f"roar {__version__}"
    module = subprocess.run(
        ["python", "-m", "roargit", "--version"], capture_output=True, text=True
    )
    assert module.stdout.strip() == f"roar {__version__}"


def test_every_command_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = list(sub.choices or {})
    assert {"init", "config"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"roar {name}" in out, name


def test_unexpected_errors_leave_a_log(git_repo: Path) -> None:
    (git_repo / ".git" / "roar").mkdir()
    (git_repo / ".git" / "roar" / "clone-id").mkdir()  # a folder where a file belongs
    result = roar(git_repo, "init", rc=2, crash_ok=True)
    assert result.stderr.startswith("roar: internal error:")
    log = Path(result.stderr.rsplit("details in ", 1)[1].strip())
    assert "Traceback" in log.read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "true"],
        ["run", "-q", "python", "train.py", "-q", "--json"],
        ["run", "--json", "-q", "--", "-weird", "x"],
        ["run", "--", "echo"],
        ["run", "--quiet", "make", "all"],
        ["build", "pip", "install", "-r", "requirements.txt"],
        ["run", "@2", "--lr=0.001"],
        ["run", "-h"],
        ["run", "--jsn", "true"],
        ["run", "-qq", "true"],
        ["run"],
        ["run", "-q"],
        ["build", "--help"],
    ],
)
def test_quick_record_args_agree_with_argparse(argv: list[str]) -> None:
    """`roar run`'s argparse-free parse gives what argparse gives, or leaves it to argparse."""
    from roargit.cli import build_parser, quick_record_args

    quick = quick_record_args(argv)
    if quick is None:
        # Left to argparse: help, a flag `run` does not take, or no command at all.
        assert argv in (["run", "-h"], ["run", "--jsn", "true"], ["run", "-qq", "true"],
                        ["run"], ["run", "-q"], ["build", "--help"])  # fmt: skip
        return
    full = build_parser(argv[0]).parse_args(argv)
    assert (quick.command, quick.quiet, quick.json, quick.chdir) == (
        full.command,
        full.quiet,
        full.json,
        full.chdir,
    )
    assert quick.func is full.func
