"""`roar diff` of two 500-step lineages, as a whole process: goal ≤ 1 s.

The two lineages are chains (step k reads what step k-1 wrote) recorded in two sessions with
different source data, so no run is shared and every one of the 500 pairs is walked, compared
and found different; step 250 of B also has another `--lr`. The ledger is written with
`Ledger.import_records` (one `git fast-import`: records real and canonical, laid out by the
ledger itself; only the writing is batched), so building it takes a second, not 1,000 `roar run`s.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.timing import median_seconds, process_seconds, verdict
from roargit import records
from roargit.ledger import Ledger
from roargit.records import (
    ArtifactId,
    CodeInput,
    CodeState,
    FileRef,
    RunRecord,
    SessionId,
    SessionRecord,
)
from roargit.repo import find_repo

STEPS = 500
GOAL_S = 1.0

ENVIRONMENT = {
    "python": {"implementation": "CPython", "version": "3.11.7", "executable": "/v/bin/python"},
    "os": {"system": "Linux", "release": "6.8.0", "distro": "Debian GNU/Linux 12 (bookworm)"},
    "arch": "x86_64",
    "cpu": {"model": "AMD EPYC", "count": 16},
    "gpus": [],
    "hostname": "bench",
    "user": "bench",
    "env_vars": {"LANG": "C.UTF-8", "PYTHONHASHSEED": "0"},
    "packages": {f"pkg{i}": f"1.{i}.0" for i in range(20)},
}


def _digest(text: str) -> ArtifactId:
    from blake3 import blake3

    return ArtifactId(blake3(text.encode()).hexdigest())


def build(repo: Path, steps: int = STEPS) -> tuple[str, str]:
    """Two chain lineages of `steps` runs; returns the last output of each (A, B)."""
    script_blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=repo,
            input=b"print('step')\n",
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    items: list[records.Record] = []
    last: list[str] = []
    t0 = 1_700_000_000
    for side in ("a", "b"):
        sess = SessionRecord(created_at=t0 * 10**9 + (side == "b"), clone="bench", parent=None)
        session, _ = records.identify(sess)
        items.append(sess)
        prev = _digest(f"source {side}")
        for k in range(1, steps + 1):
            output = _digest(f"{side} output {k}")
            lr = "0.01" if side == "b" and k == steps // 2 else "0.1"
            items.append(
                RunRecord(
                    argv=("python", "step.py", f"data/s{k - 1}.bin", f"data/s{k}.bin", "--lr", lr),
                    cwd=".",
                    started_at=(t0 + k) * 10**9 + (side == "b") * 10**12,
                    ended_at=(t0 + k) * 10**9 + (side == "b") * 10**12 + 5 * 10**8,
                    exit_code=0,
                    status="ok",
                    inputs=(FileRef(f"data/s{k - 1}.bin", prev, 1000),),
                    outputs=(FileRef(f"data/s{k}.bin", output, 1000),),
                    code=CodeState(
                        "0" * 40, "main", False, None, (CodeInput("step.py", script_blob),)
                    ),
                    session=SessionId(session),
                    step=k,
                    environment=ENVIRONMENT,
                )
            )
            prev = output
        last.append(prev)
    Ledger(find_repo(repo)).import_records(items, per_commit=len(items), when=t0)
    return last[0], last[1]


def _diff_seconds(argv: list[str], cwd: Path, repeat: int = 5) -> float:
    """Median wall time of a whole `roar diff` (which exits 1: the lineages differ)."""

    def once() -> None:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True)
        if proc.returncode != 1:
            raise RuntimeError(proc.stderr.decode())

    once()
    return median_seconds(once, repeat)


def _cpu_seconds(argv: list[str], cwd: Path, repeat: int = 5) -> float:
    """Median CPU time (user + system) of a whole process: steadier than wall time when
    other work shares the machine."""
    import resource
    import statistics

    samples = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, cwd=cwd, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return statistics.median(samples)


def main() -> None:
    import json
    import time

    roar = str(Path(sys.executable).parent / "roar")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run([roar, "init"], cwd=repo, check=True, capture_output=True)
        t = time.perf_counter()
        a, b = build(repo)
        print(f"ledger: 2 x {STEPS} runs built in {time.perf_counter() - t:.2f} s")

        check = subprocess.run(
            [roar, "diff", a, b, "--json"], cwd=repo, capture_output=True, text=True
        )
        result = json.loads(check.stdout)
        assert check.returncode == 1, check.stderr
        assert result["counts"]["paired"] == STEPS, result["counts"]
        n_causes = len(result["root_causes"])
        n_cons = len(result["consequences"])
        print(f"diff found {n_causes} root causes, {n_cons} consequences, {STEPS} pairs")

        bare = process_seconds([sys.executable, "-c", "pass"], repeat=5)
        show = process_seconds([roar, "show", b, "--json"], cwd=repo, repeat=5)
        diff_json = _diff_seconds([roar, "diff", a, b, "--json"], repo)
        diff_text = _diff_seconds([roar, "diff", a, b], repo)
        cpu_bare = _cpu_seconds([sys.executable, "-c", "pass"], repo)
        cpu_show = _cpu_seconds([roar, "show", b, "--json"], repo)
        cpu_diff = _cpu_seconds([roar, "diff", a, b, "--json"], repo)
    print(f"python -c pass             {bare * 1000:7.0f} ms")
    print(f"roar show B --json         {show * 1000:7.0f} ms  (walks B's 500-step lineage)")
    print(
        f"roar diff A B --json       {diff_json * 1000:7.0f} ms  "
        f"{diff_json / show:.2f}x show, goal ≤ {GOAL_S:.0f} s: {verdict(diff_json, GOAL_S)}"
    )
    print(
        f"roar diff A B (text)       {diff_text * 1000:7.0f} ms  "
        f"{diff_text / show:.2f}x show, goal ≤ {GOAL_S:.0f} s: {verdict(diff_text, GOAL_S)}"
    )
    print(f"per step pair              {diff_json / STEPS * 1e6:7.0f} µs (whole process / pairs)")
    print(
        f"CPU time: python -c pass {cpu_bare * 1000:.0f} ms, roar show {cpu_show * 1000:.0f} ms, "
        f"roar diff --json {cpu_diff * 1000:.0f} ms ({cpu_diff / cpu_show:.2f}x show), "
        f"goal ≤ {GOAL_S:.0f} s: {verdict(cpu_diff, GOAL_S)}"
    )


if __name__ == "__main__":
    main()
