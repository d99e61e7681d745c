"""Links: a ``LinkSession`` driven over a ``Transport``, and the dialer that keeps a
``--peers`` link up.

Theory of operation. A ``Link`` is the gevent adapter of one link end. Every decision is the
session's (``session.py``); the link only moves things:

* the transport's reader hands each message to ``session.receive`` and the link acts on the
  events it returns: the forwarder gets requests, responses, cancels and expiries, the owner
  (the node) gets the link's establishment, its records, summaries and wants, its rejections
  and its end;
* the transport's writer takes frames from ``session.pull``; whoever queues a frame wakes the
  writer, and nobody else writes, so no send ever blocks a reader, a flood or another link;
* a ticker greenlet calls ``session.tick`` every ping interval with the transport's byte
  counters: pings, timeouts (``keepalive_timeout``, ``write_timeout``, ``handshake_timeout``)
  and expiry of forgotten requests happen there. The ticker survives its own errors.

The owner hears of a link exactly twice: ``link_established`` and ``link_closed``.

A ``Dialer`` connects to one configured peer and, whenever the link ends, tries again after
the delay its ``Backoff`` gives (doubling, capped at 30 s, back to short after a healthy link),
jittered — unless a link to that peer exists already (it dialled us), in which case it waits
for that one to end. A URL that reaches this node itself (``self_link``) is dialled once only.
A dial that TLS refuses (an unknown CA, a certificate for another name) is logged as a
warning: an operator's to fix, unlike a peer that is down. Its loop survives its own errors.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import gevent
from gevent.event import Event

from ..errors import ConnectError, ConnectionClosed
from .codec import RequestFrame, ResponseFrame
from .reasons import WEBSOCKET_REASONS
from .schedule import Backoff
from .session import (
    CancelArrived,
    Closed,
    CreditArrived,
    DataArrived,
    EndArrived,
    Established,
    Expired,
    LinkSession,
    LinkState,
    MessageArrived,
    Rejected,
    RequestArrived,
    ResponseArrived,
)
from .transport import Transport

__all__ = ["Dialer", "Link", "LinkOwner", "LinkState"]

log = logging.getLogger("xio.links")

#: Reasons a transport closes for that mean the peer broke the WebSocket rules: counted.
TRANSPORT_VIOLATIONS = frozenset(WEBSOCKET_REASONS)

_monotonic = time.monotonic


class LinkForwarder(Protocol):
    """What a link hands requests to (``forwarding.Forwarder``)."""

    def on_request(self, link: Link, frame: RequestFrame, deadline: float) -> None: ...
    def on_response(self, link: Link, frame: ResponseFrame, token: object) -> None: ...
    def on_cancel(self, link: Link, request_id: int, token: object) -> None: ...
    def on_expired(self, link: Link, request_id: int, token: object, incoming: bool) -> None: ...
    def on_data(self, link: Link, request_id: int, body: bytes, token: object) -> None: ...
    def on_end(self, link: Link, request_id: int, mac, error, token: object) -> None: ...
    def on_credit(self, link: Link, request_id: int, n: int, token: object) -> None: ...
    def link_closed(self, link: Link, closed: Closed) -> None: ...


class LinkOwner(Protocol):
    """What a link tells the node."""

    forwarder: LinkForwarder

    def link_established(self, link: Link) -> None: ...
    def link_message(self, link: Link, message) -> None: ...
    def link_closed(self, link: Link, closed: Closed) -> None: ...
    def count_rejection(self, reason: str) -> None: ...


class Link:
    """One link to a peer: its session, its transport and its ticker."""

    def __init__(
        self, transport: Transport, session: LinkSession, owner: LinkOwner, *, url: str | None
    ) -> None:
        self.transport = transport
        self.session = session
        self.owner = owner
        self.url = url
        self.closed_event = Event()
        self._ticker = None
        self._room: Event | None = None  # a producer waits for room in the send queue

    # -- identity of the link ------------------------------------------------------------

    @property
    def peer_id(self) -> str | None:
        return self.session.peer_id

    @property
    def peer_name(self) -> str | None:
        return self.session.peer_name

    @property
    def state(self) -> LinkState:
        return self.session.state

    @property
    def established(self) -> bool:
        return self.session.established

    @property
    def initiator(self) -> bool:
        return self.transport.initiator

    @property
    def close_reason(self) -> str:
        return self.session.close_reason

    def __repr__(self) -> str:
        return f"<Link {self.peer_name or self.transport.peer} {self.state.value}>"

    def queue_status(self, now: float) -> dict:
        """Return what waits to be sent on this link (``/_xio/node`` ``link_queues``)."""
        session = self.session
        return {
            "peer": self.peer_id,
            "name": self.peer_name,
            "queued_bytes": session.queued_bytes,
            "queued_frames": session.queued_frames,
            "oldest_unsent_s": round(session.oldest_unsent(now), 3),
            "writing": self.transport.writing,
        }

    def status(self, now: float, wall_now: float) -> dict:
        """Return a snapshot of this link for ``/_xio/peers`` (``now``: monotonic)."""
        session, transport = self.session, self.transport
        up = session.established_at
        return {
            "id": self.peer_id,
            "name": self.peer_name,
            "state": self.state.value,
            "direction": "out" if self.initiator else "in",
            "url": self.url,
            "address": transport.peer,
            # when it was established (Unix time), and for how long (s)
            "since": round(wall_now - (now - up), 3) if up is not None else None,
            "up_s": round(now - up, 3) if up is not None else None,
            "rtt_ms": round(session.rtt * 1000, 3) if session.rtt is not None else None,
            "in_flight": len(session.outgoing) + len(session.incoming),
            "caps": list(session.peer_caps),
            "bytes_in": transport.bytes_received,
            "bytes_out": transport.bytes_sent,
            "rejected": dict(session.rejected),
            **self.queue_status(now),
        }

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake and the ticker; the transport must not be started yet."""
        transport, session = self.transport, self.session
        transport.on_message = self._receive
        transport.on_close = self._transport_closed
        transport.admit = self._admit
        transport.on_discarded = self._discarded
        transport.pull = self._pull
        # Until the peer has proved its key it may not make us buffer more than a hello.
        transport.max_message = session.max_message
        session.start(_monotonic())
        transport.wake()
        self._ticker = gevent.spawn(self._tick_loop)
        transport.start()

    def _receive(self, data: bytes) -> None:
        self._handle(self.session.receive(data, _monotonic()))

    def _pull(self, max_bytes: int) -> list[bytes]:
        frames = self.session.pull(max_bytes, _monotonic())
        room = self._room
        if room is not None and self.session.queued_bytes <= self.session.limits.queue_bytes // 2:
            self._room = None
            room.set()
        return frames

    def _admit(self, size: int, prefix: bytes) -> bool:
        verdict = self.session.admit(size, prefix)
        if verdict is True or verdict is False:
            return verdict
        self._handle(verdict)  # refused: the link closes
        return False

    def _discarded(self) -> None:
        self._handle(self.session.discarded())

    def _tick_loop(self) -> None:
        session, transport = self.session, self.transport
        while session.state is not LinkState.CLOSED:
            gevent.sleep(session.tick_interval)
            try:
                events = session.tick(
                    _monotonic(), bytes_in=transport.bytes_received,
                    bytes_out=transport.bytes_sent, writing=transport.writing,
                )  # fmt: skip
                self._handle(events)
            except Exception:  # a bug of ours: keep the link's clock running regardless
                log.exception("tick of link %s failed", self)

    def _handle(self, events: list) -> None:
        """Act on the session's events, then wake the writer if frames wait."""
        owner = self.owner
        for event in events:
            kind = type(event)
            if kind is RequestArrived:
                owner.forwarder.on_request(self, event.frame, event.deadline)
            elif kind is ResponseArrived:
                owner.forwarder.on_response(self, event.frame, event.token)
            elif kind is DataArrived:
                on_data = owner.forwarder.on_body_data if event.up else owner.forwarder.on_data
                on_data(self, event.request_id, event.body, event.token)
            elif kind is CreditArrived:
                on_credit = (
                    owner.forwarder.on_body_credit if event.up else owner.forwarder.on_credit
                )
                on_credit(self, event.request_id, event.n, event.token)
            elif kind is EndArrived:
                on_end = owner.forwarder.on_body_end if event.up else owner.forwarder.on_end
                on_end(self, event.request_id, event.mac, event.error, event.token)
            elif kind is MessageArrived:
                owner.link_message(self, event.message)
            elif kind is CancelArrived:
                owner.forwarder.on_cancel(self, event.request_id, event.token)
            elif kind is Expired:
                owner.forwarder.on_expired(self, event.request_id, event.token, event.incoming)
            elif kind is Established:
                self.transport.max_message = self.session.max_message  # a sealed frame
                owner.link_established(self)
            elif kind is Rejected:
                owner.count_rejection(event.reason)
                if event.fatal:
                    log.warning("closing link to %s: %s", self, event.detail)
            elif kind is Closed:
                self._finish(event)
        if self.session.has_output:
            self.transport.wake()

    def _finish(self, closed: Closed) -> None:
        self.transport.close(closed.reason, final=self.session.final_frames())
        if self._room is not None:  # wake a waiting producer: it finds the link closed
            self._room.set()
        if self._ticker is not None and self._ticker is not gevent.getcurrent():
            self._ticker.kill(block=False)
        self.closed_event.set()
        try:
            self.owner.forwarder.link_closed(self, closed)
        finally:
            self.owner.link_closed(self, closed)

    def _transport_closed(self, reason: str) -> None:
        if self.session.state is LinkState.CLOSED:
            return  # we closed it: already handled
        if reason in TRANSPORT_VIOLATIONS:
            self.session.rejected[reason] += 1
            self.owner.count_rejection(reason)
        self._handle(self.session.transport_closed(reason))

    # -- what the node and the forwarder call --------------------------------------------

    def send(self, message) -> None:
        """Queue one frame; raise ``QueueFull`` if the peer is not keeping up."""
        if self.session.state is LinkState.CLOSED:
            raise ConnectionClosed(f"link to {self.peer_name} is closed")
        self.session.send(message)
        self.transport.wake()

    def send_encoded(self, frame: bytes) -> None:
        """Queue an encoded record frame (a flooded record is relayed byte for byte)."""
        if self.session.state is LinkState.CLOSED:
            raise ConnectionClosed(f"link to {self.peer_name} is closed")
        self.session.send_encoded(frame, bulk=True)
        self.transport.wake()

    def add_source(self, source: Callable[[int], list[bytes]]) -> None:
        """Send what ``source`` produces whenever the link has room (see LinkSession)."""
        self.session.add_source(source)
        self.transport.wake()

    def respond(self, request_id: int, frame: ResponseFrame) -> bool:
        """Answer the peer's request ``request_id``; False if it is no longer wanted."""
        answered = self.session.respond(request_id, frame)
        if answered:
            self.transport.wake()
        return answered

    def cancel_request(self, request_id: int) -> None:
        """Withdraw a request we sent on this link."""
        self.session.cancel_request(request_id)
        self.transport.wake()

    # -- streamed answers (docs/PROTOCOL.md 4.1) -----------------------------------------

    def send_data(self, request_id: int, piece: bytes) -> bool:
        """Queue a piece of our streamed answer; see ``LinkSession.send_data``."""
        if self.session.state is LinkState.CLOSED:
            return False
        sent = self.session.send_data(request_id, piece)
        if sent:
            self.transport.wake()
        return sent

    def end_stream(self, request_id: int, mac: bytes | None = None, error: str | None = None):
        """End our streamed answer to the peer's request ``request_id``."""
        if self.session.end_stream(request_id, mac, error):
            self.transport.wake()

    def grant(self, request_id: int, n: int) -> None:
        """Let the answerer of our request ``request_id`` send ``n`` more bytes."""
        if self.session.grant(request_id, n):
            self.transport.wake()

    # -- streamed request bodies (docs/PROTOCOL.md 4.2) ------------------------------------

    def send_body_data(self, request_id: int, piece: bytes) -> bool:
        """Queue a piece of our request's streamed body; see ``LinkSession.send_body_data``."""
        if self.session.state is LinkState.CLOSED:
            return False
        sent = self.session.send_body_data(request_id, piece)
        if sent:
            self.transport.wake()
        return sent

    def end_body(self, request_id: int, mac: bytes | None = None, error: str | None = None):
        """End the streamed body of our request ``request_id``."""
        if self.session.end_body(request_id, mac, error):
            self.transport.wake()

    def grant_body(self, request_id: int, n: int) -> None:
        """Let the asker of ``request_id`` send ``n`` more bytes of its streamed body."""
        if self.session.grant_body(request_id, n):
            self.transport.wake()

    def wait_room(self, timeout: float) -> bool:
        """Wait until the send queue is half empty or the link closes; False on timeout.

        For a producer that met ``QueueFull`` (a worker, never a reader): the writer sets it.
        """
        if self.session.state is LinkState.CLOSED:
            return True
        if self._room is None:
            self._room = Event()
        return self._room.wait(timeout)

    def close(self, reason: str) -> None:
        """Close the link, saying ``reason`` to the peer."""
        self._handle(self.session.close(reason))


class Dialer:
    """Keep a link up to one configured peer, reconnecting with backoff and jitter."""

    def __init__(
        self,
        url: str,
        expected_peer_id: str | None,
        connect: Callable[[str, str | None], Link],
        is_linked: Callable[[str], Link | None],
        *,
        backoff: Backoff | None = None,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        self.url = url
        self.expected_peer_id = expected_peer_id
        self.peer_id = expected_peer_id
        self._connect = connect
        self._is_linked = is_linked
        self.backoff = backoff or Backoff()
        self._on_error = on_error or (lambda where, exc: None)
        self.attempts = 0
        self.failures = 0  # dials that made no connection: refused, unreachable, TLS refused
        self.last_error = ""
        self._greenlet = None

    def status(self) -> dict:
        """Return what this dialer is doing (``/_xio/node`` ``dialling``)."""
        return {"url": self.url, "peer": self.peer_id, "attempts": self.attempts,
                "failures": self.failures, "last_error": self.last_error}  # fmt: skip

    def start(self) -> None:
        """Start dialling in the background."""
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop dialling (an established link stays up until the node closes it)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        while True:
            try:
                delay = self._attempt()
            except Exception as exc:  # a bug of ours: count it, and keep dialling
                log.exception("dialling %s failed", self.url)
                self._on_error("dial", exc)
                delay = self.backoff.maximum
            if delay is None:
                return
            gevent.sleep(delay * random.uniform(0.5, 1.5))

    def _attempt(self) -> float | None:
        """Dial once (or wait out a link the peer made); return the delay before the next.

        ``None``: dial no more (the URL reached this node itself).
        """
        existing = self._is_linked(self.peer_id) if self.peer_id else None
        if existing is not None:
            existing.closed_event.wait()
            return 0.0
        self.attempts += 1
        level = logging.INFO
        try:
            link = self._connect(self.url, self.expected_peer_id)
            link.closed_event.wait()
            if link.session.established_at is not None:
                self.backoff.established(link.session.established_at)
            if link.peer_id:
                self.peer_id = self.expected_peer_id or link.peer_id
            self.last_error = link.close_reason
            if self.last_error.partition(":")[0] == "self_link":  # only ever us again there
                log.warning("not dialling %s again: it is this node itself", self.url)
                return None
        except ConnectError as exc:
            self.failures += 1
            self.last_error = str(exc)
            if isinstance(exc.__cause__, ssl.SSLError):  # a CA or a certificate to fix
                level = logging.WARNING
        delay = self.backoff.next_delay(_monotonic())
        log.log(level, "link to %s down (%s); retry in %.1fs", self.url, self.last_error, delay)
        return delay
