"""The mesh inside the test process (tests/mesh.py): what crosses links, wss, advertised URLs,
and how discovery dials, gives up and stops at ``max_peers`` (called as mDNS would call it)."""

from __future__ import annotations

import logging

import pytest

import xio
from xio.node.discovery import GIVE_UP as DISCOVERY_GIVE_UP
from xio.peering import links
from xio.peering.identity import Identity
from xio.peering.schedule import Backoff

from .certs import self_signed
from .mesh import call, unused_port, wait_for, ws_url


def trail_app() -> xio.App:
    app = xio.app("trail")
    app.bind("www", lambda req: {"via": req.headers.get("X-Xio-Via")})
    return app


def test_the_via_trail_names_each_node_in_order_over_two_hops(in_process_mesh):
    a, b, c = in_process_mesh.line("a", "b", "c", apps_at_end=[trail_app()])
    response = call(a, "GET", "/trail/", headers={"X-Xio-Via": "client-spoofed"})
    assert response.status == 200
    assert response.content == {"via": f"{a.id},{b.id}"}  # what the app at c was handed
    assert response.headers["X-Xio-Via"] == f"{a.id},{b.id},{c.id}"  # and the caller sees


def test_nodes_with_tls_link_over_wss(in_process_mesh, tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the dialler trusts the system's store
    tls = {"tls_cert": str(cert), "tls_key": str(key)}
    a = in_process_mesh.start("a", apps=[trail_app()], **tls)
    b = in_process_mesh.start("b", peers=[a], **tls)
    assert ws_url(a).startswith("wss://")
    wait_for(lambda: a.id in b.links, "b to link to a over wss")
    assert b.links[a.id].url == ws_url(a)
    response = call(b, "GET", "/trail/", verify=str(cert))
    assert b.url.startswith("https://")
    assert (response.status, response.content) == (200, {"via": b.id})


def test_advertised_urls_are_what_the_record_and_node_show(in_process_mesh):
    advertised = ["wss://mesh.example:443/_xio/ws", "ws://192.0.2.7:7700/_xio/ws"]
    a = in_process_mesh.start("a", advertise=advertised)
    b = in_process_mesh.start("b", peers=[a])
    wait_for(lambda: b.store.get(a.id) is not None, "a's record at b")
    assert list(b.store.get(a.id).urls) == advertised  # what every other node dials
    assert call(a, "GET", "/_xio/node").content["urls"] == advertised
    plain = b.store.get(b.id)
    assert list(plain.urls) == [b.url]  # without --advertise, the URL it serves on


def test_two_links_between_the_same_two_nodes_collapse_to_one(in_process_mesh):
    a = in_process_mesh.start("a")
    b = in_process_mesh.start("b", peers=[a])
    wait_for(lambda: a.id in b.links and b.id in a.links, "b's link to a")
    first = b.links[a.id]
    second = a.dial(ws_url(b), b.id)  # a dials b too, as if both had found each other at once
    wait_for(lambda: second.close_reason or first.close_reason, "one of the two to close")
    loser = first if first.close_reason else second
    assert loser.close_reason == "duplicate_link"
    wait_for(
        lambda: len(a.link_table.all) == len(b.link_table.all) == 1, "one link left at each end"
    )
    kept = b.links[a.id]
    assert kept is not loser and a.links[b.id].session.handshake.link_key == (
        kept.session.handshake.link_key
    )  # both ends kept the same link


@pytest.fixture
def quick_redial(monkeypatch):
    """Dial again after 10-50 ms instead of 0.25 s doubling: five failures take no seconds."""
    monkeypatch.setattr(links, "Backoff", lambda: Backoff(first=0.01, maximum=0.05))


def test_a_discovered_node_that_stays_unreachable_is_forgotten(in_process_mesh, quick_redial,
                                                               caplog):  # fmt: skip
    caplog.set_level(logging.INFO, "xio.node")
    node = in_process_mesh.start("x")
    ghost = Identity.generate().node_id
    node.discovery.discovered(ghost, [f"ws://127.0.0.1:{unused_port()}/_xio/ws"])
    assert ghost in node.discovery.dialers
    wait_for(lambda: ghost not in node.discovery.dialers, "the ghost to be forgotten")
    assert f"unreachable {DISCOVERY_GIVE_UP} times: forgotten" in caplog.text
    assert ghost not in node.links
    node.discovery.discovered(ghost, [f"ws://127.0.0.1:{unused_port()}/_xio/ws"])  # announced again
    assert ghost in node.discovery.dialers


def test_discovery_links_to_no_more_than_max_peers(in_process_mesh, caplog):
    node = in_process_mesh.start("x", max_peers=2)
    others = [in_process_mesh.start(name) for name in ("p", "q", "r")]
    for other in others:
        node.discovery.discovered(other.id, [ws_url(other)])
    wait_for(lambda: len(node.links) == 2, "two links")
    assert set(node.links) == {others[0].id, others[1].id}
    assert others[2].id not in node.discovery.dialers
    assert "not linking to discovered" in caplog.text
    # One goes away: the next announcement of the third one links it.
    node.discovery.vanished(others[0].id)
    wait_for(lambda: others[0].id not in node.links, "the first link to close")
    node.discovery.discovered(others[2].id, [ws_url(others[2])])
    wait_for(lambda: others[2].id in node.links, "the third link")
    assert len(node.links) == 2
