"""The one gate for paths that come out of records, and the one way roargit writes by them.

A record fetched from another clone is untrusted input: its paths (inputs, outputs, folder
manifest entries, the working folder, code paths) may try to climb out of the repository
(`../../x`), name an absolute place, or reach into `.git`. `check` accepts only a normalised
relative path inside its root, like git's `verify_path` does for a tree entry; a recorded
absolute path (data outside the repository, `/mnt/datasets/…`) may be read where it lies,
never written.

A valid name can still lead out through a symbolic link already on disk (a committed
`data -> /etc`). `Root` writes below one folder by walking each component with
`openat(O_NOFOLLOW | O_DIRECTORY)` from the folder's own descriptor, creating what is missing
with `mkdirat`, and creates the file under a temporary name with `O_NOFOLLOW | O_EXCL`
before renaming it into place within the same folder descriptor: no symbolic link is ever
followed below the root, and a reader never sees a half-written file.

Text from a record is printed through `escape`, so that a control character in it (a carriage
return, an ANSI sequence, a bidi override) shows as what it is instead of acting on the
terminal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from roargit import TYPE_CHECKING
from roargit.errors import RoarError
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any, BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Source(NamedTuple):
    """The record a path came from, and the remote that record arrived from (None: made in
    this clone), so that a refusal can say whose path it was."""

    record: str
    origin: str | None = None


def source_of(ledger: Any, record_id: str) -> Source:
    """The `Source` of a record in `ledger` (a ledger that cannot tell the origin gives None)."""
    origin = getattr(ledger, "origin", None)
    found = origin(record_id) if callable(origin) else None
    return Source(record_id, found if isinstance(found, str) else None)


class UnsafePath(RoarError):
    """A recorded path that would read or write outside its root: refused, and nothing was
    written by it."""

    def __init__(self, path: str, source: Source | None = None, why: str = "") -> None:
        self.path = path
        self.source = source
        self.why = why
        shown = f"'{escape(path)}'"
        if why:
            shown += f" ({why})"
        if source is None:
            head = f"an unsafe path {shown}"
        else:
            origin = f" from {escape(source.origin)}" if source.origin else ""
            head = f"record {source.record[:12]}{origin} names an unsafe path {shown}"
        super().__init__(f"{head}: refused; nothing was written")


# C0 controls, DEL, C1 controls, and the Unicode bidirectional overrides and isolates, which
# reorder what a terminal shows (CVE-2021-42574, "Trojan Source").
_BIDI = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C])
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _needs_escape(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o < 0xA0 or o in _BIDI or 0xDC80 <= o <= 0xDCFF


def escape(text: str) -> str:
    """`text` made inert for a terminal: control characters as `\\r`, `\\n`, `\\t` or
    `\\xNN` (ESC is `\\x1b`), bidi controls as `\\uNNNN`, and bytes that were not UTF-8
    (kept as surrogate escapes) as `\\xNN`. Everything else is unchanged."""
    if text.isprintable():  # the common case; every character escaped below is not
        return text
    out = []
    for ch in text:
        if not _needs_escape(ch):
            out.append(ch)
            continue
        o = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}")
    return "".join(out)


def problem(path: str, *, absolute_ok: bool = False, root_ok: bool = False) -> str:
    """Why `path` is not a safe recorded path ("" when it is). One trailing '/' (a folder
    artifact) is allowed."""
    if not path:
        return "it is empty"
    if "\0" in path:
        return "it holds a NUL byte"
    body = path[:-1] if path.endswith("/") and len(path) > 1 else path
    if body.startswith("/"):
        if not absolute_ok:
            return "it is absolute"
        parts = body[1:].split("/")
        if body == "/":
            return "it is the root folder"
    else:
        if body == "." and root_ok:
            return ""
        parts = body.split("/")
    for part in parts:
        if part in ("", "."):
            return "it is not normalised"
        if part == "..":
            return "it climbs out with '..'"
        if part.lower() == ".git":
            return "it reaches into .git"
    return ""


def check(
    path: str, source: Source | None = None, *, absolute_ok: bool = False, root_ok: bool = False
) -> str:
    """`path` without its trailing '/', if it is a normalised relative path inside its root
    (`absolute_ok`: or a normalised absolute one, to be read in place; `root_ok`: or "." for
    the root itself); `UnsafePath` otherwise."""
    why = problem(path, absolute_ok=absolute_ok, root_ok=root_ok)
    if why:
        raise UnsafePath(path, source, why)
    return path[:-1] if path.endswith("/") and len(path) > 1 else path


def rel_or_abs(path: str, root: str) -> str:
    """How an absolute `path` is recorded: relative to the repository `root` when inside it
    ("." for the root itself), absolute otherwise."""
    if path == root:
        return "."
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path


def abs_path(recorded: str, root: Path) -> str:
    """Where a recorded path lies: an absolute one as it is, a relative one under `root`.
    Check an untrusted path (`check`) before writing to it."""
    return recorded if recorded.startswith("/") else str(root / recorded)


def join(folder: str, entry: str, source: Source | None = None) -> str:
    """A folder's recorded path and one of its manifest entries, checked as one path."""
    inner = check(entry, source)
    return check(f"{folder.rstrip('/')}/{inner}", source)


class Root:
    """A folder that writes stay below (see the module docstring). `source` names the record
    the paths came from, for messages. Use as a context manager, or `close()`."""

    def __init__(self, path: str | os.PathLike[str], source: Source | None = None) -> None:
        self.path = os.fspath(path)
        self.source = source
        # The root itself is the user's (their repository, or a folder they named): a link
        # there is theirs to make, so it is followed; nothing below it is.
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._parent: tuple[str, int] | None = None  # the last folder walked, kept open

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._forget()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _forget(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _refuse(self, rel: str, why: str, source: Source | None) -> UnsafePath:
        return UnsafePath(rel, source or self.source, why)

    def _walk(self, rel: str, parts: list[str], create: bool, source: Source | None) -> int | None:
        """An open descriptor of folder `parts` below the root (owned by the caller), or None
        when one is missing and `create` is false."""
        fd = os.dup(self.fd)
        try:
            for i, name in enumerate(parts):
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                    nxt = self._open_dir(fd, name, rel, parts[: i + 1], source)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    nxt = self._open_dir(fd, name, rel, parts[: i + 1], source)
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open_dir(
        self, fd: int, name: str, rel: str, upto: list[str], source: Source | None
    ) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        here = "/".join(upto)
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise self._refuse(rel, f"'{here}' is a symbolic link", source)
        raise self._refuse(rel, f"'{here}' is not a folder", source)

    def _parent_fd(self, rel: str, parts: list[str], source: Source | None) -> int:
        folder = "/".join(parts)
        if self._parent is not None and self._parent[0] == folder:
            return self._parent[1]
        fd = self._walk(rel, parts, True, source)
        assert fd is not None
        self._forget()
        self._parent = (folder, fd)
        return fd

    def preflight(self, rel: str, source: Source | None = None) -> None:
        """Refuse `rel` now if writing it would: a bad name, a symbolic link or a file among
        the folders that exist on its way, or a link or folder where the file would go.
        Creates nothing."""
        self.exists(rel, source)

    def _check_final(self, fd: int, name: str, rel: str, source: Source | None) -> bool:
        """Whether `name` exists (as a regular file) in folder `fd`; refuses anything else."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise self._refuse(rel, "it is a symbolic link", source)
        if not stat.S_ISREG(st.st_mode):
            raise self._refuse(rel, "something other than a file is there", source)
        return True

    def makedirs(self, rel: str, source: Source | None = None) -> str:
        """Create folder `rel` (and its parents) below the root, following no link; "." is
        the root. Returns its path."""
        rel = check(rel, source or self.source, root_ok=True)
        if rel != ".":
            fd = self._walk(rel, rel.split("/"), True, source)
            assert fd is not None
            os.close(fd)
        return self.path if rel == "." else os.path.join(self.path, rel)

    def exists(self, rel: str, source: Source | None = None) -> bool:
        """Whether a regular file is at `rel`; refuses what `write` would. Creates nothing."""
        rel = check(rel, source or self.source)
        *parents, name = rel.split("/")
        fd = self._existing_parent(rel, parents, source)
        return fd is not None and self._check_final(fd, name, rel, source)

    def _existing_parent(self, rel: str, parts: list[str], source: Source | None) -> int | None:
        """`_parent_fd` without creating anything: None when a folder on the way is missing."""
        folder = "/".join(parts)
        if self._parent is not None and self._parent[0] == folder:
            return self._parent[1]
        fd = self._walk(rel, parts, False, source)
        if fd is not None:
            self._forget()
            self._parent = (folder, fd)
        return fd

    def write(
        self,
        rel: str,
        fill: Callable[[BinaryIO], object],
        source: Source | None = None,
        *,
        replace: bool = True,
    ) -> str:
        """Create or replace the file at `rel` with what `fill` writes to it; returns its path.

        The bytes go to a temporary name in the same folder first and are renamed into place
        only when `fill` returned: on any error (a corrupt blob found at the end of a
        stream, say) the old file is untouched and nothing is left behind."""
        rel = check(rel, source or self.source)
        *parents, name = rel.split("/")
        fd = self._parent_fd(rel, parents, source)
        if self._check_final(fd, name, rel, source) and not replace:
            raise FileExistsError(errno.EEXIST, "exists", os.path.join(self.path, rel))
        tmp = f".{name[:64]}.{os.urandom(6).hex()}.roar-tmp"
        # 0o666 and the umask, as for any file the user creates.
        out = os.open(tmp, _NEW_FILE, 0o666, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as f:
                fill(f)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
            raise
        return os.path.join(self.path, rel)

    def open_stream(self, rel: str, source: Source | None = None) -> int:
        """An emptied file at `rel`, open for writing (a descriptor the caller owns), as a
        shell's `> rel` gives a command: made below the root, following no link."""
        rel = check(rel, source or self.source)
        *parents, name = rel.split("/")
        fd = self._parent_fd(rel, parents, source)
        self._check_final(fd, name, rel, source)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, 0o666, dir_fd=fd)

    def copy_in(self, rel: str, src: str, source: Source | None = None) -> str:
        """`write` with the bytes of the file at `src` (a path this process may read)."""
        import shutil  # lazy: only copying a file in needs it, and every command loads this

        def fill(f: BinaryIO) -> None:
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f, 1 << 20)

        return self.write(rel, fill, source)
