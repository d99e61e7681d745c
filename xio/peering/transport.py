"""The WebSocket transport: the one module that knows about WebSockets, and the one
adapter between xio and ws4py.

Theory of operation. A ``Transport`` is one WebSocket connection carrying binary messages.
ws4py answers the server's half of the upgrade (``WebSocketEndpoint``); ``connect`` does the
client's half on gevent sockets under one deadline (ws4py's client blocks the hub). Once the
connection is upgraded, ``_Connection`` reads and writes the RFC 6455 frames itself, with two
greenlets:

* the reader fills a buffer with large reads (64 KiB) and parses every complete frame in it, so
  a busy link gets several frames per ``recv``; it lets other greenlets run every few dozen
  frames, so one busy link cannot hold the hub;
* the size cap is checked from the frame header, before any of the payload is buffered
  (close 1009 ``frame_too_large``). A message larger than ``ADMIT_ABOVE`` is buffered only if
  the owner's ``admit`` agrees, after seeing its first bytes, and its buffer grows as the bytes
  arrive: a header that declares 17 MiB costs nothing until 17 MiB have come. A message not
  admitted is read past and dropped. A fragmented message may be at most ``ADMIT_ABOVE`` in
  all (1009 beyond): fragments too small to be admitted one by one must not add up to a large
  message that was never admitted (xio never fragments; RFC 6455 lets a receiver set limits);
* binary only: a text frame closes the connection (1003 ``text_frame``); anything else
  against the RFC (reserved bits, unknown opcode, an unmasked frame from the client or a
  masked one from the server, a continuation of nothing, a new message inside a fragmented
  one, a fragmented or oversized control frame) closes with 1002 ``protocol_error``;
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
bench/RESULTS.md, issue 3). The framing rules are small and the ones above are all links need,
so they live here; ws4py keeps the server upgrade, and replacing it (e.g. with wsproto) stays
a change to this module alone.

The accepting side's reader runs in the greenlet that served the upgrade (the HTTP server
calls ``run``); the dialling side's is spawned by ``Transport.start``.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import time
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from hashlib import sha1
from urllib.parse import urlsplit

import gevent
import gevent.socket
import gevent.ssl
from gevent import GreenletExit
from ws4py import WS_KEY
from ws4py.exc import HandshakeError
from ws4py.server.wsgiutils import WebSocketWSGIApplication

from ..errors import ConnectError, ConnectionClosed, LocalProtocolError, QueueFull

__all__ = ["Transport", "WebSocketEndpoint", "connect"]

log = logging.getLogger("xio.transport")

# Opcodes (RFC 6455, 5.2).
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_MASKED = 0x80
_RESERVED_BITS = 0x70  # RSV1-3: no extension is ever negotiated, so they must be 0

_CONTROL_PAYLOAD = 125  # RFC 6455 5.5: the most a control frame may carry
_READ_SIZE = 64 * 1024  # one recv; a busy link brings several frames in it
_LARGE_READ = 1024 * 1024  # one recv into a large payload
_JOIN_LIMIT = 64 * 1024  # frames up to this leave in one send with their neighbours
_WRITE_BATCH = 256 * 1024  # what the writer asks its owner for at once
_FRAMES_PER_TURN = 64  # frames a reader delivers before it lets other greenlets run ...
_BYTES_PER_FRAME = 1024  # ... large ones counting as one per KiB (records cost by their size)
_PREFIX = 64  # bytes of a large message shown to ``admit``
_DEFAULT_MAX_QUEUE = 64 * 1024 * 1024  # send() without an owner's queue
#: Messages larger than this are buffered only when the owner's ``admit`` says so.
ADMIT_ABOVE = 64 * 1024
#: How long final frames may take to leave before the socket is closed anyway.
CLOSE_TIMEOUT = 1.0

_MASK_KEYS = 4096  # bytes of randomness drawn at once: masking keys for 1024 frames
_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")


def _mask(key: bytes, data: bytes) -> bytes:
    """Mask or unmask ``data`` with a 4-byte ``key`` (RFC 6455, 5.3)."""
    # One big-integer XOR: ws4py's byte-by-byte loop took 14 us for 200 bytes and 96 ms
    # for 1 MiB (the hub blocked); this is 20-25 times faster and needs no C extension.
    size = len(data)
    if not size:
        return b""
    pad = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(size, "little")


class _MaskKeys:
    """Masking keys for a client's frames, drawn from ``os.urandom`` in batches."""

    # RFC 6455 10.3 wants keys an attacker cannot predict, which os.urandom gives; one
    # getrandom call per frame was a syscall per request, so keys are drawn 1024 at a time.
    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def take(self) -> bytes:
        """Return a fresh 4-byte key."""
        start = self._next
        if start >= len(self._pool):
            self._pool, start = os.urandom(_MASK_KEYS), 0
        self._next = start + 4
        return self._pool[start : start + 4]


_mask_keys = _MaskKeys()
os.register_at_fork(after_in_child=_mask_keys.__init__)  # a child must not reuse our keys


def _frame_header(opcode: int, size: int, mask_key: bytes | None) -> bytes:
    """Return the header of a final frame of ``size`` payload bytes."""
    mask_bit = _MASKED if mask_key is not None else 0
    if size < 126:
        header = bytes((_FIN | opcode, mask_bit | size))
    elif size < 65536:
        header = _LENGTH_16.pack(_FIN | opcode, mask_bit | 126, size)
    else:
        header = _LENGTH_64.pack(_FIN | opcode, mask_bit | 127, size)
    return header + mask_key if mask_key is not None else header


def _parse_header(data: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """Return ``(first byte, second byte, payload length, payload offset)`` of the frame at
    ``data[pos:]``, or None until its header (mask key included) is complete."""
    available = len(data) - pos
    if available < 2:
        return None
    first, second = data[pos], data[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        if available < 4:
            return None
        length = int.from_bytes(data[start : start + 2], "big")
        start += 2
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(data[start : start + 8], "big")
        start += 8
    if second & _MASKED:
        start += 4
    return None if start > len(data) else (first, second, length, start)


class _Violation(Exception):
    """The peer broke a framing rule: close with ``code``, for ``reason``."""

    def __init__(self, reason: str, code: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.code = code


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
        self._queue: deque[bytes] = deque()  # send() without an owner's pull
        self._queued = 0
        self._connection = connection
        self._started = not initiator  # the server runs the accepting side's reader
        connection.transport = self

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self.closed else "open"
        return f"<Transport {'to' if self.initiator else 'from'} {self.peer} {state}>"

    def start(self) -> None:
        """Begin delivering messages (a no-op on the accepting side, which delivers already)."""
        if not self._started and not self.closed:
            self._started = True
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

    def close(self, reason: str = "", final: list[bytes] | None = None) -> None:
        """Close: tell ``on_close`` now; the writer sends ``final`` and a close frame if it can.

        ``final`` are the last binary messages (e.g. a ``bye``). Nothing waits for a peer that
        does not read: after ``CLOSE_TIMEOUT`` the socket is closed whatever is left unsent.
        """
        self._end(reason or "local_close", 1000, final)

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
        self._fragments: list[bytes] | None = None  # an unfinished fragmented message
        self._fragments_size = 0
        self._pong: bytes | None = None  # the answer to the newest WebSocket ping, unsent
        self._closing: list[bytes] | None = None  # final frames, once the transport closed
        self._parked = False  # the writer waits in the hub for wake()
        self._close_timer = None
        self._writer = gevent.spawn(self._write_loop)

    # -- reading ---------------------------------------------------------------------------

    def run(self) -> None:
        """Read frames until the connection ends (the reader greenlet's body)."""
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
        except _Violation as exc:
            log.debug("bad frame from %s: %s", transport.peer, exc)
            transport._end(exc.reason, exc.code)
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
        transport = self.transport
        data, self.leftover = self.leftover, b""
        transport.bytes_received += len(data)
        pos = 0
        turn = 0  # frames, and their bytes / _BYTES_PER_FRAME, delivered since we last yielded
        while not transport.closed:
            header = _parse_header(data, pos)
            if header is None:  # need more bytes: keep the partial header, read behind it
                data, pos = data[pos:] + self._recv(), 0
                continue
            first, second, length, start = header
            self._check(first, second, length)  # before any of the payload is buffered
            if length > ADMIT_ABOVE and first & 0x0F < _CLOSE:
                payload, data = self._read_large(data, start, length, first, second)
                pos = 0
                if payload is None:
                    continue  # discarded, or the owner closed the transport
            else:
                end = start + length
                if end > len(data):  # the rest of a small frame: a few more reads
                    data = data[pos:]
                    start, end = start - pos, end - pos
                    while end > len(data):
                        data += self._recv()
                    pos = 0
                payload = data[start:end]
                if second & _MASKED:
                    payload = _mask(data[start - 4 : start], payload)
                pos = end
            self._frame(first, payload)
            turn += 1 + len(payload) // _BYTES_PER_FRAME
            if turn >= _FRAMES_PER_TURN:
                turn = 0
                gevent.sleep(0)  # a busy link must not keep the hub from everyone else

    def _read_large(self, data: bytes, start: int, length: int, first: int, second: int):
        """Read a payload over ``ADMIT_ABOVE`` bytes, buffered only once the owner admits it.

        ``data[start:]`` holds the payload's beginning (the mask key is just before it).
        Return ``(payload or None, bytes after the payload)``.
        """
        masked = bool(second & _MASKED)
        key = data[start - 4 : start] if masked else b""
        while len(data) - start < min(length, _PREFIX):
            data += self._recv()
        prefix = bytes(data[start : start + _PREFIX])  # its first bytes, to name its type
        if masked:
            prefix = _mask(key, prefix)
        if not self.transport.admit(length, prefix):
            rest = self._skip(data, start, length)
            if not self.transport.closed:
                self.transport.on_discarded()
            return None, rest
        # Grow the buffer as bytes arrive: a header alone never makes us allocate its length.
        payload = bytearray(data[start : start + length])
        while len(payload) < length:
            payload += self._recv(min(length - len(payload), _LARGE_READ))
        rest = bytes(data[start + length :])
        if masked:
            return _mask(key, payload), rest
        return bytes(payload), rest

    def _skip(self, data: bytes, start: int, length: int) -> bytes:
        """Read past ``length`` payload bytes keeping none of them; return what follows."""
        have = len(data) - start
        if have >= length:
            return data[start + length :]
        left = length - have
        while left > 0:
            left -= len(self._recv(min(left, _LARGE_READ)))
        return b""  # recv never returns more than it is asked for

    def _check(self, first: int, second: int, length: int) -> None:
        """Refuse a frame from its header alone; raise ``_Violation``."""
        opcode = first & 0x0F
        if first & _RESERVED_BITS:
            raise _Violation("protocol_error", 1002, "reserved bits set")
        if bool(second & _MASKED) == self.client:
            raise _Violation("protocol_error", 1002, "frame masked the wrong way for its sender")
        if opcode >= _CLOSE:
            if opcode > _PONG:
                raise _Violation("protocol_error", 1002, f"unknown opcode {opcode:#x}")
            if not first & _FIN or length > _CONTROL_PAYLOAD:
                raise _Violation("protocol_error", 1002, "fragmented or long control frame")
            return
        if opcode > _BINARY:
            raise _Violation("protocol_error", 1002, f"unknown opcode {opcode:#x}")
        if (opcode == _CONTINUATION) != (self._fragments is not None):
            raise _Violation("protocol_error", 1002, "continuation out of place")
        if opcode == _TEXT:
            raise _Violation("text_frame", 1003, "text frame")
        if self._fragments_size + length > self.transport.max_message:
            raise _Violation("frame_too_large", 1009, f"message over {length} bytes")
        fragmented = opcode == _CONTINUATION or not first & _FIN
        if fragmented and self._fragments_size + length > ADMIT_ABOVE:
            raise _Violation("frame_too_large", 1009, f"fragmented message > {ADMIT_ABOVE} bytes")

    def _frame(self, first: int, payload: bytes) -> None:
        """Act on one checked frame."""
        opcode = first & 0x0F
        if opcode == _BINARY and first & _FIN:
            self._deliver(payload)
        elif opcode < _CLOSE:  # the first or a further fragment of a message
            if self._fragments is None:
                self._fragments = []
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if first & _FIN:
                message = b"".join(self._fragments)
                self._fragments, self._fragments_size = None, 0
                self._deliver(message)
        elif opcode == _PING:
            # RFC 6455 5.5.3: answering only the newest ping is allowed, and a peer that
            # pings without reading cannot make pongs pile up.
            self._pong = bytes(payload)
            self.wake()
        elif opcode == _CLOSE:
            if len(payload) == 1:
                raise _Violation("protocol_error", 1002, "close frame with a 1-byte payload")
            log.debug("peer %s closed: %r", self.transport.peer, payload[:2])
            self.transport._end("peer_closed", 1000)
        # a pong: the link layer has its own pings, so there is nothing to do

    def _deliver(self, message: bytes) -> None:
        transport = self.transport
        try:
            transport.on_message(message)
        except Exception:
            log.exception("on_message of transport %s failed", transport.peer)
            transport._end("internal_error", 1011)

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
                    frames += _frame_parts(_PONG, self._pong, self.client)
                    self._pong = None
                if not transport.closed:
                    for data in transport._next_frames(_WRITE_BATCH):
                        frames += _frame_parts(_BINARY, data, self.client)
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
        text = reason.encode()[:123].decode("utf-8", "ignore").encode()  # <= 125 bytes
        frames = [part for data in final or () for part in _frame_parts(_BINARY, data, self.client)]
        frames += _frame_parts(_CLOSE, code.to_bytes(2, "big") + text, self.client)
        self._closing = frames
        if self._parked:
            self.wake()
        else:
            # The writer is busy (perhaps stuck on a peer that does not read): the socket is
            # closed after CLOSE_TIMEOUT whatever it has sent by then.
            self._close_timer = gevent.get_hub().loop.timer(CLOSE_TIMEOUT)
            self._close_timer.start(self._close_socket)

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


def _frame_parts(opcode: int, payload: bytes, client: bool) -> list[bytes]:
    """Return one final frame carrying ``payload`` (masked when a client sends it), in one
    piece, or as header and payload when the payload is too large to copy again."""
    key = _mask_keys.take() if client else None
    header = _frame_header(opcode, len(payload), key)
    if key is not None:
        payload = _mask(key, payload)
    return [header + payload] if len(payload) <= _JOIN_LIMIT else [header, payload]


def _address(sock) -> str:
    with suppress(OSError):
        host, port = sock.getpeername()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return "?"


def _no_delay(sock) -> None:
    with suppress(OSError):  # measured here: without it a small write can wait ~40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(
    url: str,
    *,
    timeout: float = 5.0,
    max_message: int,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> Transport:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and return its transport.

    Block the calling greenlet until the upgrade is done, at most ``timeout`` seconds. For
    ``wss://`` verify the server with ``ssl_context``, by default against the system's
    authorities. Raise ``ConnectError`` on any failure, a malformed URL included. Call
    ``start()`` on the transport once its callbacks are set.
    """
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        sock, leftover = _dial(url, timeout, ssl_context, headers or {})
    except gevent.Timeout as exc:
        if exc is not timer:
            raise  # someone else's deadline
        raise ConnectError(f"{url}: no WebSocket within {timeout:g}s") from exc
    except Exception as exc:  # socket, DNS, TLS, URL or upgrade failure
        raise ConnectError(f"{url}: {str(exc) or repr(exc)}") from exc
    finally:
        timer.close()
    # The server's first frames may come in the same read as its answer.
    connection = _Connection(sock, client=True, leftover=leftover)
    return Transport(connection, _address(sock), True, max_message)


def _dial(url: str, timeout: float, ssl_context: ssl.SSLContext | None, headers: dict):
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise HandshakeError("not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    address = (parts.hostname, parts.port or (443 if secure else 80))
    sock = gevent.socket.create_connection(address, timeout=timeout)
    try:
        _no_delay(sock)
        if secure:  # gevent's SSLSocket takes any context; the stdlib's would block the hub
            context = ssl_context or ssl.create_default_context()
            sock = gevent.ssl.SSLSocket(sock=sock, server_hostname=parts.hostname, _context=context)
        key = b64encode(os.urandom(16))
        request = (
            f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
            f"Host: {parts.netloc.rpartition('@')[2]}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        )
        sock.sendall(request.encode("latin-1") + b"\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk or len(received) > 16384:
                raise HandshakeError("no complete answer to the upgrade request")
            received += chunk
        head, _, leftover = received.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        if status.split(" ", 2)[1:2] != ["101"]:
            raise HandshakeError(f"answered {status!r}, not 101")
        answer = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if (
            answer.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in answer.get("connection", "").lower()
            or answer.get("sec-websocket-accept") != b64encode(sha1(key + WS_KEY).digest()).decode()
        ):
            raise HandshakeError("the 101 answer is not a valid WebSocket upgrade")
        sock.settimeout(None)
        return sock, leftover
    except BaseException:
        sock.close()
        raise


class WebSocketEndpoint:
    """A WSGI app accepting WebSocket upgrades at ``path``, for ``Server(websocket_app=)``.

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

    def _accept(self, sock, protocols, extensions, environ) -> _Connection:
        # ws4py's handshake calls this (as its handler_cls) with the socket it upgraded.
        _no_delay(sock)
        connection = _Connection(sock, client=False, on_open=self.on_transport)
        Transport(connection, _address(sock), False, self.max_message)
        return connection
