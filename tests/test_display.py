"""Recorded text is printed inert: control characters escaped, commands quoted and whole."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import roar

from roargit.cli.output import show_argv, show_text, show_word, wrap_argv

# A carriage return sends the cursor back: printed raw, the line reads `python train.py`.
TRICK = ["sh", "-c", "echo x > f #\r   python train.py"]


def test_show_text_escapes_control_and_bidi_characters() -> None:
    assert show_text("model.pkl") == "model.pkl"
    assert show_text("a\rb") == "a\\rb"
    assert show_text("\x1b]0;title\x07\x1b[2J") == "\\x1b]0;title\\x07\\x1b[2J"
    assert show_text("x\u202ey") == "x\\u202ey"
    assert show_text("\x9b31m") == "\\x9b31m"


def test_show_argv_quotes_every_word_and_cannot_be_tricked() -> None:
    assert show_argv(["python", "train.py", "--lr", "0.1"]) == "python train.py --lr 0.1"
    assert show_argv(["echo", "a b", "it's", ""]) == "echo 'a b' 'it'\"'\"'s' ''"
    shown = show_argv(TRICK)
    assert shown == "sh -c $'echo x > f #\\r   python train.py'"
    assert "\r" not in shown and "\x1b" not in shown
    assert show_word("back\\slash\x1b") == "$'back\\\\slash\\x1b'"


def test_show_argv_is_the_argv_again_for_bash() -> None:
    argv = ["printf", "%s|", "a b", "it's", "\r\n\t", "\x1b[31m", "x\\y", "\u202e", ""]
    out = subprocess.run(
        ["bash", "-c", show_argv(argv)], capture_output=True, check=True
    ).stdout.decode()
    assert out == "|".join(argv[2:]) + "|"


def test_wrap_argv_keeps_every_word_and_breaks_between_words() -> None:
    argv = ["python", "train.py", *[f"--option-{i}=value-{i}" for i in range(30)]]
    lines = wrap_argv("   @2  run   ", argv, width=60)
    assert len(lines) > 3
    assert lines[0].startswith("   @2  run   python train.py")
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert all(line.startswith(" " * 15) for line in lines[1:])
    joined = " ".join(line.removesuffix(" \\").strip() for line in lines)
    assert joined == "@2  run   " + show_argv(argv)
    assert all(len(line) <= 60 for line in lines)
    # A word wider than a line is kept whole, on a line of its own.
    long = "x" * 200
    lines = wrap_argv("$ ", ["cat", long, "y"], width=40)
    assert lines == ["$ cat \\", "    " + long + " \\", "    y"]


@pytest.fixture
def tricked(git_repo: Path) -> tuple[Path, str]:
    """A repository with a recorded run whose argv hides behind a carriage return, plus a
    long one."""
    roar(git_repo, "init")
    roar(git_repo, "run", "-q", *TRICK)
    words = [f"--setting-number-{i}=some-long-value-{i}" for i in range(12)]
    roar(git_repo, "run", "-q", "sh", "-c", "echo done > h", "ignored", *words)
    return git_repo, " ".join(words)


def raw_free(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, text


def test_show_log_dag_and_plan_print_the_trick_escaped(tricked: tuple[Path, str]) -> None:
    repo, _ = tricked
    escaped = "sh -c $'echo x > f #\\r   python train.py'"
    for args in (["show", "f"], ["show", "@1"], ["log"], ["dag"], ["reproduce", "f", "--plan"]):
        out = roar(repo, *args).stdout
        raw_free(out)
        assert escaped in out, (args, out)
    dot = roar(repo, "dag", "--dot").stdout
    raw_free(dot)
    assert "\\\\r" in dot  # shown as typed, not a DOT line break
    raw_free(roar(repo, "dag", "--mermaid").stdout)
    raw_free(roar(repo, "lineage", "f").stdout)
    # JSON stays the data: json escapes the carriage return itself.
    assert '"echo x > f #\\r   python train.py"' in roar(repo, "log", "--json").stdout


def test_the_plan_shows_long_commands_whole(tricked: tuple[Path, str]) -> None:
    repo, words = tricked
    out = roar(repo, "reproduce", "h", "--plan", env={"COLUMNS": "80"}).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if " run " in line and "echo done" in line)
    block = []
    for line in lines[start:]:
        block.append(line.removesuffix(" \\").strip())
        if not line.endswith(" \\"):
            break
    assert " ".join(block).endswith(words)
    assert all(len(line) <= 80 for line in lines[start : start + len(block)])


def test_the_step_by_step_prompt_shows_the_whole_command(tricked: tuple[Path, str]) -> None:
    repo, _ = tricked
    pid, fd = pty.fork()
    if pid == 0:  # the child: roar on a terminal
        os.chdir(repo)
        os.environ["COLUMNS"] = "200"
        os.execvp("roar", ["roar", "reproduce", "f", "--step-by-step"])
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    os.write(fd, b"n\n")
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    text = seen.decode()
    prompt = text[: text.index("[y/N]")]
    assert "@1: sh -c $'echo x > f #\\r   python train.py'\r\nrun @1?" in prompt
    raw_free(prompt.replace("\r\n", "\n"))


def test_diff_and_status_print_recorded_text_escaped(git_repo: Path) -> None:
    roar(git_repo, "init")
    script = 'echo "$1" > o'
    roar(git_repo, "run", "-q", "sh", "-c", script, "sh", "v1\x1b[31m")
    first = roar(git_repo, "show", "o", "--json").stdout
    roar(git_repo, "run", "-q", "sh", "-c", script, "sh", "v2\r\u202e")
    old = json.loads(first)["hash"]
    proc = roar(git_repo, "diff", old[:12], "o", rc=None)
    assert proc.returncode == 1, proc.stderr
    raw_free(proc.stdout)
    assert "\u202e" not in proc.stdout
    assert "v1\\x1b[31m → v2\\r\\u202e" in proc.stdout
    raw_free(roar(git_repo, "status").stdout)
