"""What a page in a real browser sees of a node, by ``--cors`` (xio.node.cors).

A page of its own origin (tests/conformance/browser.py: a static server on another port)
imports the client from the node, as a user's page does, and calls an app hosted there.
Chromium enforces CORS, not the node: without ``--cors`` naming the page's origin the answer
is hidden from the page, which sees a failed call (the browser says no more than a network
error), while the same page with the node's consent reads the answer. The conformance suite
(tests/test_conformance.py, js-chromium-*) runs every case through such a page, two hops away.
"""

from __future__ import annotations

import json

import pytest

from .conformance.browser import PageServer, page_sees
from .conftest import ROOT

APP = str(ROOT / "tests" / "conformance" / "app.py")


@pytest.fixture(scope="module")
def page():
    with PageServer() as server:
        yield server


def call_from_page(page: PageServer, folder, node_url: str, scheme: str) -> dict:
    """GET conf/json from the page with the node's client; return what the page saw."""
    base = scheme + node_url.removeprefix("http") + "/conf"  # http:// or ws://
    script = f"""
        const xio = await import({json.dumps(node_url + "/_xio/client.js")});
        const conf = xio.client({json.dumps(base)}, {{timeout: 10}});
        try {{
            const answer = await conf.get('json');
            return {{status: answer.status, content: answer.content}};
        }} catch (error) {{
            return {{error: error.name, transport: error instanceof xio.TransportError}};
        }}
    """
    return page_sees(page, folder, script)


TRANSPORTS = pytest.mark.parametrize("scheme", ["http", "ws"])


@TRANSPORTS
def test_a_page_of_another_origin_reads_nothing_from_a_node_without_cors(
    page, start_node, tmp_path, scheme
):
    node = start_node("closed-to-pages", "--app", APP)
    seen = call_from_page(page, tmp_path / "without", node.url, scheme)
    # http: the browser hides the answer; ws: the node refuses the page's upgrade (403).
    assert seen == {"error": "ConnectError", "transport": True}


@TRANSPORTS
def test_a_page_of_another_origin_reads_the_answer_when_the_node_allows_its_origin(
    page, start_node, tmp_path, scheme
):
    other = start_node("other-page-only", "--app", APP, "--cors", "https://elsewhere.example")
    assert call_from_page(page, tmp_path / "other", other.url, scheme)["error"] == "ConnectError"
    node = start_node("open-to-the-page", "--app", APP, "--cors", page.origin)
    seen = call_from_page(page, tmp_path / "allowed", node.url, scheme)
    assert seen["status"] == 200
    assert seen["content"]["name"] == "café ☕"
