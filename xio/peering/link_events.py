"""What a link session takes and gives back: its limits and its events (pure values).

Theory of operation
-------------------
``LinkLimits`` are the figures one link may cost us, checked when they are built. The events
are what ``session.LinkSession`` returns to its adapter, which acts on each one: a frozen,
slotted record per kind, with the request ids and the owner's tokens it needs. ``Closed`` is
reported exactly once per link and carries every request still in flight, so that the adapter
can answer them. ``error_frame`` builds the ``res`` frame that carries xio's JSON error body,
for answers the session or the forwarder give in the node's name. The session module
re-exports all of these; they live here to keep it to its decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

from xio.content import JSON, dump_json
from xio.errors import HTTPError, LocalProtocolError
from xio.peering.codec import RecordFrame, RequestFrame, ResponseFrame, Summary, Want

__all__ = [
    "CancelArrived",
    "Closed",
    "CreditArrived",
    "DataArrived",
    "EndArrived",
    "Established",
    "Event",
    "Expired",
    "LinkLimits",
    "MessageArrived",
    "Rejected",
    "RequestArrived",
    "ResponseArrived",
    "error_frame",
]


@dataclass(frozen=True, slots=True)
class LinkLimits:
    """What one link may cost us; every figure is ours, never the peer's."""

    link_timeout: float = 2.5  # no byte, or no pong, for this long: dead
    handshake_timeout: float = 10.0
    write_timeout: float = 5.0  # frames wait and the socket takes nothing for this long
    queue_bytes: int = 8 * 1024 * 1024  # normal frames waiting to be sent
    max_in_flight: int = 1024  # requests the peer may have waiting on us
    max_ttl_ms: int = 3_600_000

    def __post_init__(self) -> None:
        for name in ("link_timeout", "handshake_timeout", "write_timeout"):
            if not getattr(self, name) > 0:
                raise LocalProtocolError(f"LinkLimits.{name} must be positive")
        for name in ("queue_bytes", "max_in_flight", "max_ttl_ms"):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"LinkLimits.{name} must be at least 1")


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Established:
    """The peer proved its key: the link carries requests and records from now on."""


@dataclass(frozen=True, slots=True)
class RequestArrived:
    """A ``req`` to answer (with ``respond``) by ``deadline``, or to relay."""

    frame: RequestFrame
    deadline: float


@dataclass(frozen=True, slots=True)
class ResponseArrived:
    """The answer to a request we sent under ``token``."""

    frame: ResponseFrame
    token: object


@dataclass(frozen=True, slots=True)
class CancelArrived:
    """The peer withdrew its request ``request_id`` (we had registered it with ``token``)."""

    request_id: int
    token: object


@dataclass(frozen=True, slots=True)
class DataArrived:
    """A piece of the streamed answer to our request ``request_id``, within its credit (with
    ``up``: of the streamed body of the peer's request, within the credit we granted)."""

    request_id: int
    body: bytes
    token: object
    #: Of the request's streamed body (docs/PROTOCOL.md 4.2), not of its answer.
    up: bool = False


@dataclass(frozen=True, slots=True)
class EndArrived:
    """The streamed answer to our request ended (with ``up``: the streamed body of the peer's
    request): whole (``mac``) or broken (``error``)."""

    request_id: int
    mac: bytes | None
    error: str | None
    token: object
    #: Of the request's streamed body (docs/PROTOCOL.md 4.2), not of its answer.
    up: bool = False


@dataclass(frozen=True, slots=True)
class CreditArrived:
    """The peer lets us send ``n`` more bytes of our streamed answer to its request (with
    ``up``: of the streamed body of our request to it)."""

    request_id: int
    n: int
    token: object
    #: Of the request's streamed body (docs/PROTOCOL.md 4.2), not of its answer.
    up: bool = False


@dataclass(frozen=True, slots=True)
class MessageArrived:
    """A record, summary or want: the node's business, not the link's."""

    message: RecordFrame | Summary | Want


@dataclass(frozen=True, slots=True)
class Expired:
    """A request outlived its deadline by ``session.EXPIRY_GRACE`` and was forgotten."""

    request_id: int
    token: object
    incoming: bool  # True: the peer's request to us; False: ours to the peer


@dataclass(frozen=True, slots=True)
class Rejected:
    """The peer broke a rule; counted by ``reason``. ``fatal``: the link closes (``Closed``)."""

    reason: str
    detail: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The link is closed; answer what was in flight. Reported exactly once."""

    reason: str
    was_established: bool
    outgoing: tuple[tuple[int, object], ...]  # (request id, token) of requests we sent
    incoming: tuple[tuple[int, object], ...]  # (request id, token) of requests we owed


Event = (
    Established | RequestArrived | ResponseArrived | CancelArrived | MessageArrived | Expired
    | Rejected | Closed | DataArrived | EndArrived | CreditArrived
)  # fmt: skip


def error_frame(status: int, description: str, request_id: int = 0, via: str = "") -> ResponseFrame:
    """Return a ``res`` frame carrying xio's JSON error body."""
    body = dump_json(HTTPError(status, description).to_dict())
    headers = (("Content-Type", JSON), ("X-Xio-Via", via)) if via else (("Content-Type", JSON),)
    return ResponseFrame(request_id, status, headers, body)
