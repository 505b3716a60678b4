"""Helpers for the registry tests (no tests here): a real `roar registry serve` on loopback,
and users, each with a home of their own (git config, credential store, roar's cache)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from cli_helpers import git, roar

from roargit.registry.server import create_token

CONFIG = """\
[registry]
\troot = repos
\tstore = {store}
\tlog = access.log
\tweb = https://roar.example.com
[scope "acme/vision"]
\tread = alice
\twrite = alice
[scope "acme/shared"]
\tread = alice bob
\twrite = alice bob
"""


class Server(NamedTuple):
    url: str
    folder: Path
    config: Path
    tokens: dict[str, str]
    proc: subprocess.Popen[str]

    @property
    def log(self) -> Path:
        return self.folder / "access.log"

    @property
    def repos(self) -> Path:
        return self.folder / "repos"

    @property
    def store(self) -> Path:
        return self.folder / "store"


def start_server(
    folder: Path,
    users: tuple[str, ...] = ("alice", "bob"),
    store: str = "",
    env: dict[str, str] | None = None,
) -> Server:
    """`store`: the root of the scope stores (default: a folder beside the settings);
    `env`: the server's environment (default: this process's)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "registry.conf"
    config.write_text(CONFIG.format(store=store or folder / "store"))
    tokens = {u: create_token(config, u) for u in users}
    with open(folder / "server.err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roargit", "registry", "serve", "--config", str(config),
             "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=folder,
            env=env,
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise AssertionError(f"the registry did not start: {line!r}")
    return Server(line.split()[-1], folder, config, tokens, proc)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if server.proc.stdout is not None:
        server.proc.stdout.close()


def serving(folder: Path) -> Iterator[Server]:
    server = start_server(folder)
    try:
        yield server
    finally:
        stop_server(server)


class User(NamedTuple):
    name: str
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": f"{self.name}@example.com",
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": f"{self.name}@example.com",
        }


def make_user(base: Path, name: str) -> User:
    home = base / f"home-{name}"
    home.mkdir(parents=True)
    (home / ".gitconfig").write_text(
        f"[init]\n\tdefaultBranch = main\n[user]\n\tname = {name}\n"
        f"\temail = {name}@example.com\n[credential]\n\thelper = store\n"
    )
    return User(name, home)


def roar_as(
    user: User,
    cwd: Path,
    *args: str,
    check: bool = True,
    stdin: str = "",
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`roar ARGS` as `user` (their $HOME, git identity and credentials)."""
    env = {**user.env, **(env_extra or {})}
    return roar(cwd, *args, rc=0 if check else None, env=env, stdin=stdin)


def login(user: User, server: Server) -> None:
    roar_as(user, user.home, "login", server.url, "--user", user.name, "--token", "-",
            stdin=server.tokens[user.name] + "\n")  # fmt: skip


def every_object(repo: Path) -> bytes:
    """The contents of every object in a repository, loose or packed."""
    out = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch", "--unordered"],
        cwd=repo,
        capture_output=True,
        check=True,
    )
    return out.stdout


def all_repos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.git") if (p / "HEAD").is_file())


def repo_state(repo: Path) -> str:
    """Refs and object ids of a repository: what a dry run must leave as it was."""
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    objs = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch-check"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return refs + "\n" + objs


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
