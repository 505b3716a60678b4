"""A run's cost does not grow with its session; `roar status` and `roar update` stay cheap.

Goals:
- in a session of runs that each read 20,000 files, the 50th run costs within 10% of the 1st:
  as one folder artifact (the dataset folder read whole), and spread so that no folder is
  read whole (each record lists every file). Numbering a run reads the session's index, not
  the earlier records (both printed). In the spread case the runs read the same 20,000
  files: the first files them as one input set (an `s.` entry under each artifact) and each
  later run adds one `c.` entry under that set (docs/record-format.md), however many runs
  read them before;
- `roar status` over an unchanged 100,000-file dataset takes at most 1 s;
- `roar update` with nothing stale takes at most 0.5 s on a 20-step session.

Sizes: ROAR_BENCH_SESSION_FILES (20000), ROAR_BENCH_SESSION_RUNS (50),
ROAR_BENCH_STATUS_FILES (100000), ROAR_BENCH_UPDATE_STEPS (20); ROAR_BENCH_ONLY picks
sections (growth,growth_folder,status,update).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.repos import empty_repo
from benchmarks.timing import once_seconds, process_seconds, roar_executable, run_sections, verdict


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Reads every other file of each folder (half of each: no folder is recorded whole) and
# writes one small output of its own.
READ_HALF = (
    "import os, sys\n"
    "n = 0\n"
    "for d in sorted(os.listdir(sys.argv[1])):\n"
    "    names = sorted(os.listdir(os.path.join(sys.argv[1], d)))\n"
    "    for f in names[::2]:\n"
    "        with open(os.path.join(sys.argv[1], d, f), 'rb') as fh:\n"
    "            n += len(fh.read())\n"
    "open(sys.argv[2], 'w').write(str(n))\n"
)


READ_ALL = (
    "import os, sys\n"
    "n = 0\n"
    "for d, _, fs in os.walk(sys.argv[1]):\n"
    "    for f in fs:\n"
    "        with open(os.path.join(d, f), 'rb') as fh:\n"
    "            n += len(fh.read())\n"
    "open(sys.argv[2], 'w').write(str(n))\n"
)

# Numbering the next run from the session's index, against decoding every earlier run of the
# session (what the view cost before the index).
NUMBERING = (
    "import time\n"
    "from pathlib import Path\n"
    "from roargit import session\n"
    "from roargit.ledger import Ledger\n"
    "from roargit.repo import find_repo\n"
    "paths = find_repo(Path('.'))\n"
    "state = session.read_state(paths.roar_dir)\n"
    "t = time.perf_counter()\n"
    "session.load_index(Ledger(paths, fast_start=True), state.session_id, state.popped)\n"
    "a = time.perf_counter() - t\n"
    "led = Ledger(paths, fast_start=True)\n"
    "t = time.perf_counter()\n"
    "led.runs(led.session_runs(state.session_id))\n"
    "print(f'{a:.3f} {time.perf_counter() - t:.3f}')\n"
)


def _session_growth(tmp: Path, name: str, script_text: str, per_folder: int, what: str) -> None:
    files = _int("ROAR_BENCH_SESSION_FILES", 20_000)
    runs = _int("ROAR_BENCH_SESSION_RUNS", 50)
    repo = empty_repo(tmp / name)
    data = repo / "data"
    total = files * 2 if script_text is READ_HALF else files
    for d in range(total // per_folder):
        sub = data / f"d{d:04d}"
        sub.mkdir(parents=True)
        for i in range(per_folder):
            (sub / f"f{i:02d}.bin").write_bytes(b"%d,%d\n" % (d, i))
    script = tmp / f"{name}.py"  # outside the repo: no code input, no dirty snapshot
    script.write_text(script_text)
    (repo / "out").mkdir()
    roar = roar_executable()
    times = []
    for n in range(runs):
        cmd = [roar, "run", "-q", sys.executable, str(script), "data", f"out/o{n:03d}.txt"]
        times.append(once_seconds(cmd, repo))
    head, tail = statistics.median(times[:3]), statistics.median(times[-3:])
    ratio = tail / head
    print(
        f"session of {runs} runs each reading {files:,} files ({what}): run 1 {times[0]:.2f} s, "
        f"run 2 {times[1]:.2f} s, run {runs} {times[-1]:.2f} s"
    )
    out = subprocess.run(
        [sys.executable, "-c", NUMBERING], cwd=repo, check=True, capture_output=True, text=True
    )
    index_s, records_s = out.stdout.split()
    print(
        f"  numbering run {runs + 1}: the session index {index_s} s "
        f"(decoding the {runs} earlier records instead: {records_s} s)"
    )
    print(
        f"  median of the last 3 / of the first 3: {tail:.2f} / {head:.2f} s = {ratio:.2f}x  "
        f"goal ≤ 1.10x  {verdict(ratio, 1.10)}"
    )
    shutil.rmtree(repo)


def growth(tmp: Path) -> None:
    """Half of each folder read: every file is an artifact of its own, listed in each record
    (filed once, as the input set that every run of the session reads)."""
    _session_growth(tmp, "growth", READ_HALF, 20, "one artifact each")


def growth_folder(tmp: Path) -> None:
    """The whole dataset folder read: one folder artifact per run."""
    _session_growth(tmp, "growth_folder", READ_ALL, 10, "one folder")


def status(tmp: Path) -> None:
    files = _int("ROAR_BENCH_STATUS_FILES", 100_000)
    repo = empty_repo(tmp / "status")
    root = repo / "data"
    for d in range(max(1, files // 1000)):
        sub = root / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(1000):
            (sub / f"f{i:04d}.bin").write_bytes(b"%d,%d\n" % (d, i))
    script = tmp / "read_all.py"
    script.write_text(
        "import os, sys\nn = 0\n"
        "for d, _, fs in os.walk(sys.argv[1]):\n"
        "    for f in fs:\n"
        "        n += len(open(os.path.join(d, f), 'rb').read())\n"
        "open(sys.argv[2], 'w').write(str(n))\n"
    )
    roar = roar_executable()
    subprocess.run([roar, "run", "-q", sys.executable, str(script), "data", "n.txt"], cwd=repo)
    s = process_seconds([roar, "status"], repo, repeat=5)
    print(f"roar status, {files:,}-file dataset unchanged: {s:.3f} s   goal ≤ 1 s  {verdict(s, 1)}")


def update(tmp: Path) -> None:
    steps = _int("ROAR_BENCH_UPDATE_STEPS", 20)
    repo = empty_repo(tmp / "update")
    (repo / "s0.txt").write_text("0\n")
    roar = roar_executable()
    for n in range(steps):  # a chain: each step reads the one before's output
        script = f"cat s{n}.txt > s{n + 1}.txt; echo {n} >> s{n + 1}.txt"
        subprocess.run([roar, "run", "-q", "sh", "-c", script], cwd=repo, check=True)
    s = process_seconds([roar, "update"], repo, repeat=10)
    print(
        f"roar update, nothing stale, {steps}-step session: {s:.3f} s   goal ≤ 0.5 s  "
        f"{verdict(s, 0.5)}"
    )


def main() -> None:
    run_sections("roar-bench-session-", (growth, growth_folder, status, update))


if __name__ == "__main__":
    main()
