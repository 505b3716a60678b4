"""Small timing helpers shared by the benchmarks."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def roar_executable() -> str:
    """The `roar` to time: the one on PATH, else the one beside this interpreter."""
    return shutil.which("roar") or str(Path(sys.executable).parent / "roar")


def once_seconds(argv: Sequence[str], cwd: Path) -> float:
    """Wall time of one whole process (its stdout dropped; a failure raises)."""
    t = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def process_seconds(argv: Sequence[str], cwd: Path | None = None, repeat: int = 10) -> float:
    """Median wall time of a whole process (start-up included)."""

    def once() -> None:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True)

    once()  # warm the page cache
    return median_seconds(once, repeat)


def verdict(value: float, goal: float) -> str:
    return "ok" if value <= goal else "MISSED"


def run_sections(prefix: str, sections: Sequence[Callable[[Path], object]]) -> None:
    """Run each section in a scratch folder made for the lot (removed after), or only those
    named in ROAR_BENCH_ONLY (comma-separated function names)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    only = set(filter(None, os.environ.get("ROAR_BENCH_ONLY", "").split(",")))
    try:
        for section in sections:
            if not only or section.__name__ in only:
                section(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
