"""The web view of a ledger: a WSGI application (PEP 3333).

Routes (all GET or HEAD; anything else is 405):

    /                   search box, the session, recent runs
    /search?q=REF       a hash, prefix, path or @N → 303 to its artifact or run page
    /artifact/<hash>    one artifact: paths, producers, consumers, download, reproduce
    /run/<id>           one run: command, code state, inputs, outputs, environment
    /code/<id>          the code a run saw: its commit, or the patch of its snapshot
    /dag[?ref=REF]      the session's DAG, or the lineage of REF (compact=1, focus=REF)
    /diff?a=REF&b=REF   root causes, consequences, both lineages coloured
    /blob/<hash>        the bytes, from a blob store, checked against their hash first
    /static/<name>      the style sheet and the script, from the package

Reads don't write: each request opens its own read-only `Context` (fetched ledgers are not
merged here, no hash cache is written: a path typed in the search box is hashed afresh), and
nothing below moves a ref or writes a file. The app honours SCRIPT_NAME, so another WSGI app
can mount it under a prefix.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from roargit import session
from roargit.blobstore import BlobCorrupt, BlobMissing, BlobStore
from roargit.diff import compare
from roargit.errors import AmbiguousPrefix, NoMatch, PrefixTooShort, RoarError
from roargit.git import GitFailed, run_git
from roargit.hashing import hash_file
from roargit.ledger import RecordMissing
from roargit.pathguard import rel_or_abs
from roargit.repo import RepoPaths
from roargit.reproduce import stores_for
from roargit.session import NoSuchStep
from roargit.structs import NamedTuple
from roargit.views import Context, NeverRecorded, Target
from roargit.web import render
from roargit.web.graphs import Links, diff_graphs, lineage_graph, session_graph
from roargit.web.layout import place, runs_only
from roargit.web.text import esc

HEX64 = re.compile(r"[0-9a-f]{64}")
STATIC = {"web.css": "text/css; charset=utf-8", "web.js": "text/javascript; charset=utf-8"}
STATUS = {
    200: "200 OK",
    303: "303 See Other",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    421: "421 Misdirected Request",
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
}
# Pages load their own style and script and nothing else; recorded text is escaped anyway.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
CHUNK = 1 << 16
SPOOL_IN_MEMORY = 32 << 20

StartResponse = Callable[..., Any]


class HTTPError(Exception):
    def __init__(self, status: int, message: str, body: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


class Response(NamedTuple):
    status: int
    body: Iterable[bytes]
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    length: int | None = None


def static_text(name: str) -> str:
    return (resources.files("roargit.web") / "static" / name).read_text(encoding="utf-8")


def resolve(ctx: Context, text: str, local_files: bool = True) -> Target:
    """What `text` names, as `Context.resolve` finds it, without writing: a path to an
    existing file is hashed here rather than through the hash cache (a write)."""
    text = text.strip()
    if not text:
        raise HTTPError(400, "give a hash, a prefix (6+ hex), a path or a step (@N)")
    root = ctx.paths.root
    if session.parse_label(text) is not None:
        return ctx.resolve(text, root)
    if not local_files:
        # A server's own files are nobody's business: hashes and recorded paths only.
        if "/" not in text and re.fullmatch(r"[0-9a-fA-F]+", text):
            return ctx.resolve(text, root)
        step = ctx.view.producer_of(text)
        if step is None:
            raise NoMatch(text)
        out = next(o for o in step.run.outputs if o.path == text)
        return Target("artifact", out.hash, text)
    candidate = Path(text) if os.path.isabs(text) else root / text
    if not candidate.is_file():
        return ctx.resolve(text, root)

    recorded = rel_or_abs(os.path.abspath(candidate), str(root))
    digest = hash_file(candidate).digest
    if ctx.ledger.has_artifact(digest) or any(ctx.folder_runs_for_file(recorded, digest)):
        return Target("artifact", digest, recorded)
    step = ctx.view.producer_of(recorded)
    if step is not None:
        out = next(o for o in step.run.outputs if o.path == recorded)
        return Target("artifact", out.hash, recorded)
    raise NeverRecorded(recorded, digest)


def _status_of(exc: RoarError) -> int:
    if isinstance(exc, (NoMatch, NeverRecorded, NoSuchStep, RecordMissing)):
        return 404
    return 400


class App:
    """The WSGI callable for one repository.

    `allowed_hosts`: the Host header values accepted (a loopback server refuses others, so
    that a web page elsewhere cannot reach it through DNS rebinding); None accepts any.
    `local_files`: whether the search box may hash files of the work tree by path.
    `stores`: the blob stores downloads come from; None: the clone's own (`stores_for`). A
    registry server names the scope's store alone, so that a page of one scope never
    offers bytes from another's."""

    def __init__(
        self,
        paths: RepoPaths,
        *,
        allowed_hosts: Iterable[str] | None = None,
        local_files: bool = True,
        stores: Sequence[str] | None = None,
    ) -> None:
        self.paths = paths
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
        self.local_files = local_files
        self.store_urls = None if stores is None else list(stores)

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        prefix = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        links = Links(prefix)
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if method not in ("GET", "HEAD"):
                raise HTTPError(405, "this view only reads: GET or HEAD")
            host = str(environ.get("HTTP_HOST", "")).lower()
            if self.allowed_hosts is not None and host not in self.allowed_hosts:
                raise HTTPError(421, "this server answers only to its own address")
            response = self.route(str(environ.get("PATH_INFO") or "/"), environ, links)
        except HTTPError as exc:
            body = exc.body or render.error(exc.message)
            response = self.html(exc.status, "Error", body, links)
        except RoarError as exc:
            response = self.html(_status_of(exc), "Error", render.error(str(exc)), links)
        except Exception:
            # A bug: the traceback goes to the server's error stream, the page says only that.
            import traceback  # lazy: only a bug needs it

            errors = environ.get("wsgi.errors")
            if errors is not None:
                errors.write(traceback.format_exc())
            message = "internal error: the details are in the server's log"
            response = self.html(500, "Error", render.error(message), links)
        headers = [("Content-Type", response.content_type), *SECURITY_HEADERS, *response.headers]
        if response.length is not None:
            headers.append(("Content-Length", str(response.length)))
        if response.status == 405:
            headers.append(("Allow", "GET, HEAD"))
        start_response(STATUS[response.status], headers)
        if method == "HEAD":
            close = getattr(response.body, "close", None)
            if close is not None:
                close()
            return []
        return response.body

    # -- plumbing ----------------------------------------------------------------------------

    def html(self, status: int, title: str, body: str, links: Links) -> Response:
        data = render.page(title, body, links).encode("utf-8")
        return Response(status, [data], length=len(data))

    def context(self) -> Context:
        return Context(self.paths, merge_fetched=False)

    def route(self, path: str, environ: Mapping[str, Any], links: Links) -> Response:
        query = {k: v[-1] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}
        parts = path.strip("/").split("/")
        head = parts[0]
        if head == "static" and len(parts) == 2 and parts[1] in STATIC:
            data = static_text(parts[1]).encode("utf-8")
            return Response(
                200,
                [data],
                STATIC[parts[1]],
                (("Cache-Control", "no-cache"),),
                length=len(data),
            )
        pages: dict[str, Callable[..., Response]] = {
            "": self.home,
            "search": self.search,
            "artifact": self.artifact,
            "run": self.run,
            "code": self.code,
            "dag": self.dag,
            "diff": self.diff,
            "blob": self.blob,
        }
        handler = pages.get(head)
        takes_id = head in ("artifact", "run", "code", "blob")
        if handler is None or len(parts) != (2 if takes_id else 1):
            raise HTTPError(404, f"no page at {path}")
        ctx = self.context()
        try:
            if takes_id:
                ident = parts[1].lower()
                if not HEX64.fullmatch(ident):
                    raise HTTPError(400, "not a full id: 64 hex digits (search takes prefixes)")
                return handler(ctx, links, ident, query)
            return handler(ctx, links, query)
        finally:
            ctx.ledger.close()

    # -- pages -----------------------------------------------------------------------------

    def home(self, ctx: Context, links: Links, query: Mapping[str, str]) -> Response:
        body = render.home(links, ctx.log(20), ctx.session_dag(), ctx.warnings)
        return self.html(200, "Lineage", body, links)

    def search(self, ctx: Context, links: Links, query: Mapping[str, str]) -> Response:
        text = query.get("q", "")
        if not text.strip():
            return self.html(200, "Search", render.search(links, "", "", []), links)
        try:
            target = resolve(ctx, text, self.local_files)
        except AmbiguousPrefix as exc:
            prefix = text.strip().lower()
            found: list[tuple[str, str]] = [
                ("artifact", a) for a in ctx.ledger.find_artifacts(prefix)
            ]
            found += [("run", r) for r in ctx.ledger.find_runs(prefix)]
            body = render.search(links, text, str(exc), found[:50])
            return self.html(400, "Search", body, links)
        except (NoMatch, PrefixTooShort, NeverRecorded, RoarError) as exc:
            status = 400 if isinstance(exc, PrefixTooShort) else _status_of(exc)
            return self.html(status, "Search", render.search(links, text, str(exc), []), links)
        if target.kind == "run":
            where = links.run(target.id)
        else:
            where = links.artifact(target.id, target.path)
        return Response(303, [b""], headers=(("Location", where),), length=0)

    def artifact(
        self, ctx: Context, links: Links, digest: str, query: Mapping[str, str]
    ) -> Response:
        path = query.get("path") or None
        art = ctx.artifact(digest, path)
        if (
            not art["produced_by"]
            and not art["consumed_by"]
            and not ctx.ledger.has_artifact(digest)
        ):
            raise HTTPError(404, f"no recorded run wrote or read artifact {digest[:12]}")
        shown = [*art["produced_by"][-100:], *art["consumed_by"][-100:]]
        runs = {rid: ctx.run_json(rid) for rid in shown}
        art = {
            **art,
            "produced_by": art["produced_by"][-100:],
            "consumed_by": art["consumed_by"][-100:],
        }
        top = ctx.producer(digest, path) if art["produced_by"] else None
        body = render.artifact(links, art, runs, top, self.stored(digest), path)
        return self.html(200, f"Artifact {digest[:12]}", body, links)

    def stores(self) -> list[Any]:
        if self.store_urls is not None:
            return [BlobStore(u) for u in self.store_urls]
        return stores_for(self.paths)

    def stored(self, digest: str) -> bool:
        for store in self.stores():
            try:
                if store.has(digest):
                    return True
            except Exception:  # a store that cannot answer holds nothing we can offer
                continue
        return False

    def run(self, ctx: Context, links: Links, run_id: str, query: Mapping[str, str]) -> Response:
        r = ctx.run_json(run_id)
        rec = ctx.run(run_id)
        producers: dict[str, tuple[str, str | None] | None] = {}
        for f in rec.inputs:
            made, _by_bytes = ctx.input_producer(run_id, f)
            producers[f.path] = (made, ctx.label(made)) if made else None
        body = render.run(links, r, producers, bool(r["code"]["commit"]))
        return self.html(200, f"Run {run_id[:12]}", body, links)

    def code(self, ctx: Context, links: Links, run_id: str, query: Mapping[str, str]) -> Response:
        r = ctx.run_json(run_id)
        commit, tree = r["code"]["commit"], r["code"]["tree"]
        if not commit:
            raise HTTPError(404, "this run was recorded before the repository's first commit")
        if r["code"]["dirty"] and tree:
            args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", commit, tree]
            note = "Uncommitted changes the run saw (its snapshot against the commit):"
        else:
            args = ["show", "--no-color", "--no-ext-diff", "--no-textconv", "--stat", commit]
            note = "The work tree was clean: the code is this commit."
        try:
            out = run_git(args, self.paths.root).stdout.decode("utf-8", "surrogateescape")
        except GitFailed:
            out, note = "", "The commit or snapshot is not in this repository (fetch it)."
        body = render.code(links, r, out, note)
        return self.html(200, f"Code of {run_id[:12]}", body, links)

    def dag(self, ctx: Context, links: Links, query: Mapping[str, str]) -> Response:
        ref = query.get("ref", "").strip() or None
        if ref is not None:
            target = resolve(ctx, ref, self.local_files)
            graph, data = lineage_graph(ctx, links, target)
            what = " ".join(data["target"].get("paths", [])[:1]) or target.id[:12]
            title = f"Lineage of {target.kind} {what}"
            ref = target.id
        else:
            graph, data = session_graph(ctx, links)
            title = "Session DAG"
        focus = query.get("focus", "").strip().lower()
        highlight = [f"r:{focus}", f"a:{focus}"] if HEX64.fullmatch(focus) else []
        compact = query.get("compact") == "1"
        body = render.dag(
            links,
            title,
            place(graph),
            place(runs_only(graph)),
            compact,
            data["steps"],
            highlight,
            ref,
        )
        return self.html(200, title, body, links)

    def diff(self, ctx: Context, links: Links, query: Mapping[str, str]) -> Response:
        a, b = query.get("a", "").strip(), query.get("b", "").strip()
        if not (a and b):
            body = "<h1>Diff</h1><p>Pick two runs or artifacts: by hash, run id, @N or path.</p>"
            body += render._diff_form(links, a, b)
            return self.html(200 if not (a or b) else 400, "Diff", body, links)
        try:
            ta = resolve(ctx, a, self.local_files)
            tb = resolve(ctx, b, self.local_files)
        except RoarError as exc:
            body = f"<h1>Diff</h1>{render._diff_form(links, a, b)}{render.error(str(exc))}"
            return self.html(_status_of(exc), "Diff", body, links)
        result = compare(ctx, ta.id, tb.id, self.paths.root)
        sides = diff_graphs(ctx, links, result)
        body = render.diff(links, result, place(sides.a), place(sides.b), (a, b))
        return self.html(200, "Diff", body, links)

    def blob(self, ctx: Context, links: Links, digest: str, query: Mapping[str, str]) -> Response:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", query.get("name", ""))[:100].lstrip(".")
        failed = ""
        for store in self.stores():
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
            try:
                # Every byte is checked before the first is sent: a corrupt blob is an error
                # page, never a download that looks complete.
                store.write_to(digest, spool.write)
            except BlobMissing:
                spool.close()
                continue
            except BlobCorrupt:
                spool.close()
                why = f"the stored bytes of {digest[:12]} do not match their hash"
                raise HTTPError(502, why) from None
            except Exception as exc:
                spool.close()
                # A store this server cannot read (no credentials for it, access denied, out
                # of reach) may be another's to read: said once no store had the bytes.
                failed = failed or f"{store.url}: {type(exc).__name__}"
                continue
            size = spool.tell()
            spool.seek(0)
            headers = (
                ("Content-Disposition", f'attachment; filename="{name or digest}"'),
                ("Cache-Control", "private, max-age=31536000, immutable"),
            )
            return Response(200, _chunks(spool), "application/octet-stream", headers, size)
        if failed:
            raise HTTPError(502, f"the bytes of {digest[:12]} could not be read here ({failed})")
        raise HTTPError(404, f"the bytes of {digest[:12]} are in no blob store this clone knows")


class _chunks:  # an iterable with close(), as PEP 3333 wants for clean-up
    def __init__(self, f: Any) -> None:
        self.f = f

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.f.read(CHUNK)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        self.f.close()


def make_app(
    paths: RepoPaths,
    *,
    allowed_hosts: Iterable[str] | None = None,
    local_files: bool = True,
    stores: Sequence[str] | None = None,
) -> App:
    return App(paths, allowed_hosts=allowed_hosts, local_files=local_files, stores=stores)


__all__ = ["App", "HTTPError", "esc", "make_app", "resolve"]
