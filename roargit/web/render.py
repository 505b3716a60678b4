"""The pages, as HTML strings. Every value from a record goes through `esc` (or `q` inside a
URL); nothing else here touches recorded text. Pages read fine without their script: links,
forms and a scrollable graph; the script adds zoom, highlighting and collapsing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from roargit.cli.compare import cause_text
from roargit.structs import NamedTuple
from roargit.web.graphs import Links, command_text
from roargit.web.layout import Placed, svg
from roargit.web.text import esc, human_size, short

CATEGORY_ORDER = ("code", "data", "params", "environment", "pipeline", "unexplained")


class Assets(NamedTuple):
    """How a page gets its style and script: links to the app's files, or the files' text
    inline (a self-contained export)."""

    css: str = ""  # inline text; empty: link to the app's file
    js: str = ""


def page(title: str, body: str, links: Links, assets: Assets | None = None) -> str:
    assets = assets or Assets()
    if assets.css:
        style = f"<style>{assets.css}</style>"
    else:
        style = f'<link rel="stylesheet" href="{esc(links.static("web.css"))}">'
    if assets.js:
        script = f"<script>{assets.js}</script>"
    else:
        script = f'<script src="{esc(links.static("web.js"))}" defer></script>'
    nav = ""
    if not links.in_page:
        nav = (
            f'<nav aria-label="main"><a class="brand" href="{esc(links.home())}">roar</a>'
            f'<form class="search" action="{esc(links.search())}" method="get" role="search">'
            '<label for="nav-q" class="sr">hash, prefix or path</label>'
            '<input id="nav-q" name="q" placeholder="hash, prefix, path or @N" '
            'autocomplete="off" spellcheck="false"><button>Search</button></form>'
            f'<a href="{esc(links.dag())}">DAG</a> <a href="{esc(links.diff())}">Diff</a></nav>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · roar</title>{style}</head><body>"
        f'<a class="skip" href="#main">Skip to content</a><header>{nav}</header>'
        f'<main id="main">{body}</main>{script}</body></html>'
    )


def _hash_link(links: Links, digest: str, path: str | None = None) -> str:
    return (
        f'<a class="hash" href="{esc(links.artifact(digest, path))}" title="{esc(digest)}">'
        f"{esc(short(digest))}</a>"
    )


def _run_link(links: Links, run_id: str, label: str | None = None) -> str:
    text = f"{label} · {short(run_id)}" if label else short(run_id)
    return f'<a class="run-link" href="{esc(links.run(run_id))}">{esc(text)}</a>'


def _files(links: Links, files: Sequence[Mapping[str, Any]], empty: str) -> str:
    if not files:
        return f'<p class="none">{esc(empty)}</p>'
    rows = []
    for f in files:
        kind = " (folder)" if f.get("type") == "dir" else ""
        note = (
            f' <span class="warn">not stored: {esc(f["not_stored"])}</span>'
            if f.get("not_stored")
            else ""
        )
        rows.append(
            f'<tr><td class="path">{esc(f["path"])}{kind}</td>'
            f"<td>{_hash_link(links, f['hash'], f['path'])}</td>"
            f'<td class="num">{esc(human_size(f.get("size")))}</td><td>{note}</td></tr>'
        )
    return (
        '<table class="files"><thead><tr><th>path</th><th>artifact</th><th>size</th><th></th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _value(value: Any, depth: int = 0) -> str:
    """A recorded environment value: maps as nested lists, lists joined, scalars escaped."""
    if isinstance(value, Mapping):
        if not value:
            return '<span class="none">—</span>'
        items = "".join(
            f"<dt>{esc(k)}</dt><dd>{_value(v, depth + 1)}</dd>" for k, v in sorted(value.items())
        )
        return f'<dl class="kv depth{min(depth, 3)}">{items}</dl>'
    if isinstance(value, (list, tuple)):
        if not value:
            return '<span class="none">—</span>'
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            return esc(", ".join(str(v) for v in value))
        return "".join(_value(v, depth + 1) for v in value)
    return esc(value)


def _copy(text: str, label: str) -> str:
    return (
        f'<div class="copy"><code>{esc(text)}</code>'
        f'<button type="button" class="copy-btn" data-copy="{esc(text)}" '
        f'aria-label="copy: {esc(label)}">Copy</button></div>'
    )


def _diff_form(links: Links, a: str = "", b: str = "") -> str:
    if links.in_page:
        return ""
    return (
        f'<form class="diff-form" action="{esc(links.diff())}" method="get">'
        '<label>A <input name="a" value="' + esc(a) + '" placeholder="hash, @N or path" '
        'spellcheck="false"></label> <label>B <input name="b" value="' + esc(b) + '" '
        'placeholder="hash, @N or path" spellcheck="false"></label> '
        "<button>Diff</button></form>"
    )


# -- pages ---------------------------------------------------------------------------------


def home(
    links: Links, log: Sequence[Mapping[str, Any]], dag: Mapping[str, Any], warnings: Sequence[str]
) -> str:
    steps = dag["steps"]
    rows = "".join(
        f"<tr><td>{esc(e['step'] or '-')}</td><td>{_run_link(links, e['id'])}</td>"
        f'<td class="state-{esc(e["status"])}">{esc(e["status"])}</td>'
        f"<td>{esc(e['started_at'])}</td>"
        f'<td class="cmd"><code>{esc(command_text(e["argv"]))}</code></td></tr>'
        for e in log
    )
    recent = (
        '<table class="runs"><thead><tr><th>step</th><th>run</th><th>status</th>'
        f"<th>started</th><th>command</th></tr></thead><tbody>{rows}</tbody></table>"
        if log
        else '<p class="none">No runs recorded yet: <code>roar run CMD</code> records one.</p>'
    )
    session = (
        f"<p>The active session has {len(steps)} step{'s' if len(steps) != 1 else ''}: "
        f'<a href="{esc(links.dag())}">see its DAG</a>.</p>'
        if steps
        else '<p class="none">The active session has no steps.</p>'
    )
    return (
        "<h1>Lineage</h1>"
        f'<form class="big-search" action="{esc(links.search())}" method="get" role="search">'
        '<label for="q">Paste an artifact hash, a run id, a prefix (6+ hex), a path or a '
        'step (@N)</label><div><input id="q" name="q" autofocus autocomplete="off" '
        'spellcheck="false"><button>Search</button></div></form>'
        f"{_warnings(warnings)}{session}<h2>Compare two runs or artifacts</h2>"
        f"{_diff_form(links)}<h2>Recent runs</h2>{recent}"
    )


def _warnings(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return f'<ul class="warnings" role="status">{items}</ul>'


def search(links: Links, query: str, error: str, candidates: Sequence[tuple[str, str]]) -> str:
    found = ""
    if candidates:
        items = "".join(
            f'<li>{kind} <a href="{esc(links.run(i) if kind == "run" else links.artifact(i))}">'
            f"<code>{esc(i)}</code></a></li>"
            for kind, i in candidates
        )
        found = f"<p>It could be any of these:</p><ul>{items}</ul>"
    return (
        "<h1>Search</h1>"
        f'<form class="big-search" action="{esc(links.search())}" method="get" role="search">'
        '<label for="q">Hash, prefix, path or step</label><div>'
        f'<input id="q" name="q" value="{esc(query)}" autocomplete="off" spellcheck="false">'
        "<button>Search</button></div></form>"
        + (f'<p class="error" role="alert">{esc(error)}</p>' if error else "")
        + found
    )


def error(message: str) -> str:
    return f'<h1>Not here</h1><p class="error" role="alert">{esc(message)}</p>'


def artifact(
    links: Links,
    art: Mapping[str, Any],
    runs: Mapping[str, Mapping[str, Any]],
    top: str | None,
    stored: bool,
    path: str | None,
) -> str:
    digest = art["hash"]
    paths = art["paths"]
    name = (path or (paths[0] if paths else "")).rstrip("/").rsplit("/", 1)[-1]

    def run_rows(ids: Sequence[str]) -> str:
        if not ids:
            return ""
        rows = "".join(
            f"<li>{_run_link(links, rid, runs[rid]['step'])} "
            f'<span class="state-{esc(runs[rid]["status"])}">{esc(runs[rid]["status"])}</span> '
            f"<code>{esc(command_text(runs[rid]['argv']))}</code>"
            + (" <strong>(made it)</strong>" if rid == top else "")
            + "</li>"
            for rid in ids
        )
        return f'<ul class="run-list">{rows}</ul>'

    checks = _verifications((runs.get(top) or {}).get("verifications") or []) if top else ""
    produced = run_rows(art["produced_by"]) or '<p class="none">No recorded run: source data.</p>'
    consumed = run_rows(art["consumed_by"]) or '<p class="none">No recorded run read it.</p>'
    download = (
        f'<p><a class="button" href="{esc(links.blob(digest, name))}" download>'
        f"Download</a> (from the blob store, checked against its hash)</p>"
        if stored
        else '<p class="none">The bytes are in no blob store this clone knows.</p>'
    )
    kind = " (folder)" if art["type"] == "dir" else ""
    return (
        f'<h1>Artifact <code class="hash">{esc(short(digest))}</code>{kind}</h1>'
        '<dl class="facts">'
        f'<dt>hash</dt><dd><code class="hash-full">{esc(digest)}</code></dd>'
        f"<dt>size</dt><dd>{esc(human_size(art['size']))}</dd>"
        f"<dt>paths</dt><dd>{'<br>'.join(esc(p) for p in paths) or '—'}</dd></dl>"
        f"{download}"
        f'<p><a href="{esc(links.dag(digest))}">Its lineage as a DAG</a></p>'
        "<h2>Recreate these bytes</h2>"
        + _copy(f"roar reproduce {digest} --run -y", "the reproduce command")
        + f"<h2>Produced by</h2>{produced}"
        + (f"<h3>Reproductions of the run that made it</h3>{checks}" if checks else "")
        + f"<h2>Consumed by</h2>{consumed}"
        "<h2>Compare with another</h2>" + _diff_form(links, digest)
    )


def run(
    links: Links,
    r: Mapping[str, Any],
    producers: Mapping[str, tuple[str, str | None] | None],
    has_commit: bool,
) -> str:
    """A run's page. `producers`: per input path, the run whose write it read and its label."""
    rid = r["id"]
    env = dict(r["environment"])
    by = r.get("recorded_by") or {}
    name = " ".join(
        str(x) for x in (by.get("name"), f"<{by['email']}>" if by.get("email") else "") if x
    )
    who = name or env.get("user") or "?"
    host = by.get("host") or env.get("hostname") or "?"
    code = r["code"]
    commit = code["commit"]
    dirty = code["dirty"]
    code_line = esc(commit or "no commit") + (
        f" on {esc(code['branch'])}" if code["branch"] else " (detached HEAD)"
    )
    if dirty:
        code_line += f", uncommitted changes: snapshot tree <code>{esc(code['tree'] or '?')}</code>"
    if has_commit and not links.in_page:
        code_line += f' · <a href="{esc(links.code(rid))}">see the code it ran</a>'
    code_inputs = "".join(
        f"<li><code>{esc(c['path'])}</code> blob {esc(short(c['blob'], 10))}</li>"
        for c in code["inputs"]
    )
    status = r["status"]
    incomplete = (
        ""
        if r["complete"]
        else f'<p class="warn">Capture: {esc(r["capture"])}; incomplete: some file accesses '
        "may be missing.</p>"
    )
    inputs = []
    for f in r["inputs"]:
        made = producers.get(f["path"])
        inputs.append({**f, "from": _run_link(links, made[0], made[1]) if made else "source data"})
    in_rows = "".join(
        f'<tr><td class="path">{esc(f["path"])}</td><td>{_hash_link(links, f["hash"], f["path"])}'
        f'</td><td class="num">{esc(human_size(f.get("size")))}</td><td>{f["from"]}</td></tr>'
        for f in inputs
    )
    in_table = (
        '<table class="files"><thead><tr><th>path</th><th>artifact</th><th>size</th>'
        f"<th>written by</th></tr></thead><tbody>{in_rows}</tbody></table>"
        if inputs
        else '<p class="none">No data inputs.</p>'
    )
    unreadable = "".join(
        f"<li>{esc(u['access'])} <code>{esc(u['path'])}</code>: {esc(u['reason'])}</li>"
        for u in r.get("unreadable", [])
    )
    label = r["step"] or "not in the session"
    checks = _verifications(r.get("verifications") or [])
    return (
        f'<h1>Run <code class="hash">{esc(short(rid))}</code> '
        f'<span class="step">{esc(label)}</span> '
        f'<span class="badge state-{esc(status)}">{esc(status)}</span></h1>'
        "<h2>Command</h2>" + _copy(command_text(r["argv"]), "the command") + '<dl class="facts">'
        f'<dt>run id</dt><dd><code class="hash-full">{esc(rid)}</code></dd>'
        f"<dt>exit status</dt><dd>{esc(r['exit_code'])} ({esc(status)})</dd>"
        f"<dt>working folder</dt><dd><code>{esc(r['cwd'])}</code></dd>"
        f"<dt>started</dt><dd>{esc(r['started_at'])}, {esc(r['duration_s'])} s</dd>"
        f"<dt>by</dt><dd>{esc(who)} on {esc(host)}</dd>"
        f"<dt>code</dt><dd>{code_line}</dd>"
        f"<dt>session</dt><dd><code>{esc(short(r['session']))}</code></dd></dl>"
        f"{incomplete}"
        f'<p><a href="{esc(links.dag(rid))}">Its lineage as a DAG</a></p>'
        f"<h2>Inputs</h2>{in_table}"
        f"<h2>Outputs</h2>{_files(links, r['outputs'], 'No outputs.')}"
        + (f"<h2>Reproductions</h2>{checks}" if checks else "")
        + (f"<h2>Code it read</h2><ul>{code_inputs}</ul>" if code_inputs else "")
        + (f'<h2>Unreadable</h2><ul class="warn">{unreadable}</ul>' if unreadable else "")
        + f"<h2>Environment</h2>{_value(env)}"
        "<h2>Compare with another</h2>" + _diff_form(links, rid)
    )


def _verifications(found: Sequence[Mapping[str, Any]]) -> str:
    """Reproductions that re-ran a run and say whether its outputs came out identical."""
    items = []
    for v in found:
        by = v.get("by") or {}
        who = " ".join(str(x) for x in (by.get("name"), by.get("email")) if x) or "someone"
        result = str(v.get("result", "?"))
        items.append(
            f'<li><span class="verdict {esc(result)}">{esc(result)}</span> by {esc(who)} '
            f"at {esc(v.get('at', '?'))}"
            + (f" in clone {esc(v['clone'])}" if v.get("clone") else "")
            + "</li>"
        )
    return f'<ul class="verifications">{"".join(items)}</ul>' if items else ""


def code(links: Links, r: Mapping[str, Any], patch: str, note: str) -> str:
    """The code a run saw: its commit, and the snapshot of uncommitted changes as a patch."""
    rows = []
    for line in patch.splitlines():
        cls = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else "hdr"
            if line.startswith(("diff ", "@@", "index "))
            else ""
        )
        rows.append(f'<span class="{cls}">{esc(line.expandtabs(4))}</span>')
    body = f'<pre class="hunk">{chr(10).join(rows)}</pre>' if rows else ""
    return (
        f"<h1>Code of run {_run_link(links, r['id'], r['step'])}</h1>"
        f"<p>commit <code>{esc(r['code']['commit'] or 'none')}</code></p>"
        f"<p>{esc(note)}</p>{body}"
    )


def dag(
    links: Links,
    title: str,
    full: Placed,
    compact: Placed,
    show_compact: bool,
    steps: Sequence[Mapping[str, Any]],
    highlight: Sequence[str],
    ref: str | None,
) -> str:
    counts = f"{len(steps)} step{'s' if len(steps) != 1 else ''}"
    marks: dict[str, int] = {}
    for s in steps:
        if s["state"] != "ok":
            marks[s["state"]] = marks.get(s["state"], 0) + 1
    if marks:
        counts += " (" + ", ".join(f"{n} {esc(k)}" for k, n in sorted(marks.items())) + ")"
    toggle_href = links.dag(ref, **({} if show_compact else {"compact": "1"}))
    toggle_text = "Show artifacts" if show_compact else "Collapse artifacts"
    controls = (
        '<div class="dag-controls" role="toolbar" aria-label="graph">'
        '<button type="button" data-zoom="in" aria-label="zoom in">+</button>'
        '<button type="button" data-zoom="out" aria-label="zoom out">−</button>'
        '<button type="button" data-zoom="fit">Fit</button>'
        '<button type="button" data-zoom="1">1:1</button>'
        + (
            ""
            if links.in_page
            else f'<a class="button" data-collapse href="{esc(toggle_href)}">{toggle_text}</a>'
        )
        + (
            ""
            if links.in_page
            else '<label><input type="checkbox" data-pick> pick two nodes to diff</label>'
        )
        + "</div>"
    )
    full_svg = svg(full, label=f"{title}: runs and artifacts", highlight=highlight)
    compact_svg = svg(compact, label=f"{title}: runs only", highlight=highlight)
    views = (
        f'<div class="dag-view" data-view="full"{" hidden" if show_compact else ""}>'
        f"{full_svg}</div>"
        f'<div class="dag-view" data-view="compact"{"" if show_compact else " hidden"}>'
        f"{compact_svg}</div>"
    )
    legend = (
        '<p class="legend"><span class="key run">run</span> <span class="key artifact">'
        'artifact</span> <span class="key state-stale">stale</span> '
        '<span class="key state-failed">failed</span> <span class="key target">target</span> '
        "· hover or focus a node to light its path; Shift+click keeps it lit</p>"
    )
    return (
        f"<h1>{esc(title)}</h1><p>{counts}</p>{controls}{legend}{views}"
        + _diff_form(links)
        + _step_table(links, steps)
    )


def _step_table(links: Links, steps: Sequence[Mapping[str, Any]]) -> str:
    if not steps:
        return '<p class="none">No steps.</p>'
    rows = "".join(
        f"<tr><td>{esc(s['step'])}</td>"
        f"<td>{_run_link(links, s['run'])}</td>"
        f'<td class="state-{esc(s["state"])}">{esc(s["state"])}</td>'
        f'<td class="cmd"><code>{esc(command_text(s["command"]))}</code></td>'
        f"<td>{esc(', '.join(s['depends_on']))}</td>"
        f'<td class="path">{"<br>".join(esc(o) for o in s["outputs"])}</td></tr>'
        for s in steps
    )
    return (
        '<h2>Steps</h2><table class="runs"><thead><tr><th>step</th><th>run</th><th>state</th>'
        f"<th>command</th><th>after</th><th>outputs</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _cause_text(c: Mapping[str, Any]) -> str:
    return cause_text(dict(c))


def _where(c: Mapping[str, Any]) -> str:
    steps = [s for s in c.get("steps") or [] if s != "-"]
    if not steps:
        return ""
    script = c.get("script")
    head = f"{steps[0]} {script}" if script else steps[0]
    more = f" (+{len(steps) - 1} more)" if len(steps) > 1 else ""
    return f"on {head}{more}"


def _hunks(c: Mapping[str, Any]) -> str:
    out = []
    for h in c.get("hunks") or []:
        lines = [f'<span class="hdr">{esc(h["header"])}</span>']
        for line in h["lines"]:
            cls = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
            lines.append(f'<span class="{cls}">{esc(line.expandtabs(4))}</span>')
        out.append(f'<pre class="hunk">{chr(10).join(lines)}</pre>')
    if c.get("hunks_omitted"):
        out.append(f'<p class="none">… {esc(c["hunks_omitted"])} more lines</p>')
    if c.get("note"):
        out.append(f'<p class="none">({esc(c["note"])})</p>')
    return "".join(out)


def diff(
    links: Links,
    result: Mapping[str, Any],
    side_a: Placed,
    side_b: Placed,
    refs: tuple[str, str],
) -> str:
    a, b = result["a"], result["b"]
    head = (
        f'<h1>Diff</h1><p class="sides"><span class="side">A</span> '
        f'{_target_link(links, a)} <span class="side">B</span> {_target_link(links, b)}</p>'
    )
    form = _diff_form(links, *refs)
    if result["identical"]:
        verdict = (
            '<p class="identical" role="status">Identical lineages: the same code, data, '
            "params and environment at every step.</p>"
        )
        return head + form + verdict + _sides(side_a, side_b)
    causes = result["root_causes"]
    noun = "root cause" if len(causes) == 1 else "root causes"
    items = "".join(
        f'<li class="cause cat-{esc(c["category"])}" id="cause-{esc(c["id"])}">'
        f'<span class="cat">{esc(c["category"])}</span> '
        f'<span class="what">{esc(_cause_text(c))}</span> '
        f'<span class="where">{esc(_where(c))}</span></li>'
        for c in causes
    )
    cons = []
    for item in result["consequences"]:
        why = " ".join(
            f'<a class="because" href="#cause-{esc(i)}">[{esc(i)}]</a>' for i in item["because"]
        )
        if item["kind"] == "artifact":
            path = item["path"] if "a_path" not in item else f"{item['a_path']} → {item['path']}"
            ha = _hash_link(links, item["a"]) if item.get("a") else "(absent)"
            hb = _hash_link(links, item["b"]) if item.get("b") else "(absent)"
            cons.append(
                f'<li class="consequence"><code>{esc(path)}</code> {ha} → {hb} '
                f"written by {esc(item['step'])}, because of {why}</li>"
            )
        else:
            ins = ", ".join(i["path"] for i in item.get("inputs", []) if i["path"])
            cons.append(
                f'<li class="consequence">{esc(item["step"])} {esc(item["script"])} re-ran on '
                f"changed input <code>{esc(ins)}</code>, because of {why}</li>"
            )
    by_cat = []
    for cat in CATEGORY_ORDER:
        entries = result["by_category"].get(cat, [])
        if not entries and cat == "unexplained":
            continue
        body = (
            "".join(
                f'<div class="cause-detail"><a href="#cause-{esc(c["id"])}">[{esc(c["id"])}]</a> '
                f'{esc(_cause_text(c))} <span class="where">{esc(_where(c))}</span>'
                f"{_hunks(c)}</div>"
                for c in entries
            )
            or '<p class="none">no change</p>'
        )
        by_cat.append(
            f'<section class="category cat-{cat}{" empty" if not entries else ""}">'
            f"<h3>{cat}</h3>{body}</section>"
        )
    warnings = _warnings(result.get("warnings", []))
    return (
        head
        + form
        + warnings
        + f'<h2>{len(causes)} {noun}</h2><ol class="causes">{items}</ol>'
        + (f'<h2>Consequences</h2><ul class="consequences">{"".join(cons)}</ul>' if cons else "")
        + f'<h2>By category</h2><div class="categories">{"".join(by_cat)}</div>'
        + _sides(side_a, side_b)
    )


def _target_link(links: Links, t: Mapping[str, Any]) -> str:
    if t["kind"] == "run":
        return f"run {_run_link(links, t['id'])}"
    return f"artifact {_hash_link(links, t['id'], t.get('path'))}"


def _sides(side_a: Placed, side_b: Placed) -> str:
    legend = (
        '<p class="legend">'
        + " ".join(f'<span class="key cat-{c}">{c}</span>' for c in CATEGORY_ORDER[:5])
        + ' <span class="key consequence">consequence</span> '
        '<span class="key target">compared</span></p>'
    )
    return (
        f'<h2>Both lineages</h2>{legend}<div class="sides-graphs">'
        f'<section><h3>A</h3><div class="dag-view" data-fit>{svg(side_a, label="lineage A")}'
        '</div></section><section><h3>B</h3><div class="dag-view" data-fit>'
        f"{svg(side_b, label='lineage B')}</div></section></div>"
    )
