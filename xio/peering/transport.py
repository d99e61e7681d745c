"""The WebSocket transport: the adapter between sockets, greenlets and xio's links, and the one
module that imports ws4py.

Theory of operation. A ``Transport`` is one WebSocket connection carrying binary messages.
ws4py answers the server's half of the upgrade (``WebSocketEndpoint``, the HTTP server's
upgrade hook); ``connect`` does the client's half on gevent sockets under one deadline (ws4py's
client blocks the hub). Once the connection is upgraded, the frames are the pure
``websocket`` module's business (``FrameReader`` for what arrives, ``frame_parts`` for what
leaves: every framing rule, close code and cap is there) and ``_Connection`` only moves bytes,
with two greenlets:

* the reader feeds ``FrameReader`` with large reads (64 KiB; a large payload in reads of up
  to 1 MiB, never past its end) and acts on its events, so a busy link gets several frames
  per ``recv``; it lets other greenlets run every few dozen frames, so one busy link cannot
  hold the hub. A message larger than ``ADMIT_ABOVE`` is buffered only if the owner's
  ``admit`` agrees after seeing its first bytes; a violation closes with the reader's code
  and reason (1009 ``frame_too_large``, 1003 ``text_frame``, 1002 ``protocol_error``);
* pings are answered with a pong for the newest one; a close frame from the peer ends the
  connection with ``peer_closed``;
* the writer is the only code that writes to the socket. It takes frames from the owner's
  queue (``pull``) when woken, joins small ones into one ``send``, and may block on a peer
  that does not read without blocking anyone else: a reader, a flood or another link never
  waits for it. The owner sees its progress in ``bytes_sent`` and decides when it has waited
  too long;
* exactly one ``on_close(reason)``, from the first of ``close()``, a protocol violation, the
  peer's close frame and a failing socket. On ``close()`` the writer sends a last message and
  the close frame if it can; a socket that does not take them is closed after
  ``CLOSE_TIMEOUT``.

Why our own framing: ws4py's generator parser made four ``recv`` calls per frame (2 bytes,
the extended length, the mask key, the payload) and its writer built a ``Message`` and a
``Frame`` object per send; on this machine that was most of a link's per-hop cost (see
bench/RESULTS.md, issue 3). ws4py keeps the server upgrade and is imported here only, so
replacing it (e.g. with wsproto's handshake) is a change to this module alone. The client's
half of the upgrade, which ws4py does not do on gevent, is ``xio.peering.dial``.

The accepting side's reader runs in the greenlet that served the upgrade (the HTTP server hands
the upgraded socket over); the dialling side's is spawned by ``Transport.start``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from base64 import b64decode
from collections import deque
from collections.abc import Callable
from contextlib import suppress

import gevent
import gevent.socket
import gevent.ssl
from gevent import GreenletExit
from gevent.event import Event
from ws4py.exc import HandshakeError
from ws4py.server.wsgiutils import WebSocketWSGIApplication

from ..errors import ConnectionClosed, LocalProtocolError, QueueFull
from . import websocket

__all__ = ["Transport", "WebSocketEndpoint", "no_delay", "peer_address"]

log = logging.getLogger("xio.transport")

_READ_SIZE = 64 * 1024  # one recv; a busy link brings several frames in it
_LARGE_READ = 1024 * 1024  # one recv into a large payload
_JOIN_LIMIT = 64 * 1024  # frames up to this leave in one send with their neighbours
_WRITE_BATCH = 256 * 1024  # what the writer asks its owner for at once
_FRAMES_PER_TURN = 64  # frames a reader delivers before it lets other greenlets run ...
_BYTES_PER_FRAME = 1024  # ... large ones counting as one per KiB (records cost by their size)
_DEFAULT_MAX_QUEUE = 64 * 1024 * 1024  # send() without an owner's queue
#: Messages larger than this are buffered only when the owner's ``admit`` says so.
ADMIT_ABOVE = websocket.ADMIT_ABOVE
#: How long final frames may take to leave before the socket is closed anyway.
CLOSE_TIMEOUT = 1.0

_mask_keys = websocket.MaskKeys()
os.register_at_fork(after_in_child=_mask_keys.reset)  # a child must not reuse our keys


class Transport:
    """One WebSocket connection carrying binary messages, with its reader and its writer.

    The owner sets its callbacks before ``start()`` (when accepting: in ``on_transport``):

    * ``on_message(data)`` runs in the reader greenlet, one message at a time, in order;
    * ``on_close(reason)`` runs once, in whichever greenlet ended the connection;
    * ``admit(size, prefix)`` is asked, in the reader, before a message larger than
      ``ADMIT_ABOVE`` is buffered: ``prefix`` is its first bytes. True: read it; False: read past it, keeping nothing, and call
      ``on_discarded()``. The owner may close the transport from ``admit`` instead;
    * ``pull(max_bytes)`` is the owner's send queue: the writer asks it for the next frames
      (at least one if any wait, about ``max_bytes`` in all) and calls ``wake()`` is how the
      owner says some are waiting. Without ``pull``, ``send()`` queues on the transport itself.

    ``max_message``, the most the peer may send, may be changed any time (kept small until the
    peer is known). ``bytes_received`` and ``bytes_sent`` count payload and framing bytes as
    they cross the socket; ``writing`` is true while the writer holds frames it has not
    finished writing. The owner's keepalive reads them: no clock is read per frame.
    """

    def __init__(self, connection: _Connection, peer: str, initiator: bool, max_message: int):
        self._connection = connection
        self.peer = peer
        self.initiator = initiator
        self.max_message = max_message
        self.max_queue = _DEFAULT_MAX_QUEUE
        self.closed = False
        self.close_reason = ""
        self.bytes_received = 0
        self.bytes_sent = 0
        self.writing = False
        self.on_message: Callable[[bytes], None] = lambda data: None
        self.on_close: Callable[[str], None] = lambda reason: None
        self.admit: Callable[[int, bytes], bool] = lambda size, prefix: True
        self.on_discarded: Callable[[], None] = lambda: None
        self.pull: Callable[[int], list[bytes]] | None = None
        self.environ: dict = {}  # the upgrade request's, on the accepting side
        self._queue: deque[bytes] = deque()  # send() without an owner's pull
        self._queued = 0
        self._started = not initiator  # the server runs the accepting side's reader
        connection.transport = self

    @property
    def max_message(self) -> int:
        return self._connection.reader.max_message

    @max_message.setter
    def max_message(self, size: int) -> None:
        self._connection.reader.max_message = size  # the next frame header is judged by it

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self.closed else "open"
        return f"<Transport {'to' if self.initiator else 'from'} {self.peer} {state}>"

    def start(self) -> None:
        """Begin delivering messages (a no-op on the accepting side, which delivers already)."""
        if not self._started and not self.closed:
            self._started = True
            self._connection.reading = True
            gevent.spawn(self._connection.run)

    def send(self, data: bytes) -> None:
        """Queue ``data`` as one binary message; raise ``ConnectionClosed`` if closed.

        Never blocks: the writer greenlet sends it. Raise ``QueueFull`` when ``max_queue``
        bytes wait already (a peer that does not read cannot make us hold more).
        """
        if self.closed:
            raise ConnectionClosed(f"transport {self.peer} is closed ({self.close_reason})")
        if not isinstance(data, (bytes, bytearray)):
            raise LocalProtocolError(f"a transport sends bytes, not {type(data).__name__}")
        if self._queued and self._queued + len(data) > self.max_queue:
            raise QueueFull(f"{self._queued} bytes wait to be sent to {self.peer}")
        self._queue.append(data)
        self._queued += len(data)
        self._connection.wake()

    def wake(self) -> None:
        """Tell the writer that the owner's ``pull`` has frames waiting."""
        self._connection.wake()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what ``send`` queued is in the socket; tell whether it got there in time.

        For simple clients and tests; a node's links never wait for their writer.
        """
        deadline = time.monotonic() + timeout
        while (self._queued or self.writing) and not self.closed:
            if time.monotonic() > deadline:
                return False
            gevent.sleep(0.001)
        return not self.closed

    def join(self, timeout: float | None = None) -> None:
        """Wait until the writer has finished (its last frames sent, or given up on)."""
        self._connection.join(timeout)

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait until the connection is over: closed, its reader and writer greenlets ended,
        so that nothing more happens on it (no callback either); tell whether it is."""
        return self._connection.ended.wait(timeout)

    def _next_frames(self, max_bytes: int) -> list[bytes]:
        if self.pull is not None:
            return self.pull(max_bytes)
        frames, size, queue = [], 0, self._queue
        while queue and (not frames or size + len(queue[0]) <= max_bytes):
            data = queue.popleft()
            frames.append(data)
            size += len(data)
        self._queued -= size
        return frames

    def close(self, reason: str = "", final: list[bytes] | None = None, code: int = 1000) -> None:
        """Close: tell ``on_close`` now; the writer sends ``final`` and a close frame if it can
        (``code`` in it: 1000, or e.g. 1002 for a peer that broke a protocol above frames).

        ``final`` are the last binary messages (e.g. a ``bye``). Nothing waits for a peer that
        does not read: after ``CLOSE_TIMEOUT`` the socket is closed whatever is left unsent.
        """
        self._end(reason or "local_close", code, final)

    def _end(self, reason: str, code: int | None = None, final: list[bytes] | None = None) -> None:
        """Close for ``reason``, with a close frame carrying ``code`` unless it is None."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._queue.clear()
        self._connection.shut(code, reason, final)
        log.debug("transport %s closed: %s", self.peer, reason)
        try:
            self.on_close(reason)
        except Exception:
            log.exception("on_close of transport %s failed", self.peer)


class _Connection:
    """The frames of one upgraded socket: a reader loop, a writer greenlet, a close."""

    transport: Transport

    def __init__(
        self,
        sock,
        *,
        client: bool,
        on_open: Callable[[Transport], None] | None = None,
        leftover: bytes = b"",
    ) -> None:
        self.sock = sock
        self.client = client  # a client masks what it sends; a server requires masking
        self.leftover = leftover  # frames that came right behind the server's 101 answer
        self._on_open = on_open or (lambda transport: None)
        # max_message is the transport's, set when the Transport is made
        self.reader = websocket.FrameReader(client=client, max_message=0)
        self._turn = 0
        self._pong: bytes | None = None  # the answer to the newest WebSocket ping, unsent
        self._closing: list[bytes] | None = None  # final frames, once the transport closed
        self._parked = False  # the writer waits in the hub for wake()
        self._close_timer = None
        self.reading = (
            not client
        )  # a reader runs or is about to (the server runs the accepting one)
        self._writer_done = False
        self.ended = Event()  # set once closed, with the reader and the writer ended
        self._writer = gevent.spawn(self._write_loop)

    # -- reading ---------------------------------------------------------------------------

    def run(self) -> None:
        """Read frames until the connection ends (the reader greenlet's body)."""
        self.reading = True
        try:
            self._run()
        finally:
            self.reading = False
            self._note_end()

    def _note_end(self) -> None:
        if self.transport.closed and self._writer_done and not self.reading:
            self.ended.set()

    def _run(self) -> None:
        transport = self.transport
        if self.sock is None:  # closed between start() and this greenlet's turn
            return
        try:
            self._on_open(transport)
        except Exception:
            log.exception("on_transport failed for %s", transport.peer)
            transport._end("internal_error", 1011)
            return
        try:
            self._read_frames()
        except (OSError, ConnectionClosed) as exc:
            # A reset, the end of the stream, or the socket closed under the reader.
            log.debug("transport %s read failed: %r", transport.peer, exc)
        finally:
            transport._end("connection_lost")

    def _recv(self, size: int = _READ_SIZE) -> bytes:
        sock = self.sock
        if sock is None:
            raise ConnectionClosed("socket closed")
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionClosed("end of stream")
        self.transport.bytes_received += len(chunk)
        return chunk

    def _read_frames(self) -> None:
        transport, reader = self.transport, self.reader
        chunk, self.leftover = self.leftover, b""
        transport.bytes_received += len(chunk)
        self._turn = 0  # frames, and their bytes / _BYTES_PER_FRAME, delivered since a yield
        while not transport.closed:
            events = reader.receive(chunk)
            while events and not transport.closed:
                while events and not transport.closed:
                    events = self._act(events)
                # a frame over the cap waits until the messages before it were seen (the
                # handshake raises the cap): parse again now that they were
                events = reader.receive(b"") if not transport.closed else []
            left = reader.payload_left  # a large payload is read in large pieces, not past
            chunk = self._recv(min(left, _LARGE_READ) if left else _READ_SIZE)

    def _act(self, events: list) -> list:
        """Act on the reader's events in order; return those that follow an admission."""
        transport, turn = self.transport, self._turn
        for event in events:
            if type(event) is websocket.Message:  # nearly always: kept short
                data = event.data
                self._deliver(data)
                turn += 1 + len(data) // _BYTES_PER_FRAME
            else:
                turn += 1
                if type(event) is websocket.AdmitRequest:  # always the last of its list
                    self._turn = turn
                    admitted = transport.admit(event.size, event.prefix)
                    return [] if transport.closed else self.reader.admit(bool(admitted))
                self._control(event)
            if transport.closed:
                return []
            if turn >= _FRAMES_PER_TURN:
                turn = 0
                gevent.sleep(0)  # a busy link must not keep the hub from everyone else
        self._turn = turn
        return []

    def _control(self, event) -> None:
        transport, kind = self.transport, type(event)
        if kind is websocket.Ping:
            # RFC 6455 5.5.3: answering only the newest ping is allowed, and a peer that
            # pings without reading cannot make pongs pile up.
            self._pong = event.payload
            self.wake()
        elif kind is websocket.Discarded:
            if not transport.closed:
                transport.on_discarded()
        elif kind is websocket.Close:
            log.debug("peer %s closed: %r", transport.peer, event.code)
            transport._end("peer_closed", 1000)
        elif kind is websocket.Violation:
            log.debug("bad frame from %s: %s", transport.peer, event.detail)
            transport._end(event.reason, event.code)
        # a pong: the link layer has its own pings, so there is nothing to do

    def _deliver(self, message: bytes) -> None:
        try:
            self.transport.on_message(message)
        except Exception:
            log.exception("on_message of transport %s failed", self.transport.peer)
            self.transport._end("internal_error", 1011)

    # -- writing: only the writer greenlet writes to the socket -----------------------------

    def join(self, timeout: float | None) -> None:
        """Wait for the writer greenlet to end."""
        self._writer.join(timeout)

    def wake(self) -> None:
        """Let the writer run if it waits for frames."""
        if self._parked:
            self._parked = False
            self._writer.parent.loop.run_callback(self._writer.switch)

    def _write_loop(self) -> None:
        hub = gevent.get_hub()
        try:
            while True:
                transport = self.transport
                if self._closing is not None:
                    self._write_final()
                    return
                frames = []
                if self._pong is not None:
                    frames += self._parts(websocket.PONG, self._pong)
                    self._pong = None
                if not transport.closed:
                    for data in transport._next_frames(_WRITE_BATCH):
                        frames += self._parts(websocket.BINARY, data)
                if not frames:
                    self._parked = True
                    hub.switch()  # until wake(), or shut() for the end
                    continue
                transport.writing = True
                self._write(frames)
                transport.writing = False
        except (OSError, ConnectionClosed) as exc:
            log.debug("transport %s write failed: %r", self.transport.peer, exc)
            self.transport._end("connection_lost")
        except GreenletExit:
            pass
        finally:
            self._parked = False
            if self.transport.closed:
                self._close_socket()
            else:
                self.transport._end("connection_lost")
            self._writer_done = True
            self._note_end()

    def _write(self, frames: list[bytes]) -> None:
        sock, transport = self.sock, self.transport
        if sock is None:
            raise ConnectionClosed("socket closed")
        # Small frames leave together in one send; large ones are not copied again.
        if len(frames) > 1 and sum(map(len, frames)) <= _JOIN_LIMIT:
            frames = [b"".join(frames)]
        for data in frames:
            # A plain send first: gevent's sendall asks the socket for its buffer size
            # (a getsockopt call) every time, and a small frame nearly always fits.
            sent = sock.send(data)
            transport.bytes_sent += sent
            if sent < len(data):
                view = memoryview(data)
                while sent < len(data):
                    count = sock.send(view[sent:])
                    sent += count
                    transport.bytes_sent += count

    def _write_final(self) -> None:
        """Send the final frames, giving up after ``CLOSE_TIMEOUT``, then close the socket."""
        final, self._closing = self._closing, []
        if final and self.sock is not None:
            with suppress(OSError, ConnectionClosed), gevent.Timeout(CLOSE_TIMEOUT, False):
                self._write([b"".join(final)])
        self._close_socket()

    def shut(self, code: int | None, reason: str, final: list[bytes] | None) -> None:
        """End the connection: the writer sends ``final`` and a close frame if it can."""
        if self.sock is None or self._closing is not None:
            return
        if code is None:  # the connection is lost: nothing more can be sent
            self._closing = []
            self._close_socket()
            return
        frames = [part for data in final or () for part in self._parts(websocket.BINARY, data)]
        frames += self._parts(websocket.CLOSE, websocket.close_payload(code, reason))
        self._closing = frames
        if self._parked:
            self.wake()
        else:
            # The writer is busy (perhaps stuck on a peer that does not read): the socket is
            # closed after CLOSE_TIMEOUT whatever it has sent by then.
            self._close_timer = gevent.get_hub().loop.timer(CLOSE_TIMEOUT)
            self._close_timer.start(self._close_socket)

    def _parts(self, opcode: int, payload: bytes) -> list[bytes]:
        """Return one frame, masked if we are the client (RFC 6455 5.3)."""
        return websocket.frame_parts(opcode, payload, _mask_keys.take() if self.client else None)

    def _close_socket(self) -> None:
        sock, self.sock = self.sock, None  # readers and writers from now on stop
        if sock is None:
            return
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._parked:  # a writer still parked has nothing left to do
            self._parked = False
            self._writer.kill(block=False)


def peer_address(sock) -> str:
    with suppress(OSError):
        host, port = sock.getpeername()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return "?"


def no_delay(sock) -> None:
    with suppress(OSError):  # measured here: without it a small write can wait ~40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class WebSocketEndpoint:
    """The upgrade hook accepting WebSocket upgrades at ``path``, for ``Server(websocket_app=)``.

    Call ``on_transport(transport)`` in each connection's reader greenlet once it is open;
    messages are delivered once that call returns. ``admit(environ)``, if given, is asked before
    each upgrade: None accepts it, ``(status, text, headers)`` refuses it with that answer
    (e.g. ``("503 Service Unavailable", "...", [("Retry-After", "5")])``).
    """

    def __init__(
        self,
        on_transport: Callable[[Transport], None],
        *,
        path: str = "/_xio/ws",
        max_message: int,
        admit: Callable[[dict], tuple[str, str, list] | None] | None = None,
    ) -> None:
        self.on_transport = on_transport
        self.path = path
        self.max_message = max_message
        self.admit = admit
        self._upgrade = WebSocketWSGIApplication(handler_cls=self._accept)

    def __call__(self, environ: dict, start_response):
        status, text = "426 Upgrade Required", "this is a WebSocket endpoint"
        headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
        refusal = None
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket" and self.admit is not None:
            refusal = self.admit(environ)
        if refusal is not None:
            status, text, headers = refusal
        elif environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            try:
                # ws4py fails with AttributeError on a missing key, accepts a malformed one.
                if len(b64decode(environ.get("HTTP_SEC_WEBSOCKET_KEY", ""), validate=True)) != 16:
                    raise HandshakeError("Sec-WebSocket-Key is not 16 bytes in base64")
                return self._upgrade(environ, start_response)
            except (HandshakeError, ValueError) as exc:
                status, text, headers = "400 Bad Request", f"bad WebSocket upgrade: {exc}", []
        body = text.encode() + b"\n"
        start_response(
            status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + headers
        )
        return [body]

    def accept(self, environ: dict, start_response, sock):
        """Answer an upgrade the HTTP server hands over with its socket (``Server``'s hook).

        Return the answer's body and what serves the connection once the answer (a 101)
        is written, or None when the upgrade was refused.
        """
        # ws4py's environ protocol, as its own gevent handler speaks it: the socket goes in,
        # the websocket object to run comes out.
        environ["ws4py.socket"] = sock
        try:
            body = self(environ, start_response) or []
        finally:
            del environ["ws4py.socket"]
        connection = environ.pop("ws4py.websocket", None)
        return body, (connection.run if connection is not None else None)

    def _accept(self, sock, protocols, extensions, environ) -> _Connection:
        # ws4py's handshake calls this (as its handler_cls) with the socket it upgraded.
        no_delay(sock)
        connection = _Connection(sock, client=False, on_open=self.on_transport)
        Transport(connection, peer_address(sock), False, self.max_message).environ = environ
        return connection
