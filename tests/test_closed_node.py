"""Closed mode inside one process: membership as the node answers it, revocations on new links."""

from __future__ import annotations

import time

import pytest

import xio
from xio.errors import ConfigError
from xio.peering import keyfile, membership
from xio.peering.identity import Identity

from .mesh import call, wait_for

AUTHORITY = Identity.generate()


def admitted(tmp_path, name: str, apps=("*",)) -> dict:
    """Return the NodeConfig options of a member ``name``: state dir, mesh.pub, certificate."""
    pub = tmp_path / "mesh.pub"
    pub.write_bytes(AUTHORITY.public_pem())
    identity = keyfile.load_or_create(tmp_path / name)
    now = int(time.time() * 1000)
    signed = membership.issue_certificate(
        AUTHORITY, identity.node_id, name=name, apps=apps, issued_ms=now,
        expires_ms=now + 3_600_000, serial=1,
    )  # fmt: skip
    cert = tmp_path / f"{name}.cert"
    cert.write_text(membership.armor(signed))
    return {"state_dir": tmp_path / name, "mesh_pub": pub, "cert": cert}


def shop() -> xio.App:
    app = xio.app("shop")
    app.bind("www", lambda req: "shop")
    return app


def test_is_member_names_members_and_no_one_in_open_mode(in_process_mesh, tmp_path):
    a = in_process_mesh.start("a", **admitted(tmp_path, "a"))
    b = in_process_mesh.start("b", peers=[a], apps=[shop()], **admitted(tmp_path, "b"))
    wait_for(lambda: a.table.hosts_of("shop"), "a to learn of b's shop")
    assert a.is_member(b.id) == (True, "b")
    assert a.is_member(a.id) == (True, "a")
    assert a.is_member(Identity.generate().node_id) == (False, None)
    plain = in_process_mesh.start("plain")
    assert plain.is_member(plain.id) == (False, None)
    assert plain.status()["mesh"] is None and plain.status()["membership"] == {}
    assert call(plain, "POST", "/_xio/mesh", data="x").status == 422  # open mode takes none


def test_a_new_link_is_sent_every_revocation_held(in_process_mesh, tmp_path):
    a = in_process_mesh.start("a", **admitted(tmp_path, "a"))
    gone = Identity.generate().node_id
    revocation = membership.issue_revocation(AUTHORITY, gone, issued_ms=int(time.time() * 1000))
    answer = call(a, "POST", "/_xio/mesh", data=membership.armor(revocation))
    assert answer.status == 200 and answer.content["news"] is True
    b = in_process_mesh.start("b", peers=[a], **admitted(tmp_path, "b"))
    wait_for(lambda: b.closed.policy.is_revoked(gone), "b to be sent a's revocation")
    assert b.status()["mesh"]["revocations"] == 1


def test_a_hosted_app_the_certificate_does_not_list_is_left_out(in_process_mesh, tmp_path):
    a = in_process_mesh.start("a", **admitted(tmp_path, "a"))
    options = admitted(tmp_path, "b", apps=("inventory",))
    b = in_process_mesh.start("b", peers=[a], apps=[shop()], **options)
    wait_for(lambda: a.store.get(b.id) is not None, "a to hold b's record")
    assert a.store.get(b.id).app_names() == []
    assert a.table.hosts_of("shop") == []


def test_a_certificate_of_another_node_stops_the_start(tmp_path):
    from xio.node import Node, NodeConfig

    options = admitted(tmp_path, "a")
    options["state_dir"] = tmp_path / "elsewhere"
    with pytest.raises(ConfigError, match="wrong_node"):
        Node(NodeConfig(name="x", host="127.0.0.1", port=0, mdns=False, **options))
    # The state dir is not left locked by the node that did not start.
    keyfile.load_or_create(tmp_path / "elsewhere")
    node = Node(NodeConfig(name="x", host="127.0.0.1", port=0, mdns=False,
                           state_dir=tmp_path / "elsewhere"))  # fmt: skip
    node.state_lock.release()


def test_revocations_outlive_a_restart(in_process_mesh, tmp_path):
    options = admitted(tmp_path, "a")
    a = in_process_mesh.start("a", **options)
    gone = Identity.generate().node_id
    revocation = membership.issue_revocation(AUTHORITY, gone, issued_ms=int(time.time() * 1000))
    assert call(a, "POST", "/_xio/mesh", data=membership.armor(revocation)).status == 200
    a.stop()
    again = in_process_mesh.start("a", **options)
    assert again.closed.policy.is_revoked(gone)
    assert again.status()["mesh"]["revocations"] == 1


def test_a_link_ends_when_the_peers_certificate_expires(in_process_mesh, tmp_path):
    a = in_process_mesh.start("a", **admitted(tmp_path, "a"))
    options = admitted(tmp_path, "b")
    identity = keyfile.load_or_create(tmp_path / "b")
    now = int(time.time() * 1000)
    short = membership.issue_certificate(AUTHORITY, identity.node_id, name="b",
                                         issued_ms=now, expires_ms=now + 3000, serial=2)  # fmt: skip
    options["cert"].write_text(membership.armor(short))
    b = in_process_mesh.start("b", peers=[a], **options)
    wait_for(lambda: b.id in a.links or a.status()["membership"], "a and b to link")
    wait_for(lambda: a.status()["membership"].get("expired"), "a to see b's certificate expire")
    wait_for(lambda: b.id not in a.links, "a to close b's link")
    assert a.status()["closed_links"].get("expired", 0) >= 1


def test_a_new_link_is_sent_every_revocation_held_however_small_its_queue(
    in_process_mesh, tmp_path
):
    # 20 revocations take more than the link's queue holds at once: they must wait for the
    # writer, not be dropped (a dropped one leaves the new peer trusting a revoked node).
    a = in_process_mesh.start("a", link_queue_bytes=2048, **admitted(tmp_path, "a"))
    gone = [Identity.generate().node_id for _ in range(20)]
    now = int(time.time() * 1000)
    for node in gone:
        revocation = membership.issue_revocation(AUTHORITY, node, issued_ms=now)
        assert call(a, "POST", "/_xio/mesh", data=membership.armor(revocation)).status == 200
    b = in_process_mesh.start("b", peers=[a], **admitted(tmp_path, "b"))
    wait_for(lambda: b.status()["mesh"]["revocations"] == 20, "b to be sent all 20")
    assert all(b.closed.policy.is_revoked(node) for node in gone)
