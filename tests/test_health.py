"""Health pages: ``/_xio/health/live`` and ``/_xio/health/ready`` (xio.node.health).

The decision is pure and tested over facts; the pages are tested on in-process nodes, from
loopback and from an address that may not read any other admin page (probes come from
anywhere), and a configured peer that never answers keeps a node not ready until given up.
"""

from __future__ import annotations

import socket

import pytest

from xio.node import Node, NodeConfig
from xio.node.health import PEER_GRACE, ReadinessFacts, readiness
from xio.server import WSGIApp
from xio.testing import TestClient

from .mesh import call, wait_for

READY = dict(draining=False, listening=True, originated=True, peers_configured=2,
             peers_linked=1, peers_given_up=1, uptime=1.0)  # fmt: skip


def facts(**changes) -> ReadinessFacts:
    return ReadinessFacts(**{**READY, **changes})


def test_ready_when_listening_originated_and_every_peer_linked_or_given_up():
    assert readiness(facts()) == (200, {"status": "ready"})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"listening": False}, "not listening"), ({"originated": False}, "own record"),
     ({"peers_given_up": 0}, "1 of 2 configured peers not linked")],
)  # fmt: skip
def test_not_ready_says_why(changes, reason):
    status, body = readiness(facts(**changes))
    assert status == 503 and body["status"] == "not_ready" and reason in body["reason"]


def test_a_peer_not_linked_is_given_up_after_the_grace_period():
    assert readiness(facts(peers_given_up=0, uptime=PEER_GRACE))[0] == 200


def test_draining_beats_every_other_fact():
    assert readiness(facts(draining=True, originated=False)) == (503, {"status": "draining"})


def client_at(node: Node, address: str) -> TestClient:
    wsgi = WSGIApp(node.router.handle)
    return TestClient(lambda environ, start: wsgi({**environ, "REMOTE_ADDR": address}, start))


@pytest.mark.parametrize("path", ["/_xio/health/live", "/_xio/health/ready"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_pages_answer_any_client_uncached_and_show_no_topology(in_process_mesh, path, method):
    node = in_process_mesh.start("n")
    remote = client_at(node, "10.0.0.5")
    assert remote.get("/_xio/node").status == 403  # the other pages stay closed
    answer = remote.request(method, path)
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    if method == "GET":
        assert answer.content == {"status": path.rsplit("/", 1)[1]}
    assert node.id not in str(answer.content) and node.url not in str(answer.content)


def test_a_configured_peer_that_does_not_answer_keeps_the_node_not_ready_until_given_up(
    in_process_mesh,
):
    silent = socket.socket()  # accepts TCP (the backlog), never answers the upgrade
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        node = in_process_mesh.start("n", peers=[f"ws://127.0.0.1:{silent.getsockname()[1]}"])
        waiting = call(node, "GET", "/_xio/health/ready")
        assert waiting.status == 503
        assert waiting.content == {"status": "not_ready",
                                   "reason": "1 of 1 configured peers not linked yet"}  # fmt: skip
        wait_for(lambda: call(node, "GET", "/_xio/health/ready").status == 200,
                 "the silent peer to be given up", timeout=15)  # fmt: skip
    finally:
        silent.close()


def test_a_linked_peer_makes_the_node_ready(in_process_mesh):
    far = in_process_mesh.start("far")
    near = in_process_mesh.start("near", peers=[far])
    wait_for(lambda: far.id in near.links, "the link")
    assert call(near, "GET", "/_xio/health/ready").content == {"status": "ready"}
    assert call(near, "GET", "/_xio/health/live").content == {"status": "live"}


def test_the_ready_page_says_draining_once_a_drain_began():
    node = Node(NodeConfig(name="n", host="127.0.0.1", port=0, mdns=False))
    node.draining = True  # what drain() sets first (the listener is closed right after)
    answer = client_at(node, "10.0.0.5").get("/_xio/health/ready")
    assert (answer.status, answer.content) == (503, {"status": "draining"})
