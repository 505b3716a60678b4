"""The registry: a hash lookup against a 100,000-entry index, and `roar register` of a
20-step lineage with 50 MB of bytes, against `roar registry serve` on loopback.

Goals: a lookup ≤ 0.3 s as a whole `roar` process (`roar registry lookup HASH`), through the
server's `GET /index/<hash>`; the same lookup through git (one shard fetch, over smart HTTP
and from a local path) is shown beside it. Register of the 20-step lineage (records, code,
50 MB of outputs to a file:// store, the index entry) ≤ 5 s; registering it again (a no-op)
is shown beside it. Everything runs with a HOME of its own: nothing touches the real one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.timing import median_seconds, verdict
from roargit import codec
from roargit.registry.index import INDEX_PREFIX, IndexEntry
from roargit.registry.server import create_token

ROAR = [sys.executable, "-m", "roargit"]
ENTRIES = 100_000
STEPS = 20
STEP_BYTES = 50 * 1000 * 1000 // STEPS

STEP = """\
import os, sys
i = int(sys.argv[1])
src = f"work/out{{i - 1}}.bin" if i > 1 else "raw.bin"
seed = open(src, "rb").read(64)
block = (seed * (4096 // len(seed) + 1))[:4096]
data = bytearray(os.urandom(16)) + block * ({size} // 4096)
open(f"work/out{{i}}.bin", "wb").write(bytes(data))
"""


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def _run(cwd: Path, env: dict[str, str], *args: str, stdin: str = "") -> str:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, input=stdin)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def build_index(index: Path, count: int) -> list[str]:
    """`count` entries in 256 shard commits, written by one `git fast-import`."""
    import random

    rng = random.Random(7)
    hashes = sorted(f"{rng.getrandbits(256):064x}" for _ in range(count))
    template = IndexEntry("", "acme/shared", "http://127.0.0.1/acme/shared.git",
                          "file:///store/acme/shared", 1234, 1_790_000_000, "alice")  # fmt: skip
    by_shard: dict[str, list[str]] = {}
    for h in hashes:
        by_shard.setdefault(h[:2], []).append(h)
    chunks = []
    for shard, members in sorted(by_shard.items()):
        msg = f"index shard {shard}".encode()
        chunks.append(
            b"commit %s%s\ncommitter roar <roar@localhost> 0 +0000\ndata %d\n%s\n"
            % (INDEX_PREFIX.encode(), shard.encode(), len(msg), msg)
        )
        for h in members:
            data = codec.encode(template._replace(hash=h)._asdict())
            chunks.append(b"M 100644 inline %s\ndata %d\n%s\n" % (h.encode(), len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=index, input=b"".join(chunks), check=True)
    return hashes


def start_server(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*ROAR, "registry", "serve", "--config", str(folder / "registry.conf"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"the registry did not start: {line!r}")
    return proc, line.split()[-1]


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="roar-bench-registry-"))
    server = None
    try:
        home = base / "home"
        home.mkdir()
        (home / ".gitconfig").write_text(
            "[user]\n\tname = alice\n\temail = alice@example.com\n"
            "[credential]\n\thelper = store\n[init]\n\tdefaultBranch = main\n"
        )
        env = _env(home)
        reg = base / "registry"
        reg.mkdir()
        (reg / "registry.conf").write_text(
            f"[registry]\n\troot = repos\n\tstore = {reg / 'store'}\n\tlog = access.log\n"
            '[scope "acme/shared"]\n\tread = alice\n\twrite = alice\n'
        )
        token = create_token(reg / "registry.conf", "alice")
        index = reg / "repos" / "index.git"
        index.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "--bare", str(index)], check=True)
        t = time.perf_counter()
        hashes = build_index(index, ENTRIES)
        print(f"index of {ENTRIES:,} entries built in {time.perf_counter() - t:.1f} s")
        server, url = start_server(reg, env)
        _run(home, env, *ROAR, "login", url, "--user", "alice", "--token", "-", stdin=token)

        probe = iter(hashes[:: len(hashes) // 40])

        def lookup(registry: str) -> None:
            _run(home, env, *ROAR, "registry", "lookup", next(probe), "--registry", registry)

        for name, registry, goal in (
            ("GET /index/<hash>", url, 0.3),
            ("git fetch of one shard, smart HTTP", f"{url}/index.git", None),
            ("git fetch of one shard, local path", str(index), None),
        ):
            lookup(registry)  # warm the page cache and the work repository
            s = median_seconds(lambda r=registry: lookup(r), 10)  # type: ignore[misc]
            tail = f"(goal ≤ {goal} s: {verdict(s, goal)})" if goal else ""
            print(f"lookup, {name}: {s:.3f} s  {tail}")

        def cold_lookup() -> None:
            shutil.rmtree(home / ".cache", ignore_errors=True)
            lookup(str(index))

        cold = median_seconds(cold_lookup, 5)
        print(f"lookup, git, a fresh cache each time: {cold:.3f} s")

        repo = base / "repo"
        repo.mkdir()
        _run(repo, env, "git", "init", "-q")
        (repo / "step.py").write_text(STEP.format(size=STEP_BYTES))
        (repo / "raw.bin").write_bytes(os.urandom(4096))
        (repo / "work").mkdir()
        _run(repo, env, "git", "add", "step.py")
        _run(repo, env, "git", "commit", "-q", "-m", "pipeline")
        for i in range(1, STEPS + 1):
            _run(repo, env, *ROAR, "run", "-q", "python", "step.py", str(i))
        _run(repo, env, *ROAR, "scope", "use", "acme/shared")
        target = f"work/out{STEPS}.bin"
        t = time.perf_counter()
        _run(repo, env, *ROAR, "register", target, "-y")
        first = time.perf_counter() - t
        stored = sum(f.stat().st_size for f in (reg / "store").rglob("*") if f.is_file())
        print(
            f"register, {STEPS}-step lineage, {stored / 1e6:.0f} MB to the store: {first:.2f} s "
            f"(goal ≤ 5 s: {verdict(first, 5.0)})"
        )
        t = time.perf_counter()
        _run(repo, env, *ROAR, "register", target, "-y")
        print(f"register again (nothing to do): {time.perf_counter() - t:.2f} s")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
            if server.stdout is not None:
                server.stdout.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
