"""Servers on this machine that a traced run connected to (the log's `connect` records).

A database server, the Docker daemon, a Ray or Dask cluster, a Jupyter kernel started earlier:
what such a process reads and writes for the run is not in the run's trace, since it is not in
the traced process tree. The run names it instead, found by its listening socket
(/proc/net/unix, /proc/net/tcp and tcp6) and the process holding that socket (/proc/PID/fd).
This runs only for a run that made such a connection.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable

from roargit.structs import NamedTuple

#: Services that answer lookups (names, users, logging) for nearly every program: not work
#: done on the run's data. Names as /proc/PID/comm gives them (at most 15 bytes).
HELPERS = frozenset(
    {
        "nscd",
        "sssd_nss",
        "systemd-resolve",
        "systemd-journal",
        "systemd-userdbd",
        "dbus-daemon",
        "dbus-broker",
        "dnsmasq",
        "unbound",
        "named",
    }
)
DNS_PORT = 53  # a name lookup, whoever answers it

_LISTENING = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix's Flags
_TCP_LISTEN = "0A"


class Peer(NamedTuple):
    family: str  # "unix" or "inet", as the record has it
    address: str
    pid: int | None  # None: listening, but the process is not visible to us
    name: str


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()[1:]
    except OSError:
        return []


def _unix_listeners(paths: Collection[str]) -> dict[int, str]:
    """inode -> path of the listening Unix sockets bound to one of `paths`."""
    found = {}
    for line in _read("/proc/net/unix"):
        f = line.split(None, 7)
        if len(f) == 8 and f[7] in paths and int(f[3], 16) & _LISTENING:
            found[int(f[6])] = f[7]
    return found


def _tcp_listeners(ports: Collection[int]) -> dict[int, int]:
    """inode -> port of the listening TCP sockets on one of `ports` (any local address: a
    loopback connect reaches a server bound to 127.0.0.1 or to every address alike)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table):
            f = line.split()
            if len(f) > 9 and f[3] == _TCP_LISTEN:
                port = int(f[1].rpartition(":")[2], 16)
                if port in ports:
                    found[int(f[9])] = port
    return found


def _holders(inodes: Collection[int]) -> dict[int, int]:
    """inode -> pid of a process holding that socket (one scan of /proc/*/fd)."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if link in wanted:
                found.setdefault(wanted[link], int(name))
        if len(found) == len(wanted):
            break
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _port(address: str) -> int | None:
    text = address.rpartition(":")[2]
    return int(text) if text.isdigit() else None


def find(connects: Iterable[tuple[int, str, str]], traced: Collection[int]) -> list[Peer]:
    """The servers still listening at the addresses of `connects` ((pid, family, address)
    records), held by no process of `traced`, other than the lookup helpers (HELPERS); in
    first-connect order, one per address."""
    order: dict[tuple[str, str], None] = {}
    for _pid, family, address in connects:
        if family == "inet" and _port(address) == DNS_PORT:
            continue
        order.setdefault((family, address), None)
    if not order:
        return []
    unix = _unix_listeners({a for f, a in order if f == "unix"})
    ports = {p for f, a in order if f == "inet" and (p := _port(a)) is not None}
    tcp = _tcp_listeners(ports) if ports else {}
    holders = _holders([*unix, *tcp]) if unix or tcp else {}
    peers = []
    for family, address in order:
        if family == "unix":
            inodes = [i for i, path in unix.items() if path == address]
        else:
            inodes = [i for i, port in tcp.items() if port == _port(address)]
        if not inodes:
            continue  # nothing listens there now: the connect failed, or the server is gone
        pids = [holders[i] for i in inodes if i in holders]
        if any(p in traced for p in pids):
            continue  # a server of the run itself: its work is in the trace
        pid = pids[0] if pids else None
        name = _comm(pid) if pid is not None else "?"
        if name in HELPERS:
            continue
        peers.append(Peer(family, address, pid, name))
    return peers


def warning(peer: Peer) -> str:
    who = (
        f"pid {peer.pid}, {peer.name}" if peer.pid is not None else f"the server at {peer.address}"
    )
    return (
        f"work done by another process ({who}) is not captured: the run connected to "
        f"{peer.address}; record that process's own job with roar run to see what it read "
        "and wrote"
    )
