"""Store faults: runs against a blob store that fails, then `roar store sync` once it is back.

For each fault, RUNS `roar run`s each write a fresh output; then the fault is healed and
`roar store sync` runs. Printed per fault: runs attempted and recorded, the bytes the runs
wrote and how many of them were stored or queued, the slowest run and the sync, and a
verdict that must read "nothing lost": every run recorded with the command's own exit
status, every output byte stored or queued, and every one of them in the store after sync.

More faults: write a function that takes a `Bench` and returns a `Fault`, and add it to
FAULTS.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.repos import script_repo
from benchmarks.timing import roar_executable
from roargit.blobstore import BlobStore

RUNS = 4
EXIT = 3  # every command exits with this: roar must hand it back
WRITE = """\
import os, sys
size, name = int(sys.argv[1]), sys.argv[2]
with open(name, "wb") as f:
    f.write(os.urandom(size))
sys.exit(3)
"""
SMALL = 256 << 10
BIG = 12 << 20  # with a 5 MiB part size: a multipart upload


class Bench(NamedTuple):
    repo: Path
    tmp: Path
    roar: str


class Fault(NamedTuple):
    name: str
    env: dict[str, str]  # for the runs
    size: int  # bytes each run writes
    heal: Callable[[], dict[str, str]]  # undo the fault; the environment for the sync
    store: Callable[[], BlobStore]  # the configured store, once healed
    close: Callable[[], None] = lambda: None


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _s3_fixtures() -> Any:
    """tests/fixtures_s3.py: the moto server in a process of its own (killable)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures_s3.py"
    spec = importlib.util.spec_from_file_location("fixtures_s3", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the faults ----------------------------------------------------------------------------


def read_only_store(b: Bench) -> Fault:
    folder = b.tmp / "ro-store"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root ignores modes: the immutable attribute stops it
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    _git(b.repo, "config", "roar.store.url", str(folder))

    def heal() -> dict[str, str]:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)
        return dict(os.environ)

    return Fault(
        "read-only store folder", dict(os.environ), SMALL, heal, lambda: BlobStore(str(folder))
    )


def _s3(
    b: Bench,
    name: str,
    die_at_part: int,
    kill_first: bool,
    bucket: bool,
    freeze: bool = False,
) -> Fault:
    s3 = _s3_fixtures()
    server = s3.S3Process(die_at_part=die_at_part)
    servers = [server]
    if bucket:
        s3.make_bucket(server.endpoint, "bkt")
    _git(b.repo, "config", "roar.store.url", "s3://bkt/roar")
    _git(b.repo, "config", "roar.store.partsize", "5M")
    _git(b.repo, "config", "roar.store.timeout", "3")
    if kill_first:
        server.kill()
    if freeze:  # connections are accepted (by the kernel) and never answered
        os.kill(server.proc.pid, signal.SIGSTOP)
    env = {**os.environ, **s3.s3_env(server.endpoint)}

    def heal() -> dict[str, str]:
        if freeze:
            os.kill(server.proc.pid, signal.SIGCONT)
            return env
        if not server.alive:
            servers.append(s3.S3Process(port=server.port))
        s3.make_bucket(servers[-1].endpoint, "bkt")
        return env

    def store() -> BlobStore:
        options = {"endpoint_url": servers[-1].endpoint, "key": "testing", "secret": "testing"}
        return BlobStore("s3://bkt/roar", options)

    def close() -> None:
        for s in servers:
            s.kill()

    return Fault(name, env, BIG if die_at_part else SMALL, heal, store, close)


def dead_s3_endpoint(b: Bench) -> Fault:
    return _s3(b, "dead S3 endpoint", 0, kill_first=True, bucket=True)


def s3_killed_mid_upload(b: Bench) -> Fault:
    return _s3(b, "S3 killed mid-upload", 2, kill_first=False, bucket=True)


def missing_bucket(b: Bench) -> Fault:
    return _s3(b, "missing bucket", 0, kill_first=False, bucket=False)


def frozen_s3_server(b: Bench) -> Fault:
    return _s3(b, "frozen S3 server", 0, kill_first=False, bucket=True, freeze=True)


FAULTS: list[Callable[[Bench], Fault]] = [
    read_only_store,
    dead_s3_endpoint,
    s3_killed_mid_upload,
    missing_bucket,
    frozen_s3_server,
]


# -- measuring -------------------------------------------------------------------------------


class Row(NamedTuple):
    fault: str
    attempted: int
    recorded: int
    written: int  # bytes the runs wrote
    kept: int  # of those, stored or queued after the runs
    slowest_run_s: float
    sync_s: float
    verdict: str


def _json(b: Bench, *args: str, env: dict[str, str]) -> Any:
    proc = subprocess.run([b.roar, *args, "--json"], cwd=b.repo, env=env, capture_output=True)
    return json.loads(proc.stdout)


def measure(b: Bench, make: Callable[[Bench], Fault]) -> Row:
    fault = make(b)
    try:
        problems: list[str] = []
        slowest = 0.0
        outputs: dict[str, int] = {}  # digest -> size
        for k in range(RUNS):
            t = time.perf_counter()
            proc = subprocess.run(
                [b.roar, "run", "-q", "python", "write.py", str(fault.size), f"out{k}.bin"],
                cwd=b.repo,
                env=fault.env,
                capture_output=True,
                text=True,
            )
            slowest = max(slowest, time.perf_counter() - t)
            if proc.returncode != EXIT:
                problems.append(f"run {k} exited {proc.returncode}")
        runs = _json(b, "log", env=fault.env)
        queued = {p.name.split("-", 1)[0] for p in (b.repo / ".git/roar/uploads/queue").glob("*")}
        healed_env = fault.heal()
        store = fault.store()
        kept = 0
        for r in runs:
            for out in _json(b, "show", r["id"], env=fault.env)["outputs"]:
                outputs[out["hash"]] = out["size"]
                if out["hash"] in queued or store.has(out["hash"]):
                    kept += out["size"]
        t = time.perf_counter()
        sync = subprocess.run(
            [b.roar, "store", "sync"], cwd=b.repo, env=healed_env, capture_output=True, text=True
        )
        sync_s = time.perf_counter() - t
        if sync.returncode != 0:
            problems.append(f"sync exited {sync.returncode}: {sync.stderr.strip()[-200:]}")
        missing = [d for d in outputs if not fault.store().verify(d)]
        written = sum(outputs.values())
        if len(runs) != RUNS:
            problems.append(f"{RUNS - len(runs)} run(s) not recorded")
        if kept != written or len(outputs) != RUNS:
            problems.append("bytes neither stored nor queued")
        if missing:
            problems.append(f"{len(missing)} blob(s) missing after sync")
        if slowest > 30:
            problems.append("a run took over 30 s")
        verdict = "nothing lost" if not problems else "LOST: " + "; ".join(problems)
        return Row(fault.name, RUNS, len(runs), written, kept, slowest, sync_s, verdict)
    finally:
        fault.close()


def main() -> None:
    roar = roar_executable()
    tmp = Path(tempfile.mkdtemp(prefix="roar-bench-faults-"))
    # Dummy credentials and no ~/.aws: nothing here may reach a real account.
    saved = dict(os.environ)
    os.environ.update(_s3_fixtures().s3_env("http://127.0.0.1:1"))
    os.environ.pop("AWS_ENDPOINT_URL")
    try:
        rows = []
        for i, make in enumerate(FAULTS):
            where = tmp / f"f{i}"
            rows.append(
                measure(Bench(script_repo(where / "repo", "write.py", WRITE), where, roar), make)
            )
        head = (
            f"{'fault':<24} {'runs':>4} {'recorded':>8} {'bytes written':>13} "
            f"{'stored/queued':>13} {'slowest run s':>13} {'sync s':>6}  verdict"
        )
        print(head)
        for r in rows:
            print(
                f"{r.fault:<24} {r.attempted:>4} {r.recorded:>8} {r.written:>13} "
                f"{r.kept:>13} {r.slowest_run_s:>13.2f} {r.sync_s:>6.2f}  {r.verdict}"
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for folder in tmp.rglob("ro-store"):
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            folder.chmod(0o755)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
