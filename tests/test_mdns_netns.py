"""mDNS discovery between real xio-node processes, each in its own network namespace.

Every test builds its own LAN (``tests/netns.py``): a bridge in a namespace of its own
and one namespace per host, joined by veth pairs, in a private test subnet. Multicast
stays on that bridge; the machine's real interfaces are never used. The nodes listen on
the fixed port 7700: each namespace is private, nothing else lives there.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from .conftest import ROOT, Process, wait_until
from .netns import Lan, netns_unavailable

pytestmark = pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))

INVENTORY = str(ROOT / "tests/apps/inventory")
PORT = "7700"  # inside a private namespace, a fixed port cannot collide
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def lan():
    network = Lan()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def start_in(lan, spawn, tmp_path):
    """Start ``xio-node`` on a new host of the LAN: ``start_in(name, *args)``."""

    def start(name: str, *args: str, mdns: bool = True) -> Process:
        host = lan.add_host()
        discovery = ["--mdns", "--mdns-interface", host.interface] if mdns else ["--no-mdns"]
        command = host.command(
            sys.executable, "-m", "xio.nodemain", "--name", name, "--host", "0.0.0.0",
            "--port", PORT, "--state-dir", str(tmp_path / "state" / name), *discovery, *args,
        )  # fmt: skip
        process = spawn(command, name, env={"XIO_TEST_NODE": name})
        process.host = host
        process.node_id = host.get("/_xio/node")[1]["id"]
        return process

    return start


def routes(process) -> set[str]:
    status, body = process.host.get("/_xio/routes")
    return {route["destination"] for route in body} if status == 200 else set()


def peers(process) -> list:
    return process.host.get("/_xio/peers")[1]


def seen_by_mdns(process) -> set[str]:
    return {peer["id"] for peer in process.host.get("/_xio/node")[1]["mdns"]["peers"]}


def registered(process) -> bool:
    return process.host.get("/_xio/node")[1]["mdns"]["registered"]


def converged(nodes) -> bool:
    everyone = {node.node_id for node in nodes}
    return all(routes(node) == everyone for node in nodes)


@pytest.fixture
def three(start_in):
    """Three nodes, no --peers, inventory on n1; returns once each routes to all three."""
    nodes = [start_in("n1", "--app", INVENTORY), start_in("n2"), start_in("n3")]
    wait_until(lambda: converged(nodes), timeout=15, what="three nodes to find each other")
    wait_until(lambda: all(registered(node) for node in nodes), timeout=5,
               what="the three nodes' mDNS registrations")  # fmt: skip
    return nodes


def test_three_nodes_form_a_mesh_with_no_configuration(three):
    n1, n2, n3 = three
    for node in three:
        assert len(routes(node)) == 3
        assert len([p for p in peers(node) if p["state"] == "established"]) >= 1
    status, body = n3.host.get("/inventory/items/7")
    assert status == 200
    assert body["served_by"] == "n1"
    status, body = n2.host.get("/inventory/")
    assert (status, body["served_by"]) == (200, "n1")
    wait_until(lambda: seen_by_mdns(n2) == {n1.node_id, n3.node_id}, timeout=5,
               what="n2 to see n1 and n3 by mDNS")  # fmt: skip


def test_clean_stop_is_dropped_within_two_seconds(three):
    n1, n2, n3 = three
    started = time.monotonic()
    n3.signal(signal.SIGTERM)
    wait_until(lambda: all(n3.node_id not in routes(node) for node in (n1, n2)), timeout=5,
               what="n1 and n2 to drop n3")  # fmt: skip
    assert time.monotonic() - started < 2.0
    wait_until(lambda: "said goodbye" in n1.output() + n2.output(), timeout=2,
               what="an mDNS goodbye from n3")  # fmt: skip
    assert n3.wait(5) == 0


def test_killed_node_is_dropped_within_the_link_timeout(three):
    n1, n2, n3 = three
    started = time.monotonic()
    n3.proc.kill()
    wait_until(lambda: all(n3.node_id not in routes(node) for node in (n1, n2)), timeout=8,
               what="n1 and n2 to drop n3")  # fmt: skip
    assert time.monotonic() - started < 5.0
    assert n1.host.get("/inventory/")[0] == 200 and n2.host.get("/inventory/")[0] == 200


def test_node_without_mdns_is_neither_seen_nor_linked(start_in):
    # quiet runs before n1 and n2 start browsing: whatever n1 and n2 find by mDNS, they would
    # have found quiet's announcements too, so once they see each other no wait is left.
    quiet = start_in("quiet", mdns=False)
    n1, n2 = start_in("n1"), start_in("n2")
    wait_until(lambda: converged([n1, n2]), timeout=15, what="n1 and n2 to find each other")
    wait_until(lambda: seen_by_mdns(n1) == {n2.node_id} and seen_by_mdns(n2) == {n1.node_id},
               timeout=5, what="n1 and n2 to see each other by mDNS")  # fmt: skip
    assert routes(quiet) == {quiet.node_id}
    assert peers(quiet) == []
    assert quiet.host.get("/_xio/node")[1]["mdns"] is None
    for node in (n1, n2):
        assert quiet.node_id not in routes(node)
        assert quiet.node_id not in seen_by_mdns(node)


def doctor(host, *args: str):
    return host.run(sys.executable, "-m", "xio.nodemain", "doctor", "--mdns-interface",
                    host.interface, *args, timeout=30, env=ENV)  # fmt: skip


def test_doctor_reports_the_peer_and_a_down_interface(lan, start_in):
    n1, n2 = start_in("n1"), start_in("n2")
    wait_until(lambda: converged([n1, n2]), timeout=15, what="n1 and n2 to find each other")
    healthy = doctor(n1.host)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"id={n2.node_id}" in healthy.stdout
    assert "(peer)" in healthy.stdout
    assert f"port {PORT} reachable on {n1.host.address}" in healthy.stdout
    assert "result: discovery should work" in healthy.stdout

    broken = lan.add_host()
    broken.set_link("down")
    sick = doctor(broken)
    assert sick.returncode == 1, sick.stdout + sick.stderr
    assert "FAIL  veth0 is down" in sick.stdout
    assert "fix: ip link set veth0 up" in sick.stdout
