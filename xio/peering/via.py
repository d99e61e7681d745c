"""The ``X-Xio-Via`` trail: the ids of the nodes a request has crossed, in order.

Theory of operation. The trail is one header, ``X-Xio-Via``, whose value is node ids joined
by ``,`` with no spaces (docs/PROTOCOL.md, section 11). Only nodes write it: the ingress
drops whatever a client sent, and every node that puts a ``req`` on a link appends its own
id. A node that receives a ``req`` judges the trail before anything else is done for it
(``judge_trail``): a trail it cannot read is refused (400, ``bad_via``), and a trail that
holds its own id is a loop (508, ``loop``): the request came back to a node it passed.

Pure: no sockets, no clock.
"""

from __future__ import annotations

from xio.peering.identity import NODE_ID_PATTERN

__all__ = ["VIA", "TrailProblem", "extend_via", "judge_trail", "via_of", "with_via"]

VIA = "X-Xio-Via"
_VIA_LOWER = "x-xio-via"
_is_node_id = NODE_ID_PATTERN.fullmatch


class TrailProblem:
    """Why a trail is refused: the HTTP status, the counted reason, a description."""

    __slots__ = ("status", "reason", "description")

    def __init__(self, status: int, reason: str, description: str) -> None:
        self.status = status
        self.reason = reason
        self.description = description


def via_of(headers) -> str:
    """Return the ``X-Xio-Via`` trail in a sequence of header pairs ('' if none)."""
    for name, value in headers:
        if name.lower() == _VIA_LOWER:
            return value
    return ""


def extend_via(trail: str, node_id: str) -> str:
    """Return ``trail`` with ``node_id`` appended."""
    return f"{trail},{node_id}" if trail else node_id


def with_via(headers: tuple, node_id: str) -> tuple:
    """Return ``headers`` with ``node_id`` appended to their ``X-Xio-Via`` trail (kept last)."""
    kept = tuple(pair for pair in headers if pair[0].lower() != _VIA_LOWER)
    return (*kept, (VIA, extend_via(via_of(headers), node_id)))


def judge_trail(headers, own_id: str) -> tuple[str, TrailProblem | None]:
    """Return ``(trail, problem)`` for a ``req`` arriving at node ``own_id``.

    ``problem`` is None for a good trail: absent, or node ids joined by ``,`` none of which
    is ``own_id``. Otherwise the trail is refused as it is (``""`` when unreadable).
    """
    trail, found = "", 0
    for name, value in headers:
        if name.lower() == _VIA_LOWER:
            trail, found = value, found + 1
    if not found:
        return "", None
    if found > 1:
        return "", TrailProblem(400, "bad_via", f"{found} {VIA} headers: the trail is one header")
    entries = trail.split(",")
    for entry in entries:
        if not _is_node_id(entry):
            shown = entry[:40]
            return "", TrailProblem(400, "bad_via", f"{VIA} entry {shown!r} is not a node id")
    if own_id in entries:
        return trail, TrailProblem(508, "loop", f"the request has passed node {own_id} already")
    return trail, None
