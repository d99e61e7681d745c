"""Routing: confirmed edges only, shortest paths, deterministic ties, app hosts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xio.peering.records import Record
from xio.peering.routing import Route, compute_routes, keep_link

# Node ids sort in the order of their letter: "a"*32 < "b"*32 < ...
A, B, C, D, E, M = (letter * 32 for letter in "abcdem")


def record(node, links, apps=(), name=None) -> Record:
    """Return a record as the store would hold it (routing trusts verified records)."""
    return Record(
        node_id=node,
        public_key=bytes(32),
        seq=1,
        issued_ms=0,
        expires_ms=60_000,
        name=name if name is not None else node[0],
        version="0",
        urls=(),
        links=tuple(sorted(links.items())),
        apps=tuple((app, "") for app in sorted(apps)),
    )


def table_of(own, graph, apps=None, own_apps=()):
    """Compute ``own``'s table where ``graph`` maps each node to its listed links."""
    apps = apps or {}
    records = [record(node, links, apps.get(node, ())) for node, links in graph.items()]
    return compute_routes(own, graph.get(own, {}), records, own_apps=own_apps, own_name="me")


def test_line():
    graph = {A: {B: 1}, B: {A: 1, C: 2}, C: {B: 2}}
    table = table_of(A, graph)
    assert table.route(A) == Route(A, A, 0, 0)
    assert table.route(B) == Route(B, B, 1, 1)
    assert table.route(C) == Route(C, B, 3, 2)
    assert table.next_hop(C) == B
    assert table.route(D) is None and table.next_hop(D) is None
    assert [route.dst for route in table.routes()] == [A, B, C]
    assert table.reachable() == [A, B, C]


def test_edge_needs_both_ends():
    # C claims D, D does not list C: D stays unreachable. M claims A and B: nobody lists M.
    graph = {A: {B: 1}, B: {A: 1, C: 1}, C: {B: 1, D: 1}, D: {}, M: {A: 1, B: 1}}
    table = table_of(A, graph)
    assert table.route(D) is None and table.route(M) is None
    assert table.route(C) == Route(C, B, 2, 2)


def test_own_side_is_the_live_links_not_the_record():
    records = [record(B, {A: 1, C: 1}), record(C, {B: 1}), record(A, {})]
    assert compute_routes(A, {}, records).route(B) is None
    assert compute_routes(A, {B: 4}, records).route(C) == Route(C, B, 5, 2)


def test_live_neighbour_is_reachable_before_its_record_lists_us():
    records = [record(B, {C: 1}), record(C, {B: 1})]
    table = compute_routes(A, {B: 1}, records)
    assert table.route(B) == Route(B, B, 1, 1)
    assert table.route(C) == Route(C, B, 2, 2)
    # For everyone else the A-B edge waits until both records list it.
    assert compute_routes(C, {B: 1}, [record(B, {C: 1}), record(A, {B: 1})]).route(A) is None


def test_cheaper_longer_path_wins():
    graph = {A: {B: 1, C: 10}, B: {A: 1, D: 1}, D: {B: 1, C: 1}, C: {A: 10, D: 1}}
    assert table_of(A, graph).route(C) == Route(C, B, 3, 3)


def test_cost_is_the_listing_nodes_cost():
    graph = {A: {B: 1}, B: {A: 50, C: 7}, C: {B: 1}}
    assert table_of(A, graph).route(C).cost == 8
    assert table_of(C, graph).route(A).cost == 51


@pytest.mark.parametrize("seed", range(5))
def test_equal_cost_tie_goes_to_the_lowest_next_hop_whatever_the_order(seed):
    graph = {A: {C: 1, B: 1}, B: {A: 1, D: 1}, C: {A: 1, D: 1}, D: {B: 1, C: 1}}
    records = [record(node, links) for node, links in graph.items()]
    random.Random(seed).shuffle(records)
    table = compute_routes(A, {C: 1, B: 1}, records)
    assert table.route(D) == Route(D, B, 2, 2)


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
    assert table.route(C) is None and table.route(B).next_hop == B


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
        assert table.route(dst).next_hop == min(first_hops)


@settings(max_examples=300)
@given(meshes())
def test_hop_by_hop_forwarding_is_loop_free(graph):
    tables = {node: table_of(node, graph) for node in graph}
    for source in graph:
        for dst in tables[source].reachable():
            node, seen = source, []
            while node != dst:
                assert node not in seen, f"loop {seen + [node]}"
                seen.append(node)
                node = tables[node].next_hop(dst)
                assert node is not None
