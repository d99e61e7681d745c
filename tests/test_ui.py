"""The mesh map: ``/_xio/map`` (xio/node/meshmap.py) and the page at ``/_xio/ui`` (xio/node/ui).

Four ways: the snapshot and the records' ``ext["rtt"]``, pure; the router's pages, asked as
loopback and as other addresses; the page's files found in a built package, as a wheel holds
them; and the page itself in headless Chromium (tests/cdp.py) over a real three-node mesh,
one of whose nodes is named like markup. The screenshot is saved where the test prints
($XIO_ARTIFACTS, else tests/artifacts/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import xio
from xio.node import Node, NodeConfig
from xio.node.clientjs import SCRIPTS
from xio.node.meshmap import MAX_RTT_ENTRIES, MAX_RTT_US, RTT_EXT, mesh_map, rtt_ext, rtt_of
from xio.node.ui import ASSETS, asset, prefers_html
from xio.peering.identity import Identity
from xio.peering.records import Record, parse_record
from xio.server import WSGIApp
from xio.testing import TestClient

from .cdp import Chromium, chromium_path
from .conftest import ROOT
from .http_wire import in_thread
from .mesh import call, wait_for

NOW = 1_700_000_000_000
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
HOSTILE = "<img src=x onerror=\"document.title='pwned';window.pwned=1\">"
ARTIFACTS = Path(os.environ.get("XIO_ARTIFACTS") or ROOT / "tests" / "artifacts")


def record(identity, links=(), apps=(), ext=(), name="n", seq=1, issued=NOW) -> Record:
    return Record.build(identity, seq, issued, 60_000, name, "1.0", ["http://h:1"], links,
                        apps, ext).record  # fmt: skip


# -- the snapshot, pure -----------------------------------------------------------------------


def test_rtt_ext_carries_the_measured_links_in_microseconds_within_its_bounds():
    peers = sorted(Identity.generate().node_id for _ in range(MAX_RTT_ENTRIES + 3))
    rtts = {peer: 0.0015 for peer in peers}
    rtts[peers[0]] = None  # not measured yet
    rtts[peers[1]] = float("nan")
    rtts[peers[2]] = 3600.0  # over MAX_RTT_US: no RTT
    value = rtt_ext(rtts)
    assert [peer for peer, _ in value] == peers[3 : 3 + MAX_RTT_ENTRIES]  # sorted, capped
    assert {micros for _, micros in value} == {1500}


def test_a_record_with_every_rtt_it_may_carry_is_accepted_by_its_receivers():
    # A map of over 16 entries anywhere in a record is malformed to a version-1 decoder: the
    # RTTs are an array of pairs, so a node of 64 measured links is still heard.
    origin = Identity.generate()
    peers = sorted(Identity.generate().node_id for _ in range(MAX_RTT_ENTRIES))
    signed = Record.build(origin, 1, NOW, 60_000, "hub", "1.0", [], dict.fromkeys(peers, 1),
                          {}, {RTT_EXT: rtt_ext(dict.fromkeys(peers, 0.002))})  # fmt: skip
    received = parse_record(signed.body, signed.signature, NOW)
    assert rtt_of(received) == dict.fromkeys(peers, 2000)


def test_a_record_carries_its_rtts_and_the_map_shows_them_as_of_that_record():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    ids = a.node_id, b.node_id, c.node_id
    records = [
        record(a, {ids[1]: 1}, name="a"),
        record(b, {ids[0]: 1, ids[2]: 3}, ext={RTT_EXT: rtt_ext({ids[2]: 0.004})}, name="b"),
        record(c, {ids[1]: 3}, {"shop": "a shop"}, name="c", issued=NOW - 2500),
    ]
    snapshot = mesh_map(ids[0], records, {ids[1]: 0.0012}, NOW, reachable=ids)
    order = [node["id"] for node in snapshot["nodes"]]
    assert order == [ids[0], *sorted(ids[1:])]  # this node first, then by id
    assert snapshot["nodes"][0]["is_self"]
    shop = next(node for node in snapshot["nodes"] if node["name"] == "c")
    assert (shop["apps"], shop["age_s"], shop["urls"]) == (["shop"], 2.5, ["http://h:1"])
    links = {frozenset((link["a"], link["b"])): link for link in snapshot["links"]}
    assert len(links) == 2 == len(snapshot["links"])  # each link once, though both ends list it
    ours, theirs = links[frozenset(ids[:2])], links[frozenset(ids[1:])]
    assert (ours["rtt_ms"], ours["rtt_source"], ours["both_ends"]) == (1.2, "session", True)
    assert (theirs["rtt_ms"], theirs["rtt_source"], theirs["cost"]) == (4.0, "record", 3)


@pytest.mark.parametrize(
    "bad",
    [
        {"PEER": 10},  # a map, not an array of pairs
        "PEER",
        [["PEER", 10, 1]],
        [["not-a-node-id", 10]],
        [["PEER", -1]],
        [["PEER", MAX_RTT_US + 1]],
        [["PEER", 1.5]],  # a float
        [["PEER", True]],
        [["STRANGER", 10]],  # a node the record lists no link to
        [["PEER", 10], ["PEER", 11]],  # a repeat
        [["PEER", 10], ["EXTRA", 10]],  # one bad entry spoils the lot
    ],
)
def test_a_malformed_rtt_in_a_record_is_ignored_and_the_link_shows_its_cost(bad):
    a, b = Identity.generate(), Identity.generate()
    names = {"PEER": b.node_id, "STRANGER": Identity.generate().node_id, "EXTRA": "x" * 32}

    def named(value):
        if isinstance(value, list):
            return [named(item) for item in value]
        if isinstance(value, dict):
            return {names.get(k, k): v for k, v in value.items()}
        return names.get(value, value)

    signed = Record.build(a, 1, NOW, 60_000, "n", "1.0", [], {b.node_id: 2}, {},
                          {RTT_EXT: named(bad)})  # fmt: skip
    remote = parse_record(signed.body, signed.signature, NOW)  # valid: ext is free-form
    assert rtt_of(remote) == {}
    snapshot = mesh_map(Identity.generate().node_id, [remote], {}, NOW)
    (link,) = snapshot["links"]
    assert (link["rtt_ms"], link["cost"], link["both_ends"]) == (None, 2, False)


def test_too_many_rtts_in_a_record_are_ignored():
    a = Identity.generate()
    peers = sorted(Identity.generate().node_id for _ in range(MAX_RTT_ENTRIES + 1))
    remote = record(a, dict.fromkeys(peers, 1), ext={RTT_EXT: [[p, 5] for p in peers]})
    assert rtt_of(remote) == {}


@pytest.mark.parametrize(
    ("accept", "html"),
    [(BROWSER, True), ("text/html", True), ("*/*", False), (None, False), ("", False),
     ("application/json", False), ("application/json, text/html;q=0.5", False),
     ("text/html;q=0", False), ("text/html;q=bogus", False)],
)  # fmt: skip
def test_only_a_client_that_prefers_html_gets_the_page(accept, html):
    assert prefers_html(accept) is html


def test_the_page_writes_data_as_text_never_as_markup():
    script = asset("ui.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


# -- the router's pages -----------------------------------------------------------------------


def shop_app() -> xio.App:
    app = xio.app("shop")

    @app.bind("www")
    def home(req):
        """The shop's front page."""
        return {"shop": "open"}

    return app


def client_at(node: Node, address: str) -> TestClient:
    """Ask ``node``'s HTTP front as if the TCP peer were ``address``."""
    wsgi = WSGIApp(node.router.handle)
    return TestClient(lambda environ, start: wsgi({**environ, "REMOTE_ADDR": address}, start))


@pytest.fixture
def lone_node(tmp_path):
    def build(**options) -> Node:
        config = NodeConfig(name="lone", host="127.0.0.1", port=0, mdns=False, **options)
        return Node(config, {"shop": shop_app()})

    return build


def test_the_page_and_its_files_are_served_with_their_types_to_anyone(lone_node):
    outsider = client_at(lone_node(), "10.0.0.5")  # static: no data of the mesh in them
    for name, path in [("index.html", "/_xio/ui"), ("ui.js", "/_xio/ui/ui.js"),
                       ("ui.css", "/_xio/ui/ui.css")]:  # fmt: skip
        response = outsider.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Type"] == ASSETS[name]
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.content == asset(name) or response.text == asset(name).decode()
    page = outsider.get("/_xio/ui")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert outsider.get("/_xio/ui/../node").status in (403, 404)
    assert outsider.get("/_xio/ui/app.py").status == 404


def test_the_map_is_an_admin_page(lone_node, tmp_path):
    node = lone_node()
    assert client_at(node, "10.0.0.5").get("/_xio/map").status == 403
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    guarded = lone_node(admin_token_file=token)
    assert client_at(guarded, "127.0.0.1").get("/_xio/map").status == 401
    bearer = {"Authorization": "Bearer t0ken"}
    assert client_at(guarded, "10.0.0.5").get("/_xio/map", headers=bearer).status == 200


def test_the_root_is_the_page_for_an_admins_browser_and_json_for_everyone_else(lone_node):
    node = lone_node()
    browser = client_at(node, "127.0.0.1").get("/", headers={"Accept": BROWSER})
    assert browser.status == 200
    assert browser.headers["Content-Type"].startswith("text/html")
    assert b"/_xio/ui/ui.js" in asset("index.html")
    assert "Accept" in browser.headers["Vary"]  # a cache must not hand the page to curl
    curl = client_at(node, "127.0.0.1").get("/", headers={"Accept": "*/*"})
    assert curl.headers["Content-Type"].startswith("application/json")
    assert "node" in curl.json() and "apps" in curl.json()
    assert "Accept" in curl.headers["Vary"]
    outsider = client_at(node, "10.0.0.5").get("/", headers={"Accept": BROWSER})
    assert outsider.headers["Content-Type"].startswith("application/json")  # not an admin
    assert outsider.json() == {"node": {"name": "lone"}, "apps": ["shop"]}  # no hosts


def test_the_map_of_a_live_mesh_holds_its_nodes_links_and_measured_rtts(in_process_mesh):
    fast = {"record_lifetime": 3.0}  # re-originated every second: RTTs reach the records soon
    a = in_process_mesh.start("a", **fast)
    b = in_process_mesh.start("b", peers=[a], **fast)
    c = in_process_mesh.start("c", peers=[b], apps=[shop_app()], **fast)

    def complete() -> bool:
        snapshot = a.mesh_map()
        return (
            len(snapshot["nodes"]) == 3
            and len(snapshot["links"]) == 2
            and all(link["rtt_ms"] is not None for link in snapshot["links"])
        )

    wait_for(complete, "a's map to hold 3 nodes and 2 measured links")
    answer = call(a, "GET", "/_xio/map")
    assert answer.status == 200
    snapshot = answer.json()
    names = {node["id"]: node["name"] for node in snapshot["nodes"]}
    assert names == {a.id: "a", b.id: "b", c.id: "c"}
    sources = {frozenset((names[link["a"]], names[link["b"]])): link["rtt_source"]
               for link in snapshot["links"]}  # fmt: skip
    assert sources == {frozenset("ab"): "session", frozenset("bc"): "record"}
    assert next(node for node in snapshot["nodes"] if node["name"] == "c")["apps"] == ["shop"]


# -- the page's files in a built package ------------------------------------------------------


def test_the_built_package_holds_the_page_files_and_serves_them(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "build",
        "tests", "bench", "artifacts"))  # fmt: skip
    built = tmp_path / "lib"
    # build_py is what a wheel is made of: the packages with their package_data (setup.cfg).
    done = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
         "--build-lib", str(built)],
        cwd=source, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (built / "xio/node/ui").iterdir() if p.suffix != ".py") == \
        sorted([*ASSETS, *SCRIPTS])  # fmt: skip
    for name, source in (("client.js", "xio.js"), ("client.d.ts", "xio.d.ts")):
        client = built / "xio/node/ui" / name  # a copy of the link's target, not a link
        assert not client.is_symlink()
        assert client.read_bytes() == (ROOT / "clients/js" / source).read_bytes()
    probe = (
        "import importlib, json; from importlib.resources import files;"
        "ui = importlib.import_module('xio.node.ui');"
        "print(json.dumps([str(files(ui)), {n: len(ui.asset(n)) for n in ui.ASSETS}]))"
    )
    shown = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(built)},
                           timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    where, sizes = json.loads(shown.stdout)
    assert Path(where).is_relative_to(built)  # the built copy, not this checkout
    assert sizes == {name: len(asset(name)) for name in ASSETS}


# -- the page in a browser --------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path):
    binary = chromium_path()
    if binary is None and os.geteuid() == 0:  # scripts/check installs it where it may
        pytest.fail("no chromium on PATH: run scripts/check, which installs Debian's chromium")
    if binary is None:
        pytest.skip("no chromium on PATH and not root: install Debian's chromium to run this")
    chromium = Chromium.start(tmp_path / "profile", binary, wait_for)
    yield chromium
    chromium.close()


def page_shows(page, expression: str, what: str, timeout: float = 30.0):
    """Wait until ``expression`` is true in ``page``; the page polls the node every 2 s."""
    guarded = (
        f"(() => {{ try {{ return Boolean({expression}); }} catch (e) {{ return false; }} }})()"
    )
    wait_for(lambda: in_thread(page.evaluate, guarded), what, timeout=timeout)


def test_the_browser_draws_the_mesh_lists_the_app_and_sends_a_request(
    in_process_mesh, browser, capsys
):
    fast = {"record_lifetime": 3.0}
    a = in_process_mesh.start("alpha", **fast)
    b = in_process_mesh.start(HOSTILE, peers=[a], **fast)  # a peer named like markup
    in_process_mesh.start("gamma", peers=[b], apps=[shop_app()], **fast)
    page = in_thread(browser.open, a.url + "/")  # the root: an admin's browser gets the page
    page_shows(page, "document.querySelectorAll('[data-node]').length === 3", "3 nodes drawn")
    page_shows(
        page,
        "document.querySelectorAll('line[data-link]').length === 2 && "
        "[...document.querySelectorAll('[data-link-label]')].every(t => /ms/.test(t.textContent))",
        "2 links drawn, each labelled with its RTT",
    )
    names = in_thread(page.evaluate, "[...document.querySelectorAll('[data-node-name]')]"
                      ".map(t => t.textContent)")  # fmt: skip
    assert sorted(names) == sorted(["alpha", HOSTILE, "gamma"])
    # The hostile name is text: no element made of it, and its handler never ran.
    assert in_thread(page.evaluate, "document.querySelectorAll('img').length") == 0
    assert in_thread(page.evaluate, "window.pwned === undefined && document.title") == (
        "xio mesh map"
    )
    assert in_thread(page.evaluate, "document.querySelector('g.node.self [data-node-name]')"
                     ".textContent") == "alpha"  # fmt: skip
    about = "document.querySelector('[data-app=\"shop\"] .about').textContent"
    page_shows(page, about + '.includes("The shop\'s front page")', "the apps with their ABOUT")
    assert "gamma" in in_thread(
        page.evaluate, "document.querySelector('[data-app=\"shop\"] .hosts').textContent"
    )
    in_thread(page.evaluate, "document.getElementById('req-path').value = '/shop/';"
              "document.querySelector('#request-form button').click()")  # fmt: skip
    page_shows(page, "document.getElementById('result-status').dataset.status === '200'",
               "the request form to show 200")  # fmt: skip
    body = in_thread(page.evaluate, "document.getElementById('result-body').textContent")
    assert json.loads(body) == {"shop": "open"}
    headers = in_thread(page.evaluate, "document.getElementById('result-headers').textContent")
    assert "content-type: application/json" in headers
    shot = in_thread(page.screenshot, ARTIFACTS / "ui-map.png")
    with capsys.disabled():  # shown even when the test passes
        print(f"\nscreenshot of the mesh map: {shot}")


def test_the_page_asks_for_the_admin_token_and_then_draws_the_map(
    in_process_mesh, browser, tmp_path
):
    token = tmp_path / "token"
    token.write_text("t0ken-for-the-page\n")
    token.chmod(0o600)
    node = in_process_mesh.start("guarded", admin_token_file=str(token))
    page = in_thread(browser.open, node.url + "/_xio/ui")
    page_shows(page, "!document.getElementById('token-form').hidden && "
               "document.getElementById('status').textContent.includes('token')",
               "the page to ask for the token")  # fmt: skip
    in_thread(page.evaluate, "document.getElementById('token').value = 't0ken-for-the-page';"
              "document.querySelector('#token-form button').click()")  # fmt: skip
    page_shows(page, "document.querySelectorAll('[data-node]').length === 1", "the node drawn")
    assert in_thread(page.evaluate, "sessionStorage.getItem('xio-admin-token')") == (
        "t0ken-for-the-page"
    )
