"""The pure parts of `roar diff`: command lines, environments, hunks, and the matching rule,
on plain records (the end-to-end scenarios are in test_diff_e2e.py)."""

from __future__ import annotations

from typing import Any

from ledger_helpers import hexid

from roargit.diff import _Compare, text_hunks
from roargit.diff_align import Lineage, _upstream_first, align
from roargit.diff_argv import argv_changes, file_keys, script_of, tokens
from roargit.records import ArtifactId, CodeState, FileRef, RunRecord, SessionId


def run(
    argv: str,
    ins: dict[str, str] | None = None,
    outs: dict[str, str] | None = None,
    step: int = 1,
    cwd: str = ".",
    env: dict[str, Any] | None = None,
) -> RunRecord:
    return RunRecord(
        argv=tuple(argv.split()),
        cwd=cwd,
        started_at=step,
        ended_at=step + 1,
        exit_code=0,
        status="ok",
        inputs=tuple(FileRef(p, ArtifactId(hexid(0, h)), 1) for p, h in (ins or {}).items()),
        outputs=tuple(FileRef(p, ArtifactId(hexid(0, h)), 1) for p, h in (outs or {}).items()),
        code=CodeState(commit=None, branch="main", dirty=False, tree=None),
        session=SessionId("s" * 64),
        step=step,
        environment=env or {},
    )


def lineage(runs: dict[str, RunRecord], top: str) -> Lineage:
    producer: dict[str, str] = {f.hash: rid for rid, r in runs.items() for f in r.outputs}
    lin = Lineage(dict(runs), [], top, producer)
    lin.order = _upstream_first(lin)
    return lin


# -- command lines ---------------------------------------------------------------------------


def test_paths_naming_the_steps_files_become_placeholders() -> None:
    r = run(
        "python train.py --data=out1/clean.csv --out out1/model.pkl --dir out1 --lr 0.1 ./x.csv",
        ins={"out1/clean.csv": "c", "x.csv": "x"},
        outs={"out1/model.pkl": "m"},
    )
    norms = [t.norm for t in tokens(r)]
    assert norms == [
        "python", "train.py", "--data={in}", "--out", "{out}", "--dir", "{dir}", "--lr", "0.1",
        "{in}",
    ]  # fmt: skip
    assert file_keys(r) == {
        "out1/clean.csv": "--data",
        "out1/model.pkl": "--out",
        "x.csv": "argument 2",
    }


def test_paths_are_resolved_from_the_runs_cwd_and_absolute_ones_by_suffix() -> None:
    r = run("python ../prep.py ../raw.csv /home/u/repo/sub/out.csv", ins={"raw.csv": "r"},
            outs={"sub/out.csv": "o"}, cwd="sub")  # fmt: skip
    assert [t.norm for t in tokens(r)][2:] == ["{in}", "{out}"]


def test_argv_changes_by_flag_and_position() -> None:
    a = run("python train.py --lr 0.1 --fast data.csv", ins={"data.csv": "d"})
    b = run("python train.py --lr 0.01 --epochs=3 --fast other.csv", ins={"other.csv": "e"})
    changes = [(c.what, c.a, c.b) for c in argv_changes(a, b)]
    assert changes == [("--lr", "0.1", "0.01"), ("--epochs", None, "3")]
    same_elsewhere = run("python train.py --lr 0.1 --fast in2/data.csv", ins={"in2/data.csv": "z"})
    assert argv_changes(a, same_elsewhere) == []
    assert script_of(a) == "python train.py"
    assert script_of(run("python3.11 -u -m pkg.train --x 1")) == "python -m pkg.train"
    assert script_of(run("gzip -k raw.csv", ins={"raw.csv": "r"})) == "gzip {in}"


def test_negative_numbers_are_values_not_flags() -> None:
    a = run("python t.py --shift -1")
    b = run("python t.py --shift -2")
    assert [(c.what, c.a, c.b) for c in argv_changes(a, b)] == [("--shift", "-1", "-2")]


# -- hunks ----------------------------------------------------------------------


def test_text_hunks_and_changed_lines() -> None:
    a = b"one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n"
    b = a.replace(b"two", b"TWO").replace(b"nine\n", b"nine\nnine and a half\n")
    out = text_hunks("f.py", a, b)
    assert out["lines"] == [[2, 2], [10, 10]]
    assert [line for h in out["hunks"] for line in h["lines"] if line[0] in "+-"] == [
        "-two", "+TWO", "+nine and a half",
    ]  # fmt: skip
    assert text_hunks("f.bin", b"\0a", b"\0b") == {"hunks": None, "note": "binary file"}


# -- the matching rule --------------------------------------------------------------------------


def _compare(la: Lineage, lb: Lineage, known: dict[str, str]) -> _Compare:
    cmp = _Compare(None, la, lb, align(la, lb, known))  # type: ignore[arg-type]
    cmp.run()
    return cmp


def test_steps_pair_through_the_wiring_into_other_folders() -> None:
    a = {
        "p": run("python prep.py raw.csv o1/clean.csv", {"raw.csv": "r"}, {"o1/clean.csv": "c"}),
        "t": run("python train.py o1/clean.csv o1/m", {"o1/clean.csv": "c"}, {"o1/m": "m1"}, 2),
    }
    b = {
        "P": run("python prep.py raw.csv o2/clean.csv", {"raw.csv": "r2"}, {"o2/clean.csv": "c2"}),
        "T": run("python train.py o2/clean.csv o2/m", {"o2/clean.csv": "c2"}, {"o2/m": "m2"}, 2),
    }
    la, lb = lineage(a, "t"), lineage(b, "T")
    cmp = _compare(la, lb, {hexid(0, "m1"): hexid(0, "m2")})
    assert cmp.pairing.a_to_b == {"t": "T", "p": "P"}
    [cause] = cmp.causes.items
    assert (cause.category, cause.what, cause.steps) == ("data", "raw.csv", ["@1"])
    kinds = [(q["kind"], q.get("path") or q["step"]) for q in cmp.consequences]
    assert kinds == [("artifact", "o2/clean.csv"), ("step", "@2"), ("artifact", "o2/m")]
    assert cmp.consequences[0]["a_path"] == "o1/clean.csv"


def test_a_removed_step_and_an_input_from_elsewhere() -> None:
    a = {
        "p": run("python prep.py raw.csv clean.csv", {"raw.csv": "r"}, {"clean.csv": "c"}),
        "d": run("python dedup.py clean.csv d.csv", {"clean.csv": "c"}, {"d.csv": "d"}, 2),
        "t": run("python train.py d.csv m", {"d.csv": "d"}, {"m": "m1"}, 3),
    }
    b = {
        "p": a["p"],
        "t2": run("python train.py clean.csv m", {"clean.csv": "c"}, {"m": "m2"}, 2),
    }
    cmp = _compare(lineage(a, "t"), lineage(b, "t2"), {hexid(0, "m1"): hexid(0, "m2")})
    [cause] = cmp.causes.items
    assert (cause.category, cause.what, cause.a) == (
        "pipeline", "step removed", "python dedup.py clean.csv d.csv",
    )  # fmt: skip
    assert [q["because"] for q in cmp.consequences] == [[1], [1]]


def test_nothing_recorded_differs_but_the_output_does() -> None:
    a = {"t": run("python t.py", {"x": "x"}, {"m": "m1"})}
    b = {"t2": run("python t.py", {"x": "x"}, {"m": "m2"}, 1)}
    cmp = _compare(lineage(a, "t"), lineage(b, "t2"), {hexid(0, "m1"): hexid(0, "m2")})
    [cause] = cmp.causes.items
    assert cause.category == "unexplained"
