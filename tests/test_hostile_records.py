"""Records from another clone are untrusted: an attacker pushes crafted lineage to the shared
remote and store; a victim with runs of its own fetches it and uses every command.

For each variant: nothing is written outside the victim's repository (a snapshot of the
whole sandbox around it is compared), every command exits 0 or 1 with short messages and
never a traceback, nothing printed carries a raw control character, and the victim's own
runs (pushed and unpushed) are all still listed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from blake3 import blake3
from cli_helpers import git, roar
from hostile import fan, pack, plant, push_ledger, rid, run_entries, run_map

TRAIN = "import sys\nopen('model.txt', 'w').write(open('data.csv').read().upper())\n"
SECRET = b"attacker bytes\n"


class Sandbox(NamedTuple):
    root: Path  # everything below is watched, but the victim's repository and the store
    remote: Path
    store: Path
    victim: Path
    attacker: Path
    own_runs: list[str]  # the victim's runs, pushed and not


def ok(cwd: Path, *args: str) -> str:
    proc = roar(cwd, *args, rc=None)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every path under `root` (but `skip`) with its mode and size: a write outside shows."""
    seen: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in [*dirnames, *filenames]:
            st = os.lstat(here / name)
            seen[str((here / name).relative_to(root))] = (st.st_mode, st.st_size)
    return seen


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    root = tmp_path
    remote, store = root / "remote.git", root / "store"
    git(root, "init", "-q", "--bare", str(remote))
    victim = root / "a" / "b" / "c" / "victim"
    victim.mkdir(parents=True)
    git(victim, "init", "-q", "-b", "main")
    (victim / "train.py").write_text(TRAIN)
    (victim / "data.csv").write_text("x,y\n1,2\n")
    git(victim, "config", "--file", ".roarconfig", "roar.store.url", f"file://{store}")
    git(victim, "add", ".")
    git(victim, "commit", "-q", "-m", "pipeline")
    git(victim, "remote", "add", "origin", str(remote))
    git(victim, "push", "-q", "origin", "main")
    ok(victim, "init")
    ok(victim, "run", "-q", "python", "train.py")
    git(victim, "push", "-q", "origin", "refs/roar/ledger:refs/roar/ledger")
    (victim / "data.csv").write_text("x,y\n3,4\n")
    ok(victim, "run", "-q", "python", "train.py")  # not pushed
    own = [r["id"] for r in _log(victim)]
    assert len(own) == 2

    attacker = root / "attacker"
    git(root, "clone", "-q", str(remote), str(attacker))
    git(attacker, "fetch", "-q", "origin", "+refs/roar/ledger:refs/roar/ledger")
    return Sandbox(root, remote, store, victim, attacker, own)


def head(box: Sandbox) -> dict[str, Any]:
    """The code state fields of a run at the attacker's (pushed) HEAD."""
    return {
        "commit": git(box.attacker, "rev-parse", "HEAD"),
        "tree": git(box.attacker, "rev-parse", "HEAD^{tree}"),
    }


def _log(repo: Path) -> list[dict[str, Any]]:
    import json

    proc = roar(repo, "log", "--json", rc=None)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def put_in_store(box: Sandbox, data: bytes) -> str:
    digest = blake3(data).hexdigest()
    blob = box.store / "blake3" / digest[:2] / digest[2:4] / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return digest


def record_run(box: Sandbox, record: dict[str, Any]) -> tuple[str, bytes]:
    data = pack(record)
    plant(box.attacker, run_entries(data, record), message=f"run {rid(data)}")
    return rid(data), data


def output(path: str, digest: str, size: int = len(SECRET), **more: Any) -> dict[str, Any]:
    return {"path": path, "hash": digest, "size": size, **more}


# -- the variants: each plants something in the attacker's ledger, returns a hash to ask for --


def out_relative(box: Sandbox) -> str:
    digest = put_in_store(box, SECRET)
    record_run(box, run_map(["python", "train.py"], outputs=[output("../../../x", digest)]))
    return digest


def out_absolute(box: Sandbox) -> str:
    digest = put_in_store(box, SECRET)
    target = box.root / "abs-target" / "x"
    record_run(box, run_map(["python", "train.py"], outputs=[output(str(target), digest)]))
    return digest


def out_symlink_folder(box: Sandbox) -> str:
    (box.root / "outside").mkdir()
    os.symlink("../../../../outside", box.attacker / "linkdir")
    git(box.attacker, "add", "linkdir")
    git(box.attacker, "commit", "-q", "-m", "a data folder")
    git(box.attacker, "push", "-q", "origin", "main")
    git(box.victim, "pull", "-q", "--ff-only", "origin", "main")
    assert (box.victim / "linkdir").is_symlink()
    digest = put_in_store(box, SECRET)
    record_run(box, run_map(["python", "train.py"], outputs=[output("linkdir/x", digest)]))
    return digest


def manifest_escape(box: Sandbox) -> str:
    inner = put_in_store(box, SECRET)
    manifest = pack({"type": "manifest", "files": [["../../x", inner, len(SECRET)]]})
    digest = rid(manifest)
    plant(box.attacker, {f"manifests/{fan(digest)}/{digest}": manifest})
    out = output("features/", digest, kind="dir")
    record_run(box, run_map(["python", "train.py"], outputs=[out]))
    return digest


def input_escape(box: Sandbox) -> str:
    source = put_in_store(box, SECRET)
    model = put_in_store(box, b"model\n")
    record_run(
        box,
        run_map(
            ["python", "train.py"],
            inputs=[output("../../../../x", source)],
            outputs=[output("model.txt", model, 6)],
            **head(box),
        ),
    )
    return model


def cwd_absolute(box: Sandbox) -> str:
    model = put_in_store(box, b"model 2\n")
    record_run(
        box,
        run_map(
            ["python", "train.py"],
            cwd=str(box.root / "cwd-escape" / "deep"),
            outputs=[output("model.txt", model, 8)],
            **head(box),
        ),
    )
    return model


def escapes_in_argv(box: Sandbox) -> str:
    model = put_in_store(box, b"model 3\n")
    argv = ["sh", "-c", "echo x > f #\r   python train.py \x1b[2K\x1b]0;title\x07" + "y" * 300]
    record_run(
        box,
        run_map(
            argv,
            outputs=[output("model.txt", model, 8)],
            **head(box),
        ),
    )
    return model


def garbage_at_shared_run(box: Sandbox) -> str:
    """Garbage where the victim's pushed run lies, ground until its git object id sorts below
    the genuine record's (a union that kept the lower id chose the garbage)."""
    pushed = box.own_runs[-1]  # `roar log` lists newest first: the last one was pushed
    path = f"runs/{fan(pushed)}/{pushed}"
    genuine = git(box.attacker, "rev-parse", f"refs/roar/ledger:{path}")
    n = 0
    while True:
        garbage = b"\x00garbage %d" % n
        if hashlib.sha1(b"blob %d\0%s" % (len(garbage), garbage)).hexdigest() < genuine:
            break
        n += 1
    plant(box.attacker, {path: garbage})
    return ""


def runs_replaced_by_blob(box: Sandbox) -> str:
    plant(box.attacker, {"runs": b"nothing here"}, drop=("runs",))
    return ""


def descendant_drops_runs(box: Sandbox) -> str:
    plant(box.attacker, drop=("runs", "sessions", "artifacts"))
    return ""


def history_rewrite(box: Sandbox) -> str:
    tip = git(box.attacker, "rev-parse", "refs/roar/ledger")
    tree = git(box.attacker, "rev-parse", f"{tip}^{{tree}}")
    message = git(box.attacker, "log", "-1", "--format=%B", tip)
    rewritten = git(box.attacker, "commit-tree", tree, "-m", message)  # same records, no parent
    git(box.attacker, "update-ref", "refs/roar/ledger", rewritten)
    return ""


def id_mismatch(box: Sandbox) -> str:
    record = run_map(["python", "train.py"])
    data = pack(record)
    wrong = blake3(b"another record").hexdigest()
    plant(box.attacker, run_entries(data, record, wrong), message=f"run {wrong}")
    return ""


def truncated_msgpack(box: Sandbox) -> str:
    record = run_map(["python", "train.py"], outputs=[output("m.txt", "ab" * 32)])
    data = pack(record)
    run_id = rid(data)
    planted = {k: data[:-7] for k in run_entries(data, record, run_id)}
    plant(box.attacker, planted, message=f"run {run_id}")
    return "ab" * 32


def mistyped_field(box: Sandbox) -> str:
    record = run_map(["python", "train.py"], environment={"os": "linux"})
    record["outputs"] = [output("m2.txt", "cd" * 32)]
    record_run(box, record)
    return "cd" * 32


VARIANTS: list[Callable[[Sandbox], str]] = [
    out_relative,
    out_absolute,
    out_symlink_folder,
    manifest_escape,
    input_escape,
    cwd_absolute,
    escapes_in_argv,
    garbage_at_shared_run,
    runs_replaced_by_blob,
    descendant_drops_runs,
    history_rewrite,
    id_mismatch,
    truncated_msgpack,
    mistyped_field,
]


def commands(digest: str) -> Iterator[tuple[str, ...]]:
    yield ("log",)
    yield ("log", "--json")
    yield ("dag",)
    yield ("status",)
    yield ("show", "model.txt")
    if digest:
        yield ("show", digest[:12])
        yield ("get", digest[:12])
        yield ("get", digest[:12], "-o", "got")
        yield ("reproduce", digest[:12], "--plan")
        yield ("reproduce", digest[:12], "--run", "-y", "--no-reuse")
        yield ("reproduce", digest[:12], "--step-by-step", "--no-reuse")
        yield ("lineage", digest[:12])
        yield ("diff", digest[:12], "model.txt")
    yield ("run", "-q", "python", "train.py")  # recording still works


def check_output(args: tuple[str, ...], proc: subprocess.CompletedProcess[str]) -> None:
    said = proc.stdout + proc.stderr
    # diff(1)'s convention: 0 identical, 1 different, 2 trouble (a one-line error).
    allowed = (0, 1, 2) if args[0] == "diff" else (0, 1)
    assert proc.returncode in allowed, (args, proc.returncode, said)
    assert "Traceback" not in said and "internal error" not in said, (args, said)
    for bad in ("\r", "\x1b", "\x07"):
        assert bad not in said, (args, said)
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) <= 4, (args, proc.stderr)
    if proc.returncode == (2 if args[0] == "diff" else 1):
        assert errors and errors[-1].startswith("roar: "), (args, proc.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.__name__)
def test_victim_survives_hostile_records(sandbox: Sandbox, variant: Callable[..., str]) -> None:
    box = sandbox
    digest = variant(box)
    push_ledger(box.attacker)
    git(box.victim, "fetch", "-q", "origin")

    watched = (box.victim, box.store, box.remote)
    before = snapshot(box.root, watched)
    for args in commands(digest):
        proc = roar(box.victim, *args, stdin="n\n" * 5, rc=None)
        check_output(args, proc)
        after = snapshot(box.root, watched)
        assert after == before, (args, set(after.items()) ^ set(before.items()))

    listed = {r["id"] for r in _log(box.victim)}
    assert set(box.own_runs) <= listed, (box.own_runs, listed)
    logged = [r["id"] for r in _log(box.victim)]
    assert len(logged) == len(set(logged)), "a run is listed twice"
    assert "Traceback" not in roar(box.victim, "fsck", rc=None).stderr


def test_escaped_command_is_shown_whole_in_the_plan(sandbox: Sandbox) -> None:
    box = sandbox
    digest = escapes_in_argv(box)
    push_ledger(box.attacker)
    git(box.victim, "fetch", "-q", "origin")
    plan = roar(box.victim, "reproduce", digest[:12], "--plan", "--no-reuse", rc=None)
    assert plan.returncode == 0, plan.stderr
    flat = "".join(line.strip() for line in plan.stdout.splitlines())
    assert "\\r" in flat and "\\x1b" in flat and "y" * 300 in flat.replace(" ", "")
