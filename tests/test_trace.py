"""The tracer on real programs: each test asserts the exact set of files seen under tmp_path."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cli_helpers import wait_for

from roargit.trace import Trace, run_traced
from roargit.trace_files import FileAccess
from roargit.trace_log import TraceLog

PY = sys.executable


def flags(a: FileAccess) -> set[str]:
    out = {n for n in ("read", "written", "created", "deleted", "executed", "temporary")}
    out = {n for n in out if getattr(a, n)}
    out |= {f"from:{Path(p).name}" for p in a.renamed_from}
    out |= {f"to:{Path(p).name}" for p in a.renamed_to}
    return out


def seen(t: Trace, root: Path) -> dict[str, set[str]]:
    """Files under root, relative, with their flags; the tracer's log is not among them."""
    prefix = str(root) + os.sep
    return {
        p[len(prefix) :]: flags(a)
        for p, a in t.files.items()
        if p.startswith(prefix) and not p.endswith(".pyc")
    }


def traced(root: Path, *argv: str, **kw: object) -> Trace:
    t = run_traced(list(argv), root, **kw)  # type: ignore[arg-type]
    assert t.mode == "ptrace", t.warnings
    return t


def sh(root: Path, script: str) -> Trace:
    return traced(root, "bash", "-c", script)


def test_shell_redirect(tmp_path: Path) -> None:
    t = sh(tmp_path, "echo hi > out")
    assert t.complete and t.exit_code == 0 and t.signal is None and not t.interrupted
    assert seen(t, tmp_path) == {"out": {"written", "created"}}
    assert t.processes[0].argv == ("bash", "-c", "echo hi > out")
    assert t.processes[0].cwd == str(tmp_path)


def test_cp(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    t = traced(tmp_path, "cp", "a", "b")
    assert seen(t, tmp_path) == {"a": {"read"}, "b": {"written", "created"}}
    assert [p.argv for p in t.processes] == [("cp", "a", "b")]
    assert t.files[shutil.which("cp") or ""].executed


def test_mv_over_existing(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("old")
    t = traced(tmp_path, "mv", "a", "b")
    assert seen(t, tmp_path) == {"a": {"to:b"}, "b": {"written", "from:a"}}


def test_sed_in_place(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("hello\n")
    t = traced(tmp_path, "sed", "-i", "s/hello/bye/", "f")
    files = seen(t, tmp_path)
    temps = {k for k, v in files.items() if "temporary" in v}
    assert temps and all(k.startswith("sed") for k in temps)
    (tmp,) = temps
    assert files == {
        "f": {"read", "written", f"from:{tmp}"},
        tmp: {"written", "created", "temporary", "to:f"},
    }
    assert (tmp_path / "f").read_text() == "bye\n"


def py(root: Path, code: str, *args: str) -> Trace:
    return traced(root, PY, "-c", textwrap.dedent(code), *args)


def test_openat_with_dir_fd(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "in").write_text("x")
    t = py(
        tmp_path,
        """
        import os
        d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("in", os.O_RDONLY, dir_fd=d))
        os.close(os.open("out", os.O_WRONLY | os.O_CREAT, dir_fd=d))
        """,
    )
    assert seen(t, tmp_path) == {"sub/in": {"read"}, "sub/out": {"written", "created"}}


def test_chdir_then_relative_open(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    t = py(
        tmp_path,
        """
        import os
        open("top", "w").close()
        os.chdir("sub")
        open("low", "w").close()
        os.chdir("..")
        open("top2", "w").close()
        """,
    )
    assert set(seen(t, tmp_path)) == {"top", "sub/low", "top2"}


def test_two_threads(tmp_path: Path) -> None:
    t = py(
        tmp_path,
        """
        import threading
        def w(n):
            with open(n, "w") as f:
                f.write(n)
        ts = [threading.Thread(target=w, args=(n,)) for n in ("t1", "t2")]
        [x.start() for x in ts]
        [x.join() for x in ts]
        """,
    )
    assert seen(t, tmp_path) == {"t1": {"written", "created"}, "t2": {"written", "created"}}
    assert len(t.processes) == 1  # threads are not processes


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing(tmp_path: Path, method: str) -> None:
    (tmp_path / "job.py").write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp
            def work(n):
                with open(f"mp{{n}}", "w") as f:
                    f.write(str(n))
            if __name__ == "__main__":
                ctx = mp.get_context("{method}")
                ps = [ctx.Process(target=work, args=(n,)) for n in range(2)]
                [p.start() for p in ps]
                [p.join() for p in ps]
            """
        )
    )
    t = traced(tmp_path, PY, "job.py")
    assert t.exit_code == 0
    assert seen(t, tmp_path) == {
        "job.py": {"read"},
        "mp0": {"written", "created"},
        "mp1": {"written", "created"},
    }
    assert len(t.processes) >= 3


def test_posix_spawn(tmp_path: Path) -> None:
    t = py(
        tmp_path,
        """
        import os
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", "echo x > spawned"], os.environ)
        os.waitpid(pid, 0)
        """,
    )
    assert seen(t, tmp_path) == {"spawned": {"written", "created"}}
    assert ("sh", "-c", "echo x > spawned") in [p.argv for p in t.processes]


def test_static_binary(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to build a static program")
    (tmp_path / "s.c").write_text(
        textwrap.dedent(
            """
            #include <fcntl.h>
            #include <unistd.h>
            int main(void) {
                char b[16];
                int fd = open("in", O_RDONLY);
                ssize_t n = read(fd, b, sizeof b);
                close(fd);
                fd = openat(AT_FDCWD, "out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (n > 0 && write(fd, b, (size_t)n) < 0) return 1;
                close(fd);
                return 0;
            }
            """
        )
    )
    built = subprocess.run([gcc, "-static", "-O1", "-o", "s", "s.c"], cwd=tmp_path, check=False)
    if built.returncode != 0:
        pytest.skip("gcc -static cannot link here (no static libc)")
    (tmp_path / "in").write_text("data")
    t = traced(tmp_path, "./s")
    assert t.exit_code == 0
    assert seen(t, tmp_path) == {
        "s": {"executed"},
        "in": {"read"},
        "out": {"written", "created"},
    }


def test_truncate_with_colon(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("content")
    t = sh(tmp_path, ": > f")
    assert seen(t, tmp_path) == {"f": {"written"}}


def test_temp_file_created_and_unlinked(tmp_path: Path) -> None:
    t = sh(tmp_path, "echo x > scratch; cat scratch > out; rm scratch")
    assert seen(t, tmp_path) == {
        "scratch": {"read", "written", "created", "deleted", "temporary"},
        "out": {"written", "created"},
    }


def test_hard_link_and_symlink(tmp_path: Path) -> None:
    (tmp_path / "src").write_text("x")
    t = sh(tmp_path, "ln src hard; ln -s src soft; cat soft > /dev/null")
    assert seen(t, tmp_path) == {
        "hard": {"written", "created"},
        "soft": {"written", "created", "read"},
    }
    # What the trace saw at the end: a regular file, and a symlink (ask the file system).
    assert t.files[str(tmp_path / "hard")].regular
    assert not t.files[str(tmp_path / "soft")].regular


def test_rdwr_update_in_place(tmp_path: Path) -> None:
    (tmp_path / "db").write_bytes(b"0123")
    t = py(
        tmp_path,
        """
        import os
        fd = os.open("db", os.O_RDWR)
        os.pwrite(fd, os.pread(fd, 2, 0), 2)
        os.close(fd)
        """,
    )
    assert seen(t, tmp_path) == {"db": {"read", "written"}}


def test_odd_file_names(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9 \xff%20\nx"
    Path(os.fsdecode(raw)).write_text("in")
    t = py(
        tmp_path,
        """
        import os, sys
        src = os.fsencode(sys.argv[1])
        open(src, "rb").read()
        open(b"with space", "w").close()
        """,
        os.fsdecode(raw),
    )
    assert seen(t, tmp_path) == {
        os.fsdecode(b"caf\xe9 \xff%20\nx"): {"read"},
        "with space": {"written", "created"},
    }


def test_hundred_deep_chain(tmp_path: Path) -> None:
    (tmp_path / "chain.sh").write_text(
        'if [ "$1" -gt 0 ]; then sh chain.sh $(($1 - 1)); else echo leaf > leaf; fi\n'
    )
    t = traced(tmp_path, "sh", "chain.sh", "100")
    assert t.exit_code == 0
    assert seen(t, tmp_path) == {"chain.sh": {"read"}, "leaf": {"written", "created"}}
    chain = [p for p in t.processes if p.argv[:2] == ("sh", "chain.sh")]
    assert len(chain) == 101
    by_pid = {p.pid: p for p in t.processes}
    depth, p = 0, chain[-1]
    while p.ppid:
        p = by_pid[p.ppid]
        depth += 1
    assert depth >= 100


@pytest.mark.parametrize(
    ("script", "code", "sig"), [("exit 0", 0, None), ("exit 3", 3, None), ("kill -9 $$", 137, 9)]
)
def test_exit_status(tmp_path: Path, script: str, code: int, sig: int | None) -> None:
    t = sh(tmp_path, script)
    assert (t.exit_code, t.signal) == (code, sig)
    assert t.complete and not t.interrupted


def test_tracer_binary_exit_status_is_the_commands(tmp_path: Path) -> None:
    from roargit.trace import tracer_path

    log = tmp_path / "log"
    for script, rc in (("exit 3", 3), ("kill -9 $$", 137)):
        r = subprocess.run([tracer_path(), "--log", log, "--", "sh", "-c", script], check=False)
        assert r.returncode == rc


def test_command_not_found(tmp_path: Path) -> None:
    t = traced(tmp_path, "no-such-command-roar")
    assert t.exit_code == 127
    assert any("no-such-command-roar" in w for w in t.warnings)


def test_unfiltered_mode_sees_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_text("x")
    monkeypatch.setenv("ROAR_TRACE_NO_FILTER", "1")
    t = sh(tmp_path, "cat a > b; mv b c")
    assert seen(t, tmp_path) == {
        "a": {"read"},
        "b": {"written", "created", "temporary", "to:c"},
        "c": {"written", "created", "from:b"},
    }


INTERRUPT_HELPER = """
import json, sys
from pathlib import Path
from roargit.trace import run_traced
child = '''
import time
open("ready", "w").close()
try:
    time.sleep(30)
except KeyboardInterrupt:
    open("partial", "w").close()
    raise
'''
t = run_traced([sys.executable, "-c", child], Path(sys.argv[1]))
print(json.dumps({"interrupted": t.interrupted, "exit_code": t.exit_code, "signal": t.signal,
                  "complete": t.complete, "files": sorted(t.files)}))
"""


def test_interrupt_reaches_the_command_and_the_log_is_complete(tmp_path: Path) -> None:
    # Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
    helper = subprocess.Popen(
        [PY, "-c", INTERRUPT_HELPER, str(tmp_path)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_for(tmp_path / "ready", helper)
    os.killpg(helper.pid, signal.SIGINT)
    out, _ = helper.communicate(timeout=30)
    assert helper.returncode == 0  # roar itself survived the Ctrl-C
    import json

    r = json.loads(out)
    assert r["interrupted"] and r["complete"]
    assert (r["exit_code"], r["signal"]) == (130, signal.SIGINT)
    assert str(tmp_path / "partial") in r["files"]


def test_sigterm_to_the_tracer_is_passed_to_the_command(tmp_path: Path) -> None:
    from roargit.trace import tracer_path
    from roargit.trace_log import parse_log

    log = tmp_path / "log"
    child = "import time; open('ready', 'w').close(); time.sleep(30)"
    proc = subprocess.Popen(
        [tracer_path(), "--log", log, "--", PY, "-c", child], cwd=tmp_path, text=True
    )
    wait_for(tmp_path / "ready", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    parsed = parse_log(log.read_bytes())
    assert parsed.finished and parsed.signal == signal.SIGTERM


def test_daemon_left_behind_does_not_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("ROAR_TRACE_DAEMON_GRACE", "0.3")
    t0 = time.monotonic()
    t = sh(tmp_path, "sleep 60 & echo hi > out")
    elapsed = time.monotonic() - t0
    try:
        assert elapsed < 10
        assert t.exit_code == 0 and len(t.leftover) == 1
        assert not t.complete and any("outlived" in w for w in t.warnings)
        assert seen(t, tmp_path) == {"out": {"written", "created"}}
        # it keeps running, traced but unrecorded
        os.kill(t.leftover[0], 0)
    finally:
        for pid in t.leftover:
            os.kill(pid, signal.SIGKILL)


def test_forced_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in").write_text("x")
    (tmp_path / "other").write_text("y")
    monkeypatch.setenv("ROAR_TRACE_MODE", "fallback")
    code = "open('in').read(); open('out', 'w').write('z')"
    t = run_traced(["sh", "-c", f'cat other; {PY} -c "{code}"; exit 4'], tmp_path)
    assert t.mode == "fallback" and not t.complete and t.exit_code == 4
    assert "ptrace unavailable (forced)" in t.warnings[0]
    # `cat other` is invisible to the fallback: that is why it is never complete
    assert seen(t, tmp_path) == {"in": {"read"}, "out": {"written", "created"}}


def test_refused_ptrace_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAR_TRACE_SIMULATE_REFUSAL", "1")
    t = run_traced(["sh", "-c", "echo hi > out"], tmp_path)
    assert t.mode == "fallback" and not t.complete
    assert "ptrace refused" in t.warnings[0]
    assert seen(t, tmp_path) == {"out": {"written", "created"}}


class BothWays(NamedTuple):
    raw: TraceLog  # the event log, parsed
    summary: bytes  # the tracer's summary of it
    expected: dict[str, FileAccess]  # the rules on the raw log
    got: dict[str, FileAccess]  # what run_traced makes of the summary
    states: dict[str, str]  # states the summary gave for paths left to the rules
    found: Any  # trace_log._Found: accesses made straight from `file` and `files` records…


def trace_both_ways(cwd: Path, script: str) -> BothWays:
    """Run `bash -c script` under the tracer with a summary; classify the raw log by the
    rules and the summary as `run_traced` does."""
    from roargit.trace import tracer_path
    from roargit.trace_log import _accesses, _Found, _parse_found, parse_log, summarize

    log, summary = cwd / "log", cwd / "log.summary"
    r = subprocess.run(
        [tracer_path(), "--log", log, "--summary", summary, "--", "bash", "-c", script],
        cwd=cwd,
        check=False,
    )
    assert r.returncode == 0
    raw = parse_log(log.read_bytes())
    found = _Found({}, {}, {}, {}, [])
    _, rows = _parse_found(summary.read_bytes(), found)
    got = dict(_accesses(rows, found))
    return BothWays(raw, summary.read_bytes(), summarize(raw.events), got, found.states, found)


def test_summary_classifies_as_the_log_does(tmp_path: Path) -> None:
    """What `run_traced` reads (the tracer's summary) gives the same accesses as the rules on
    the raw log, for a run that reads, writes, renames, deletes, links and execs."""
    from roargit.trace_log import parse_log

    (tmp_path / "in").write_text("x\n")
    (tmp_path / "old").write_text("o\n")
    both = trace_both_ways(
        tmp_path,
        "cat in > out; cp in copy; mv copy old; sed -i s/x/y/ out; echo t > tmp; rm tmp; "
        "ln -s in sym; cat sym > /dev/null; ln in hard; : > trunc; mkdir dir; "
        "cat missing 2>/dev/null; printf 'a' >> 'with space'; touch dir/./inner",
    )
    assert b"\nfile " in both.summary and b"\nopen " not in both.summary
    assert both.found.direct  # the fast path was taken
    assert both.got == both.expected
    parsed = parse_log(both.summary)
    assert parsed.processes == both.raw.processes and parsed.exit_code == both.raw.exit_code == 0
    names = {Path(p).name for p in both.got if p.startswith(str(tmp_path))}
    assert {"in", "out", "old", "tmp", "sym", "hard", "trunc", "with space", "inner"} <= names


def test_summary_states_from_a_directory_listing(tmp_path: Path) -> None:
    """Many paths in one folder: the tracer lists it instead of an lstat per path. Files gone,
    turned into a folder or a symlink by the end, and odd names, come out as lstat says."""
    d = tmp_path / "many"
    d.mkdir()
    names = [f"f{i:02}" for i in range(40)] + ["with space", "pct%41", "tab\tname"]
    for n in names:
        (d / n).write_text(n)
    both = trace_both_ways(
        tmp_path,
        'for f in many/*; do cat "$f" > /dev/null; done; echo new > other; mv other many/f10; '
        "rm many/f00 many/f01; rm many/f02 && mkdir many/f02; "
        "rm many/f03 && ln -s f04 many/f03; cat many/nothing-here 2>/dev/null; true",
    )
    assert both.got == both.expected
    seen = {Path(p).name: a for p, a in both.got.items() if p.startswith(str(d))}
    assert "f02" not in seen and seen["f03"].read and not seen["f03"].regular
    assert {"with space", "pct%41", "tab\tname"} <= set(seen) and "nothing-here" not in seen
    # what the listing said: f00 gone (left to the rules), f05 a file: one of the folder's
    # `files` record, read as a group; f10, renamed onto, taken out of it to add the rename
    assert both.states[str(d / "f00")] == "none" and b"\nfiles 1 f " in both.summary
    [group] = [g for g in both.found.groups if g.folder == str(d)]
    assert str(d / "f05") in group.paths and str(d / "f10") not in group.paths
    assert seen["f10"].renamed_from == (str(tmp_path / "other"),) and seen["f10"].read


def _lstat_key(path: Path) -> bytes:
    import struct

    st = os.lstat(path)
    key = struct.pack("<QQQqq", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return key.hex().encode()


def test_stat_keys_are_each_regular_files_lstat_after_the_run(tmp_path: Path) -> None:
    """With `stat_files`, the tracer gives every regular file the run left its stat key, taken
    once the run ended (the in-place append below is in it): the digest a folder is checked
    by comes out as Python's own lstat gives it. Folders listed (40 files) or not alike."""
    from roargit import folders

    d = tmp_path / "d"
    d.mkdir()
    for i in range(40):
        (d / f"f{i:02}").write_text(str(i))
    (tmp_path / "in").write_text("x")
    (d / "with space").write_text("s")
    script = (
        "cat d/* in > /dev/null; echo more >> d/f01; rm d/f00; ln -s in link; cat link >/dev/null; "
        "mkdir sub; cat missing 2>/dev/null; echo new > d/new; true"
    )
    t = run_traced(["sh", "-c", script], tmp_path, stat_files=True)
    # (a file of the run's, not one only exec-ed: /usr/bin/cat has no `open` record)
    regular = sorted(p for p, a in t.files.items() if a.regular and p.startswith(str(tmp_path)))
    assert str(d / "f01") in regular and str(d / "with space") in regular
    for p in regular:
        assert t.stat_keys[p] == _lstat_key(Path(p)), p
    for gone in ("f00", "missing", "link", "sub"):
        assert str(d / gone) not in t.stat_keys and str(tmp_path / gone) not in t.stat_keys
    files = sorted(str(p) for p in d.iterdir())
    assert folders.stat_digest_of_hex(str(d), files, t.stat_keys) == folders.stat_digest(
        str(d), files
    )
    assert run_traced(["sh", "-c", "cat in"], tmp_path).stat_keys == {}  # not asked


def test_stat_keys_of_many_paths_are_each_files_own(tmp_path: Path) -> None:
    """Past 8192 paths the tracer shares the lstat calls with a helper process: every key is
    still the lstat of its own file, whichever process took it (the files lie among paths
    that are not there, from the first to the last)."""
    paths, files = [], []
    for i in range(9000):
        p = tmp_path / f"d{i % 3}" / f"{i:04}"
        if i % 30 == 0:
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"%d" % i)
            files.append(p)
        paths.append(str(p))
    script = (
        "import sys\nfor f in sys.argv[1:]:\n    try: open(f, 'rb').read()\n"
        "    except OSError: pass"
    )
    t = run_traced([sys.executable, "-c", script, *paths], tmp_path, stat_files=True)
    assert len(t.stat_keys) >= len(files) == 300
    assert all(t.stat_keys[str(p)] == _lstat_key(p) for p in files)
    assert str(tmp_path / "d1" / "0001") not in t.stat_keys


def test_a_files_record_lists_its_names_in_byte_order_with_their_keys(tmp_path: Path) -> None:
    """Read in reverse order, a folder's files still come in byte order in its `files` record,
    each key beside its name; a grouped path that another record touches (renamed onto) leaves
    the group and keeps its key."""
    from roargit.trace_files import StatKeys

    d = tmp_path / "d"
    d.mkdir()
    names = [f"f{i:02}" for i in range(20)] + ["F", "\u00e9", "z"]
    for n in names:
        (d / n).write_text(n)
    (tmp_path / "other").write_text("o")
    script = "for f in $(ls d | sort -r); do cat d/$f > /dev/null; done; mv other d/f10"
    t = run_traced(["sh", "-c", script], tmp_path, stat_files=True)
    assert isinstance(t.stat_keys, StatKeys)
    [group] = [g for g in t.stat_keys.groups if g.folder == str(d)]
    written = [n.encode() for n in names if n != "f10"]
    assert group.names == [os.fsdecode(n) for n in sorted(written)]
    assert group.paths == [str(d / os.fsdecode(n)) for n in sorted(written)]
    assert group.keys == b"".join(_lstat_key(Path(p)) for p in group.paths)
    assert t.stat_keys[str(d / "f10")] == _lstat_key(d / "f10")
    assert t.files[str(d / "f10")].renamed_from == (str(tmp_path / "other"),)


def test_no_stat_keys_while_a_process_is_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process the run left running may still write: the stat keys would be taken too early."""
    monkeypatch.setenv("ROAR_TRACE_DAEMON_GRACE", "0.3")
    (tmp_path / "in").write_text("x")
    t = run_traced(["sh", "-c", "sleep 60 & cat in"], tmp_path, stat_files=True)
    try:
        assert len(t.leftover) == 1 and t.files[str(tmp_path / "in")].regular
        assert t.stat_keys == {}
    finally:
        for pid in t.leftover:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite already runs as an ordinary user")
def test_as_an_ordinary_user() -> None:
    import tempfile

    from roargit.trace import tracer_path
    from roargit.trace_log import parse_log, summarize

    d = Path(tempfile.mkdtemp(prefix="roar-nobody-"))
    try:
        d.chmod(0o777)
        (d / "in").write_text("x")
        log = d / "log"
        # A copy the user can run: the checkout may sit where only root may enter (/root).
        tracer = d / "roar-trace"
        shutil.copy(tracer_path(), tracer)
        r = subprocess.run(
            [tracer, "--log", log, "--", "sh", "-c", "cat in > out"],
            cwd=d,
            user=65534,
            group=65534,
            check=False,
        )
        assert r.returncode == 0
        parsed = parse_log(log.read_bytes())
        assert parsed.filtered and parsed.finished
        files = {
            Path(p).name: a for p, a in summarize(parsed.events).items() if p.startswith(str(d))
        }
        files.pop("roar-trace", None)
        assert set(files) == {"in", "out"} and files["out"].written and files["in"].read
    finally:
        shutil.rmtree(d)


def test_exec_from_a_thread(tmp_path: Path) -> None:
    # A non-leader thread's execve: the kernel gives it the leader's pid (ptrace(2), execve).
    t = py(
        tmp_path,
        """
        import os, threading, time
        def run():
            os.execv("/bin/sh", ["sh", "-c", "echo x > after"])
        threading.Thread(target=run).start()
        time.sleep(30)
        """,
    )
    assert t.exit_code == 0 and t.complete
    assert seen(t, tmp_path) == {"after": {"written", "created"}}
    assert t.processes[0].argv == ("sh", "-c", "echo x > after")


# ------------------------------------------------------------------ the LD_PRELOAD shim


def shim_log(root: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[Trace, bytes]:
    log = root / "trace.log"
    t = run_traced(list(argv), root, env, log_path=log)
    assert t.mode == "ptrace", t.warnings
    data = log.read_bytes()
    log.unlink()
    return t, data


def test_shim_is_used_and_not_recorded(tmp_path: Path) -> None:
    from roargit.trace_log import parse_log

    (tmp_path / "in").write_text("x")
    t, data = shim_log(tmp_path, PY, "-c", "open('out', 'w').write(open('in').read())")
    assert parse_log(data).shim
    assert seen(t, tmp_path) == {"in": {"read"}, "out": {"written", "created"}}
    assert not any(p.endswith("roar-shim.so") for p in t.files)


def test_shim_keeps_the_users_ld_preload(tmp_path: Path) -> None:
    libm = next(
        (
            p
            for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/lib/aarch64-linux-gnu/libm.so.6")
            if os.path.exists(p)
        ),
        None,
    )
    if libm is None:
        pytest.skip("no libm to preload")
    env = dict(os.environ, LD_PRELOAD=libm)
    code = "import os; open('env', 'w').write(os.environ['LD_PRELOAD'])"
    t, _ = shim_log(tmp_path, PY, "-c", code, env=env)
    assert t.exit_code == 0
    shim, user = (tmp_path / "env").read_text().split(":")
    assert shim.endswith("roar-shim.so") and user == libm


def test_cleared_environment_still_traced(tmp_path: Path) -> None:
    # env -i drops LD_PRELOAD: the shell's calls trap to the tracer instead.
    t = sh(tmp_path, "env -i /bin/sh -c 'echo x > out; cat out > copy'")
    assert seen(t, tmp_path) == {
        "out": {"written", "created", "read"},
        "copy": {"written", "created"},
    }


@pytest.mark.parametrize("env_var", ["ROAR_TRACE_NO_SHIM", "ROAR_TRACE_NO_FILTER"])
def test_shim_off_sees_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_var: str
) -> None:
    from roargit.trace_log import parse_log

    script = "cat a > b; mv b c; ln c d; rm c; mkdir m; : > m/t"
    (tmp_path / "a").write_text("x")
    on, _ = shim_log(tmp_path, "bash", "-c", script)
    on_seen = seen(on, tmp_path)
    for p in ("c", "d", "m/t"):
        (tmp_path / p).unlink(missing_ok=True)
    (tmp_path / "m").rmdir()
    monkeypatch.setenv(env_var, "1")
    off, data = shim_log(tmp_path, "bash", "-c", script)
    assert not parse_log(data).shim
    assert (
        seen(off, tmp_path)
        == on_seen
        == {
            "a": {"read"},
            "b": {"written", "created", "temporary", "to:c"},
            "c": {"written", "created", "from:b", "deleted", "temporary"},
            "d": {"written", "created"},
            "m/t": {"written", "created"},
        }
    )


def test_shim_survives_its_fd_closed_and_reused(tmp_path: Path) -> None:
    # The program closes the shim's log fd and puts its own file on that number: the shim
    # must notice (device/inode check), not write its records into the program's file.
    code = """
    import os
    log = os.path.realpath("trace.log")
    fd = next(int(n) for n in os.listdir("/proc/self/fd")
              if os.path.realpath(f"/proc/self/fd/{n}") == log)
    os.close(fd)
    mine = os.open("mine", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(mine, fd)
    open("after", "w").close()
    os.write(fd, b"ok")
    """
    t, _ = shim_log(tmp_path, PY, "-c", textwrap.dedent(code))
    assert t.exit_code == 0, t
    assert (tmp_path / "mine").read_bytes() == b"ok"
    assert seen(t, tmp_path) == {"mine": {"written", "created"}, "after": {"written", "created"}}


def test_sigkill_loses_nothing_already_done(tmp_path: Path) -> None:
    code = "import os; open('out', 'w').write('x'); os.kill(os.getpid(), 9)"
    t = py(tmp_path, code)
    assert t.exit_code == 137
    assert seen(t, tmp_path) == {"out": {"written", "created"}}


def test_fopen_through_ctypes(tmp_path: Path) -> None:
    (tmp_path / "in").write_text("x")
    code = """
    import ctypes
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    for name, mode in ((b"in", b"re"), (b"out", b"w+"), (b"log", b"a")):
        f = libc.fopen(name, mode)
        assert f, name
        libc.fclose(ctypes.c_void_p(f))
    """
    t = py(tmp_path, code)
    assert t.exit_code == 0
    assert seen(t, tmp_path) == {
        "in": {"read"},
        "out": {"written", "created"},  # new: nothing to read yet, even with "w+"
        "log": {"written", "created"},
    }


def test_many_threads_many_files(tmp_path: Path) -> None:
    code = """
    import threading
    def w(k):
        for i in range(300):
            open(f"t{k}-{i}", "w").close()
    ts = [threading.Thread(target=w, args=(k,)) for k in range(4)]
    [x.start() for x in ts]
    [x.join() for x in ts]
    """
    t = py(tmp_path, code)
    want = {f"t{k}-{i}": {"written", "created"} for k in range(4) for i in range(300)}
    assert seen(t, tmp_path) == want


def test_created_dirs_are_the_outermost_folders_the_run_made(tmp_path: Path) -> None:
    (tmp_path / "was-there").mkdir()
    script = (
        "import os\n"
        "os.makedirs('new/a/b')\n"
        "os.makedirs('was-there/inner', exist_ok=True)\n"
        "os.makedirs('was-there', exist_ok=True)\n"
        "os.mkdir('gone'); os.rmdir('gone')\n"
        "os.mkdir('new-sibling')\n"
    )
    t = run_traced([sys.executable, "-c", script], tmp_path)
    assert t.exit_code == 0
    root = str(tmp_path)
    assert sorted(t.created_dirs) == [
        f"{root}/new",
        f"{root}/new-sibling",
        f"{root}/was-there/inner",
    ]


def test_while_running_runs_during_the_command_and_its_failure_loses_nothing(
    tmp_path: Path,
) -> None:
    """run_traced's `while_running` (roar run loads what comes after the command in it) is
    called once the command has started, and an exception in it does not cost the trace."""
    import time

    marker = tmp_path / "started"
    seen: list[bool] = []

    def hook() -> None:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(marker.exists())
        raise RuntimeError("a bug in what is loaded")

    script = f"open({str(marker)!r}, 'w').close(); import time; time.sleep(0.2)"
    t = run_traced([sys.executable, "-c", script], tmp_path, while_running=hook)
    assert seen == [True]
    assert t.exit_code == 0 and t.files[str(marker)].written
