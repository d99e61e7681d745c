"""Links: an authenticated WebSocket to one peer, kept alive, and the dialer that keeps
a ``--peers`` link up.

Theory of operation. A ``Link`` owns one ``Transport``. It runs the pure ``Handshake``
on the first frames (accepting only small frames until it is done), then hands every
frame that is not its own business (ping, pong, bye) to its owner, the node. Any
``RemoteProtocolError`` on the way in is counted by reason, answered with ``bye`` and
closes the link: a peer that sends garbage is disconnected, and the node goes on.

Liveness: every ``ping_interval`` the link sends a ping; any frame received counts as
a sign of life; nothing for ``dead_after`` seconds closes the link with ``timeout``.
The owner hears of a link exactly twice: ``link_established`` and ``link_closed``.

A ``Dialer`` connects to one configured peer and, whenever the link ends, tries
again after an exponentially growing, jittered delay (capped at 30 s) — unless a link
to that peer exists already (it dialled us), in which case it waits for that one to end.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

import gevent
from gevent.event import Event

from ..errors import ConnectError, ConnectionClosed, RemoteProtocolError
from . import codec
from .codec import Bye, Ping, Pong
from .handshake import Handshake
from .transport import Transport

log = logging.getLogger("xio.links")

#: Reasons a transport closes for that mean the peer broke the WebSocket rules: counted.
TRANSPORT_VIOLATIONS = frozenset({"frame_too_large", "text_frame", "protocol_error"})


class LinkState(enum.Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"


class Link:
    """One authenticated link to a peer."""

    def __init__(
        self,
        transport: Transport,
        handshake: Handshake,
        owner,
        *,
        dead_after: float = 2.5,
        handshake_timeout: float = 10.0,
        url: str | None = None,
    ) -> None:
        self.transport = transport
        self.handshake = handshake
        self.owner = owner
        # Pings five times per timeout, so a silent peer is noticed within dead_after
        # plus one ping interval (3 s by default).
        self.ping_interval = dead_after / 5
        self.dead_after = dead_after
        self.handshake_timeout = handshake_timeout
        self.url = url
        self.state = LinkState.HANDSHAKING
        self.rejected: Counter[str] = Counter()
        self.close_reason = ""
        self.established_at: float | None = None
        self.last_received = time.monotonic()
        self.rtt: float | None = None
        self.pending: dict = {}  # request id -> waiting result, owned by the forwarder
        self.serving: dict = {}  # request id -> job answering it, owned by the forwarder
        self._next_request_id = 0
        self._pings: dict[int, float] = {}
        self._keepalive = None
        self.closed_event = Event()

    # -- identity of the link ------------------------------------------------------------

    @property
    def peer_id(self) -> str | None:
        return self.handshake.peer_id

    @property
    def peer_name(self) -> str | None:
        return self.handshake.peer_name

    @property
    def initiator(self) -> bool:
        return self.transport.initiator

    @property
    def established(self) -> bool:
        return self.state is LinkState.ESTABLISHED

    def __repr__(self) -> str:
        return f"<Link {self.peer_name or self.transport.peer} {self.state.value}>"

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake and the keepalive; the transport must not be started yet."""
        self.transport.on_message = self._receive
        self.transport.on_close = self._transport_closed
        # Until the peer has proved its key it may not make us buffer more than a hello.
        self.transport.max_message = codec.MAX_HANDSHAKE_FRAME
        for message in self.handshake.start():
            self.send(message)
        self._keepalive = gevent.spawn(self._keep_alive)
        self.transport.start()

    def next_request_id(self) -> int:
        """Return a request id unused among this link's requests in flight."""
        while True:
            self._next_request_id = (self._next_request_id + 1) & 0xFFFFFFFF
            if self._next_request_id not in self.pending:
                return self._next_request_id

    def send(self, message) -> None:
        """Encode and send one frame; raise ``ConnectionClosed`` if the link is closed."""
        self.transport.send(codec.encode(message))

    def send_bytes(self, frame: bytes) -> None:
        """Send one already encoded frame (a flooded record is relayed byte for byte)."""
        self.transport.send(frame)

    def close(self, reason: str, tell_peer: bool = True) -> None:
        """Close the link, saying ``reason`` to the peer first if ``tell_peer``."""
        if self.state is LinkState.CLOSED:
            return
        if not self.close_reason:
            self.close_reason = reason
        if tell_peer:
            try:
                self.send(Bye(reason[:200]))
            except ConnectionClosed:
                pass
        self.transport.close(reason)

    def _receive(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        try:
            if self.state is LinkState.ESTABLISHED:
                message = codec.decode(data)
                kind = type(message)
                if kind is Ping:
                    self.send(Pong(message.n))
                elif kind is Pong:
                    sent = self._pings.pop(message.n, None)
                    if sent is not None:
                        self.rtt = time.monotonic() - sent
                elif kind is Bye:
                    self.close(f"peer_bye: {message.reason}", tell_peer=False)
                else:
                    self.owner.link_message(self, message)
            else:
                self._receive_handshake(codec.decode(data, codec.MAX_HANDSHAKE_FRAME))
        except RemoteProtocolError as exc:
            self.reject(exc.reason, str(exc), fatal=True)
        except ConnectionClosed:
            pass

    def _receive_handshake(self, message) -> None:
        for answer in self.handshake.receive(message):
            self.send(answer)
        if self.handshake.established:
            self.transport.max_message = codec.MAX_FRAME
            self.state = LinkState.ESTABLISHED
            self.established_at = time.time()
            self.owner.link_established(self)

    def reject(self, reason: str, detail: str = "", fatal: bool = False) -> None:
        """Count a rejected frame by ``reason``; a fatal one closes the link."""
        self.rejected[reason] += 1
        self.owner.count_rejection(reason)
        if fatal:
            log.warning("closing link to %s: %s", self.peer_name or self.transport.peer, detail)
            self.close(reason)

    def _keep_alive(self) -> None:
        count = 0
        deadline = time.monotonic() + self.handshake_timeout
        while self.state is not LinkState.CLOSED:
            gevent.sleep(self.ping_interval)
            now = time.monotonic()
            if self.state is LinkState.HANDSHAKING and now > deadline:
                self.reject("handshake_timeout", "no handshake in time", fatal=True)
            elif now - self.last_received > self.dead_after:
                self.close("keepalive_timeout", tell_peer=False)
            elif self.state is LinkState.ESTABLISHED:
                count += 1
                self._pings = {count: now}  # only the newest ping's answer is timed
                try:
                    self.send(Ping(count))
                except ConnectionClosed:
                    pass

    def _transport_closed(self, reason: str) -> None:
        if self.state is LinkState.CLOSED:
            return
        was_established = self.state is LinkState.ESTABLISHED
        self.state = LinkState.CLOSED
        self.close_reason = self.close_reason or reason
        if reason in TRANSPORT_VIOLATIONS:
            self.rejected[reason] += 1
            self.owner.count_rejection(reason)
        if self._keepalive is not None and self._keepalive is not gevent.getcurrent():
            self._keepalive.kill(block=False)
        self.closed_event.set()
        self.owner.link_closed(self, was_established)


class Dialer:
    """Keep a link up to one configured peer, reconnecting with backoff and jitter."""

    def __init__(
        self,
        url: str,
        expected_peer_id: str | None,
        connect: Callable[[str, str | None], Link],
        is_linked: Callable[[str], Link | None],
        *,
        first_delay: float = 0.25,
        max_delay: float = 30.0,
    ) -> None:
        self.url = url
        self.expected_peer_id = expected_peer_id
        self.peer_id = expected_peer_id
        self._connect = connect
        self._is_linked = is_linked
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.attempts = 0
        self.last_error = ""
        self._greenlet = None

    def start(self) -> None:
        """Start dialling in the background."""
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop dialling (an established link stays up until the node closes it)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        delay = self.first_delay
        while True:
            existing = self._is_linked(self.peer_id) if self.peer_id else None
            if existing is not None:
                existing.closed_event.wait()
                delay = self.first_delay
                continue
            self.attempts += 1
            started = time.monotonic()
            try:
                link = self._connect(self.url, self.expected_peer_id)
                link.closed_event.wait()
                if link.peer_id:
                    self.peer_id = self.expected_peer_id or link.peer_id
                self.last_error = link.close_reason
            except ConnectError as exc:
                self.last_error = str(exc)
            if time.monotonic() - started > self.max_delay:
                delay = self.first_delay  # it lived a while: start over from a short wait
            log.info("link to %s down (%s); retry in %.1fs", self.url, self.last_error, delay)
            gevent.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_delay)
