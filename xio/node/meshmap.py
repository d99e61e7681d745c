"""The mesh as this node sees it (``GET /_xio/map``), and the link RTTs records carry.

Theory of operation. Every node holds the whole link-state graph: the records in its store,
each with the origin's links ``(neighbour id, cost)`` and apps (docs/PROTOCOL.md, section 8).
``mesh_map`` turns those records into one snapshot for the mesh map page (``/_xio/ui``):
a node per record, and a link per pair of nodes that names the other, drawn once.

The RTT of a link is known first-hand only for this node's own links: each link's session
measures it from its pings. For the links of other nodes, each node may carry what its own
sessions measured in its record, ``ext["rtt"] = [[neighbour id, microseconds], ...]`` (8.7):
records are re-originated every lifetime / 3 and on link changes, so such an RTT is "as of
the last record", not live. ``rtt_ext`` builds that value, within bounds a receiver checks
(``rtt_of``); a malformed one is ignored whole, and the link shows its cost only. The value
never changes a route: routing reads costs, never ``ext``. It is an array of pairs, as
``links`` is, not a map: a version-1 decoder takes no map of over 16 entries anywhere in a
record (``records.decode_body``), so a map of a node's 17 RTTs would make its whole record
malformed at every receiver.

Pure: takes records, RTTs and the time, returns plain dicts; imports no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..peering.identity import is_node_id
from ..peering.records import Record

__all__ = ["MAX_RTT_ENTRIES", "MAX_RTT_US", "RTT_EXT", "mesh_map", "rtt_ext", "rtt_of"]

#: The key of a record's ``ext`` that carries the origin's measured link RTTs.
RTT_EXT = "rtt"
#: At most this many RTTs in one record: about 2.5 KiB, so a record that must shed links to
#: fit its size limit (xio.node.originator) never fails for this extension alone.
MAX_RTT_ENTRIES = 64
#: An RTT over a minute is no RTT: a link dies long before (--link-timeout).
MAX_RTT_US = 60_000_000


def rtt_ext(rtts: Mapping[str, float | None]) -> list[list]:
    """Return the ``ext["rtt"]`` of our record: ``[[peer id, µs], ...]`` for links measured.

    ``rtts`` maps each linked peer to its session's RTT in seconds (None: not measured yet).
    The first ``MAX_RTT_ENTRIES`` peers by id are kept, in id order.
    """
    measured = []
    for peer, seconds in sorted(rtts.items()):
        if seconds is None or not 0 <= seconds * 1e6 <= MAX_RTT_US:  # also refuses NaN
            continue
        measured.append([peer, int(round(seconds * 1e6))])
    return measured[:MAX_RTT_ENTRIES]


def rtt_of(record: Record) -> dict[str, int]:
    """Return the link RTTs (µs) ``record`` carries, or ``{}`` if it has none or a bad one.

    A value must be an array of at most ``MAX_RTT_ENTRIES`` pairs ``[neighbour id, µs]``,
    ids strictly ascending, each a neighbour the record lists, each RTT an integer in
    ``0..MAX_RTT_US``; anything else is ignored whole: a peer's garbage shows as nothing.
    """
    value = next((v for key, v in record.ext if key == RTT_EXT), None)
    if type(value) not in (list, tuple) or len(value) > MAX_RTT_ENTRIES:
        return {}
    neighbours = {peer for peer, _ in record.links}
    found: dict[str, int] = {}
    last = ""
    for pair in value:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            return {}
        peer, micros = pair
        if not (type(peer) is str and peer > last and is_node_id(peer) and peer in neighbours):
            return {}
        if not (type(micros) is int and 0 <= micros <= MAX_RTT_US):
            return {}
        found[peer] = micros
        last = peer
    return found


def mesh_map(
    own_id: str,
    records: Iterable[Record],
    own_rtts: Mapping[str, float | None],
    now_ms: int,
    reachable: Iterable[str] = (),
) -> dict:
    """Return the mesh as ``own_id`` sees it: ``{"self": id, "nodes": [...], "links": [...]}``.

    ``records`` are every record held, this node's own included; ``own_rtts`` the RTT in
    seconds of each of our links (None: not measured yet); ``reachable`` the ids the routing
    table reaches. A link is listed once, ends ordered by id, with the cost its first end
    states (else the other's), ``both_ends`` when each end lists it (routing uses only such
    links), and ``rtt_ms`` with its ``rtt_source``: ``"session"`` (ours, live) or ``"record"``
    (as of the end's last record); None where unknown.
    """
    reachable = frozenset(reachable)
    by_id = {record.node_id: record for record in records}
    nodes = []
    for node_id in sorted(by_id, key=lambda i: (i != own_id, i)):
        record = by_id[node_id]
        nodes.append({
            "id": node_id, "name": record.name, "version": record.version,
            "urls": list(record.urls), "apps": record.app_names(), "is_self": node_id == own_id,
            "reachable": node_id == own_id or node_id in reachable, "seq": record.seq,
            "age_s": round(max(now_ms - record.issued_ms, 0) / 1000, 3),
        })  # fmt: skip
    stated: dict[tuple[str, str], dict[str, int]] = {}  # (a, b) -> {end: its cost}
    for record in by_id.values():
        for peer, cost in record.links:
            pair = (min(record.node_id, peer), max(record.node_id, peer))
            stated.setdefault(pair, {})[record.node_id] = cost
    for peer in own_rtts:  # a live link our record does not list yet (origination lags)
        if peer in by_id:
            stated.setdefault((min(own_id, peer), max(own_id, peer)), {})
    rtts = {node_id: rtt_of(record) for node_id, record in by_id.items()}
    links = []
    for (a, b), costs in sorted(stated.items()):
        cost = costs.get(a, costs.get(b, 1))
        rtt_ms, source = _link_rtt(own_id, a, b, own_rtts, rtts)
        links.append({
            "a": a, "b": b, "cost": cost, "both_ends": len(costs) == 2,
            "rtt_ms": rtt_ms, "rtt_source": source,
        })  # fmt: skip
    return {"self": own_id, "nodes": nodes, "links": links}


def _link_rtt(own_id, a, b, own_rtts, rtts) -> tuple[float | None, str | None]:
    if own_id in (a, b):  # ours: the session's measure, live
        seconds = own_rtts.get(b if a == own_id else a)
        if seconds is not None:
            return round(seconds * 1000, 3), "session"
        return None, None
    for end, other in ((a, b), (b, a)):
        micros = rtts.get(end, {}).get(other)
        if micros is not None:
            return round(micros / 1000, 3), "record"
    return None, None
