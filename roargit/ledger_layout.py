"""Where each record is filed in a ledger tree, and the entries that file it:

    runs/ab/cd/<run id>                  the run record (blob)
    artifacts/ab/cd/<hash>/p.<run id>    that run produced the artifact (same blob)
    artifacts/ab/cd/<hash>/c.<run id>    that run consumed it (ledgers written before input sets)
    artifacts/ab/cd/<hash>/s.<set id>    the artifact is in that input set (the set's blob)
    inputsets/ab/cd/<set id>/set         an input set: the artifact hashes some run read
    inputsets/ab/cd/<set id>/c.<run id>  a run that read exactly that set (the run's blob)
    sessions/ab/<session id>/session     the session record
    sessions/ab/<session id>/cd/<run id> a run of that session
    sessions/ab/<session id>/cd/i.<run id>  its entry in the session's index (records.StepIndex)
    manifests/ab/cd/<hash>               a folder artifact's manifest (blob)
    folders/ab/<path key>/p.<run id>     a run wrote the folder at that path (key: hash
    folders/ab/<path key>/c.<run id>       of the recorded path), to find it from a file
    code/<tree id>                       a code state the runs saw (tree), kept reachable
    verifications/ab/cd/<run id>/<id>    a reproduction's verification of that run

Consumers are filed by input set so that a run that reads what an earlier run read (the
same 20,000 files, the fiftieth time) adds one `c.` entry under the set, not one under each
artifact: an artifact's tree grows with the number of distinct sets that hold it, never with
the number of runs that read it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from roargit import records
from roargit.codec import record_id
from roargit.gitobjects import NewEntry as Entry
from roargit.records import RunRecord


def fanout(hexid: str) -> tuple[str, str]:
    return hexid[:2], hexid[2:4]


def folder_key(path: str) -> str:
    return record_id(path.rstrip("/").encode("utf-8", "surrogateescape"))


def input_set(hashes: Iterable[str]) -> tuple[str, bytes] | None:
    """(set id, bytes) of the input set of these artifact hashes: each once, sorted, each
    followed by a newline; the id is BLAKE3 of the bytes. None for no hashes."""
    unique = sorted(set(hashes))
    if not unique:
        return None
    data = "".join(h + "\n" for h in unique).encode("ascii")
    return record_id(data), data


def read_input_set(data: bytes) -> list[str] | None:
    """The hashes of an input set's bytes, or None when they are not one (each line 64
    lowercase hex, strictly ascending, at least one)."""
    if not data or len(data) % 65 or data[-1:] != b"\n":
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    hashes = text[:-1].split("\n")
    if any(len(h) != 64 or h.strip("0123456789abcdef") for h in hashes):
        return None
    if any(a >= b for a, b in itertools.pairwise(hashes)):
        return None
    return hashes


def run_entries(
    run_id: str,
    data: bytes,
    record: RunRecord,
    index: bool = True,
    *,
    set_filed: bool = False,
) -> list[Entry]:
    """The entries of a run; without `index`, none under artifacts/, inputsets/ or
    folders/ (a reproduction's run: it attests to the original, it is no producer of its
    bytes). With `set_filed`, the run's input set is in the ledger already (with its
    `s.` entry under each artifact): only the run's own `c.` entry under it is added."""
    entries = [
        Entry(("runs", *fanout(run_id), run_id), data),
        Entry(("sessions", record.session[:2], record.session, run_id[:2], run_id), data),
        step_index_entry(run_id, record),
    ]
    found = input_set(f.hash for f in record.inputs) if index else None
    if found is not None:
        set_id, set_data = found
        where = ("inputsets", *fanout(set_id), set_id)
        entries.append(Entry((*where, f"c.{run_id}"), data))
        if not set_filed:
            entries.append(Entry((*where, "set"), set_data))
            for h in read_input_set(set_data) or ():
                entries.append(Entry(("artifacts", *fanout(h), h, f"s.{set_id}"), set_data))
    for tag, files in (("c", record.inputs), ("p", record.outputs)) if index else ():
        for f in files:
            if tag == "p":
                entries.append(Entry(("artifacts", *fanout(f.hash), f.hash, f"p.{run_id}"), data))
            if f.kind == "dir":
                key = folder_key(f.path)
                entries.append(Entry(("folders", key[:2], key, f"{tag}.{run_id}"), data))
    if record.code.tree:
        entries.append(Entry(("code", record.code.tree), tree=record.code.tree))
    return entries


def step_index_entry(run_id: str, record: RunRecord) -> Entry:
    """The run's entry in its session's index: a few hundred bytes, read instead of the
    run's record by whoever numbers the session's steps."""
    where = ("sessions", record.session[:2], record.session, run_id[:2], f"i.{run_id}")
    return Entry(where, records.encode_step_index(records.StepIndex.of_run(run_id, record)))


def manifest_entry(digest: str, data: bytes) -> Entry:
    return Entry(("manifests", *fanout(digest), digest), data)
