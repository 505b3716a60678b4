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


class _Lock:
    """`<ref>.lock`, taken as git takes it (O_CREAT|O_EXCL: FileExistsError while another
    writer holds it); removed when the block ends unless `put` renamed it over the ref."""

    def __init__(self, path: Path) -> None:
        self.ref_path = path
        self.path = path.with_name(path.name + ".lock")
        self.fd = os.open(self.path, _LOCK_FLAGS, 0o666)
        self.done = False

    def put(self, new: str) -> None:
        """Write `new` and rename the lock over the ref: readers see the old id or this one."""
        os.write(self.fd, f"{new}\n".encode("ascii"))
        os.close(self.fd)
        self.fd = -1
        os.rename(self.path, self.ref_path)
        self.done = True

    def __enter__(self) -> _Lock:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        if not self.done:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def compare_and_swap(common_dir: Path, ref: str, old: str, new: str) -> bool | None:
    """Move `ref` (e.g. refs/roar/ledger) from `old` to `new`. True when moved; False when it
    no longer names `old` or another writer holds its lock (the caller re-reads the tip and
    tries again, as after a refused `git update-ref`); None when git must do it (see the
    module docstring)."""
    if (common_dir / "reftable").exists() or (common_dir / "logs" / ref).exists():
        return None
    path = common_dir / ref
    try:
        lock = _Lock(path)
    except FileExistsError:
        return False
    except OSError:
        return None  # no folder for it (a ref only in packed-refs, say): git's to do
    with lock:
        try:
            with open(path, "rb") as f:
                current = f.read().strip().decode("ascii", "replace")
            # git writes a ref with its creator's permissions (core.sharedRepository): kept.
            os.fchmod(lock.fd, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            packed = _packed(common_dir, ref)
            if packed is None:
                return None  # a new ref: git's to create
            current = packed
        if current.startswith("ref:"):
            return None
        if current != old:
            return False
        lock.put(new)
        return True


def create(common_dir: Path, ref: str, new: str) -> bool | None:
    """Make `ref` name `new`. True when made; False when it exists already; None when git
    must do it (see the module docstring)."""
    if (common_dir / "reftable").exists():
        return None
    path = common_dir / ref
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _Lock(path)
    except FileExistsError:
        return False
    except OSError:
        return None
    with lock:
        if path.exists() or _packed(common_dir, ref) is not None:
            return False
        lock.put(new)
        return True


def delete(common_dir: Path, ref: str) -> bool | None:
    """Remove the loose `ref`. True when removed (or not there); None when git must do it: it
    is also in packed-refs (git rewrites that file), has a reflog, or its lock is held."""
    if (common_dir / "reftable").exists() or (common_dir / "logs" / ref).exists():
        return None
    path = common_dir / ref
    try:
        lock = _Lock(path)
    except OSError:
        return None
    with lock:
        if _packed(common_dir, ref) is not None:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
