"""Request traces: where a request spent its time, node by node (``xio-node trace``).

Theory of operation (docs/PROTOCOL.md, sections 4 and 11.2). An admin client asks for a trace
with the request header ``X-Xio-Trace: 1``; the ingress then sends its ``req`` with
``trace: true``, and every relay copies the flag as it copies ``src``, ``n`` and ``mac``. On the
way back each node appends one *entry* to the ``res``'s ``trace`` array:

    [node_id, node_us, total_us]

``total_us`` runs from the node's receipt of the ``req`` (the ingress: from the start of its
forwarding) to the moment it hands the ``res`` on; ``node_us`` is the part of it spent at that
node: all of it at the destination (the app included), and at a relay or the ingress the time
until the ``req`` was queued on the next link plus the time from the ``res``'s arrival to its
hand-over. So the array holds the destination first and the ingress last, and the time of the
link from hop ``i - 1`` to hop ``i`` (both ways, with the next node's wait to be read) is

    link_us(i) = total_us(i - 1) - node_us(i - 1) - total_us(i)

(``link_times``). Each node measures on its own monotonic clock: no clocks are compared.

A trace is a diagnostic, not a proof: no MAC covers it (section 11.1), so a relay may lie about
the times of the nodes beyond it, never about the answer itself (status, headers and body stay
covered). A peer may send anything: ``read_trace`` takes an entry array as decoded and returns
it checked and bounded, or None, and the caller drops a bad one (counted ``bad_trace``) and
appends its own entry to nothing, so a bad trace never costs the answer.

The ingress hands the trace to the HTTP client in the response header ``X-Xio-Trace``, in hop
order (the ingress first), entries ``<id>;<node_us>;<total_us>`` joined by ``,``
(``header_value``, ``parse_header``), and only to clients that may read ``/_xio/``.

Pure: no sockets, no clock.
"""

from __future__ import annotations

from xio.peering.identity import NODE_ID_PATTERN

__all__ = [
    "MAX_ENTRIES",
    "MAX_US",
    "TRACE",
    "TraceEntry",
    "append_entry",
    "header_value",
    "link_times",
    "parse_header",
    "read_trace",
]

TRACE = "X-Xio-Trace"
#: The most entries a trace holds: a req crosses at most 255 hops, plus its ingress.
MAX_ENTRIES = 256
#: The largest time of an entry, in microseconds (uint32: 71 minutes, past any deadline).
MAX_US = 2**32 - 1
_is_node_id = NODE_ID_PATTERN.fullmatch

#: One node's entry: (node id, microseconds spent at that node, microseconds in all).
TraceEntry = tuple[str, int, int]


def _is_us(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_US


def read_trace(value, limit: int = MAX_ENTRIES) -> tuple[TraceEntry, ...] | None:
    """Return the entries of a ``res``'s ``trace`` as decoded, checked; None if malformed.

    ``limit`` is the most entries the nodes beyond this one can have added (at most
    ``MAX_ENTRIES``). An entry is a 3-array of a node id and two uints with node <= total.
    """
    if type(value) not in (list, tuple) or len(value) > min(limit, MAX_ENTRIES):
        return None
    entries = []
    for item in value:
        if type(item) not in (list, tuple) or len(item) != 3:
            return None
        node_id, node_us, total_us = item
        if not (
            type(node_id) is str
            and _is_node_id(node_id)
            and _is_us(node_us)
            and _is_us(total_us)
            and node_us <= total_us
        ):
            return None
        entries.append((node_id, node_us, total_us))
    return tuple(entries)


def append_entry(
    entries: tuple[TraceEntry, ...], node_id: str, node_s: float, total_s: float
) -> tuple[TraceEntry, ...]:
    """Return ``entries`` with this node's, times given in seconds (clamped to the wire's)."""
    total_us = min(max(int(total_s * 1_000_000), 0), MAX_US)
    node_us = min(max(int(node_s * 1_000_000), 0), total_us)
    return (*entries[: MAX_ENTRIES - 1], (node_id, node_us, total_us))


def header_value(entries: tuple[TraceEntry, ...]) -> str:
    """Return the ``X-Xio-Trace`` value of a res's entries: hop order, the ingress first."""
    return ",".join(f"{node_id};{node_us};{total_us}"
                    for node_id, node_us, total_us in reversed(entries))  # fmt: skip


def parse_header(text: str) -> tuple[TraceEntry, ...] | None:
    """Return the entries of an ``X-Xio-Trace`` value, in hop order; None if malformed."""
    entries = []
    for part in text.strip().split(","):
        fields = part.strip().split(";")
        if len(fields) != 3 or not all(field.isdigit() for field in fields[1:]):
            return None
        entries.append((fields[0], int(fields[1]), int(fields[2])))
    return read_trace(entries)


def link_times(hops: tuple[TraceEntry, ...]) -> list[int | None]:
    """Return, for each hop (in hop order), the microseconds of the link that led to it.

    Hop 0 (the ingress) has None: its client's side is not measured. A negative difference
    (a node on the way misreported) is shown as 0.
    """
    times: list[int | None] = [None]
    for before, here in zip(hops, hops[1:], strict=False):
        times.append(max(before[2] - before[1] - here[2], 0))
    return times
