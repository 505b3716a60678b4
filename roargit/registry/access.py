"""Who may do what on a registry server: the read and write rules of a repository, and the
checks a push passes before dulwich moves a ref (the ref still holds what the client read; for
the index, entries are only added, each in its shard, for a scope the pusher may write, in the
pusher's name).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from roargit.errors import RoarError
from roargit.registry.index import INDEX_PREFIX, decode_entry
from roargit.structs import NamedTuple

if TYPE_CHECKING:
    from roargit.registry.server import ServerConfig

ANYONE = "*"  # a rule word: anyone, no token needed
USERS = "@users"  # a rule word: anyone with a valid token


class Rules(NamedTuple):
    read: frozenset[str]
    write: frozenset[str]


def allowed(rule: frozenset[str], user: str | None) -> bool:
    return ANYONE in rule or (user is not None and (USERS in rule or user in rule))


def check_index_update(
    repo: Any, config: ServerConfig, user: str, ref: str, old: str, new: str
) -> str | None:
    """Why a push to the index is refused, None when it is allowed: only shard refs move,
    entries are only ever added (never changed or removed), and each new entry is
    well-formed, lies in its shard, names a scope this server holds and the pusher may
    write, and names the pusher as who registered it."""
    shard = ref[len(INDEX_PREFIX) :]
    if not ref.startswith(INDEX_PREFIX) or not re.fullmatch(r"[0-9a-f]{2}", shard):
        return "only index shards (refs/roar/index/<2 hex>) may be pushed here"
    if not new.strip("0"):
        return "index entries are never removed"

    def entries(commit: str) -> dict[str, bytes]:
        tree = repo[repo[commit.encode()].tree]
        return {item.path.decode(errors="replace"): item.sha for item in tree.items()}

    try:
        before = entries(old) if old.strip("0") else {}
        after = entries(new)
    except (KeyError, AttributeError, ValueError):
        return "not a commit of index entries"
    if any(after.get(name) != sha for name, sha in before.items()):
        return "index entries are never changed or removed"
    for name, sha in after.items():
        if name in before:
            continue
        if len(name) != 64 or not name.startswith(shard) or name.strip("0123456789abcdef"):
            return f"'{name[:70]}' is not a hash of shard {shard}"
        obj = repo[sha]
        if obj.type_name != b"blob":
            return f"{name[:16]}: an entry is a blob"
        try:
            entry = decode_entry(obj.as_raw_string(), name)
        except RoarError as exc:
            return str(exc)
        rules = config.scopes.get(entry.scope)
        if rules is None:
            return f"{name[:16]}: this registry holds no scope {entry.scope}"
        if not allowed(rules.write, user):
            return f"{name[:16]}: {user} may not write scope {entry.scope}"
        if entry.registered_by != user:
            return f"{name[:16]}: an entry names who registers it ({user})"
    return None


def guarded_receive_pack(config: ServerConfig, user: str, *, index: bool) -> Any:
    """dulwich's receive-pack with each ref update checked before the ref moves:

    - compare-and-swap: the ref must still hold the value the client read. dulwich calls
      `set_if_equals` but reports success whatever it returns, so a push that lost a race
      would be told it won; checked here, under the repository's push lock (pushes to one
      repository are served one at a time), the check and the write cannot interleave with
      another push;
    - for the index, `check_index_update`."""
    from dulwich.server import ReceivePackHandler  # lazy: only serving loads dulwich

    class GuardedReceivePack(ReceivePackHandler):
        def _on_update(self, ref: Any, old: Any, new: Any) -> bytes | None:
            try:
                current = self.repo.refs[ref]
            except KeyError:
                current = None
            if current != (old if old.strip(b"0") else None):
                return b"failed to update ref: it moved since it was read"
            if index:
                why = check_index_update(
                    self.repo, config, user, ref.decode(errors="replace"), old.decode(),
                    new.decode(),
                )  # fmt: skip
                if why:
                    return why.encode()
            return super()._on_update(ref, old, new)

    return GuardedReceivePack
