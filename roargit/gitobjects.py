"""Git objects through the user's `git`, for commands that must start fast.

`import pygit2` costs 60-100 ms on these machines, more than `roar run`'s whole fixed-cost
budget, so the capture path reads objects through one long-lived
`git cat-file --batch-command` and writes a ledger commit with one `git fast-import`
(which builds the trees itself). Query commands, which read thousands of objects, use pygit2
in-process instead (ledger.py chooses).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from roargit.errors import GitFailed, RoarError
from roargit.git import spawn_git

TREE_MODE = 0o40000


class GitTooOld(RoarError):
    pass


@dataclass(frozen=True, slots=True)
class Obj:
    oid: str
    type: str  # "blob", "tree", "commit" or "tag"
    data: bytes


class ObjectReader:
    """Reads objects by name (`<rev>:<path>`, an oid, `HEAD^{tree}`) from one `cat-file`."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            self._proc = spawn_git(["cat-file", "--batch-command"], self.git_dir)
        return self._proc

    def _ask(self, command: str, name: str) -> tuple[str, str, int] | None:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{command} {name}\n".encode("utf-8", "surrogateescape"))
        proc.stdin.flush()
        header = proc.stdout.readline()
        if not header:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if "batch-command" in err or "usage" in err:
                raise GitTooOld("git 2.36 or newer is needed (cat-file --batch-command)")
            raise GitFailed(["git", "cat-file", "--batch-command"], proc.wait(), b"", err.encode())
        fields = header.split()
        if len(fields) != 3 or fields[1] == b"missing" or fields[-1] == b"missing":
            return None
        return fields[0].decode(), fields[1].decode(), int(fields[2])

    def info(self, name: str) -> tuple[str, str] | None:
        """(oid, type) of the named object, or None."""
        found = self._ask("info", name)
        return None if found is None else (found[0], found[1])

    def read(self, name: str) -> Obj | None:
        found = self._ask("contents", name)
        if found is None:
            return None
        oid, kind, size = found
        assert self._proc is not None and self._proc.stdout is not None
        data = self._proc.stdout.read(size + 1)[:-1]  # the content, then a newline
        return Obj(oid, kind, data)

    def close(self) -> None:
        """End the `cat-file` (closing its input makes it exit)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait()

    def __del__(self) -> None:
        self.close()


def tree_entries(data: bytes, oid_bytes: int = 20) -> list[tuple[int, str, str]]:
    """(mode, name, oid) of a raw tree object: `<octal mode> <name>\\0<binary oid>` each.
    `oid_bytes` is 20 in SHA-1 repositories, 32 in SHA-256 ones."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        space = data.index(b" ", i)
        nul = data.index(b"\0", space)
        mode = int(data[i:space], 8)
        name = os.fsdecode(data[space + 1 : nul])
        out.append((mode, name, data[nul + 1 : nul + 1 + oid_bytes].hex()))
        i = nul + 1 + oid_bytes
    return out


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A path to add in a commit: a blob with `data`, or an existing tree by oid."""

    path: tuple[str, ...]
    data: bytes | None = None
    tree: str | None = None


class FastImport:
    """Commits written to `ref` by one `git fast-import`, which builds every tree on the
    changed paths itself. Small imports are exploded into loose objects
    (fastimport.unpackLimit), so no pack piles up per `roar run`; big ones stay one pack."""

    def __init__(self, git_dir: Path, ref: str, parent: str | None) -> None:
        self.ref = ref.encode()
        self.parent = parent
        self._mark = 0
        self._last: int | None = None
        self._proc = spawn_git(["fast-import", "--quiet", "--force"], git_dir)
        self._write(b"feature done\n")

    def _write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)

    def commit(self, entries: Sequence[NewEntry], message: str, when: int | None = None) -> None:
        marks: dict[bytes, int] = {}
        for e in entries:
            if e.data is not None and e.data not in marks:
                self._mark += 1
                marks[e.data] = self._mark
                self._write(b"blob\nmark :%d\ndata %d\n%s\n" % (self._mark, len(e.data), e.data))
        self._mark += 1
        msg = message.encode()
        head = [
            b"commit %s\nmark :%d\n" % (self.ref, self._mark),
            b"committer roar <roar@localhost> %d +0000\n" % (when or int(time.time())),
            b"data %d\n%s\n" % (len(msg), msg),
        ]
        if self._last is None and self.parent:
            head.append(b"from %s\n" % self.parent.encode())
        lines = []
        for e in entries:
            path = "/".join(e.path).encode()
            if e.data is not None:
                lines.append(b"M 100644 :%d %s\n" % (marks[e.data], path))
            else:
                lines.append(b"M 040000 %s %s\n" % (str(e.tree).encode(), path))
        self._write(b"".join(head) + b"".join(lines) + b"\n")
        self._last = self._mark

    def finish(self) -> str:
        """Close the stream; the id of the last commit."""
        if self._last is None:
            raise ValueError("fast-import: no commit was written")
        self._write(b"get-mark :%d\ndone\n" % self._last)
        out, err = self._proc.communicate()
        if self._proc.returncode != 0:
            raise GitFailed(["git", "fast-import"], self._proc.returncode, out, err)
        return out.split()[-1].decode()


def fast_import_commit(
    git_dir: Path, ref: str, parent: str | None, entries: Sequence[NewEntry], message: str
) -> str:
    """Write one commit (parent + entries) to `ref`; returns its id."""
    writer = FastImport(git_dir, ref, parent)
    writer.commit(entries, message)
    return writer.finish()


def resolve_many(reader: ObjectReader, names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{name: (oid, type)} for the names that exist."""
    out = {}
    for name in names:
        found = reader.info(name)
        if found is not None:
            out[name] = found
    return out
