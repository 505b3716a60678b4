"""`roar login`: the registry a user works with, who they are there, and whether their git
credentials let them read its index and write their scope.

A registry is named by a URL:
- a `roar registry serve` server by its base URL (`https://roar.example.com`): the index is
  `<base>/index.git`, scopes are `<base>/<owner>/<project>.git`, and the server answers
  `GET <base>/index/<hash>` and `GET <base>/whoami`;
- any other git repository (a URL ending in `.git`, an SSH address, a local path) is the
  index itself, and the user's git identity (`user.email`) is who registers.

Credentials are git's: whatever credential helper, SSH agent or `.netrc` the user's git uses.
`roar login URL --user NAME --token -` hands a server token to `git credential approve`, so
the configured helper keeps it and git supplies it like any password. roargit stores no
secret of its own. The registry and the name go into the user's global git config
(`roar.registry`, `roar.registry.user`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from roargit.errors import ConfigError, RoarError
from roargit.git import run_git
from roargit.registry.index import (
    CONFIG_REF,
    NO_PROMPT,
    AccessDenied,
    RegistryUnreachable,
    _git,
    fetch_ref,
)
from roargit.structs import NamedTuple

TIMEOUT = 10.0


class Registry(NamedTuple):
    url: str  # as the user gave it
    index_url: str  # the git repository holding the index
    api: str | None  # a roar server's base URL (None: a plain git registry)


class NotLoggedIn(RoarError):
    def __init__(self) -> None:
        super().__init__("no registry: run `roar login URL` first")


class Identity(NamedTuple):
    name: str
    how: str  # "token" (a roar server said so) or "git" (user.email / user.name)


def parse_registry(url: str) -> Registry:
    url = url.strip()
    if not url or not url.isprintable() or url.startswith("-"):
        raise ConfigError(f"'{url}' is not a registry URL")
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https") and not url.rstrip("/").endswith(".git"):
        base = url.rstrip("/")
        return Registry(url, f"{base}/index.git", base)
    return Registry(url, url, None)


# -- git config ------------------------------------------------------------------------------


def _config_get(cwd: Path, key: str) -> str | None:
    proc = run_git(["config", "--get", key], cwd, check=False)
    value = proc.stdout.decode(errors="replace").strip()
    return value or None


def configured(cwd: Path) -> Registry | None:
    url = _config_get(cwd, "roar.registry")
    return None if url is None else parse_registry(url)


def configured_user(cwd: Path) -> str | None:
    return _config_get(cwd, "roar.registry.user")


def save(cwd: Path, registry: Registry, user: str | None) -> None:
    run_git(["config", "--global", "roar.registry", registry.url], cwd)
    if user:
        run_git(["config", "--global", "roar.registry.user", user], cwd)


def forget(cwd: Path) -> bool:
    """Drop the registry from the global config (and the server token from git's credential
    helper); False when none was configured."""
    reg = configured(cwd)
    if reg is None:
        return False
    if reg.api is not None:
        parts = urlsplit(reg.api)
        text = f"protocol={parts.scheme}\nhost={parts.netloc}\n\n"
        run_git(["credential", "reject"], cwd, input=text.encode(), check=False, env=NO_PROMPT)
    for key in ("roar.registry.user", "roar.registry"):
        run_git(["config", "--global", "--unset-all", key], cwd, check=False)
    return True


# -- credentials and HTTP ------------------------------------------------------------------


def credential(cwd: Path, url: str) -> tuple[str, str] | None:
    """(user, password) git's credential helpers hold for `url`; None when they hold none."""
    parts = urlsplit(url)
    text = f"protocol={parts.scheme}\nhost={parts.netloc}\n\n"
    proc = run_git(["credential", "fill"], cwd, input=text.encode(), check=False, env=NO_PROMPT)
    if proc.returncode != 0:
        return None
    lines = proc.stdout.decode(errors="replace").splitlines()
    found = dict(line.split("=", 1) for line in lines if "=" in line)
    if "password" not in found:
        return None
    return found.get("username", ""), found["password"]


def approve(cwd: Path, url: str, user: str, token: str) -> None:
    parts = urlsplit(url)
    text = f"protocol={parts.scheme}\nhost={parts.netloc}\nusername={user}\npassword={token}\n\n"
    run_git(["credential", "approve"], cwd, input=text.encode(), env=NO_PROMPT)


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of a GET."""
    # Only a registry login or lookup talks HTTP: urllib.request is slow to import.
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, body = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryUnreachable(url, str(getattr(exc, "reason", exc))) from None
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


# -- who am I, and may I ------------------------------------------------------------------


def whoami(cwd: Path, registry: Registry) -> Identity | None:
    """Who the registry takes this user for: a roar server asks the token's owner; any other
    registry, the user's git identity."""
    if registry.api is not None:
        auth = credential(cwd, registry.api)
        if auth is None:
            return None
        status, body = http_get(f"{registry.api}/whoami", auth)
        if status == 200 and isinstance(body, dict) and isinstance(body.get("user"), str):
            name = body["user"]
            return Identity(name, "token") if name.isprintable() and name else None
        if status in (401, 403):
            return None

        raise RegistryUnreachable(registry.api, f"/whoami answered {status}")
    name = _config_get(cwd, "user.email") or _config_get(cwd, "user.name")
    return None if name is None else Identity(name, "git")


class Checked(NamedTuple):
    registry: Registry
    identity: Identity | None
    index_read: bool
    scope: str | None
    scope_write: bool | None  # None: no scope to check
    problems: list[str]


def can_write(work: Path, url: str) -> tuple[bool, str]:
    """Whether git may push to `url`, asked without changing it (`git push --dry-run`: the
    server checks the credentials when it is asked for receive-pack's refs)."""

    tree = _git(work, ["hash-object", "-t", "tree", "-w", "--stdin"], input=b"").stdout
    commit = _git(work, ["commit-tree", tree.decode().strip(), "-m", "login check"]).stdout
    proc = _git(
        work,
        ["push", "--dry-run", "--porcelain", url, f"{commit.decode().strip()}:refs/roar/tmp/login"],
        check=False,
    )
    if proc.returncode == 0:
        return True, ""
    why = proc.stderr.decode(errors="replace").strip().splitlines()
    return False, why[-1] if why else f"git push exited {proc.returncode}"


def check(cwd: Path, work: Path, registry: Registry, scope_repo: tuple[str, str] | None) -> Checked:
    """Can this user read the registry's index, and write the scope `(name, repo URL)`?"""

    problems: list[str] = []
    identity = whoami(cwd, registry)
    if identity is None:
        problems.append(
            "the registry does not know you: give a token with `roar login URL --user NAME "
            "--token -`, or set up a git credential helper"
            if registry.api
            else "git has no user.email: set it with git config --global user.email"
        )
    try:
        fetch_ref(work, registry.index_url, CONFIG_REF)
        readable = True
    except (AccessDenied, RegistryUnreachable) as exc:
        readable = False
        problems.append(str(exc))
    writable: bool | None = None
    if scope_repo is not None:
        writable, why = can_write(work, scope_repo[1])
        if not writable:
            problems.append(f"you cannot write scope {scope_repo[0]} ({scope_repo[1]}): {why}")
    return Checked(
        registry, identity, readable, scope_repo[0] if scope_repo else None, writable, problems
    )
