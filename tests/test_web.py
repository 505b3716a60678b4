"""The web view, called as a WSGI server calls it: every page, the 4xx answers, hostile
records, reads that don't write, the exports and `roar ui` itself on loopback."""

from __future__ import annotations

import html
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cli_helpers import roar
from conftest import copy_repo
from web_pipeline import EVIL_ARG, recorded_pipeline

from roargit.repo import find_repo
from roargit.web.app import make_app
from roargit.web.layout import Graph, Node, place, runs_only, svg


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def call(app: Any, path: str, query: str = "", method: str = "GET", **env: Any) -> Reply:
    seen: list[Any] = []
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "HTTP_HOST": "127.0.0.1:8487",
        **env,
    }
    chunks = app(environ, lambda status, headers: seen.append((status, headers)))
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    status, headers = seen[0]
    return Reply(int(status.split()[0]), dict(headers), body)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return recorded_pipeline(tmp_path_factory, "web")


@pytest.fixture(scope="module")
def app(pipeline: tuple[Path, dict[str, str]]) -> Any:
    return make_app(find_repo(pipeline[0]))


@pytest.fixture
def ids(pipeline: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return pipeline[1]


@pytest.fixture
def repo_copy(pipeline: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    return copy_repo(pipeline[0], tmp_path / "repo")


# -- pages -----------------------------------------------------------------------------------


def test_home_lists_recent_runs_and_the_session(app: Any, ids: dict[str, str]) -> None:
    r = call(app, "/")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert f"/run/{ids['eval_b']}" in r.text
    assert "see its DAG" in r.text


def test_search_by_prefix_path_and_step(app: Any, ids: dict[str, str]) -> None:
    r = call(app, "/search", f"q={ids['metrics_b'][:8]}")
    assert r.status == 303
    assert r.headers["Location"] == f"/artifact/{ids['metrics_b']}"
    r = call(app, "/search", f"q={ids['eval_b'][:10].upper()}")
    assert (r.status, r.headers["Location"]) == (303, f"/run/{ids['eval_b']}")
    r = call(app, "/search", "q=%402")  # @2: the step's current run
    assert (r.status, r.headers["Location"]) == (303, f"/run/{ids['train_b']}")
    r = call(app, "/search", "q=model.pkl")  # a path: the bytes there now
    assert r.headers["Location"] == f"/artifact/{ids['model_b']}?path=model.pkl"


def test_search_failures_say_why(app: Any) -> None:
    r = call(app, "/search", "q=abc")
    assert r.status == 400 and "too short" in r.text
    r = call(app, "/search", "q=" + "0" * 12)
    assert r.status == 404 and "0" * 12 in r.text
    r = call(app, "/search", "q=no/such/file.csv")
    assert r.status == 404
    r = call(app, "/search")
    assert r.status == 200 and 'name="q"' in r.text


def test_search_for_a_file_no_run_read(repo_copy: Path) -> None:
    (repo_copy / "notes.txt").write_text("never read by a run\n")
    r = call(make_app(find_repo(repo_copy)), "/search", "q=notes.txt")
    assert r.status == 404 and "never recorded" in r.text


def test_an_ambiguous_prefix_lists_its_candidates(git_repo: Path) -> None:
    from blake3 import blake3
    from ledger_helpers import make_run

    from roargit.ledger import Ledger

    seen: dict[str, str] = {}
    for i in range(200_000):  # two digests sharing 6 hex digits (a birthday, not a search)
        digest = blake3(f"x{i}".encode()).hexdigest()
        if digest[:6] in seen:
            pair = (seen[digest[:6]], digest)
            break
        seen[digest[:6]] = digest
    roar(git_repo, "init")
    paths = find_repo(git_repo)
    Ledger(paths).import_records([make_run(1, outputs=pair[:1]), make_run(2, outputs=pair[1:])])
    r = call(make_app(paths), "/search", f"q={pair[0][:6]}")
    assert r.status == 400 and "ambiguous" in r.text
    for digest in pair:
        assert f'href="/artifact/{digest}"' in r.text


def test_artifact_page(app: Any, ids: dict[str, str]) -> None:
    digest = ids["metrics_b"]
    r = call(app, f"/artifact/{digest}")
    assert r.status == 200
    t = r.text
    assert digest in t and "metrics.json" in t
    assert f"/run/{ids['eval_b']}" in t  # its producer
    assert f"roar reproduce {digest} --run -y" in t
    assert f'href="/blob/{digest}?name=metrics.json"' in t
    assert f"/dag?ref={digest}" in t
    # an input: consumed by the run that read it
    r = call(app, f"/artifact/{ids['model_b']}")
    assert f"/run/{ids['eval_b']}" in r.text and f"/run/{ids['train_b']}" in r.text


def test_artifact_and_run_ids_are_checked(app: Any) -> None:
    assert call(app, "/artifact/" + "ab" * 32).status == 404
    assert call(app, "/run/" + "cd" * 32).status == 404
    assert call(app, "/artifact/xyz").status == 400
    assert call(app, "/run/abc123").status == 400
    assert call(app, "/artifact/" + "ab" * 32 + "/more").status == 404
    assert call(app, "/nothing-here").status == 404
    assert call(app, "/static/../app.py").status == 404


def test_run_page(app: Any, ids: dict[str, str]) -> None:
    r = call(app, f"/run/{ids['train_b']}")
    assert r.status == 200
    t = r.text
    assert "python train.py --data clean.csv --out model.pkl --lr 0.01" in t
    assert "exit status" in t and "ok" in t
    assert "clean.csv" in t and "model.pkl" in t
    assert f"/run/{ids['prep']}" in t  # the input links to the run whose write it read
    assert f"/code/{ids['train_b']}" in t
    assert "Environment" in t and "python" in t
    r = call(app, f"/run/{ids['failed']}")
    assert "failed" in r.text and "3 (failed)" in r.text


def test_code_page(app: Any, ids: dict[str, str]) -> None:
    r = call(app, f"/code/{ids['train_b']}")
    assert r.status == 200
    assert "pipeline" in r.text  # the commit's message, from git show


def test_code_page_of_a_dirty_tree_shows_the_snapshot_patch(git_repo: Path) -> None:
    (git_repo / "step.py").write_text("open('out.txt', 'w').write('1')\n")
    subprocess.run(["git", "add", "step.py"], cwd=git_repo, check=True)
    subprocess.run(["git", "commit", "-qm", "step"], cwd=git_repo, check=True)
    (git_repo / "step.py").write_text("open('out.txt', 'w').write('<b>2</b>')\n")
    roar(git_repo, "run", "python", "step.py")
    rid = roar(git_repo, "log", "-n", "1", "--json").stdout.split('"id": "')[1][:64]
    app = make_app(find_repo(git_repo))
    r = call(app, f"/run/{rid}")
    assert "uncommitted changes: snapshot tree" in r.text
    r = call(app, f"/code/{rid}")
    assert r.status == 200
    added = "+open(&#x27;out.txt&#x27;, &#x27;w&#x27;).write(&#x27;&lt;b&gt;2"
    assert f'<span class="add">{added}' in r.text
    assert '<span class="del">-open(' in r.text


def test_a_bug_is_a_500_page_with_the_traceback_in_the_log(app: Any) -> None:
    import io

    app_type: Any = type(app)

    class Broken(app_type):
        def context(self) -> Any:
            raise ZeroDivisionError("planted")

    log = io.StringIO()
    wsgi_env: dict[str, Any] = {"wsgi.errors": log}
    r = call(Broken(app.paths), "/dag", **wsgi_env)
    assert r.status == 500 and "planted" not in r.text
    assert "ZeroDivisionError: planted" in log.getvalue()


def test_session_dag_shows_every_step_artifact_and_mark(app: Any, ids: dict[str, str]) -> None:
    r = call(app, "/dag")
    assert r.status == 200
    t = r.text
    svgs = re.findall(r"<svg .*?</svg>", t, re.S)
    full = svgs[0]
    for key in ("prep_2", "train_b", "eval_b", "failed", "hostile"):
        assert f'data-ref="{ids[key]}"' in full
    assert full.count('class="node run') == 5
    for path in ("raw.csv", "clean.csv", "model.pkl", "metrics.json"):
        assert f">{path}</text>" in full
    assert "state-stale" in full and "· stale" in full
    assert "state-failed" in full
    assert full.count("<path class=") >= 8
    # the collapsed view: runs only
    assert 'class="node artifact' not in svgs[1] and svgs[1].count('class="node run') == 5


def test_lineage_dag_marks_target_and_lights_a_path(app: Any, ids: dict[str, str]) -> None:
    digest = ids["metrics_b"]
    r = call(app, "/dag", f"ref={digest}&focus={ids['train_b']}")
    assert r.status == 200
    t = r.text
    assert "Lineage of artifact" in t
    assert re.search(rf'class="node artifact[^"]*target[^"]*" href="/artifact/{digest}', t)
    assert 'class="dag dim"' in t  # lit by the server: works without the script
    assert re.search(rf'class="node run[^"]* hl" href="/run/{ids["train_b"]}', t)
    assert f'data-ref="{ids["failed"]}"' not in t  # not upstream of the metrics
    r = call(app, "/dag", "ref=" + "0" * 64)
    assert r.status == 404
    r = call(app, "/dag", "compact=1")
    assert 'data-view="full" hidden' in r.text


def test_diff_page_names_the_param_root_cause(app: Any, ids: dict[str, str]) -> None:
    r = call(app, "/diff", f"a={ids['eval_a']}&b={ids['eval_b']}")
    assert r.status == 200
    t = r.text
    first = re.search(r'<li class="cause (cat-\w+)" id="cause-1">(.*?)</li>', t, re.S)
    assert first is not None and first.group(1) == "cat-params"
    assert "--lr" in first.group(2) and "0.1" in first.group(2) and "0.01" in first.group(2)
    assert 'href="#cause-1"' in t  # consequences link to their cause
    a_svg, b_svg = re.findall(r"<svg .*?</svg>", t, re.S)
    for side, run in ((a_svg, ids["train_a"]), (b_svg, ids["train_b"])):
        assert re.search(rf'class="node run[^"]*cat-params[^"]*" href="/run/{run}"', side)
    assert re.search(rf'consequence[^"]*" href="/run/{ids["eval_b"]}"', b_svg)
    assert "<h3>code</h3>" in t and "no change" in t


def test_diff_form_and_bad_refs(app: Any, ids: dict[str, str]) -> None:
    assert call(app, "/diff").status == 200
    assert call(app, "/diff", f"a={ids['eval_a']}").status == 400
    r = call(app, "/diff", f"a={ids['eval_a']}&b=" + "0" * 10)
    assert r.status == 404
    r = call(app, "/diff", f"a={ids['eval_a']}&b={ids['eval_a']}")
    assert r.status == 200 and "Identical" in r.text


def test_blob_is_served_verified(app: Any, ids: dict[str, str], pipeline: Any) -> None:
    repo = pipeline[0]
    r = call(app, f"/blob/{ids['metrics_b']}", "name=metrics.json")
    assert r.status == 200
    assert r.body == (repo / "metrics.json").read_bytes()
    assert r.headers["Content-Disposition"] == 'attachment; filename="metrics.json"'
    assert r.headers["Content-Length"] == str(len(r.body))
    r = call(app, f"/blob/{ids['metrics_b']}", "name=../../etc/passwd%0d")
    assert r.headers["Content-Disposition"] == 'attachment; filename="_.._etc_passwd_"'
    assert call(app, "/blob/" + "ab" * 32).status == 404
    head = call(app, f"/blob/{ids['metrics_b']}", method="HEAD")
    assert head.status == 200 and head.body == b""


def test_a_corrupt_blob_is_never_sent(repo_copy: Path, ids: dict[str, str]) -> None:
    digest = ids["metrics_b"]
    stored = repo_copy / ".git/roar/blobs/blake3" / digest[:2] / digest[2:4] / digest
    assert stored.is_file()
    stored.chmod(0o644)
    stored.write_bytes(b'{"metric": 9999}')
    r = call(make_app(find_repo(repo_copy)), f"/blob/{digest}")
    assert r.status == 502 and b"9999" not in r.body
    assert "do not match" in r.text


def test_static_assets_and_methods(app: Any) -> None:
    css = call(app, "/static/web.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    js = call(app, "/static/web.js")
    assert js.status == 200 and b"DOMContentLoaded" in js.body
    assert call(app, "/static/other.js").status == 404
    r = call(app, "/", method="POST")
    assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"


def test_a_loopback_app_answers_only_to_its_own_host(pipeline: Any) -> None:
    app = make_app(find_repo(pipeline[0]), allowed_hosts=["127.0.0.1:8487"])
    assert call(app, "/").status == 200
    assert call(app, "/", HTTP_HOST="evil.example:8487").status == 421


def test_without_local_files_a_path_is_only_looked_up_in_the_records(
    pipeline: Any, ids: dict[str, str]
) -> None:
    app = make_app(find_repo(pipeline[0]), local_files=False)
    r = call(app, "/search", "q=model.pkl")  # the session's newest step that wrote it
    assert r.headers["Location"] == f"/artifact/{ids['model_b']}?path=model.pkl"
    assert call(app, "/search", "q=train.py").status == 404  # on disk, never hashed here
    assert call(app, "/search", f"q={ids['eval_b'][:8]}").status == 303


def test_mounted_under_a_prefix(app: Any, ids: dict[str, str]) -> None:
    r = call(app, "/search", f"q={ids['eval_b'][:8]}", SCRIPT_NAME="/ui")
    assert r.headers["Location"] == f"/ui/run/{ids['eval_b']}"
    r = call(app, "/dag", SCRIPT_NAME="/ui")
    assert 'href="/ui/static/web.css"' in r.text and f'href="/ui/run/{ids["eval_b"]}"' in r.text


# -- untrusted text, and reads that don't write ------------------------------------------------


def _assert_inert(body: str) -> None:
    assert "<script>alert" not in body
    assert "<img src=x" not in body
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", body), repr(
        re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", body)
    )


def test_hostile_records_are_rendered_escaped(app: Any, ids: dict[str, str]) -> None:
    rid = ids["hostile"]
    run = call(app, f"/run/{rid}")
    assert run.status == 200
    _assert_inert(run.text)
    assert html.escape("<script>alert(1)</script>") in run.text
    assert "\\x1b[31m" in run.text and "\\r" in run.text and "\\u202e" in run.text
    out = re.search(r'href="(/artifact/[0-9a-f]{64}\?path=[^"]+)"', run.text.split("Outputs")[1])
    assert out is not None
    path, _, query = html.unescape(out.group(1)).partition("?")
    art = call(app, path, query)
    assert art.status == 200 and "onerror=alert(2)" in html.unescape(art.text)
    pages = [
        art,
        call(app, "/"),
        call(app, "/dag"),
        call(app, "/dag", f"ref={rid}"),
        call(app, "/diff", f"a={ids['eval_b']}&b={rid}"),
        call(app, "/search", "q=" + EVIL_ARG.replace("\r", "%0d")),
        call(app, "/diff", "a=%3Cscript%3Ealert(1)%3C/script%3E&b=%1b"),
    ]
    for page in pages:
        _assert_inert(page.text)


def test_a_planted_record_with_hostile_environment_is_rendered_escaped(repo_copy: Path) -> None:
    """A record made without roargit's writers (as a fetched one may be): markup and control
    characters in its environment, host, packages and paths."""
    import hostile

    evil = "<script>alert(3)</script>\x1b]0;owned\x07\u202e"
    digest = "7" * 64
    record = hostile.run_map(
        ["python", evil],
        outputs=[{"path": f"{evil.replace('/', '')}.bin", "hash": digest, "size": 1}],
        environment={
            "hostname": evil,
            "user": evil,
            "packages": {"<img src=x onerror=alert(4)>": evil},
            "env_vars": {"CUDA_VISIBLE_DEVICES": evil},
            "python": {"version": evil},
        },
    )
    data = hostile.pack(record)
    run_id = hostile.rid(data)
    hostile.plant(repo_copy, hostile.run_entries(data, record))
    app = make_app(find_repo(repo_copy))
    run = call(app, f"/run/{run_id}")
    assert run.status == 200, run.text
    assert "CUDA_VISIBLE_DEVICES" in run.text and "&lt;script&gt;alert(3)" in run.text
    for page in (
        run,
        call(app, f"/artifact/{digest}"),
        call(app, "/dag", f"ref={run_id}"),
        call(app, "/"),
    ):
        assert page.status == 200
        _assert_inert(page.text)
        assert "<img src=x" not in page.text


def _snapshot(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file with its size and mtime, but the stat-keyed hash cache: hashing a path the
    user searched for may fill it (and SQLite's WAL files come and go with its connection),
    and a cache entry is no lineage state."""
    out = {}
    for folder, _dirs, files in os.walk(repo):
        for name in files:
            if name.startswith("hashcache.sqlite"):
                continue
            p = Path(folder) / name
            st = p.lstat()
            out[str(p.relative_to(repo))] = (st.st_size, st.st_mtime_ns)
    return out


def test_reads_dont_write(repo_copy: Path, ids: dict[str, str]) -> None:
    before = _snapshot(repo_copy)
    refs = subprocess.run(
        ["git", "for-each-ref"], cwd=repo_copy, capture_output=True, text=True
    ).stdout
    app = make_app(find_repo(repo_copy))
    for path, query in [
        ("/", ""),
        ("/search", "q=model.pkl"),
        ("/search", "q=%402"),
        (f"/artifact/{ids['model_b']}", "path=model.pkl"),
        (f"/run/{ids['train_b']}", ""),
        (f"/code/{ids['train_b']}", ""),
        ("/dag", ""),
        ("/dag", "ref=model.pkl"),
        ("/diff", f"a={ids['eval_a']}&b=metrics.json"),
        (f"/blob/{ids['model_b']}", ""),
    ]:
        assert call(app, path, query).status in (200, 303), (path, query)
    assert _snapshot(repo_copy) == before
    after = subprocess.run(["git", "for-each-ref"], cwd=repo_copy, capture_output=True, text=True)
    assert after.stdout == refs


# -- the layout ------------------------------------------------------------------------------------


def _chain(n: int) -> Graph:
    nodes = []
    edges = []
    for k in range(n):
        nodes.append(Node(f"r:{k}", "run", str(k), f"@{k}", "cmd", f"/run/{k}", "t"))
        nodes.append(Node(f"a:{k}", "artifact", str(k), f"f{k}", "h", f"/a/{k}", "t"))
        edges.append((f"r:{k}", f"a:{k}"))
        if k:
            edges.append((f"a:{k - 1}", f"r:{k}"))
    return Graph(nodes, edges)


def test_layout_runs_left_to_right_and_keeps_a_chain_straight() -> None:
    placed = place(_chain(50))
    xs = [x for x, _y in placed.xy]
    assert xs == sorted(xs) and len(set(xs)) == 100
    assert {y for _x, y in placed.xy} == {placed.xy[0][1]}
    compact = place(runs_only(_chain(50)))
    assert len(compact.graph.nodes) == 50 and len(compact.edges) == 49


def test_layout_survives_cycles_and_self_loops() -> None:
    nodes = [Node(k, "run", k, k, "", "#", k) for k in ("r:a", "r:b", "r:c")]
    graph = Graph(nodes, [("r:a", "r:b"), ("r:b", "r:a"), ("r:c", "r:c"), ("r:b", "r:x")])
    placed = place(graph)
    assert len(placed.xy) == 3 and len(placed.edges) == 2
    assert svg(placed, label="cyclic").count("<path") == 2


def test_long_edges_run_in_lanes_clear_of_every_node() -> None:
    import random

    from roargit.web.layout import NODE_H

    rng = random.Random(3)
    nodes = [Node(f"a:s{k}", "artifact", "", f"s{k}", "", "#", "") for k in range(6)]
    edges = []
    made = [n.key for n in nodes]
    for r in range(40):
        nodes.append(Node(f"r:{r}", "run", "", f"@{r}", "", "#", ""))
        edges += [(a, f"r:{r}") for a in rng.sample(made[-12:], rng.randint(1, 3))]
        for o in range(rng.randint(1, 2)):
            nodes.append(Node(f"a:{r}.{o}", "artifact", "", "", "", "#", ""))
            edges.append((f"r:{r}", f"a:{r}.{o}"))
            made.append(f"a:{r}.{o}")
    placed = place(Graph(nodes, edges))
    lanes = [seg for route in placed.routes for seg in route]
    assert lanes  # some edges skip columns
    for left, _right, y in lanes:
        for x, top in placed.xy:
            if x == left:
                assert not top <= y <= top + NODE_H, (left, y)


def test_a_200_step_dag_page_renders_in_under_a_second(tmp_path: Path, git_repo: Path) -> None:
    """The figure itself is measured by benchmarks/bench_web.py; this keeps it from rotting
    by an order of magnitude."""
    from benchmarks.bench_web import build_chain

    roar(git_repo, "init")
    build_chain(git_repo, 200)
    app = make_app(find_repo(git_repo))
    t = time.perf_counter()
    r = call(app, "/dag")
    took = time.perf_counter() - t
    assert r.status == 200 and r.text.count('class="node run') == 400  # full and compact
    assert took < 5, took


# -- exports and `roar ui` -----------------------------------------------------------------------


def _self_contained(page: str) -> None:
    assert "<style>" in page and "<script>" in page and "<svg " in page
    assert not re.search(r'(src|href)="(https?:|//|/)', page)
    assert '<link rel="stylesheet"' not in page


def _links_land(page: str) -> None:
    """Every in-page link has one place to land."""
    anchors = re.findall(r' id="([^"]+)"', page)
    assert len(anchors) == len(set(anchors))
    for target in set(re.findall(r'href="#([^"]+)"', page)) - {"main"}:
        assert target in anchors, target


def test_dag_and_diff_export_one_self_contained_file(repo_copy: Path, ids: dict[str, str]) -> None:
    out = repo_copy / "dag.html"
    roar(repo_copy, "dag", "--html", str(out))
    page = out.read_text()
    _self_contained(page)
    _assert_inert(page)
    anchor = ids["train_b"][:16]
    assert f'href="#run-{anchor}"' in page and f'id="run-{anchor}"' in page
    _links_land(page)
    proc = roar(repo_copy, "diff", ids["eval_a"], ids["eval_b"], "--html", "diff.html", rc=None)
    assert proc.returncode == 1, proc.stderr  # different, as without --html
    page = (repo_copy / "diff.html").read_text()
    _self_contained(page)
    assert re.search(r'<li class="cause cat-params" id="cause-1">', page)
    _links_land(page)
    roar(repo_copy, "dag", "metrics.json", "--html", "lineage.html")
    assert "Lineage of artifact" in (repo_copy / "lineage.html").read_text()
    assert not list(repo_copy.glob(".*.tmp"))


def test_roar_ui_serves_on_loopback(repo_copy: Path, ids: dict[str, str]) -> None:
    proc = subprocess.Popen(
        ["roar", "ui", "--no-browser", "--port", "0"],
        cwd=repo_copy,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url is not None, line + (proc.stderr.read() if proc.stderr else "")
        with urllib.request.urlopen(url.group(0) + f"run/{ids['eval_b']}", timeout=10) as resp:
            assert resp.status == 200
            assert b"eval.py" in resp.read()
        with urllib.request.urlopen(url.group(0) + "static/web.js", timeout=10) as resp:
            assert resp.status == 200
        request = urllib.request.Request(url.group(0), headers={"Host": "rebound.example"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 421
        err.value.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_roar_ui_says_when_its_port_is_taken(repo_copy: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = roar(repo_copy, "ui", "--no-browser", "--port", str(port), rc=None)
    assert proc.returncode == 1
    assert f"port {port} is in use" in proc.stderr
