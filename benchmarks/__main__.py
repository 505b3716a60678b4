"""Run every benchmark, or those named: `python -m benchmarks hashing ledger`."""

import importlib
import os
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    # Time commands as a user runs them: with bytecode caching (some shells here set
    # PYTHONDONTWRITEBYTECODE, which makes every Python start recompile what it imports).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    wanted = set(sys.argv[1:])
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    for name in names:
        if wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
