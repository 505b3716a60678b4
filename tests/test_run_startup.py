"""What `roar run` loads: its fixed cost is a budget (benchmarks/bench_run.py, `fixed_cost`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_helpers import roar

SCRIPT = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\n'.join(sorted(sys.modules))))\n"
    "sys.argv = ['roar', 'run', '-q', 'true']\n"
    "import roargit.cli\n"
    "sys.exit(roargit.cli.main())\n"
)


def test_a_run_after_a_run_loads_no_msgpack_datetime_or_typing(git_repo: Path) -> None:
    """Records are packed by codec itself, and the session-index bucket the last run wrote
    is kept: a run reads nothing from the ledger that msgpack would decode."""
    roar(git_repo, "run", "-q", "true")
    roar(git_repo, "run", "-q", "sh", "-c", "echo 1 > out.txt")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=git_repo, capture_output=True, text=True, check=True
    )
    loaded = set(proc.stderr.split())
    assert "roargit.capture" in loaded
    assert not {"msgpack", "datetime", "typing", "subprocess"} & loaded


def test_a_run_leaves_the_hash_cache_closed(git_repo: Path) -> None:
    """What a run made is still collected at exit (cli.capture freezes only what the imports
    made): the hash cache's connection is closed and its WAL folded in."""
    roar(git_repo, "run", "-q", "sh", "-c", "echo 1 > out.txt")
    roar_dir = git_repo / ".git" / "roar"
    assert (roar_dir / "hashcache.sqlite").is_file()
    assert not (roar_dir / "hashcache.sqlite-wal").exists()
