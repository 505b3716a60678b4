"""`roar registry serve`: a registry for teams without a git host of their own.

One WSGI application, served by waitress:

- dulwich's git smart-HTTP application (dulwich.web) for the index repository
  (`/index.git`) and one repository per scope (`/<owner>/<project>.git`); only the smart
  protocol's three routes are served (`info/refs?service=…`, `git-upload-pack`,
  `git-receive-pack`), never the dumb protocol's files;
- `GET /index/<hash or prefix>`: the index entries, as JSON, without git;
- `GET /whoami`: the name the token belongs to;
- the web view (roargit.registry.web) under `registry.ui` (`/ui` by default): the pages of
  `roar ui` for every scope the viewer may read, existence only for the others.

A push to the index is checked before its ref moves (access.check_index_update): entries are only
added, each in its shard, for a scope the pusher may write, in the pusher's name.

Authentication is HTTP basic with a token as the password (git's credential helpers supply
it like any password); tokens are kept only as SHA-256 digests. Each repository has read and
write rules: a list of user names, `@users` (anyone with a valid token) or `*` (anyone, no
token needed). An anonymous request that a rule refuses gets 401 (so git asks its credential
helper), an authenticated one 403. Every request is written to the access log: time, client,
user, method, path, status, bytes sent.

The settings file is git-config format:

    [registry]
        root = /srv/roar            # repositories live here
        store = s3://bucket/roar    # scope stores: <store>/<owner>/<project>
        log = /var/log/roar/access.log
        ui = /ui                    # where the web view is mounted ("off": nowhere)
    [index]
        read = *                    # existence is public (the default)
        write = @users              # (the default)
    [scope "acme/vision"]
        read = alice bob
        write = alice
    [user "alice"]
        token = sha256:…            # roar registry token create alice

It is read again when it changes, so a new token or rule needs no restart.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from roargit.errors import ConfigError, RoarError
from roargit.git import run_git
from roargit.registry.access import ANYONE, USERS, Rules, allowed, guarded_receive_pack
from roargit.registry.index import (
    CONFIG_REF,
    INDEX_PREFIX,
    IndexEntry,
    check_hash,
    decode_entry,
    settings_commit,
)
from roargit.registry.index import settings_text as text_of
from roargit.registry.scope import valid_scope_name
from roargit.structs import NamedTuple

INDEX = "index"
_REPO_PATH = re.compile(r"/(index|[^/]+/[^/]+)\.git(/info/refs|/git-upload-pack|/git-receive-pack)")
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")

StartResponse = Callable[..., Any]


class ServerConfig(NamedTuple):
    root: Path
    store: str
    log: str  # a file, or "" for stderr
    web: str
    ui: str  # the web view's mount point: "" for the root, "off" for none
    index_rules: Rules
    scopes: dict[str, Rules]
    tokens: dict[str, list[str]]  # user: ["sha256:<hex>", …]


class BadUser(RoarError):
    def __init__(self, name: str) -> None:
        super().__init__(f"'{name}' is not a user name (letters, digits, '.', '_', '-', '@')")


def _words(value: str | None, default: str = "") -> frozenset[str]:
    return frozenset((value if value is not None else default).split())


def load_config(path: Path) -> ServerConfig:
    proc = run_git(["config", "--file", str(path), "--list", "-z"], path.parent, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip()
        raise ConfigError(f"{path}: {why or 'cannot be read'}")
    flat: dict[str, str] = {}
    tokens: dict[str, list[str]] = {}
    scope_keys: dict[str, dict[str, str]] = {}
    for item in proc.stdout.split(b"\0"):
        if not item:
            continue
        key, _, value = item.decode(errors="replace").partition("\n")
        section, _, rest = key.partition(".")
        sub, _, name = rest.rpartition(".")
        if section == "user" and name == "token" and sub:
            tokens.setdefault(sub, []).append(value)
        elif section == "scope" and sub:
            scope_keys.setdefault(sub, {})[name] = value
        else:
            flat[key] = value
    root = Path(flat.get("registry.root", "") or path.parent / "repos")
    if not root.is_absolute():
        root = path.parent / root
    log = flat.get("registry.log", "")
    if log and not os.path.isabs(log):
        log = str(path.parent / log)
    scopes = {}
    for name, keys in scope_keys.items():
        if not valid_scope_name(name):
            raise ConfigError(f"{path}: '{name}' is not a scope name (owner/project)")
        scopes[name] = Rules(_words(keys.get("read")), _words(keys.get("write")))
    ui = flat.get("registry.ui", "/ui").strip()
    if ui not in ("off", "/") and not re.fullmatch(r"(/[A-Za-z0-9._-]+)+/?", ui):
        raise ConfigError(f"{path}: registry.ui must be a path such as /ui, / or off")
    store = flat.get("registry.store", "")
    if store and "://" not in store and not store.startswith("/"):
        store = str(path.parent / store)
    return ServerConfig(
        root,
        store.rstrip("/"),
        log,
        flat.get("registry.web", ""),
        ui if ui == "off" else ui.rstrip("/"),
        Rules(_words(flat.get("index.read"), ANYONE), _words(flat.get("index.write"), USERS)),
        scopes,
        tokens,
    )


# -- tokens ----------------------------------------------------------------------------------


def digest_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def create_token(config: Path, user: str) -> str:
    """A new token for `user`, its digest added to the settings file; the token itself is
    shown once and kept nowhere."""
    if not _USER.fullmatch(user):
        raise BadUser(user)
    token = "roar_" + secrets.token_urlsafe(32)
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("")
    run_git(["config", "--file", str(config), "--add", f"user.{user}.token", digest_token(token)],
            config.parent)  # fmt: skip
    return token


def _user_of(tokens: Mapping[str, list[str]], header: str) -> str | None:
    """The user an `Authorization: Basic …` header proves to be, or None."""
    if not header.startswith("Basic "):
        return None
    try:
        name, _, token = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    digest = digest_token(token)
    for user, known in tokens.items():
        if (not name or name == user) and any(hmac.compare_digest(digest, k) for k in known):
            return user
    return None


# -- repositories ----------------------------------------------------------------------------


def repo_path(config: ServerConfig, name: str) -> Path:
    return config.root / f"{name}.git"


def store_url(config: ServerConfig) -> str:
    """The root of the scope stores as a URL ("" for none)."""
    if not config.store:
        return ""
    return config.store if "://" in config.store else f"file://{config.store}"


def settings_text(config: ServerConfig) -> str:
    store = store_url(config)
    return text_of("{scope}.git", f"{store}/{{scope}}" if config.store else "",
                   sorted(config.scopes), config.web)  # fmt: skip


def prepare(config: ServerConfig) -> list[str]:
    """Make the index and scope repositories that are missing, and publish the settings
    clients derive scope URLs from; the repositories made."""
    made = []
    for name in (INDEX, *config.scopes):
        path = repo_path(config, name)
        if not (path / "HEAD").is_file():
            path.mkdir(parents=True, exist_ok=True)
            run_git(["init", "--quiet", "--bare", str(path)], path)
            made.append(name)
    index = repo_path(config, INDEX)
    text = settings_text(config)
    old = run_git(["rev-parse", "-q", "--verify", CONFIG_REF], index, check=False)
    old_tip = old.stdout.decode().strip() or None
    if old_tip is not None:
        now = run_git(["cat-file", "blob", f"{old_tip}:registry.conf"], index, check=False)
        if now.stdout.decode(errors="replace") == text:
            return made
    new = settings_commit(index, text)
    run_git(["update-ref", CONFIG_REF, new, old_tip or "0" * len(new)], index)
    return made


def index_entries(index: Path, prefix: str) -> list[dict[str, Any]]:
    """The entries under `prefix` in the index repository, as JSON."""
    return [e.to_json() for e in index_lookup(index, prefix)]


def index_lookup(index: Path, prefix: str) -> list[IndexEntry]:
    """The entries under `prefix` in the index repository, read with dulwich in process."""
    from dulwich.repo import Repo  # lazy: only the registry server loads dulwich

    repo: Any = Repo(str(index))
    try:
        try:
            tip = repo.refs[(INDEX_PREFIX + prefix[:2]).encode()]
        except KeyError:
            return []
        tree = repo[repo[tip].tree]
        out = []
        for item in tree.items():
            name = item.path.decode(errors="replace")
            if not name.startswith(prefix) or len(name) != 64:
                continue
            try:
                out.append(decode_entry(repo[item.sha].data, name))
            except RoarError:
                continue
        return out
    finally:
        repo.close()


# -- the application ---------------------------------------------------------------------------


class _Backend:
    """dulwich's Backend for exactly the repositories this registry serves (the path was
    checked against the settings before dulwich sees it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Each request opens its repositories afresh (a dulwich Repo is not shared between
        # threads) and closes them when it ends (`release`): an open Repo holds its pack
        # files, and a server that left them to the garbage collector would run out of
        # file descriptors.
        self._opened = threading.local()

    def open_repository(self, path: str | bytes) -> Any:
        from dulwich.repo import Repo  # lazy: only the registry server loads dulwich

        text = os.fsdecode(path).strip("/")
        repo = Repo(str(self.root / text))
        opened = getattr(self._opened, "repos", None)
        if opened is None:
            opened = self._opened.repos = []
        opened.append(repo)
        return repo

    def release(self) -> None:
        """Close the repositories this thread opened for its request."""
        for repo in getattr(self._opened, "repos", ()):
            repo.close()
        self._opened.repos = []


class AccessLog:
    def __init__(self, where: str) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] = open(where, "a", buffering=1) if where else sys.stderr  # noqa: SIM115

    def write(
        self, client: str, user: str | None, method: str, path: str, status: int, sent: int
    ) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f'{stamp} {client} {user or "-"} "{method} {path}" {status} {sent}\n'
        with self._lock:
            self._file.write(line)
            self._file.flush()


def _send_objects_whole() -> None:
    """Make dulwich's upload-pack send objects whole instead of looking for deltas to reuse:
    that search reads every object of the pack the wanted ones lie in, so fetching one index
    shard would read the whole index. Index entries and records are small, distinct objects
    that packs seldom hold as deltas anyway."""
    # Only serving loads dulwich.
    import dulwich.server
    from dulwich.pack import write_pack_from_container

    if not isinstance(dulwich.server.write_pack_from_container, functools.partial):
        dulwich.server.write_pack_from_container = functools.partial(
            write_pack_from_container, reuse_deltas=False
        )


class RegistryApp:
    def __init__(self, config_file: Path, log: AccessLog | None = None) -> None:
        from dulwich.web import make_wsgi_chain  # lazy: only serving loads dulwich

        _send_objects_whole()

        self.config_file = config_file
        self._stamp = 0
        self.config = self._reload(force=True)
        self.log = log or AccessLog(self.config.log)
        self._push_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.backend = _Backend(self.config.root)
        self.git = make_wsgi_chain(self.backend)  # type: ignore[arg-type]
        # registry.web imports the web app's pages, which a git-only server never needs.
        from roargit.registry.web import RegistryWeb

        self.web = RegistryWeb()

    def _reload(self, force: bool = False) -> ServerConfig:
        try:
            stamp = self.config_file.stat().st_mtime_ns
        except OSError:
            stamp = 0
        if force or stamp != self._stamp:
            config = load_config(self.config_file)
            if not force:
                prepare(config)
            self.config, self._stamp = config, stamp
        return self.config

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        config = self._reload()
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        query = environ.get("QUERY_STRING", "")
        user = _user_of(config.tokens, environ.get("HTTP_AUTHORIZATION", ""))
        status_box = [0, 0]  # status, bytes sent through start_response's write()

        def respond(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            status_box[0] = int(status.split(" ", 1)[0])
            write = start_response(status, headers, *rest)

            def counted(data: bytes) -> Any:
                status_box[1] += len(data)
                return write(data)

            return counted

        body = self._route(config, environ, method, path, query, user, respond)
        return self._logged(body, environ, user, method, path + (f"?{query}" if query else ""),
                            status_box)  # fmt: skip

    def _logged(
        self,
        body: Iterable[bytes],
        environ: Mapping[str, Any],
        user: str | None,
        method: str,
        path: str,
        status: list[int],
    ) -> Iterator[bytes]:
        sent = 0
        try:
            for chunk in body:
                sent += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self.backend.release()
            client = environ.get("REMOTE_ADDR", "-")
            self.log.write(client, user, method, path, status[0], sent + status[1])

    def _route(
        self,
        config: ServerConfig,
        environ: dict[str, Any],
        method: str,
        path: str,
        query: str,
        user: str | None,
        respond: StartResponse,
    ) -> Iterable[bytes]:
        bad_token = user is None and bool(environ.get("HTTP_AUTHORIZATION"))
        if bad_token:
            return _deny(respond, None)
        if method == "GET" and path == "/whoami":
            if user is None:
                return _deny(respond, None)
            return _json(respond, 200, {"user": user})
        if method == "GET" and path.startswith("/index/"):
            if not allowed(config.index_rules.read, user):
                return _deny(respond, user)
            try:
                prefix = check_hash(path[len("/index/") :])
            except RoarError as exc:
                return _json(respond, 400, {"error": str(exc)})
            found = index_entries(repo_path(config, INDEX), prefix)
            return _json(respond, 200 if found else 404, {"entries": found})
        m = _REPO_PATH.fullmatch(path)
        if m is None:
            mount = config.ui
            if mount != "off" and (not mount or path == mount or path.startswith(mount + "/")):
                return self._web(config, environ, path[len(mount) :], user, respond)
            return _json(respond, 404, {"error": "not found"})
        name, route = m.group(1), m.group(2)
        rules = config.index_rules if name == INDEX else config.scopes.get(name)
        if rules is None:
            return _json(respond, 404, {"error": "no such repository"})
        if route == "/info/refs":
            service = dict(p.partition("=")[::2] for p in query.split("&")).get("service", "")
            if service not in ("git-upload-pack", "git-receive-pack"):
                return _json(respond, 404, {"error": "only the smart protocol is served"})
            write = service == "git-receive-pack"
        else:
            write = route == "/git-receive-pack"
        if not allowed(rules.write if write else rules.read, user):
            return _deny(respond, user)
        if method == "POST" and write:
            from dulwich.web import make_wsgi_chain  # lazy: only serving loads dulwich

            guard = guarded_receive_pack(config, user or "", index=name == INDEX)
            app = make_wsgi_chain(self.backend, handlers={b"git-receive-pack": guard})  # type: ignore[arg-type]
            return self._one_push_at_a_time(name, app, environ, respond)
        return self.git(environ, respond)

    def _web(
        self,
        config: ServerConfig,
        environ: dict[str, Any],
        rest: str,
        user: str | None,
        respond: StartResponse,
    ) -> Iterable[bytes]:
        """The web view, given only the scopes this viewer may read."""
        from roargit.registry.web import Viewer  # see __init__: only the web view loads it

        root = store_url(config)
        readable = {
            name: (repo_path(config, name), f"{root}/{name}" if root else "")
            for name, rules in config.scopes.items()
            if allowed(rules.read, user)
        }
        # Beside the repositories, never among them: nothing there is served over git.
        cache = config.root.parent / f"{config.root.name}-web-cache"
        viewer = Viewer(user, readable, allowed(config.index_rules.read, user), cache)
        index = repo_path(config, INDEX)
        inner = {**environ, "SCRIPT_NAME": config.ui, "PATH_INFO": rest or "/"}
        return self.web(inner, respond, viewer, lambda prefix: index_lookup(index, prefix))

    def _one_push_at_a_time(
        self, name: str, app: Any, environ: dict[str, Any], respond: StartResponse
    ) -> Iterator[bytes]:
        """Pushes to one repository, one after another: so that the compare-and-swap of
        `guarded_receive_pack` cannot interleave with another push, and because dulwich
        fails a push whose ref lock is taken (FileLocked) instead of reporting the ref as not
        updated."""
        with self._locks_lock:
            lock = self._push_locks.setdefault(name, threading.Lock())
        with lock:
            yield from app(environ, respond)


def _json(respond: StartResponse, status: int, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
              404: "Not Found"}.get(status, "")  # fmt: skip
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Basic realm="roar registry"'))
    respond(f"{status} {reason}", headers)
    return [data]


def _deny(respond: StartResponse, user: str | None) -> list[bytes]:
    if user is None:
        return _json(respond, 401, {"error": "a token is needed"})
    return _json(respond, 403, {"error": f"{user} may not do this"})


# -- serving -------------------------------------------------------------------------------------


def serve(
    config_file: Path,
    host: str,
    port: int,
    threads: int = 8,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the registry until interrupted (waitress: a production WSGI server, threads for
    concurrent clones and pushes)."""
    from waitress import create_server  # lazy: only serving loads waitress

    config = load_config(config_file)
    prepare(config)
    app = RegistryApp(config_file)
    server: Any = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="roar-registry",
        # A pack can be large: waitress buffers request bodies past this to a temp file.
        max_request_body_size=1 << 40,
        clear_untrusted_proxy_headers=True,
        # poll(2), not select(2): select fails outright past file descriptor 1023.
        asyncore_use_poll=True,
    )
    if on_ready is not None:
        on_ready(f"http://{host}:{server.effective_port}")
    try:
        server.run()
    finally:
        server.close()
