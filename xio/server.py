"""The HTTP adapter: WSGI in front of a ``handle(Request) -> Response`` callable, and a
gevent server to run it.

``WSGIApp`` is the only place where WSGI environ turns into a ``Request`` and a
``Response`` turns into status, headers and body bytes; everything behind it (the
resource tree, the node's router, the mesh forwarder) deals in xio values only.

``Server`` runs any WSGI app on gevent's pywsgi with two changes that matter:
``TCP_NODELAY`` on every accepted socket (measured here: stock pywsgi holds each
response ~40 ms, because headers and body leave as two writes and Nagle waits for the
client's delayed ACK), and one access-log line per request on the ``xio.access``
logger. WebSocket upgrades to a path the app names are handed to ws4py.
"""

from __future__ import annotations

import email.parser
import logging
import re
import socket
import ssl
from collections.abc import Callable
from http import HTTPStatus
from http import client as http_client

import gevent
import gevent.ssl
from gevent.pywsgi import OldMessage, WSGIHandler, WSGIServer

from . import content as _content
from .budget import Budget
from .errors import HTTPError, PayloadTooLarge
from .request import Request, Response
from .resource import error_response

log = logging.getLogger("xio")
access_log = logging.getLogger("xio.access")

DEFAULT_MAX_BODY = 16 * 1024 * 1024

_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})
_COALESCE_LIMIT = 64 * 1024
# A header line the stdlib parser takes as one plain ``name: value`` header: a name of the
# characters its feedparser accepts, no continuation, no stray CR inside (it splits on CR).
_read_headers = getattr(http_client, "_read_headers", None)  # private, hence the fallback
_PLAIN_HEADER = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*)\r?\n")


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
        self.max_body = max_body
        # Shared with the node's links: request bodies held at once, however they arrive.
        self.body_budget = body_budget

    def __call__(self, environ: dict, start_response):
        method = environ["REQUEST_METHOD"]
        held = 0
        try:
            held = self._reserve(environ.get("CONTENT_LENGTH"))
            body = self._read_body(environ)
            if not held and body:  # chunked: the size is known once it is read
                held = self._reserve(len(body))
        except HTTPError as exc:
            if held:
                self.body_budget.give(held)
            _stop_reading(environ)
            return self._send(environ, start_response, error_response(exc), close=True)
        try:
            return self._respond(environ, start_response, method, body)
        finally:
            if held:
                self.body_budget.give(held)

    def _reserve(self, length: str | int | None) -> int:
        """Take a body's size from the budget before it is read; return what was taken."""
        budget = self.body_budget
        if budget is None or not length:
            return 0
        try:
            size = min(int(length), self.max_body)  # more than max_body is a 413 anyway
        except ValueError:
            return 0  # _read_body answers 400
        if size <= 0:
            return 0
        if not budget.take(size):
            raise HTTPError(503, "the node's budget for request bodies is spent; try again",
                            headers={"Retry-After": "1"})  # fmt: skip
        return size

    def _respond(self, environ: dict, start_response, method: str, body: bytes):
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
        )
        return self._send(environ, start_response, self.handle(req))

    def _read_body(self, environ: dict) -> bytes:
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        if length:
            try:
                size = int(length)
            except ValueError:
                raise HTTPError(400, f"bad Content-Length {length!r}") from None
            if size > self.max_body:
                raise PayloadTooLarge(f"body of {size} bytes is over the limit of {self.max_body}")
            return stream.read(size) if size else b""
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            body = stream.read(self.max_body + 1)
            if len(body) > self.max_body:
                raise PayloadTooLarge(f"body is over the limit of {self.max_body} bytes")
            return body
        return b""

    def _send(self, environ: dict, start_response, response: Response, close: bool = False):
        status = response.status
        content, content_type = response.content, response.content_type
        if type(content) is str and content_type is None:  # the commonest answer, first
            body, content_type = content.encode(), _content.TEXT
        else:
            try:
                body, content_type = _content.encode(
                    content, content_type, environ.get("HTTP_ACCEPT")
                )
            except TypeError as exc:
                log.error("cannot encode the response to %s: %s", environ.get("PATH_INFO"), exc)
                response = error_response(HTTPError(500, f"TypeError: {exc}"))
                status = 500
                body, content_type = _content.encode(response.content, None)
        has_body = status not in _NO_BODY_STATUSES
        headers = [("Content-Type", content_type)] if has_body else []
        extra = response.headers
        if extra:
            headers.extend(extra.items())
        if has_body and type(body) is bytes and not (extra and "Content-Length" in extra):
            headers.append(("Content-Length", str(len(body))))
        if close:
            headers.append(("Connection", "close"))
        start_response(status_line(status), headers)
        if not has_body or environ["REQUEST_METHOD"] == "HEAD":
            if type(body) is not bytes and hasattr(body, "close"):
                body.close()
            return [b""]
        return [body] if type(body) is bytes else body


def _stop_reading(environ: dict) -> None:
    # gevent reads and discards an unread body to keep the connection usable; a body
    # refused as too large must not be read, so the connection is closed instead.
    stream = environ.get("wsgi.input")
    if hasattr(stream, "content_length"):
        stream.content_length = 0
        stream.chunked_input = False


class _Handler(WSGIHandler):
    """pywsgi's handler with stricter parsing, xio's access log and ws4py upgrades."""

    def read_request(self, raw_requestline):
        # The stdlib header parser skips a line with no colon and drops every header
        # after it; a request whose headers do not parse cleanly is refused (400), as
        # is an HTTP/1.1 request without Host (RFC 9112, 3.2).
        parsed = super().read_request(raw_requestline)
        if self.headers.defects:
            raise ValueError(f"malformed header section: {self.headers.defects[0]!r}")
        if self.request_version == "HTTP/1.1" and "host" not in self.headers:
            raise ValueError("HTTP/1.1 request without Host header")
        return parsed

    def MessageClass(self, fp, *args):  # noqa: N802 (pywsgi's name)
        # pywsgi parses headers with http.client.parse_headers, i.e. the email package's
        # feedparser: ~15 us a request here, a tenth of the server's CPU. The lines are read
        # exactly as it reads them; when every one is a plain header (what clients send) the
        # message is filled in directly, as the feedparser would fill it, and anything else
        # (continuations, malformed lines, multipart or message types) goes to the feedparser.
        if _read_headers is None:  # a Python without the private helper: the stock parser
            return super().MessageClass(fp, *args)
        try:
            lines = _read_headers(fp)
        except http_client.LineTooLong:
            message = OldMessage()
            message.status = "Line too long"
            return message
        if lines[-1] in (b"\r\n", b"\n"):
            message = OldMessage()
            match = _PLAIN_HEADER.fullmatch
            for line in lines[:-1]:
                parsed = match(line.decode("iso-8859-1"))
                if parsed is None:
                    break
                name, value = parsed.groups()
                if name.lower() == "content-type" and (
                    "multipart" in value.lower() or "message" in value.lower()
                ):
                    break
                message.set_raw(name, value)
            else:
                message.set_payload("")
                return message
        text = b"".join(lines).decode("iso-8859-1")
        return email.parser.Parser(_class=OldMessage).parsestr(text)

    def run_application(self):
        if self.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            upgrade = getattr(self.server, "websocket_app", None)
            if upgrade is not None and self.environ.get("PATH_INFO") == upgrade.path:
                return self._run_websocket(upgrade)
        return super().run_application()

    def _run_websocket(self, upgrade):
        # As ws4py's own gevent handler does: answer the handshake, then hand the raw
        # socket to the websocket object and serve it until it closes.
        self.environ["ws4py.socket"] = self.socket or self.environ["wsgi.input"].rfile._sock
        self.result = upgrade(self.environ, self.start_response) or []
        self.process_result()
        del self.environ["ws4py.socket"]
        self.socket = None
        self.rfile.close()
        websocket = self.environ.pop("ws4py.websocket", None)
        if websocket is not None:
            gevent.spawn(websocket.run).join()

    def handle_one_request(self):
        # A keep-alive connection whose next request is already buffered is served again
        # without ever yielding; under load a few connections then hold the server (p99
        # over 100 ms seen here). So when the event loop has not turned since this
        # connection's last request, it yields once before the next.
        loop = self.server.loop
        iteration = loop.iteration
        result = super().handle_one_request()
        if result is True and loop.iteration == iteration:
            gevent.sleep(0)
        return result

    def _write_with_headers(self, data):
        # pywsgi sends the head and the body in two writes; a small body rides along with
        # the head in one (one syscall less per response, measured 6-11 us here).
        if not data or len(data) > _COALESCE_LIMIT or self.response_use_chunked:
            return super()._write_with_headers(data)
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
        head += data
        self._sendall(head)

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
            delta = (self.time_finish or 0) - (self.time_start or 0)
            status = getattr(self, "code", None) or "-"
            client = self.client_address[0] if isinstance(self.client_address, tuple) else "-"
            path = self.environ.get("PATH_INFO", "") if self.environ else ""
            access_log.info(
                "%s %s %s %s %.2fms", client, self.command or "-", path, status, delta * 1000
            )


class _NoDelayServer(WSGIServer):
    handler_class = _Handler
    websocket_app = None

    def handle(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # a Unix socket has no Nagle to turn off
            pass
        super().handle(sock, address)

    def wrap_socket_and_handle(self, client_socket, address):
        # A client that fails the TLS handshake (wrong protocol, distrusts our certificate)
        # is one closed connection, not a traceback on the hub.
        try:
            return super().wrap_socket_and_handle(client_socket, address)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", address, exc)
            client_socket.close()


class Server:
    """Serve a WSGI app on gevent at ``host``:``port`` (0 picks a free port)."""

    def __init__(
        self,
        app,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
        websocket_app=None,
    ) -> None:
        ssl_args = {}
        if certfile:
            # gevent's own context: the stdlib one would do handshakes and reads blocking,
            # holding up the whole hub (seen here: a TLS client deadlocked a node).
            context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            ssl_args = {"ssl_context": context}
        self.tls = bool(certfile)
        self._server = _NoDelayServer((host, port), app, log=None, error_log=log, **ssl_args)
        self._server.websocket_app = websocket_app

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

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, give requests in progress ``timeout`` seconds, then close."""
        self._server.stop(timeout=timeout)
