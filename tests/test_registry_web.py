"""The web view inside `roar registry serve`, over HTTP on loopback: alice may read
acme/vision and acme/shared, bob only acme/shared. A reader sees the artifact, run, DAG and
download of a scope; anyone else learns that a hash exists (scope, who, when) and nothing
more, in any answer, which the access log shows."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cli_helpers import digest, git
from registry_helpers import (
    Server,
    User,
    all_repos,
    files_under,
    login,
    make_user,
    repo_state,
    roar_as,
    serving,
)
from test_web_browser import (
    CHROMIUM,
    DRIVER,
    browser,  # noqa: F401  (a fixture: pytest finds it by name)
    shot,
    wait_for,
)

CANARY = "canary_web_5d81c0e7a4"


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def get(server: Server, path: str, user: str | None = None) -> Reply:
    request = urllib.request.Request(server.url + path)
    if user is not None:
        pair = f"{user}:{server.tokens[user]}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with _OPENER.open(request, timeout=30) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        with e:
            return Reply(e.code, dict(e.headers), e.read())


class Site(NamedTuple):
    server: Server
    vision: str  # the artifact registered in acme/vision (alice only)
    vision_run: str
    shared: str  # registered in acme/shared (alice and bob), made from shared_src
    shared_src: str
    shared_run: str


def _made_by(user: User, repo: Path, path: str) -> str:
    shown = json.loads(roar_as(user, repo, "show", path, "--json").stdout)
    return str(shown["produced_by"][-1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("registry-web")
    for server in serving(base / "registry"):
        alice = make_user(base, "alice")
        login(alice, server)
        repo = base / "alice-repo"
        repo.mkdir()
        git(repo, "init", "-q")
        (repo / "emit.py").write_text("import sys\nopen(sys.argv[1], 'w').write(sys.argv[2])\n")
        (repo / "upper.py").write_text(
            "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read().upper())\n"
        )
        who = ["-c", "user.email=alice@example.com", "-c", "user.name=alice"]
        git(repo, *who, "add", "emit.py", "upper.py")
        git(repo, *who, "commit", "-q", "-m", "pipeline")
        roar_as(alice, repo, "run", "-q", "python", "emit.py", "vision.out", CANARY)
        roar_as(alice, repo, "run", "-q", "python", "emit.py", "shared.in", "hello")
        roar_as(alice, repo, "run", "-q", "python", "upper.py", "shared.in", "shared.out")
        roar_as(alice, repo, "scope", "use", "acme/vision")
        roar_as(alice, repo, "register", "vision.out", "-y")
        roar_as(alice, repo, "scope", "use", "acme/shared")
        roar_as(alice, repo, "register", "shared.out", "-y")
        yield Site(
            server,
            digest(repo / "vision.out"),
            _made_by(alice, repo, "vision.out"),
            digest(repo / "shared.out"),
            digest(repo / "shared.in"),
            _made_by(alice, repo, "shared.out"),
        )


def test_a_reader_sees_artifact_run_dag_and_bytes(site: Site) -> None:
    s = site.server
    before = {r: (repo_state(r), files_under(r)) for r in all_repos(s.repos)}
    home = get(s, "/ui/", "alice")
    assert home.status == 200 and "acme/vision" in home.text and "acme/shared" in home.text
    r = get(s, f"/ui/artifact/{site.vision}", "alice")
    assert r.status == 303
    assert r.headers["Location"] == f"/ui/scope/acme/vision/artifact/{site.vision}"
    page = get(s, r.headers["Location"], "alice")
    assert page.status == 200 and f"/ui/scope/acme/vision/run/{site.vision_run}" in page.text
    run = get(s, f"/ui/scope/acme/vision/run/{site.vision_run}", "alice")
    assert run.status == 200 and CANARY in run.text  # so its absence below means something
    dag = get(s, f"/ui/scope/acme/vision/dag?ref={site.vision}", "alice")
    assert dag.status == 200 and "<svg" in dag.text
    blob = get(s, f"/ui/scope/acme/vision/blob/{site.vision}", "alice")
    assert blob.status == 200 and blob.body == CANARY.encode()
    assert get(s, "/ui/scope/acme/vision/static/web.css", "alice").status == 200

    # The shared scope's two-step lineage, by prefix search, for bob too.
    r = get(s, f"/ui/search?q={site.shared[:10]}", "bob")
    assert r.headers["Location"] == f"/ui/scope/acme/shared/artifact/{site.shared}"
    dag = get(s, f"/ui/dag?ref={site.shared}", "bob")
    assert dag.headers["Location"].startswith("/ui/scope/acme/shared/dag?ref=")
    drawn = get(s, dag.headers["Location"], "bob")
    assert drawn.status == 200 and site.shared_src[:12] in drawn.text
    assert get(s, f"/ui/scope/acme/shared/run/{site.shared_run}", "bob").status == 200
    code = get(s, f"/ui/scope/acme/shared/code/{site.shared_run}", "bob")
    assert code.status == 200 and "upper.py" in code.text, code.text
    blob = get(s, f"/ui/scope/acme/shared/blob/{site.shared}", "bob")
    assert blob.body == b"HELLO"
    diff = get(s, f"/ui/diff?a={site.shared_src}&b={site.shared}", "bob")
    assert diff.headers["Location"].startswith("/ui/scope/acme/shared/diff?a=")
    assert get(s, diff.headers["Location"], "bob").status == 200
    # Reads don't write: no page left a file or a ref behind in the scope repositories.
    assert {r: (repo_state(r), files_under(r)) for r in all_repos(s.repos)} == before


def test_a_diff_across_two_readable_scopes(site: Site) -> None:
    s = site.server
    r = get(s, f"/ui/diff?a={site.vision}&b={site.shared}", "alice")
    assert r.status == 303, r.text
    assert r.headers["Location"].startswith("/ui/across/acme/vision/acme/shared/diff?a=")
    page = get(s, r.headers["Location"], "alice")
    assert page.status == 200 and "<h1>Diff</h1>" in page.text
    assert site.vision[:12] in page.text and site.shared[:12] in page.text
    run = get(s, f"/ui/across/acme/vision/acme/shared/run/{site.vision_run}", "alice")
    assert run.status == 200 and CANARY in run.text
    # Not for bob, who may read one of the two: the same 404 as the scope's own pages.
    for path in (
        r.headers["Location"],
        f"/ui/across/acme/shared/acme/vision/run/{site.vision_run}",
    ):
        refused = get(s, path, "bob")
        assert refused.status == 404 and CANARY not in refused.text
    assert get(s, f"/ui/diff?a={site.vision}&b={site.shared}", "bob").status == 404


def test_a_non_reader_learns_existence_only(site: Site) -> None:
    s = site.server
    log_before = s.log.read_text().count("\n")
    scoped = "/ui/scope/acme/vision"
    asked = {
        f"/ui/artifact/{site.vision}": 403,
        f"/ui/search?q={site.vision[:8]}": 403,
        f"/ui/search?q={site.vision_run[:8]}": 404,
        "/ui/search?q=vision.out": 404,
        f"/ui/run/{site.vision_run}": 404,
        f"/ui/dag?ref={site.vision}": 404,
        f"/ui/diff?a={site.vision}&b={site.shared}": 404,
        f"{scoped}/": 404,
        f"{scoped}/artifact/{site.vision}": 404,
        f"{scoped}/run/{site.vision_run}": 404,
        f"{scoped}/code/{site.vision_run}": 404,
        f"{scoped}/dag": 404,
        f"{scoped}/blob/{site.vision}": 404,
        f"{scoped}/search?q={site.vision[:8]}": 404,
    }
    for path, status in asked.items():
        r = get(s, path, "bob")
        assert r.status == status, (path, r.status, r.text)
        assert CANARY not in r.text, path
        # A run id is never shown unless the request itself named it (echoed back).
        assert site.vision_run not in r.text or site.vision_run in path, path
    home = get(s, "/ui/", "bob")
    assert "acme/shared" in home.text and "scope/acme/vision" not in home.text
    said = get(s, f"/ui/artifact/{site.vision}", "bob").text
    assert "registered in acme/vision by alice on 20" in said
    assert "you have no read access to it" in said

    # Without a token: existence still (the index is public), and a prompt to sign in.
    anon = get(s, f"/ui/artifact/{site.vision}")
    assert anon.status == 401 and "www-authenticate" in {k.lower() for k in anon.headers}
    assert "registered in acme/vision by alice" in anon.text and CANARY not in anon.text
    assert get(s, f"{scoped}/run/{site.vision_run}").status == 401
    assert get(s, "/ui/login").status == 401

    # The access log shows every one of bob's requests refused, none served from the scope.
    lines = s.log.read_text().splitlines()[log_before:]
    bobs = [ln for ln in lines if " bob " in ln and "/ui/" in ln]
    assert len(bobs) >= len(asked)
    vision = [ln for ln in bobs if "/ui/scope/acme/vision" in ln]
    assert vision and all(ln.rsplit(" ", 2)[1] == "404" for ln in vision), vision
    assert any(f"/ui/artifact/{site.vision}" in ln and '" 403 ' in ln for ln in bobs), bobs


def test_mounted_at_the_root_beside_git(site: Site) -> None:
    s = site.server
    text = s.config.read_text()
    s.config.write_text(text.replace("\tweb = ", "\tui = /\n\tweb = ", 1))
    try:
        r = get(s, f"/artifact/{site.shared}", "bob")
        assert r.headers["Location"] == f"/scope/acme/shared/artifact/{site.shared}"
        assert get(s, r.headers["Location"], "bob").status == 200
        assert get(s, f"/artifact/{site.vision}", "bob").status == 403
        assert json.loads(get(s, "/whoami", "bob").body) == {"user": "bob"}
        found = json.loads(get(s, f"/index/{site.vision}").body)
        assert found["entries"][0]["scope"] == "acme/vision"
    finally:
        s.config.write_text(text.replace("\tweb = ", "\tui = off\n\tweb = ", 1))
    assert get(s, "/ui/", "alice").status == 404  # off: no web view at all
    s.config.write_text(text)
    assert get(s, "/ui/", "alice").status == 200


def test_source_data_registered_as_bytes_alone(site: Site, tmp_path: Path) -> None:
    s = site.server
    alice = make_user(tmp_path, "alice")
    login(alice, s)
    repo = tmp_path / "data"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "raw.csv").write_text("a,b\n1,2\n")
    (repo / "read.py").write_text(
        "import sys\nopen(sys.argv[2], 'w').write(open(sys.argv[1]).read())\n"
    )
    roar_as(alice, repo, "run", "-q", "python", "read.py", "raw.csv", "copy.csv")
    roar_as(alice, repo, "scope", "use", "acme/shared")
    roar_as(alice, repo, "register", "raw.csv", "-y")
    raw = digest(repo / "raw.csv")
    page = get(s, f"/ui/artifact/{raw}", "bob")
    assert page.status == 200 and "its bytes alone" in page.text
    blob = get(s, f"/ui/scope/acme/shared/blob/{raw}", "bob")
    assert blob.body == b"a,b\n1,2\n"


# -- in a real browser -----------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


def _as(driver: Any, server: Server, user: str) -> None:
    """Every later request of the browser signs in as `user` (HTTP basic, the token as the
    password), as a browser does once its user answered the sign-in prompt."""
    pair = base64.b64encode(f"{user}:{server.tokens[user]}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {pair}"}}
    )


@needs_chromium
def test_in_a_browser_the_reader_walks_the_dag_and_the_other_sees_no_page(
    site: Site,
    browser: Any,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    s = site.server
    _as(browser, s, "alice")
    browser.get(f"{s.url}/ui/artifact/{site.vision}")
    wait_for(browser, "code.hash-full")
    assert browser.current_url.endswith(f"/ui/scope/acme/vision/artifact/{site.vision}")
    browser.get(f"{s.url}/ui/scope/acme/vision/dag?ref={site.vision}")
    wait_for(browser, "svg")
    assert CANARY in browser.page_source or "emit.py" in browser.page_source
    shot(browser, tmp_path, "registry-reader-dag")

    _as(browser, s, "bob")
    browser.get(f"{s.url}/ui/scope/acme/vision/run/{site.vision_run}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not here"
    assert CANARY not in browser.page_source and "emit.py" not in browser.page_source
    shot(browser, tmp_path, "registry-other-run")
    browser.get(f"{s.url}/ui/artifact/{site.vision}")
    assert "registered in acme/vision by alice" in browser.page_source
    assert CANARY not in browser.page_source
    shot(browser, tmp_path, "registry-other-artifact")
    refused = [ln for ln in s.log.read_text().splitlines() if " bob " in ln and "/run/" in ln]
    assert any(f"/ui/scope/acme/vision/run/{site.vision_run}" in ln and '" 404 ' in ln
               for ln in refused), refused  # fmt: skip
