"""`roar login`, `logout`, `whoami`, `scope`, `register` and `roar registry …`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from roargit.cli import add_command
from roargit.cli.output import emit_json, human_size, say, short, show_text, warn
from roargit.errors import NotAGitRepo, RoarError
from roargit.pathguard import problem


def _cache() -> Path:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.remote import cache_root

    return cache_root(os.environ)


def _registry(url: str | None = None) -> Any:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.login import NotLoggedIn, configured, parse_registry

    if url:
        return parse_registry(url)
    found = configured(Path.cwd())
    if found is None:
        raise NotLoggedIn()
    return found


def _in_repo() -> Any | None:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.repo import find_repo

    try:
        return find_repo(Path.cwd())
    except NotAGitRepo:
        return None


def _scope(registry: Any, work: Path, settings: dict[str, str] | None = None) -> Any:
    """The chosen scope with its URLs (the registry's settings read only when needed)."""
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry import index, scope

    found = scope.chosen(Path.cwd())
    if found.name in (None, scope.PRIVATE) or (found.repo and found.store):
        return scope.resolve(found, None, None)
    if settings is None:
        settings = index.read_settings(work, registry.index_url)
    return scope.resolve(found, settings, registry.index_url)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise RoarError("not asking without a terminal: add -y to register")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


# -- login, logout, whoami -------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry import login
    from roargit.registry.remote import index_work

    registry = _registry(args.registry)
    cwd = Path.cwd()
    if args.token is not None:
        if not args.user:
            raise RoarError("--token needs --user NAME (the token's owner)")
        token = sys.stdin.readline().strip() if args.token == "-" else args.token
        if registry.api is None:
            raise RoarError("tokens are for a roar registry server; git credentials do the rest")
        login.approve(cwd, registry.api, args.user, token)
    work = index_work(_cache(), registry)

    scope_repo = None
    try:
        found = _scope(registry, work)
        scope_repo = (found.name, found.repo)
    except RoarError:  # no scope chosen yet, or private, or one the registry cannot place
        scope_repo = None
    checked = login.check(cwd, work, registry, scope_repo)
    if checked.identity is not None and checked.index_read:
        login.save(cwd, registry, checked.identity.name)
    if args.json:
        emit_json(_checked_json(checked))
    else:
        who = checked.identity.name if checked.identity else "unknown"
        say(f"registry  {show_text(registry.url)}")
        say(f"you       {show_text(who)}")
        say(f"index     {'readable' if checked.index_read else 'NOT readable'}")
        if checked.scope is not None:
            ok = "writable" if checked.scope_write else "NOT writable"
            say(f"scope     {show_text(checked.scope)} ({ok})")
        for p in checked.problems:
            warn(p)
    return 0 if checked.identity is not None and checked.index_read else 1


def _checked_json(checked: Any) -> dict[str, Any]:
    return {
        "registry": checked.registry.url,
        "user": checked.identity.name if checked.identity else None,
        "identity_from": checked.identity.how if checked.identity else None,
        "index_readable": checked.index_read,
        "scope": checked.scope,
        "scope_writable": checked.scope_write,
        "problems": checked.problems,
    }


def cmd_logout(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.login import forget

    if forget(Path.cwd()):
        say("logged out (the registry and its token are forgotten)")
    else:
        say("not logged in")
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.login import whoami

    registry = _registry()
    me = whoami(Path.cwd(), registry)
    if args.json:
        emit_json({"registry": registry.url, "user": me.name if me else None})
    elif me is None:
        say(f"{show_text(registry.url)}: not known there (roar login)")
    else:
        say(f"{show_text(me.name)} at {show_text(registry.url)}")
    return 0 if me is not None else 1


# -- scope -----------------------------------------------------------------------------------


def cmd_scope_use(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry import scope

    where = "--local" if _in_repo() is not None and not args.global_ else "--global"
    name = scope.check_name(args.name)
    if name == scope.PRIVATE and (args.repo or args.store):
        raise RoarError("a private scope has no repository or store")
    scope.choose(Path.cwd(), name, args.repo, args.store, where=where)
    if name == scope.PRIVATE:
        say("scope private: nothing registered here leaves this machine")
    else:
        say(f"scope {show_text(name)}" + (" (for every clone)" if where == "--global" else ""))
    return 0


def cmd_scope_show(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry import scope

    found = scope.chosen(Path.cwd())
    repo = store = None
    error = ""
    if found.name not in (None, scope.PRIVATE):
        try:
            # lazy: loaded when this command runs, not at every command's start-up
            from roargit.registry.remote import index_work

            registry = _registry()
            resolved = _scope(registry, index_work(_cache(), registry))
            repo, store = resolved.repo, resolved.store
        except RoarError as exc:
            repo, store, error = found.repo, found.store, str(exc)
    if args.json:
        emit_json({"scope": found.name, "repo": repo, "store": store, "error": error or None})
        return 0
    if found.name is None:
        say("no scope chosen (roar scope use OWNER/PROJECT | private)")
    elif found.name == scope.PRIVATE:
        say("private: nothing registered here leaves this machine")
    else:
        say(f"scope  {show_text(found.name)}")
        say(f"repo   {show_text(repo or '?')}")
        say(f"store  {show_text(store or '?')}")
        if error:
            warn(error)
    return 0


def cmd_scope_list(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry import index, scope
    from roargit.registry.remote import index_work

    registry = _registry()
    settings = index.read_settings(index_work(_cache(), registry), registry.index_url)
    names = scope.listed(settings)
    current = scope.chosen(Path.cwd()).name
    if args.json:
        emit_json({"registry": registry.url, "scopes": names, "current": current})
        return 0
    for n in names:
        say(f"{'*' if n == current else ' '} {show_text(n)}")
    if not names:
        say("the registry lists no scopes (any owner/project its settings place works)")
    return 0


# -- register ----------------------------------------------------------------------------------


def _render(report: Any) -> None:
    c = report.closure
    plan = report.blobs
    say(f"{short(report.digest)}  {human_size(c.size)}  {show_text(c.path or '')}")
    say(f"  scope    {show_text(report.scope.name)}")
    say(f"  records  {len(c.runs)} run(s), {len(c.sessions)} session(s) -> "
        f"{show_text(report.scope.repo)}")  # fmt: skip
    say(f"  commits  {len(c.commits)}, code snapshots {len(report.snapshots)}")
    upload_bytes = sum(b.size for b in plan.to_upload)
    say(f"  bytes    {len(plan.to_upload)} blob(s), {human_size(upload_bytes)} -> "
        f"{show_text(report.scope.store)} ({plan.present} there already)")  # fmt: skip
    for what, blobs in (("not uploaded (no copy here)", plan.unavailable),
                        ("not uploaded (above roar.store.maxBlobSize)", plan.too_big),
                        ("not uploaded (secret-looking name)", plan.secret)):  # fmt: skip
        for b in blobs[:5]:
            warn(f"{what}: {b.path} ({short(b.digest)})")
    for f in report.flags:
        warn(f"check {f.kind}: {f.detail}" + (f" ({f.runs} runs)" if f.runs > 1 else ""))
    say(f"  index    {show_text(report.registry)}")


def _report_json(report: Any) -> dict[str, Any]:
    c = report.closure
    plan = report.blobs
    up = report.uploaded
    blob = lambda b: {"hash": b.digest, "size": b.size, "path": b.path}  # noqa: E731
    return {
        "hash": report.digest,
        "dry_run": report.dry_run,
        "scope": report.scope._asdict(),
        "registry": report.registry,
        "already": report.already,
        "entry": report.entry.to_json(),
        "runs": [rid for rid, _rec in c.runs],
        "sessions": [sid for sid, _rec in c.sessions],
        "commits": c.commits,
        "snapshots": [s.tree for s in report.snapshots],
        "store": {
            "url": plan.store,
            "present": plan.present,
            "to_upload": [blob(b) for b in plan.to_upload],
            "unavailable": [blob(b) for b in plan.unavailable],
            "too_big": [blob(b) for b in plan.too_big],
            "secret": [blob(b) for b in plan.secret],
            "uploaded": up.blobs if up else None,
            "uploaded_bytes": up.nbytes if up else None,
        },
        "pushed": report.pushed,
        "sensitive": [{"kind": f.kind, "detail": f.detail, "runs": f.runs} for f in report.flags],
        "reproduce": f"roar reproduce {report.digest}",
        "web": report.web or None,
        "warnings": report.warnings,
    }


def cmd_register(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.progress import Progress
    from roargit.registry import index, scope
    from roargit.registry.login import configured_user, whoami
    from roargit.registry.register import register, require_shared
    from roargit.registry.remote import index_work, lookup
    from roargit.repo import find_repo
    from roargit.views import Context

    cwd = Path.cwd()
    # A private scope is refused before anything else: nothing may reach the network.
    require_shared(scope.chosen(cwd).name)
    paths = find_repo(cwd)
    registry = _registry()
    work = index_work(_cache(), registry)
    settings = index.read_settings(work, registry.index_url)
    target_scope = _scope(registry, work, settings)
    web = settings.get("registry.web", "").rstrip("/")
    who = configured_user(cwd)
    if who is None:
        me = whoami(cwd, registry)
        who = me.name if me else "unknown"
    ctx = Context(paths, on_warning=warn)
    target = ctx.resolve(args.ref, cwd)

    def existing(digest: str) -> Any:
        return next((e for e in lookup(cwd, _cache(), registry, digest) if e.hash == digest), None)

    def confirm(report: Any) -> bool:
        if report.already:
            return True  # the same scope: publishing again only fills in what is missing
        if not args.json:
            _render(report)
        return args.yes or _ask(f"publish to {report.scope.name}?")

    progress = None if args.json else Progress("registering")
    report = register(
        paths,
        ctx,
        target,
        target_scope,
        registry.index_url,
        work,
        who,
        dry_run=args.dry_run,
        confirm=confirm,
        existing=existing,
        web=f"{web}/artifact/{target.id}" if web else "",
        progress=progress,
    )
    if progress is not None:
        progress.close()
    if report is None:
        say("nothing registered")
        return 1
    if args.json:
        emit_json(_report_json(report))
        return 0
    if args.dry_run:
        _render(report)
        say("dry run: nothing was sent")
        return 0
    e = report.entry
    if report.already:
        say(f"already registered in {show_text(e.scope)} by {show_text(e.registered_by)} on "
            f"{_when(e.registered_at)}")  # fmt: skip
    else:
        say(f"registered {report.digest} in {show_text(e.scope)}")
    say(f"reproduce it anywhere: roar reproduce {report.digest}")
    if report.web:
        say(f"on the web: {show_text(report.web)}")
    for w in report.warnings:
        warn(w)
    return 0


# -- roar registry ---------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.server import serve

    def ready(url: str) -> None:
        print(f"roar registry serving {url}", flush=True)

    serve(Path(args.config).absolute(), args.host, args.port, args.threads, on_ready=ready)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.server import create_token

    token = create_token(Path(args.config).absolute(), args.user)
    say(token)
    warn(f"a token for {args.user}: shown once, kept only as a digest in {args.config}")
    return 0


def cmd_registry_init(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.index import publish_settings
    from roargit.registry.login import parse_registry
    from roargit.registry.remote import index_work

    registry = parse_registry(args.url)
    names = [n for n in (args.scopes or "").replace(",", " ").split() if n]
    text = publish_settings(
        index_work(_cache(), registry), registry.index_url, args.repo, args.store, names, args.web
    )
    say(f"{show_text(registry.index_url)}: refs/roar/config now holds")
    say(show_text(text.rstrip("\n")))
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.remote import lookup

    registry = _registry(args.registry)
    found = lookup(Path.cwd(), _cache(), registry, args.hash)
    if args.json:
        emit_json({"registry": registry.url, "entries": [e.to_json() for e in found]})
    for e in found if not args.json else []:
        say(f"{e.hash}  {show_text(e.scope)}  {human_size(e.size)}  by "
            f"{show_text(e.registered_by)} on {_when(e.registered_at)}")  # fmt: skip
    if not found and not args.json:
        say(f"{show_text(args.hash)} is not registered in {show_text(registry.url)}")
    return 0 if found else 1


def register_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "login",
        cmd_login,
        "check that your git credentials can read a registry and write your scope; remember it",
        """
  roar login https://roar.example.com --user alice --token -   a server token, read from stdin
  roar login git@github.com:acme/roar-index.git              any git host: its credentials
  roar login                                                 check again""",
    )
    p.add_argument("registry", nargs="?", metavar="REGISTRY", help="registry URL")
    p.add_argument("--user", help="your name on a roar registry server")
    p.add_argument("--token", metavar="TOKEN", help="a server token ('-': read from stdin)")
    p.add_argument("--json", action="store_true")
    add_command(sub, "logout", cmd_logout, "forget the registry and its token", "  roar logout")
    p = add_command(sub, "whoami", cmd_whoami, "who the registry takes you for", "  roar whoami")
    p.add_argument("--json", action="store_true")

    p = add_command(
        sub,
        "scope",
        lambda a: (a.scope_parser.print_help(), 0)[1],
        "where registrations go: owner/project, or private",
        """
  roar scope use acme/vision          registrations go to acme/vision
  roar scope use private              nothing leaves this machine
  roar scope use acme/vision --repo https://git.example.com/acme/vision-lineage.git \\
      --store s3://bucket/roar/acme/vision
  roar scope show
  roar scope list""",
    )
    p.set_defaults(scope_parser=p)
    ssub = p.add_subparsers(dest="scope_command", metavar="ACTION")
    q = add_command(ssub, "use", cmd_scope_use, "choose the scope", "  roar scope use acme/vision")
    q.add_argument("name", metavar="OWNER/PROJECT|private")
    q.add_argument("--repo", help="the scope's lineage repository (default: the registry's)")
    q.add_argument("--store", help="the scope's blob store (default: the registry's)")
    q.add_argument("--global", dest="global_", action="store_true", help="for every clone")
    q = add_command(ssub, "show", cmd_scope_show, "the scope in effect", "  roar scope show")
    q.add_argument("--json", action="store_true")
    q = add_command(ssub, "list", cmd_scope_list, "the registry's scopes", "  roar scope list")
    q.add_argument("--json", action="store_true")

    p = add_command(
        sub,
        "register",
        cmd_register,
        "publish an artifact's lineage to your scope and add it to the registry's index",
        """
  roar register model.pkl --dry-run   what would go where, and what to check first
  roar register model.pkl             show it, ask, publish, index
  roar register 3fa9c1 -y --json""",
    )
    p.add_argument("ref", metavar="PATH|HASH")
    p.add_argument("--dry-run", action="store_true", help="show what would go; send nothing")
    p.add_argument("-y", "--yes", action="store_true", help="publish without asking")
    p.add_argument("--json", action="store_true")

    p = add_command(
        sub,
        "registry",
        lambda a: (a.registry_parser.print_help(), 0)[1],
        "run a registry server, issue its tokens, look a hash up",
        """
  roar registry serve --config /etc/roar/registry.conf --port 8080
  roar registry token create alice --config /etc/roar/registry.conf
  roar registry lookup 3fa9c1""",
    )
    p.set_defaults(registry_parser=p)
    rsub = p.add_subparsers(dest="registry_command", metavar="ACTION")
    q = add_command(
        rsub, "serve", cmd_serve, "serve a registry over HTTP", "  roar registry serve --port 8080"
    )
    q.add_argument("--config", default="registry.conf", help="settings file (git-config format)")
    q.add_argument("--host", default="127.0.0.1", help="address to listen on")
    q.add_argument("--port", type=int, default=8080, help="0: any free port")
    q.add_argument("--threads", type=int, default=8)
    q = add_command(rsub, "token", lambda a: (a.token_parser.print_help(), 0)[1],
                    "tokens", "  roar registry token create alice")  # fmt: skip
    q.set_defaults(token_parser=q)
    tsub = q.add_subparsers(dest="token_command", metavar="ACTION")
    t = add_command(tsub, "create", cmd_token_create, "issue a token for a user",
                    "  roar registry token create alice --config registry.conf")  # fmt: skip
    t.add_argument("user")
    t.add_argument("--config", default="registry.conf")
    q = add_command(
        rsub,
        "init",
        cmd_registry_init,
        "make any git repository a registry: publish where its scopes live",
        """
  roar registry init git@github.com:acme/roar-index.git \\
      --repo 'git@github.com:{scope}-lineage.git' --store 's3://bucket/roar/{scope}'
  roar registry init /srv/git/index.git --repo '{scope}.git' --store 'file:///srv/store/{scope}'""",
    )
    q.add_argument("url", metavar="INDEX_URL", help="the git repository that holds the index")
    q.add_argument("--repo", required=True, help="scope repositories; {scope} is owner/project")
    q.add_argument("--store", required=True, help="scope stores; {scope} is owner/project")
    q.add_argument("--scopes", help="the scopes `roar scope list` shows (comma-separated)")
    q.add_argument("--web", help="the registry's web page, if it has one")
    q = add_command(rsub, "lookup", cmd_lookup, "look a hash up in the index",
                    "  roar registry lookup 3fa9c1 --json")  # fmt: skip
    q.add_argument("hash")
    q.add_argument("--registry", help="registry URL (default: roar.registry)")
    q.add_argument("--json", action="store_true")


register = register_commands


def from_anywhere(args: argparse.Namespace) -> None:
    """Run a query outside any clone in the cache clone of the hash's scope (when a registry
    is configured and REF is a hash): `-o` stays relative to where the user is. Inside a
    clone that does not know the hash, fetch its scope's lineage into the clone first."""
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.git import run_git

    cwd = Path.cwd()
    ref = str(args.ref).lower()
    is_hash = 6 <= len(ref) <= 64 and not ref.strip("0123456789abcdef")
    paths = _in_repo()
    if not is_hash or (paths is not None and os.path.exists(args.ref)):
        if paths is None:
            raise NotAGitRepo(cwd)
        return
    # Queries start fast: the registry's modules load only when one is configured.
    if not run_git(["config", "--get", "roar.registry"], cwd, check=False).stdout.strip():
        if paths is None:
            raise NotAGitRepo(cwd)
        return
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.remote import enter, fetch_into_clone

    if paths is not None:
        for w in fetch_into_clone(cwd, os.environ, paths, ref):
            warn(w)
        return

    paths, entry, warnings = enter(cwd, os.environ, ref)
    for w in warnings:
        warn(w)
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.remote import knows

    if args.command == "get" and not knows(paths, entry.hash):
        # Source data registered on its own: no lineage to find it in, only its bytes.
        args.func = lambda a: _get_registered(a, entry, cwd)
        return
    if getattr(args, "output", None):
        args.output = str(Path(args.output).absolute())
    elif args.command == "get":
        args.output = str(cwd / _recorded_name(paths, entry.hash))
    args.ref = entry.hash
    os.chdir(paths.root)


def _get_registered(args: argparse.Namespace, entry: Any, cwd: Path) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.registry.remote import get_registered

    dest = Path(args.output).absolute() if args.output else cwd / entry.hash[:16]
    where = get_registered(entry, dest, force=args.force)
    if args.json:
        emit_json({"hash": entry.hash, "path": str(dest), "from": where, "size": entry.size,
                   "already_there": False})  # fmt: skip
    else:
        say(f"{show_text(str(dest))}  {short(entry.hash)}  {human_size(entry.size)}  from "
            f"{show_text(where)}")  # fmt: skip
    return 0


def _recorded_name(paths: Any, digest: str) -> str:
    """The file name a run wrote these bytes under (the hash when none did)."""
    # lazy: loaded when this command runs, not at every command's start-up
    from roargit.ledger import Ledger

    ledger = Ledger(paths, fast_start=True)
    try:
        produced, _consumed = ledger.artifact_runs(digest)
        for rec in ledger.runs(produced[:1]):
            for f in rec.outputs:
                name = os.path.basename(f.path.rstrip("/"))
                if f.hash == digest and name not in ("", ".", "..") and not problem(name):
                    return name
    finally:
        ledger.close()
    return digest[:16]
