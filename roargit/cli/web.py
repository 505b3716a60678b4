"""`roar ui`: the web view of this clone's ledger, served on loopback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roargit.cli import add_command
from roargit.cli.output import say, warn
from roargit.errors import RoarError

DEFAULT_PORT = 8487


def cmd_ui(args: argparse.Namespace) -> int:
    # lazy: loaded when this command runs, not at every command's start-up
    import errno

    from waitress.server import create_server

    from roargit.repo import find_repo
    from roargit.views import Context
    from roargit.web.app import make_app

    paths = find_repo(Path.cwd())
    # Fetched ledgers are merged once, now, as every query command does; the pages only read.
    Context(paths, on_warning=warn).ledger.close()
    host = "127.0.0.1"
    app = make_app(paths)
    try:
        server = create_server(app, host=host, port=args.port, threads=4)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise RoarError(f"port {args.port} is in use: try roar ui --port N (0: any)") from None
        raise
    port = server.effective_port
    app.allowed_hosts = frozenset({f"{host}:{port}", f"localhost:{port}"})
    url = f"http://{host}:{port}/"
    say(f"roar ui: serving {paths.root} at {url} (Ctrl-C stops)")
    sys.stdout.flush()
    if not args.no_browser:
        # lazy: loaded when this command runs, not at every command's start-up
        import webbrowser

        webbrowser.open(url)
    try:
        server.run()
    except KeyboardInterrupt:
        say("roar ui: stopped")
    finally:
        server.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "ui",
        cmd_ui,
        "browse the lineage in a web page: search, DAG, runs, diff (on 127.0.0.1)",
        """
  roar ui                    serve on 127.0.0.1 and open the browser
  roar ui --port 9000 --no-browser""",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    p.add_argument("--no-browser", action="store_true", help="print the address, open nothing")
