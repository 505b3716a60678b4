"""Self-contained HTML: `roar dag --html FILE` and `roar diff A B --html FILE`.

One file, its style sheet, script and SVG inline, no request made when it is opened (for a
CI run's artifacts or an email). Node links lead to the runs listed in the same file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from roargit.errors import RoarError
from roargit.views import Context, Target
from roargit.web import render
from roargit.web.app import static_text
from roargit.web.graphs import Links, diff_graphs, lineage_graph, session_graph
from roargit.web.layout import place, runs_only
from roargit.web.text import esc

LINKS = Links(in_page=True)
# Opened from a file, the page may load nothing from anywhere.
CSP = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
)


def _page(title: str, body: str) -> str:
    assets = render.Assets(css=static_text("web.css"), js=static_text("web.js"))
    html = render.page(title, body, LINKS, assets)
    return html.replace("<head>", "<head>" + CSP, 1)


def _runs_section(ctx: Context, run_ids: list[str]) -> str:
    """Each run of the graph, anchored for the node links: its command, inputs, outputs."""
    parts = []
    anchored: set[str] = set()  # an artifact's anchor sits at its first mention
    for rid in dict.fromkeys(run_ids):
        r = ctx.run_json(rid)
        items = []
        for kind, group in (("in", r["inputs"]), ("out", r["outputs"])):
            for f in group:
                anchor = f"artifact-{f['hash'][:16]}"
                where = "" if anchor in anchored else f' id="{esc(anchor)}"'
                anchored.add(anchor)
                items.append(
                    f"<li{where}>{kind} <code>{esc(f['path'])}</code> {esc(f['hash'][:12])}</li>"
                )
        files = "".join(items)
        parts.append(
            f'<section class="run-detail" id="run-{esc(rid[:16])}"><h3>{esc(r["step"] or "")} '
            f'run <code>{esc(rid[:12])}</code> <span class="state-{esc(r["status"])}">'
            f"{esc(r['status'])}</span></h3>"
            f"<code>{esc(render.command_text(r['argv']))}</code>"
            f"<p>{esc(r['started_at'])} · commit {esc((r['code']['commit'] or 'none')[:12])}"
            f"{' (dirty)' if r['code']['dirty'] else ''}</p><ul>{files}</ul></section>"
        )
    return "<h2>Runs</h2>" + "".join(parts)


def dag_html(ctx: Context, target: Target | None) -> str:
    if target is None:
        graph, data = session_graph(ctx, LINKS)
        title = "Session DAG"
    else:
        graph, data = lineage_graph(ctx, LINKS, target)
        title = f"Lineage of {target.kind} {target.path or target.id[:12]}"
    body = render.dag(
        LINKS, title, place(graph), place(runs_only(graph)), False, data["steps"], [], None
    )
    return _page(title, body + _runs_section(ctx, [s["run"] for s in data["steps"]]))


def diff_html(ctx: Context, result: dict[str, Any]) -> str:
    sides = diff_graphs(ctx, LINKS, result)
    refs = (result["a"]["ref"], result["b"]["ref"])
    body = render.diff(LINKS, result, place(sides.a), place(sides.b), refs)
    runs = [s[k] for s in result["steps"] for k in ("a_run", "b_run") if s[k]]
    return _page("Diff", body + _runs_section(ctx, runs))


class CannotWrite(RoarError):
    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"cannot write {path}: {exc.strerror or exc}")


def write(path: Path, html: str) -> None:
    """Write the page whole or not at all: a temporary file beside it, renamed into place."""
    try:
        _write(path, html)
    except OSError as exc:
        raise CannotWrite(path, exc) from None


def _write(path: Path, html: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        mask = os.umask(0)  # mkstemp makes 0o600; a page to share is made like any file
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
