"""The registry index on real git repositories: entries, shards, compare-and-swap updates."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roargit import codec
from roargit.errors import RecordCorrupt
from roargit.registry import index, scope
from roargit.registry.index import IndexEntry


def _entry(digest: str, **kw: object) -> IndexEntry:
    base = IndexEntry(digest, "acme/vision", "https://git.example/acme/vision.git",
                      "s3://bucket/roar/acme/vision", 42, 1_790_000_000, "alice")  # fmt: skip
    return base._replace(**kw)  # type: ignore[arg-type]


@pytest.fixture
def index_url(tmp_path: Path) -> str:
    bare = tmp_path / "index.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    return str(bare)


names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True).filter(lambda s: ".." not in s)


@given(
    digest=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    owner=names,
    project=names.filter(lambda s: not s.endswith(".git")),
    size=st.integers(0, 1 << 62),
    when=st.integers(0, 1 << 40),
    who=st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=40),
)
def test_entries_round_trip(digest: str, owner: str, project: str, size: int, when: int,
                            who: str) -> None:  # fmt: skip
    who = who if who.isprintable() else "x"
    e = _entry(digest, scope=f"{owner}/{project}", size=size, registered_at=when,
               registered_by=who)  # fmt: skip
    data = index.encode_entry(e)
    assert index.decode_entry(data, digest) == e
    assert index.encode_entry(index.decode_entry(data, digest)) == data


@pytest.mark.parametrize(
    "change",
    [
        {"hash": "ab" * 32},  # stored under another name
        {"scope": "../etc"},
        {"scope": "private"},
        {"size": -1},
        {"size": "12"},
        {"registered_at": True},
        {"repo": "https://x\x1b[31m"},
        {"registered_by": "a" * 5000},
    ],
)
def test_bad_entries_are_refused(change: dict[str, object]) -> None:
    digest = "cd" * 32
    body = {**_entry(digest)._asdict(), **change}
    with pytest.raises(RecordCorrupt):
        index.decode_entry(codec.encode(body), digest)


def test_corrupt_bytes_are_refused() -> None:
    with pytest.raises(RecordCorrupt):
        index.decode_entry(b"\xc1garbage", "cd" * 32)


def test_add_lookup_and_re_add(tmp_path: Path, index_url: str) -> None:
    work = index.work_repo(tmp_path / "work")
    a, b = "ab" + "01" * 31, "ab" + "02" * 31
    assert index.lookup(work, index_url, a) == []
    added = index.add(work, index_url, _entry(a))
    assert added.added and added.attempts == 1
    index.add(work, index_url, _entry(b, scope="acme/shared"))
    assert index.lookup(work, index_url, a) == [_entry(a)]
    assert {e.hash for e in index.lookup(work, index_url, "ab0101")} == {a}
    assert {e.hash for e in index.lookup(work, index_url, "ab0202")} == {b}
    # The first registration stays; a second one of the same hash changes nothing.
    again = index.add(work, index_url, _entry(a, scope="other/scope", registered_by="bob"))
    assert not again.added and again.entry == _entry(a)
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)"], cwd=index_url,
                          capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert refs == ["refs/roar/index/ab"]
    # A fresh machine (another work repository) sees the same.
    other = index.work_repo(tmp_path / "other")
    assert [e.hash for e in index.lookup(other, index_url, a)] == [a]


def test_bad_prefix(tmp_path: Path, index_url: str) -> None:
    work = index.work_repo(tmp_path / "work")
    for bad in ("abc", "xyz123", "a" * 65):
        with pytest.raises(index.BadPrefix):
            index.lookup(work, index_url, bad)


def _add_one(args: tuple[str, str, str]) -> bool:
    work, url, digest = args
    return index.add(index.work_repo(Path(work)), url, _entry(digest)).added


def test_concurrent_adds_to_one_shard_lose_nothing(tmp_path: Path, index_url: str) -> None:
    """Eight writers (separate processes and work repositories, as on eight machines), all in
    shard `ab`: every entry lands."""
    digests = [f"ab{i:062x}" for i in range(8)]
    jobs = [(str(tmp_path / f"work{i}"), index_url, d) for i, d in enumerate(digests)]
    with ProcessPoolExecutor(8) as pool:
        assert all(pool.map(_add_one, jobs))
    work = index.work_repo(tmp_path / "check")
    assert sorted(e.hash for e in index.lookup(work, index_url, "ab0000")) == sorted(digests)


def test_concurrent_adds_sharing_a_work_repository(tmp_path: Path, index_url: str) -> None:
    digests = [f"cd{i:062x}" for i in range(8)]
    work = str(tmp_path / "work")
    index.work_repo(Path(work))
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(_add_one, [(work, index_url, d) for d in digests]))
    assert len(index.lookup(Path(work), index_url, "cd0000")) == 8


def test_settings_and_derived_scopes(tmp_path: Path, index_url: str) -> None:
    work = index.work_repo(tmp_path / "work")
    assert index.read_settings(work, index_url) == {}
    text = "[scopes]\n\trepo = {scope}.git\n\tstore = s3://b/roar/{scope}\n\tnames = a/b c/d\n"
    tip = index.settings_commit(work, text)
    assert index.push_ref(work, index_url, tip, index.CONFIG_REF, None)
    settings = index.read_settings(work, index_url)
    found = scope.derive("acme/vision", settings, index_url)
    assert found.repo == str(Path(index_url).parent / "acme/vision.git")
    assert found.store == "s3://b/roar/acme/vision"
    assert scope.listed(settings) == ["a/b", "c/d"]
    http = scope.derive("acme/vision", settings, "https://roar.example.com/index.git")
    assert http.repo == "https://roar.example.com/acme/vision.git"
    # A lease on a ref that moved is refused: the compare-and-swap.
    other = index.settings_commit(work, text + "\tweb = https://roar.example.com\n")
    assert not index.push_ref(work, index_url, other, index.CONFIG_REF, None)
    assert index.push_ref(work, index_url, other, index.CONFIG_REF, tip)


@pytest.mark.parametrize("name", ["acme", "a/b/c", "../x", "a/..", "a/b.git", "-x/y", "a b/c"])
def test_bad_scope_names(name: str) -> None:
    with pytest.raises(scope.BadScope):
        scope.check_name(name)


def test_private_and_missing_scopes_refuse() -> None:
    with pytest.raises(scope.PrivateScope):
        scope.resolve(scope.Chosen("private", None, None), None, None)
    with pytest.raises(scope.NoScope):
        scope.resolve(scope.Chosen(None, None, None), None, None)
    with pytest.raises(scope.ScopeUnconfigured):
        scope.resolve(scope.Chosen("acme/vision", None, None), {}, "/x/index.git")
    explicit = scope.resolve(scope.Chosen("acme/vision", "/r.git", "file:///s"), None, None)
    assert explicit == scope.Scope("acme/vision", "/r.git", "file:///s")


def test_published_settings_round_trip(tmp_path: Path, index_url: str) -> None:
    work = index.work_repo(tmp_path / "work")
    store = 's3://bucket/roar#x;"y"\\z/{scope}'
    index.publish_settings(work, index_url, "{scope}.git", store, ["acme/b", "acme/a"], None)
    index.publish_settings(work, index_url, "{scope}.git", store, ["acme/b", "acme/a"], "https://w")
    settings = index.read_settings(index.work_repo(tmp_path / "fresh"), index_url)
    assert settings["scopes.store"] == store
    assert settings["scopes.names"] == "acme/a acme/b"
    assert settings["registry.web"] == "https://w"
    with pytest.raises(scope.BadScope):
        index.publish_settings(work, index_url, "{scope}.git", store, ["../x"], None)


@pytest.mark.parametrize(
    "item",
    [
        "not a map",
        {"hash": "ab" * 32},  # fields missing
        {**_entry("ab" * 32)._asdict(), "size": 1.5},
        {**_entry("ab" * 32)._asdict(), "scope": "../../x"},
        {**_entry("ab" * 32)._asdict(), "registered_by": "\x1b]0;owned\x07"},
        {**_entry("ab" * 32)._asdict(), "hash": "AB" * 32},
    ],
)
def test_entries_a_server_sends_pass_the_same_checks(item: object) -> None:
    from roargit.registry.remote import _entry_from_json

    with pytest.raises(RecordCorrupt):
        _entry_from_json(item)


def test_a_good_entry_from_a_server() -> None:
    from roargit.registry.remote import _entry_from_json

    e = _entry("ab" * 32)
    assert _entry_from_json(e.to_json()) == e


def test_a_lookup_asks_for_one_shard_ref(
    tmp_path: Path, index_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With git's protocol v2 the server lists only the shard asked for (ls-refs with a
    ref-prefix), however many shards the index has."""
    work = index.work_repo(tmp_path / "work")
    for first in ("ab", "cd", "ef"):
        index.add(work, index_url, _entry(first + "0" * 62))
    trace = tmp_path / "packets"
    monkeypatch.setenv("GIT_TRACE_PACKET", str(trace))
    monkeypatch.setenv("GIT_PROTOCOL_FROM_USER", "1")
    found = index.lookup(index.work_repo(tmp_path / "fresh"), f"file://{index_url}", "cd0000")
    assert [e.hash[:2] for e in found] == ["cd"]
    text = trace.read_text()
    assert "ref-prefix refs/roar/index/cd" in text
    listed = [ln for ln in text.splitlines() if "refs/roar/index/" in ln and "ref-prefix" not in ln]
    assert listed and all("refs/roar/index/cd" in ln for ln in listed), listed
