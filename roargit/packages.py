"""The installed Python distributions a run used, from the files it read.

Each site-packages dir a run read from is indexed once per process (its RECORD and
top_level.txt files, editable installs, console scripts), and re-read only when installing
something changed it. Distribution names are the `Name:` field of the distribution's METADATA
as published (`PyYAML`, not `pyyaml`), which is what `pip freeze` shows and what `pip install`
accepts; comparing two lists should normalise with PEP 503 (environment.normalise_name).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from roargit.rules import SITE_ROOT

_EGG_DIR = re.compile(r"^(?P<name>[^-/]+)-(?P<version>[^-/]+)(?:-[^/]*)?\.egg$")


class _RootIndex:
    """What one site-packages dir holds: which distribution owns each top-level name."""

    __slots__ = ("editable", "outside", "shared_dirs", "shared_files", "tops")

    def __init__(self) -> None:
        # top-level name (package dir, `mod.py`, `x.dist-info`, `x.pth`) → (name, version)
        self.tops: dict[str, tuple[str, str]] = {}
        # Namespace packages (`google/`, `nvidia/`) are shared by several distributions; below
        # such a top the owner is found by file, then by the deepest directory with one owner.
        self.shared_files: dict[str, tuple[str, str]] = {}
        self.shared_dirs: dict[str, set[tuple[str, str]]] = {}
        # Files a distribution installed outside the root (console scripts in bin/), absolute.
        self.outside: dict[str, tuple[str, str]] = {}
        # Source dirs of editable installs, absolute.
        self.editable: dict[str, tuple[str, str]] = {}


def _metadata_fields(path: str) -> tuple[str, str]:
    """Name and Version from a METADATA / PKG-INFO file: the RFC 822 header block only."""
    name = version = ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if name and version:
                    break
    except OSError:
        pass
    return name, version


def _record_paths(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out: list[str] = []
    for line in lines:
        if not line:
            continue
        if line[0] == '"':  # a path quoted for its commas: rare, let csv do it properly
            import csv  # lazy: only a path with a comma needs it

            out.extend(row[0] for row in csv.reader([line]) if row)
        else:
            out.append(line.rsplit(",", 2)[0])
    return out


_FINDER_MAPPING = re.compile(r"^MAPPING\s*(?::[^=]*)?=\s*(\{.*?\})\s*$", re.MULTILINE | re.DOTALL)


def _editable_sources(root: str, rel_paths: Iterable[str]) -> list[str]:
    """Source dirs an editable install points at: setuptools' `__editable___*_finder.py`
    MAPPING (PEP 660, setuptools ≥ 64) and path lines of the `.pth` files it installed (the
    older and the hatch/flit/pdm way)."""
    sources: list[str] = []
    for rel in rel_paths:
        if "/" in rel:
            continue
        if rel.startswith("__editable___") and rel.endswith("_finder.py"):
            m = _FINDER_MAPPING.search(read_text(os.path.join(root, rel)))
            if m:
                try:
                    import ast  # lazy: only an editable install's finder needs it

                    mapping = ast.literal_eval(m.group(1))
                except (ValueError, SyntaxError):
                    continue
                if isinstance(mapping, dict):
                    sources.extend(str(v) for v in mapping.values())
        elif rel.endswith(".pth"):
            for line in read_text(os.path.join(root, rel)).splitlines():
                line = line.strip()
                # site(7): lines starting with "import" are executed, "#" are comments.
                if line and not line.startswith(("import ", "import\t", "#")):
                    sources.append(line if os.path.isabs(line) else os.path.join(root, line))
    return [os.path.normpath(s) for s in sources if os.path.isdir(s)]


def _is_editable(direct_url_json: str) -> bool:
    # PEP 610: pip writes direct_url.json for any install from a URL or a local path; only
    # `dir_info.editable` says the code stays in the source tree.
    text = read_text(direct_url_json)
    if not text:
        return False
    try:
        import json  # lazy: only an install from a local path or URL has the file

        info = json.loads(text)
    except ValueError:
        return False
    dir_info = info.get("dir_info") if isinstance(info, dict) else None
    return isinstance(dir_info, dict) and dir_info.get("editable") is True


def _build_index(root: str) -> _RootIndex:
    index = _RootIndex()
    owned: list[tuple[tuple[str, str], list[str]]] = []
    try:
        entries = [e.name for e in os.scandir(root)]
    except OSError:
        return index
    for entry in entries:
        meta_dir = os.path.join(root, entry)
        if entry.endswith(".dist-info"):
            dist = _metadata_fields(os.path.join(meta_dir, "METADATA"))
            if not dist[0]:  # METADATA unreadable: the dir name is `name-version.dist-info`
                name, _, version = entry[: -len(".dist-info")].partition("-")
                dist = (name, version)
            rels = _record_paths(os.path.join(meta_dir, "RECORD"))
            rels.extend(read_text(os.path.join(meta_dir, "top_level.txt")).split())
            if _is_editable(os.path.join(meta_dir, "direct_url.json")):
                for src in _editable_sources(root, rels):
                    index.editable[src] = dist
        elif entry.endswith(".egg-info"):
            pkg_info = os.path.join(meta_dir, "PKG-INFO") if os.path.isdir(meta_dir) else meta_dir
            dist = _metadata_fields(pkg_info)
            if not dist[0]:
                name, _, version = entry[: -len(".egg-info")].partition("-")
                dist = (name, version.split("-")[0])
            # installed-files.txt lists paths relative to the .egg-info dir itself.
            rels = [
                os.path.normpath(os.path.join(entry, p))
                for p in read_text(os.path.join(meta_dir, "installed-files.txt")).split("\n")
                if p
            ]
            for top in read_text(os.path.join(meta_dir, "top_level.txt")).split():
                rels.extend((top, f"{top}.py"))
        elif entry.endswith(".egg-link"):
            # `setup.py develop`: the first line is the project's source dir.
            lines = read_text(meta_dir).splitlines()
            src = os.path.normpath(os.path.join(root, lines[0].strip())) if lines else ""
            if src and os.path.isdir(src):
                egg_infos = [e for e in os.listdir(src) if e.endswith(".egg-info")]
                dist = _metadata_fields(os.path.join(src, *egg_infos[:1], "PKG-INFO"))
                if not dist[0]:
                    dist = (entry[: -len(".egg-link")], "")
                index.editable[src] = dist
                index.tops[entry] = dist
            continue
        else:
            m = _EGG_DIR.match(entry)
            if m:
                index.tops[entry] = (m.group("name"), m.group("version"))
            continue
        rels.append(entry)
        owned.append((dist, rels))

    owners: dict[str, set[tuple[str, str]]] = {}
    for dist, rels in owned:
        for rel in rels:
            if rel.startswith("../"):
                index.outside[os.path.normpath(os.path.join(root, rel))] = dist
                continue
            owners.setdefault(rel.split("/", 1)[0], set()).add(dist)
    # A top-level __pycache__ holds the bytecode of every top-level module of every
    # distribution: shared even when only one distribution's RECORD happens to list it.
    shared = {top for top, dists in owners.items() if len(dists) > 1 or top == "__pycache__"}
    for top, dists in owners.items():
        if top not in shared:
            index.tops[top] = next(iter(dists))
    for dist, rels in owned:
        for rel in rels:
            top, sep, _ = rel.partition("/")
            if not sep or top not in shared:
                continue
            index.shared_files[rel] = dist
            parent = os.path.dirname(rel)
            while parent != top:
                index.shared_dirs.setdefault(parent, set()).add(dist)
                parent = os.path.dirname(parent)
    return index


_INDEXES: dict[str, tuple[int, _RootIndex]] = {}


def _root_index(root: str) -> _RootIndex:
    # Keyed by the dir's mtime too: installing or upgrading anything adds or replaces a
    # *.dist-info entry in it, so a changed root is re-read and an unchanged one never is.
    try:
        mtime = os.stat(root).st_mtime_ns
    except OSError:
        return _RootIndex()
    cached = _INDEXES.get(root)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    index = _build_index(root)
    _INDEXES[root] = (mtime, index)
    return index


def _owner(index: _RootIndex, rel: str) -> tuple[str, str] | None:
    top, _, rest = rel.partition("/")
    if top == "__pycache__" and rest:
        # `__pycache__/six.cpython-311.pyc` is compiled from the top-level module `six.py`,
        # and is often written after install, so RECORD may not list it.
        found = index.shared_files.get(rel) or index.tops.get(rest.split(".", 1)[0] + ".py")
        if found:
            return found
    dist = index.tops.get(top)
    if dist is not None:
        return dist
    dist = index.shared_files.get(rel)
    if dist is not None:
        return dist
    parent = os.path.dirname(rel)
    while parent and parent != top:
        dists = index.shared_dirs.get(parent)
        if dists is not None:
            return next(iter(dists)) if len(dists) == 1 else None
        parent = os.path.dirname(parent)
    return None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def packages_for_paths(
    paths: Iterable[str],
    site_dirs: Iterable[str] = (),
    code_roots: Iterable[str] = (),
) -> tuple[dict[str, str], set[str]]:
    """The installed distributions a run used, from the absolute paths it read.

    Returns ({distribution name: version}, the paths that are package files). A path is a
    package file when it lies in a site-packages / dist-packages dir (any interpreter's, this
    one's or not; owned by a distribution or not: a `.pth`, a stray `__pycache__`), is a
    console script a distribution installed, or lies in the source dir of an editable install.

    Each site-packages dir seen among `paths` is indexed once per process (its RECORDs and
    top_level.txt files), as are `site_dirs`, which name more of them to look for editable
    installs in. Paths under `code_roots` (pass the repository root) are never taken as
    editable package files: the project's own sources are code inputs even when it is
    installed with `pip install -e .`.
    """
    found: dict[str, str] = {}
    classified: set[str] = set()
    by_root: dict[str, list[str]] = {}
    others: list[str] = []
    for path in paths:
        # The substring test first: most paths are data, and it is far cheaper than the regex.
        m = SITE_ROOT.match(path) if "-packages" in path else None
        if m:
            by_root.setdefault(m.group(1), []).append(path)
        else:
            others.append(path)

    indexes: list[_RootIndex] = []
    for root, members in by_root.items():
        index = _root_index(root)
        indexes.append(index)
        start = len(root) + 1
        for path in members:
            classified.add(path)
            dist = _owner(index, path[start:]) if len(path) > len(root) else None
            if dist is not None:
                found[dist[0]] = dist[1]
    indexes.extend(_root_index(d.rstrip("/")) for d in site_dirs if d.rstrip("/") not in by_root)

    if others:
        outside: dict[str, tuple[str, str]] = {}
        editable: list[tuple[str, tuple[str, str]]] = []
        for index in indexes:
            outside.update(index.outside)
            editable.extend(index.editable.items())
        editable.sort(key=lambda item: len(item[0]), reverse=True)  # innermost source first
        editable_set = {src for src, _ in editable}
        skip = tuple(os.path.normpath(r) for r in code_roots)
        # str.startswith on a tuple first: most of `others` are data under the repo.
        skip_under = tuple(r.rstrip("/") + "/" for r in skip)
        sources = tuple(src.rstrip("/") + "/" for src, _ in editable)
        for path in others:
            dist = outside.get(path)
            if (
                dist is None
                and (path in editable_set or path.startswith(sources))
                and not (path in skip or path.startswith(skip_under))
            ):
                dist = next((d for src, d in editable if _under(path, src)), None)
            if dist is not None:
                classified.add(path)
                found[dist[0]] = dist[1]
    return found, classified


_VERSIONS: dict[tuple[str | None, str], str | None] = {}


def installed_version(exe: str | None, name: str) -> str | None:
    """The version of distribution `name` for the interpreter `exe` (its venv's
    site-packages), or for roar's own interpreter when `exe` is unknown or is it."""
    # importlib.metadata costs milliseconds to import, and only a reproduction plan asks.
    import importlib.metadata as md

    key = (exe, name)
    if key in _VERSIONS:
        return _VERSIONS[key]
    version: str | None = None
    search: list[str] | None = None
    if exe is not None and not same_file(exe, sys.executable):
        prefix = Path(exe).resolve().parent.parent
        venv = Path(exe).parent.parent
        search = [str(p) for base in {prefix, venv} for p in base.glob("lib/python*/site-packages")]
    try:
        if search is None:
            version = md.version(name)
        else:
            dist = next(iter(md.distributions(name=name, path=search)), None)
            version = dist.version if dist is not None else None
    except md.PackageNotFoundError:
        version = None
    _VERSIONS[key] = version
    return version


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def read_text(path: str) -> str:
    """The file's text, or "" when it cannot be read: metadata files are best effort."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
