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


def plain_install(tmp: Path) -> tuple[str, str]:
    """(python, roar) as a regular `pip install roargit` has them, without this checkout's
    editable install: its import hook (a `.pth` that imports a finder, and pathlib and re
    with it) loads in every interpreter of the venv and adds ~10 ms to `python -c pass` as
    much as to roar, which flatters any ratio to it. Here a venv of its own finds roargit and
    its dependencies on plain `sys.path` entries, as an installed package is found."""
    import sysconfig
    import venv

    root = Path(__file__).resolve().parent.parent
    deps = sysconfig.get_paths()["purelib"]  # this venv's site-packages, for blake3 & co.
    env = tmp / "plain-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Path lines only: the .pth files in those folders are not run (only a site dir's are).
    Path(site, "roargit-plain.pth").write_text(f"{root}\n{deps}\n")
    # The scripts as pip makes them: `roar` the C front end, `git-roar` the Python program.
    script = env / "bin" / "git-roar"
    script.write_text(f"#!{python}\nimport sys\nfrom roargit.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    roar = env / "bin" / "roar"
    launcher = root / "roargit" / "launcher" / "roar.c"
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-std=gnu11", "-o", str(roar), str(launcher)], check=True)
    return str(python), str(roar)


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
