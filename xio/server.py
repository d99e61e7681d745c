"""The HTTP adapter: WSGI in front of a ``handle(Request) -> Response`` callable, and a
gevent server to run it.

``WSGIApp`` is the only place where WSGI environ turns into a ``Request`` and a
``Response`` turns into status, headers and body bytes; everything behind it (the
resource tree, the node's router, the mesh forwarder) deals in xio values only. It owns
the response's framing: ``Content-Length`` is computed here (a file's from its size), a
handler's or a peer's framing and hop-by-hop headers are dropped, repeated headers stay
repeated, and a header that cannot be written (a control character) becomes a JSON 502
naming it (the rules are in ``xio.http11``).

``Server`` runs any WSGI app on gevent's pywsgi with these changes: the request head is
read by ``xio.http11`` (strict framing, bounded size and count, no private stdlib
parser), every connection is bounded in time (``HTTPLimits``: head, body, idle
keep-alive) and in number (total and per client address); ``TCP_NODELAY`` on every
accepted socket (measured here: stock pywsgi holds each response ~40 ms, because headers
and body leave as two writes and Nagle waits for the client's delayed ACK); one
access-log line per request on the ``xio.access`` logger, and one line on ``xio`` for
each refusal, never a traceback for a client's mistake. A WebSocket upgrade to the path of
one of the ``websocket_app`` hooks is handed to it, socket and all (see ``Server``).

Which pywsgi internals are overridden or relied on is listed in ``PYWSGI_CONTRACT``;
``tests/test_http_strict.py`` checks that gevent still has them.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http import HTTPStatus

import gevent
import gevent.ssl
from gevent import getcurrent
from gevent.pywsgi import OldMessage, WSGIHandler, WSGIServer

from . import content as _content
from . import http11
from .budget import Budget
from .constants import MAX_BODY
from .errors import (
    BadRequest,
    HTTPError,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    StreamBroken,
)
from .http11 import HTTPLimits
from .request import Request, Response
from .responses import error_json, error_response, serialize

__all__ = ["DEFAULT_MAX_BODY", "HTTPLimits", "Server", "WSGIApp", "status_line"]

log = logging.getLogger("xio")
access_log = logging.getLogger("xio.access")

DEFAULT_MAX_BODY = MAX_BODY
#: WSGI environ keys with the request as the client sent it: the request target (not
#: percent-decoded) and the header fields as ``(name, value)`` pairs, case and repeats kept.
RAW_TARGET = "xio.raw_target"
RAW_FIELDS = "xio.raw_fields"
#: The environ key through which the server tells ``WSGIApp`` its body deadline.
BODY_TIMEOUT_KEY = "xio.body_timeout"
#: Set in the environ by ``WSGIApp`` when it refused a body it did not read: the connection
#: then closes lingering (``_Handler._linger``).
LINGER_KEY = "xio.linger"
#: A lingering close reads and drops at most this much, for at most this long: enough for
#: what a client sent before it saw the refusal; a client that keeps sending is then reset.
LINGER_BYTES = 8 * 1024 * 1024
LINGER_SECONDS = 2.0

_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
_COALESCE_LIMIT = 64 * 1024
_PIECE = 64 * 1024  # a chunked body is read, and taken from the budget, this much at a time
#: A body over this many bytes (or chunked) is read when the handler asks for it, not before:
#: so the node can stream it across the mesh (docs/PROTOCOL.md 4.2) instead of holding it.
READ_LATER = 1024 * 1024
_FD_SHARE = 0.75  # connections never take more than this share of the fd limit
#: ``sample(status) -> bool``: whether a request's access line is written (None: every one);
#: set by ``xio.node.logs`` from ``--access-log``, and called before the line is built.
access_sample: Callable[[object], bool] | None = None

#: pywsgi's internals this module overrides (methods) or relies on (attributes set by
#: gevent), with the parameters expected: a canary test fails when gevent changes them.
PYWSGI_CONTRACT = {
    "WSGIHandler.handle_one_request": ("self",),
    "WSGIHandler.handle_one_response": ("self",),
    "WSGIHandler.get_environ": ("self",),
    "WSGIHandler.run_application": ("self",),
    "WSGIHandler.process_result": ("self",),
    "WSGIHandler.finalize_headers": ("self",),
    "WSGIHandler._write": ("self", "data", "_bytearray"),
    "WSGIHandler._write_with_headers": ("self", "data"),
    "WSGIHandler._sendall": ("self", "data"),
    "WSGIHandler.start_response": ("self", "status", "headers", "exc_info"),
    "WSGIHandler.log_request": ("self",),
    "WSGIServer.handle": ("self", "sock", "address"),
    "WSGIServer.wrap_socket_and_handle": ("self", "client_socket", "address"),
    "Input.__init__": ("self", "rfile", "content_length", "socket", "chunked_input"),
}


def status_line(status: int) -> str:
    """Return ``"404 Not Found"`` for 404, inventing nothing for unknown codes."""
    return _STATUS_LINES.get(status) or f"{status} Status {status}"


class WSGIApp:
    """Serve ``handle`` over WSGI; ``prefix`` is put before every request path."""

    def __init__(
        self,
        handle: Callable[[Request], Response],
        *,
        prefix: str = "",
        max_body: int = DEFAULT_MAX_BODY,
        body_budget: Budget | None = None,
    ) -> None:
        self.handle = handle
        self.prefix = prefix
        self.refused: Counter[str] = Counter()  # requests refused before the handler, by status
        self.max_body = max_body
        # Shared with the node's links: request bodies held at once, however they arrive.
        self.body_budget = body_budget

    def __call__(self, environ: dict, start_response):
        if _read_later(environ):
            source = HTTPBody(self, environ)
            try:
                return self._respond(environ, start_response, environ["REQUEST_METHOD"], b"",
                                     source)  # fmt: skip
            finally:
                source.close()
        try:
            body, held = self._read_body(environ)
        except HTTPError as exc:
            _log_refusal(self.refused, environ.get("REMOTE_ADDR"), exc, environ)
            _stop_reading(environ)
            environ[LINGER_KEY] = True
            return self._send(environ, start_response, error_response(exc), close=True)
        try:
            return self._respond(environ, start_response, environ["REQUEST_METHOD"], body)
        finally:
            if held:
                self.body_budget.give(held)

    def _reserve(self, size: int) -> int:
        """Take ``size`` bytes from the budget before they are read; return what was taken."""
        budget = self.body_budget
        if budget is None or size <= 0:
            return 0
        if not budget.take(size):
            raise ServiceUnavailable("the node's budget for request bodies is spent; try again",
                                     headers={"Retry-After": "1"})  # fmt: skip
        return size

    def _respond(self, environ: dict, start_response, method: str, body: bytes,
                 source: HTTPBody | None = None):  # fmt: skip
        path = environ.get("PATH_INFO", "")
        if not path.isascii():  # WSGI hands the path over as latin-1; URLs are UTF-8
            try:
                path = path.encode("latin-1").decode("utf-8")
            except UnicodeError:
                pass
        req = Request(
            method,
            self.prefix + path,
            query=environ.get("QUERY_STRING", ""),
            body=body,
            environ=environ,
            source=source,
        )
        response = self.handle(req)
        if source is None or source.complete:
            return self._send(environ, start_response, response)
        if not source.consumed:  # answered unread (a refusal, or an app that ignores it)
            _stop_reading(environ)
            environ[LINGER_KEY] = True
            return self._send(environ, start_response, response, close=True)
        # Still being read, streamed on beside the answer: judged once the answer is written.
        return _JudgedAfter(self._send(environ, start_response, response), source, environ)

    def _read_body(self, environ: dict) -> tuple[bytes, int]:
        """Return the body and what it holds of the budget; raise an HTTPError to refuse."""
        length = environ.get("CONTENT_LENGTH")
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        if not length and not chunked:
            return b"", 0
        seconds = environ.get(BODY_TIMEOUT_KEY)
        timer = None
        if seconds:  # set by our Server; another WSGI server keeps its own timeouts
            timer = gevent.Timeout(seconds, RequestTimeout(f"the body took over {seconds:g} s"))
            timer.start()
        held = 0
        try:
            stream = environ["wsgi.input"]
            if length:
                try:
                    size = int(length)
                except ValueError:
                    raise BadRequest(f"bad Content-Length {length!r}") from None
                if size > self.max_body:
                    raise PayloadTooLarge(
                        f"body of {size} bytes is over the limit of {self.max_body}"
                    )
                held = self._reserve(size)
                body = stream.read(size) if size else b""
                if len(body) < size:
                    raise BadRequest(f"the body ended after {len(body)} of {size} bytes")
                return body, held
            # chunked: the size is known once it is read, so the budget is taken piece by piece
            body = bytearray()
            while piece := stream.read(min(_PIECE, self.max_body + 1 - len(body))):
                if len(body) + len(piece) > self.max_body:
                    raise PayloadTooLarge(f"body is over the limit of {self.max_body} bytes")
                held += self._reserve(len(piece))
                body += piece
            return bytes(body), held
        except OSError as exc:  # pywsgi's Input: a malformed chunk, the client went away
            if held:
                self.body_budget.give(held)
            raise BadRequest(f"malformed or incomplete body: {exc}") from exc
        except BaseException:
            if held:
                self.body_budget.give(held)
            raise
        finally:
            if timer is not None:
                timer.close()

    def _send(self, environ: dict, start_response, response: Response, close: bool = False):
        where = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
        wire = serialize(response, environ.get("HTTP_ACCEPT"), where)
        headers = list(wire.headers)
        if wire.has_body:
            if wire.length is not None:
                headers.append(("Content-Length", str(wire.length)))
            elif environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
                close = True  # no chunked encoding in HTTP/1.0: the close ends the body
        if close:
            headers.append(("Connection", "close"))
        start_response(status_line(wire.status), headers)
        if not wire.has_body or environ["REQUEST_METHOD"] == "HEAD":
            wire.discard()
            return [b""]
        return [wire.body] if type(wire.body) is bytes else wire.body


class _JudgedAfter:
    """An answer's body that, once written and closed, checks that the request's body was
    read to its end; if not, the rest is dropped (bounded) and the connection closes."""

    __slots__ = ("_body", "_source", "_environ")

    def __init__(self, body, source: HTTPBody, environ: dict) -> None:
        self._body, self._source, self._environ = body, source, environ

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()  # a streamed answer's close stops what still sends the request's body
        finally:
            if not self._source.complete:
                _stop_reading(self._environ)
                self._environ[LINGER_KEY] = True


def _read_later(environ: dict) -> bool:
    # Small bodies are read before the handler, as always; larger ones and chunked ones when
    # the handler asks (``req.body``), or piece by piece as the node streams them on.
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        return True
    length = environ.get("CONTENT_LENGTH")
    return bool(length) and length.isdigit() and int(length) > READ_LATER


class HTTPBody:
    """A request body still on the connection, read once: whole (``read_all``, within the
    app's ``max_body`` and the body budget, as small bodies are) or as pieces (``pieces``,
    each within the body timeout, of any size: they are not held here)."""

    __slots__ = ("_app", "_environ", "consumed", "complete", "_held")

    def __init__(self, app: WSGIApp, environ: dict) -> None:
        self._app = app
        self._environ = environ
        self.consumed = False  # some of it was read: it cannot be read again
        self.complete = False  # all of it was read
        self._held = 0

    def read_all(self) -> bytes:
        self.consumed = True
        body, self._held = self._app._read_body(self._environ)
        self.complete = True
        return body

    def pieces(self) -> Iterator[bytes]:
        self.consumed = True
        environ = self._environ
        stream = environ["wsgi.input"]
        seconds = environ.get(BODY_TIMEOUT_KEY)
        length = environ.get("CONTENT_LENGTH")
        left = int(length) if length else None  # None: chunked, the last chunk ends it
        while left is None or left > 0:
            timer = None
            if seconds:
                timer = gevent.Timeout(seconds, RequestTimeout(f"no body for {seconds:g} s"))
                timer.start()
            try:
                piece = stream.read(_PIECE if left is None else min(_PIECE, left))
            except OSError as exc:
                raise BadRequest(f"malformed or incomplete body: {exc}") from exc
            finally:
                if timer is not None:
                    timer.close()
            if not piece:
                if left:
                    raise BadRequest(f"the body ended {left} bytes short")
                break
            if left is not None:
                left -= len(piece)
            yield piece
        self.complete = True

    def close(self) -> None:
        """Give back what ``read_all`` took of the budget."""
        if self._held:
            self._app.body_budget.give(self._held)
            self._held = 0


def _log_refusal(counts: Counter, client, exc: HTTPError, environ: dict | None = None) -> None:
    """Count a client's mistake (or our limit) by status and log it in one line."""
    counts[f"http_{exc.status}"] += 1
    where = f" {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}" if environ else ""
    log.info("refused%s from %s: %s", where, client or "-", exc)


def _stop_reading(environ: dict) -> None:
    # gevent reads and discards an unread body to keep the connection usable; a body
    # refused as too large must not be read, so the connection is closed instead.
    stream = environ.get("wsgi.input")
    if hasattr(stream, "content_length"):
        stream.content_length = 0
        stream.chunked_input = False


class _Idle(Exception):
    """A keep-alive connection waited too long for its next request."""


class _Handler(WSGIHandler):
    """pywsgi's handler with xio's request head reader, deadlines, access log and upgrades."""

    served = 0  # requests answered on this connection
    _counted = False  # counted in the server's ``active``

    def handle_one_request(self):
        # pywsgi's own reads the head with the stdlib's parser and no deadline; this one
        # reads it with xio.http11's rules under the header timeout, and closes the
        # connection after any refusal. Returns as pywsgi's does: None to close, True
        # for the next request, (status, bytes) to send before closing.
        if self.rfile.closed:
            return None
        server = self.server
        limits = server.limits
        # Bare loop timers that throw into this greenlet, as gevent.Timeout does, but with no
        # Timeout object and no exception built per request (a tenth of a request's cost).
        loop, me = server.loop, getcurrent()
        if self.served:
            if server.draining:  # stopping: a keep-alive connection ends after its answer
                return None
            idle = loop.timer(limits.idle_timeout)
            idle.start(me.throw, _Idle)
            server.idle.add(me)  # a drain ends the wait at once (stop_accepting)
            try:
                if not self.rfile.peek(1):
                    return None
            except _Idle:
                log.debug("closed an idle connection from %s", self._client())
                return None
            except OSError:
                return None
            finally:
                server.idle.discard(me)
                idle.close()
            self.time_start = time.time()
        self.environ = self.command = None  # a refusal is not logged as the last request
        deadline = loop.timer(limits.header_timeout)
        deadline.start(me.throw, RequestTimeout, server.head_timeout_message)
        try:
            if not self._read_head(limits):
                return None
        except HTTPError as exc:
            return self._refuse(exc)
        except OSError:  # reset, or closed inside the head
            return None
        finally:
            deadline.close()
        self.served += 1
        environ = self.environ = self.get_environ()
        environ[BODY_TIMEOUT_KEY] = limits.body_timeout
        environ[RAW_TARGET] = self.path
        environ[RAW_FIELDS] = self._fields
        self.application = self.server.application
        loop = self.server.loop
        iteration = loop.iteration
        server.active += 1  # a drain waits for the answers being written (an upgrade leaves)
        self._counted = True
        try:
            self.handle_one_response()
        finally:
            self._uncount()
        if environ.get(LINGER_KEY):
            self._linger()
            return None
        if self.close_connection or self.rfile.closed:
            return None
        # A keep-alive connection whose next request is already buffered is served again
        # without ever yielding; under load a few connections then hold the server (p99
        # over 100 ms seen here). So when the event loop has not turned since this
        # request began, it yields once before the next.
        if loop.iteration == iteration:
            gevent.sleep(0)
        return True

    def _linger(self) -> None:
        # The client may still be sending the body we refused. Closing now, with its bytes
        # arriving, makes the kernel answer them with a reset, and a client such as curl,
        # reset while it sends, never reads our answer. So: end our side (FIN after the
        # answer), read and drop what comes, bounded, then close.
        sock = self.socket
        timer = self.server.loop.timer(LINGER_SECONDS)
        timer.start(getcurrent().throw, _Idle)
        try:
            sock.shutdown(socket.SHUT_WR)
            left = LINGER_BYTES
            while left > 0:
                data = sock.recv(min(65536, left))
                if not data:
                    break
                left -= len(data)
        except (OSError, ValueError, _Idle):  # reset, closed, or lingered long enough
            pass
        finally:
            timer.close()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.server.active -= 1

    def start_response(self, status, headers, exc_info=None):
        # While the node drains, every answer tells the client this connection ends with it
        # (pywsgi writes "Connection: close" for HTTP/1.0 only).
        if self.server.draining and not str(status).startswith("101"):
            if not any(name.lower() == "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)

    def _read_head(self, limits: HTTPLimits) -> bool:
        """Read and check the request line and headers; False when the client left."""
        line = self.rfile.readline(http11.MAX_REQUEST_LINE + 1)
        if line in (b"\r\n", b"\n"):  # RFC 9112, 2.2: one empty line before a request
            line = self.rfile.readline(http11.MAX_REQUEST_LINE + 1)
        if not line:
            return False
        self.requestline = line.decode("latin-1").rstrip("\r\n")
        self.response_length = 0
        self.command, self.path, self.request_version = http11.parse_request_line(line)
        fields = http11.read_fields(self.rfile.readline, limits)
        framing = http11.request_framing(fields, self.request_version)
        message = OldMessage()
        for name, value in fields:
            message.set_raw(name, value)
        self.headers = message
        self._fields = fields
        self.content_length = framing.content_length
        connection = message.get("Connection")
        tokens = {t.strip().lower() for t in connection.split(",")} if connection else ()
        if self.request_version == "HTTP/1.1":
            self.close_connection = "close" in tokens
        else:
            self.close_connection = "keep-alive" not in tokens
        return True

    def _refuse(self, exc: HTTPError):
        self.code = exc.status
        self.close_connection = True
        _log_refusal(self.server.refused, self._client(), exc)
        return str(exc.status), _refusal(exc)

    def _client(self) -> str:
        address = self.client_address
        return address[0] if isinstance(address, tuple) else "-"

    def handle_error(self, t, v, tb):
        if t is StreamBroken:  # a stream from the mesh broke after its head: one line, no trace
            log.warning("aborted %s %s to %s: %s", self.environ.get("REQUEST_METHOD"),
                        self.environ.get("PATH_INFO"), self._client(), v)  # fmt: skip
            self.close_connection = True  # no last chunk: the client sees an incomplete body
            return
        super().handle_error(t, v, tb)

    def run_application(self):
        if self.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            upgrade = self.server.websocket_apps.get(self.environ.get("PATH_INFO"))
            if upgrade is not None:
                return self._run_upgrade(upgrade)
        return super().run_application()

    def _run_upgrade(self, upgrade):
        # The hook answers (a 101, or a refusal) through start_response; once that answer is
        # written the socket is the hook's, served until the connection ends.
        sock = self.socket or self.environ["wsgi.input"].rfile._sock
        self._uncount()  # a link is not an answer a drain waits for
        self.result, serve = upgrade.accept(self.environ, self.start_response, sock)
        self.process_result()
        self.socket = None
        self.rfile.close()
        if serve is not None:
            gevent.spawn(serve).join()

    def _write_with_headers(self, data):
        # pywsgi sends the head and the body in two writes; a small body rides along with
        # the head in one (one syscall less per response, measured 6-11 us here). The
        # framing is known only once finalize_headers has run: a streamed body's first
        # chunk then gets its chunk-size line like every other.
        self.headers_sent = True
        self.finalize_headers()
        head = bytearray(b"HTTP/1.1 ")
        head += self.status
        head += b"\r\n"
        for name, value in self.response_headers:
            head += name
            head += b": "
            head += value
            head += b"\r\n"
        head += b"\r\n"
        if data and len(data) <= _COALESCE_LIMIT:
            if self.response_use_chunked:
                head += b"%x\r\n" % len(data)
                head += data
                head += b"\r\n"
            else:
                head += data
            self._sendall(head)
        else:
            self._sendall(head)
            self._write(data)

    def _sendall(self, data):
        # gevent's sendall asks the socket for its buffer size (a getsockopt syscall) on
        # every call; a response nearly always fits in one plain send, so that goes first.
        try:
            sent = self.socket.send(data)
            if sent < len(data):
                self.socket.sendall(memoryview(data)[sent:])
        except OSError as exc:
            self.status = f"socket error: {exc}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def log_request(self):
        if access_log.isEnabledFor(logging.INFO):
            status = getattr(self, "code", None) or "-"
            if access_sample is not None and not access_sample(status):
                return
            delta = (self.time_finish or 0) - (self.time_start or 0)
            path = self.environ.get("PATH_INFO", "") if self.environ else ""
            access_log.info(
                "%s %s %s %s %.2fms",
                self._client(),
                self.command or "-",
                path,
                status,
                delta * 1000,
            )


def _refusal(exc: HTTPError) -> bytes:
    """Return a whole response refusing a request with ``exc``, closing the connection."""
    body = error_json(exc)
    head = [f"HTTP/1.1 {status_line(exc.status)}", f"Content-Type: {_content.JSON}",
            f"Content-Length: {len(body)}", "Connection: close"]  # fmt: skip
    head.extend(f"{name}: {value}" for name, value in exc.headers.items())
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body


_CAPACITY_RESPONSE = _refusal(
    ServiceUnavailable("too many connections; try again", headers={"Retry-After": "1"})
)


class _NoDelayServer(WSGIServer):
    handler_class = _Handler
    websocket_apps: dict = {}  # noqa: RUF012 - replaced per server, never mutated

    def __init__(self, *args, limits: HTTPLimits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        seconds = limits.header_timeout
        self.head_timeout_message = f"the request head did not arrive within {seconds:g} s"
        self.max_connections = _connection_cap(limits.max_connections)
        self.connections = 0
        self.per_client: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by reason: http_<status>, http_connections
        self.draining = False  # set by Server.stop_accepting
        self.active = 0  # requests being answered (not WebSocket links)
        self.idle: set = set()  # handler greenlets waiting for a keep-alive's next request

    def _admit(self, sock, address, plain: bool) -> str | None:
        # Counted before anything is read (TLS handshake included), refused with a 503
        # written without waiting; the accept loop goes on serving everyone else.
        client = address[0] if isinstance(address, tuple) else ""
        if (
            self.connections >= self.max_connections
            or self.per_client[client] >= self.limits.max_connections_per_client
        ):
            self.refused["http_connections"] += 1
            total = self.connections >= self.max_connections
            log.info("refused a connection from %s: %s", client or "-",
                     f"{self.connections} open, the limit" if total
                     else f"{self.per_client[client]} open from this address, the limit")  # fmt: skip
            try:
                if plain:
                    sock.setblocking(False)
                    sock.send(_CAPACITY_RESPONSE)
            except OSError:
                pass
            sock.close()
            return None
        self.connections += 1
        self.per_client[client] += 1
        return client

    def _release(self, client: str) -> None:
        self.connections -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    def handle(self, sock, address):
        client = self._admit(sock, address, plain=True)
        if client is not None:
            try:
                self._serve(sock, address)
            finally:
                self._release(client)

    def wrap_socket_and_handle(self, client_socket, address):
        # The TLS handshake has the header timeout; a client that fails it (wrong
        # protocol, distrusts our certificate, stalls) is one closed connection, not a
        # traceback on the hub.
        client = self._admit(client_socket, address, plain=False)
        if client is None:
            return
        try:
            try:
                with gevent.Timeout(self.limits.header_timeout, TimeoutError("TLS handshake")):
                    tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", address, exc)
                client_socket.close()
                return
            try:
                self._serve(tls_socket, address)
            finally:
                tls_socket.close()
        finally:
            self._release(client)

    def _serve(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # a Unix socket has no Nagle to turn off
            pass
        WSGIServer.handle(self, sock, address)


def _wake_idle(idle: set, greenlet) -> None:
    if greenlet in idle:
        greenlet.throw(_Idle)


def _connection_cap(wanted: int) -> int:
    """Return ``wanted``, lowered to a share of the process's file-descriptor limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return wanted
    return max(1, min(wanted, int(soft * _FD_SHARE)))


class Server:
    """Serve a WSGI app on gevent at ``host``:``port`` (0 picks a free port).

    ``limits`` bounds what clients may hold (``HTTPLimits``; the defaults when None).
    ``websocket_app``, if given (one hook or a list), takes the WebSocket upgrades to its
    ``path``: its
    ``accept(environ, start_response, sock)`` answers through ``start_response`` and returns
    the answer's body and a callable (or None); once the answer is written the connection's
    socket is the hook's, and the callable serves it until it ends.
    """

    def __init__(
        self,
        app,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
        websocket_app=None,
        limits: HTTPLimits | None = None,
    ) -> None:
        ssl_args = {}
        if certfile:
            # gevent's own context: the stdlib one would do handshakes and reads blocking,
            # holding up the whole hub (seen here: a TLS client deadlocked a node).
            context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            ssl_args = {"ssl_context": context}
        self.tls = bool(certfile)
        self.limits = limits or HTTPLimits()
        self._server = _NoDelayServer(
            (host, port), app, log=None, error_log=log, limits=self.limits, **ssl_args
        )
        hooks = websocket_app if isinstance(websocket_app, (list, tuple)) else [websocket_app]
        self._server.websocket_apps = {hook.path: hook for hook in hooks if hook is not None}

    @property
    def refused(self) -> Counter[str]:
        """Return what was refused by reason: connections over a cap, requests by status."""
        return self._server.refused + getattr(self._server.application, "refused", Counter())

    @property
    def connections(self) -> int:
        """Return how many connections are open now."""
        return self._server.connections

    @property
    def max_connections(self) -> int:
        """Return the connection cap in force (``limits``, lowered below the fd limit)."""
        return self._server.max_connections

    @property
    def address(self) -> tuple[str, int]:
        """Return the address actually bound."""
        return self._server.address[:2]

    @property
    def port(self) -> int:
        """Return the port actually bound."""
        return self.address[1]

    @property
    def url(self) -> str:
        """Return a URL for this server."""
        host = self.address[0]
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        """Bind and start accepting in the background."""
        self._server.start()

    def serve_forever(self) -> None:
        """Serve until ``stop`` is called."""
        self._server.serve_forever()

    @property
    def active(self) -> int:
        """Return how many requests are being answered now (WebSocket links not counted)."""
        return self._server.active

    def stop_accepting(self) -> None:
        """Begin a drain: close the listener, end idle keep-alive connections now, and end
        every other one after its current answer (which says ``Connection: close``).

        Requests in progress and WebSocket links go on; ``stop`` ends them.
        """
        server = self._server
        server.draining = True
        server.close()
        for greenlet in list(server.idle):
            # Checked again when it runs: a handler that left its wait meanwhile is reading.
            server.loop.run_callback(_wake_idle, server.idle, greenlet)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, give requests in progress ``timeout`` seconds, then close."""
        self._server.stop(timeout=timeout)
