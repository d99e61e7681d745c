"""The WebSocket transport: the one adapter between xio and ws4py.

Theory of operation. A ``Transport`` is one WebSocket connection carrying binary messages.
ws4py does the RFC 6455 work (the server's half of the upgrade, parsing frames, answering
pings and close frames); this module adds what links need:

* dialling on gevent sockets under one deadline: ws4py's client blocks the hub;
* a size cap: ws4py reads exactly what its parser asks for next, for a payload the length in
  the frame header, so each read is checked against the room left before it is made and an
  oversized payload is refused unread (close 1009);
* binary only: a text message closes the connection (1003);
* one lock around every write, pongs and close frames included: frames never interleave;
* exactly one ``on_close(reason)``, from the first of ``close()``, a protocol violation, the
  peer's close frame and a failing socket.

One greenlet per connection reads: ws4py's ``run`` loop, run by the HTTP server in the
greenlet that served the upgrade, or spawned by ``Transport.start`` when dialling.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
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
from ws4py.framing import OPCODE_TEXT, Frame
from ws4py.server.wsgiutils import WebSocketWSGIApplication
from ws4py.websocket import WebSocket

from ..errors import ConnectError, ConnectionClosed, LocalProtocolError

__all__ = ["Transport", "WebSocketEndpoint", "connect"]

log = logging.getLogger("xio.transport")

_CONTROL_PAYLOAD = 125  # RFC 6455 5.5: the most a control frame may carry
_LARGE_READ = 64 * 1024  # reads above this are gathered whole (see _Connection._read)
_CLOSE_TIMEOUT = 1.0  # how long a close frame may take to leave before the socket is dropped


def _xor_mask(frame: Frame, data: bytes) -> bytes:
    """Mask or unmask ``data`` with the frame's 4-byte key (RFC 6455, 5.3)."""
    size = len(data)
    key = int.from_bytes((frame.masking_key * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


# ws4py masks byte by byte in Python: 14 us for 200 bytes, 96 ms for 1 MiB (hub blocked).
# One big-integer XOR gives the same bytes 20-25 times faster. ws4py's parser makes its
# Frame objects itself, so the class is the only place where this can be changed.
Frame.mask = Frame.unmask = _xor_mask


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
        connection = self._connection
        frame = connection.stream.binary_message(data).single(mask=connection.stream.always_mask)
        try:
            connection._write(frame)
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


class _Connection(WebSocket):
    """ws4py's WebSocket with xio's size cap, binary-only rule, write lock and quiet logs."""

    transport: Transport

    def __init__(self, sock, *, client: bool, on_open: Callable[[Transport], None] | None = None):
        super().__init__(sock)
        self.stream.always_mask = client  # as ws4py's docstring prescribes
        self.stream.expect_masking = not client
        self.write_lock = Semaphore()
        self._on_open = on_open or (lambda transport: None)

    # ws4py's run() calls opened(), once() until it returns False, terminate() -> closed().
    def run(self) -> None:
        if self.sock is not None:  # None: closed between start() and this greenlet's turn
            super().run()

    def opened(self) -> None:
        try:
            self._on_open(self.transport)
        except Exception:
            log.exception("on_transport failed for %s", self.transport.peer)
            self.transport._end("internal_error", 1011)

    def once(self) -> bool:
        # ws4py's once() plus the cap, minus its SSL 'pending' hack that gevent does not need.
        if self.terminated:
            return False
        size = self.reading_buffer_size
        if size > self._room():
            self.transport._end("frame_too_large", 1009)
            return False
        try:
            data = self._read(size)
        except OSError as exc:
            self.unhandled_error(exc)
            return False
        return self.process(data)

    def _room(self) -> int:
        # Control frames (<= 125 bytes) may come between fragments, so a read that small is
        # always allowed; process() then checks the message that grew.
        room = self.transport.max_message
        if self.stream.message is not None:  # an unfinished fragmented message
            room -= len(self.stream.message.data)
        return max(room, _CONTROL_PAYLOAD)

    def _read(self, size: int):
        if self.buf:  # bytes that came right behind the server's 101 answer
            data, self.buf = self.buf[:size], self.buf[size:]
            return data
        if size <= _LARGE_READ:
            return self.sock.recv(size)  # a short read is fine: the parser asks for the rest
        # ws4py's parser joins chunks with bytes '+', quadratic in the payload's size, so a
        # large payload is gathered whole into one buffer first.
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            count = self.sock.recv_into(view[got:])
            if not count:
                return b""
            got += count
        return buffer

    def process(self, data) -> bool:
        transport = self.transport
        try:
            keep_reading = super().process(data)
        except Exception as exc:  # a pong for a dead socket; or ws4py's parser failed after all
            log.debug("ws4py failed on data from %s", transport.peer, exc_info=True)
            lost = isinstance(exc, (OSError, ConnectionClosed))
            transport._end("connection_lost" if lost else "protocol_error", None if lost else 1002)
            return False
        if not keep_reading or transport.closed:
            return False
        message = self.stream.message  # an unfinished fragmented message
        if message is not None and message.opcode == OPCODE_TEXT:
            transport._end("text_frame", 1003)
        elif message is not None and len(message.data) > transport.max_message:
            transport._end("frame_too_large", 1009)
        return not transport.closed

    def received_message(self, message) -> None:
        transport = self.transport
        if transport.closed:
            return
        if not message.is_binary:
            transport._end("text_frame", 1003)
        elif len(message.data) > transport.max_message:  # by at most 125 bytes: see _room()
            transport._end("frame_too_large", 1009)
        else:
            try:
                transport.on_message(message.data)
            except Exception:
                log.exception("on_message of transport %s failed", transport.peer)
                transport._end("internal_error", 1011)

    def close(self, code: int = 1000, reason="") -> None:
        # ws4py calls this to answer the peer's close frame, and on a parse error.
        closing = self.stream.closing if self.stream is not None else None
        if closing is not None:
            log.debug("peer %s closed: %s %r", self.transport.peer, closing.code, closing.reason)
            self.transport._end("peer_closed", 1000)
        else:
            log.debug("bad frame from %s: %s %r", self.transport.peer, code, reason)
            self.transport._end("protocol_error", code)

    def closed(self, code: int, reason=None) -> None:
        # Called last, from terminate(); an orderly end has told the transport already.
        self.transport._end("connection_lost")

    def unhandled_error(self, error) -> None:
        # A reset, or the socket closed under the reader: an ordinary end, not a traceback.
        log.debug("transport %s read failed: %r", self.transport.peer, error)

    def _write(self, data: bytes) -> None:
        with self.write_lock:
            if self.sock is None:
                raise ConnectionClosed("socket closed")
            self.sock.sendall(data)

    def shut(self, code: int | None, reason: str) -> None:
        """Send a close frame with ``code`` (None: none), then close the socket."""
        self.client_terminated = self.server_terminated = True  # stops ws4py's loop
        sock, self.sock = self.sock, None
        if sock is None:
            return
        # A writer holding the lock is stuck on a full socket, where a close frame would
        # wait too: then the frame is skipped.
        if code is not None and self.stream is not None and self.write_lock.acquire(blocking=False):
            text = reason.encode()[:123].decode("utf-8", "ignore")  # payload <= 125 bytes
            frame = self.stream.close(code, text).single(mask=self.stream.always_mask)
            try:
                with suppress(OSError), gevent.Timeout(_CLOSE_TIMEOUT, False):
                    sock.sendall(frame)
            finally:
                self.write_lock.release()
        with suppress(OSError):  # not ws4py's close_connection(): it skips close() if this fails
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
    connection = _Connection(sock, client=True)
    connection.buf = leftover  # the server's first frames may come with its answer
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
