"""Run every benchmark, or those named: `python -m benchmarks hashing ledger`.

With `--write-docs`, the lines each benchmark prints with a goal are also collected into
docs/performance.md (`make docs`), with the machine they were measured on.
"""

import importlib
import io
import os
import pkgutil
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from roargit.recorder import stop_in

DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"

HEADER = """\
# Performance

Every figure here is printed by a benchmark under `benchmarks/` and was collected by
`make docs` (`python -m benchmarks --write-docs`), which reruns them all and rewrites this
page; `python -m benchmarks NAME` prints one benchmark's figures without touching it. Goals
are ratios against the bare command or a peer in the same run where one exists, so that a
slower machine moves both sides. `ok` / `MISSED` is the benchmark's own verdict; on a
machine shared with other work, a MISSED line is worth rerunning alone
(`python -m benchmarks NAME`). Lines measured on other machines are kept in
`benchmarks/results/`.

Measured on: {machine}.

| benchmark | figure and goal |
|---|---|
"""


class _Tee(io.TextIOBase):
    """Writes through to the terminal and keeps each whole line."""

    def __init__(self, out: io.TextIOBase) -> None:
        self.out = out
        self.lines: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self.out.write(text)
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def _cell(text: str) -> str:
    return text.strip().replace("|", "\\|")


def goal_lines(name: str, lines: list[str]) -> list[tuple[str, str]]:
    """(benchmark, line) for each printed line that states a goal. An indented one continues
    the unindented line above it, whose subject (up to its first colon) is put in front."""
    found: list[tuple[str, str]] = []
    subject = ""
    for line in lines:
        if line and not line[0].isspace():
            subject = line.split(":", 1)[0].strip()
        if "goal" in line:
            text = line.strip()
            if line[0].isspace() and subject:
                text = f"{subject}: {text}"
            found.append((name, text))
    return found


def write_docs(figures: list[tuple[str, str]]) -> None:
    rows = "".join(f"| {name} | {_cell(line)} |\n" for name, line in figures)
    DOCS.write_text(HEADER.format(machine=_machine()) + rows)
    print(f"wrote {DOCS}", flush=True)


def main() -> int:
    # Time commands as a user runs them: with bytecode caching (some shells here set
    # PYTHONDONTWRITEBYTECODE, which makes every Python start recompile what it imports).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    args = sys.argv[1:]
    docs = "--write-docs" in args
    wanted = {a for a in args if a != "--write-docs"}
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    if docs and wanted:
        print("--write-docs reruns every benchmark: name none", file=sys.stderr)
        return 2
    figures: list[tuple[str, str]] = []
    # The resident recorders the benchmarks' `roar run`s start (roargit/recorder.py) live in
    # a runtime folder of this run's own, not the user's, and are stopped at the end.
    runtime = tempfile.mkdtemp(prefix="roar-bench-runtime-")
    os.environ["XDG_RUNTIME_DIR"] = runtime
    try:
        for name in names:
            if wanted and name.removeprefix("bench_") not in wanted:
                continue
            print(f"== {name}", flush=True)
            tee = _Tee(sys.stdout)  # type: ignore[arg-type]
            real, sys.stdout = sys.stdout, tee
            try:
                importlib.import_module(f"benchmarks.{name}").main()
            finally:
                sys.stdout = real
            figures.extend(goal_lines(name.removeprefix("bench_"), tee.lines))
    finally:
        stop_in(os.path.join(runtime, "roar"))
        shutil.rmtree(runtime, ignore_errors=True)
    if docs:
        write_docs(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
