"""Moving, making and removing one ref as git's files backend does, without starting `git`:
the ledger's move at the end of every `roar run`, and a dirty run's snapshot pin, where each
`git update-ref` process costs some 2 ms of a fixed cost of about 40.

git's protocol for a loose ref: take `<ref>.lock` with O_CREAT|O_EXCL (so any other writer,
git included, is held off), read the ref's value under that lock (its loose file, else its
line in `packed-refs`), write the new id into the lock file and rename it over the ref. A
reader sees the old id or the new one, never a torn write; `git pack-refs` takes the same lock
before it prunes a loose ref.

Only what is exactly git's behaviour is done here; the rest is left to `git update-ref` (None):
a repository whose refs are not plain files (reftable), a ref that has a reflog (git appends
to it), a symbolic ref, a ref that does not exist yet.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

_LOCK_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _packed(common_dir: Path, ref: str) -> str | None:
    """The ref's id in `packed-refs`, or None."""
    try:
        with open(common_dir / "packed-refs", "rb") as f:
            want = b" " + ref.encode() + b"\n"
            for line in f:
                if line.endswith(want) and not line.startswith((b"#", b"^")):
                    return line[: -len(want)].decode("ascii")
    except FileNotFoundError:
        pass
    return None


def read(common_dir: Path, ref: str) -> tuple[bool, str | None]:
    """(known, id): the id `ref` names (None: no such ref), read from its loose file or
    `packed-refs` as git reads them; known is False where git must be asked (see the module
    docstring: reftable, a symbolic ref, a file that is not an id)."""
    if (common_dir / "reftable").exists():
        return False, None
    try:
        with open(common_dir / ref, "rb") as f:
            value = f.read().strip().decode("ascii", "replace")
    except FileNotFoundError:
        return True, _packed(common_dir, ref)
    except OSError:
        return False, None
    if len(value) not in (40, 64) or value.strip("0123456789abcdef"):
        return False, None
    return True, value


def compare_and_swap(common_dir: Path, ref: str, old: str, new: str) -> bool | None:
    """Move `ref` (e.g. refs/roar/ledger) from `old` to `new`. True when moved; False when it
    no longer names `old` or another writer holds its lock (the caller re-reads the tip and
    tries again, as after a refused `git update-ref`); None when git must do it (see the
    module docstring)."""
    if (common_dir / "reftable").exists() or (common_dir / "logs" / ref).exists():
        return None
    path = common_dir / ref
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, _LOCK_FLAGS, 0o666)
    except FileExistsError:
        return False
    except OSError:
        return None  # no folder for it (a ref only in packed-refs, say): git's to do
    moved = False
    try:
        try:
            with open(path, "rb") as f:
                current = f.read().strip().decode("ascii", "replace")
            # git writes a ref with its creator's permissions (core.sharedRepository): kept.
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            packed = _packed(common_dir, ref)
            if packed is None:
                return None  # a new ref: git's to create
            current = packed
        if current.startswith("ref:"):
            return None
        if current != old:
            return False
        os.write(fd, f"{new}\n".encode("ascii"))
        os.close(fd)
        fd = -1
        os.rename(lock, path)
        moved = True
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        if not moved:
            with contextlib.suppress(OSError):
                os.unlink(lock)


def create(common_dir: Path, ref: str, new: str) -> bool | None:
    """Make `ref` name `new`. True when made; False when it exists already; None when git
    must do it (see the module docstring)."""
    if (common_dir / "reftable").exists():
        return None
    path = common_dir / ref
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, _LOCK_FLAGS, 0o666)
    except FileExistsError:
        return False
    except OSError:
        return None
    made = False
    try:
        if path.exists() or _packed(common_dir, ref) is not None:
            return False
        os.write(fd, f"{new}\n".encode("ascii"))
        os.close(fd)
        fd = -1
        os.rename(lock, path)
        made = True
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        if not made:
            with contextlib.suppress(OSError):
                os.unlink(lock)


def delete(common_dir: Path, ref: str) -> bool | None:
    """Remove the loose `ref`. True when removed (or not there); None when git must do it: it
    is also in packed-refs (git rewrites that file), has a reflog, or its lock is held."""
    if (common_dir / "reftable").exists() or (common_dir / "logs" / ref).exists():
        return None
    path = common_dir / ref
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, _LOCK_FLAGS, 0o666)
    except OSError:
        return None
    try:
        if _packed(common_dir, ref) is not None:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(lock)
