"""Scopes: where a clone's registrations go.

A scope is `owner/project`: a lineage repository (git URL) and a store (fsspec URL). Both
come from the registry's settings (`scopes.repo`, `scopes.store`: templates with `{scope}`)
unless set explicitly (`roar scope use acme/vision --repo URL --store URL`). `private` is a
scope too: nothing registered in it leaves the machine, so `roar register` refuses.

Who may read or write a scope is the git host's and the store's business: the registry
never widens access. The chosen scope is kept in git config (`roar.scope`, with
`roar.scope.repo` and `roar.scope.store` when explicit): the repository's own config inside
a clone, the user's global config outside one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin

from roargit.errors import ConfigError, RoarError
from roargit.git import run_git
from roargit.structs import NamedTuple

PRIVATE = "private"
_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_NAME = re.compile(rf"{_PART}/{_PART}")


class Scope(NamedTuple):
    name: str
    repo: str
    store: str


class PrivateScope(RoarError):
    def __init__(self) -> None:
        super().__init__(
            "the scope is private: nothing registered here leaves this machine; "
            "choose a shared scope with `roar scope use OWNER/PROJECT` to register"
        )


class NoScope(RoarError):
    def __init__(self) -> None:
        super().__init__("no scope chosen: run `roar scope use OWNER/PROJECT` (or `private`)")


class BadScope(RoarError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"'{name}' is not a scope: give owner/project (letters, digits, '.', '_', '-') "
            "or private"
        )


class ScopeUnconfigured(RoarError):
    def __init__(self, name: str, what: str) -> None:
        super().__init__(
            f"the registry says nothing about where scope {name} keeps its {what}: "
            f"set it with `roar scope use {name} --{what} URL`"
        )


def valid_scope_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and ".." not in name and not name.endswith(".git")


def check_name(name: str) -> str:
    if name == PRIVATE or valid_scope_name(name):
        return name
    raise BadScope(name)


def relative_to(base: str, rel: str) -> str:
    """`rel` resolved against the URL (or path) of the registry's index repository: beside
    it, as a relative git submodule URL would be."""
    if "://" in rel or rel.startswith("/") or ":" in rel.split("/", 1)[0]:
        return rel
    if "://" in base:
        return urljoin(base.rstrip("/"), rel)
    return str(Path(base.rstrip("/")).parent / rel)


def derive(name: str, settings: Mapping[str, str], index_url: str) -> Scope:
    """The scope `name` as the registry's settings place it."""
    repo_t = settings.get("scopes.repo", "")
    store_t = settings.get("scopes.store", "")
    if not repo_t:
        raise ScopeUnconfigured(name, "repo")
    if not store_t:
        raise ScopeUnconfigured(name, "store")
    repo = relative_to(index_url, repo_t.replace("{scope}", name))
    return Scope(name, repo, store_t.replace("{scope}", name))


def listed(settings: Mapping[str, str]) -> list[str]:
    """The scopes the registry's settings name (`scopes.names`, space-separated)."""
    return sorted(n for n in settings.get("scopes.names", "").split() if valid_scope_name(n))


def check_urls(scope: Scope) -> Scope:
    for what, url in (("repo", scope.repo), ("store", scope.store)):
        if not url or not url.isprintable() or url.startswith("-"):
            raise ConfigError(f"scope {scope.name}: '{url}' is not a {what} URL")
    return scope


# -- the chosen scope, in git config ---------------------------------------------------------


class Chosen(NamedTuple):
    name: str | None
    repo: str | None  # set explicitly (None: from the registry's settings)
    store: str | None


def _get(cwd: Path, key: str) -> str | None:
    proc = run_git(["config", "--get", key], cwd, check=False)
    return proc.stdout.decode(errors="replace").strip() or None


def chosen(cwd: Path) -> Chosen:
    """The scope in effect at `cwd` (the clone's config over the user's)."""
    return Chosen(
        _get(cwd, "roar.scope"), _get(cwd, "roar.scope.repo"), _get(cwd, "roar.scope.store")
    )


def choose(cwd: Path, name: str, repo: str | None, store: str | None, *, where: str) -> None:
    """Keep `name` (and explicit URLs, or none) in git config `where` (--local or --global)."""

    check_name(name)
    run_git(["config", where, "roar.scope", name], cwd)
    for key, value in (("roar.scope.repo", repo), ("roar.scope.store", store)):
        if value:
            run_git(["config", where, key, value], cwd)
        else:
            run_git(["config", where, "--unset-all", key], cwd, check=False)


def resolve(found: Chosen, settings: Mapping[str, str] | None, index_url: str | None) -> Scope:
    """The chosen scope's URLs: explicit ones first, else the registry's templates."""
    if found.name is None:
        raise NoScope()
    if found.name == PRIVATE:
        raise PrivateScope()
    if found.repo and found.store:
        return check_urls(Scope(found.name, found.repo, found.store))
    derived = derive(found.name, settings or {}, index_url or "")
    return check_urls(Scope(found.name, found.repo or derived.repo, found.store or derived.store))
