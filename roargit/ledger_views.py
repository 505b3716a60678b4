"""Reading a ledger commit's trees: in process through pygit2, or through one long-lived
`git cat-file` (ObjectReader) for commands whose start-up cannot pay pygit2's import.
Both answer the same questions (a blob, the names under a folder, an entry's id) for paths
given as tuples of names; Ledger picks one and may switch (SWITCH_TO_PYGIT2_AT).
"""

from __future__ import annotations

from collections.abc import Sequence

from roargit import TYPE_CHECKING
from roargit.gitobjects import ObjectReader, tree_entries

if TYPE_CHECKING:
    from typing import Any

    import pygit2


GIT_TREE = 2  # pygit2.enums.ObjectType.TREE, without importing pygit2 to name it


class Pygit2View:
    """Reads in-process through pygit2: no round trip a read, once its import is paid."""

    def __init__(self, repo: pygit2.Repository, tip: str) -> None:
        import pygit2  # this view only: its import is what `fast_start` avoids

        self.repo = repo
        self.root = repo[tip].peel(pygit2.Tree)
        self.subtrees: dict[tuple[str, ...], Any] = {}

    def lookup(self, parts: tuple[str, ...]) -> Any:
        obj: Any = self.root
        start = 0
        # Start from the deepest subtree already walked on this path.
        for k in range(len(parts), 0, -1):
            hit = self.subtrees.get(parts[:k])
            if hit is not None:
                obj, start = hit, k
                break
        for k in range(start, len(parts)):
            part = parts[k]
            if obj.type != GIT_TREE or part not in obj:
                return None
            obj = obj[part]
            if obj.type == GIT_TREE:
                self.subtrees[parts[: k + 1]] = obj
        return obj

    def blob(self, parts: tuple[str, ...]) -> bytes | None:
        obj = self.lookup(parts)
        return None if obj is None or obj.type == GIT_TREE else bytes(obj.data)

    def names(self, parts: tuple[str, ...]) -> list[str]:
        obj = self.lookup(parts)
        return [] if obj is None or obj.type != GIT_TREE else [e.name for e in obj]

    def entry(self, parts: tuple[str, ...]) -> str | None:
        obj = self.lookup(parts)
        return None if obj is None else str(obj.id)

    def listing(self, parts: tuple[str, ...]) -> list[tuple[str, str]]:
        """(name, object id) of each entry under the folder `parts`."""
        obj = self.lookup(parts)
        return [] if obj is None or obj.type != GIT_TREE else [(e.name, str(e.id)) for e in obj]

    def blobs(self, many: Sequence[tuple[str, ...]]) -> list[bytes | None]:
        return [self.blob(parts) for parts in many]

    def names_many(self, many: Sequence[tuple[str, ...]]) -> list[list[str]]:
        return [self.names(parts) for parts in many]


class CatFileView:
    """Reads through one `git cat-file --batch-command`: a pipe round trip a read, no import."""

    def __init__(self, reader: ObjectReader, tip: str) -> None:
        self.reader = reader
        self.tip = tip
        self.width = len(tip) // 2
        self._names: dict[tuple[str, ...], list[str]] = {}

    def blob(self, parts: tuple[str, ...]) -> bytes | None:
        obj = self.reader.read(f"{self.tip}:{'/'.join(parts)}")
        return None if obj is None or obj.type != "blob" else obj.data

    def names(self, parts: tuple[str, ...]) -> list[str]:
        return self.names_many([parts])[0]

    def entry(self, parts: tuple[str, ...]) -> str | None:
        found = self.reader.info(f"{self.tip}:{'/'.join(parts)}")
        return None if found is None else found[0]

    def listing(self, parts: tuple[str, ...]) -> list[tuple[str, str]]:
        """(name, object id) of each entry under the folder `parts`."""
        obj = self.reader.read(f"{self.tip}:{'/'.join(parts)}")
        if obj is None or obj.type != "tree":
            return []
        return [(name, oid) for _, name, oid in tree_entries(obj.data, self.width)]

    def blobs(self, many: Sequence[tuple[str, ...]]) -> list[bytes | None]:
        """`blob` of each, in one pipelined exchange (`ObjectReader.read_many`)."""
        objs = self.reader.read_many([f"{self.tip}:{'/'.join(parts)}" for parts in many])
        return [None if o is None or o.type != "blob" else o.data for o in objs]

    def names_many(self, many: Sequence[tuple[str, ...]]) -> list[list[str]]:
        """`names` of each, the ones not listed yet read in one pipelined exchange."""
        todo = [parts for parts in dict.fromkeys(many) if parts not in self._names]
        objs = self.reader.read_many([f"{self.tip}:{'/'.join(parts)}" for parts in todo])
        for parts, obj in zip(todo, objs, strict=True):
            self._names[parts] = (
                []
                if obj is None or obj.type != "tree"
                else [name for _, name, _ in tree_entries(obj.data, self.width)]
            )
        return [self._names[parts] for parts in many]
