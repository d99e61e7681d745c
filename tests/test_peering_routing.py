"""Routing: confirmed edges only, shortest paths, deterministic ties, app hosts."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xio.errors import LocalProtocolError
from xio.peering.records import Record
from xio.peering.routing import Route, Topology, compute_routes, compute_stepwise, keep_link

# Node ids sort in the order of their letter: "a"*32 < "b"*32 < ...
A, B, C, D, E, M = (letter * 32 for letter in "abcdem")


def route_to(table, dst: str) -> Route | None:
    """Return the route ``table`` lists for ``dst`` (what /_xio/routes shows), or None."""
    return next((route for route in table.routes() if route.dst == dst), None)


def reachable(table) -> list[str]:
    """Return the ids ``table`` reaches, sorted (the node hands them to its record store)."""
    return sorted(table.reachable_set())


def record(node, links, apps=(), name=None, seq=1, summary="") -> Record:
    """Return a record as the store would hold it (routing trusts verified records)."""
    return Record(
        node_id=node,
        public_key=bytes(32),
        seq=seq,
        issued_ms=seq,
        expires_ms=60_000 + seq,
        name=name if name is not None else node[0],
        version="0",
        urls=(),
        links=tuple(sorted(links.items())),
        apps=tuple((app, summary) for app in sorted(apps)),
    )


def table_of(own, graph, apps=None, own_apps=()):
    """Compute ``own``'s table where ``graph`` maps each node to its listed links."""
    apps = apps or {}
    records = [record(node, links, apps.get(node, ())) for node, links in graph.items()]
    return compute_routes(own, graph.get(own, {}), records, own_apps=own_apps, own_name="me")


def test_line():
    graph = {A: {B: 1}, B: {A: 1, C: 2}, C: {B: 2}}
    table = table_of(A, graph)
    assert route_to(table, A) == Route(A, A, 0, 0)
    assert route_to(table, B) == Route(B, B, 1, 1)
    assert route_to(table, C) == Route(C, B, 3, 2)
    assert table.next_hop(C) == B
    assert route_to(table, D) is None and table.next_hop(D) is None
    assert [route.dst for route in table.routes()] == [A, B, C]
    assert reachable(table) == [A, B, C]


def test_edge_needs_both_ends():
    # C claims D, D does not list C: D stays unreachable. M claims A and B: nobody lists M.
    graph = {A: {B: 1}, B: {A: 1, C: 1}, C: {B: 1, D: 1}, D: {}, M: {A: 1, B: 1}}
    table = table_of(A, graph)
    assert route_to(table, D) is None and route_to(table, M) is None
    assert route_to(table, C) == Route(C, B, 2, 2)


def test_own_side_is_the_live_links_not_the_record():
    records = [record(B, {A: 1, C: 1}), record(C, {B: 1}), record(A, {})]
    assert route_to(compute_routes(A, {}, records), B) is None
    assert route_to(compute_routes(A, {B: 4}, records), C) == Route(C, B, 5, 2)


def test_live_neighbour_is_reachable_before_its_record_lists_us():
    records = [record(B, {C: 1}), record(C, {B: 1})]
    table = compute_routes(A, {B: 1}, records)
    assert route_to(table, B) == Route(B, B, 1, 1)
    assert route_to(table, C) == Route(C, B, 2, 2)
    # For everyone else the A-B edge waits until both records list it.
    assert route_to(compute_routes(C, {B: 1}, [record(B, {C: 1}), record(A, {B: 1})]), A) is None


def test_cheaper_longer_path_wins():
    graph = {A: {B: 1, C: 10}, B: {A: 1, D: 1}, D: {B: 1, C: 1}, C: {A: 10, D: 1}}
    assert route_to(table_of(A, graph), C) == Route(C, B, 3, 3)


def test_cost_is_the_listing_nodes_cost():
    graph = {A: {B: 1}, B: {A: 50, C: 7}, C: {B: 1}}
    assert route_to(table_of(A, graph), C).cost == 8
    assert route_to(table_of(C, graph), A).cost == 51


@pytest.mark.parametrize("seed", range(5))
def test_equal_cost_tie_goes_to_the_lowest_next_hop_whatever_the_order(seed):
    graph = {A: {C: 1, B: 1}, B: {A: 1, D: 1}, C: {A: 1, D: 1}, D: {B: 1, C: 1}}
    records = [record(node, links) for node, links in graph.items()]
    random.Random(seed).shuffle(records)
    table = compute_routes(A, {C: 1, B: 1}, records)
    assert route_to(table, D) == Route(D, B, 2, 2)


def test_hosts_of_and_own_apps():
    graph = {A: {B: 1, C: 2}, B: {A: 1, D: 5}, C: {A: 2}, D: {B: 5}, E: {}}
    apps = {B: ["shop"], C: ["shop", "wiki"], D: ["shop"], E: ["shop"]}
    table = table_of(A, graph, apps, own_apps=["wiki"])
    assert table.hosts_of("shop") == [(1, B), (2, C), (6, D)]  # E is unreachable
    assert table.hosts_of("wiki") == [(0, A), (2, C)]
    assert table.hosts_of("nope") == []
    assert table.pick_host("shop") == B
    assert table.pick_host("wiki") == A
    assert table.pick_host("nope") is None
    assert sorted(table.apps()) == ["shop", "wiki"]


def test_pick_host_spreads_over_equal_nearest_only():
    graph = {A: {B: 1, C: 1, D: 2}, B: {A: 1}, C: {A: 1}, D: {A: 2}}
    table = table_of(A, graph, {B: ["shop"], C: ["shop"], D: ["shop"]})
    rng = random.Random(1)
    picks = {table.pick_host("shop", rng) for _ in range(50)}
    assert picks == {B, C}


def test_find_nodes_by_id_then_name():
    records = [record(B, {A: 1}, name="db"), record(C, {A: 1}, name="db"), record(D, {A: 1})]
    table = compute_routes(A, {B: 1, C: 1, D: 1}, records, own_name="me")
    assert table.find_nodes(D) == [D]
    assert table.find_nodes("d") == [D]
    assert table.find_nodes("db") == [B, C]
    assert table.find_nodes("me") == [A]
    assert table.find_nodes("nobody") == []
    assert table.name_of(B) == "db"


def test_own_record_among_records_is_ignored():
    records = [record(A, {C: 1}), record(B, {A: 1})]
    table = compute_routes(A, {B: 1}, records)
    assert route_to(table, C) is None and route_to(table, B).next_hop == B


def test_keep_link_prefers_lower_initiator_then_lower_nonce():
    from_a, from_b = (A, b"\xff" * 32), (B, b"\x00" * 32)
    assert keep_link(from_a, from_b) == keep_link(from_b, from_a) == from_a
    first, second = (B, b"\x01" * 32), (B, b"\x02" * 32)
    assert keep_link(second, first) == first


# -- properties on random meshes -----------------------------------------------------------------

NODES = [letter * 32 for letter in "abcdefgh"]


@st.composite
def meshes(draw):
    """Draw a graph of listed links, not always symmetric, with directed costs."""
    graph = {node: {} for node in NODES[: draw(st.integers(2, len(NODES)))]}
    for node in graph:
        for peer in graph:
            if peer != node and draw(st.integers(0, 3)) == 0:
                graph[node][peer] = draw(st.integers(1, 5))
    return graph


def shortest(graph, own, source):
    """Bellman-Ford in ``own``'s view: its listed links count, other edges need both ends."""
    dist = {source: 0}
    for _ in graph:
        for node, links in graph.items():
            for peer, cost in links.items():
                if node in dist and (node == own or node in graph.get(peer, {})):
                    if dist[node] + cost < dist.get(peer, 1 << 30):
                        dist[peer] = dist[node] + cost
    return dist


@settings(max_examples=300)
@given(meshes())
def test_costs_are_shortest_and_next_hop_is_lowest_first_hop(graph):
    own = NODES[0]
    table = table_of(own, graph)
    dist = shortest(graph, own, own)
    assert {r.dst: r.cost for r in table.routes()} == dist
    for dst, cost in dist.items():
        if dst == own:
            continue
        first_hops = [
            peer
            for peer, link in graph[own].items()
            if link + shortest(graph, own, peer).get(dst, 1 << 30) == cost
        ]
        assert route_to(table, dst).next_hop == min(first_hops)


@settings(max_examples=300)
@given(meshes())
def test_hop_by_hop_forwarding_is_loop_free(graph):
    tables = {node: table_of(node, graph) for node in graph}
    for source in graph:
        for dst in reachable(tables[source]):
            node, seen = source, []
            while node != dst:
                assert node not in seen, f"loop {seen + [node]}"
                seen.append(node)
                node = tables[node].next_hop(dst)
                assert node is not None


# -- stepwise computation and the topology ------------------------------------------------------


def drain(slices):
    """Run a ``compute_stepwise`` generator to its end; return (table, number of yields)."""
    yields = 0
    while True:
        try:
            next(slices)
        except StopIteration as finished:
            return finished.value, yields
        yields += 1


def reference_table(own, own_links, records, own_apps=(), own_name=""):
    """Compute routes, hosts and names the plain way: one tuple-keyed Dijkstra, no packing."""
    listed = {r.node_id: dict(r.links) for r in records if r.node_id != own}
    listed[own] = dict(own_links)
    by_id = {r.node_id: r for r in records if r.node_id != own}
    routes, heap = {}, [(0, own, 0, own)]
    while heap:
        cost, first_hop, hops, node = heapq.heappop(heap)
        if node in routes:
            continue
        routes[node] = Route(node, first_hop, cost, hops)
        for peer, link_cost in listed.get(node, {}).items():
            if node == own or node in listed.get(peer, {}):
                hop = peer if node == own else first_hop
                heapq.heappush(heap, (cost + link_cost, hop, hops + 1, peer))
    hosts = {app: [(0, own)] for app in own_apps}
    names = {own: own_name}
    for node, route in routes.items():
        if node in by_id:
            names[node] = by_id[node].name
            for app, _ in by_id[node].apps:
                hosts.setdefault(app, []).append((route.cost, node))
    by_name = {name: sorted(n for n in names if names[n] == name) for name in names.values()}
    return routes, {app: sorted(found) for app, found in sorted(hosts.items())}, names, by_name


def table_contents(table):
    """Return everything a reader can get from ``table``, in the reference's shape."""
    routes = {route.dst: route for route in table.routes()}
    names = {node: table.name_of(node) for node in routes if table.name_of(node) is not None}
    by_name = {name: table.find_nodes(name) for name in names.values()}
    return routes, table.apps(), names, by_name


def random_mesh(rng, size):
    """Return (own, own_links, records) of a mesh with many equal-cost ties.

    Costs are 1 or 2, some listings are one-sided, some live neighbours have no record yet,
    names repeat and a record of ``own`` itself is among the records (it must be ignored).
    """
    nodes = [f"{rng.getrandbits(128):032x}" for _ in range(size)]
    own = nodes[0]
    links = {node: {} for node in nodes}
    for node in nodes:
        for peer in rng.sample(nodes, min(size, rng.randint(1, 5))):
            if peer != node:
                links[node][peer] = rng.randint(1, 2)
                if rng.random() < 0.85:
                    links[peer][node] = rng.randint(1, 2)
    records = [
        record(node, links[node], rng.sample(["shop", "wiki", "db"], rng.randint(0, 2)),
               name=rng.choice(["x", "y", node[:6]]))
        for node in nodes
        if node == own or rng.random() < 0.9
    ]  # fmt: skip
    own_links = dict(links[own])
    own_links[f"{rng.getrandbits(128):032x}"] = 1  # a live neighbour unknown to everyone
    return own, own_links, records


@pytest.mark.parametrize("seed", range(40))
def test_stepwise_matches_the_plain_dijkstra_at_any_step(seed):
    rng = random.Random(seed)
    own, own_links, records = random_mesh(rng, rng.choice([2, 5, 20, 60, 150]))
    expected = reference_table(own, own_links, records, own_apps=["wiki"], own_name="me")
    topology = Topology(records)
    for step in (1, 3, 256):
        slices = compute_stepwise(own, own_links, topology, ["wiki"], "me", step=step)
        table, _ = drain(slices)
        assert table_contents(table) == expected
    assert table_contents(compute_routes(own, own_links, records, ["wiki"], "me")) == expected


@pytest.mark.parametrize("seed", range(20))
def test_topology_updated_record_by_record_routes_like_a_fresh_one(seed):
    rng = random.Random(seed)
    own, own_links, records = random_mesh(rng, 40)
    _, _, other_records = random_mesh(random.Random(seed + 1000), 40)
    topology = Topology()
    # Replay a history: the nodes appear, some change their links, some expire and come back.
    for rec in rng.sample(records, len(records)):
        topology.set_record(rec)
    for rec in rng.sample(records, len(records) // 3):
        peers = [r.node_id for r in rng.sample(records, 4)]
        topology.set_record(record(rec.node_id, {p: 1 for p in peers if p != rec.node_id}))
    for rec in rng.sample(records, len(records) // 4):
        topology.remove(rec.node_id)
    for rec in records + other_records[:5]:
        topology.set_record(rec)
    final = records + other_records[:5]
    table, _ = drain(compute_stepwise(own, own_links, topology))
    assert table_contents(table) == reference_table(own, own_links, final)
    assert table_contents(table) == table_contents(compute_routes(own, own_links, final))


def chain_records(size):
    """Return the records of a line of ``size`` nodes n0 - n1 - ... with unit costs."""
    nodes = [f"{index:032x}" for index in range(size)]
    records = []
    for index, node in enumerate(nodes):
        links = {nodes[j]: 1 for j in (index - 1, index + 1) if 0 <= j < size}
        records.append(record(node, links, apps=["shop"] if index % 10 == 5 else ()))
    return nodes, records


def test_stepwise_yields_many_times_on_a_large_mesh():
    nodes, records = chain_records(2000)
    slices = compute_stepwise(nodes[0], {nodes[1]: 1}, Topology(records), step=256)
    table, yields = drain(slices)
    assert yields >= 2000 // 256
    assert route_to(table, nodes[-1]) == Route(nodes[-1], nodes[1], 1999, 1999)
    assert len(table.hosts_of("shop")) == 200


def test_a_suspended_computation_ignores_later_changes_to_the_topology():
    nodes, records = chain_records(1200)
    topology = Topology(records)
    expected = table_contents(compute_routes(nodes[0], {nodes[1]: 1}, records))
    own_links = {nodes[1]: 1}
    slices = compute_stepwise(nodes[0], own_links, topology, step=50)
    next(slices)
    # Cut the line near us, make a shortcut far away, drop nodes and add a stranger.
    topology.set_record(record(nodes[2], {nodes[3]: 1}))
    topology.set_record(record(nodes[600], {nodes[599]: 9, nodes[601]: 1}, apps=["wiki"]))
    for node in nodes[900:950]:
        topology.remove(node)
    topology.set_record(record(M, {nodes[5]: 1}))
    own_links[nodes[1]] = 7
    table, _ = drain(slices)
    assert table_contents(table) == expected
    # The changes are there for the next computation.
    after, _ = drain(compute_stepwise(nodes[0], {nodes[1]: 1}, topology))
    assert reachable(after) == sorted(nodes[:2])


def test_set_record_tells_a_refresh_from_a_change():
    topology = Topology()
    assert topology.set_record(record(B, {A: 1, C: 2}, apps=["shop"], name="b"))
    assert len(topology) == 1 and B in topology and C not in topology
    # A refresh: higher seq, new expiry, another app summary. Routing would not change.
    assert not topology.set_record(record(B, {A: 1, C: 2}, ["shop"], "b", seq=2, summary="v2"))
    assert topology.set_record(record(B, {A: 1, C: 3}, ["shop"], "b", seq=3))  # a cost
    assert topology.set_record(record(B, {A: 1}, ["shop"], "b", seq=4))  # a link less
    assert topology.set_record(record(B, {A: 1}, ["shop", "wiki"], "b", seq=5))  # an app more
    assert topology.set_record(record(B, {A: 1}, ["shop", "wiki"], "bee", seq=6))  # the name
    assert not topology.set_record(record(B, {A: 1}, ["shop", "wiki"], "bee", seq=7))
    assert topology.remove(B) and not topology.remove(B)
    assert len(topology) == 0 and B not in topology
    assert topology.set_record(record(B, {A: 1}, ["shop", "wiki"], "bee", seq=8))


def test_a_removed_node_stops_carrying_routes():
    records = [record(B, {A: 1, C: 1}), record(C, {B: 1, D: 1}), record(D, {C: 1})]
    topology = Topology(records)
    table, _ = drain(compute_stepwise(A, {B: 1}, topology))
    assert table.reachable_set() == frozenset({A, B, C, D})
    topology.remove(C)
    table, _ = drain(compute_stepwise(A, {B: 1}, topology))
    assert table.reachable_set() == frozenset({A, B})
    assert table.name_of(C) is None and table.find_nodes("c") == []
    topology.set_record(records[1])
    table, _ = drain(compute_stepwise(A, {B: 1}, topology))
    assert route_to(table, D) == Route(D, B, 3, 3)


def test_unreachable_nodes_have_no_name_and_own_name_comes_from_the_argument():
    records = [record(A, {}, name="stale-me"), record(B, {A: 1}), record(E, {}, name="e")]
    table = compute_routes(A, {B: 1}, records, own_name="me")
    assert table.name_of(A) == "me" and table.name_of(B) == "b"
    assert table.name_of(E) is None and table.find_nodes("e") == []
    assert table.find_nodes("stale-me") == []
    assert len(table) == 2


@pytest.mark.parametrize("step", [0, -1, 1.5, None])
def test_step_must_be_a_positive_int(step):
    with pytest.raises(LocalProtocolError):
        compute_stepwise(A, {}, Topology(), step=step)


def test_link_costs_below_one_are_refused():
    with pytest.raises(LocalProtocolError):
        compute_stepwise(A, {B: 0}, Topology())
    with pytest.raises(LocalProtocolError):
        Topology([record(B, {A: 0})])
    with pytest.raises(LocalProtocolError):
        Topology().set_record(record(B, {A: 1, C: 0}))
