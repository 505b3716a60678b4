"""The registry's web view: `roar ui`'s pages for every scope a viewer may read.

`roar registry serve` mounts this under a prefix (`registry.ui`, `/ui` by default):

    /                                   the scopes the viewer may read, a search box
    /search?q=HASH|PREFIX|PATH          across those scopes, and the index
    /artifact/<hash>                    → its scope's page, or existence only
    /run/<id>, /dag?ref=, /diff?a=&b=   → the readable scope that holds them
    /scope/<owner>/<project>/…          the web app (roargit.web.app) of that scope's
                                        repository, its store the only one it reads
    /across/<scope>/<scope>/…           the same over the union of two readable scopes
                                        (a diff across them), merged in a clone of the
                                        server's own
    /login                              401, so that a browser asks for the name and token

Every answer respects the viewer's scopes. A scope the viewer may not read is never opened:
its pages are 404 (401 without a token, so that a browser asks for one), search never
lists its records, and a hash registered in it shows what the index says publicly (scope,
who, when) and nothing else. Run ids and paths are not in the index, so they are looked for
in readable scopes only.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from roargit.errors import AmbiguousPrefix, RoarError
from roargit.git import run_git
from roargit.ledger import Ledger
from roargit.registry.index import IndexEntry, check_hash
from roargit.registry.remote import fetch_scope, scope_remote
from roargit.repo import RepoPaths, ensure_roar_dir, find_repo
from roargit.structs import NamedTuple
from roargit.views import Context
from roargit.web import render
from roargit.web.app import HEX64, SECURITY_HEADERS, STATIC, STATUS, make_app, resolve, static_text
from roargit.web.graphs import Links
from roargit.web.text import esc

StartResponse = Callable[..., Any]
SCOPE_PAGES = "scope"
ACROSS_PAGES = "across"
_STATUS = {**STATUS, 401: "401 Unauthorized", 403: "403 Forbidden"}


class Viewer(NamedTuple):
    """Who asks, and what they may read: `scopes` maps each readable scope to its bare
    repository and its store URL ("" for none); `cache`: where the server keeps the merged
    clones that pages across two scopes read."""

    user: str | None
    scopes: dict[str, tuple[Path, str]]
    index_readable: bool
    cache: Path | None = None


class Found(NamedTuple):
    scope: str
    kind: str  # "artifact" or "run"
    id: str
    path: str | None


Lookup = Callable[[str], list[IndexEntry]]


def scope_paths(repo: Path) -> RepoPaths:
    """A scope's bare repository as the web app reads it (no work tree: root is the git dir)."""
    return RepoPaths(root=repo, git_dir=repo, common_dir=repo)


def existence(entry: IndexEntry) -> str:
    """What the index says publicly about a registered hash, for a viewer outside its scope."""
    when = time.strftime("%Y-%m-%d", time.gmtime(entry.registered_at))
    return (
        f"{entry.hash[:16]} is registered in {entry.scope} by {entry.registered_by} on {when}; "
        "you have no read access to it"
    )


def _respond(
    respond: StartResponse,
    status: int,
    body: bytes,
    content_type: str = "text/html; charset=utf-8",
    extra: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    headers = [("Content-Type", content_type), *SECURITY_HEADERS, *extra]
    headers.append(("Content-Length", str(len(body))))
    if status == 401:
        headers.append(("WWW-Authenticate", 'Basic realm="roar registry"'))
    respond(_STATUS[status], headers)
    return [body]


def _page(respond: StartResponse, status: int, title: str, body: str, links: Links) -> list[bytes]:
    return _respond(respond, status, render.page(title, body, links).encode("utf-8"))


def _redirect(respond: StartResponse, where: str) -> list[bytes]:
    return _respond(respond, 303, b"", extra=[("Location", where)])


def _refused(viewer: Viewer) -> int:
    """401 asks a browser for the name and token; someone who gave them is told 403."""
    return 401 if viewer.user is None else 403


def find(viewer: Viewer, text: str) -> list[Found]:
    """What `text` names in the scopes the viewer may read (hash, prefix, run id or path)."""
    found: list[Found] = []
    for scope, (repo, _store) in sorted(viewer.scopes.items()):
        ctx = Context(scope_paths(repo), merge_fetched=False)
        try:
            try:
                target = resolve(ctx, text, local_files=False)
            except AmbiguousPrefix:
                prefix = text.strip().lower()
                found += [
                    Found(scope, "artifact", a, None) for a in ctx.ledger.find_artifacts(prefix)
                ]
                found += [Found(scope, "run", r, None) for r in ctx.ledger.find_runs(prefix)]
                continue
            except RoarError:
                continue
            found.append(Found(scope, target.kind, target.id, target.path))
        finally:
            ctx.ledger.close()
    return found


def _knows(repo: Path, digest: str) -> bool:
    ledger = Ledger(scope_paths(repo), fast_start=True)
    try:
        return ledger.has_artifact(digest) or any(ledger.artifact_runs(digest))
    except RoarError:
        return False
    finally:
        ledger.close()


def scope_link(prefix: str, scope: str, rest: str = "/") -> str:
    owner, _, project = scope.partition("/")
    return f"{prefix}/{SCOPE_PAGES}/{quote(owner)}/{quote(project)}{rest}"


def across_link(prefix: str, a: str, b: str, rest: str = "/") -> str:
    return f"{prefix}/{ACROSS_PAGES}/{quote(a, safe='/')}/{quote(b, safe='/')}{rest}"


def _found_link(prefix: str, f: Found) -> str:
    scoped = Links(scope_link(prefix, f.scope, ""))
    return scoped.run(f.id) if f.kind == "run" else scoped.artifact(f.id, f.path)


class RegistryWeb:
    """The web view of a registry server, called with the viewer the server authenticated."""

    def __init__(self) -> None:
        # One merge at a time into each merged clone (requests are served on threads).
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def __call__(
        self,
        environ: dict[str, Any],
        respond: StartResponse,
        viewer: Viewer,
        lookup: Lookup,
    ) -> Iterable[bytes]:
        prefix = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        links = Links(prefix)
        path = str(environ.get("PATH_INFO") or "/")
        parts = path.strip("/").split("/")
        if parts[0] == SCOPE_PAGES and len(parts) >= 3:
            return self.scope(environ, respond, viewer, links, parts)
        if parts[0] == ACROSS_PAGES and len(parts) >= 5:
            return self.across(environ, respond, viewer, links, parts)
        try:
            return self.top(environ, respond, viewer, lookup, links, path, parts)
        except RoarError as exc:
            return _page(respond, 400, "Error", render.error(str(exc)), links)
        except Exception:
            # A bug: the traceback goes to the server's error stream, the page says only that.
            import traceback  # lazy: only a bug needs it

            errors = environ.get("wsgi.errors")
            if errors is not None:
                errors.write(traceback.format_exc())
            message = "internal error: the details are in the server's log"
            return _page(respond, 500, "Error", render.error(message), links)

    def top(
        self,
        environ: dict[str, Any],
        respond: StartResponse,
        viewer: Viewer,
        lookup: Lookup,
        links: Links,
        path: str,
        parts: list[str],
    ) -> list[bytes]:
        """The pages above the scopes'."""
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _page(respond, 405, "Error", render.error("this view only reads"), links)
        query = {k: v[-1] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}
        head = parts[0]
        if head == "static" and len(parts) == 2 and parts[1] in STATIC:
            data = static_text(parts[1]).encode("utf-8")
            return _respond(respond, 200, data, STATIC[parts[1]], [("Cache-Control", "no-cache")])
        if head == "" and len(parts) == 1:
            return self.home(respond, viewer, links)
        if head == "login" and len(parts) == 1:
            if viewer.user is None:
                body = render.error("sign in with your user name and a token as the password")
                return _page(respond, 401, "Sign in", body, links)
            return _redirect(respond, links.home())
        if head == "search" and len(parts) == 1:
            return self.search(respond, viewer, links, lookup, query.get("q", ""))
        if head in ("artifact", "run") and len(parts) == 2 and HEX64.fullmatch(parts[1].lower()):
            return self.search(respond, viewer, links, lookup, parts[1].lower(), kind=head)
        if head == "dag" and len(parts) == 1 and query.get("ref", "").strip():
            return self.forward(respond, viewer, links, [query["ref"]], "dag", query)
        if head == "diff" and len(parts) == 1 and query.get("a") and query.get("b"):
            return self.forward(respond, viewer, links, [query["a"], query["b"]], "diff", query)
        if head in ("dag", "diff") and len(parts) == 1:
            return self.home(respond, viewer, links, note=f"Pick a scope for its {head}.")
        return _page(respond, 404, "Error", render.error(f"no page at {path}"), links)

    def scope(
        self,
        environ: dict[str, Any],
        respond: StartResponse,
        viewer: Viewer,
        links: Links,
        parts: list[str],
    ) -> Iterable[bytes]:
        name = f"{parts[1]}/{parts[2]}"
        if name not in viewer.scopes:
            # The same answer whether the scope exists or not: its pages are not there for you.
            status = 401 if viewer.user is None else 404
            body = render.error(f"no page at /{'/'.join(parts)}")
            return _page(respond, status, "Error", body, links)
        repo, store = viewer.scopes[name]
        mounted = scope_link(links.prefix, name, "")
        inner = {**environ, "SCRIPT_NAME": mounted, "PATH_INFO": "/" + "/".join(parts[3:])}
        app = make_app(scope_paths(repo), local_files=False, stores=[store] if store else [])
        return app(inner, respond)

    def across(
        self,
        environ: dict[str, Any],
        respond: StartResponse,
        viewer: Viewer,
        links: Links,
        parts: list[str],
    ) -> Iterable[bytes]:
        """Pages over the union of two readable scopes' lineage (a diff across scopes): a
        clone of the server's own, both scope ledgers fetched into it and merged through the
        gate of any fetch; downloads from either scope's store."""
        names = [f"{parts[1]}/{parts[2]}", f"{parts[3]}/{parts[4]}"]
        if (
            viewer.cache is None
            or names[0] == names[1]
            or any(n not in viewer.scopes for n in names)
        ):
            status = 401 if viewer.user is None else 404
            body = render.error(f"no page at /{'/'.join(parts)}")
            return _page(respond, status, "Error", body, links)
        paths = self._merged(viewer.cache, names, viewer)
        mounted = across_link(links.prefix, names[0], names[1], "")
        inner = {**environ, "SCRIPT_NAME": mounted, "PATH_INFO": "/" + "/".join(parts[5:])}
        stores = [viewer.scopes[n][1] for n in names if viewer.scopes[n][1]]
        return make_app(paths, local_files=False, stores=stores)(inner, respond)

    def _merged(self, cache: Path, names: list[str], viewer: Viewer) -> RepoPaths:
        folder = cache / "--".join(n.replace("/", "-") for n in sorted(names))
        with self._lock_for(folder):
            if not (folder / ".git").is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                run_git(["init", "--quiet", str(folder)], folder)
            paths = find_repo(folder)
            ensure_roar_dir(paths)
            for name in names:
                repo, store = viewer.scopes[name]
                entry = IndexEntry("0" * 64, name, str(repo), store, 0, 0, "")
                fetch_scope(paths, entry, scope_remote(name))
        return paths

    def _lock_for(self, folder: Path) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(str(folder), threading.Lock())

    def home(
        self, respond: StartResponse, viewer: Viewer, links: Links, note: str = ""
    ) -> list[bytes]:
        items = "".join(
            f'<li><a href="{esc(scope_link(links.prefix, s))}">{esc(s)}</a> · '
            f'<a href="{esc(scope_link(links.prefix, s, "/dag"))}">DAG</a></li>'
            for s in sorted(viewer.scopes)
        )
        who = (
            f"<p>Signed in as <strong>{esc(viewer.user)}</strong>.</p>"
            if viewer.user
            else f'<p><a href="{esc(links.prefix)}/login">Sign in</a> with your name and token '
            "to see the scopes you may read.</p>"
        )
        listed = (
            f"<ul>{items}</ul>"
            if items
            else '<p class="none">No scope here is readable to you.</p>'
        )
        body = (
            "<h1>Registry</h1>"
            + (f"<p>{esc(note)}</p>" if note else "")
            + who
            + render.search(links, "", "", []).replace("<h1>Search</h1>", "")
            + f"<h2>Scopes you may read</h2>{listed}"
        )
        return _page(respond, 200, "Registry", body, links)

    def search(
        self,
        respond: StartResponse,
        viewer: Viewer,
        links: Links,
        lookup: Lookup,
        text: str,
        kind: str | None = None,
    ) -> list[bytes]:
        text = text.strip()
        if not text:
            return _page(respond, 200, "Search", render.search(links, "", "", []), links)
        entries: list[IndexEntry] = []
        if kind != "run" and re.fullmatch(r"[0-9a-fA-F]{6,64}", text) and viewer.index_readable:
            entries = lookup(check_hash(text))
        found = [f for f in find(viewer, text) if kind is None or f.kind == kind]
        hidden = [e for e in entries if e.scope not in viewer.scopes]
        # Source data registered as bytes alone is in the index and no ledger.
        bare = [
            e
            for e in entries
            if e.scope in viewer.scopes
            and not any(f.id == e.hash for f in found)
            and not _knows(viewer.scopes[e.scope][0], e.hash)
        ]
        if len(found) == 1 and not hidden and not bare:
            return _redirect(respond, _found_link(links.prefix, found[0]))
        if len(bare) == 1 and not found and not hidden:
            return self.bytes_alone(respond, viewer, links, bare[0])
        if not (found or hidden or bare):
            why = f"{text[:70]} is in no scope you may read"
            return _page(respond, 404, "Search", render.search(links, text, why, []), links)
        items = "".join(
            f'<li>{f.kind} <a href="{esc(_found_link(links.prefix, f))}"><code>{esc(f.id)}</code>'
            f"</a> in {esc(f.scope)}</li>"
            for f in found[:50]
        )
        items += "".join(
            f'<li>artifact <a href="{esc(scope_link(links.prefix, e.scope, "/blob/" + e.hash))}">'
            f"<code>{esc(e.hash)}</code></a> in {esc(e.scope)} (its bytes alone)</li>"
            for e in bare[:50]
        )
        items += "".join(f'<li class="hidden">{esc(existence(e))}</li>' for e in hidden[:50])
        status = 200 if (found or bare) else _refused(viewer)
        body = render.search(links, text, "", []) + f"<ul>{items}</ul>"
        return _page(respond, status, "Search", body, links)

    def bytes_alone(
        self, respond: StartResponse, viewer: Viewer, links: Links, entry: IndexEntry
    ) -> list[bytes]:
        when = time.strftime("%Y-%m-%d", time.gmtime(entry.registered_at))
        download = scope_link(links.prefix, entry.scope, f"/blob/{entry.hash}")
        body = (
            f"<h1>Artifact <code>{esc(entry.hash[:12])}</code></h1>"
            f"<p><code>{esc(entry.hash)}</code>, {entry.size} bytes, registered in "
            f"{esc(entry.scope)} by {esc(entry.registered_by)} on {esc(when)} as its bytes alone "
            f'(no recorded run made it). <a href="{esc(download)}">Download</a></p>'
        )
        return _page(respond, 200, f"Artifact {entry.hash[:12]}", body, links)

    def forward(
        self,
        respond: StartResponse,
        viewer: Viewer,
        links: Links,
        refs: list[str],
        page: str,
        query: Mapping[str, str],
    ) -> list[bytes]:
        """A DAG or diff asked for at the top: shown by the one readable scope holding every
        ref it names."""
        holders = [{f.scope for f in find(viewer, r)} for r in refs]
        common = sorted(set.intersection(*holders)) if holders else []
        if not all(holders):
            why = "not in any scope you may read"
            return _page(respond, 404, "Error", render.error(why), links)
        if not common and page == "diff" and viewer.cache is not None:
            a, b = sorted(holders[0])[0], sorted(holders[1])[0]
            where = Links(across_link(links.prefix, a, b, "")).diff(query["a"], query["b"])
            return _redirect(respond, where)
        if len(common) != 1:
            why = "these are in more than one scope you may read: pick one from the search"
            return _page(respond, 404, "Error", render.error(why), links)
        scoped = Links(scope_link(links.prefix, common[0], ""))
        where = scoped.dag(query["ref"]) if page == "dag" else scoped.diff(query["a"], query["b"])
        return _redirect(respond, where)
