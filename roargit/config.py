"""Settings: `git config roar.*` over team defaults in a committed `.roarconfig`.

Like Git LFS's `.lfsconfig`: the team commits `.roarconfig` (git-config format) at the top of
the work tree; anyone may override a key in their own git config (local, global or system),
which wins. Reads take one `git config --list` (see read_all), or its answer as this clone
kept it while git's files are unchanged (config_cache); writes go through `git config`, so
the files stay exactly as git would write them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from roargit import config_cache
from roargit.errors import ConfigError
from roargit.git import run_git, start_early
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

TEAM_FILE = ".roarconfig"


class Setting(NamedTuple):
    default: str
    help: str


# Every key roargit reads, with its default; `roar config list` shows them.
SETTINGS: dict[str, Setting] = {
    "roar.store.url": Setting("", "blob store URL (fsspec); empty means .git/roar/blobs"),
    "roar.store.maxblobsize": Setting(
        "1G", "outputs larger than this are recorded by hash only (k/M/G suffixes)"
    ),
    "roar.store.timeout": Setting(
        "10", "seconds a remote store may take to connect or to answer, per request"
    ),
    "roar.store.retries": Setting("1", "times a failed request to a remote store is retried"),
    "roar.store.partsize": Setting(
        "50M", "files above this go to S3 in a multipart upload of parts this size (min 5M)"
    ),
    "roar.env.include": Setting(
        "", "extra environment variables to record (globs, comma-separated)"
    ),
    "roar.ignore": Setting("", "extra path globs a run never records (comma-separated)"),
    "roar.code": Setting(
        "", "globs of the files that are code, not data (comma-separated; empty: the default)"
    ),
    "roar.trace.mode": Setting("auto", "auto, ptrace or fallback"),
    "roar.trace.daemongrace": Setting("2", "seconds to wait for background processes"),
    "roar.recorder.idle": Setting(
        "600", "seconds the resident recorder waits for the next run (0: none is kept)"
    ),
    "roar.share.blobs": Setting("true", "roar push uploads the bytes records name to the store"),
    "roar.share.hostname": Setting("true", "false: runs are recorded without the host's name"),
    "roar.share.user": Setting("true", "false: runs are recorded without the user's name"),
    "roar.registry": Setting("", "registry URL (roar login sets it, in the global config)"),
    "roar.registry.user": Setting("", "your name at the registry (roar login)"),
    "roar.scope": Setting("", "where roar register publishes: owner/project or private"),
    "roar.scope.repo": Setting("", "the scope's lineage repository (default: the registry's)"),
    "roar.scope.store": Setting("", "the scope's blob store (default: the registry's)"),
    "roar.hooks.strict": Setting("false", "a failing pre-push or pre-commit check blocks git"),
    "roar.hooks.precommit": Setting("warn", "staged outputs no run produced: warn, fail or off"),
    "roar.hooks.postrun": Setting("", "shell command run after each roar run (ROAR_RUN_* set)"),
}


class Value(NamedTuple):
    key: str
    value: str
    origin: str  # "git", "team" (.roarconfig) or "default"


def normalise_key(key: str) -> str:
    key = key.strip()
    if not key.startswith("roar."):
        key = "roar." + key
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"'{key}' is not a valid key: use section.name, e.g. store.url")
    # git treats the section and the last part case-insensitively; roargit keys are lower case.
    return key.lower()


#: git's own keys that `read_all(..., identity=True)` also returns: who records a run.
IDENTITY_KEYS = ("user.name", "user.email")


def list_args(paths: RepoPaths) -> list[str]:
    """The `git` arguments of read_all's one read."""
    team = paths.root / TEAM_FILE
    return [
        "-c", f"include.path={team}", "config", "--list", "-z", "--show-scope", "--show-origin"
    ]  # fmt: skip


# Reads begun by `start_reading`, by work tree: (when git was started, or None; the kept
# answer, or None). Each is taken by the first read_all there.
_begun: dict[str, tuple[float | None, bytes | None]] = {}


def start_reading(paths: RepoPaths) -> None:
    """Begin read_all's read now: `roar run` takes the kept answer (config_cache) or starts
    `git config` (git.start_early) before it loads the modules that read the settings, so
    that git answers on one core while Python imports on the other."""
    kept = config_cache.load(paths)
    started = None
    if kept is None:
        started = time.time()
        start_early(list_args(paths), paths.root)
    _begun[str(paths.root)] = (started, kept)


def drop_reading() -> None:
    """Forget the reads begun that no read_all took (their `git`: git.drop_early)."""
    _begun.clear()


def _listing(paths: RepoPaths) -> bytes:
    """What `git config --list` (list_args) answers here: kept, begun or asked now."""
    started, kept = _begun.pop(str(paths.root), (None, None))
    if kept is None and started is None:
        kept = config_cache.load(paths)
        started = time.time()
    if kept is not None:
        return kept
    proc = run_git(list_args(paths), paths.root, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(why[-1] if why else "git config cannot be read")
    assert started is not None
    config_cache.save(paths, proc.stdout, started, str(paths.root / TEAM_FILE))
    return proc.stdout


def read_all(
    paths: RepoPaths, *, identity: bool = False, git_keys: dict[str, list[str]] | None = None
) -> dict[str, Value]:
    """Every roar.* key in effect: git config over .roarconfig over defaults; with `identity`,
    also git's user.name and user.email where set (from the same read: no second `git`).
    `git_keys`, when given, is filled with every key of the user's git config (not
    .roarconfig's) and its values, as `git config --list` spells the key: a command that also
    needs the remotes reads them from the same `git`.

    One `git config --list` reads every scope; .roarconfig comes in through a command-line
    include, so git parses it exactly as it parses its own files, and `--show-scope` tells
    its entries (scope "command") from the user's. `--show-origin` names the file of each,
    for config_cache to check that it can keep the answer.
    """
    values = {k: Value(k, s.default, "default") for k, s in SETTINGS.items()}
    mine: dict[str, str] = {}
    fields = _listing(paths).split(b"\0")
    for scope, item in zip(fields[0::3], fields[2::3], strict=False):
        key, _, value = item.decode(errors="surrogateescape").partition("\n")
        if git_keys is not None and scope != b"command":
            git_keys.setdefault(key, []).append(value)
        key = key.lower()
        if not key.startswith("roar."):
            if identity and key in IDENTITY_KEYS and scope != b"command":
                values[key] = Value(key, value, "git")  # the last one read wins, as in git
            continue
        if scope == b"command":
            values[key] = Value(key, value, "team")
        else:
            mine[key] = value
    for key, value in mine.items():
        values[key] = Value(key, value, "git")
    return values


def get(paths: RepoPaths, key: str) -> Value | None:
    return read_all(paths).get(normalise_key(key))


def set_value(paths: RepoPaths, key: str, value: str, *, team: bool = False) -> None:
    key = normalise_key(key)
    where = ["--file", str(paths.root / TEAM_FILE)] if team else ["--local"]
    run_git(["config", *where, key, value], paths.root)


def unset(paths: RepoPaths, key: str, *, team: bool = False) -> bool:
    """Remove a key; False when it was not set there."""
    key = normalise_key(key)
    file = paths.root / TEAM_FILE
    if team and not file.exists():
        return False
    where = ["--file", str(file)] if team else ["--local"]
    proc = run_git(["config", *where, "--unset-all", key], paths.root, check=False)
    if proc.returncode == 5:  # git config: "you try to unset an option which does not exist"
        return False
    if proc.returncode != 0:
        raise ConfigError(proc.stderr.decode(errors="replace").strip() or f"cannot unset {key}")
    return True


def parse_size(text: str) -> int:
    """'512M' → bytes; plain digits are bytes."""
    text = text.strip()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if text and text[-1].lower() in units:
            return int(float(text[:-1]) * units[text[-1].lower()])
        return int(text)
    except ValueError:
        raise ConfigError(f"'{text}' is not a size (e.g. 500M, 2G)") from None


def parse_seconds(text: str, key: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{key} must be a number of seconds above 0, not '{text}'")
    return value


def parse_count(text: str, key: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{key} must be a whole number (0 or more), not '{text}'")
    return value


def resolve_store_url(paths: RepoPaths, value: str) -> str:
    """`roar.store.url` as a URL that names one store wherever roar runs.

    A relative folder is relative to the top of the clone's main work tree, never to the
    current folder: a run from `sub/` must find the same store as one from the top, and so
    must a reproduction in a worktree under `.git/roar/worktrees/` (all worktrees share the
    ledger and `.git/roar/`, so they share the store too). `~` is the user's home.
    """
    value = value.strip()
    if not value:
        return ""
    prefix = ""
    if value.startswith("file://"):
        prefix, value = "file://", value[len("file://") :]
    elif "://" in value or "::" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        main = paths.common_dir.parent if paths.common_dir.name == ".git" else paths.root
        path = main / path
    return prefix + os.path.normpath(path)
