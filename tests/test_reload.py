"""SIGHUP: xio-node re-reads its configuration and applies it without dropping healthy links."""

from __future__ import annotations

import signal

import xio
from xio.node.config import NodeConfig, parse_peer
from xio.node.reload import plan_reload

from .conftest import ROOT, wait_until


def test_a_plan_keeps_the_peers_that_stay_and_what_needs_a_restart():
    old = NodeConfig(name="a", port=1, peers=["h:1", "ws://h:2/_xio/ws"], max_body=10)
    new = NodeConfig(name="a", port=2, peers=["ws://h:1", "h:3"], max_body=20)
    plan = plan_reload(old, new, ["shop"], ["shop", "blog"], parse_peer)
    assert plan.peers_added == ("h:3",) and plan.peers_removed == ("ws://h:2/_xio/ws",)
    assert plan.apps_added == ("blog",) and plan.apps_removed == ()
    assert plan.live == ("max_body",) and plan.restart == ("port",)
    assert plan.config.port == 1 and plan.config.max_body == 20  # the port stays as bound
    assert "kept until a restart: port" in plan.summary()


def links(node) -> dict[str, dict]:
    """Return the established links of ``node`` by peer name."""
    peers = xio.client(node.url).get("/_xio/peers").content
    return {peer["name"]: peer for peer in peers if peer["state"] == "established"}


def test_sighup_adds_and_removes_peers_and_keeps_a_healthy_link(tmp_path, start_node):
    b, c = start_node("b"), start_node("c")
    path = tmp_path / "a.toml"
    path.write_text(f'peers = ["{b.url}"]\n')
    a = start_node("a", "--config", str(path))
    first = wait_until(lambda: links(a).get("b"), what="a to link to b")
    path.write_text(f'peers = ["{b.url}", "{c.url}"]\nrequest_timeout = 3\n')
    a.signal(signal.SIGHUP)
    wait_until(lambda: "c" in links(a), what="a to link to c, added by the reload")
    assert links(a)["b"]["since"] == first["since"]  # the very same link to b, never dropped
    assert "reloaded: peers added:" in a.output()
    path.write_text(f'peers = ["{c.url}"]\n')
    a.signal(signal.SIGHUP)
    wait_until(lambda: "b" not in links(a), what="the link to b to close")
    wait_until(lambda: "peer_removed" in b.output(), what="b to be told why, in a bye")
    assert "c" in links(a) and a.proc.poll() is None


def test_an_invalid_reload_is_refused_and_the_node_keeps_serving(tmp_path, start_node):
    b = start_node("b")
    path = tmp_path / "a.toml"
    path.write_text(f'peers = ["{b.url}"]\nmax_body = "1KiB"\n')
    a = start_node("a", "--config", str(path))
    first = wait_until(lambda: links(a).get("b"), what="a to link to b")
    path.write_text('peers = []\nmax_body = "lots"\n')
    a.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in a.output(), what="the reload to be refused")
    assert f"{path}:2: max_body: invalid size value: 'lots'" in a.output()
    assert links(a)["b"]["since"] == first["since"]  # nothing of the new file was applied
    assert xio.client(a.url).post("/_xio/node", b"x" * 2048).status == 413


def test_sighup_no_longer_kills_the_node(start_node):
    node = start_node("n")  # no config file at all
    node.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP" in node.output(), what="the node to log the SIGHUP")
    assert node.proc.poll() is None
    assert xio.client(node.url).get("/_xio/node").status == 200


def test_a_reload_of_what_needs_a_restart_says_so_and_keeps_the_old(tmp_path, start_node):
    path = tmp_path / "a.toml"
    path.write_text("")
    a = start_node("a", "--config", str(path))
    path.write_text('advertise_address = ["192.0.2.1"]\n')
    a.signal(signal.SIGHUP)
    wait_until(lambda: "needs a restart" in a.output(), what="the reload to say so")
    assert "advertise_addresses changed, which needs a restart" in a.output()
    assert xio.client(a.url).get("/_xio/node").status == 200


def test_sighup_adds_an_app_and_raises_a_limit(tmp_path, start_node):
    inventory = ROOT / "tests/apps/inventory"
    path = tmp_path / "a.toml"
    path.write_text('max_body = "1KiB"\n')
    a = start_node("a", "--config", str(path))
    client = xio.client(a.url)
    assert client.post("/_xio/node", b"x" * 2048).status == 413
    assert client.get("/inventory/items/3").status == 404
    path.write_text(f'max_body = "4KiB"\napp = ["{inventory}"]\n')
    a.signal(signal.SIGHUP)
    wait_until(lambda: client.get("/inventory/items/3").status == 200,
               what="the app added by the reload to answer")  # fmt: skip
    assert client.post("/_xio/node", b"x" * 2048).status != 413
    assert "reloaded: apps added: inventory; changed: max_body" in a.output()
