"""Pure routing: shortest paths over confirmed edges, next hops and app hosts.

Theory of operation
-------------------
The graph is built from verified records (``records.Record``), kept in a ``Topology`` that holds
only what routing reads: each node's listed links, app names and name. ``set_record`` says
whether a record changed any of these, so a plain refresh (same links, apps and name, higher
seq) need not trigger a recompute. An edge A→B exists only when A lists B **and** B lists A, so
no node can invent a link to another. This node's own side is its *live* links (``own_links``)
rather than its last record; and because a live link has been authenticated in both directions
by the handshake, an edge from this node to a live neighbour counts even before that
neighbour's record (listing us) has arrived. The cost of A→B is the cost A lists.

Dijkstra runs from this node. Equal-cost paths are broken deterministically: the path whose first
hop has the lowest node id wins (then fewer hops), so two runs over the same records give the same
table, and tests can predict it. Each path is ranked by the tuple ``(cost, first hop, hops)``,
packed into one integer ``cost * cost_unit + rank(first hop) * hop_unit + hops`` where the rank
is the first hop's position among this node's neighbours sorted by id and ``hop_unit`` exceeds
any hop count: integers order like the tuples, compare faster, and following an edge is one
addition (``+ cost * cost_unit + 1``). Every edge costs at least 1 and adds a hop, so the key
grows strictly along any path, and a node settled at its lowest key has the lowest cost, then
the lowest first hop, then the fewest hops. The queue is a bucket per cost (every node
reached at cost d is known before the first of them is settled), so it is list appends rather
than heap operations. The adjacency is kept by the ``Topology`` itself: besides
each node's listed links it holds the confirmed ones, updated for the node and its peers when a
record changes (a few dict operations per link), so a computation only walks edges.

``compute_stepwise`` is the same computation as a generator that yields after every slice of
work, so that an IO adapter (``xio.node.routes.RouteKeeper``) can let requests run between
slices and swap the finished table in whole; ``compute_routes`` drains it in one go. The
computation works on a snapshot taken when ``compute_stepwise`` is called: a shallow copy of the
topology's maps (C speed, well under a millisecond at 4000 nodes). The per-node dicts are
shared, not copied: ``Topology`` replaces a node's dict on update and never changes one in
place, so the snapshot cannot see a later update.

App resolution: ``hosts_of(app)`` lists reachable nodes whose record names the app (this node's
own apps come from the ``own_apps`` argument, at cost 0). ``pick_host`` chooses at random among
the equal-lowest-cost hosts, so load spreads over copies at the same distance. ``pins`` (an
operator's ``--pin-app APP=ID,ID``) maps an app to the only nodes that may serve it: any other
host of that app, this node included, is kept apart in ``excluded_hosts`` and never picked.

Nothing here holds sockets, sleeps or reads clocks.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter

from xio.errors import LocalProtocolError
from xio.peering.records import Record

__all__ = [
    "Route",
    "RoutingTable",
    "Topology",
    "compute_routes",
    "compute_stepwise",
    "keep_link",
]

# A slice also ends after this many listed links were checked per node of ``step``, so that a
# slice over a dense mesh (64 links a node) lasts about as long as one over a sparse one.
LINKS_PER_STEP_NODE = 16

_first = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Route:
    """The best known way to ``dst``: send to ``next_hop``; total ``cost`` over ``hops`` links.

    The route to this node itself is ``Route(own_id, own_id, 0, 0)``: deliver locally.
    """

    dst: str
    next_hop: str
    cost: int
    hops: int


class Version:
    """A count of the changes to what routing reads, and whom to tell of each one.

    The topology bumps it when a record changes what routing reads, the node's link table when
    a link comes up or goes down, so nobody has to remember to invalidate the routing table:
    the route keeper watches the count, and a table computed at one value is stale once the
    count has moved on.
    """

    __slots__ = ("value", "_listeners")

    def __init__(self) -> None:
        self.value = 0
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"Version({self.value})"

    def bump(self) -> None:
        """Count one change and tell every listener (who must not raise)."""
        self.value += 1
        for listener in self._listeners:
            listener()

    def watch(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change from now on."""
        self._listeners.append(listener)


class Topology:
    """Hold the routing-relevant content of the accepted records: links, app names, name.

    Updated one record at a time by whoever owns the record store. Besides each node's listed
    links it keeps the *confirmed* ones (listed by both ends), updated at each change for the
    node and the peers it lists, so that a computation does not check every edge again. A
    node's dicts are replaced on update, never changed in place, which is what makes
    ``compute_stepwise``'s snapshot cheap and consistent. Every change bumps ``version``.
    """

    __slots__ = ("_links", "_confirmed", "_apps", "_names", "version")

    def __init__(self, records: Iterable[Record] = (), version: Version | None = None) -> None:
        self.version = Version() if version is None else version
        self._links: dict[str, dict[str, int]] = {}  # node -> {peer: cost} as listed
        self._confirmed: dict[str, dict[str, int]] = {}  # node -> {peer listing it back: cost}
        self._apps: dict[str, tuple[str, ...]] = {}
        self._names: dict[str, str] = {}
        self._load(records)

    def __repr__(self) -> str:
        return f"Topology({len(self._links)} nodes)"

    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._links

    def __iter__(self) -> Iterator[str]:
        return iter(self._links)

    def _load(self, records: Iterable[Record]) -> None:
        """Fill an empty topology: the links first, then each confirmed set in one pass."""
        listed, apps, names = self._links, self._apps, self._names
        for record in records:  # of two records of one node, the later one counts
            node = record.node_id
            listed[node] = _checked_links(record)
            apps[node] = tuple(map(_first, record.apps))
            names[node] = record.name
        for node, links in listed.items():
            self._confirmed[node] = confirmed = {}
            for peer, cost in links.items():  # a plain loop: a comprehension is a call per node
                back = listed.get(peer)
                if back is not None and node in back:
                    confirmed[peer] = cost

    def set_record(self, record: Record) -> bool:
        """Store what routing needs of ``record``; return True if the node is new or changed.

        A refresh with the same name, links (and costs) and app names returns False: the
        routing table it would give is the one already computed. App summaries are ignored.
        """
        node = record.node_id
        links = _checked_links(record)
        apps = tuple(map(_first, record.apps))  # the names, not the summaries
        old_links = self._links.get(node)
        if old_links == links and self._names[node] == record.name and self._apps[node] == apps:
            return False
        self._links[node] = links
        self._apps[node] = apps
        self._names[node] = record.name
        if old_links != links:
            self._confirm(node, old_links or {}, links)
        self.version.bump()
        return True

    def remove(self, node_id: str) -> bool:
        """Forget node ``node_id`` (its record expired); return True if it was known."""
        old_links = self._links.pop(node_id, None)
        if old_links is None:
            return False
        del self._apps[node_id], self._names[node_id], self._confirmed[node_id]
        for peer in old_links:
            self._set_edge(peer, node_id, None)
        self.version.bump()
        return True

    def _confirm(self, node: str, old_links: dict[str, int], links: dict[str, int]) -> None:
        """Recompute the confirmed edges from and to ``node`` after its links changed."""
        listed = self._links
        confirmed = {}
        for peer, cost in links.items():
            back = listed.get(peer)
            if back is not None and node in back:
                confirmed[peer] = cost
        self._confirmed[node] = confirmed
        # Only a peer that ``node`` listed before or lists now can gain or lose an edge to it;
        # the edge's cost is the one the peer lists, which did not change.
        for peer in old_links.keys() | links.keys():
            back = listed.get(peer)
            if back is not None and node in back:
                self._set_edge(peer, node, back[node] if peer in links else None)

    def _set_edge(self, node: str, peer: str, cost: int | None) -> None:
        edges = self._confirmed.get(node)
        if edges is None or edges.get(peer) == cost:
            return
        edges = dict(edges)  # a copy: a snapshot being computed may hold the old dict
        if cost is None:
            del edges[peer]
        else:
            edges[peer] = cost
        self._confirmed[node] = edges

    def _snapshot(self) -> tuple[dict[str, dict[str, int]], dict[str, tuple[str, ...]], dict]:
        return dict(self._confirmed), dict(self._apps), dict(self._names)


def _checked_links(record: Record) -> dict[str, int]:
    """Return the record's links as a dict; costs below 1 would break the bucket queue."""
    links = dict(record.links)
    if links and min(links.values()) < 1:
        raise LocalProtocolError(f"record of {record.node_id} lists a link cost below 1")
    return links


class _Paths:
    """The settled keys of one Dijkstra run and how to decode them into routes."""

    __slots__ = ("own_id", "keys", "first_hops", "hop_unit", "cost_unit")

    def __init__(
        self, own_id: str, keys: dict[str, int], first_hops: list[str], hop_unit: int
    ) -> None:
        self.own_id = own_id
        self.keys = keys  # node id -> packed (cost, first hop rank, hops)
        self.first_hops = first_hops  # this node's neighbours, sorted: rank -> id
        self.hop_unit = hop_unit
        self.cost_unit = hop_unit * max(len(first_hops), 1)

    def next_hop(self, key: int) -> str:
        if key == 0:
            return self.own_id
        return self.first_hops[(key % self.cost_unit) // self.hop_unit]

    def route(self, dst: str, key: int) -> Route:
        return Route(dst, self.next_hop(key), key // self.cost_unit, key % self.hop_unit)


class RoutingTable:
    """An immutable routing table computed by ``compute_routes`` or ``compute_stepwise``."""

    def __init__(
        self,
        paths: _Paths,
        apps: dict[str, list[tuple[int, str]]],
        own_name: str,
        names: dict[str, str],
        nodes_by_name: dict[str, str | list[str]],
        excluded: dict[str, list[tuple[int, str]]] | None = None,
    ) -> None:
        self.own_id = paths.own_id
        self._excluded = excluded or {}
        self._paths = paths
        self._keys = paths.keys
        self._apps = apps
        self._own_name = own_name
        self._names = names  # every node's name from the snapshot, reachable or not
        self._nodes_by_name = nodes_by_name
        self._reachable: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"RoutingTable({self.own_id!r}, {len(self._keys)} routes, {len(self._apps)} apps)"

    def __len__(self) -> int:
        """Return the number of reachable nodes, this one included."""
        return len(self._keys)

    def next_hop(self, dst: str) -> str | None:
        """Return the neighbour to send a frame for ``dst`` to, or None."""
        key = self._keys.get(dst)
        return None if key is None else self._paths.next_hop(key)

    def routes(self) -> list[Route]:
        """Return every route, this node's own first, then by destination id."""
        order = sorted(self._keys, key=lambda dst: (dst != self.own_id, dst))
        return [self._paths.route(dst, self._keys[dst]) for dst in order]

    def reachable_set(self) -> frozenset[str]:
        """Return the ids of every reachable node (this one included) as a set, built once."""
        if self._reachable is None:
            self._reachable = frozenset(self._keys)
        return self._reachable

    def name_of(self, node_id: str) -> str | None:
        """Return the name a reachable node gives itself."""
        if node_id == self.own_id:
            return self._own_name
        return self._names.get(node_id) if node_id in self._keys else None

    def apps(self) -> dict[str, list[tuple[int, str]]]:
        """Return ``{app: hosts_of(app)}`` for every app hosted on a reachable node."""
        return {app: list(hosts) for app, hosts in sorted(self._apps.items())}

    def hosts_of(self, app: str) -> list[tuple[int, str]]:
        """Return ``[(cost, node_id), ...]`` of the reachable nodes hosting ``app``, nearest first."""
        return list(self._apps.get(app, ()))

    def excluded_hosts(self) -> dict[str, list[tuple[int, str]]]:
        """Return ``{app: [(cost, node_id), ...]}`` of reachable hosts left out by a pin."""
        return {app: list(hosts) for app, hosts in sorted(self._excluded.items())}

    def serves(self, app: str, node_id: str) -> bool:
        """Tell whether ``node_id`` may be sent requests for ``app`` (no pin leaves it out)."""
        return all(node != node_id for _, node in self._excluded.get(app, ()))

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
        if token in self._keys:
            return [token]
        found = self._nodes_by_name.get(token)
        if found is None:
            return []
        return [found] if type(found) is str else list(found)


def compute_routes(
    own_id: str,
    own_links: Mapping[str, int],
    records: Iterable[Record],
    own_apps: Iterable[str] = (),
    own_name: str = "",
    *,
    pins: Mapping[str, frozenset[str]] | None = None,
) -> RoutingTable:
    """Compute the routing table of node ``own_id`` in one go.

    ``own_links`` maps each live neighbour to the link cost; ``records`` are the verified records
    of the other nodes (a record of ``own_id`` among them is ignored); ``own_apps`` are the apps
    hosted here; ``pins`` maps an app to the only node ids that may serve it.
    """
    slices = compute_stepwise(own_id, own_links, Topology(records), own_apps, own_name,
                              pins=pins)  # fmt: skip
    while True:
        try:
            next(slices)
        except StopIteration as finished:
            return finished.value


def compute_stepwise(
    own_id: str,
    own_links: Mapping[str, int],
    topology: Topology,
    own_apps: Iterable[str] = (),
    own_name: str = "",
    *,
    step: int = 256,
    pins: Mapping[str, frozenset[str]] | None = None,
) -> Generator[None, None, RoutingTable]:
    """Return a generator computing ``compute_routes``' table in slices; it returns the table.

    The generator yields None after every ``step`` settled nodes (or ``step * 16`` checked
    links), and as often while it collects apps and names, so the caller can give the CPU away
    between slices: ``table = yield from compute_stepwise(...)``. The inputs are copied now, at
    the call: changing ``topology`` or ``own_links`` while the generator is suspended does not
    change the table it returns (see the module docstring for why the copy is cheap).
    """
    if type(step) is not int or step < 1:
        raise LocalProtocolError(f"step must be a positive int, not {step!r}")
    if own_links and min(own_links.values()) < 1:
        raise LocalProtocolError("own link costs must be at least 1")
    confirmed_of, apps_of, names_of = topology._snapshot()
    return _compute(own_id, dict(own_links), confirmed_of, apps_of, names_of,
                    tuple(own_apps), own_name, step, dict(pins or {}))  # fmt: skip


def _compute(
    own_id: str,
    own_links: dict[str, int],
    confirmed_of: dict[str, dict[str, int]],
    apps_of: dict[str, tuple[str, ...]],
    names_of: dict[str, str],
    own_apps: tuple[str, ...],
    own_name: str,
    step: int,
    pins: dict[str, frozenset[str]],
) -> Generator[None, None, RoutingTable]:
    paths = yield from _shortest_paths(own_id, own_links, confirmed_of, step)
    apps: dict[str, list[tuple[int, str]]] = {}
    for app in own_apps:
        apps.setdefault(app, []).append((0, own_id))
    # A name maps to its node's id, or to a list when several nodes share it: one list per
    # node would be thousands of containers for the garbage collector at each computation.
    nodes_by_name: dict[str, str | list[str]] = {own_name: own_id}
    cost_unit = paths.cost_unit
    done = 0
    for node, key in paths.keys.items():
        node_apps = apps_of.get(node)
        if node_apps is None or node == own_id:
            continue  # a live neighbour without a record yet; or this node, described above
        name = names_of[node]
        same_name = nodes_by_name.get(name)
        if same_name is None:
            nodes_by_name[name] = node
        elif type(same_name) is str:
            nodes_by_name[name] = [same_name, node]
        else:
            same_name.append(node)
        if node_apps:
            cost = key // cost_unit
            for app in node_apps:
                hosts = apps.get(app)
                if hosts is None:
                    apps[app] = [(cost, node)]
                else:
                    hosts.append((cost, node))
        done += 1
        if done == step:
            done = 0
            yield
    excluded = _apply_pins(apps, pins)
    sorted_items = 0
    for group in (apps, nodes_by_name):
        for items in group.values():
            if type(items) is list and len(items) > 1:
                items.sort()
                sorted_items += len(items)
                if sorted_items >= step * 4:  # sorting costs more per item than a link check
                    sorted_items = 0
                    yield
    return RoutingTable(paths, apps, own_name, names_of, nodes_by_name, excluded)


def _apply_pins(
    apps: dict[str, list[tuple[int, str]]], pins: dict[str, frozenset[str]]
) -> dict[str, list[tuple[int, str]]]:
    """Take the hosts a pin leaves out of ``apps`` (in place) and return them, by app."""
    excluded = {}
    for app, allowed in pins.items():  # few apps are pinned: filtering after is cheaper
        hosts = apps.get(app)
        if hosts is not None:
            kept = [(cost, node) for cost, node in hosts if node in allowed]
            out = [(cost, node) for cost, node in hosts if node not in allowed]
            if out:
                excluded[app] = sorted(out)
            if kept:
                apps[app] = kept
            else:
                del apps[app]
    return excluded


def _shortest_paths(
    own_id: str, own_links: dict[str, int], confirmed_of: dict[str, dict[str, int]], step: int
) -> Generator[None, None, _Paths]:
    """Run Dijkstra from ``own_id`` on packed keys, with one bucket per cost.

    Every link costs at least 1, so the nodes reached at cost d are all known once the nodes
    of lower cost are settled; a bucket is then settled in any order, each node with the best
    key found for it (see the module docstring). Buckets make the queue list appends instead
    of heap operations; a small heap orders the distinct costs.
    """
    first_hops = sorted(peer for peer in own_links if peer != own_id)
    # More than any path's hop count: a path visits each node at most once.
    hop_unit = len(confirmed_of) + len(first_hops) + 2
    cost_unit = hop_unit * max(len(first_hops), 1)
    best = {own_id: 0}
    buckets: dict[int, list[str]] = {}
    for rank, peer in enumerate(first_hops):
        best[peer] = own_links[peer] * cost_unit + rank * hop_unit + 1
        buckets.setdefault(own_links[peer], []).append(peer)
    costs = list(buckets)
    heapq.heapify(costs)
    best_known, unreached = best.get, 1 << 256  # above any key
    done = {own_id}
    settled = checked = 0
    link_budget = step * LINKS_PER_STEP_NODE
    while costs:
        cost_here = heapq.heappop(costs)
        for node in buckets.pop(cost_here):
            if node in done:
                continue  # listed again in a bucket of higher cost, or twice in this one
            done.add(node)
            edges = confirmed_of.get(node)
            if edges:
                one_more_hop = best[node] + 1
                for peer, cost in edges.items():
                    candidate = one_more_hop + cost * cost_unit
                    if candidate < best_known(peer, unreached):
                        best[peer] = candidate
                        bucket = buckets.get(cost_here + cost)
                        if bucket is None:
                            buckets[cost_here + cost] = [peer]
                            heapq.heappush(costs, cost_here + cost)
                        else:
                            bucket.append(peer)
                checked += len(edges)
            settled += 1
            if settled >= step or checked >= link_budget:
                settled = checked = 0
                yield
    return _Paths(own_id, best, first_hops, hop_unit)


def keep_link(link_a: tuple[str, bytes], link_b: tuple[str, bytes]) -> tuple[str, bytes]:
    """Choose which of two links between the same pair of nodes both ends keep.

    Each link is named by ``(initiator_id, initiator_nonce)``, known to both ends after the
    handshake. The link whose initiator has the lower node id is kept; if one node initiated
    both, the one with the lower initiator nonce. Both ends compute the same answer without
    talking, and close the other link with ``bye("duplicate_link")``.
    """
    return min(link_a, link_b)
