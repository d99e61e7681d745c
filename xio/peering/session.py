"""The link session: everything one end of a link decides, with no IO (sans-IO, as h11).

Theory of operation
-------------------
A ``LinkSession`` is the state of one link end. Its adapter (``links.Link``) feeds it each
message that arrives (``receive(data, now)``), lets the writer take the frames to send
(``pull(max_bytes, now)``) and calls ``tick(now, ...)`` every ``tick_interval`` seconds with the
transport's byte counters; it acts on the events these return. Nothing here touches a socket or
a greenlet or reads a clock, so every decision below is tested with a fake clock.

* **Handshake.** ``start`` queues our ``hello``; until the pure ``Handshake`` is done only frames
  of at most ``MAX_HANDSHAKE_FRAME`` bytes are decoded, and after ``handshake_timeout`` the link
  is closed (``handshake_timeout``). Then ``Established`` is reported, and the peer's
  ``caps`` and ``timeout`` from its hello are known.
* **Keepalive.** A ``ping`` every ``tick_interval`` (a fifth of the smaller of our link timeout
  and the one the peer announced). The link is dead (``keepalive_timeout``) when no byte
  arrived for ``link_timeout``, or when the oldest ping the writer took has gone unanswered
  that long: a peer that sends but never reads is caught too.
* **Send queue.** Frames wait in three classes, taken in this order: *urgent* (ping, pong,
  cancel, bye: small, at most one ping and one pong waiting), *normal* (req, res) and *bulk*
  (record, summary, want, revoke: a flood crossing the link does not delay its requests). Lazy
  *sources* (the initial exchange of records) are asked for frames only when the queues are
  empty, so a store of 40 MiB is never held as frames. A normal or bulk frame is refused with
  ``QueueFull`` once ``queue_bytes`` of its class wait. If frames wait and the socket takes nothing
  for ``write_timeout``, the link is closed (``write_timeout``): a link that cannot drain is
  closed, never waited on.
* **Requests.** Ids are per direction. ``open_request`` registers a request we send under a
  fresh id with the caller's ``token`` and deadline; the ``res`` comes back as
  ``ResponseArrived`` with that token. A ``req`` that arrives is registered as incoming with a
  deadline of arrival + ``ttl`` (clamped to ``max_ttl``), unless its id is in flight already
  (``duplicate_request_id``, counted, dropped), its ``X-Xio-Via`` trail is unreadable (400,
  ``bad_via``) or holds this node already (508, ``loop``), ``max_in_flight`` are in flight (a 503
  at once), its ttl is 0 (504) or it has no hops left for another node (502); each of these
  answers carries the trail with this node appended (``via``). ``respond`` answers an
  incoming request once; a peer's ``cancel`` removes it (``CancelArrived``). ``tick`` expires
  entries ``EXPIRY_GRACE`` past their deadline (``Expired``), so nothing a peer starts lives
  for ever, whatever it sends.
* **Streamed answers** (docs/PROTOCOL.md 4.1). A request opened with a ``window`` (its ``req``
  carries ``win``) may be answered by a ``res`` head with ``more``, then ``data`` pieces and
  an ``end``; the request stays in flight until the ``end``, and each frame of its stream
  moves its deadline to ``max_ttl`` from then. Credit is counted here at both ends: the
  answerer may ``send_data`` only what the asker granted (``win``, then ``credit`` frames,
  which ``grant`` queues as urgent); a peer that sends past its credit, or streams an answer
  nobody asked to be streamed, has that one request cancelled and ended with an error
  (``credit_exceeded``, ``unexpected_stream``), and the link stays. Data and the end go in the
  normal queue, in order behind the head; an ``end`` is queued even when the queue is full
  (it is small, and frees a request).
* **Streamed request bodies** (docs/PROTOCOL.md 4.2). A request opened with ``upload`` (its
  ``req`` carries ``more``) sends its body in ``data`` frames with ``up`` and an ``end`` with
  ``up``, only within the credit the answerer grants (``grant_body``: ``credit`` with
  ``up``); nothing before the first grant. An answer (or a cancel) ends the body too. A body
  sent past its credit is broken for its reader (``credit_exceeded``, an ``EndArrived`` with
  an error and ``up``); body frames of a request that streams none are refused
  (``unexpected_stream``); in both cases the link stays.
* **Large frames.** A message over the transport's admission size is announced by ``admit``
  before it is buffered: its type's size cap is checked, and its bytes are taken from the
  node's body budget; a ``req`` or ``res`` that does not fit is dropped unread and answered
  (503, or 502 to our own waiting request) by ``discarded``.
* **Encryption** (protocol version 2, docs/PROTOCOL.md 6.1). Our ``hello`` and ``auth`` wait
  in a queue of their own and always leave first, in the clear. Every other frame is sealed
  with the handshake's ``ciphers.send`` when the writer takes it (``pull``) or when it becomes
  a final frame (``final_frames``, the ``bye``): sealing in wire order is what keeps the
  counter in step, however the urgent, normal and bulk queues reorder frames. Once the peer's
  ``auth`` verified, every message it sends is opened (``ciphers.receive``) before it is
  decoded; a failed tag is ``bad_frame_mac`` and closes the link (with a sealed ``bye``: our
  direction is intact). A large message is admitted from its first bytes decrypted without
  authentication (``peek``: used to refuse, never to act), and one read past unkept is
  ``skip``-ped, so the counter still counts it. Sizes on the wire are the frame's plus the
  16-byte tag (``max_message``, the caps in ``admit``).
* **Close.** ``close(reason)`` queues a ``bye`` (unless the peer said bye) and reports
  ``Closed`` once, with every request still in flight, so that the adapter can answer them;
  ``transport_closed`` does the same when the connection ends first.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Callable

from xio.budget import Budget
from xio.errors import LocalProtocolError, QueueFull, RemoteProtocolError
from xio.peering import codec
from xio.peering.cipher import TAG_LENGTH, ReceiveCipher, SendCipher
from xio.peering.codec import (
    FRAME_CAPS,
    Bye,
    Cancel,
    CreditFrame,
    DataFrame,
    EndFrame,
    Ping,
    Pong,
    RecordFrame,
    RequestFrame,
    ResponseFrame,
    Revoke,
    Summary,
    Want,
)
from xio.peering.handshake import Handshake
from xio.peering.link_events import (
    CancelArrived,
    Closed,
    CreditArrived,
    DataArrived,
    EndArrived,
    Established,
    Event,
    Expired,
    LinkLimits,
    MessageArrived,
    Rejected,
    RequestArrived,
    ResponseArrived,
    error_frame,
)
from xio.peering.via import extend_via, judge_trail

__all__ = [
    "CancelArrived",
    "Closed",
    "CreditArrived",
    "DataArrived",
    "EndArrived",
    "Established",
    "Expired",
    "LinkLimits",
    "LinkSession",
    "LinkState",
    "MessageArrived",
    "Rejected",
    "RequestArrived",
    "ResponseArrived",
    "error_frame",
]

#: How long past its deadline a request is kept before the session forgets it: the owner of
#: the deadline (the ingress, or the app's own timer) answers first; this only frees memory.
EXPIRY_GRACE = 1.0
#: The most a ping may wait for its pong before the link is dead is ``link_timeout``; pings go
#: out this many times per timeout.
PINGS_PER_TIMEOUT = 5
#: At most this much of what is queued is still sent when a link closes (before its bye).
FINAL_FLUSH = 64 * 1024
#: Credit is counted in uint32, as a credit frame's n is: more than that is never granted.
MAX_CREDIT = 2**32 - 1
#: An end's error is a reason, cut to this many characters.
MAX_END_ERROR = 200
#: The largest message of an established link: the largest frame, sealed.
MAX_MESSAGE = codec.MAX_FRAME + TAG_LENGTH


class LinkState(enum.Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"


class _Entry:
    """A request in flight: the owner's token, the deadline, for a streamed answer the
    credit left (bytes the answerer may still send) and whether its head has passed, and for
    a streamed body whether it is still being sent and the credit left of it (bytes the
    asker may still send)."""

    __slots__ = ("token", "deadline", "credit", "streaming", "uploading", "up_credit")

    def __init__(self, token: object, deadline: float, credit: int = 0,
                 uploading: bool = False) -> None:  # fmt: skip
        self.token = token
        self.deadline = deadline
        self.credit = credit
        self.streaming = False
        self.uploading = uploading
        self.up_credit = 0


class LinkSession:
    """The decisions of one link end; see the module docstring."""

    def __init__(
        self,
        handshake: Handshake,
        *,
        limits: LinkLimits | None = None,
        body_budget: Budget | None = None,
    ) -> None:
        self.handshake = handshake
        self.limits = limits or LinkLimits()
        self.own_id = handshake.identity.node_id
        self.body_budget = body_budget
        self.state = LinkState.HANDSHAKING
        self.close_reason = ""
        self.rejected: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()  # not the peer's fault: overloaded, late_response...
        self.outgoing: dict[int, _Entry] = {}
        self.incoming: dict[int, _Entry] = {}
        self.rtt: float | None = None
        self.started_at: float | None = None
        self.established_at: float | None = None
        self._next_id = 0
        self._handshake_out: deque[tuple[float, bytes]] = deque()  # hello, auth: in the clear
        self._sealer: SendCipher | None = None  # from our auth on: seals all we send
        self._opener: ReceiveCipher | None = None  # from the peer's auth on: opens all it sends
        self._urgent: deque[bytes | object] = deque()  # frames, or a ping or pong slot
        self._normal: deque[tuple[float, bytes]] = deque()  # (queued at, frame): req, res
        self._normal_bytes = 0
        self._bulk: deque[tuple[float, bytes]] = deque()  # records, summaries, wants
        self._bulk_bytes = 0
        self._sources: deque[Callable[[int], list[bytes]]] = deque()
        self._ping_queued = False
        self._pong_queued: int | None = None  # n of the newest ping to answer
        self._ping_count = 0
        self._pings_sent: deque[tuple[int, float]] = deque()  # (n, taken by the writer at)
        self._now = 0.0  # the latest time we were told: stamps queued frames
        self._last_life = 0.0  # when bytes last arrived
        self._last_progress = 0.0  # when the socket last took bytes, or the writer started
        self._bytes_in = 0
        self._bytes_out = 0
        self._reserved = 0  # body budget taken for a large message being read
        self._discarding: tuple[str | None, int | None] | None = None
        self._final: list[bytes] = []

    # -- who is on the other end -----------------------------------------------------------

    @property
    def peer_id(self) -> str | None:
        return self.handshake.peer_id

    @property
    def peer_name(self) -> str | None:
        return self.handshake.peer_name

    @property
    def peer_caps(self) -> tuple[str, ...]:
        """Return the optional features the peer announced in its hello."""
        hello = self.handshake.peer_hello
        return (hello.caps or ()) if hello is not None else ()

    @property
    def established(self) -> bool:
        return self.state is LinkState.ESTABLISHED

    @property
    def max_message(self) -> int:
        """Return the largest message the transport should accept now."""
        if self.state is LinkState.ESTABLISHED:
            return MAX_MESSAGE
        return codec.MAX_HANDSHAKE_FRAME

    @property
    def tick_interval(self) -> float:
        """Return how often ``tick`` is to be called: the ping interval."""
        timeout = self.limits.link_timeout
        hello = self.handshake.peer_hello
        if hello is not None and hello.timeout_ms:
            timeout = min(timeout, hello.timeout_ms / 1000)
        return max(timeout / PINGS_PER_TIMEOUT, 0.01)

    # -- starting and receiving ------------------------------------------------------------

    def start(self, now: float) -> None:
        """Queue our hello; the link's clocks start at ``now``."""
        self._now = self.started_at = self._last_life = self._last_progress = now
        for message in self.handshake.start():
            self._queue_handshake(codec.encode(message))

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Take one message from the peer; return what the adapter must act on."""
        self._now = self._last_life = now
        if self._reserved:  # a large message is read: from here on its objects hold it
            self.body_budget.give(self._reserved)
            self._reserved = 0
        if self.state is LinkState.CLOSED:
            return []
        try:
            if self.state is LinkState.ESTABLISHED:
                return self._receive_established(codec.decode(self._opener.open(data)))
            return self._receive_handshake(codec.decode(data, codec.MAX_HANDSHAKE_FRAME), now)
        except RemoteProtocolError as exc:
            return self._reject(exc.reason, str(exc), fatal=True)

    def _receive_handshake(self, message, now: float) -> list[Event]:
        for answer in self.handshake.receive(message):  # our auth: what follows it is sealed
            self._queue_handshake(codec.encode(answer))
            self._sealer = self.handshake.ciphers.send
        if not self.handshake.established:
            return []
        self._opener = self.handshake.ciphers.receive
        self.state = LinkState.ESTABLISHED
        self.established_at = now
        return [Established()]

    def _receive_established(self, message) -> list[Event]:
        kind = type(message)
        if kind is RequestFrame:
            return self._receive_request(message)
        if kind is ResponseFrame:
            if message.more:
                return self._receive_head(message)
            entry = self.outgoing.pop(message.request_id, None)
            if entry is None:
                self.counts["late_response"] += 1  # it raced a cancel or a deadline
                return []
            if entry.streaming:  # a res after a head: the stream is broken
                return self._break_stream(message.request_id, entry, "a res inside a stream")
            return [ResponseArrived(message, entry.token)]
        if kind is DataFrame:
            if message.up:
                return self._receive_body_data(message)
            return self._receive_data(message)
        if kind is EndFrame and message.up:
            return self._receive_body_end(message)
        if kind is CreditFrame and message.up:
            entry = self.outgoing.get(message.request_id)
            if entry is None or not entry.uploading:
                self.counts["late_credit"] += 1
                return []
            entry.up_credit = min(entry.up_credit + message.n, MAX_CREDIT)
            return [CreditArrived(message.request_id, message.n, entry.token, True)]
        if kind is EndFrame:
            entry = self.outgoing.get(message.request_id)
            if entry is None or not entry.streaming:
                self.counts["late_end"] += 1  # after our cancel, or a peer's mistake
                return []
            del self.outgoing[message.request_id]
            return [EndArrived(message.request_id, message.mac, message.error, entry.token)]
        if kind is CreditFrame:
            entry = self.incoming.get(message.request_id)
            if entry is None or not entry.streaming:
                self.counts["late_credit"] += 1  # it raced our end, or the peer's cancel
                return []
            entry.credit = min(entry.credit + message.n, MAX_CREDIT)
            entry.deadline = self._stream_deadline()
            return [CreditArrived(message.request_id, message.n, entry.token)]
        if kind is Cancel:
            entry = self.incoming.pop(message.request_id, None)
            if entry is None:
                self.counts["late_cancel"] += 1
                return []
            return [CancelArrived(message.request_id, entry.token)]
        if kind is Ping:
            if self._pong_queued is None:
                self._urgent.append(_PONG_SLOT)  # filled with the newest n when taken
            self._pong_queued = message.n
            return []
        if kind is Pong:
            self._pong(message.n)
            return []
        if kind is Bye:
            return self._closed(f"peer_bye: {message.reason}", tell_peer=False)
        if kind in (RecordFrame, Summary, Want, Revoke):
            return [MessageArrived(message)]
        return self._reject("unexpected_frame", f"{kind.TYPE} after the handshake", fatal=True)

    def _receive_head(self, frame: ResponseFrame) -> list[Event]:
        entry = self.outgoing.get(frame.request_id)
        if entry is None:
            self.counts["late_response"] += 1
            return []
        if entry.streaming or not entry.credit:  # a second head, or a stream nobody asked for
            return self._break_stream(frame.request_id, entry, "a streamed answer not asked for")
        entry.streaming = True
        entry.deadline = self._stream_deadline()
        return [ResponseArrived(frame, entry.token)]

    def _receive_data(self, frame: DataFrame) -> list[Event]:
        entry = self.outgoing.get(frame.request_id)
        if entry is None:
            self.counts["late_data"] += 1  # it was on its way when we cancelled
            return []
        if not entry.streaming:
            return self._break_stream(frame.request_id, entry, "data before a streamed head")
        size = len(frame.body)
        if size > entry.credit:
            self.rejected["credit_exceeded"] += 1
            self.outgoing.pop(frame.request_id)
            self._urgent.append(codec.encode(Cancel(frame.request_id)))
            detail = f"{size} bytes of data with {entry.credit} of credit left"
            return [Rejected("credit_exceeded", detail, False),
                    EndArrived(frame.request_id, None, f"credit_exceeded: {detail}",
                               entry.token)]  # fmt: skip
        entry.credit -= size
        entry.deadline = self._stream_deadline()
        return [DataArrived(frame.request_id, frame.body, entry.token)]

    def _receive_body_data(self, frame: DataFrame) -> list[Event]:
        entry = self.incoming.get(frame.request_id)
        if entry is None:
            self.counts["late_data"] += 1  # it raced our answer, or the deadline
            return []
        if not entry.uploading:
            self.rejected["unexpected_stream"] += 1  # no streamed body, or after its end
            return [Rejected("unexpected_stream", "data of a body that is not streamed", False)]
        size = len(frame.body)
        if size > entry.up_credit:  # the body is broken: its reader fails, the link stays
            self.rejected["credit_exceeded"] += 1
            entry.uploading = False
            detail = f"{size} bytes of body with {entry.up_credit} of credit left"
            return [Rejected("credit_exceeded", detail, False),
                    EndArrived(frame.request_id, None, f"credit_exceeded: {detail}",
                               entry.token, True)]  # fmt: skip
        entry.up_credit -= size
        return [DataArrived(frame.request_id, frame.body, entry.token, True)]

    def _receive_body_end(self, frame: EndFrame) -> list[Event]:
        entry = self.incoming.get(frame.request_id)
        if entry is None or not entry.uploading:
            self.counts["late_end"] += 1
            return []
        entry.uploading = False
        return [EndArrived(frame.request_id, frame.mac, frame.error, entry.token, True)]

    def _break_stream(self, request_id: int, entry: _Entry, detail: str) -> list[Event]:
        """End our request ``request_id`` whose answer broke the stream rules; keep the link."""
        self.rejected["unexpected_stream"] += 1
        self.outgoing.pop(request_id, None)
        self._urgent.append(codec.encode(Cancel(request_id)))
        rejected = Rejected("unexpected_stream", detail, False)
        if entry.streaming:
            return [rejected, EndArrived(request_id, None, f"unexpected_stream: {detail}",
                                         entry.token)]  # fmt: skip
        lost = error_frame(502, f"unexpected_stream: the next node sent {detail}", request_id)
        return [rejected, ResponseArrived(lost, entry.token)]

    def _stream_deadline(self) -> float:
        # A stream lives as long as it moves: each of its frames gives it max_ttl more.
        return self._now + self.limits.max_ttl_ms / 1000

    def _receive_request(self, frame: RequestFrame) -> list[Event]:
        request_id = frame.request_id
        if request_id in self.incoming:
            return self._reject("duplicate_request_id", f"request id {request_id} is in flight")
        own_id = self.own_id
        trail, problem = judge_trail(frame.headers, own_id)
        if problem is not None:  # unreadable (400) or a loop (508): the request goes no further
            self.counts[problem.reason] += 1
            self._answer_now(problem.status, problem.description, request_id, trail)
            return []
        if len(self.incoming) >= self.limits.max_in_flight:
            self.counts["overloaded"] += 1
            self._answer_now(503, "too many requests in flight on this link", request_id, trail)
            return []
        if frame.ttl_ms == 0:
            self.counts["deadline"] += 1
            self._answer_now(504, "the request arrived with no time left", request_id, trail)
            return []
        if frame.hops == 0 and frame.dst != own_id:
            self.counts["hop_limit"] += 1
            description = f"hop limit reached before node {frame.dst}"
            self._answer_now(502, description, request_id, trail)
            return []
        ttl = frame.ttl_ms
        if ttl > self.limits.max_ttl_ms:
            self.counts["ttl_clamped"] += 1
            ttl = self.limits.max_ttl_ms
        entry = _Entry(None, self._now + ttl / 1000, frame.win or 0, frame.more is True)
        self.incoming[request_id] = entry
        return [RequestArrived(frame, entry.deadline)]

    def _answer_now(self, status: int, description: str, request_id: int, trail: str) -> None:
        """Answer a request at once, with this node last on its trail (section 11)."""
        via = extend_via(trail, self.own_id) if self.own_id else ""
        try:
            self._queue_normal(codec.encode(error_frame(status, description, request_id, via)))
        except QueueFull:
            self.counts["queue_full"] += 1

    def _pong(self, n: int) -> None:
        sent = self._pings_sent
        while sent and sent[0][0] <= n:  # pongs answer pings in order; older ones are done
            number, at = sent.popleft()
            if number == n:
                self.rtt = self._now - at

    def _reject(self, reason: str, detail: str, fatal: bool = False) -> list[Event]:
        self.rejected[reason] += 1
        events: list[Event] = [Rejected(reason, detail, fatal)]
        if fatal:  # the receiver of a bye closes without answering it
            events += self._closed(reason, tell_peer=reason != "peer_bye")
        return events

    # -- large messages --------------------------------------------------------------------

    def admit(self, size: int, prefix: bytes) -> bool | list[Event]:
        """Decide, before buffering it, on a message of ``size`` bytes starting with ``prefix``.

        Return True to read it, False to have it read past and dropped (``discarded`` follows),
        or the events of closing the link (its type's cap is smaller than ``size``).
        """
        if self.state is not LinkState.ESTABLISHED:
            return True  # the transport's max_message is the handshake cap already
        frame_size = size - TAG_LENGTH
        if frame_size < 0:
            return self._reject("bad_frame_mac", "a message shorter than its tag", True)
        # Unauthenticated until the whole message is opened: good enough to refuse it by.
        plain = self._opener.peek(prefix[:frame_size])
        kind, request_id = codec.peek_type_and_id(plain)
        cap = FRAME_CAPS.get(kind) if kind is not None else None
        if cap is not None and frame_size > cap:
            return self._reject(
                "frame_too_large", f"{kind} frame of {frame_size} bytes > {cap}", True
            )
        budget = self.body_budget
        if budget is None:
            return True
        if budget.take(size):
            self._reserved += size
            return True
        self._opener.skip(size)  # read past unopened: it still counts
        self._discarding = (kind, request_id)
        return False

    def discarded(self) -> list[Event]:
        """Answer a large message that was dropped because the body budget was spent."""
        kind, request_id = self._discarding or (None, None)
        self._discarding = None
        self.counts["body_budget"] += 1
        if kind == "req" and request_id is not None and request_id not in self.incoming:
            self._answer_now(503, "the node's budget for request bodies is spent", request_id, "")
            return []
        if kind == "res" and request_id is not None:
            entry = self.outgoing.pop(request_id, None)
            if entry is None:
                return []
            lost = error_frame(502, "the response is too large for this node's body budget")
            return [ResponseArrived(lost, entry.token)]
        # Unanswerable (a frame not laid out as xio writes them, its id out of reach of the
        # first bytes): end the link rather than leave its sender waiting.
        return self._closed("body_budget", tell_peer=True)

    # -- requests and frames we send -------------------------------------------------------

    def open_request(
        self, token: object, deadline: float, window: int = 0, upload: bool = False
    ) -> int:
        """Register a request we are about to send; return its id on this link.

        ``window``: the ``win`` its ``req`` carries (0: none), the answerer's first credit;
        ``upload``: its ``req`` has ``more``, its body follows (``send_body_data``).
        """
        if self.state is not LinkState.ESTABLISHED:
            raise LocalProtocolError(f"cannot open a request in state {self.state.name}")
        outgoing = self.outgoing
        while True:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            if self._next_id not in outgoing:
                break
        outgoing[self._next_id] = _Entry(token, deadline, window, upload)
        return self._next_id

    def attach(self, request_id: int, token: object) -> None:
        """Give the peer's request ``request_id`` the token that its later events will carry."""
        self.incoming[request_id].token = token

    def forget_request(self, request_id: int) -> None:
        """Drop a request we opened but could not send (its frame was refused)."""
        self.outgoing.pop(request_id, None)

    def cancel_request(self, request_id: int) -> None:
        """Withdraw a request we sent: forget it and tell the peer (if the link is up)."""
        if self.outgoing.pop(request_id, None) is not None and self.established:
            self._urgent.append(codec.encode(Cancel(request_id)))

    def respond(self, request_id: int, frame: ResponseFrame) -> bool:
        """Answer the peer's request ``request_id`` with ``frame`` (whose id must match).

        Return False when there is nothing to answer any more (cancelled, expired, closed)
        or the queue is full; the answer is then dropped.
        """
        if frame.more:
            return self._respond_head(request_id, frame)
        if self.incoming.pop(request_id, None) is None:
            return False
        try:
            self._queue_normal(codec.encode(frame))
        except QueueFull:
            self.counts["queue_full"] += 1
            return False
        return True

    def _respond_head(self, request_id: int, frame: ResponseFrame) -> bool:
        entry = self.incoming.get(request_id)
        if entry is None:
            return False
        if entry.streaming or not entry.credit:
            raise LocalProtocolError(f"request {request_id} did not ask for a streamed answer")
        try:
            self._queue_normal(codec.encode(frame))
        except QueueFull:
            self.counts["queue_full"] += 1
            del self.incoming[request_id]
            return False
        entry.streaming = True
        entry.deadline = self._stream_deadline()
        return True

    def credit_of(self, request_id: int) -> int | None:
        """Return the bytes we may still send of our streamed answer to ``request_id``, or
        None when the peer no longer waits for it (cancelled, expired, closed)."""
        entry = self.incoming.get(request_id)
        return entry.credit if entry is not None and entry.streaming else None

    def send_data(self, request_id: int, piece: bytes) -> bool:
        """Queue a piece of our streamed answer; False if nobody waits for it any more.

        Raises ``QueueFull`` when the normal queue is full (wait for room and try again), and
        ``LocalProtocolError`` for a piece over the credit left: the caller counts credit.
        """
        entry = self.incoming.get(request_id)
        if entry is None or not entry.streaming:
            return False
        if len(piece) > entry.credit:
            raise LocalProtocolError(f"{len(piece)} bytes of data with {entry.credit} of credit")
        self._queue_normal(codec.encode(DataFrame(request_id, piece)))
        entry.credit -= len(piece)
        entry.deadline = self._stream_deadline()
        return True

    def end_stream(
        self, request_id: int, mac: bytes | None = None, error: str | None = None
    ) -> bool:
        """End our streamed answer to ``request_id``: whole (with the body's MAC) or broken."""
        entry = self.incoming.get(request_id)
        if entry is None or not entry.streaming:
            return False
        del self.incoming[request_id]
        frame = codec.encode(EndFrame(request_id, mac, error[:MAX_END_ERROR] if error else None))
        self._queue_normal(frame, force=True)
        return True

    def grant(self, request_id: int, n: int) -> bool:
        """Let the answerer of our request send ``n`` more bytes; False if it is not in flight."""
        entry = self.outgoing.get(request_id)
        if entry is None or self.state is not LinkState.ESTABLISHED:
            return False
        entry.credit = min(entry.credit + n, MAX_CREDIT)
        self._urgent.append(codec.encode(CreditFrame(request_id, n)))
        return True

    # -- streamed request bodies (docs/PROTOCOL.md 4.2) -----------------------------------

    def grant_body(self, request_id: int, n: int) -> bool:
        """Let the asker of ``request_id`` send ``n`` more bytes of its streamed body; False
        if it is not in flight or its body has ended."""
        entry = self.incoming.get(request_id)
        if entry is None or not entry.uploading or self.state is not LinkState.ESTABLISHED:
            return False
        entry.up_credit = min(entry.up_credit + n, MAX_CREDIT)
        self._urgent.append(codec.encode(CreditFrame(request_id, n, True)))
        return True

    def body_credit_of(self, request_id: int) -> int | None:
        """Return the bytes of our request's streamed body we may still send, or None when
        nobody waits for them any more (answered, cancelled, closed, or the body ended)."""
        entry = self.outgoing.get(request_id)
        return entry.up_credit if entry is not None and entry.uploading else None

    def send_body_data(self, request_id: int, piece: bytes) -> bool:
        """Queue a piece of our request's streamed body; False if it is not wanted any more.

        Raises ``QueueFull`` (wait for room, try again) and ``LocalProtocolError`` for a piece
        over the credit left, as ``send_data`` does.
        """
        entry = self.outgoing.get(request_id)
        if entry is None or not entry.uploading:
            return False
        if len(piece) > entry.up_credit:
            raise LocalProtocolError(f"{len(piece)} bytes of body with {entry.up_credit} credit")
        self._queue_normal(codec.encode(DataFrame(request_id, piece, True)))
        entry.up_credit -= len(piece)
        return True

    def end_body(self, request_id: int, mac: bytes | None = None, error: str | None = None) -> bool:
        """End our request's streamed body: whole (with its MAC) or broken (``error``)."""
        entry = self.outgoing.get(request_id)
        if entry is None or not entry.uploading:
            return False
        entry.uploading = False
        frame = EndFrame(request_id, mac, error[:MAX_END_ERROR] if error else None, True)
        self._queue_normal(codec.encode(frame), force=True)
        return True

    def send(self, message) -> None:
        """Queue one frame (a ``req`` or ``res`` before records); raise ``QueueFull``."""
        bulk = type(message) not in (RequestFrame, ResponseFrame)
        self.send_encoded(codec.encode(message), bulk=bulk)

    def send_encoded(self, frame: bytes, *, bulk: bool = True) -> None:
        """Queue one already encoded frame (a flooded record is relayed byte for byte)."""
        if self.state is not LinkState.ESTABLISHED:
            raise LocalProtocolError(f"cannot send in state {self.state.name}")
        if bulk:
            self._queue_bulk(frame)
        else:
            self._queue_normal(frame)

    def add_source(self, source: Callable[[int], list[bytes]]) -> None:
        """Send what ``source(max_bytes)`` returns, whenever the queue has room, until it
        returns nothing. Used for bulk transfers that must not be held in memory at once."""
        if self.state is LinkState.ESTABLISHED:
            self._sources.append(source)

    def _queue_handshake(self, frame: bytes) -> None:
        if not self.queued_frames:
            self._last_progress = max(self._last_progress, self._now)
        self._handshake_out.append((self._now, frame))

    def _queue_normal(self, frame: bytes, force: bool = False) -> None:
        if self._normal_bytes >= self.limits.queue_bytes and not force:
            raise QueueFull(f"{self._normal_bytes} bytes of requests wait for {self.peer_name}")
        if not self.queued_frames:
            self._last_progress = max(self._last_progress, self._now)
        self._normal.append((self._now, frame))
        self._normal_bytes += len(frame)

    def _queue_bulk(self, frame: bytes) -> None:
        # Records have a queue of their own, behind requests and answers: a flood crossing a
        # link must not make its requests wait, nor fill the room they need.
        if self._bulk_bytes >= self.limits.queue_bytes:
            raise QueueFull(f"{self._bulk_bytes} bytes of records wait for {self.peer_name}")
        if not self.queued_frames:
            self._last_progress = max(self._last_progress, self._now)
        self._bulk.append((self._now, frame))
        self._bulk_bytes += len(frame)

    # -- the writer's side -----------------------------------------------------------------

    @property
    def has_output(self) -> bool:
        """Tell whether ``pull`` would return frames."""
        return bool(
            self._handshake_out or self._urgent or self._normal or self._bulk or self._sources
        )

    @property
    def queued_bytes(self) -> int:
        return self._normal_bytes + self._bulk_bytes

    @property
    def queued_frames(self) -> int:
        return len(self._handshake_out) + len(self._normal) + len(self._bulk) + len(self._urgent)

    def oldest_unsent(self, now: float) -> float:
        """Return how long the oldest queued frame has waited (0 when none waits)."""
        queues = (self._handshake_out, self._normal, self._bulk)
        heads = [queue[0][0] for queue in queues if queue]
        return now - min(heads) if heads else 0.0

    def pull(self, max_bytes: int, now: float) -> list[bytes]:
        """Return the next messages to write: hello and auth, urgent frames, then about
        ``max_bytes`` more; all but hello and auth sealed, in this order."""
        self._now = now
        clear = [frame for _, frame in self._handshake_out]
        self._handshake_out.clear()
        frames: list[bytes] = []
        urgent = self._urgent
        while urgent:
            frame = urgent.popleft()
            if frame is _PONG_SLOT:
                frame = codec.encode(Pong(self._pong_queued))
                self._pong_queued = None
            elif frame is _PING_SLOT:
                self._ping_queued = False
                self._pings_sent.append((self._ping_count, now))
                frame = codec.encode(Ping(self._ping_count))
            frames.append(frame)
        size, normal, bulk = 0, self._normal, self._bulk
        while normal and (size == 0 or size + len(normal[0][1]) <= max_bytes):
            frame = normal.popleft()[1]
            self._normal_bytes -= len(frame)
            frames.append(frame)
            size += len(frame)
        while bulk and not normal and (size == 0 or size + len(bulk[0][1]) <= max_bytes):
            frame = bulk.popleft()[1]
            self._bulk_bytes -= len(frame)
            frames.append(frame)
            size += len(frame)
        while not normal and not bulk and self._sources and size < max_bytes:
            produced = self._sources[0](max_bytes - size)
            if not produced:
                self._sources.popleft()
                continue
            frames += produced
            size += sum(map(len, produced))
        if frames:
            frames = self._seal(frames)
        return clear + frames if clear else frames

    def _seal(self, frames: list[bytes]) -> list[bytes]:
        sealer = self._sealer
        if sealer is None:  # nothing but hello and auth is ever queued before our auth
            raise LocalProtocolError("a frame to send before our auth")
        seal = sealer.seal
        return [seal(frame) for frame in frames]

    # -- time ------------------------------------------------------------------------------

    def tick(
        self, now: float, *, bytes_in: int = 0, bytes_out: int = 0, writing: bool = False
    ) -> list[Event]:
        """Keep the link alive and honest: ping, time out, expire forgotten requests.

        ``bytes_in`` / ``bytes_out`` are the transport's running byte counts and ``writing``
        whether its writer holds frames it has not finished writing.
        """
        self._now = now
        if self.state is LinkState.CLOSED:
            return []
        limits = self.limits
        if bytes_in != self._bytes_in:
            self._bytes_in, self._last_life = bytes_in, now
        if bytes_out != self._bytes_out:
            self._bytes_out, self._last_progress = bytes_out, now
        if self.state is LinkState.HANDSHAKING:
            if now - self.started_at > limits.handshake_timeout:
                return self._reject("handshake_timeout", "no handshake in time", fatal=True)
            return []
        if now - self._last_life > limits.link_timeout:
            return self._closed("keepalive_timeout", tell_peer=False)
        if self._pings_sent and now - self._pings_sent[0][1] > limits.link_timeout:
            return self._closed("keepalive_timeout", tell_peer=False)
        waiting = writing or self.queued_frames
        if waiting and now - self._last_progress > limits.write_timeout:
            return self._closed("write_timeout", tell_peer=False)
        if not waiting:
            self._last_progress = now
        if not self._ping_queued:
            self._ping_queued = True
            self._ping_count += 1
            self._urgent.append(_PING_SLOT)
        return self._expire(now)

    def _expire(self, now: float) -> list[Event]:
        events: list[Event] = []
        late = now - EXPIRY_GRACE
        for incoming, table in ((True, self.incoming), (False, self.outgoing)):
            expired = [rid for rid, entry in table.items() if entry.deadline < late]
            for request_id in expired:
                events.append(Expired(request_id, table.pop(request_id).token, incoming))
        if events:
            self.counts["expired"] += len(events)
        return events

    # -- closing ---------------------------------------------------------------------------

    def close(self, reason: str) -> list[Event]:
        """Close the link for ``reason``, saying so to the peer; return the ``Closed`` event."""
        return self._closed(reason, tell_peer=True)

    def transport_closed(self, reason: str) -> list[Event]:
        """Note that the connection ended (``reason``); return ``Closed`` if not reported."""
        return self._closed(reason, tell_peer=False)

    def final_frames(self) -> list[bytes]:
        """Return the last messages to send before the connection closes.

        What was queued, up to ``FINAL_FLUSH`` bytes (a hello not yet sent, answers to
        requests), then the ``bye``; nothing if the link closed because it cannot drain.
        After our auth they are sealed, as if the writer had taken them.
        """
        return self._final

    def _closed(self, reason: str, *, tell_peer: bool) -> list[Event]:
        if self.state is LinkState.CLOSED:
            return []
        was_established = self.state is LinkState.ESTABLISHED
        self.state = LinkState.CLOSED
        self.close_reason = reason
        if tell_peer:
            clear = [frame for _, frame in self._handshake_out]
            flushed, size = [], 0
            for _, frame in (*self._normal, *self._bulk):
                size += len(frame)
                if size > FINAL_FLUSH:
                    break
                flushed.append(frame)
            flushed.append(codec.encode(Bye(reason[:200])))
            self._final = clear + (self._seal(flushed) if self._sealer else flushed)
        if self._reserved:
            self.body_budget.give(self._reserved)
            self._reserved = 0
        outgoing = tuple((rid, entry.token) for rid, entry in self.outgoing.items())
        incoming = tuple((rid, entry.token) for rid, entry in self.incoming.items())
        self.outgoing.clear()
        self.incoming.clear()
        self._handshake_out.clear()
        self._urgent.clear()
        self._normal.clear()
        self._normal_bytes = 0
        self._bulk.clear()
        self._bulk_bytes = 0
        self._sources.clear()
        return [Closed(reason, was_established, outgoing, incoming)]


#: The urgent queue's placeholders: a ping is numbered and timed when the writer takes it, and
#: a pong answers the newest ping that arrived by then.
_PING_SLOT = object()
_PONG_SLOT = object()
