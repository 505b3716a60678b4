"""How an append to the ledger becomes a commit, and how the ref moves to it.

A commit is written as one small pack, not yet named by any ref, from the trees on the
changed paths (ledger_trees edits them as raw bytes); then the ref moves by compare-and-swap:
with `fast_start`, git's lock-file protocol on the loose ref (loose_ref) or `git update-ref
REF NEW OLD`; otherwise libgit2's, under the ref's lock. A writer that loses the race backs
off and re-applies its entries on the new tip. Reading the records is ledger.py's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from roargit import TYPE_CHECKING, loose_ref
from roargit.errors import GitFailed, RoarError
from roargit.git import run_git
from roargit.gitobjects import NewEntry, drop_keep, roll_up_small_packs, tree_entries, write_pack
from roargit.ledger_views import CatFileView, Pygit2View

if TYPE_CHECKING:
    from roargit.ledger import Ledger
    from roargit.ledger_trees import TreeEditor

MAX_ATTEMPTS = 400
#: Folders on an append's paths up to which they are read at once by path
#: (CommitWriter._folders_at).
PREFETCH_MAX = 256


def jitter(most: float) -> float:
    """A random pause in [0, most) for a writer that lost a race (not `random`: its import)."""
    return most * int.from_bytes(os.urandom(2), "little") / 65536


class LedgerBusy(RoarError):
    def __init__(self, ref: str, attempts: int) -> None:
        super().__init__(f"could not update {ref} after {attempts} attempts: too many writers")


class CommitWriter:
    """The write side of one Ledger: what it keeps between appends (the tree editor, whose
    trees stay decoded; what the last commit written was made on). Each call is handed the
    ledger whose reader, repository and ref it uses rather than keeping it: a ledger that
    referred to itself through its writer would outlive its last use, and its `cat-file`
    with it, until the cycle collector ran."""

    def __init__(self) -> None:
        self._editor: TreeEditor | None = None
        self._kept_pack = ""
        # The last commit written: its parent's folders and its new objects (append_run keeps
        # the session-index bucket it wrote from them, see index_cache).
        self.parent_folders: dict[tuple[str, ...], tuple[bytes, bytes]] | None = None
        self.written: dict[bytes, tuple[bytes, bytes]] | None = None

    def commit(self, ledger: Ledger, entries: Sequence[NewEntry], message: str) -> str:
        """Add entries in one commit on the ledger ref, retrying until the CAS wins."""
        for attempt in range(MAX_ATTEMPTS):
            self.parent_folders = self.written = None
            old = ledger.tip()
            folders = self._folders_at(ledger, old, entries)
            if old is not None and self._all_present(ledger, old, entries, folders):
                return old
            new = self._write_commit(ledger, old, entries, message, folders)
            self.parent_folders = folders
            try:
                swapped = self.swap(ledger, old, new, message)
            finally:  # the ref names the commit now (or never will): see write_pack's keep
                drop_keep(ledger.paths.common_dir / "objects" / "pack", self._kept_pack)
            if swapped:
                self._roll_up(ledger, len(new) // 2)
                ledger.pin(new)
                return new
            # Lost the race: back off a little (jittered, growing) and re-apply on the new tip.
            time.sleep(jitter(min(0.05, 0.002 * (attempt + 1))))
        raise LedgerBusy(ledger.ref, MAX_ATTEMPTS)

    def _folders_at(
        self, ledger: Ledger, tip: str | None, entries: Sequence[NewEntry]
    ) -> dict[tuple[str, ...], tuple[bytes, bytes]] | None:
        """With `fast_start`, every folder on the entries' paths in commit `tip`, read by path
        in one pipelined exchange: {folder: (raw tree id, tree)}, a folder absent there left
        out. An append then asks git nothing more (the trees to edit, the entries already
        there); reading a level at a time would cost a round trip a level. None where there
        are more folders than PREFETCH_MAX (a run that read thousands of files: its trees
        are read a level at a time, each once), or without `fast_start`."""
        if not ledger.fast_start or tip is None:
            return None
        wanted = dict.fromkeys(e.path[:k] for e in entries for k in range(len(e.path)))
        if len(wanted) > PREFETCH_MAX:
            return None
        commit, *objs = ledger.reader.read_many([tip, *(f"{tip}:{'/'.join(f)}" for f in wanted)])
        found = {
            f: (bytes.fromhex(o.oid), o.data)
            for f, o in zip(wanted, objs, strict=True)
            if o is not None and o.type == "tree"
        }
        if (
            commit is None
            or commit.type != "commit"
            or () not in found
            or not commit.data.startswith(b"tree %s\n" % found[()][0].hex().encode())
        ):
            raise GitFailed(["git", "cat-file", tip], 1, b"", b"ledger commit missing")
        return found

    def _all_present(
        self,
        ledger: Ledger,
        tip: str,
        entries: Sequence[NewEntry],
        folders: dict[tuple[str, ...], tuple[bytes, bytes]] | None = None,
    ) -> bool:
        from roargit.ledger_trees import blob_oid  # lazy: see _write_commit

        if folders is not None:
            listed: dict[tuple[str, ...], dict[str, str]] = {}
            for e in entries:
                where = e.path[:-1]
                if where not in listed:
                    tree = folders.get(where)
                    width = len(tip) // 2
                    listed[where] = (
                        {} if tree is None else {n: o for _, n, o in tree_entries(tree[1], width)}
                    )
                want = e.tree if e.data is None else blob_oid(e.data, len(tip))
                if listed[where].get(e.path[-1]) != want:
                    return False
            return True
        view = (
            CatFileView(ledger.reader, tip) if ledger.fast_start else Pygit2View(ledger.repo, tip)
        )
        for e in entries:
            want = e.tree if e.data is None else blob_oid(e.data, len(tip))
            if view.entry(e.path) != want:
                return False
        return True

    def _write_commit(
        self,
        ledger: Ledger,
        old: str | None,
        entries: Sequence[NewEntry],
        message: str,
        folders: dict[tuple[str, ...], tuple[bytes, bytes]] | None = None,
    ) -> str:
        """A new commit (not yet on the ref), written as one small pack. `folders`: the trees
        on the entries' paths in `old`, read already (`_folders_at`)."""
        # lazy: `roar run` loads it while its command runs (capture._load_after_command)
        from roargit.ledger_trees import TreeEditor, hasher

        if self._editor is None:
            self._editor = TreeEditor()
        many = None
        if folders is not None:
            # The editor asks only for trees their parents name on the entries' paths: all
            # of them are here (read by `_folders_at`); git is asked for any other.
            known = dict(folders.values())
            asked = self._tree_reader(ledger)

            def prefetched(oid: bytes) -> bytes:
                data = known.get(oid)
                return asked(oid) if data is None else data

            read: Callable[[bytes], bytes] = prefetched
            old_root: bytes | None = folders[()][0]
        else:
            read, old_root = self._tree_access(ledger, old)
        if folders is None and ledger.fast_start:
            reader = ledger.reader

            def many(oids: list[bytes]) -> list[bytes]:
                objs = reader.read_many([oid.hex() for oid in oids])
                if any(o is None or o.type != "tree" for o in objs):
                    raise GitFailed(["git", "cat-file"], 1, b"", b"ledger tree missing")
                return [o.data for o in objs if o is not None]

        new, objects = self._editor.commit(read, old_root, entries, message, old, many)
        self.written = objects
        objects_dir = ledger.paths.common_dir / "objects"
        # Kept until the ref moves: a `git gc` meanwhile must not drop the unnamed commit.
        self._kept_pack = write_pack(
            objects_dir / "pack", objects, hasher(len(new) // 2), keep=True
        )
        return new

    def _tree_reader(self, ledger: Ledger) -> Callable[[bytes], bytes]:
        """A tree's content by its raw id, through the `cat-file` reader."""
        reader = ledger.reader

        def read(oid: bytes) -> bytes:
            obj = reader.read(oid.hex())
            if obj is None or obj.type != "tree":
                raise GitFailed(["git", "cat-file", oid.hex()], 1, b"", b"ledger tree missing")
            return obj.data

        return read

    def _tree_access(
        self, ledger: Ledger, old: str | None
    ) -> tuple[Callable[[bytes], bytes], bytes | None]:
        """How `TreeEditor` reads trees on this backend, and the root tree of commit `old`.
        With `fast_start` both come from the `cat-file` reader: no pygit2 import."""
        if ledger.fast_start:
            reader, read = ledger.reader, self._tree_reader(ledger)
            if old is None:
                return read, None
            commit = reader.read(old)
            if commit is None or not commit.data.startswith(b"tree "):
                raise GitFailed(["git", "cat-file", old], 1, b"", b"ledger commit missing")
            return read, bytes.fromhex(commit.data[5 : commit.data.index(b"\n")].decode())
        import pygit2  # in-process appends only (no `fast_start`): loaded with the repository

        repo, oid_of = ledger.repo, pygit2.Oid
        root = None if old is None else repo[old].peel(pygit2.Tree).id.raw
        return (lambda oid: repo.odb.read(oid_of(raw=oid))[1]), root

    def _roll_up(self, ledger: Ledger, width: int) -> None:
        """Keep the number of small packs that in-process appends leave bounded."""
        objects_dir = ledger.paths.common_dir / "objects"
        if roll_up_small_packs(objects_dir, ledger.paths.roar_dir / "pack.lock", width):
            ledger.reopen_repo()  # the decoded trees stay valid

    def swap(
        self, ledger: Ledger, old: str | None, new: str, message: str, scratch: str | None = None
    ) -> bool:
        """Move the ref from `old` to `new` if it still points at `old` (one transaction,
        which also drops a bulk import's scratch ref)."""
        paths, ref = ledger.paths, ledger.ref
        if old is not None and scratch is None:
            if not ledger.fast_start:
                return self._swap_in_process(ledger, old, new, message)
            moved = loose_ref.compare_and_swap(paths.common_dir, ref, old, new)
            if moved is not None:
                return moved
        zero = "0" * len(new)
        script = f"update {ref} {new} {old or zero}\n"
        if scratch:
            script += f"delete {scratch}\n"
        proc = run_git(
            ["update-ref", "-m", f"roar: {message[:60]}", "--stdin"],
            paths.git_dir,
            input=script.encode(),
            check=False,
        )
        if proc.returncode == 0:
            return True
        if scratch:
            run_git(["update-ref", "-d", scratch], paths.git_dir, check=False)
        err = proc.stderr.decode(errors="replace")
        if "lock" in err or "but expected" in err or "is at" in err or "already exists" in err:
            return False
        raise GitFailed(["git", "update-ref", "--stdin"], proc.returncode, proc.stdout, proc.stderr)

    def _swap_in_process(self, ledger: Ledger, old: str, new: str, message: str) -> bool:
        """The same compare-and-swap through libgit2, without a `git` process: it takes the
        ref's lock file (the one git takes), checks the ref still names `old` under the lock,
        and writes `new` (git_reference_set_target, which compares against the target read).
        Creating the ref stays with update-ref: libgit2 checks absence before locking."""
        import pygit2  # in-process swaps only (no `fast_start`): loaded with the repository

        try:
            ref = ledger.repo.references[ledger.ref]
        except KeyError:
            return False  # deleted meanwhile: the caller re-reads the tip
        if ref.type != pygit2.enums.ReferenceType.DIRECT or str(ref.target) != old:
            return False
        try:
            ref.set_target(new, f"roar: {message[:60]}")
        except (OSError, pygit2.GitError) as e:
            text = str(e)
            if "lock" in text or "does not match" in text:
                return False  # another writer holds the lock, or moved the ref
            raise
        return True
