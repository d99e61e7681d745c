"""The WebSocket transport: the one module that knows about WebSockets, and the one
adapter between xio and ws4py.

Theory of operation. A ``Transport`` is one WebSocket connection carrying binary messages.
ws4py answers the server's half of the upgrade (``WebSocketEndpoint``); ``connect`` does the
client's half on gevent sockets under one deadline (ws4py's client blocks the hub). Once the
connection is upgraded, ``_Connection`` reads and writes the RFC 6455 frames itself:

* reading: one greenlet per connection fills a buffer with large reads (64 KiB) and parses
  every complete frame in it, so a busy link gets several frames per ``recv``; a payload
  that has not fully arrived is then read, exactly, into a buffer of its own size (from the
  header) with ``recv_into``;
* the size cap is checked from the frame header, before any of the payload is buffered
  (close 1009 ``frame_too_large``); fragments count together towards it;
* binary only: a text frame closes the connection (1003 ``text_frame``); anything else
  against the RFC (reserved bits, unknown opcode, an unmasked frame from the client or a
  masked one from the server, a continuation of nothing, a new message inside a fragmented
  one, a fragmented or oversized control frame) closes with 1002 ``protocol_error``;
* pings are answered with pongs (control frames may come between fragments); a close frame
  from the peer is answered and ends the connection with ``peer_closed``;
* writing: each frame is one ``send`` (header and payload joined unless the payload is
  large), under one lock around every write, pongs and close frames included, so frames
  never interleave;
* exactly one ``on_close(reason)``, from the first of ``close()``, a protocol violation, the
  peer's close frame and a failing socket.

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
from base64 import b64decode, b64encode
from collections.abc import Callable
from contextlib import suppress
from hashlib import sha1
from urllib.parse import urlsplit

import gevent
import gevent.socket
import gevent.ssl
from gevent.lock import Semaphore
from ws4py import WS_KEY
from ws4py.exc import HandshakeError
from ws4py.server.wsgiutils import WebSocketWSGIApplication

from ..errors import ConnectError, ConnectionClosed, LocalProtocolError

__all__ = ["Transport", "WebSocketEndpoint", "connect"]

log = logging.getLogger("xio.transport")

# Opcodes (RFC 6455, 5.2).
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_MASKED = 0x80
_RESERVED_BITS = 0x70  # RSV1-3: no extension is ever negotiated, so they must be 0

_CONTROL_PAYLOAD = 125  # RFC 6455 5.5: the most a control frame may carry
_READ_SIZE = 64 * 1024  # one recv; a busy link brings several frames in it
_JOIN_LIMIT = 64 * 1024  # payloads up to this leave in one send with their header
_CLOSE_TIMEOUT = 1.0  # how long a close frame may take to leave before the socket is dropped

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
    """One WebSocket connection carrying binary messages.

    The owner sets ``on_message`` and ``on_close`` before ``start()`` (when accepting: in
    ``on_transport``). ``on_message(data)`` runs in the reader greenlet, one message at a time,
    in order; ``on_close(reason)`` runs once. ``max_message``, the most the peer may send, may
    be changed any time, e.g. kept small until the peer is known.
    """

    def __init__(self, connection: _Connection, peer: str, initiator: bool, max_message: int):
        self.peer = peer
        self.initiator = initiator
        self.max_message = max_message
        self.closed = False
        self.close_reason = ""
        self.on_message: Callable[[bytes], None] = lambda data: None
        self.on_close: Callable[[str], None] = lambda reason: None
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
        """Send ``data`` as one binary message; raise ``ConnectionClosed`` if closed."""
        if self.closed:
            raise ConnectionClosed(f"transport {self.peer} is closed ({self.close_reason})")
        if not isinstance(data, (bytes, bytearray)):
            raise LocalProtocolError(f"a transport sends bytes, not {type(data).__name__}")
        try:
            self._connection.write_frame(_BINARY, data)
        except (OSError, ConnectionClosed) as exc:
            # Part of the frame may have left: nothing sent after it could be parsed.
            self._end("connection_lost")
            raise ConnectionClosed(f"transport {self.peer} is closed ({exc})") from exc

    def close(self, reason: str = "") -> None:
        """Send a close frame if possible, close the socket and call ``on_close`` once."""
        self._end(reason or "local_close", 1000)

    def _end(self, reason: str, code: int | None = None) -> None:
        """Close for ``reason``, with a close frame carrying ``code`` unless it is None."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._connection.shut(code, reason)
        log.debug("transport %s closed: %s", self.peer, reason)
        try:
            self.on_close(reason)
        except Exception:
            log.exception("on_close of transport %s failed", self.peer)


class _Connection:
    """The frames of one upgraded socket: a reader loop, a locked writer, a close."""

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
        self.write_lock = Semaphore()
        self.leftover = leftover  # frames that came right behind the server's 101 answer
        self._on_open = on_open or (lambda transport: None)
        self._fragments: list[bytes] | None = None  # an unfinished fragmented message
        self._fragments_size = 0

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

    def _read_frames(self) -> None:
        sock, transport = self.sock, self.transport
        data, self.leftover = self.leftover, b""
        pos = 0
        while not transport.closed:
            header = _parse_header(data, pos)
            if header is None:  # need more bytes: keep the partial header, read behind it
                chunk = sock.recv(_READ_SIZE)
                if not chunk:
                    raise ConnectionClosed("end of stream")
                data, pos = data[pos:] + chunk, 0
                continue
            first, second, length, start = header
            self._check(first, second, length)  # before any of the payload is buffered
            end = start + length
            if end <= len(data):
                payload = data[start:end]
                pos = end
            else:
                payload = self._read_exactly(sock, data, start, length)
                pos = len(data)  # _read_exactly took the rest of data
            if second & _MASKED:
                payload = _mask(data[start - 4 : start], payload)
            elif type(payload) is not bytes:
                payload = bytes(payload)
            self._frame(first, payload)

    @staticmethod
    def _read_exactly(sock, data: bytes, start: int, length: int) -> bytearray:
        # Read the rest of one payload straight into a buffer of its size: no re-parsing
        # and no joining of chunks, whatever the payload's size.
        payload = bytearray(length)
        view = memoryview(payload)
        got = len(data) - start
        view[:got] = memoryview(data)[start:]
        while got < length:
            count = sock.recv_into(view[got:])
            if not count:
                raise ConnectionClosed("end of stream")
            got += count
        return payload

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
            self.write_frame(_PONG, payload)
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

    # -- writing ---------------------------------------------------------------------------

    def write_frame(self, opcode: int, payload: bytes) -> None:
        """Send one final frame; raise ``OSError`` or ``ConnectionClosed`` on failure."""
        key = _mask_keys.take() if self.client else None
        header = _frame_header(opcode, len(payload), key)
        if key is not None:
            payload = _mask(key, payload)
        if len(payload) <= _JOIN_LIMIT:  # one segment, one syscall
            self._write(header + payload)
        else:
            self._write(header, payload)

    def _write(self, *parts: bytes) -> None:
        with self.write_lock:
            sock = self.sock
            if sock is None:
                raise ConnectionClosed("socket closed")
            started = False
            try:
                for part in parts:
                    # A plain send first: gevent's sendall asks the socket for its buffer size
                    # (a getsockopt call) every time, and a small frame nearly always fits.
                    sent = sock.send(part)
                    started = True
                    if sent < len(part):
                        sock.sendall(memoryview(part)[sent:])
            except BaseException as exc:
                # Killed (a cancelled request, a timeout) with part of the frame sent: what
                # follows on the stream could not be parsed, so the connection ends here.
                if started and not isinstance(exc, OSError):
                    self.transport._end("connection_lost")
                raise

    def shut(self, code: int | None, reason: str) -> None:
        """Send a close frame with ``code`` (None: none), then close the socket."""
        sock, self.sock = self.sock, None  # writers from now on raise ConnectionClosed
        if sock is None:
            return
        # A writer holding the lock is stuck on a full socket, where a close frame would
        # wait too: then the frame is skipped.
        if code is not None and self.write_lock.acquire(blocking=False):
            try:
                text = reason.encode()[:123].decode("utf-8", "ignore").encode()  # <= 125 bytes
                payload = code.to_bytes(2, "big") + text
                key = _mask_keys.take() if self.client else None
                frame = _frame_header(_CLOSE, len(payload), key)
                frame += _mask(key, payload) if key is not None else payload
                with suppress(OSError), gevent.Timeout(_CLOSE_TIMEOUT, False):
                    sock.sendall(frame)
            finally:
                self.write_lock.release()
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


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
    messages are delivered once that call returns.
    """

    def __init__(
        self, on_transport: Callable[[Transport], None], *, path: str = "/_xio/ws", max_message: int
    ) -> None:
        self.on_transport = on_transport
        self.path = path
        self.max_message = max_message
        self._upgrade = WebSocketWSGIApplication(handler_cls=self._accept)

    def __call__(self, environ: dict, start_response):
        status, text = "426 Upgrade Required", "this is a WebSocket endpoint"
        headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
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
