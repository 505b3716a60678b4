"""parse_log and summarize on synthetic logs: the format of docs/trace-format.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roargit.trace_log import (
    Event,
    TraceLogCorrupt,
    TraceLogTooNew,
    parse_log,
    summarize,
)


def escape(raw: bytes) -> bytes:
    """The tracer's field escaping (roar-trace.c: log_bytes)."""
    if not raw:
        return b"%00"
    return b"".join(b"%%%02X" % c if c <= 0x20 or c in (0x25, 0x7F) else bytes([c]) for c in raw)


paths = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b).map(lambda b: b"/" + b)


@given(paths)
def test_path_round_trip(raw: bytes) -> None:
    log = parse_log(b"roar-trace 1\nopen 7 0 - " + escape(raw) + b"\nend code 0\n")
    (ev,) = log.events
    assert ev.paths == (os.path.normpath(os.fsdecode(raw)),)
    assert os.fsencode(ev.paths[0]) == os.fsencode(os.path.normpath(os.fsdecode(raw)))


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"\0" not in b), min_size=1, max_size=5))
def test_argv_round_trip(argv: list[bytes]) -> None:
    fields = b" ".join(escape(a) for a in argv)
    log = parse_log(b"roar-trace 1\nstart 5 1\nexec 5 5 /bin/x /tmp " + fields + b"\n")
    assert log.processes[0].argv == tuple(os.fsdecode(a) for a in argv)
    assert not log.finished


def test_header_and_version() -> None:
    with pytest.raises(TraceLogCorrupt):
        parse_log(b"something else\n")
    with pytest.raises(TraceLogTooNew):
        parse_log(b"roar-trace 6\n")
    with pytest.raises(TraceLogCorrupt):
        parse_log(b"roar-trace 1\nopen x\n")


def test_unknown_records_skipped_and_cut_line_ignored() -> None:
    log = parse_log(b"roar-trace 1\nfuture 1 2 3\nend signal 9\nopen 7 0 - /half")
    assert log.events == () and log.finished
    assert (log.exit_code, log.signal) == (137, 9)


def test_process_tree_and_exits() -> None:
    log = parse_log(
        b"roar-trace 1\nstart 10 1\nexec 10 10 /bin/sh /w sh -c x\n"
        b"task 11 11 10 fork\ntask 12 10 10 thread\nexec 11 11 /bin/cat /w cat a\n"
        b"exit 11 signal 15\nexit 10 code 0\nleftover 13\nend code 0\n"
    )
    procs = {p.pid: p for p in log.processes}
    assert set(procs) == {10, 11}
    assert procs[11].ppid == 10 and procs[11].argv == ("cat", "a")
    assert procs[11].exit_code == 143 and procs[10].exit_code == 0
    assert log.leftover == (13,)


def test_rules_on_events() -> None:
    w = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    events = [
        Event("open", 1, ("/in",), os.O_RDONLY),
        Event("open", 1, ("/missing",), os.O_RDONLY),
        Event("open", 1, ("/tmp1",), w, existed=False),
        Event("rename", 1, ("/tmp1", "/out"), existed=True),
        Event("open", 1, ("/scratch",), w, existed=False),
        Event("unlink", 1, ("/scratch",), existed=True),
        Event("unlink", 1, ("/never",), existed=False),
        Event("open", 1, ("/d",), os.O_RDONLY | os.O_DIRECTORY),
    ]
    state = {"/in": "file", "/out": "file", "/d": "dir"}
    files = summarize(events, lambda p: state.get(p, "none"))
    assert set(files) == {"/in", "/tmp1", "/out", "/scratch"}
    assert files["/in"].read and not files["/in"].written
    assert files["/tmp1"].temporary and files["/tmp1"].renamed_to == ("/out",)
    assert files["/out"].written and not files["/out"].created
    assert files["/out"].renamed_from == ("/tmp1",)
    assert files["/scratch"].temporary and files["/scratch"].deleted


def test_states_at_end_listing_matches_lstat(tmp_path: Path) -> None:
    # Enough paths in one directory that it is listed instead of lstat'ed per path.
    from roargit.trace_files import state_at_end, states_at_end

    for i in range(40):
        (tmp_path / f"f{i}").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to("missing")
    (tmp_path / "dirlink").symlink_to("sub")
    names = [f"f{i}" for i in range(40)] + ["sub", "link", "dirlink", "gone", "f1/x"]
    paths = [str(tmp_path / n) for n in names] + ["/", str(tmp_path / "sub") + "/deep"]
    states = states_at_end(paths)
    assert states == {p: state_at_end(p) for p in paths}
    assert states[str(tmp_path / "link")] == "other" and states[str(tmp_path / "sub")] == "dir"
    assert states[str(tmp_path / "f1")] == "file" and states[str(tmp_path / "gone")] == "none"


_OPEN_FLAGS = [
    os.O_RDONLY,
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    os.O_RDWR,
    os.O_RDWR | os.O_CREAT,
    os.O_RDONLY | os.O_DIRECTORY,
    os.O_WRONLY | os.O_APPEND,
]
# Several fields naming one path (`/a/./b`, `/a//b`), escapes, other record kinds between.
_FIELDS = [b"/a/b", b"/a/./b", b"/a//b", b"/a/b/", b"/sp%20ace", b"/c", b"/d/../c"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(_OPEN_FLAGS),
            st.sampled_from([b"-", b"0", b"1"]),
            st.sampled_from(_FIELDS),
        )
        | st.tuples(st.sampled_from([b"unlink", b"rename"]), st.sampled_from(_FIELDS)),
        max_size=12,
    )
)
def test_opens_gathered_by_field_classify_as_rows(records: list[tuple[Any, ...]]) -> None:
    from roargit.trace_log import _classify, _parse

    lines = [b"roar-trace 2", b"start 1 1 1"]
    for r in records:
        if len(r) == 3:
            flags, existed, field = r
            lines.append(b"open 1 %x %s %s" % (flags, existed, field))
        elif r[0] == b"unlink":
            lines.append(b"unlink 1 1 " + r[1])
        else:
            lines.append(b"rename 1 0 /c " + r[1])
    data = b"\n".join([*lines, b"end code 0", b""])
    state = {"/a/b": "file", "/c": "none", "/sp ace": "dir"}.get
    opens: dict[str, int] = {}
    _, rows = _parse(data, opens)
    assert not any(row[0] == "open" for row in rows)
    assert _classify(rows, lambda p: state(p, "file"), opens=opens) == _classify(
        _parse(data)[1], lambda p: state(p, "file")
    )


def test_summary_file_records() -> None:
    log = parse_log(
        b"roar-trace 3\nstart 5 1 1\n"
        b"file 1 f /d/in\n"
        b"file 6 n /d/tmp\n"
        b"file 3 o /d/a%20link\n"
        b"file 2 f /d/./x\n"
        b"unlink 5 1 /d/tmp\n"
        b"end code 0\n"
    )
    assert log.finished and log.events[0].kind == "unlink"
    assert log.summarized == {"/d/in": 1, "/d/tmp": 6, "/d/a link": 3, "/d/x": 2}
    # STATE is taken as the tracer saw it, except for a path the reader normalised
    assert log.states == {"/d/in": "file", "/d/tmp": "none", "/d/a link": "other"}
    files = summarize(log.events, lambda p: "file", summarized=log.summarized, states=log.states)
    assert files["/d/in"].read and files["/d/in"].regular and not files["/d/in"].written
    assert files["/d/tmp"].temporary and files["/d/tmp"].deleted
    link = files["/d/a link"]
    assert link.read and link.written and not link.regular
    assert files["/d/x"].written and files["/d/x"].regular  # state_at_end asked


def test_summary_with_a_bad_state_is_refused() -> None:
    with pytest.raises(TraceLogCorrupt):
        parse_log(b"roar-trace 3\nfile 1 q /x\nend code 0\n")


def test_summary_files_records() -> None:
    """A `files` record: one folder's paths with the same BITS and STATE, and their STAT keys
    back to back (or `-`); read as that many `file` records."""
    k1, k2 = b"0" * 80, b"1" * 80
    log = parse_log(
        b"roar-trace 4\nstart 5 1 1\n"
        b"files 1 f /d/sub " + k1 + k2 + b" a b\n"
        b"files 3 o /d - link\n"
        b"end code 0\n"
    )
    assert log.summarized == {"/d/sub/a": 1, "/d/sub/b": 1, "/d/link": 3}
    assert log.states == {"/d/sub/a": "file", "/d/sub/b": "file", "/d/link": "other"}
    assert log.stat_keys == {"/d/sub/a": k1, "/d/sub/b": k2}
    for bad in (
        b"files 1 f /d " + k1 + b" a b",
        b"files 1 f /d - a%20b",
        b"files 1 f /d/. - a",
        b"files 1 f /d - a ..",
        b"files 1 f /d - .a b",
        b"files 1 f /d - a b/c",
        b"files 1 f /d%20e - a",
        b"files 1 f /d//e - a",
    ):
        with pytest.raises(TraceLogCorrupt):
            parse_log(b"roar-trace 4\n" + bad + b"\nend code 0\n")
