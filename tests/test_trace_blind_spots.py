"""What the tracer used to miss, on real programs: each case either records the right paths or
marks the run incomplete with a warning that names what was not seen. These are the rows of
"What is and is not seen" in docs/trace-format.md (`test_the_table_names_every_case` keeps
the two together)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from roargit.trace import FileAccess, Trace, run_traced

DOCS = Path(__file__).resolve().parent.parent / "docs" / "trace-format.md"


def flags(a: FileAccess) -> set[str]:
    return {n for n in ("read", "written", "created", "deleted", "executed") if getattr(a, n)}


def seen(t: Trace, root: Path) -> dict[str, set[str]]:
    prefix = str(root) + os.sep
    return {p[len(prefix) :]: flags(a) for p, a in t.files.items() if p.startswith(prefix)}


def traced(root: Path, *argv: str, env: dict[str, str] | None = None) -> Trace:
    t = run_traced(list(argv), root, env)
    assert t.mode == "ptrace", t.warnings
    return t


def build_c(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to build the test program")
    (tmp_path / f"{name}.c").write_text(textwrap.dedent(source))
    out = tmp_path / name
    r = subprocess.run(
        [gcc, "-O1", *flags, "-o", str(out), f"{name}.c"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build {name}.c here: {r.stderr.decode(errors='replace')[-200:]}")
    return out


# ------------------------------------------------------------------ left-behind processes


def test_daemon_keeps_running_every_time(tmp_path: Path) -> None:
    """A process that outlives the command is served by the tracer's worker after roar has
    returned; fifty in a row all get to write their file."""
    env = dict(os.environ, ROAR_TRACE_DAEMON_GRACE="0")
    traces = []
    for i in range(50):
        t = traced(tmp_path, "sh", "-c", f"(sleep 0.3; echo done > d{i}) &", env=env)
        traces.append(t)
    deadline = time.monotonic() + 20
    missing = [i for i in range(50) if not (tmp_path / f"d{i}").exists()]
    while missing and time.monotonic() < deadline:
        time.sleep(0.05)
        missing = [i for i in missing if not (tmp_path / f"d{i}").exists()]
    try:
        assert missing == []
        assert all((tmp_path / f"d{i}").read_text() == "done\n" for i in range(50))
        assert all(t.leftover and not t.complete for t in traces)
    finally:
        for t in traces:
            for pid in t.leftover:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ the user's own redirects


def roar_run(repo: Path, shell: str) -> dict[str, object]:
    """`roar run` as a shell starts it (the redirects are the shell's), then the record."""
    import json

    subprocess.run(["bash", "-c", shell], cwd=repo, check=True, capture_output=True)
    show = subprocess.run(
        ["roar", "show", "--json", "@1"], cwd=repo, check=True, capture_output=True, text=True
    )
    return json.loads(show.stdout)


def paths_of(record: dict[str, object], key: str) -> dict[str, str]:
    run = record.get("run", record)
    assert isinstance(run, dict), record
    return {f["path"]: f["hash"] for f in run[key]}


def test_redirected_stdin_and_stdout_are_recorded(git_repo: Path) -> None:
    from blake3 import blake3

    (git_repo / "score.py").write_text("import sys\nfor line in sys.stdin:\n    print(len(line))\n")
    (git_repo / "input.jsonl").write_text('{"a": 1}\n{"b": 22}\n')
    record = roar_run(git_repo, "roar run python score.py < input.jsonl > preds.jsonl 2> err.log")
    inputs, outputs = paths_of(record, "inputs"), paths_of(record, "outputs")
    assert "input.jsonl" in inputs
    assert set(outputs) == {"preds.jsonl", "err.log"}
    assert outputs["preds.jsonl"] == blake3((git_repo / "preds.jsonl").read_bytes()).hexdigest()


def test_streams_that_are_not_files_are_not_recorded(git_repo: Path) -> None:
    record = roar_run(git_repo, "echo hi | roar run cat > /dev/null 2>&1")
    assert paths_of(record, "inputs") == {} and paths_of(record, "outputs") == {}


def test_redirect_outside_the_repo_is_absolute(git_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere.txt"
    record = roar_run(git_repo, f"roar run echo hello > {out}")
    assert set(paths_of(record, "outputs")) == {str(out)}


# ------------------------------------------------------------------ paths as the kernel walks them

SHIM_MODES = [pytest.param({}, id="shim"), pytest.param({"ROAR_TRACE_NO_SHIM": "1"}, id="tracer")]


@pytest.mark.parametrize("mode", SHIM_MODES)
def test_dotdot_after_a_symlinked_folder(tmp_path: Path, mode: dict[str, str]) -> None:
    """`datalink/../in.csv` is the in.csv beside the link's target; an in.csv beside the link
    must not be recorded in its place."""
    (tmp_path / "real" / "data").mkdir(parents=True)
    (tmp_path / "real" / "in.csv").write_text("the real input\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "in.csv").write_text("a decoy\n")
    (tmp_path / "work" / "datalink").symlink_to("../real/data")
    t = traced(
        tmp_path / "work",
        "sh",
        "-c",
        "cat datalink/../in.csv > out; cat datalink/../missing.csv 2>/dev/null; true",
        env=dict(os.environ, **mode),
    )
    assert t.complete
    assert seen(t, tmp_path) == {"real/in.csv": {"read"}, "work/out": {"written", "created"}}
    assert (tmp_path / "work" / "out").read_text() == "the real input\n"


TMPFILE_LINK = r"""
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <unistd.h>
    int main(void) {
        int fd = open(".", O_TMPFILE | O_WRONLY, 0644);
        if (fd < 0 || write(fd, "made\n", 5) != 5) return 1;
        return linkat(fd, "", AT_FDCWD, "made", AT_EMPTY_PATH) == 0 ? 0 : 2;
    }
"""


@pytest.mark.parametrize("static", [False, True], ids=["shim", "static"])
def test_linkat_empty_path_creates_its_new_name(tmp_path: Path, static: bool) -> None:
    prog = build_c(tmp_path, "tmpfile", TMPFILE_LINK, *(["-static"] if static else []))
    t = traced(tmp_path, str(prog))
    assert t.exit_code == 0 and t.complete
    files = seen(t, tmp_path)
    assert files.get("made") == {"written", "created"}
    assert (tmp_path / "made").read_text() == "made\n"
