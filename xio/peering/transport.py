"""The WebSocket transport: the one adapter between xio and ws4py.

Theory of operation. A ``Transport`` is one WebSocket connection that carries binary
messages. ws4py does the RFC 6455 work: the server side of the upgrade (wrapped by
``WebSocketEndpoint``), frame parsing, answering pings and close frames. This module adds
what a link needs on top of it:

* dialling on gevent sockets under one deadline (``connect``). ws4py's client resolves and
  connects with blocking stdlib calls, so the client's upgrade request is written here and
  the socket is handed to the same ``WebSocket`` subclass the server side uses;
* a cap on message size. ws4py reads exactly as many bytes as its parser asks for next, and
  for a payload that is the length from the frame header, so each read is checked against
  the room left before it is made: an oversized payload is refused unread (close 1009);
* binary only: a text message closes the connection (1003);
* one lock around every write, the reader's pongs and close frames included, so frames of
  concurrent senders never interleave;
* exactly one ``on_close(reason)`` call, whatever ends the connection, from the first of:
  ``close()``, a protocol violation, the peer's close frame, or the socket failing.

One greenlet per connection reads: ws4py's ``run`` loop, which the HTTP server runs in the
greenlet that served the upgrade, and which ``Transport.start`` spawns on the dialling side.
Nothing else in xio imports ws4py, so replacing it (with wsproto, say) touches this file only.
"""

from __future__ import annotations

import logging
import os
import socket
from base64 import b64decode, b64encode
from collections.abc import Callable
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
_MAX_RESPONSE_HEAD = 16 * 1024


def _xor_mask(frame: Frame, data: bytes) -> bytes:
    """Mask or unmask ``data`` with the frame's 4-byte key (RFC 6455, 5.3)."""
    size = len(data)
    if not size:
        return b""
    key = int.from_bytes((frame.masking_key * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


# ws4py masks one byte at a time in Python: 14 us for 200 bytes and 96 ms for 1 MiB here,
# with the hub blocked. XOR as one big integer gives the same bytes 20-25 times faster.
# ws4py's parser builds its frames itself, so the class is the only place to change this.
Frame.mask = Frame.unmask = _xor_mask


class Transport:
    """One WebSocket connection carrying binary messages.

    The owner sets ``on_message`` and ``on_close`` before ``start()`` (on the accepting
    side: inside its ``on_transport`` callback). ``on_message(data)`` runs in the reader
    greenlet, one message at a time, in order; ``on_close(reason)`` runs exactly once.
    ``max_message`` may be changed at any time, e.g. kept small until the peer is known.
    """

    def __init__(self, connection: _Connection, peer: str, initiator: bool) -> None:
        self.peer = peer
        self.initiator = initiator
        self.closed = False
        self.close_reason = ""
        self.on_message: Callable[[bytes], None] = _ignore
        self.on_close: Callable[[str], None] = _ignore
        self._connection = connection
        self._reader: gevent.Greenlet | None = None
        self._told = False
        connection.transport = self

    @property
    def max_message(self) -> int:
        """Return the largest message the peer may send, in bytes."""
        return self._connection.max_message

    @max_message.setter
    def max_message(self, size: int) -> None:
        self._connection.max_message = size

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self.closed else "open"
        return f"<Transport {'to' if self.initiator else 'from'} {self.peer} {state}>"

    def start(self) -> None:
        """Begin delivering messages (the accepting side delivers already; then a no-op)."""
        if self._reader is None and self.initiator and not self.closed:
            self._reader = gevent.spawn(self._connection.run)

    def send(self, data: bytes) -> None:
        """Send ``data`` as one binary message; raise ``ConnectionClosed`` if closed."""
        if self.closed:
            raise ConnectionClosed(f"transport {self.peer} is closed ({self.close_reason})")
        if not isinstance(data, (bytes, bytearray)):
            raise LocalProtocolError(f"a transport sends bytes, not {type(data).__name__}")
        try:
            self._connection.send_binary(data)
        except (OSError, ConnectionClosed) as exc:
            # Part of a frame may have left: nothing sent after it could be parsed.
            self._end("connection_lost")
            raise ConnectionClosed(f"transport {self.peer} is closed ({exc})") from exc

    def close(self, reason: str = "") -> None:
        """Send a close frame if possible, close the socket and call ``on_close`` once."""
        self._end(reason or "local_close", 1000)

    def _end(self, reason: str, code: int | None = None) -> None:
        """Close for ``reason``; send a close frame with ``code`` unless it is None."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._connection.shut(code, reason)
        self._tell_owner()

    def _tell_owner(self) -> None:
        if self._told:
            return
        self._told = True
        log.debug("transport %s closed: %s", self.peer, self.close_reason)
        try:
            self.on_close(self.close_reason)
        except Exception:
            log.exception("on_close of transport %s failed", self.peer)


def _ignore(_value) -> None:
    pass


class _Connection(WebSocket):
    """ws4py's WebSocket with xio's size cap, binary-only rule, write lock and quiet logs."""

    transport: Transport

    def __init__(self, sock, max_message: int, *, client: bool, on_open=None) -> None:
        super().__init__(sock)
        if client:  # as ws4py's WebSocket docstring prescribes for the client side
            self.stream.always_mask = True
            self.stream.expect_masking = False
        self.max_message = max_message
        self.write_lock = Semaphore()
        self._on_open = on_open

    # -- reading (ws4py's run loop calls opened, then once until it returns False) ------

    def run(self) -> None:
        if self.sock is not None:  # None: closed between start() and the greenlet's first run
            super().run()

    def opened(self) -> None:
        if self._on_open is None:
            return
        try:
            self._on_open()
        except Exception:
            log.exception("on_transport failed for %s", self.transport.peer)
            self.transport._end("internal_error", 1011)

    def once(self) -> bool:
        # Replaces ws4py's once(): the same one read per parser request, but checked
        # against the room left first, and without its SSL 'pending' workaround (gevent's
        # SSL socket returns decrypted bytes it already holds without waiting).
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
        # Control frames (<= 125 bytes) may come between fragments, so a read that small
        # is always allowed; process() then checks the message that grew.
        room = self.max_message
        message = self.stream.message
        if message is not None:
            room -= len(message.data)
        return max(room, _CONTROL_PAYLOAD)

    def _read(self, size: int):
        if self.buf:  # bytes that came right behind the server's handshake response
            data, self.buf = self.buf[:size], self.buf[size:]
            return data
        if size <= _LARGE_READ:
            return self.sock.recv(size)  # a short read is fine: the parser asks for the rest
        # ws4py's parser appends chunk to chunk with bytes '+', which is quadratic; so a
        # large payload is gathered whole into one buffer first.
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
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
        except (OSError, ConnectionClosed):  # answering a ping on a dead socket
            transport._end("connection_lost")
            return False
        except Exception:  # ws4py's parser meant to catch everything; be sure
            log.debug("ws4py failed on data from %s", transport.peer, exc_info=True)
            transport._end("protocol_error", 1002)
            return False
        if not keep_reading or transport.closed:
            return False
        message = self.stream.message  # a fragmented message, still incomplete
        if message is not None:
            if message.opcode == OPCODE_TEXT:
                transport._end("text_frame", 1003)
                return False
            if len(message.data) > self.max_message:
                transport._end("frame_too_large", 1009)
                return False
        return True

    def received_message(self, message) -> None:
        transport = self.transport
        if transport.closed:
            return
        if not message.is_binary:
            transport._end("text_frame", 1003)
            return
        data = message.data
        if len(data) > self.max_message:  # within 125 bytes of the cap, see _room()
            transport._end("frame_too_large", 1009)
            return
        try:
            transport.on_message(data)
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
        # ws4py's last call, from terminate(); any orderly end has told the transport already.
        self.transport._end("connection_lost")

    def unhandled_error(self, error) -> None:
        # A reset or a socket closed under the reader is an ordinary end, not a traceback.
        log.debug("transport %s read failed: %r", self.transport.peer, error)

    # -- writing --------------------------------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        """Write ``data`` as one binary frame."""
        self._write(self.stream.binary_message(data).single(mask=self.stream.always_mask))

    def _write(self, data: bytes) -> None:
        with self.write_lock:
            sock = self.sock
            if sock is None:
                raise ConnectionClosed("socket closed")
            sock.sendall(data)

    def shut(self, code: int | None, reason: str) -> None:
        """Send a close frame with ``code`` (None: none), then close the socket."""
        # Both flags set: ws4py's loop and its own writes stop here.
        self.client_terminated = self.server_terminated = True
        sock = self.sock
        if sock is None:
            return
        # A writer holding the lock is stuck on a full socket: the close frame could not
        # leave either, so it is skipped rather than waited for.
        if code is not None and self.stream is not None and self.write_lock.acquire(blocking=False):
            try:
                # A close frame's payload is <= 125 bytes and its text must stay valid UTF-8.
                text = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
                frame = self.stream.close(code, text).single(mask=self.stream.always_mask)
                with gevent.Timeout(_CLOSE_TIMEOUT, False):
                    sock.sendall(frame)
            except OSError:
                pass
            finally:
                self.write_lock.release()
        self.close_connection()

    def close_connection(self) -> None:
        # ws4py's version skips close() when shutdown() fails (a peer already gone),
        # leaking the descriptor until garbage collection.
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def _address(sock) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _no_delay(sock) -> None:
    # Measured here: without it a small write can wait ~40 ms for a delayed ACK.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


# -- dialling -----------------------------------------------------------------------------


def connect(
    url: str,
    *,
    timeout: float = 5.0,
    max_message: int,
    ssl_context=None,
    headers: dict[str, str] | None = None,
) -> Transport:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and return its transport.

    Block the calling greenlet until the upgrade is done, at most ``timeout`` seconds.
    ``wss://`` verifies the server against ``ssl_context``, by default the system's
    trusted authorities. Raise ``ConnectError`` on any failure, a malformed URL included.
    Call ``start()`` on the result once its callbacks are set.
    """
    sock = None
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        sock, leftover = _dial(url, timeout, ssl_context, headers or {})
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        _drop(sock)
        raise ConnectError(f"{url}: no WebSocket within {timeout:g}s") from exc
    except Exception as exc:  # socket, DNS, TLS, URL or handshake failure
        _drop(sock)
        raise ConnectError(f"{url}: {str(exc) or type(exc).__name__}") from exc
    finally:
        timer.close()
    connection = _Connection(sock, max_message, client=True)
    connection.buf = leftover
    return Transport(connection, _address(sock), initiator=True)


class _UpgradeError(Exception):
    pass


def _dial(url: str, timeout: float, ssl_context, headers: dict[str, str]):
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise _UpgradeError("not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    sock = gevent.socket.create_connection((parts.hostname, port), timeout=timeout)
    _no_delay(sock)
    if secure:
        context = ssl_context or gevent.ssl.create_default_context()
        # gevent's SSLSocket takes any context; the stdlib's wrap_socket would block the hub.
        sock = gevent.ssl.SSLSocket(sock=sock, server_hostname=parts.hostname, _context=context)
    key = b64encode(os.urandom(16))
    lines = [
        f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc.rpartition('@')[2]}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head, leftover = _read_head(sock)
    status, *header_lines = head.decode("latin-1").split("\r\n")
    if status.split(" ", 2)[1:2] != ["101"]:
        raise _UpgradeError(f"answered {status!r}, not 101")
    answer = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    accept = b64encode(sha1(key + WS_KEY).digest()).decode()
    if (
        answer.get("upgrade", "").lower() != "websocket"
        or "upgrade" not in answer.get("connection", "").lower()
        or answer.get("sec-websocket-accept") != accept
    ):
        raise _UpgradeError("the 101 answer is not a valid WebSocket upgrade")
    sock.settimeout(None)
    return sock, leftover


def _read_head(sock) -> tuple[bytes, bytes]:
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise _UpgradeError("connection closed during the upgrade")
        received += chunk
        head, found, rest = received.partition(b"\r\n\r\n")
        if found:
            return head, rest  # rest: frames the server sent right after its answer
        if len(received) > _MAX_RESPONSE_HEAD:
            raise _UpgradeError("upgrade answer too long")


def _drop(sock) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


# -- accepting ----------------------------------------------------------------------------


class WebSocketEndpoint:
    """A WSGI app that accepts WebSocket upgrades at ``path`` (``Server(websocket_app=)``).

    Call ``on_transport(transport)`` for each connection once it is open, in its reader
    greenlet; messages are delivered once that call returns.
    """

    def __init__(
        self,
        on_transport: Callable[[Transport], None],
        *,
        path: str = "/_xio/ws",
        max_message: int,
    ) -> None:
        self.on_transport = on_transport
        self.path = path
        self.max_message = max_message
        self._upgrade = _Upgrade(self)

    def __call__(self, environ: dict, start_response):
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return _refuse(start_response, "426 Upgrade Required", "this is a WebSocket endpoint")
        try:
            if len(b64decode(environ.get("HTTP_SEC_WEBSOCKET_KEY", ""), validate=True)) != 16:
                raise HandshakeError("Sec-WebSocket-Key is not 16 bytes in base64")
            return self._upgrade(environ, start_response)
        except (HandshakeError, ValueError) as exc:
            return _refuse(start_response, "400 Bad Request", f"bad WebSocket upgrade: {exc}")


class _Upgrade(WebSocketWSGIApplication):
    """ws4py's server handshake, building a transport around each accepted socket."""

    def __init__(self, endpoint: WebSocketEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    def make_websocket(self, sock, protocols, extensions, environ):
        endpoint = self.endpoint
        _no_delay(sock)
        transport = None

        def opened() -> None:
            endpoint.on_transport(transport)

        connection = _Connection(sock, endpoint.max_message, client=False, on_open=opened)
        transport = Transport(connection, _address(sock), initiator=False)
        environ["ws4py.websocket"] = connection
        return connection


def _refuse(start_response, status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    if status.startswith("426"):
        headers += [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    start_response(status, headers)
    return [body]
