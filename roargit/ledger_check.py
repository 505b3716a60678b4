"""A fetched ledger is untrusted input: the one gate its entries pass before they join ours.

Another clone's ledger (`refs/roar/remotes/<remote>/ledger`, brought by `git fetch`) may have
been crafted. Merging it is a union keyed by name (every name is derived from content), with
three rules:

- where the two sides disagree on a name, the local entry always wins;
- an entry of the other side is taken only where its shape is right: a record blob under its
  fan-out path whose bytes hash (BLAKE3) to the id its name gives and decode as the record that
  place holds, a tree where a tree belongs (`code/<tree id>` a tree of that id);
- whatever fails is left out and quarantined: listed, with why, in
  `.git/roar/quarantine/<remote>.json` for `roar fsck`, and never blocks a query or a run.

Only what differs is read: a subtree whose id is the same on both sides is skipped whole, so
merging a fetch of a few records reads a few dozen objects however big the ledger is.

The same checks serve `roar fsck` (`check_tree`), which walks the whole local ledger.
`.git/roar/origins` remembers which records arrived from which remote (derived, local state),
so that a message about a record can say where it came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from roargit import TYPE_CHECKING, records
from roargit.codec import record_id as blake3_hex
from roargit.errors import RecordCorrupt, RecordTooNew
from roargit.folders import decode_manifest
from roargit.ledger_layout import folder_key, input_set, read_input_set
from roargit.pathguard import escape
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from typing import Any

    import pygit2

TOPS = frozenset(
    {"artifacts", "code", "folders", "inputsets", "manifests", "runs", "sessions", "verifications"}
)
TREE_MODE = 0o040000
BLOB_MODES = frozenset({0o100644})
QUARANTINE_DIR = "quarantine"
ORIGINS_FILE = "origins"
_HEX = "0123456789abcdef"


class Rejected(NamedTuple):
    """An entry of a fetched ledger that was left out, and why."""

    path: str  # "runs/ab/cd/<id>", as in the ledger's tree
    oid: str  # its git object id
    reason: str


class Union(NamedTuple):
    tree: str | None  # the merged tree's id; None when nothing at all was accepted
    rejected: list[Rejected]
    added: list[str]  # ids of the records (runs, sessions, manifests) taken from the other side


def _quote(remote: str) -> str:
    """A remote's name as one file name (git allows `/` in it), reversibly."""
    return remote.replace("%", "%25").replace("/", "%2F").replace(" ", "%20")


def _unquote(text: str) -> str:
    return text.replace("%20", " ").replace("%2F", "/").replace("%25", "%")


def is_hex(text: str, length: int) -> bool:
    return len(text) == length and not text.strip(_HEX)


def printable(text: str) -> str:
    """`text` made inert for a terminal (pathguard.escape): anything that came from a record
    or a fetched tree may hold terminal escapes."""
    if text.isprintable():
        return text
    return escape(text)


def decode_record(data: bytes, name: str, source: str | None) -> records.Record:
    """records.decode, naming where the record came from when that is known."""
    return records.decode(data, name, source=source)


# -- the shape of a ledger tree -----------------------------------------------------------

# What a path holds: ("tree",), ("code",) a code tree kept whole, or ("blob", what, id, extra):
# `what` is "run", "session", "manifest", "step", "verification" or "set"; `id` what the
# bytes must hash to; `extra` a condition the decoded run must meet (("p"|"c", artifact hash)
# / ("session", id) / ("folder p"|"folder c", key) / ("set", set id)), or for a set, the
# artifact it must hold (("member", hash)).
if TYPE_CHECKING:
    Slot = tuple[Any, ...]


def expect(parts: tuple[str, ...]) -> Slot | str:
    """What belongs at `parts` in a ledger tree, or why nothing may be there."""
    top, depth, name = parts[0], len(parts), parts[-1]
    bad = "not a ledger entry"
    if depth == 1:
        return ("tree",) if top in TOPS else bad
    if top == "code":
        ok = depth == 2 and (is_hex(name, 40) or is_hex(name, 64))
        return ("code",) if ok else bad
    if top in ("runs", "manifests", "artifacts", "inputsets", "verifications"):
        # <top>/ab/cd/<id>: two fanout levels, then the id they begin.
        if depth in (2, 3):
            return ("tree",) if is_hex(name, 2) else bad
        if depth == 4:
            if not is_hex(name, 64) or name[:2] != parts[1] or name[2:4] != parts[2]:
                return bad
            if top == "runs":
                return ("blob", "run", name, None)
            if top == "manifests":
                return ("blob", "manifest", name, None)
            return ("tree",)
        if depth != 5:
            return bad
        if top == "artifacts":
            if name[:2] == "s." and is_hex(name[2:], 64):
                return ("blob", "set", name[2:], ("member", parts[3]))
            return _index_slot(name, (name[:1], parts[3]))
        if top == "inputsets":
            # inputsets/ab/cd/<set id>/set, and /c.<run id> for each run that read that set.
            if name == "set":
                return ("blob", "set", parts[3], None)
            if name[:2] == "c." and is_hex(name[2:], 64):
                return ("blob", "run", name[2:], ("set", parts[3]))
        if top == "verifications" and is_hex(name, 64):
            # verifications/ab/cd/<run id>/<verification id>: the record must verify that run.
            return ("blob", "verification", name, ("verifies", parts[3]))
        return bad
    if top == "sessions":
        if depth == 2:
            return ("tree",) if is_hex(name, 2) else bad
        if depth == 3:
            return ("tree",) if is_hex(name, 64) and name[:2] == parts[1] else bad
        if depth == 4:
            if name == "session":
                return ("blob", "session", parts[2], None)
            return ("tree",) if is_hex(name, 2) else bad
        if depth == 5 and is_hex(name, 64) and name[:2] == parts[3]:
            return ("blob", "run", name, ("session", parts[2]))
        if depth == 5 and name[:2] == "i." and is_hex(name[2:], 64) and name[2:4] == parts[3]:
            # The session's index entry of that run: checked against the run's own record.
            return ("blob", "step", name[2:], ("session", parts[2]))
        return bad
    if top == "folders":
        if depth == 2:
            return ("tree",) if is_hex(name, 2) else bad
        if depth == 3:
            return ("tree",) if is_hex(name, 64) and name[:2] == parts[1] else bad
        if depth == 4:
            return _index_slot(name, (f"folder {name[:1]}", parts[2]))
        return bad
    return bad


def _index_slot(name: str, extra: tuple[str, str]) -> Slot | str:
    """`p.<run id>` / `c.<run id>`: a run that produced / consumed what the folder names."""
    if name[:2] in ("p.", "c.") and is_hex(name[2:], 64):
        return ("blob", "run", name[2:], extra)
    return "not a ledger entry"


class _Checker:
    """Checks entries of one ledger tree; each blob is hashed and decoded once, however many
    index entries name it (a run's blob sits under runs/, sessions/ and each artifact)."""

    def __init__(self, repo: pygit2.Repository, source: str | None, roots: list[Any]) -> None:
        self.repo = repo
        self.source = source
        self.roots = roots  # where a run's own entry is looked for: ours first, then theirs
        self.rejected: list[Rejected] = []
        self.added: list[str] = []
        self._seen: dict[Any, tuple[str, Any]] = {}  # blob oid -> (blake3, record | reason)
        self._named: dict[str, str | None] = {}  # set id -> why its artifacts do not name it

    def reject(self, parts: tuple[str, ...], oid: Any, reason: str) -> None:
        self.rejected.append(Rejected("/".join(parts), str(oid), reason))

    def blob_problem(self, slot: Slot, entry: Any) -> str | None:
        """Why this blob may not stand where `slot` says (None: it may)."""
        _kind, what, record_id, extra = slot
        if entry.filemode not in BLOB_MODES:
            return "not a regular file entry where a record belongs"
        if what == "step":
            return self._step_problem(record_id, extra[1], entry)
        if what == "set":
            return self._set_problem(record_id, extra, entry)
        found = self._seen.get(entry.id)
        if found is None:
            found = self._seen[entry.id] = self._decode(what, record_id, bytes(entry.data))
        digest, record = found
        if digest != record_id:
            return f"{what} {record_id[:12]}: its content does not match its id"
        if isinstance(record, str):
            return record
        if what == "manifest":
            return None
        if what == "verification":
            if not isinstance(record, records.VerificationRecord):
                return f"verification {record_id[:12]}: is not a verification record"
            if extra is not None and record.run != extra[1]:
                return f"verification {record_id[:12]} does not verify run {extra[1][:12]}"
            return None
        want = records.RunRecord if what == "run" else records.SessionRecord
        if not isinstance(record, want):
            return f"{what} {record_id[:12]}: is not a {what} record"
        if extra is not None:
            if self._run_entry(record_id) != entry.id:
                return f"run {record_id[:12]} is not filed under runs/ with these bytes"
            return _index_problem(record, record_id, extra)
        return None

    def _step_problem(self, run_id: str, session_id: str, entry: Any) -> str | None:
        """Why a session index entry may not stand (None: it is what the run's own record,
        filed under runs/, says: an index can never tell another story than its records)."""
        name = f"index entry of run {run_id[:12]}"
        try:
            got = records.decode_step_index(bytes(entry.data), name, self.source)
        except (RecordCorrupt, RecordTooNew) as exc:
            return str(exc)
        oid = self._run_entry(run_id)
        if oid is None:
            return f"{name}: the run is not filed under runs/"
        found = self._seen.get(oid)
        if found is None:
            found = self._seen[oid] = self._decode("run", run_id, self.repo[oid].read_raw())
        digest, run = found
        if digest != run_id or not isinstance(run, records.RunRecord):
            return f"{name}: the run's record cannot be read"
        if run.session != session_id or got != records.StepIndex.of_run(run_id, run):
            return f"{name} does not match the run's record"
        return None

    def _set_problem(self, set_id: str, extra: Any, entry: Any) -> str | None:
        """Why an input set's blob may not stand: as the set itself, its bytes must hash to
        its id and every artifact it holds must name it (`s.<set id>`, the same blob: a
        writer that finds the set skips them, so a set must never stand without them); under
        an artifact, it must be the set filed under inputsets/ and hold that artifact."""
        name = f"input set {set_id[:12]}"
        found = self._seen.get(entry.id)
        if found is None:
            found = self._seen[entry.id] = self._decode("set", set_id, bytes(entry.data))
        digest, hashes = found
        if digest != set_id:
            return f"{name}: its content does not match its id"
        if isinstance(hashes, str):
            return hashes
        if extra is not None:
            if self._entry(f"inputsets/{set_id[:2]}/{set_id[2:4]}/{set_id}/set") != entry.id:
                return f"{name} is not filed under inputsets/ with these bytes"
            if extra[1] not in hashes:
                return f"{name} does not hold artifact {extra[1][:12]}"
        return self._set_named(set_id, entry.id, hashes)

    def _set_named(self, set_id: str, oid: Any, hashes: frozenset[str]) -> str | None:
        """Why not every artifact of the set names it (None: all do); once a set."""
        if set_id not in self._named:
            self._named[set_id] = None
            for h in sorted(hashes):
                if self._entry(f"artifacts/{h[:2]}/{h[2:4]}/{h}/s.{set_id}") != oid:
                    self._named[set_id] = (
                        f"input set {set_id[:12]}: artifact {h[:12]} does not name it"
                    )
                    break
        return self._named[set_id]

    def _entry(self, path: str) -> Any:
        """The object id at `path` in the first root that has it."""
        for root in self.roots:
            if root is None:
                continue
            try:
                return root[path].id
            except KeyError:
                continue
        return None

    def _run_entry(self, run_id: str) -> Any:
        """The object id of `runs/ab/cd/<run id>` in the first root that has it (the local
        one wins a merge, so an index entry must agree with it)."""
        return self._entry(f"runs/{run_id[:2]}/{run_id[2:4]}/{run_id}")

    def _decode(self, what: str, record_id: str, data: bytes) -> tuple[str, Any]:
        digest = blake3_hex(data)
        if digest != record_id:
            return digest, None
        if what == "set":
            hashes = read_input_set(data)
            if hashes is None:
                return digest, f"input set {record_id[:12]} is corrupt: not one hash a line, sorted"
            return digest, frozenset(hashes)
        name = f"{what} {record_id[:12]}"
        try:
            if what == "manifest":
                decode_manifest(data, name, source=self.source)
                return digest, True
            return digest, decode_record(data, name, self.source)
        except (RecordCorrupt, RecordTooNew) as exc:
            return digest, str(exc)


def _index_problem(run: Any, run_id: str, extra: tuple[str, str]) -> str | None:
    """Why a run's blob may not stand in this index entry (None: it names the run truly)."""
    tag, value = extra
    name = f"run {run_id[:12]}"
    if tag == "session":
        return None if run.session == value else f"{name} is not a run of session {value[:12]}"
    if tag == "set":
        found = input_set(f.hash for f in run.inputs)
        if found is not None and found[0] == value:
            return None
        return f"{name} did not read exactly input set {value[:12]}"
    if tag in ("p", "c"):
        files = run.outputs if tag == "p" else run.inputs
        if any(f.hash == value for f in files):
            return None
        verb = "produce" if tag == "p" else "consume"
        return f"{name} does not {verb} artifact {value[:12]}"

    files = run.outputs if tag == "folder p" else run.inputs
    if any(f.kind == "dir" and folder_key(f.path) == value for f in files):
        return None
    return f"{name} records no folder under key {value[:12]}"


def union(repo: pygit2.Repository, ours: Any, theirs: Any, source: str | None) -> Union:
    """Our ledger tree (None: we have none) with what `theirs` may add to it (see the module
    docstring). Writes the new trees; reads only where the two differ."""
    checker = _Checker(repo, source, [ours, theirs])
    tree = _merge(repo, checker, (), ours, theirs)
    return Union(None if tree is None else str(tree), checker.rejected, checker.added)


def _merge(repo: Any, checker: _Checker, parts: tuple[str, ...], ours: Any, theirs: Any) -> Any:
    """The oid of `ours` plus what is right in `theirs`, at `parts`; None if both are empty."""
    if ours is not None and ours.id == theirs.id:
        return ours.id
    builder = repo.TreeBuilder(ours) if ours is not None else repo.TreeBuilder()
    changed = False
    for entry in theirs:
        name = entry.name
        here = (*parts, name)
        mine = ours[name] if ours is not None and name in ours else None
        if mine is not None and mine.id == entry.id:
            continue
        slot = expect(here)
        if isinstance(slot, str):
            checker.reject(here, entry.id, slot)
            continue
        if slot[0] == "tree":
            if entry.filemode != TREE_MODE:
                checker.reject(here, entry.id, "a blob where a tree belongs")
            elif mine is not None and mine.filemode != TREE_MODE:
                checker.reject(here, entry.id, "the local entry of that name is kept")
            else:
                new = _merge(repo, checker, here, mine, entry)
                if new is not None and (mine is None or new != mine.id):
                    builder.insert(name, new, TREE_MODE)
                    changed = True
        elif slot[0] == "code":
            if entry.filemode != TREE_MODE:
                checker.reject(here, entry.id, "a blob where a code tree belongs")
            elif str(entry.id) != name:
                checker.reject(here, entry.id, "the tree's id is not its name")
            elif mine is not None:
                checker.reject(here, entry.id, "the local entry of that name is kept")
            else:
                builder.insert(name, entry.id, TREE_MODE)
                changed = True
        else:
            problem = (
                "a tree where a record belongs"
                if entry.filemode == TREE_MODE
                else checker.blob_problem(slot, entry)
            )
            if mine is not None:
                checker.reject(here, entry.id, problem or "the local entry of that name is kept")
            elif problem is not None:
                checker.reject(here, entry.id, problem)
            else:
                builder.insert(name, entry.id, entry.filemode)
                changed = True
                if (
                    (len(here) == 4 and here[0] in ("runs", "manifests"))
                    or here[-1] == "session"
                    or here[0] == "verifications"
                ):
                    checker.added.append(slot[2])
    if not changed:
        return None if ours is None else ours.id
    return builder.write()


def check_tree(repo: pygit2.Repository, tree: Any) -> tuple[list[Rejected], list[Any]]:
    """(every entry of a ledger tree that is not right, the decoded records that are) — the
    same checks a merge makes, over the whole tree (`roar fsck`)."""
    checker = _Checker(repo, None, [tree])
    found: list[Any] = []
    _walk(checker, (), tree, found)
    return checker.rejected, found


def _walk(checker: _Checker, parts: tuple[str, ...], tree: Any, found: list[Any]) -> None:
    for entry in tree:
        here = (*parts, entry.name)
        slot = expect(here)
        if isinstance(slot, str):
            checker.reject(here, entry.id, slot)
        elif slot[0] == "tree":
            if entry.filemode != TREE_MODE:
                checker.reject(here, entry.id, "a blob where a tree belongs")
            elif len(entry) == 0:
                checker.reject(here, entry.id, "an empty tree")
            else:
                _walk(checker, here, entry, found)
        elif slot[0] == "code":
            if entry.filemode != TREE_MODE:
                checker.reject(here, entry.id, "a blob where a code tree belongs")
            elif str(entry.id) != here[-1]:
                checker.reject(here, entry.id, "the tree's id is not its name")
        elif entry.filemode == TREE_MODE:
            checker.reject(here, entry.id, "a tree where a record belongs")
        else:
            problem = checker.blob_problem(slot, entry)
            if problem is not None:
                checker.reject(here, entry.id, problem)
            elif (len(here) == 4 and here[0] in ("runs", "manifests")) or here[-1] == "session":
                found.append((slot[1], slot[2], checker._seen[entry.id][1]))


# -- the quarantine -----------------------------------------------------------------------


def _quarantine_file(roar_dir: Path, remote: str) -> Path:
    return roar_dir / QUARANTINE_DIR / f"{_quote(remote)}.json"


def quarantine(roar_dir: Path, remote: str, rejected: list[Rejected], tip: str) -> None:
    """Add what a merge of `remote`'s ledger (at commit `tip`) left out to its quarantine."""
    if not rejected:
        return
    held = {(e["path"], e["oid"]): e for e in _read_quarantine(roar_dir, remote)}
    for r in rejected:
        held.setdefault(
            (r.path, r.oid), {"path": r.path, "oid": r.oid, "reason": r.reason, "tip": tip}
        )
    target = _quarantine_file(roar_dir, remote)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"remote": remote, "entries": list(held.values())}, indent=1))
    tmp.replace(target)


def _read_quarantine(roar_dir: Path, remote: str) -> list[dict[str, str]]:
    try:
        data = json.loads(_quarantine_file(roar_dir, remote).read_text())
        entries = data["entries"]
        return [e for e in entries if isinstance(e, dict) and {"path", "oid", "reason"} <= set(e)]
    except (OSError, ValueError, KeyError, TypeError):
        return []


class Quarantined(NamedTuple):
    remote: str
    path: str
    oid: str
    reason: str


def quarantined(roar_dir: Path) -> Iterator[Quarantined]:
    """Every quarantined entry, remote by remote."""
    folder = roar_dir / QUARANTINE_DIR
    if not folder.is_dir():
        return
    for f in sorted(folder.glob("*.json")):
        remote = _unquote(f.name[: -len(".json")])
        for e in _read_quarantine(roar_dir, remote):
            yield Quarantined(remote, str(e["path"]), str(e["oid"]), str(e["reason"]))


def clear_quarantine(roar_dir: Path) -> int:
    """Forget every quarantined entry; returns how many there were. The entries stay out of
    the ledger: a merge already left them out and will not see them again."""
    n = sum(1 for _ in quarantined(roar_dir))
    folder = roar_dir / QUARANTINE_DIR
    if folder.is_dir():
        for f in folder.glob("*.json"):
            f.unlink()
    return n


# -- where records came from --------------------------------------------------------------


def note_origins(roar_dir: Path, remote: str, ids: list[str]) -> None:
    """Remember that these records arrived from `remote` (one line each, appended: a write
    of a few lines with O_APPEND does not interleave with another process's)."""
    if not ids:
        return
    name = _quote(remote)
    text = "".join(f"{i} {name}\n" for i in ids)
    roar_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(roar_dir / ORIGINS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_origins(roar_dir: Path, origins: dict[str, str]) -> None:
    """Replace the whole map (a rebuild: `roar fsck --repair`)."""
    target = roar_dir / ORIGINS_FILE
    tmp = target.with_name(f".{ORIGINS_FILE}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{i} {_quote(r)}\n" for i, r in sorted(origins.items())))
    tmp.replace(target)


def read_origins(roar_dir: Path) -> dict[str, str]:
    """{record id: remote} of the records that arrived by a merge (the first remote wins)."""
    out: dict[str, str] = {}
    try:
        text = (roar_dir / ORIGINS_FILE).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        rid, _, remote = line.partition(" ")
        if remote:
            out.setdefault(rid, _unquote(remote))
    return out
