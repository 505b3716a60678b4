"""This clone's copy of `git config --list`'s answer, so that a read of the settings (every
`roar run`) starts no `git config` while git's own files are as they were.

git reads its settings from a few files (git-config(1), FILES): the system file, the global
ones (`$XDG_CONFIG_HOME/git/config` and `~/.gitconfig`, or `$GIT_CONFIG_GLOBAL`), the
repository's `config` and `config.worktree`, and the team's `.roarconfig` (config.read_all's
command-line include). The answer is kept in `.git/roar/config-cache` with each file's stat
(inode, size, mtime, ctime, owner, mode; or its absence) and taken again while every stat is
the same: git rewrites a config file by renaming a new one over it, and any edit moves its
ctime.

It is kept only where it can be checked that way:
- every entry came from one of those files: none from an include (`include.path`,
  `includeIf`, whose target and condition, HEAD's branch with `onbranch:`, are not stat'd);
- the environment tells git nothing else (`GIT_CONFIG_PARAMETERS` and `GIT_CONFIG_COUNT`, a
  parent git's `-c`; `GIT_DIR`, `GIT_COMMON_DIR`); the variables that choose the files (and
  every other `GIT_*`), the user and `PATH` (which git) are part of the key;
- no file changed in the RACY_S before git was started: a change within one tick of the
  clock leaves mtime and ctime as they were (git's "racy git" problem), and one made while
  git read would go unseen. Such an answer is used once and not kept.
"""

from __future__ import annotations

import contextlib
import os

from roargit.git import run_git
from roargit.repo import RepoPaths

FILE = "config-cache"
_MAGIC = "roar-config-cache 1"
#: A file changed less than this before git read it may change again unseen by its stat.
RACY_S = 2.0
#: What `git -c` and the like pass on to git: entries from no file this checks.
_UNCHECKABLE = (
    "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CONFIG", "GIT_DIR", "GIT_COMMON_DIR"
)  # fmt: skip
_CHOOSING = ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM")


def _env_true(value: str) -> bool:
    """git's reading of a boolean variable (git_env_bool): unset, empty and false-ish are no."""
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _files(paths: RepoPaths, system: str) -> list[str] | None:
    """The files `git config --list` reads here besides the system one (given as `system`,
    "" for none); None where the environment gives git settings from elsewhere."""
    env = os.environ
    if any(
        name in _UNCHECKABLE or (name.startswith("GIT_CONFIG_") and name not in _CHOOSING)
        for name in env
    ):
        return None
    root = str(paths.root)
    files = [system] if system else []
    if "GIT_CONFIG_GLOBAL" in env:
        if env["GIT_CONFIG_GLOBAL"]:
            files.append(os.path.join(root, env["GIT_CONFIG_GLOBAL"]))
    else:
        home = env.get("HOME", "")
        xdg = env.get("XDG_CONFIG_HOME", "")
        if xdg:
            files.append(os.path.join(xdg, "git", "config"))
        elif home:
            files.append(os.path.join(home, ".config", "git", "config"))
        if home:
            files.append(os.path.join(home, ".gitconfig"))
    files += [
        os.path.join(paths.common_dir, "config"),
        os.path.join(paths.git_dir, "config.worktree"),
        os.path.join(root, ".roarconfig"),
    ]
    return [os.path.normpath(f) for f in files]


def _system_wanted() -> bool:
    return not _env_true(os.environ.get("GIT_CONFIG_NOSYSTEM", ""))


def _key(files: list[str]) -> tuple[str, int, set[str]] | None:
    """(the key: the environment that chooses the files and each file's stat; the newest
    change among them in ns; those that exist); None where a file cannot be stat'd (not
    for its absence)."""
    env = os.environ
    parts = [str(os.getuid()), env.get("PATH", "")]
    parts += sorted(f"{k}={v}" for k, v in env.items() if k.startswith("GIT_"))
    newest = 0
    present = set()
    for f in files:
        try:
            st = os.stat(f)
        except (FileNotFoundError, NotADirectoryError):
            parts.append(f"{f}\n-")
            continue
        except OSError:
            return None
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        present.add(f)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_uid, st.st_mode)
        parts.append(f"{f}\n{stamp}")
    return "\0".join(parts), newest, present


def load(paths: RepoPaths) -> bytes | None:
    """The kept answer, when every file git reads is as it was when git read them; else
    None."""
    try:
        with open(paths.roar_dir / FILE, "rb") as f:
            data = f.read()
    except OSError:
        return None
    size, _, rest = data.partition(b"\n")
    if not size.isdigit():
        return None
    head = rest[: int(size)].decode("utf-8", "surrogateescape").split("\0", 2)
    if len(head) != 3 or head[0] != _MAGIC:
        return None
    _, system, key = head
    if bool(system) != _system_wanted():
        return None
    files = _files(paths, system)
    found = _key(files) if files is not None else None
    if found is None or found[0] != key:
        return None
    return rest[int(size) :]


def _system_file(paths: RepoPaths, listing: bytes) -> str | None:
    """The system file git read (an absent one included), "" when it reads none; None when
    it cannot be told."""
    env = os.environ
    if not _system_wanted():
        return ""
    if env.get("GIT_CONFIG_SYSTEM"):
        return os.path.join(str(paths.root), env["GIT_CONFIG_SYSTEM"])
    for scope, origin, _item in _entries(listing):
        if scope == b"system" and origin.startswith(b"file:"):
            return os.fsdecode(origin[5:])
    # No entry from it: asked where it is. git names the file it cannot read (LC_ALL=C: in
    # those words); a file there without entries is no answer.
    proc = run_git(
        ["config", "--system", "--list"],
        paths.root,
        check=False,
        env={"LC_ALL": "C", "LANGUAGE": ""},
    )
    err = proc.stderr.decode(errors="surrogateescape")
    mark = "unable to read config file '"
    at = err.find(mark)
    if proc.returncode == 0 or at < 0:
        return None
    end = err.find("'", at + len(mark))
    return err[at + len(mark) : end] if end > 0 else None


def _settled(files: list[str], started: float) -> tuple[str, set[str]] | None:
    """(the key, the files that exist) when no file changed in the RACY_S before `started`."""
    found = _key(files)
    if found is None or found[1] >= (started - RACY_S) * 1e9:
        return None
    return found[0], found[2]


def _entries(listing: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(scope, origin, `key\\nvalue`) of each entry of `git config --list -z --show-scope
    --show-origin`."""
    fields = listing.split(b"\0")
    return list(zip(fields[0::3], fields[1::3], fields[2::3], strict=False))


def save(paths: RepoPaths, listing: bytes, started: float, team_include: str) -> None:
    """Keep `listing`, read by a `git config` started at time `started`, if it can be checked
    (see the module's docstring). Never creates `.git/roar/`; a failure to write costs the
    next read a `git config`, never this one."""
    if not paths.roar_dir.is_dir():
        return
    # The other files first: a change too recent to keep the answer shows without asking git
    # where the system file is.
    files = _files(paths, "")
    if files is None or _settled(files, started) is None:
        return
    system = _system_file(paths, listing)
    files = None if system is None else _files(paths, system)
    found = None if files is None else _settled(files, started)
    if system is None or found is None:
        return
    key, present = found
    root = str(paths.root)
    for scope, origin, item in _entries(listing):
        name, _, value = item.partition(b"\n")
        if scope == b"command" and origin == b"command line:":
            if name != b"include.path" or os.fsdecode(value) != team_include:
                return
            continue
        if name.startswith((b"include.", b"includeif.")) or not origin.startswith(b"file:"):
            return
        # A file git read that is gone now may have held entries no stat accounts for.
        if os.path.normpath(os.path.join(root, os.fsdecode(origin[5:]))) not in present:
            return
    head = "\0".join((_MAGIC, system, key)).encode("utf-8", "surrogateescape")
    path = paths.roar_dir / FILE
    tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(b"%d\n%s%s" % (len(head), head, listing))
        os.replace(tmp, path)  # concurrent readers: the last one's whole file wins
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
