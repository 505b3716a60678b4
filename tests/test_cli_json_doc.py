"""docs/cli-json.md is the contract of `--json`: every shape it documents is checked, key by
key and type by type, against the real output of the installed `roar` on a real pipeline.

Each ```json example of the page is read as JSON once its placeholders are filled in (`{…}`,
`[…]` and `{artifact or run}` stand for objects documented elsewhere; `"…"` for any string).
An object of the output must have exactly the example's keys (a key the page calls optional
may be absent) with values of the example's types (null where the page's table or prose says
the value may be null); a list's items are each checked against the example's first item.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import digest, git, roar

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli-json.md"
REPRODUCE_DOC = DOC.parent / "reproduce.md"

#: Keys the page documents as present only sometimes ("only when some", "present only for").
OPTIONAL = {"unreadable", "not_stored", "type", "redirects", "created_dirs"}
#: Objects whose inner keys the page leaves open ("its inner keys are informative and may grow").
OPEN = {"environment"}
#: Keys the page's prose (not a table) says may be null.
NULLABLE_IN_PROSE = {"step", "session", "reproduction", "new_hash", "size", "producer"}

PREP = """\
import sys
rows = open("data/raw.csv").read().splitlines()
open("data/clean.csv", "w").write("\\n".join(r.upper() for r in rows) + "\\n")
"""
TRAIN = """\
data = open("data/clean.csv").read()
open("model.pkl", "w").write(f"model n={len(data)}\\n")
"""
NOTES = """\
open("notes.txt", "w").write("scratch\\n")
"""


def sections(text: str) -> dict[str, list[Any]]:
    """{heading: [each ```json example as a value]}."""
    out: dict[str, list[Any]] = {}
    heading = ""
    for block in re.split(r"^(#+ .*)$", text, flags=re.M):
        if block.startswith("#"):
            heading = block.lstrip("#").strip()
            continue
        for body in re.findall(r"```json\n(.*?)```", block, flags=re.S):
            out.setdefault(heading, []).extend(_examples(body))
    return out


def _examples(body: str) -> list[Any]:
    filled = (
        body.replace("{artifact or run}", "{}")
        .replace("{run}, …", "{}")
        .replace("{verification}, …", "{}")
        .replace("{…}", "{}")
        .replace("[…]", "[]")
    )
    try:
        return [json.loads(filled)]
    except json.JSONDecodeError:
        # Several one-line examples in one block.
        return [json.loads(line) for line in filled.splitlines() if line.strip()]


def nullable_keys(text: str) -> set[str]:
    """Keys whose table row says their value may be null."""
    found = set(NULLABLE_IN_PROSE)
    for row in re.findall(r"^\| (`[^|]*`) \| ([^|]*) \|", text, flags=re.M):
        keys, kind = row
        if "null" in kind:
            for key in re.findall(r"`([^`]*)`", keys):
                found.add(key.split(".")[-1])
    return found


def table_keys(text: str, heading: str) -> list[str]:
    """The keys in the first column of the tables under `heading` (to the next heading)."""
    start = re.search(rf"^#+ {re.escape(heading)}$", text, flags=re.M)
    assert start is not None, heading
    part = text[start.end() :].split("\n#", 1)[0]
    rows = re.findall(r"^\| (`[^|]*`) \|", part, flags=re.M)
    return [k for row in rows for k in re.findall(r"`([^`]*)`", row)]


def check(real: Any, doc: Any, where: str, nullable: set[str], key: str = "") -> None:
    """`real` has the shape of the documented example `doc`."""
    if doc is None or (real is None and key in nullable):
        return
    if isinstance(doc, dict):
        assert isinstance(real, dict), f"{where}: {real!r} is not an object"
        if not doc or key in OPEN or "…" in doc:
            return  # documented elsewhere ("…": "as above"), or open
        missing = set(doc) - set(real) - OPTIONAL
        extra = set(real) - set(doc)
        assert not missing, f"{where}: documented keys missing from the output: {missing}"
        assert not extra, f"{where}: keys the page does not document: {extra}"
        for k, v in doc.items():
            if k in real:
                check(real[k], v, f"{where}.{k}", nullable, k)
    elif isinstance(doc, list):
        assert isinstance(real, list), f"{where}: {real!r} is not a list"
        if doc:
            for i, item in enumerate(real):
                check(item, doc[0], f"{where}[{i}]", nullable, key)
    elif isinstance(doc, bool):
        assert isinstance(real, bool), f"{where}: {real!r} is not a boolean"
    elif isinstance(doc, int | float):
        assert isinstance(real, int | float) and not isinstance(real, bool), (
            f"{where}: {real!r} is not a number"
        )
        if isinstance(doc, int) and key != "duration_s":
            assert isinstance(real, int), f"{where}: {real!r} is not an integer"
    elif isinstance(doc, str):
        assert isinstance(real, str), f"{where}: {real!r} is not a string"


def roar_out(repo: Path, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
    proc = roar(repo, *args, rc=None)
    assert proc.returncode in ok, (args, proc.returncode, proc.stderr)
    return json.loads(proc.stdout)


@pytest.fixture
def pipeline(git_repo: Path) -> Path:
    repo = git_repo
    for name, text in (("prep.py", PREP), ("train.py", TRAIN), ("notes.py", NOTES)):
        (repo / name).write_text(text)
    git(repo, "add", "prep.py", "train.py", "notes.py")
    git(repo, "commit", "-q", "-m", "pipeline")
    (repo / "data").mkdir()
    (repo / "data" / "raw.csv").write_text("a,1\nb,2\n")
    roar(repo, "init")
    roar(repo, "run", "-q", "python", "prep.py")
    roar(repo, "run", "-q", "python", "train.py")
    # A verification of @2, so that run objects show one.
    roar(repo, "reproduce", "model.pkl", "--run", "-y")
    return repo


def test_every_documented_shape_matches_real_output(pipeline: Path) -> None:
    repo = pipeline
    text = DOC.read_text()
    docs = sections(text)
    nullable = nullable_keys(text)
    model = digest(repo / "model.pkl")

    def doc(heading: str, i: int = 0) -> Any:
        return docs[heading][i]

    artifact = roar_out(repo, "show", "model.pkl", "--json")
    check(artifact, doc("artifact"), "artifact", nullable)
    run = roar_out(repo, "show", "@2", "--json")
    check(run, doc("run"), "run", nullable)
    assert run["verifications"], "the pipeline's @2 was reproduced"
    for v in run["verifications"]:
        check(v, doc("verification"), "verification", nullable)
    for f in [*run["inputs"], *run["outputs"]]:
        check(f, doc("file entry (in a run's `inputs` / `outputs`)"), "file entry", nullable)

    lineage = roar_out(repo, "lineage", "model.pkl", "--json")
    check(lineage, doc("`roar lineage REF [--depth N] --json`"), "lineage", nullable)
    check(lineage["target"], doc("artifact"), "lineage.target", nullable)
    for r in lineage["runs"]:
        check(r, doc("run"), "lineage.runs[]", nullable)
    assert lineage["links"] and lineage["sources"]

    dag_doc = doc("`roar dag [REF] --json`")
    dag = roar_out(repo, "dag", "--json")
    check(dag, dag_doc, "dag", nullable)
    dag_ref = roar_out(repo, "dag", "model.pkl", "--json")
    check(dag_ref, doc("`roar dag [REF] --json`", 1), "dag REF", nullable)
    assert dag_ref["session"] is None and dag_ref["target"]["hash"] == model
    check(dag_ref["target"], doc("artifact"), "dag REF.target", nullable)
    session = roar_out(repo, "show", "--json")
    assert session == {"kind": "session", **dag}

    log = roar_out(repo, "log", "--json")
    assert len(log) >= 3  # the two steps and the reproduction's run
    check(log, doc("`roar log [-n N] --json`"), "log", nullable)
    assert any(e["step"] is None for e in log)  # the reproduction is no step of this session
    status = roar_out(repo, "status", "--json")
    check(status, doc("`roar status --json`"), "status", nullable)
    assert status["outputs"]

    ran = roar_out(repo, "run", "--json", "python", "notes.py")
    check(ran, doc("run"), "run --json", nullable)
    sync = roar_out(repo, "store", "sync", "--json")
    check(sync, doc("`roar store sync --json`"), "store sync", nullable)
    popped = roar_out(repo, "pop", "--json")
    check(popped, doc("`roar pop --json`"), "pop", nullable)
    assert popped["removed"] == ["notes.txt"]

    # A damaged blob in the local store: fsck finds it, --repair stores it again.
    blob = repo / ".git" / "roar" / "blobs" / "blake3" / model[:2] / model[2:4] / model
    os.chmod(blob, 0o644)
    blob.write_bytes(b"damaged")
    fsck_doc = doc("`roar fsck --json`")
    found = roar_out(repo, "fsck", "--json", ok=(1,))
    check(found, fsck_doc, "fsck", nullable)
    assert found["problems"]
    repaired = roar_out(repo, "fsck", "--repair", "--json", ok=(0, 1))
    check(repaired, fsck_doc, "fsck --repair", nullable)
    assert repaired["repaired"]

    reset = roar_out(repo, "reset", "--json")
    check(reset, doc("`roar reset --json`"), "reset", nullable)
    # After a reset, runs of the old session are no steps of the active one.
    assert roar_out(repo, "show", run["id"][:12], "--json")["step"] is None


def test_reproduce_and_get_shapes_match_real_output(pipeline: Path) -> None:
    """The same check for the shapes docs/reproduce.md documents."""
    repo = pipeline
    text = REPRODUCE_DOC.read_text()
    docs = sections(text)
    nullable = nullable_keys(text) | {"path", "copied_to", "new_run", "exit_code", "verification"}
    model = digest(repo / "model.pkl")
    plan = roar_out(repo, "reproduce", model[:12], "--json")
    check(plan, docs["The plan (`roar reproduce HASH --json`)"][0], "plan", nullable)
    assert plan["steps"][-1]["inputs"]
    report = roar_out(repo, "reproduce", model[:12], "--run", "-y", "--no-reuse", "--json")
    check(report, docs["The report (`roar reproduce HASH --run -y --json`)"][0], "report", nullable)
    check(
        report["plan"], docs["The plan (`roar reproduce HASH --json`)"][0], "report.plan", nullable
    )
    got = roar_out(repo, "get", model[:12], "-o", "copy.pkl", "--json")
    check(got, docs["`roar get HASH --json`"][0], "get", nullable)


def keys_in(value: Any) -> set[str]:
    """Every key of every object in `value`."""
    if isinstance(value, dict):
        return set(value).union(*(keys_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_in(v) for v in value))
    return set()


def test_every_table_names_keys_of_its_example() -> None:
    """The tables and the examples of the page agree: a key in a table's first column is a key
    of the example above it (a dotted key names a nested one)."""
    text = DOC.read_text()
    docs = sections(text)
    for heading, examples in docs.items():
        keys = table_keys(text, heading)
        names = keys_in(examples[0])
        for key in keys:
            leaf = key.split(".")[-1]
            assert leaf in names or key in OPTIONAL, f"{heading}: `{key}` is in no example"
