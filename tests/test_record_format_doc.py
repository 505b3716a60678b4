"""docs/record-format.md is enough to write a ledger roargit reads.

Everything here is built from the document alone: a msgpack encoder written from its
"Encoding" rules (not roargit's codec), BLAKE3 for ids, and git plumbing (`hash-object`,
`mktree`, `commit-tree`, `update-ref`) for the ledger tree and its commits. roargit must then
read the records, give them the ids the document's rule gives, and write the very same bytes
for them itself.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest
from blake3 import blake3
from cli_helpers import git, roar

from roargit import folders, records
from roargit.ledger import Ledger
from roargit.repo import find_repo

# -- a msgpack writer, from the document's "Encoding" section ------------------------------


def pack(value: Any) -> bytes:
    """Canonical msgpack: keys sorted by their UTF-8 bytes, every value in its shortest form."""
    if value is None:
        return b"\xc0"
    if value is False:
        return b"\xc2"
    if value is True:
        return b"\xc3"
    if isinstance(value, int):
        if 0 <= value < 128:
            return bytes([value])
        if value >= 0:
            for code, fmt, end in ((0xCC, ">B", 8), (0xCD, ">H", 16), (0xCE, ">I", 32)):
                if value < 1 << end:
                    return bytes([code]) + struct.pack(fmt, value)
            return b"\xcf" + struct.pack(">Q", value)
        if value >= -32:
            return struct.pack(">b", value)
        for code, fmt, end in ((0xD0, ">b", 7), (0xD1, ">h", 15), (0xD2, ">i", 31)):
            if value >= -(1 << end):
                return bytes([code]) + struct.pack(fmt, value)
        return b"\xd3" + struct.pack(">q", value)
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        return _head(len(raw), 0xA0, 32, (0xD9, ">B", 1 << 8), (0xDA, ">H"), (0xDB, ">I")) + raw
    if isinstance(value, list):
        return _head(len(value), 0x90, 16, None, (0xDC, ">H"), (0xDD, ">I")) + b"".join(
            pack(v) for v in value
        )
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-8", "surrogateescape"))
        body = b"".join(pack(k) + pack(value[k]) for k in keys)
        return _head(len(value), 0x80, 16, None, (0xDE, ">H"), (0xDF, ">I")) + body
    raise TypeError(type(value).__name__)


def _head(
    n: int,
    fix: int,
    fix_end: int,
    small: tuple[int, str, int] | None,
    mid: tuple[int, str],
    big: tuple[int, str],
) -> bytes:
    if n < fix_end:
        return bytes([fix | n])
    if small is not None and n < small[2]:
        return bytes([small[0]]) + struct.pack(small[1], n)
    if n < 1 << 16:
        return bytes([mid[0]]) + struct.pack(mid[1], n)
    return bytes([big[0]]) + struct.pack(big[1], n)


def test_the_writer_follows_msgpack_where_the_document_says_it_does() -> None:
    value: Any
    for value in [0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63 - 1, -1, -32, -33, -128]:
        assert pack(value) == msgpack.packb(value)
    for value in [-129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63), "", "x" * 31]:
        assert pack(value) == msgpack.packb(value, use_bin_type=True)
    for value in [
        "x" * 32,
        "é" * 200,
        "y" * 70_000,
        list(range(20)),
        {str(i): i for i in sorted(range(20), key=str)},
    ]:
        assert pack(value) == msgpack.packb(value, use_bin_type=True)


# -- a ledger, from the document's "Where records live" section ----------------------------


def _id(data: bytes) -> str:
    return blake3(data).hexdigest()


class Tree(str):
    """A tree's git object id (an entry of mode 040000), as opposed to a blob's."""


def _blob(repo: Path, data: bytes) -> str:
    out = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=repo, input=data, capture_output=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().strip()


def _mktree(repo: Path, node: dict[str, Any]) -> str:
    rows = []
    for name, child in sorted(node.items()):
        if isinstance(child, dict):
            rows.append(f"040000 tree {_mktree(repo, child)}\t{name}")
        elif isinstance(child, Tree):
            rows.append(f"040000 tree {child}\t{name}")
        else:
            rows.append(f"100644 blob {child}\t{name}")
    out = subprocess.run(
        ["git", "mktree"],
        cwd=repo,
        input="".join(r + "\n" for r in rows).encode(),
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().strip()


def _put(root: dict[str, Any], path: str, oid: str) -> None:
    *folders_, name = path.split("/")
    node = root
    for part in folders_:
        node = node.setdefault(part, {})
    node[name] = oid


def _commit(repo: Path, tree: str, message: str, parent: str | None, when: int) -> str:
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    env = {"GIT_COMMITTER_DATE": f"{when} +0000", "GIT_AUTHOR_DATE": f"{when} +0000"}
    out = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **env}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Written:
    """What the test wrote by hand: the records' bytes and ids, and the ledger's tip."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        # Code: a real tree and commit for `code`, as a run in this repository would see.
        script = b"print('train')\n"
        self.script_blob = _blob(repo, script)
        self.code_tree = _mktree(repo, {"train.py": self.script_blob})
        self.code_commit = _commit(repo, self.code_tree, "code", None, 1_700_000_000)

        # File contents and a folder: ids are BLAKE3 of the bytes.
        self.raw = b"a,b\n1,2\n"
        self.model = b"weights"
        self.images = {"a.png": b"png", "b/c.png": b"other"}
        self.manifest = pack(
            {
                "type": "manifest",
                "v": 1,
                "files": [[p, _id(b), len(b)] for p, b in sorted(self.images.items())],
            }
        )
        self.manifest_id = _id(self.manifest)

        self.session = pack(
            {"type": "session", "v": 1, "created_at": 1_767_225_600_000_000_000,
             "clone": "doc-clone", "parent": None}
        )  # fmt: skip
        self.session_id = _id(self.session)
        self.run_map: dict[str, Any] = {
            "type": "run",
            "v": 1,
            "kind": "run",
            "argv": ["python", "train.py", "--lr", "1e-3"],
            "cwd": ".",
            "started_at": 1_767_225_601_000_000_000,
            "ended_at": 1_767_225_602_500_000_000,
            "exit_code": 0,
            "status": "ok",
            "inputs": [{"path": "data/raw.csv", "hash": _id(self.raw), "size": len(self.raw)}],
            "outputs": [
                {
                    "path": "model.bin",
                    "hash": _id(self.model),
                    "size": len(self.model),
                    "not_stored": "the store was unreachable",
                },
                {
                    "path": "out/imgs/",
                    "hash": self.manifest_id,
                    "size": sum(len(b) for b in self.images.values()),
                    "kind": "dir",
                },
            ],
            "code": {
                "commit": self.code_commit,
                "branch": "main",
                "dirty": False,
                "tree": self.code_tree,
                "inputs": [{"path": "train.py", "blob": self.script_blob}],
            },
            "session": self.session_id,
            "step": 1,
            "capture": "ptrace",
            "complete": True,
            "environment": {
                "python": {
                    "implementation": "CPython",
                    "version": "3.12.1",
                    "executable": "/usr/bin/python3",
                },
                "os": {"system": "Linux", "release": "6.8.0", "distro": "Ubuntu 24.04"},
                "arch": "x86_64",
                "cpu": {"model": "Xeon", "count": 16},
                "gpus": [{"name": "H100", "driver": "550.54", "memory_mib": 81_559}],
                "hostname": "box",
                "user": "ada",
                "env_vars": {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "8"},
                "packages": {"numpy": "2.1.0", "torch": "2.4.0"},
            },
            "unreadable": [
                {"path": "/secret/key", "access": "input", "size": -1, "reason": "denied"}
            ],
        }
        self.run = pack(self.run_map)
        self.run_id = _id(self.run)

        # The ledger: the session in a first commit, the run (and all its entries) in a second.
        sid, rid, mid = self.session_id, self.run_id, self.manifest_id
        session_blob, run_blob = _blob(repo, self.session), _blob(repo, self.run)
        root: dict[str, Any] = {}
        _put(root, f"sessions/{sid[:2]}/{sid}/session", session_blob)
        first = _commit(repo, _mktree(repo, root), f"session {sid}", None, 1_767_225_600)
        _put(root, f"runs/{rid[:2]}/{rid[2:4]}/{rid}", run_blob)
        _put(root, f"sessions/{sid[:2]}/{sid}/{rid[:2]}/{rid}", run_blob)
        for f, tag in [(f, "c") for f in self.run_map["inputs"]] + [
            (f, "p") for f in self.run_map["outputs"]
        ]:
            h = f["hash"]
            _put(root, f"artifacts/{h[:2]}/{h[2:4]}/{h}/{tag}.{rid}", run_blob)
            if f.get("kind") == "dir":
                key = _id(f["path"].rstrip("/").encode())
                _put(root, f"folders/{key[:2]}/{key}/{tag}.{rid}", run_blob)
        _put(root, f"manifests/{mid[:2]}/{mid[2:4]}/{mid}", _blob(repo, self.manifest))
        _put(root, f"code/{self.code_tree}", Tree(self.code_tree))
        self.tip = _commit(repo, _mktree(repo, root), f"run {rid}", first, 1_767_225_603)
        git(repo, "update-ref", "refs/roar/ledger", self.tip)


@pytest.fixture
def written(git_repo: Path) -> Written:
    return Written(git_repo)


def test_records_written_from_the_document_read_with_the_documents_ids(written: Written) -> None:
    run = records.decode(written.run, "run")
    session = records.decode(written.session, "session")
    assert isinstance(run, records.RunRecord) and isinstance(session, records.SessionRecord)
    # roargit's own canonical bytes are the document's, so the ids agree.
    assert records.identify(run) == (written.run_id, written.run)
    assert records.identify(session) == (written.session_id, written.session)
    entries = folders.decode_manifest(written.manifest, "m", digest=written.manifest_id)
    assert folders.encode_manifest(entries) == (written.manifest_id, written.manifest)

    assert run.argv == ("python", "train.py", "--lr", "1e-3")
    assert run.outputs[0].not_stored and run.outputs[1].kind == "dir"
    assert run.unreadable[0].size == -1
    assert run.environment["os"]["distro"] == "Ubuntu 24.04"
    assert session.parent is None and session.clone == "doc-clone"


def test_the_ledger_written_from_the_document_is_read_by_roargit(written: Written) -> None:
    led = Ledger(find_repo(written.repo))
    rid, sid, mid = written.run_id, written.session_id, written.manifest_id
    assert records.identify(led.run(rid))[0] == rid
    assert records.identify(led.session(sid))[0] == sid
    assert led.find_runs(rid[:8]) == [rid]
    assert led.session_runs(sid) == [rid]
    assert led.artifact_runs(_id(written.raw)) == ([], [rid])
    assert led.artifact_runs(_id(written.model)) == ([rid], [])
    assert led.folder_runs("out/imgs/") == ([rid], [])
    assert led.manifest(mid) == written.manifest
    assert list(led.history()) == [[rid], []]


def test_the_installed_roar_shows_and_lists_them(written: Written) -> None:
    rid = written.run_id
    out = roar(written.repo, "log", "--json", rc=None)
    assert out.returncode == 0, out.stderr
    [entry] = json.loads(out.stdout)
    assert entry["id"] == rid and entry["session"] == written.session_id
    assert entry["argv"] == written.run_map["argv"] and entry["exit_code"] == 0

    out = roar(written.repo, "show", rid[:12], "--json", rc=None)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["kind"] == "run" and shown["id"] == rid
    assert [f["hash"] for f in shown["outputs"]] == [_id(written.model), written.manifest_id]
    assert shown["code"]["tree"] == written.code_tree


def test_a_blob_written_by_the_document_layout_is_fetched(written: Written) -> None:
    digest = _id(written.model)
    where = written.repo / ".git" / "roar" / "blobs" / "blake3" / digest[:2] / digest[2:4]
    where.mkdir(parents=True)
    (where / digest).write_bytes(written.model)
    out = roar(written.repo, "get", digest[:12], "-o", "model-again.bin", rc=None)
    assert out.returncode == 0, out.stderr
    assert (written.repo / "model-again.bin").read_bytes() == written.model


def test_a_record_in_another_key_order_reads_under_its_own_id(written: Written) -> None:
    reordered = msgpack.packb(dict(reversed(list(written.run_map.items()))), use_bin_type=True)
    assert reordered != written.run
    run = records.decode(reordered, "run")
    assert records.identify(run) == (written.run_id, written.run)  # roargit writes canonically
