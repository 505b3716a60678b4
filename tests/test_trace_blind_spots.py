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

from roargit.trace import Trace, run_traced
from roargit.trace_files import FileAccess

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
        # Long enough that the shell has surely exited first, even on a loaded machine: the
        # trace is then always the command's alone, with the background job left over.
        t = traced(tmp_path, "sh", "-c", f"(sleep 2; echo done > d{i}) &", env=env)
        traces.append(t)
    deadline = time.monotonic() + 30
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

    (git_repo / "score.py").write_text(
        "import sys\nfor line in sys.stdin:\n    print(len(line))\nprint('done', file=sys.stderr)\n"
    )
    (git_repo / "input.jsonl").write_text('{"a": 1}\n{"b": 22}\n')
    record = roar_run(git_repo, "roar run python score.py < input.jsonl > preds.jsonl 2> err.log")
    inputs, outputs = paths_of(record, "inputs"), paths_of(record, "outputs")
    assert "input.jsonl" in inputs
    assert set(outputs) == {"preds.jsonl", "err.log"}
    assert (git_repo / "preds.jsonl").read_text() == "9\n10\n"
    # roar writes no report into a recorded stderr: the file holds what was hashed
    assert (git_repo / "err.log").read_text() == "done\n"
    for name in ("preds.jsonl", "err.log"):
        assert outputs[name] == blake3((git_repo / name).read_bytes()).hexdigest()


def test_an_appended_log_is_not_an_output(git_repo: Path) -> None:
    """`>>` onto a file that already holds bytes (a batch job's log): not this run's output."""
    (git_repo / "job.log").write_text("earlier steps\n")
    record = roar_run(git_repo, "roar run echo step >> job.log 2>&1")
    assert paths_of(record, "outputs") == {}
    assert (git_repo / "job.log").read_text().startswith("earlier steps\nstep\n")


def test_a_redirected_stream_left_empty_is_not_an_output(git_repo: Path) -> None:
    """`2> err.log` that the command never writes to (or a batch job's empty log): no output
    of the run, and roar's report goes there as it would to a terminal."""
    record = roar_run(git_repo, "roar run python -c 'print(1)' > out.txt 2> err.log")
    assert set(paths_of(record, "outputs")) == {"out.txt"}
    assert (git_repo / "err.log").read_text().strip()  # roar's report


def test_json_on_stdout_is_not_the_commands_output(git_repo: Path) -> None:
    """`roar run --json CMD > f`: f holds the command's bytes and then roar's JSON."""
    import json

    subprocess.run(["bash", "-c", "roar run --json echo hi > both.txt"], cwd=git_repo, check=True)
    text = (git_repo / "both.txt").read_text()
    assert text.startswith("hi\n")
    assert json.loads(text[3:])["outputs"] == []


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


@pytest.mark.parametrize("mode", SHIM_MODES)
def test_dotdot_follows_a_link_the_run_re_points(tmp_path: Path, mode: dict[str, str]) -> None:
    """The shim keeps resolved folders per process; re-pointing a link (a rename over it)
    makes it resolve them again."""
    import sys

    for n in ("1", "2"):
        (tmp_path / f"real{n}" / "data").mkdir(parents=True)
        (tmp_path / f"real{n}" / "f").write_text(n)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "f").write_text("a decoy")
    (tmp_path / "work" / "link").symlink_to("../real1/data")
    code = (
        "import os\n"
        "a = open('link/../f').read()\n"
        "os.symlink('../real2/data', 'link.new')\n"
        "os.rename('link.new', 'link')\n"
        "b = open('link/../f').read()\n"
        "assert (a, b) == ('1', '2'), (a, b)\n"
    )
    t = traced(tmp_path / "work", sys.executable, "-c", code, env=dict(os.environ, **mode))
    assert t.exit_code == 0
    files = seen(t, tmp_path)
    assert files["real1/f"] == {"read"} and files["real2/f"] == {"read"}
    assert "work/f" not in files


def test_dotdot_after_a_symlinked_folder_in_the_fallback_mode(tmp_path: Path) -> None:
    """Where ptrace is refused, Python's audit hook records the reads: the same rule."""
    import sys

    (tmp_path / "real" / "data").mkdir(parents=True)
    (tmp_path / "real" / "in.csv").write_text("the real input\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "in.csv").write_text("a decoy\n")
    (tmp_path / "work" / "datalink").symlink_to("../real/data")
    code = "open('datalink/../in.csv').read()"
    t = run_traced([sys.executable, "-c", code], tmp_path / "work", None, mode="fallback")
    assert t.mode == "fallback"
    assert seen(t, tmp_path) == {"real/in.csv": {"read"}}


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
    if t.exit_code == 1:
        pytest.skip("O_TMPFILE is not supported by this file system")
    if t.exit_code == 2:
        pytest.skip("linkat with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH on this kernel")
    assert t.exit_code == 0 and t.complete
    files = seen(t, tmp_path)
    assert files.get("made") == {"written", "created"}
    assert (tmp_path / "made").read_text() == "made\n"


# ------------------------------------------------------------------ files reached another way

IO_URING = r"""
    #include <fcntl.h>
    #include <linux/io_uring.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    /* Open "in" through an io_uring (IORING_OP_OPENAT) and read it, keeping it open at exit.
     * Exit status 10: io_uring is refused here. */
    int main(void) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        int ring = (int)syscall(__NR_io_uring_setup, 4, &p);
        if (ring < 0) return 10;
        size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
        size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
        int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
        if (single && cq_len > sq_len) sq_len = cq_len;
        int prot = PROT_READ | PROT_WRITE, share = MAP_SHARED | MAP_POPULATE;
        char *sq = mmap(0, sq_len, prot, share, ring, IORING_OFF_SQ_RING);
        char *cq = single ? sq : mmap(0, cq_len, prot, share, ring, IORING_OFF_CQ_RING);
        struct io_uring_sqe *sqes =
            mmap(0, p.sq_entries * sizeof *sqes, prot, share, ring, IORING_OFF_SQES);
        if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) return 4;
        unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
        unsigned *array = (unsigned *)(sq + p.sq_off.array);
        unsigned at = *tail & *(unsigned *)(sq + p.sq_off.ring_mask);
        struct io_uring_sqe *e = &sqes[at];
        memset(e, 0, sizeof *e);
        e->opcode = IORING_OP_OPENAT;
        e->fd = AT_FDCWD;
        e->addr = (unsigned long)"in";
        e->open_flags = O_RDONLY;
        array[at] = at;
        __atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
        if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) return 5;
        struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
        unsigned head = *(unsigned *)(cq + p.cq_off.head);
        int fd = cqes[head & *(unsigned *)(cq + p.cq_off.ring_mask)].res;
        char b[8];
        return fd >= 0 && read(fd, b, sizeof b) > 0 ? 0 : 6;
    }
"""

BY_HANDLE = r"""
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <stdlib.h>
    #include <unistd.h>
    int main(void) {
        struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
        int mount_id;
        h->handle_bytes = MAX_HANDLE_SZ;
        if (name_to_handle_at(AT_FDCWD, "in", h, &mount_id, 0) != 0) return 10;
        int dir = open(".", O_RDONLY | O_DIRECTORY);
        int fd = open_by_handle_at(dir, h, O_RDONLY); /* needs CAP_DAC_READ_SEARCH */
        char b[8];
        if (fd < 0) return 10;
        return read(fd, b, sizeof b) < 0;
    }
"""


def test_io_uring_marks_the_run_incomplete(tmp_path: Path) -> None:
    if not Path("/usr/include/linux/io_uring.h").exists():
        pytest.skip("no io_uring header")
    prog = build_c(tmp_path, "ring", IO_URING)
    (tmp_path / "in").write_text("read through the ring\n")
    t = traced(tmp_path, str(prog))
    assert t.exit_code in (0, 10)
    found = [w for w in t.warnings if "uses io_uring" in w]
    if t.exit_code == 10 and not found:
        pytest.skip("io_uring_setup is refused before the tracer sees it (another seccomp filter)")
    assert not t.complete
    (line,) = found
    assert "(ring)" in line and "\n" not in line
    if t.exit_code == 0:  # the ring worked: the file still open at its exit is found
        assert seen(t, tmp_path).get("in") == {"read"}


@pytest.mark.parametrize(
    "mode", [*SHIM_MODES, pytest.param({"ROAR_TRACE_NO_FILTER": "1"}, id="unfiltered")]
)
def test_open_by_handle_at_records_the_file_its_fd_names(
    tmp_path: Path, mode: dict[str, str]
) -> None:
    prog = build_c(tmp_path, "byhandle", BY_HANDLE)
    (tmp_path / "in").write_text("x")
    t = traced(tmp_path, str(prog), env=dict(os.environ, **mode))
    if t.exit_code == 10:
        pytest.skip("file handles are refused here (CAP_DAC_READ_SEARCH, or the file system)")
    assert t.exit_code == 0
    assert t.complete, t.warnings
    assert seen(t, tmp_path).get("in") == {"read"}


# ------------------------------------------------------------------ other views of the file system

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mount need root")

JAILED_COPY = r"""
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <unistd.h>
    /* With an argument: chroot there first. Then copy /in (named through a "..") to /out. */
    int main(int argc, char **argv) {
        char b[64];
        if (argc > 1 && (chroot(argv[1]) != 0 || chdir("/") != 0)) return 3;
        int fd = open("/data/../in", O_RDONLY);
        ssize_t n = read(fd, b, sizeof b);
        close(fd);
        fd = open("/out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (n <= 0 || write(fd, b, (size_t)n) != n) return 1;
        close(fd);
        fd = open("data/rel", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        return fd < 0;
    }
"""


def make_jail(tmp_path: Path) -> Path:
    prog = build_c(tmp_path, "jailed", JAILED_COPY, "-static")
    jail = tmp_path / "jail"
    (jail / "data").mkdir(parents=True)
    shutil.copy(prog, jail / "copy")
    (jail / "in").write_text("inside\n")
    (tmp_path / "in").write_text("a decoy outside\n")  # what /in names outside the jail
    return jail


@needs_root
@pytest.mark.parametrize("how", ["itself", "chroot(1)", "unshare --root"])
def test_chroot_paths_are_translated(tmp_path: Path, how: str) -> None:
    """A static program in a chroot: by its own chroot call (always a tracer stop), started
    by chroot(1), whose chroot goes through the shim, or chrooted in a new mount namespace."""
    jail = make_jail(tmp_path)
    if how == "itself":
        t = traced(tmp_path, str(jail / "copy"), str(jail))
    elif how == "chroot(1)":
        if shutil.which("chroot") is None:
            pytest.skip("no chroot(1)")
        t = traced(tmp_path, "chroot", str(jail), "/copy")
    else:
        needs_unshare()
        t = traced(tmp_path, "unshare", "-m", f"--root={jail}", "--wd=/", "/copy")
    assert t.exit_code == 0, t.warnings
    assert t.complete, t.warnings
    assert (jail / "out").read_text() == "inside\n"
    files = {k: v for k, v in seen(t, tmp_path).items() if k != "jailed"}
    assert files == {
        "jail/copy": {"executed"},
        "jail/in": {"read"},
        "jail/out": {"written", "created"},
        "jail/data/rel": {"written", "created"},
    }


def needs_unshare() -> None:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("no unshare(1) or mount(8)")
    probe = subprocess.run(["unshare", "-m", "true"], check=False, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -m is refused here")


def bind_tree(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("the bytes read\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("a decoy\n")


@needs_root
def test_a_bind_mount_in_a_new_mount_namespace_is_mapped_to_the_host_file(tmp_path: Path) -> None:
    """Inside `unshare -m`, b/x is a's x: the host's b/x is another file, never recorded; a/x
    is, found through the two mount tables and checked by device and inode."""
    needs_unshare()
    bind_tree(tmp_path)
    script = "mount --bind a b && cat b/x > out && cat b/../a/x > /dev/null"
    t = traced(tmp_path, "unshare", "-m", "sh", "-c", script)
    assert t.exit_code == 0
    assert (tmp_path / "out").read_text() == "the bytes read\n"
    assert t.complete, t.warnings
    assert seen(t, tmp_path) == {"a/x": {"read"}, "out": {"written", "created"}}


@needs_root
def test_a_file_only_another_mount_namespace_has_is_not_recorded(tmp_path: Path) -> None:
    """A tmpfs mounted inside the namespace has no path here: what is done there is left out,
    with one warning naming the process, and the host file at the same path is not recorded."""
    needs_unshare()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "new").write_text("a decoy\n")
    script = "mount -t tmpfs none b && echo x > b/new && cat b/new > out"
    t = traced(tmp_path, "unshare", "-m", "sh", "-c", script)
    assert t.exit_code == 0
    assert not t.complete
    (line,) = [w for w in t.warnings if "another mount namespace" in w]
    assert "no mount of this machine shows" in line
    assert seen(t, tmp_path) == {"out": {"written", "created"}}


# ------------------------------------------------------------------ work done by another process

SERVER = r"""
import os, socket, sys
kind, where = sys.argv[1], sys.argv[2]
if kind == "unix":
    s = socket.socket(socket.AF_UNIX)
    s.bind(where)
else:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    with open(where + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(where + ".tmp", where)
s.listen()
while True:
    c, _ = s.accept()
    c.sendall(b"done")
    c.close()
"""

CLIENT = r"""
import socket, sys
kind, where = sys.argv[1], sys.argv[2]
if kind == "unix":
    s = socket.socket(socket.AF_UNIX)
    s.connect(where)
else:
    s = socket.socket()
    s.connect(("127.0.0.1", int(open(where).read())))
print(s.recv(4).decode())
"""


@pytest.mark.parametrize("mode", SHIM_MODES)
@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_a_server_outside_the_run_is_named(tmp_path: Path, kind: str, mode: dict[str, str]) -> None:
    import sys

    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    where = str(tmp_path / ("sock" if kind == "unix" else "port"))
    server = subprocess.Popen([sys.executable, "server.py", kind, where], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(where) and time.monotonic() < deadline:
            time.sleep(0.02)
        t = traced(tmp_path, sys.executable, "client.py", kind, where, env=dict(os.environ, **mode))
        assert t.exit_code == 0
        assert not t.complete
        (line,) = [w for w in t.warnings if "work done by another process" in w]
        assert f"(pid {server.pid}, " in line and "is not captured" in line
    finally:
        server.kill()
        server.wait()


def test_a_server_of_the_run_itself_is_not_named(tmp_path: Path) -> None:
    import sys

    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    script = (
        f"{sys.executable} server.py unix sock & "
        "while [ ! -e sock ]; do sleep 0.02; done; "
        f"{sys.executable} client.py unix sock; kill $!; wait"
    )
    t = traced(tmp_path, "sh", "-c", script)
    assert not [w for w in t.warnings if "another process" in w]
    assert t.complete, t.warnings


def test_a_connect_to_nothing_is_not_named(tmp_path: Path) -> None:
    import sys

    t = traced(
        tmp_path,
        sys.executable,
        "-c",
        "import socket\ntry:\n    socket.socket(socket.AF_UNIX).connect('nothing')\n"
        "except OSError:\n    pass\n",
    )
    assert t.complete and not t.warnings


CLONE_NEWNS = r"""
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <sched.h>
    #include <signal.h>
    #include <stdlib.h>
    #include <sys/mount.h>
    #include <sys/wait.h>
    #include <unistd.h>
    /* A child in a new mount namespace (clone, no exec) binds a over b and copies b/x to out. */
    static int child(void *arg) {
        (void)arg;
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return 2;
        if (mount("a", "b", NULL, MS_BIND, NULL) != 0) return 3;
        char buf[64];
        int fd = open("b/x", O_RDONLY);
        ssize_t n = read(fd, buf, sizeof buf);
        int out = open("out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        return n > 0 && write(out, buf, (size_t)n) == n ? 0 : 1;
    }
    int main(void) {
        char *stack = malloc(1 << 16);
        pid_t pid = clone(child, stack + (1 << 16), CLONE_NEWNS | SIGCHLD, NULL);
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) < 0) return 5;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 6;
    }
"""


@needs_root
def test_a_clone_into_a_new_mount_namespace_leaves_its_calls_to_the_tracer(tmp_path: Path) -> None:
    """A child cloned into a new mount namespace, no exec: the shim loaded in it notices at its
    first record and records nothing (its paths are the namespace's); the tracer maps them."""
    prog = build_c(tmp_path, "clonens", CLONE_NEWNS)
    bind_tree(tmp_path)
    t = traced(tmp_path, str(prog))
    if t.exit_code in (2, 3):
        pytest.skip("mount is refused here")
    assert t.exit_code == 0
    assert (tmp_path / "out").read_text() == "the bytes read\n"
    assert t.complete, t.warnings
    files = seen(t, tmp_path)
    assert files == {"clonens": {"executed"}, "a/x": {"read"}, "out": {"written", "created"}}


RAW_CHROOT = r"""
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    /* chroot by a raw system call, which the shim loaded in this program cannot see. */
    int main(int argc, char **argv) {
        if (argc < 2 || syscall(SYS_chroot, argv[1]) != 0 || chdir("/") != 0) return 3;
        int fd = open("/out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        return fd < 0;
    }
"""


@needs_root
def test_raw_chroot_under_the_shim_is_flagged(tmp_path: Path) -> None:
    prog = build_c(tmp_path, "rawchroot", RAW_CHROOT)
    (tmp_path / "jail").mkdir()
    t = traced(tmp_path, str(prog), str(tmp_path / "jail"))
    assert t.exit_code == 0
    assert not t.complete
    (line,) = [w for w in t.warnings if "raw system call" in w]
    assert "(rawchroot)" in line


# ------------------------------------------------------------------ the table in the docs


def test_the_table_names_every_case() -> None:
    """Each row of "What is and is not seen" names tests that exist, and each test of this
    file is named by a row."""
    import re

    text = DOCS.read_text()
    section = text.split("## What is and is not seen", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    named = [re.findall(r"`([\w.]+::)?(test_\w+)`", row.rsplit("|", 2)[1]) for row in rows[1:]]
    assert all(named), "a row without a test"
    here = Path(__file__).read_text()
    other = Path(__file__).with_name("test_trace.py").read_text()
    for row in named:
        for where, name in row:
            source = other if where == "test_trace.py::" else here
            assert f"def {name}(" in source, name
    in_table = {name for row in named for where, name in row if not where}
    defined = set(re.findall(r"^def (test_\w+)\(", here, re.M)) - {
        "test_the_table_names_every_case"
    }
    assert defined == in_table
