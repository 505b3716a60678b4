"""The code a run saw: HEAD, and for a dirty tree a snapshot as a git tree object.

Code is what `roar.code` says (`CodeRule`: scripts, modules, notebooks, build files and
configuration by default); everything else a run reads is data, recorded by its BLAKE3 hash
whether git tracks it or not. The snapshot holds HEAD's tree with the tracked code files as
they are in the work tree plus untracked, non-ignored code files (small, and not known to the
ledger as a data artifact); never data. Of a folder that is untracked as a whole (a new
`experiments/`, a `data/` of 100,000 files) it holds the code files the run read, added once
the command has run (`add_read_code`): git lists such a folder as one entry, where listing
its files one by one would cost every run a walk of the biggest datasets in the work tree.
It is built in a private index under `.git/roar/`,
so the user's index, branches and stash are never touched, and the tree is kept reachable
from the ledger (`code/<tree>`) so it is pushed with the lineage.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable

from roargit import loose_ref
from roargit.git import STATUS, run_git
from roargit.gitobjects import (
    TREE_MODE,
    ObjectReader,
    drop_keep,
    pack_loose_objects,
    tree_entries,
)
from roargit.records import CodeInput, CodeState
from roargit.redact import is_secret_path
from roargit.repo import RepoPaths
from roargit.structs import NamedTuple

#: Tree entry modes of files (regular, executable, symlink); not folders or submodules.
BLOB_MODES = frozenset({0o100644, 0o100755, 0o120000})

#: The default of `roar.code`: what counts as code (scripts, modules, notebooks, build files)
#: and configuration. Everything else a run reads is data, tracked in git or not.
DEFAULT_CODE_GLOBS = (
    "*.py", "*.pyx", "*.pxd", "*.pyi", "*.ipynb", "*.sh", "*.bash", "*.zsh", "*.r", "*.jl",
    "*.sql", "*.c", "*.cc", "*.cpp", "*.h", "*.hpp", "*.cu", "*.rs", "*.go", "*.java",
    "*.scala", "*.js", "*.ts", "*.lua", "*.pl", "*.rb", "*.m", "*.toml", "*.cfg", "*.ini",
    "*.yaml", "*.yml", "*.mk", "*.cmake", "Makefile", "Dockerfile", "Snakefile", "Justfile",
    "CMakeLists.txt", "requirements*.txt",
)  # fmt: skip
DEFAULT_CODE = ",".join(DEFAULT_CODE_GLOBS)


def _glob_regex(glob: str) -> str:
    """A glob as a regex over a whole path relative to the root: one without `/` matches a
    file name in any folder; one with `/` matches from the root, `**` spanning folders."""
    out = []
    i = 0
    anchored = "/" in glob.rstrip("/")
    glob = glob.lstrip("/")
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:[^\0]*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append("[^\0]*")
            i += 2
            continue
        if c == "*":
            # `*.py` at the start of a name asks for a name before the suffix: `.py` is a
            # hidden file with no suffix (as os.path.splitext has it), not a Python module.
            start = i == 0 or glob[i - 1] == "/"
            out.append("[^/\0]+" if start and glob.startswith(".", i + 1) else "[^/\0]*")
        elif c == "?":
            out.append("[^/\0]")
        elif c == "[":
            end = glob.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out)
    if glob.endswith("/"):  # a folder: every file below it
        body += "[^\0]*"
    return body if anchored else "(?:[^\0]*/)?" + body


def _literal_end(glob: str) -> str:
    """The fixed text every name matching `glob` ends with (lower case; "" if none)."""
    tail = re.split(r"[*?\]]", glob)[-1]
    return "" if glob.endswith("/") else tail.rpartition("/")[2].lower()


class CodeRule:
    """Which paths (relative to the repo root) are code: the `roar.code` globs, matched
    without regard to case (`default` stands for DEFAULT_CODE_GLOBS, and an empty setting
    means them alone); a glob starting with `!` excludes what it matches, and wins."""

    def __init__(self, spec: str = DEFAULT_CODE) -> None:
        # "default" in the list stands for DEFAULT_CODE_GLOBS; an empty list means them alone.
        globs = [g.strip() for g in spec.split(",") if g.strip()] or ["default"]
        globs = [x for g in globs for x in (DEFAULT_CODE_GLOBS if g == "default" else (g,))]
        include = [g for g in globs if not g.startswith("!")]
        exclude = [g[1:] for g in globs if g.startswith("!") and len(g) > 1]
        self.spec = spec

        # The regexes are compiled where first used (by `re`'s cache): a run whose paths all
        # pass the set lookups below never needs them, and each costs a compile a process.
        def source(gs: list[str]) -> str | None:
            return "|".join(f"(?:{_glob_regex(g)})" for g in gs) if gs else None

        # Most globs are `*.ext` or a plain name: those are told by a set lookup on the file
        # name (a run may read 100,000 files); only the others need the regex.
        simple = re.compile(r"\*\.[^*?\[\]/.]+|[^*?\[\]/]+")
        self._suffixes = frozenset(g[1:].lower() for g in include if g.startswith("*."))
        self._names = frozenset(g.lower() for g in include if not g.startswith("*."))
        self._suffixes &= {g[1:].lower() for g in include if simple.fullmatch(g)}
        self._names &= {g.lower() for g in include if simple.fullmatch(g)}
        rest = [g for g in include if not simple.fullmatch(g)]
        self._include = source(rest)
        # The regex is asked only about names ending as one of those globs must.
        rest_ends = {_literal_end(g) for g in rest}
        self._rest_ends = None if "" in rest_ends else tuple(rest_ends)
        self._exclude = source(exclude)
        ends = {_literal_end(g).lower() for g in include}
        # Candidates in a NUL-separated listing are found by their fixed endings (see
        # `find`); a glob with none (`src/**`) makes every listed path a candidate. Endings
        # that start with "." go to one regex (the engine jumps from dot to dot), the others
        # (whole names: Makefile) are found with str.find: one alternation of them all costs
        # three times as much over 100,000 paths.
        self._ends = None if "" in ends or not ends else sorted(ends)
        dotted = [e[1:] for e in sorted(ends) if e.startswith(".")]
        self._dot_ends = (
            r"\.(?:" + "|".join(re.escape(e) for e in dotted) + ")\0" if dotted else None
        )
        self._name_ends = tuple(e + "\0" for e in sorted(ends) if not e.startswith("."))

    def matches(self, rel: str) -> bool:
        return bool(self.select([rel]))

    def compile(self) -> None:
        """Compile its regexes now, into `re`'s cache (the resident recorder does, once for
        all the runs it forks)."""
        for pattern, flags in (
            (self._include, re.IGNORECASE),
            (self._exclude, re.IGNORECASE),
            (self._dot_ends, 0),
        ):
            if pattern is not None:
                re.compile(pattern, flags)

    def select(self, rels: Iterable[str]) -> list[str]:
        """Those of `rels` that are code, in their order (one call for the 100,000 paths a
        run may read: the per-path work is a few string operations and set lookups)."""
        suffixes, names, ends = self._suffixes, self._names, self._rest_ends
        include = exclude = None  # compiled when first needed
        out = []
        for rel in rels:
            name = rel[rel.rfind("/") + 1 :].lower()
            dot = name.rfind(".")
            if not ((dot > 0 and name[dot:] in suffixes) or name in names):
                if self._include is None or not (ends is None or name.endswith(ends)):
                    continue
                include = include or re.compile(self._include, re.IGNORECASE)
                if include.fullmatch(rel) is None:
                    continue
            if self._exclude is not None:
                exclude = exclude or re.compile(self._exclude, re.IGNORECASE)
                if exclude.fullmatch(rel) is not None:
                    continue
            out.append(rel)
        return out

    def find(self, text: str) -> list[str]:
        """The code files named in a `git ls-files -z` listing (`text`, with a NUL in front),
        in its order, without a string per listed file: 100,000 untracked data files are
        searched by their endings, and only the few candidates are split out and matched."""
        if self._ends is None or not text.isascii():
            # lower() may change lengths outside ASCII: no positions to share, so per record.
            return [r for r in text.split("\0") if r and self.matches(r)]
        low = text.lower()
        dotted = self._dot_ends
        ends = [m.end() - 1 for m in re.finditer(dotted, low)] if dotted else []
        for name in self._name_ends:
            at = low.find(name)
            while at >= 0:
                ends.append(at + len(name) - 1)
                at = low.find(name, at + 1)
        found = []
        for end in sorted(set(ends)):  # the listing's order
            path = text[text.rfind("\0", 0, end) + 1 : end]
            if path and self.matches(path):
                found.append(path)
        return found


@functools.cache
def code_rule(spec: str = "") -> CodeRule:
    """The rule of a `roar.code` setting, compiled once a process (on first use: `roar run`
    pays for the regexes only when it sorts what it read)."""
    return CodeRule(spec)


def is_source_name(rel: str) -> bool:
    """Whether `rel` is code by the default rule (`DEFAULT_CODE`)."""
    return code_rule().matches(rel)


#: Untracked files above this size are taken for data, not source, and left out of snapshots.
MAX_UNTRACKED_SOURCE = 1 << 20


class WorkTreeStatus(NamedTuple):
    commit: str | None  # HEAD; None before the first commit
    branch: str | None  # None on a detached HEAD (and before the first commit)
    modified: tuple[str, ...]  # tracked code files changed or deleted
    untracked: tuple[str, ...]  # untracked, not ignored code files in folders git tracks
    untracked_dirs: tuple[str, ...] = ()  # folders untracked as a whole, each ending in "/"


def work_tree_status(paths: RepoPaths, rule: CodeRule | None = None) -> WorkTreeStatus:
    """HEAD, the tracked code files that differ from it, the untracked, not ignored code
    files (by `rule`) of folders git tracks, and the folders untracked as a whole: a changed
    or new data file makes no snapshot.

    One `git status --porcelain=v2 --branch -unormal` (git.STATUS): HEAD's commit and branch
    come with it, and no `git cat-file` is waited for before the command runs (see
    resolve_tree). `-unormal` lists an untracked folder as one entry, so 100,000 untracked
    data files under `data/` cost git no walk and this no parse; the code a run reads there
    joins the snapshot afterwards (`add_read_code`). The untracked part is searched by regex
    instead of being split into a string per file."""
    text = "\0" + os.fsdecode(run_git(STATUS, paths.root).stdout)
    # Headers, then changed tracked files, then untracked ones (`? PATH`), in that order.
    cut = text.find("\0? ")
    tracked = text if cut < 0 else text[:cut]
    commit = branch = None
    modified = []
    rule = rule or code_rule()
    for record in tracked.split("\0"):
        kind = record[:2]
        if kind == "1 ":  # 1 XY SUB MH MI MW HH HI PATH
            path = record.split(" ", 8)[8]
        elif kind == "u ":  # u XY SUB M1 M2 M3 MW H1 H2 H3 PATH
            path = record.split(" ", 10)[10]
        else:
            if record.startswith("# branch.oid "):
                commit = record[13:] if record[13:] != "(initial)" else None
            elif record.startswith("# branch.head "):
                branch = record[14:] if record[14:] != "(detached)" else None
            continue
        if rule.matches(path):
            modified.append(path)
    untracked: list[str] = []
    dirs: list[str] = []
    if cut >= 0:
        listing = text[cut:].replace("\0? ", "\0")
        dirs = [listing[: i + 1].rpartition("\0")[2] for i in _dir_ends(listing)]
        untracked = [p for p in rule.find(listing) if not p.endswith("/")]
    return WorkTreeStatus(
        commit, branch if commit else None, tuple(modified), tuple(untracked), tuple(dirs)
    )


def _dir_ends(listing: str) -> list[int]:
    """Where each `DIR/` entry of a NUL-separated listing ends (its `/`)."""
    out = []
    at = listing.find("/\0")
    while at >= 0:
        out.append(at)
        at = listing.find("/\0", at + 2)
    return out


def resolve_tree(objects: ObjectReader, code: CodeState) -> CodeState:
    """`code` with HEAD's tree filled in where `capture` left it out (a clean work tree): the
    tree a commit names never changes, so it is asked after the command has run, of a
    `git cat-file` started long before, instead of waiting for one before it."""
    if code.tree is not None or code.commit is None:
        return code
    found = objects.info(f"{code.commit}^{{tree}}")
    return code._replace(tree=found[0] if found else None)


def capture(
    paths: RepoPaths,
    objects: ObjectReader,
    is_data: Callable[[list[str]], set[str]],
    pin: str | None = None,
    warnings: list[str] | None = None,
    rule: CodeRule | None = None,
    untracked_dirs: list[str] | None = None,
) -> CodeState:
    """HEAD and, when the work tree's code differs from it, a snapshot tree; for a clean one
    the tree is left to `resolve_tree`. `untracked_dirs` gets the folders untracked as a
    whole, for `add_read_code` once the command has run.

    The snapshot holds code only (`rule`): a changed tracked data file keeps its committed
    version there (a run that reads it records its bytes by hash), and untracked data files
    never enter it. `is_data(paths)` gets the untracked code files (relative to the root) of at
    most MAX_UNTRACKED_SOURCE bytes (bigger ones are left out) and returns those that are data
    all the same: artifacts the ledger already knows, say.

    A snapshot is kept from `git gc` by the ref `pin` (see `snapshot_tree`); the caller
    deletes it once something else (the run's record) names the tree. Files that cannot be
    read are left out of the snapshot, each with a line in `warnings`.
    """
    status = work_tree_status(paths, rule)
    commit, branch = status.commit, status.branch
    if untracked_dirs is not None:
        untracked_dirs.extend(status.untracked_dirs)
    # A work tree may hold 100,000 untracked data files: only the few code files get a
    # stat, and those small enough to snapshot reach is_data.
    small = [
        p for p in status.untracked if _size(os.path.join(paths.root, p)) <= MAX_UNTRACKED_SOURCE
    ]
    data = is_data(small) if small else set()
    sources = [p for p in small if p not in data]
    hidden = [p for p in (*status.modified, *sources) if is_secret_path(p)]
    if hidden:  # never copied into a snapshot (a ref that is pushed); a run reading one hashes it
        status = status._replace(modified=tuple(p for p in status.modified if p not in hidden))
        sources = [p for p in sources if p not in hidden]
        if warnings is not None:
            warnings.append(f"not in the code snapshot (secret-looking name): {', '.join(hidden)}")
    if not status.modified and not sources:
        return CodeState(commit, branch, False, None)  # the tree: resolve_tree
    modified, sources = _readable(paths, status.modified, sources, warnings)
    snapshot = snapshot_tree(paths, modified, sources, pin)
    return CodeState(commit, branch, True, snapshot)


def add_read_code(
    paths: RepoPaths,
    code: CodeState,
    untracked_dirs: Iterable[str],
    read_code: Iterable[str],
    is_data: Callable[[list[str]], set[str]],
    pin: str,
    warnings: list[str],
) -> CodeState:
    """`code` with the code files the run read from folders untracked as a whole
    (`untracked_dirs`, from `capture`) added to its tree, pinned by `pin` as `capture` pins a
    snapshot; `code` itself when there are none. `read_code`: the files the run read and did
    not write that are code by the rule, relative to the root. Those taken are the ones
    `capture` would have taken had git listed them: small, not ignored, not known data, not
    secret-looking, and not inside a repository of their own."""
    dirs = tuple(untracked_dirs)
    root = str(paths.root)
    found = [
        p
        for p in read_code
        if p.startswith(dirs)
        and _size(os.path.join(root, p)) <= MAX_UNTRACKED_SOURCE
        and not _in_nested_repo(root, p, dirs)
    ]
    if not found:
        return code
    ignored = run_git(
        ["check-ignore", "-z", "--stdin"],
        paths.root,
        input=b"".join(os.fsencode(p) + b"\0" for p in found),
        check=False,
    ).stdout
    skip = {os.fsdecode(p) for p in ignored.split(b"\0") if p}
    found = [p for p in found if p not in skip]
    data = is_data(found) if found else set()
    hidden = [p for p in found if p not in data and is_secret_path(p)]
    if hidden:
        warnings.append(f"not in the code snapshot (secret-looking name): {', '.join(hidden)}")
    kept = [p for p in found if p not in data and p not in hidden]
    _, found = _readable(paths, (), kept, warnings)
    if not found:
        return code
    # No tree yet (no commit, nothing dirty): the files alone.
    tree = snapshot_tree(paths, [], found, pin, base=code.tree or "")
    return code._replace(dirty=True, tree=tree)


def _in_nested_repo(root: str, rel: str, dirs: tuple[str, ...]) -> bool:
    """Whether `rel` lies in a repository of its own inside an untracked folder (git lists
    such a repository as a folder and never its files)."""
    top = next(d for d in dirs if rel.startswith(d))
    parts = rel[len(top) :].split("/")[:-1]
    here = os.path.join(root, top)
    for part in ["", *parts]:
        here = os.path.join(here, part) if part else here
        if os.path.lexists(os.path.join(here, ".git")):
            return True
    return False


def _readable(
    paths: RepoPaths,
    modified: Iterable[str],
    untracked: Iterable[str],
    warnings: list[str] | None,
) -> tuple[list[str], list[str]]:
    """The paths `git update-index` can read (it fails as a whole on one it cannot). A
    modified file that cannot be read keeps its committed version in the snapshot; an
    untracked one is left out."""
    out: tuple[list[str], list[str]] = ([], [])
    for kept, group, what in (
        (out[0], modified, "its committed version is in the snapshot"),
        (out[1], untracked, "left out of the snapshot"),
    ):
        for rel in group:
            full = os.path.join(paths.root, rel)
            # A deleted file is staged as a deletion; a folder (a submodule) is git's business.
            if os.path.lexists(full) and not os.path.isdir(full) and not _can_read(full):
                if warnings is not None:
                    warnings.append(f"{rel} could not be read: {what}")
                continue
            kept.append(rel)
    return out


def _can_read(path: str) -> bool:
    if os.path.islink(path):
        return True  # git stores the link's text, not the file it names
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return MAX_UNTRACKED_SOURCE + 1


def snapshot_tree(
    paths: RepoPaths,
    modified: Iterable[str],
    untracked: Iterable[str],
    pin: str | None = None,
    base: str | None = None,
) -> str:
    """Write the work tree's state to a tree object through a private copy of the index; or,
    with `base`, `base`'s tree plus the files named (an index read from it; "": no tree).

    With `pin`, the new objects are protected from `git gc` from the moment they exist until
    the caller deletes that ref: git writes them into a private object folder (the
    repository's objects as its alternate), they move into the repository as one pack with a
    `.keep` file, the ref `pin` is pointed at the tree, and only then is the `.keep` removed.
    Loose objects named by no ref would be fair game for a concurrent `git gc --prune=now`
    all the while the command runs."""
    tmp_dir = paths.roar_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    import shutil  # lazy: only a dirty tree's snapshot needs it (bz2 and lzma come with it)

    index = tmp_dir / f"index-{tag}"
    quarantine = tmp_dir / f"objects-{tag}"
    real_index = paths.git_dir / "index"
    objects_dir = paths.common_dir / "objects"
    try:
        env = {"GIT_INDEX_FILE": str(index)}
        if base is not None:
            if base:  # else no index file: git starts from an empty one
                run_git(["read-tree", base], paths.root, env=env)
        elif real_index.exists():
            shutil.copyfile(real_index, index)  # keeps stat data: unchanged files aren't read
        if pin is not None:
            quarantine.mkdir()
            env["GIT_OBJECT_DIRECTORY"] = str(quarantine)
            env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(objects_dir)
        listing = [*modified, *untracked]
        if listing:
            # --remove stages deletions; -- with --stdin takes NUL-separated paths.
            run_git(
                ["update-index", "--add", "--remove", "-z", "--stdin"],
                paths.root,
                input=b"\0".join(os.fsencode(p) for p in listing) + b"\0",
                env=env,
            )
        tree = run_git(["write-tree"], paths.root, env=env).stdout.decode().strip()
        if pin is not None:
            pack_dir = objects_dir / "pack"
            pack = pack_loose_objects(paths.git_dir, quarantine, pack_dir, len(tree) // 2)
            try:
                if not loose_ref.create(paths.common_dir, pin, tree):
                    run_git(["update-ref", pin, tree, "0" * len(tree)], paths.git_dir)
            finally:
                if pack is not None:
                    drop_keep(pack_dir, pack)
        return tree
    finally:
        index.unlink(missing_ok=True)
        if pin is not None:
            shutil.rmtree(quarantine, ignore_errors=True)


def code_inputs(
    objects: ObjectReader, tree_id: str | None, rel_paths: Iterable[str]
) -> list[CodeInput]:
    """The read files that are part of the code tree, with their blob ids.

    One tree object is read per distinct folder (a run reading 100,000 untracked data files
    under data/ costs one lookup of data/, not 100,000)."""
    if tree_id is None:
        return []
    width = len(tree_id) // 2
    listings: dict[str, dict[str, tuple[int, str]] | None] = {}

    def listing(folder: str) -> dict[str, tuple[int, str]] | None:
        if folder in listings:
            return listings[folder]
        found: dict[str, tuple[int, str]] | None = None
        parent, _, name = folder.rpartition("/")
        above = listing(parent) if folder else None
        if not folder or (above is not None and above.get(name, (0, ""))[0] == TREE_MODE):
            obj = objects.read(f"{tree_id}:{folder}" if folder else tree_id)
            if obj is not None and obj.type == "tree":
                found = {n: (mode, oid) for mode, n, oid in tree_entries(obj.data, width)}
        listings[folder] = found
        return found

    inputs = []
    last: str | None = None
    entries: dict[str, tuple[int, str]] = {}
    for rel in rel_paths:
        folder, _, name = rel.rpartition("/")
        if folder != last:  # a run's reads come folder by folder
            entries = listing(folder) or {}
            last = folder
        entry = entries.get(name)
        if entry is not None and entry[0] in BLOB_MODES:
            inputs.append(CodeInput(rel, entry[1]))
    return sorted(inputs, key=lambda c: c.path)
