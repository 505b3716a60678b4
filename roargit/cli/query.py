"""`roar show`, `roar lineage`, `roar dag`, `roar log`, `roar status`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from roargit.cli import add_command
from roargit.cli.output import (
    emit_json,
    human_size,
    say,
    short,
    shorten,
    show_argv,
    show_text,
    warn,
    wrap_argv,
)

MARKS = {
    "ok": "",
    "stale": "  [stale]",
    "failed": "  [failed]",
    "interrupted": "  [interrupted]",
    "terminated": "  [terminated]",
    "superseded": "  [superseded]",
}


def verification_summary(verifications: list[dict[str, Any]]) -> str:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.record_json import verification_summary as summary

    return summary(verifications)


def _context() -> Any:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.repo import find_repo
    from roargit.views import Context

    return Context(find_repo(Path.cwd()), on_warning=warn)


def _command(argv: list[str], width: int = 70) -> str:
    """A recorded command for a one-line overview: quoted, escaped, cut with a `…`."""
    return shorten(show_argv(argv), width)


def _who(by: dict[str, str] | None, *, long: bool = True) -> str:
    """Who recorded a run, for a line: `Ada <ada@example.org> on lab-3` (short: `Ada`)."""
    if not by:
        return "?"
    name = by.get("name") or by.get("email") or "?"
    if not long:
        return show_text(name)
    email = f" <{by['email']}>" if by.get("email") and by.get("name") else ""
    host = f" on {by['host']}" if by.get("host") else ""
    return show_text(f"{name}{email}{host}")


def _render_run(r: dict[str, Any]) -> None:
    label = r["step"] or "(not in session)"
    say(f"run {r['id']}")
    say(f"  step      {label}{MARKS.get(r['status'], '')}")
    for line in wrap_argv("  command   ", r["argv"]):
        say(line)
    say(f"  cwd       {show_text(r['cwd'])}")
    say(
        f"  status    {r['status']} (exit {r['exit_code']}), {r['duration_s']} s, "
        f"started {r['started_at']}"
    )
    if r.get("recorded_by"):
        say(f"  by        {_who(r['recorded_by'])}")
    code = r["code"]
    commit = (code["commit"] or "no commit")[:12]
    dirty = f", dirty (snapshot tree {code['tree'][:12]})" if code["dirty"] else ""
    say(f"  code      {commit} on {show_text(code['branch'] or 'detached HEAD')}{dirty}")
    env = r["environment"]
    py = env.get("python", {})
    osinfo = env.get("os", {})
    gpus = ", ".join(g.get("name", "?") for g in env.get("gpus", [])) or "none"
    system = osinfo.get("distro") or osinfo.get("system", "?")
    say(
        show_text(
            f"  env       python {py.get('version', '?')}, {system} {env.get('arch', '')}, "
            f"gpu: {gpus}, host {env.get('hostname', '?')}"
        )
    )
    pkgs = env.get("packages", {})
    if pkgs:
        say(show_text("  packages  " + ", ".join(f"{k} {v}" for k, v in sorted(pkgs.items()))))
    if not r["complete"]:
        say(f"  capture   {r['capture']}, INCOMPLETE: some accesses may be missing")
    if r.get("verifications"):
        say(f"  verified  {show_text(verification_summary(r['verifications']))}")
    for c in code["inputs"]:
        say(f"  code in   {show_text(c['path'])}  (blob {show_text(c['blob'][:10])})")
    for f in r["inputs"]:
        say(f"  in        {show_text(f['path'])}  {short(f['hash'])}  {human_size(f['size'])}")
    for f in r["outputs"]:
        lost = f"  not stored: {show_text(f['not_stored'])}" if f.get("not_stored") else ""
        size = human_size(f["size"])
        say(f"  out       {show_text(f['path'])}  {short(f['hash'])}  {size}{lost}")
    for u in r.get("unreadable", []):  # read or written, but roar could not read it back
        size = human_size(u["size"]) if u["size"] >= 0 else "size unknown"
        tag = "in" if u["access"] == "input" else "out"
        say(f"  {tag:<9} {show_text(u['path'])}  unreadable ({show_text(u['reason'])})  {size}")
    for stream, path in sorted(r.get("redirects", {}).items()):  # `< in.jsonl > out.jsonl`
        arrow = "<" if stream == "stdin" else ">"
        say(f"  {stream:<9} {arrow} {show_text(path)}")


#: Deeper levels of a lineage tree are drawn at this indentation (a chain of 1,000 steps
#: would push its lines off any screen).
MAX_INDENT = 24


def _verified(r: dict[str, Any]) -> str:
    """`  (reproduced identical ×2, last by …)` for a run that reproductions re-ran."""
    text = verification_summary(r.get("verifications") or [])
    return f"  ({show_text(text)})" if text else ""


def _producers(ctx: Any, run_ids: list[str]) -> list[str]:
    """One line per group of producers that ran the same command as the same step and wrote
    the same outputs (a step re-run with identical results), newest last, with a count."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rid in run_ids:
        r = ctx.run_json(rid)
        key = (
            r["step"],
            tuple(r["argv"]),
            tuple((o["path"], o["hash"]) for o in r["outputs"]),
        )
        groups.setdefault(key, []).append(r)
    lines = []
    for same in groups.values():
        r = same[-1]
        more = f"  (and {len(same) - 1} earlier identical)" if len(same) > 1 else ""
        lines.append(
            f"{r['step'] or '-':>4} run {short(r['id'])}  {_command(r['argv'], 50)}{more}"
            + _verified({"verifications": [v for x in same for v in x["verifications"]]})
        )
    return lines


def _render_tree(ctx: Any, lin: dict[str, Any]) -> None:
    """The producer chain, target first, each edge named by hash: an input leads to the run
    whose write it read (lineage `links`)."""
    runs = {r["id"]: r for r in lin["runs"]}
    links = {(k["run"], k["path"]): k for k in lin["links"]}

    expanded: set[str] = set()

    def show_run(first: str, depth: int) -> None:
        # Depth first, without recursion (a lineage may be thousands of steps deep); a run
        # met again (a diamond) is not expanded twice.
        expanded.add(first)
        stack = [(iter(runs[first]["inputs"]), first, depth)]
        while stack:
            inputs, rid, level = stack[-1]
            f = next(inputs, None)
            if f is None:
                stack.pop()
                continue
            pad = "  " * min(level, MAX_INDENT)
            link = links.get((rid, f["path"]))
            if link is None or link["producer"] not in runs:
                # A producer left out by --depth shows as `…`.
                tag = "…" if link is not None else "source"
                say(f"{pad}{show_text(f['path'])}  {short(f['hash'])}  ({tag})")
                continue
            r = runs[link["producer"]]
            guess = "  (same bytes, written elsewhere)" if link["by_bytes"] else ""
            again = "  (see above)" if r["id"] in expanded else ""
            made = f"{r['step'] or short(r['id'])} {_command(r['argv'], 50)}{_verified(r)}"
            say(f"{pad}{show_text(f['path'])}  {short(f['hash'])}  ← {made}{guess}{again}")
            if not again:
                expanded.add(r["id"])
                stack.append((iter(r["inputs"]), r["id"], level + 1))

    t = lin["target"]
    if t["kind"] == "artifact":
        path = (t["paths"] or [short(t["hash"])])[0]
        if not lin["runs"]:
            say(f"  {show_text(path)}  {short(t['hash'])}  (source)")
            return
        top = lin["runs"][0]
        path = next((o["path"] for o in top["outputs"] if o["hash"] == t["hash"]), path)
        made = f"{top['step'] or short(top['id'])} {_command(top['argv'], 50)}{_verified(top)}"
        say(f"  {show_text(path)}  {short(t['hash'])}  ← {made}")
        show_run(top["id"], 2)
    else:
        show_run(t["id"], 1)


def cmd_show(args: argparse.Namespace) -> int:
    ctx = _context()
    if args.ref is None:
        dag = ctx.session_dag()
        if args.json:
            emit_json({"kind": "session", **dag})
            return 0
        _render_dag(dag)
        return 0
    target = ctx.resolve(args.ref, Path.cwd())
    if target.kind == "run":
        data = ctx.run_json(target.id)
        if args.json:
            emit_json(data)
            return 0
        _render_run(data)
        return 0
    art = ctx.artifact(target.id, target.path)
    if args.json:
        emit_json(art)
        return 0
    size = human_size(art["size"]) if art["size"] is not None else "?"
    say(f"artifact {art['hash']}")
    say(f"  size         {size}{' (folder)' if art['type'] == 'dir' else ''}")
    say(f"  paths        {show_text(', '.join(art['paths'])) or '-'}")
    for key, title in (("produced_by", "produced by"), ("consumed_by", "consumed by")):
        for line in _producers(ctx, art[key]):
            say(f"  {title:<12} {line}")
        if not art[key]:
            say(f"  {title:<12} -" + ("  (source data)" if key == "produced_by" else ""))
    top = ctx.producer(art["hash"], target.path) if art["produced_by"] else None
    if top is not None:
        say("")
        _render_run(ctx.run_json(top))
        say("")
        say("lineage:")
        _render_tree(ctx, ctx.lineage(target))
    elif art["produced_by"]:
        # Runs wrote these bytes elsewhere; none made the file at this path.
        say(f"  {show_text(target.path or '')}: source data (no run wrote it there)")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    ctx = _context()
    target = ctx.resolve(args.ref, Path.cwd())
    lin = ctx.lineage(target, args.depth)
    if args.json:
        emit_json(lin)
        return 0
    _render_tree(ctx, lin)
    say(f"{len(lin['runs'])} run(s); source data:")
    for s in lin["sources"]:
        say(f"  {show_text(s['paths'][0])}  {s['hash']}")
    return 0


def _render_dag(dag: dict[str, Any]) -> None:
    if not dag["steps"]:
        say("no steps in this session yet: roar run CMD records one")
        return
    for s in dag["steps"]:
        deps = f"  ← {', '.join(s['depends_on'])}" if s["depends_on"] else ""
        sup = f"  (supersedes {len(s['superseded'])})" if s["superseded"] else ""
        counts = s.get("verified") or {}
        ver = ", ".join(f"{r} ×{n}" for r, n in counts.items() if n)
        ver = f"  (reproduced {ver})" if ver else ""
        say(
            f"{s['step']:>4}  {short(s['run'], 8)}  {_command(s['command'], 60)}"
            f"{MARKS.get(s['state'], '')}{deps}{sup}{ver}"
        )
        for o in s["outputs"]:
            say(f"        → {show_text(o)}")


def _mermaid(dag: dict[str, Any]) -> str:
    lines = ["graph TD"]
    for s in dag["steps"]:
        node = s["step"].replace("@", "s")
        text = _command(s["command"], 40).replace('"', "'")
        lines.append(f'  {node}["{s["step"]} {text}{MARKS.get(s["state"], "")}"]')
        for d in s["depends_on"]:
            lines.append(f"  {d.replace('@', 's')} --> {node}")
    return "\n".join(lines)


def _dot(dag: dict[str, Any]) -> str:
    lines = ["digraph roar {", "  rankdir=LR;"]
    for s in dag["steps"]:
        # DOT reads backslashes in a label (\r and \l break lines): doubled, they show as typed.
        text = _command(s["command"], 40).replace("\\", "\\\\").replace('"', "'")
        style = ", style=dashed" if s["state"] != "ok" else ""
        lines.append(
            f'  "{s["step"]}" [label="{s["step"]} {text}{MARKS.get(s["state"], "")}"{style}];'
        )
        for d in s["depends_on"]:
            lines.append(f'  "{d}" -> "{s["step"]}";')
    lines.append("}")
    return "\n".join(lines)


def cmd_dag(args: argparse.Namespace) -> int:
    ctx = _context()
    if args.ref:
        dag = ctx.lineage_dag(ctx.resolve(args.ref, Path.cwd()))
    else:
        dag = ctx.session_dag()
    if args.html:
        # lazy: loaded when this command runs, not at every command's start-up
        from roargit.web import export

        target = ctx.resolve(args.ref, Path.cwd()) if args.ref else None
        export.write(Path(args.html), export.dag_html(ctx, target))
        say(f"wrote {show_text(args.html)}")
    elif args.json:
        emit_json(dag)
    elif args.mermaid:
        say(_mermaid(dag))
    elif args.dot:
        say(_dot(dag))
    else:
        _render_dag(dag)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    ctx = _context()
    entries = ctx.log(args.n)
    if args.json:
        emit_json(entries)
        return 0
    for e in entries:
        say(
            f"{e['step'] or '-':>4}  {short(e['id'], 10)}  {e['status']:<11} "
            f"{e['duration_s']:>8.2f}s  {_who(e.get('recorded_by'), long=False):<12.12} "
            f"{_command(e['argv'])}"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ctx = _context()
    st = ctx.status()
    if args.json:
        emit_json(st)
        return 0
    if not st["outputs"]:
        say("no steps in this session yet")
    for o in st["outputs"]:
        say(f"{o['state']:<9} {o['step']:>4}  {show_text(o['path'])}")
    for s in st["stale"]:
        say(f"stale     {s['step']:>4}")
        for c in s["changes"]:
            new = short(c["new"]) if c["new"] else "gone"
            say(f"            {c['kind']} {show_text(c['path'])}  {short(c['old'])} → {new}")
        if s["upstream"]:
            say(f"            after {', '.join(s['upstream'])}")
    if st["stale_steps"]:
        say(f"stale steps: {', '.join(st['stale_steps'])} (re-run them with roar update)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "show",
        cmd_show,
        "what produced an artifact and from what, or one run, or the session",
        """
  roar show model.pkl        the producer chain: command, inputs (hashes), commit, environment
  roar show 3fa9c1           an artifact or run by hash prefix (6+ hex)
  roar show @2               one step of the session
  roar show data/images/     a folder recorded as one artifact
  roar show                  the session overview
  roar show model.pkl --json""",
    )
    p.add_argument("ref", nargs="?", help="a path, artifact hash prefix, run id prefix or @N")
    p.add_argument("--json", action="store_true", help="print as JSON (docs/cli-json.md)")

    p = add_command(
        sub,
        "lineage",
        cmd_lineage,
        "the upstream graph of an artifact or run, back to the source data",
        """
  roar lineage model.pkl
  roar lineage 3fa9c1 --depth 2
  roar lineage @3 --json""",
    )
    p.add_argument("ref")
    p.add_argument("--depth", type=int, default=None, help="how many runs upstream (default: all)")
    p.add_argument("--json", action="store_true")

    p = add_command(
        sub,
        "dag",
        cmd_dag,
        "the session's steps (or one artifact's lineage) with stale/failed marks",
        """
  roar dag                   the active session
  roar dag model.pkl         the steps behind one artifact
  roar dag --mermaid         paste into a Markdown document
  roar dag --dot | dot -Tsvg > dag.svg
  roar dag --html dag.html   one file to attach to a CI run or an email""",
    )
    p.add_argument("ref", nargs="?")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--mermaid", action="store_true", help="print a Mermaid graph")
    fmt.add_argument("--dot", action="store_true", help="print a Graphviz graph")
    fmt.add_argument(
        "--html", metavar="FILE", help="write one self-contained web page (inline SVG, CSS, JS)"
    )

    p = add_command(
        sub,
        "log",
        cmd_log,
        "recorded runs, newest first",
        """
  roar log
  roar log -n 5
  roar log --json""",
    )
    p.add_argument("-n", type=int, default=None, help="show at most N runs")
    p.add_argument("--json", action="store_true")

    p = add_command(
        sub,
        "status",
        cmd_status,
        "outputs present, modified or missing, and stale steps",
        """
  roar status
  roar status --json""",
    )
    p.add_argument("--json", action="store_true")
