"""The mesh with real xio-node processes on loopback: forwarding, failures, rerouting."""

from __future__ import annotations

import random
import signal
import time

import pytest

import xio

from .conftest import ROOT, wait_until

INVENTORY = str(ROOT / "tests/apps/inventory")
SLOW = str(ROOT / "tests/apps/slow")


def ws(process) -> str:
    return process.url.replace("http://", "ws://")


def apps_seen(process) -> dict:
    return xio.client(process.url, timeout=2).get("/_xio/apps").content


def route_ids(process) -> set[str]:
    return {
        r["destination"] for r in xio.client(process.url, timeout=2).get("/_xio/routes").content
    }


def node_id(process) -> str:
    return xio.client(process.url, timeout=2).get("/_xio/node").content["id"]


@pytest.fixture
def line(start_node):
    """A - B - C, with inventory and slow on C."""
    c = start_node("c", "--app", INVENTORY, "--app", SLOW)
    b = start_node("b", "--peers", ws(c))
    a = start_node("a", "--peers", ws(b))
    wait_until(lambda: "inventory" in apps_seen(a), what="a to learn of inventory on c")
    return a, b, c


def test_request_at_a_is_served_two_hops_away_on_c(line):
    a, b, c = line
    response = xio.client(a.url).get("/inventory/items/42", query={"q": "1"},
                                     headers={"X-Test": "passed"})  # fmt: skip
    assert response.status == 200
    assert response.content == {
        "id": "42", "method": "GET", "query": {"q": "1"}, "data": {}, "header": "passed",
        "served_by": "c",
    }  # fmt: skip
    assert response.headers["X-Item"] == "42"
    routes = {r["name"]: r for r in xio.client(a.url).get("/_xio/routes").content}
    assert routes["c"]["next_hop"] == node_id(b)
    assert routes["c"]["cost"] == 2


def test_methods_bodies_and_statuses_pass_through(line):
    a, _, _ = line
    client = xio.client(a.url)
    assert client.request("MYMETHOD", "/inventory/items/1").content["method"] == "MYMETHOD"
    assert client.put("/inventory/items/1", {"n": 1}).content["data"] == {"n": 1}
    about = client.about("/inventory/items/1").content
    assert about["methods"] == ["ABOUT", "GET", "HEAD", "MYMETHOD", "OPTIONS", "PUT"]
    wrong = client.delete("/inventory/items/1")
    assert wrong.status == 405
    assert "MYMETHOD" in wrong.headers["Allow"]
    created = client.post("/inventory/created")
    assert (created.status, created.content) == (201, "made")
    big = bytes(random.getrandbits(8) for _ in range(1024)) * 8 * 1024  # 8 MiB
    assert client.post("/inventory/blob", big).content == {"size": len(big)}
    assert client.get("/inventory").content["path"] == ""


def test_pinned_node_and_mesh_listing(line):
    a, _, c = line
    client = xio.client(a.url)
    assert client.get("/~c/inventory/items/5").content["served_by"] == "c"
    assert client.get(f"/~{node_id(c)}/inventory/items/5").content["served_by"] == "c"
    assert client.get("/~b/inventory/items/5").status == 404
    assert client.get("/~nobody/inventory").status == 404
    listing = client.get("/").content
    assert [host["name"] for host in listing["apps"]["inventory"]] == ["c"]
    assert listing["apps"]["inventory"][0]["cost"] == 2


def test_clear_errors_for_unknown_app_malformed_path_and_deadline(line):
    a, _, _ = line
    client = xio.client(a.url)
    unknown = client.get("/nothing/here")
    assert unknown.status == 404
    assert unknown.content["description"] == "no app 'nothing' in the mesh"
    assert client.get("/~/inventory").status == 400
    assert client.get("/~c").status == 400
    assert client.get("/slow", headers={"X-Xio-Timeout": "soon"}).status == 400
    # The handler would take 60 s, past the client's own 30 s timeout: a 504 at all shows the
    # node answered at the deadline and did not wait for the handler.
    late = client.get("/slow", query={"s": "60"}, headers={"X-Xio-Timeout": "0.5"})
    assert late.status == 504
    assert client.get("/slow", query={"s": "0"}).status == 200


def forwarding(process) -> dict:
    return xio.client(process.url, timeout=2).get("/_xio/node").content["forwarding"]


def test_a_cancel_is_passed_along_the_path_and_stops_the_handler(line):
    _, b, c = line
    from xio.peering import codec

    from .sealing import public_key_of, record_of, seal_request
    from .test_link_hostile import EvilPeer

    asker = EvilPeer(ws(b) + "/_xio/ws")
    asker.handshake()
    asker.send(record_of(asker.identity))  # C takes the asker's key from its record
    c_id = node_id(c)
    sealed = seal_request(asker.identity, public_key_of(c), c_id, "slow", query="s=30")
    request = codec.RequestFrame(7, c_id, "slow", "GET", "", "s=30", hops=16, ttl_ms=60_000,
                                 src=sealed["src"], nonce=sealed["n"], mac=sealed["mac"])  # fmt: skip
    asker.send(codec.encode(request))
    wait_until(lambda: forwarding(c).get("served", 0) >= 1, what="c to start the handler")
    asker.send(codec.encode(codec.Cancel(7)))
    # The relay passed the cancel on, and the destination stopped the app's handler.
    wait_until(lambda: forwarding(b).get("cancelled", 0) >= 1, what="b to pass the cancel on")
    wait_until(lambda: forwarding(c).get("cancelled", 0) >= 1, what="c to stop the handler")
    assert forwarding(b).get("relayed") == 1
    budgets = xio.client(c.url).get("/_xio/node").content["budgets"]
    assert budgets["in_flight"]["used"] == 0  # the slow request is gone (admin requests hold none)
    asker.transport.close()


def test_next_hop_lost_mid_request_is_502(line):
    a, b, c = line
    import threading

    result = {}

    def ask():
        result["response"] = xio.client(a.url, timeout=20).get("/slow", query={"s": "10"})

    asking = threading.Thread(target=ask)
    asking.start()
    # Kill b only once the request is at c: a kill before it got there would be a 404 or 502
    # for another reason (no route), not the lost next hop this test is about.
    wait_until(lambda: forwarding(c).get("served", 0) >= 1, what="the request to reach c")
    b.proc.kill()
    asking.join(15)
    assert result["response"].status == 502


def test_deadline_is_enforced_on_a_local_app(start_node):
    node = start_node("solo", "--app", SLOW)
    late = xio.client(node.url).get("/slow", query={"s": "5"}, headers={"X-Xio-Timeout": "0.3"})
    assert late.status == 504
    assert late.content["title"] == "Gateway Timeout"


def test_ring_of_four_reroutes_when_a_node_is_killed(start_node):
    n1 = start_node("n1", "--app", INVENTORY)
    n2 = start_node("n2", "--peers", ws(n1))
    n3 = start_node("n3", "--peers", ws(n2))
    n4 = start_node("n4", "--peers", ws(n3), ws(n1))
    ring = [n1, n2, n3, n4]
    wait_until(lambda: all(len(route_ids(n)) == 4 for n in ring), what="a full ring")
    dead_id = node_id(n2)
    n2.proc.kill()
    killed_at = time.monotonic()
    survivors = [n1, n3, n4]
    # The bound: gone everywhere within 6 s of the kill.
    wait_until(lambda: all(dead_id not in route_ids(n) for n in survivors),
               timeout=6 - (time.monotonic() - killed_at), what="n2's routes to vanish")  # fmt: skip
    response = xio.client(n3.url).get("/inventory/items/1")
    assert response.status == 200 and response.content["served_by"] == "n1"
    routes = {r["name"]: r for r in xio.client(n3.url).get("/_xio/routes").content}
    assert routes["n1"]["next_hop"] == node_id(n4)
    n2.start()  # same state folder: same id
    wait_until(lambda: dead_id in route_ids(n3), timeout=10, what="n2 back in the mesh")
    assert node_id(n2) == dead_id


def test_ten_nodes_in_a_random_graph_all_resolve_every_app(start_node):
    rng = random.Random(7)
    nodes = []
    for index in range(10):
        peers = [ws(nodes[i]) for i in rng.sample(range(index), min(index, 2))] if index else []
        args = ["--peers", *peers] if peers else []
        nodes.append(start_node(f"r{index}", *args, "--app", INVENTORY if index == 3 else SLOW))
    # The bound: every node resolves every app within 3 s of the last start.
    wait_until(
        lambda: all(set(apps_seen(n)) == {"inventory", "slow"} and len(route_ids(n)) == 10
                    for n in nodes),
        timeout=3, what="every node to resolve every app",
    )  # fmt: skip
    for n in nodes:
        assert xio.client(n.url).get("/inventory/items/1").content["served_by"] == "r3"


def test_sigterm_says_goodbye_so_peers_drop_it_at_once(start_node):
    a = start_node("g1")
    b = start_node("g2", "--peers", ws(a))
    wait_until(lambda: len(route_ids(a)) == 2, what="linked")
    b.signal(signal.SIGTERM)
    assert b.wait(10) == 0
    wait_until(lambda: len(route_ids(a)) == 1, timeout=2, what="g2 dropped")


def test_a_frozen_peer_is_dropped_by_keepalive(start_node):
    # SIGSTOP keeps the TCP connections open but silent: only the keepalive can tell.
    a = start_node("k1")
    b = start_node("k2", "--peers", ws(a))
    wait_until(lambda: len(route_ids(a)) == 2, what="linked")
    b.signal(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        # Default link timeout 2.5 s with pings every 0.5 s: noticed within 3 s.
        wait_until(lambda: len(route_ids(a)) == 1, timeout=3.5, what="k2 dropped")
        peers = xio.client(a.url).get("/_xio/peers").content
        assert all(p["state"] != "established" for p in peers)
        assert time.monotonic() - frozen_at >= 2.0  # not before the timeout
    finally:
        b.signal(signal.SIGCONT)
    wait_until(lambda: len(route_ids(a)) == 2, timeout=10, what="k2 back after SIGCONT")
