"""Which of the files a run touched are noise, not artifacts, and which are package files.

A path the tracer saw is *not* an artifact when it is:

1. inside a `site-packages` / `dist-packages` dir (`SITE_ROOT`): never noise here, because
   those reads become the run's package list (packages.packages_for_paths); call that first
   and drop what it classified;
2. under a system tree: /usr (lib*, libexec, share, include, bin, sbin, local/{lib*,share,
   include,bin,sbin}), /lib*, /bin, /sbin, /etc, /proc, /sys, /dev, /run, /var/run, /var/cache,
   /var/lib/{dpkg,apt}, /nix/store, /snap;
3. under the user's caches and tool homes, given `home`: ~/.cache (except ~/.cache/huggingface
   and ~/.cache/torch/hub, which hold models and datasets a run genuinely consumes, and
   ~/.cache/roargit, whose clones of registered lineage are reproduced in), ~/.pyenv,
   ~/.nv, ~/.triton, ~/.terminfo, ~/.python_history;
4. part of any Python interpreter: a stdlib dir `…/lib/python3.X/` (or `lib/python3X.zip`),
   a `pyvenv.cfg`, an executable `…/bin/python*`;
5. bytecode anywhere: `__pycache__/`, `*.pyc`;
6. inside a `.git/` dir (git's own metadata, read by tools the run spawned);
7. matched by one of the caller's extra globs (fnmatch syntax, where `*` also crosses `/`).

Start-up files (`is_startup_file`: `.pth` files and the hooks they install, the interpreter's
own shared library) are read by every interpreter start, so they name no package the run used.

/tmp, /var/tmp, /mnt, /data, /opt and the rest of $HOME are *not* noise: real data lives there.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable

#: A path inside an installed-packages dir; group 1 is that dir.
SITE_ROOT = re.compile(r"^(.*?/(?:site|dist)-packages)(?:/|$)")

# Anchored at the start of the path; `lib` may be lib32, lib64, libx32 (multilib). Plain
# prefixes, not a regex: most runs touch a system file, and a regex of them all is compiled
# afresh in every process.
_SYSTEM_PREFIXES = (
    "/usr/lib/", "/usr/lib32/", "/usr/lib64/", "/usr/libx32/", "/usr/libexec/",
    "/usr/share/", "/usr/include/", "/usr/bin/", "/usr/sbin/",
    "/usr/local/lib/", "/usr/local/lib32/", "/usr/local/lib64/",
    "/usr/local/share/", "/usr/local/include/", "/usr/local/bin/", "/usr/local/sbin/",
    "/lib/", "/lib32/", "/lib64/", "/libx32/", "/bin/", "/sbin/", "/etc/", "/proc/", "/sys/",
    "/dev/", "/run/", "/var/run/", "/var/cache/", "/var/lib/dpkg/", "/var/lib/apt/",
    "/nix/store/", "/snap/",
)  # fmt: skip
# Trees under $HOME that are tool state, not data.
_HOME_NOISE = (".cache/", ".pyenv/", ".nv/", ".triton/", ".terminfo/", ".python_history")
# …except the model and dataset caches a run genuinely consumes, and the clones roar keeps
# for registered lineage (a reproduction runs in their work trees).
_HOME_KEEP = (".cache/huggingface/", ".cache/torch/hub/", ".cache/roargit/")

_ALWAYS_NOISE = re.compile(
    r"""
      /__pycache__(?:/|$) | \.pyc$
    | /\.git(?:/(?!roar/worktrees/)|$)          # but roar reproduce's worktrees are work trees
    | /lib(?:64)?/(?:python\d(?:\.\d+)?t?/|python\d+\.zip$)   # an interpreter's stdlib
    | /pyvenv\.cfg$
    | /bin/(?:python|pypy)[\d.]*(?:-config)?$                 # an interpreter itself
    """,
    re.VERBOSE,
)


@functools.lru_cache(maxsize=16)
def _home_rules(home: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The prefixes under `home` that are noise, and those among them that are kept."""
    home = home.rstrip("/")
    if not home:
        return (), ()
    return tuple(f"{home}/{n}" for n in _HOME_NOISE), tuple(f"{home}/{k}" for k in _HOME_KEEP)


# A cheap first test, since most paths a run reads are data and a regex search costs far more
# than a few prefix and substring tests: every path the rules above can call noise starts with
# one of these prefixes, or contains one of the substrings `system_paths` tests (each
# _ALWAYS_NOISE branch contains one).
_SYSTEM_STARTS = (
    "/usr/", "/lib", "/bin/", "/sbin/", "/etc/", "/proc/", "/sys/", "/dev/", "/run/", "/var/",
    "/nix/store/", "/snap/",
)  # fmt: skip


@functools.lru_cache(maxsize=16)
def _noise_starts(home: str) -> tuple[str, ...]:
    return _SYSTEM_STARTS + _home_rules(home)[0]


@functools.lru_cache(maxsize=16)
def _glob_matcher(extra: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(g) for g in extra)) if extra else None


def system_paths(
    paths: Iterable[str], home: str = "", extra_ignore: Iterable[str] = ()
) -> set[str]:
    """Those of `paths` that are noise, not artifacts: see the module docstring for the rules.
    `home` is the user's home dir ("" to skip those rules); `extra_ignore` are fnmatch globs
    matched against the whole path (config `roar.ignore`, say).

    Made for the many paths of a big run: the cheap first test is written inline, not called
    a path, and only the few paths it lets through pay for the regexes."""
    extra = tuple(extra_ignore)
    globs = _glob_matcher(extra)
    if globs is not None:
        paths = list(paths)  # read twice: globs may match any path
    starts = _noise_starts(home)
    noise = {
        p
        for p in paths
        if (
            p.startswith(starts)
            or "/lib" in p
            or "/bin/" in p
            or "/.git" in p
            or "/__pycache__" in p
            or p.endswith((".pyc", "/pyvenv.cfg"))
        )
        and _by_rules(p, home, extra)
    }
    if globs is not None:
        noise.update(
            p
            for p in paths
            if p not in noise
            and globs.match(p) is not None
            and not ("-packages" in p and SITE_ROOT.match(p))
        )
    return noise


def none_is_noise(folder: str, joined: str, home: str) -> bool:
    """True when no path of a folder's group can be noise by `system_paths` without extra
    globs: `joined` is the paths (each directly in `folder`, none holding NUL) joined and
    ended by NUL. Its cheap first test, made on the folder once and on `joined` by substring
    searches instead of per path: a folder that is a prefix of a noise start (its names would
    decide) answers False."""
    fs = folder + "/"
    starts = _noise_starts(home)
    if fs.startswith(starts) or any(s.startswith(fs) for s in starts):
        return False
    # A path's substrings below lie in `folder` or start at its last "/" (names hold no "/").
    return not any(n in joined for n in _NOISE_PARTS)


_NOISE_PARTS = ("/lib", "/bin/", "/.git", "/__pycache__", ".pyc\0", "/pyvenv.cfg\0")


def _by_rules(path: str, home: str, extra: tuple[str, ...]) -> bool:
    if SITE_ROOT.match(path):
        return False  # a package file: the package list's business, see packages.py
    if _ALWAYS_NOISE.search(path) or path.startswith(_SYSTEM_PREFIXES):
        return True
    if home:
        noise, keep = _home_rules(home)
        if path.startswith(noise) and not path.startswith(keep):
            return True
    globs = _glob_matcher(extra)
    return globs is not None and globs.match(path) is not None


def is_system_path(path: str, home: str = "", extra_ignore: Iterable[str] = ()) -> bool:
    """True when `path` is noise (`system_paths` of one path)."""
    return bool(system_paths((path,), home, extra_ignore))


def is_startup_file(path: str) -> bool:
    """Read by every interpreter start: .pth files and the hooks they install."""
    if path.endswith(".pth") or "/_distutils_hack/" in path:
        return True
    if "/__editable__" not in path and "/libpython" not in path:
        return False  # nearly every path: two substring tests, no split
    name = path.rsplit("/", 1)[-1]
    return name.startswith("__editable__") or (
        # The interpreter's own shared library (…/lib/libpython3.11.so.1.0 of a pyenv, conda or
        # /opt build): the noise rules know its stdlib dir and executable, not this file.
        name.startswith("libpython") and ".so" in name
    )
