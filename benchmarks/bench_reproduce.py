"""`roar reproduce`: planning over a long lineage, and the cost it adds per reproduced step.

Goals (the reproduce issue):
- `roar reproduce HASH --json` (the plan) over a 1,000-step lineage ≤ 1 s as a whole process;
- per reproduced step, against running the same commands by hand: ≤ 0.3 s plus hashing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.repos import script_repo
from benchmarks.timing import median_seconds, process_seconds, roar_executable, verdict
from roargit import records
from roargit.ledger import Ledger
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId, SessionRecord
from roargit.repo import find_repo

CHAIN = 1000
STEPS = 5
ENVIRONMENT = {
    "python": {"implementation": "CPython", "version": "3.11.7", "executable": sys.executable},
    "os": {"system": "Linux", "release": "6.1", "distro": "Debian GNU/Linux 12 (bookworm)"},
    "arch": os.uname().machine,
    "packages": {"blake3": "0.0.0"},  # differs from what is installed: one warning
}


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _digest(data: bytes) -> ArtifactId:
    from blake3 import blake3

    return ArtifactId(blake3(data).hexdigest())


def build_chain(repo: Path, n: int) -> str:
    """A ledger whose last output has an n-step lineage (run k reads what run k-1 wrote),
    written in one commit by `Ledger.import_records`.
    The source data is in the work tree; no output is in a store, so every step is planned.
    Returns the last output's hash."""
    source = b"source data\n"
    (repo / "data").mkdir()
    (repo / "data" / "step0.bin").write_bytes(source)
    commit = _git(repo, "rev-parse", "HEAD")
    tree = _git(repo, "rev-parse", "HEAD^{tree}")
    session = SessionRecord(1_700_000_000 * 10**9, "bench", None)
    sess, _ = records.identify(session)
    items: list[records.Record] = [session]
    prev = _digest(source)
    t0 = 1_700_000_000
    for k in range(n):
        output = _digest(f"output {k}".encode())
        items.append(
            RunRecord(
                argv=("python", "step.py", str(k)),
                cwd=".",
                started_at=(t0 + k) * 10**9,
                ended_at=(t0 + k) * 10**9 + 5 * 10**8,
                exit_code=0,
                status="ok",
                inputs=(FileRef(f"data/step{k}.bin", prev, 12),),
                outputs=(FileRef(f"data/step{k + 1}.bin", output, 12),),
                code=CodeState(commit=commit, branch="main", dirty=False, tree=tree),
                session=SessionId(sess),
                step=k + 1,
                environment=ENVIRONMENT,
            )
        )
        prev = output
    Ledger(find_repo(repo)).import_records(items, per_commit=len(items), when=t0)
    return prev


STEP_SCRIPT = """\
import sys
k = int(sys.argv[1])
data = open(f"s{k}.bin", "rb").read()
open(f"s{k + 1}.bin", "wb").write(data + bytes([k]) * 4096)
"""


def main() -> None:
    roar = roar_executable()
    tmp = Path(tempfile.mkdtemp(prefix="roar-bench-reproduce-"))
    try:
        repo = script_repo(tmp / "plan", "step.py", STEP_SCRIPT)
        t = time.perf_counter()
        last = build_chain(repo, CHAIN)
        print(f"built a {CHAIN}-step lineage in {time.perf_counter() - t:.2f} s (fast-import)")
        proc = subprocess.run(
            [roar, "reproduce", last[:16], "--json"], cwd=repo, capture_output=True, text=True
        )
        if proc.returncode != 0 or f'"step": "@{CHAIN}"' not in proc.stdout:
            raise RuntimeError(f"plan failed: {proc.stderr.strip()}")
        plan_s = process_seconds([roar, "reproduce", last[:16], "--json"], cwd=repo, repeat=5)
        help_s = process_seconds([roar, "--version"], cwd=repo, repeat=5)
        before = os.times()
        subprocess.run([roar, "reproduce", last[:16], "--json"], cwd=repo, capture_output=True)
        after = os.times()
        cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        print(f"(plan process CPU time {cpu:.3f} s; load average {os.getloadavg()[0]:.1f})")
        print(
            f"plan over a {CHAIN}-step lineage, whole process: {plan_s:.3f} s "
            f"(goal ≤ 1 s: {verdict(plan_s, 1.0)}); `roar --version` {help_s:.3f} s; "
            f"{(plan_s - help_s) / CHAIN * 1e3:.2f} ms per step beyond start-up"
        )

        pipe = script_repo(tmp / "pipe", "step.py", STEP_SCRIPT)
        (pipe / "s0.bin").write_bytes(b"seed")
        for k in range(STEPS):
            subprocess.run([roar, "run", "-q", "python", "step.py", str(k)], cwd=pipe, check=True)
        target = _digest((pipe / f"s{STEPS}.bin").read_bytes())

        by_hand = tmp / "by-hand"
        by_hand.mkdir()
        shutil.copy(pipe / "step.py", by_hand)

        def run_by_hand() -> None:
            (by_hand / "s0.bin").write_bytes(b"seed")
            for k in range(STEPS):
                subprocess.run([sys.executable, "step.py", str(k)], cwd=by_hand, check=True)

        def reproduce() -> None:
            p = subprocess.run(
                [roar, "reproduce", target[:16], "--run", "-y", "--no-reuse"],
                cwd=pipe,
                capture_output=True,
                text=True,
            )
            if p.returncode != 0:
                raise RuntimeError(f"reproduce failed: {p.stdout}{p.stderr}")

        hand_s = median_seconds(run_by_hand, 5)
        repro_s = median_seconds(reproduce, 5)
        per_step = (repro_s - hand_s) / STEPS
        print(
            f"{STEPS} steps by hand {hand_s:.3f} s; "
            f"roar reproduce --run --no-reuse {repro_s:.3f} s "
            f"(×{repro_s / hand_s:.1f}); overhead per step {per_step:.3f} s "
            f"(goal ≤ 0.3 s plus hashing: {verdict(per_step, 0.3)})"
        )
        run_once = median_seconds(
            lambda: subprocess.run(
                [roar, "run", "-q", "python", "step.py", "0"], cwd=pipe, check=True
            ),
            3,
        )
        print(f"for scale: one `roar run` of a step {run_once:.3f} s (capture included)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
