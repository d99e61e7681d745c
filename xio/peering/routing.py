"""Pure routing: shortest paths over confirmed edges, next hops and app hosts.

Theory of operation
-------------------
The graph is built from verified records (``records.Record``). An edge A→B exists only when
A's record lists B **and** B's record lists A, so no node can invent a link to another. This
node's own side is its *live* links (``own_links``) rather than its last record; and because a
live link has been authenticated in both directions by the handshake, an edge from this node to
a live neighbour counts even before that neighbour's record (listing us) has arrived. The cost of
A→B is the cost A lists.

Dijkstra runs from this node. Equal-cost paths are broken deterministically: the path whose first
hop has the lowest node id wins (then fewer hops), so two runs over the same records give the same
table, and tests can predict it. Heap entries are ``(cost, next_hop, hops, node)``; because every
cost is at least 1, all the predecessors of a node at distance d are settled before any entry of
distance d is popped, so the first pop of a node carries its lowest next hop.

App resolution: ``hosts_of(app)`` lists reachable nodes whose record names the app (this node's
own apps come from the ``own_apps`` argument, at cost 0). ``pick_host`` chooses at random among
the equal-lowest-cost hosts, so load spreads over copies at the same distance.

Nothing here holds sockets or reads clocks; the node recomputes a table whenever the record store
or its live links change (a 500-node table takes milliseconds) and swaps it in whole.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from xio.peering.records import Record

__all__ = ["Route", "RoutingTable", "compute_routes", "keep_link"]


@dataclass(frozen=True, slots=True)
class Route:
    """The best known way to ``dst``: send to ``next_hop``; total ``cost`` over ``hops`` links.

    The route to this node itself is ``Route(own_id, own_id, 0, 0)``: deliver locally.
    """

    dst: str
    next_hop: str
    cost: int
    hops: int


class RoutingTable:
    """An immutable routing table computed by ``compute_routes``."""

    def __init__(
        self,
        own_id: str,
        routes: dict[str, Route],
        apps: dict[str, list[tuple[int, str]]],
        names: dict[str, str],
    ) -> None:
        self.own_id = own_id
        self._routes = routes
        self._apps = apps
        self._names = names

    def __repr__(self) -> str:
        return f"RoutingTable({self.own_id!r}, {len(self._routes)} routes, {len(self._apps)} apps)"

    def route(self, dst: str) -> Route | None:
        """Return the route to node ``dst``, or None if it is unreachable."""
        return self._routes.get(dst)

    def next_hop(self, dst: str) -> str | None:
        """Return the neighbour to send a frame for ``dst`` to, or None."""
        route = self._routes.get(dst)
        return route.next_hop if route else None

    def routes(self) -> list[Route]:
        """Return every route, this node's own first, then by destination id."""
        return sorted(self._routes.values(), key=lambda r: (r.dst != self.own_id, r.dst))

    def reachable(self) -> list[str]:
        """Return the ids of every reachable node (this one included), sorted."""
        return sorted(self._routes)

    def name_of(self, node_id: str) -> str | None:
        """Return the name a reachable node gives itself."""
        return self._names.get(node_id)

    def apps(self) -> dict[str, list[tuple[int, str]]]:
        """Return ``{app: hosts_of(app)}`` for every app hosted on a reachable node."""
        return {app: list(hosts) for app, hosts in sorted(self._apps.items())}

    def hosts_of(self, app: str) -> list[tuple[int, str]]:
        """Return ``[(cost, node_id), ...]`` of the reachable nodes hosting ``app``, nearest first."""
        return list(self._apps.get(app, ()))

    def pick_host(self, app: str, rng: random.Random | None = None) -> str | None:
        """Choose a node to serve ``app``: at random among the equally nearest hosts."""
        hosts = self._apps.get(app)
        if not hosts:
            return None
        best = hosts[0][0]
        nearest = [node for cost, node in hosts if cost == best]
        if len(nearest) == 1:
            return nearest[0]
        return (rng or random).choice(nearest)

    def find_nodes(self, token: str) -> list[str]:
        """Return reachable node ids matching ``token`` as an id, else as a name (sorted).

        Used for ``/~<id-or-name>/<app>/...``: no match is a 404, several are ambiguous.
        """
        if token in self._routes:
            return [token]
        return sorted(node for node, name in self._names.items() if name == token)


def compute_routes(
    own_id: str,
    own_links: Mapping[str, int],
    records: Iterable[Record],
    own_apps: Iterable[str] = (),
    own_name: str = "",
) -> RoutingTable:
    """Compute the routing table of node ``own_id``.

    ``own_links`` maps each live neighbour to the link cost; ``records`` are the verified records
    of the other nodes (a record of ``own_id`` among them is ignored); ``own_apps`` are the apps
    hosted here.
    """
    listed: dict[str, dict[str, int]] = {}
    by_id: dict[str, Record] = {}
    for record in records:
        if record.node_id != own_id:
            by_id[record.node_id] = record
            listed[record.node_id] = dict(record.links)
    listed[own_id] = dict(own_links)

    def neighbours(node: str) -> Iterable[tuple[str, int]]:
        for peer, cost in listed.get(node, {}).items():
            if node == own_id or node in listed.get(peer, ()):
                yield peer, cost

    routes = _dijkstra(own_id, neighbours)
    names = {own_id: own_name}
    apps: dict[str, list[tuple[int, str]]] = {}
    for app in own_apps:
        apps.setdefault(app, []).append((0, own_id))
    for node, route in routes.items():
        record = by_id.get(node)
        if record is None:
            continue
        names[node] = record.name
        for app, _summary in record.apps:
            apps.setdefault(app, []).append((route.cost, node))
    for hosts in apps.values():
        hosts.sort()
    return RoutingTable(own_id, routes, apps, names)


def _dijkstra(source: str, neighbours) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    heap: list[tuple[int, str, int, str]] = [(0, source, 0, source)]
    while heap:
        cost, first_hop, hops, node = heapq.heappop(heap)
        if node in routes:
            continue
        routes[node] = Route(node, first_hop, cost, hops)
        for peer, link_cost in neighbours(node):
            if peer not in routes:
                hop = peer if node == source else first_hop
                heapq.heappush(heap, (cost + link_cost, hop, hops + 1, peer))
    return routes


def keep_link(link_a: tuple[str, bytes], link_b: tuple[str, bytes]) -> tuple[str, bytes]:
    """Choose which of two links between the same pair of nodes both ends keep.

    Each link is named by ``(initiator_id, initiator_nonce)``, known to both ends after the
    handshake. The link whose initiator has the lower node id is kept; if one node initiated
    both, the one with the lower initiator nonce. Both ends compute the same answer without
    talking, and close the other link with ``bye("duplicate_link")``.
    """
    return min(link_a, link_b)
