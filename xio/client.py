"""Call xio services over HTTP with the same verbs as an in-process resource.

    import xio
    inventory = xio.client('http://hub:8080/inventory')
    response = inventory.get('items/42')        # GET /inventory/items/42
    response.status, response.content           # 200, {'id': 42, ...}

Theory of operation
-------------------
A ``Client`` parses its base URL once. Each request is rendered into one byte string
(request line, headers and, when it is small, the body) and written with one
``sendall`` on a socket with ``TCP_NODELAY`` set, so Nagle's algorithm never holds a
request back waiting for an ACK. The standard library's ``http.client.HTTPResponse``
parses the answer (status line, headers, chunked or sized body); ``xio.content``
decodes the body by its Content-Type.

Connections are kept alive. Idle ones wait on a small per-client LIFO stack: a request
pops one (or opens a new one when the stack is empty) and pushes it back once the
body has been read in full, unless the server asked to close it or anything went
wrong, in which case it is closed. A push or a pop is one atomic deque operation, so
threads and gevent greenlets may share one client. The stack keeps at most
``pool_size`` idle connections; it never limits how many requests run at once.

A server may close an idle connection at any moment. Before reuse, a connection that
has become readable (an EOF or stray bytes) is dropped. If a reused connection still
fails before a single byte of the answer arrives, the request is sent once more on a
fresh connection, as urllib3 and browsers do; a fresh connection is never retried.

Every HTTP status comes back as a ``Response``. Failures are translated where they
happen, with ``raise ... from exc``: no connection, or a connection lost before any
answer, raises ``ConnectError``; no answer in time, ``ReadTimeout``; an answer that is
not HTTP, is cut short or does not decode as its Content-Type says, ``ResponseError``.
No ``socket``, ``ssl`` or ``http.client`` exception escapes.

Sockets come from ``socket.create_connection`` looked up at call time, so the client
is cooperative under gevent's monkey-patching (create the client after patching, so
that its TLS context is gevent's too).
"""

from __future__ import annotations

import functools
import http.client
import re
import select
import socket
import ssl
import sys
from collections import deque
from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit

from . import content as _content
from . import sse
from .constants import DEFAULT_PORT
from .content import EVENT_STREAM
from .errors import BadRequest, ConnectError, ReadTimeout, ResponseError
from .request import Headers, Response, Verbs
from .version import __version__

__all__ = ["Client", "FailoverClient", "HTTPStream", "client"]

DEFAULT_ACCEPT = "application/json, */*;q=0.5"
# A body up to this size travels in the same write as the headers; a larger one is
# written after them rather than copied.
_COALESCE_LIMIT = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Characters a request target may carry as they are; '%' stays so that an already
# percent-encoded path passes through unchanged.
_TARGET_SAFE = "/?&=:@!$'()*+,;%-._~"
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9/?&=:@!$'()*+,;%\-._~]")


class _NothingReceivedError(Exception):
    """The connection failed before any byte of the answer arrived (safe to resend)."""


class Client(Verbs):
    """Send requests to the service at ``base_url`` and return ``Response`` objects.

    ``timeout`` (seconds, ``None`` for none) bounds connecting and each wait for data;
    ``headers`` are sent with every request; ``verify`` is ``True`` (check the server's
    certificate against the system CAs), ``False`` (do not check) or the path of a CA
    bundle; ``pool_size`` is how many idle connections are kept for reuse.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float | None = 30.0,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        pool_size: int = 8,
    ) -> None:
        base_url = _with_scheme(base_url)
        parts = urlsplit(base_url)
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError(f"not an http(s) URL: {base_url!r} (bad port)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url
        self.timeout = timeout
        self.verify = verify
        self.pool_size = pool_size
        self._hostname = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"[{self._hostname}]" if ":" in self._hostname else self._hostname
        default_port = parts.port is None or parts.port == (443 if parts.scheme == "https" else 80)
        self._host = host if default_port else f"{host}:{self._port}"
        self._origin = f"{parts.scheme}://{self._host}"
        self._base_path = parts.path.rstrip("/")
        self._tls = _tls_context(verify) if parts.scheme == "https" else None
        self.headers = Headers(
            {"User-Agent": f"xio-client/{__version__}", "Accept": DEFAULT_ACCEPT}
        )
        if headers:
            self.headers.update(headers)
        self._idle: deque[socket.socket] = deque()

    def request(
        self,
        method: str,
        path: str = "",
        data=None,
        query: Mapping | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send ``method path`` and return the response, whatever its status.

        ``path`` is relative to the base URL's path (a leading ``/`` changes nothing);
        ``data`` is encoded by type (JSON for structures, text for ``str``, octets for
        ``bytes``; ``None`` sends no body); ``query`` is a dict (list values repeat the
        name) or a ready query string; ``headers`` override the client's;
        ``timeout`` overrides the client's for this request.
        """
        method = method.upper()
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        target = self._target(path, query)
        head, body = self._render(method, target, data, headers)
        if len(body) <= _COALESCE_LIMIT:
            head, body = head + body, b""
        timeout = self.timeout if timeout is None else timeout
        response, raw = self._exchange(method, target, head, body, timeout)
        return self._response(method, target, response, raw)

    def events(self, path: str = "", query=None, headers=None, timeout: float | None = None):
        """GET ``path`` as server-sent events: an iterator of ``xio.Event`` as they come
        (``xio.sse.read``); a non-200 answer raises its ``HTTPError``. ``timeout`` bounds each
        wait, as for ``stream``."""
        asked = {**dict(headers or {}), "Accept": EVENT_STREAM}
        return sse.read(self.stream("GET", path, query=query, headers=asked, timeout=timeout))

    def stream(self, method: str, path: str = "", data=None, query=None, headers=None,
               timeout: float | None = None) -> HTTPStream:  # fmt: skip
        """Send ``method path``; return the answer once its head came, its body still to read.

        Iterate over it for the pieces of the body as they arrive (``read()`` joins them);
        ``close()`` gives up on the rest (and on the connection). Arguments as ``request``.
        """
        method = method.upper()
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        target = self._target(path, query)
        head, body = self._render(method, target, data, headers)
        timeout = self.timeout if timeout is None else timeout
        response, sock = self._exchange(method, target, head, body, timeout, stream=True)
        return HTTPStream(self, response, sock, method, self._origin + target)

    def close(self) -> None:
        """Close the idle connections; the client stays usable and reconnects on demand."""
        while self._idle:
            try:
                _close(self._idle.pop())
            except IndexError:  # another thread took the last one
                break

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.base_url}>"

    # -- rendering -------------------------------------------------------------------------

    def _target(self, path: str, query) -> str:
        path = path.lstrip("/")
        target = f"{self._base_path}/{path}" if path else (self._base_path or "/")
        if query:
            query = query.lstrip("?") if isinstance(query, str) else urlencode(query, doseq=True)
            target = f"{target}{'&' if '?' in target else '?'}{query}"
        if _NEEDS_QUOTING.search(target):
            target = quote(target, safe=_TARGET_SAFE)
        return target

    def _render(self, method: str, target: str, data, headers) -> tuple[bytes, bytes]:
        merged = self.headers.copy()
        if headers:
            merged.update(headers)
        body = b""
        if data is not None:
            body, content_type = _content.encode(data, merged.get("Content-Type"))
            if not isinstance(body, bytes):  # a file or an iterator: sent whole
                body = b"".join(body)
            merged.setdefault("Content-Type", content_type)
        if body or method in _BODY_METHODS:
            merged["Content-Length"] = str(len(body))
        lines = [f"{method} {target} HTTP/1.1"]
        if "Host" not in merged:
            lines.append(f"Host: {self._host}")
        for name, value in merged.items():
            if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
                raise ValueError(f"invalid header {name!r}: {value!r}")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        try:
            return "\r\n".join(lines).encode("latin-1"), body
        except UnicodeEncodeError as exc:
            raise ValueError(f"header values must be Latin-1 text: {exc}") from exc

    # -- connections -----------------------------------------------------------------------

    def _exchange(self, method, target, head, body, timeout, stream: bool = False):
        sock = self._checkout()
        fresh = sock is None
        if fresh:
            sock = self._connect(target, timeout)
        else:
            sock.settimeout(timeout)
        while True:
            response = http.client.HTTPResponse(sock, method=method)
            try:
                self._send(sock, response, method, target, head, body)
                if stream:  # the caller reads the body, then gives the socket back
                    return response, sock
                raw = self._read_body(response, target)
            except _NothingReceivedError as exc:
                response.close()  # its file holds the socket open until closed too
                _close(sock)
                if fresh:
                    cause = exc.__cause__
                    raise ConnectError(
                        f"{self._origin}{target}: connection lost before any response ({cause})"
                    ) from cause
                sock, fresh = self._connect(target, timeout), True
                continue
            except BaseException:
                response.close()
                _close(sock)
                raise
            self._release(response, sock)
            return response, raw

    def _release(self, response: http.client.HTTPResponse, sock) -> None:
        """Keep a connection whose answer was read in full for the next request, or close it."""
        if response.will_close:
            _close(sock)
        elif len(self._idle) < self.pool_size:
            self._idle.append(sock)
        else:
            _close(sock)

    def _checkout(self) -> socket.socket | None:
        while True:
            try:
                sock = self._idle.pop()
            except IndexError:
                return None
            if not _is_dropped(sock):
                return sock
            _close(sock)

    def _connect(self, target: str, timeout: float | None) -> socket.socket:
        url = self._origin + target
        try:
            sock = socket.create_connection((self._hostname, self._port), timeout)
        except TimeoutError as exc:
            raise _unsent(f"cannot connect to {url}: timed out after {timeout} s") from exc
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror)
            raise _unsent(f"cannot connect to {url}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._hostname)
        except OSError as exc:  # ssl.SSLError and certificate errors are OSErrors
            sock.close()
            raise _unsent(f"cannot connect to {url}: TLS: {exc}") from exc
        return sock

    def _send(self, sock, response, method, target, head, body) -> None:
        try:
            sock.sendall(head)
            if body:
                sock.sendall(body)
            response.begin()
        except TimeoutError as exc:
            raise ReadTimeout(
                f"{method} {self._origin}{target}: no response within {sock.gettimeout()} s"
            ) from exc
        except ConnectionError as exc:  # RemoteDisconnected, reset, broken pipe
            if isinstance(response.status, int):  # the status line had arrived
                raise ResponseError(
                    f"{self._origin}{target}: connection lost in the headers"
                ) from exc
            raise _NothingReceivedError from exc
        except http.client.HTTPException as exc:
            raise ResponseError(f"{self._origin}{target}: malformed response: {exc!r}") from exc
        except OSError as exc:
            raise ConnectError(f"{self._origin}{target}: {exc}") from exc

    def _read_body(self, response: http.client.HTTPResponse, target: str) -> bytes:
        try:
            return response.read()
        except TimeoutError as exc:
            raise ReadTimeout(f"{self._origin}{target}: the body did not arrive in time") from exc
        except (http.client.HTTPException, OSError) as exc:
            raise ResponseError(f"{self._origin}{target}: incomplete body: {exc!r}") from exc

    def _response(self, method, target, response, raw: bytes) -> Response:
        headers = Headers(response.getheaders())
        content_type = headers.get("Content-Type")
        try:
            content = _content.decode_answer(raw, content_type, method, response.status)
        except BadRequest as exc:
            raise ResponseError(f"{self._origin}{target}: {exc.description}") from exc
        return Response(content, response.status, content_type, headers)


class HTTPStream:
    """An answer whose head has come: ``status``, ``content_type``, ``headers``; iterate for
    the body's pieces (bytes) as they arrive, or ``read()`` them all."""

    def __init__(self, owner: Client, response, sock, method: str, where: str) -> None:
        self.status = response.status
        self.headers = Headers(response.getheaders())
        self.content_type = self.headers.get("Content-Type")
        self.method = method
        self._owner, self._response, self._sock, self._where = owner, response, sock, where

    def __iter__(self):
        response = self._response
        while self._sock is not None:
            try:
                piece = response.read1(_COALESCE_LIMIT)
                if not piece and not response.isclosed():
                    piece = response.read()  # a HEAD's answer: this ends it (or finds it cut)
            except TimeoutError as exc:
                self.close()
                raise ReadTimeout(f"{self._where}: the body did not arrive in time") from exc
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                raise ResponseError(f"{self._where}: incomplete body: {exc!r}") from exc
            if not piece:
                sock, self._sock = self._sock, None
                if response.isclosed():
                    self._owner._release(response, sock)  # noqa: SLF001
                else:
                    _close(sock)
                return
            yield piece

    def read(self) -> bytes:
        """Return the rest of the body."""
        return b"".join(self)

    def close(self) -> None:
        """Give up on the rest of the body: the connection is closed, not reused."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._response.close()
            _close(sock)

    def __enter__(self) -> HTTPStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HTTPStream {self.status} {self.content_type}>"


def client(url, **options):
    """Return a ``Client`` for the service at ``url`` (options as for ``Client``).

    ``url`` is ``http(s)://host[:port][/path]``, or ``host:port[/path]`` and ``host[/path]``
    as ``--peers`` reads them (plain HTTP; a node's default port 7700 when none is given);
    ``ws(s)://host:port/path`` is a ``WSClient``: every request on one WebSocket.
    A list of such URLs is a ``FailoverClient`` over them.
    """
    if isinstance(url, (list, tuple)):
        return FailoverClient([client(one, **options) for one in url])
    if url.startswith(("ws://", "wss://")):
        from .wsclient import WSClient  # the WebSocket transport, only when asked for

        return WSClient(url, **options)
    return Client(url, **options)


class FailoverClient(Verbs):
    """Send each request to the first of several entries that takes a connection.

    Entries are tried in order from the last one that worked; the next is tried only when
    no connection could be made (nothing was sent, so no request is ever sent twice). When
    every entry failed, the ``ConnectError`` names each.
    """

    def __init__(self, clients: list[Client]) -> None:
        if not clients:
            raise ValueError("a client needs at least one URL")
        self.clients = clients
        self._good = 0

    def request(self, method: str, path: str = "", data=None, query=None, headers=None,
                timeout: float | None = None) -> Response:  # fmt: skip
        return self._first("request", method, path, data, query, headers, timeout)

    def events(self, path: str = "", query=None, headers=None, timeout: float | None = None):
        """GET ``path`` as server-sent events: an iterator of ``xio.Event`` as they come
        (``xio.sse.read``); a non-200 answer raises its ``HTTPError``. ``timeout`` bounds each
        wait, as for ``stream``."""
        asked = {**dict(headers or {}), "Accept": EVENT_STREAM}
        return sse.read(self.stream("GET", path, query=query, headers=asked, timeout=timeout))

    def stream(self, method: str, path: str = "", data=None, query=None, headers=None,
               timeout: float | None = None):  # fmt: skip
        """As ``Client.stream``, on the first entry that takes a connection."""
        return self._first("stream", method, path, data, query, headers, timeout)

    def _first(self, call: str, *args):
        failures = []
        for step in range(len(self.clients)):
            index = (self._good + step) % len(self.clients)
            try:
                response = getattr(self.clients[index], call)(*args)
            except ConnectError as exc:
                if not getattr(exc, "nothing_sent", False):
                    raise
                failures.append(str(exc))
                continue
            self._good = index
            return response
        raise ConnectError("no entry took a connection: " + "; ".join(failures))

    def close(self) -> None:
        for one in self.clients:
            one.close()

    def __enter__(self) -> FailoverClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FailoverClient {[one.base_url for one in self.clients]}>"


def _unsent(message: str) -> ConnectError:
    """A ``ConnectError`` from before anything was sent: another entry may take the request."""
    error = ConnectError(message)
    error.nothing_sent = True
    return error


def _with_scheme(url: str) -> str:
    """Read ``h:p`` and ``h`` as ``--peers`` does: ``http://h:p``, ``http://h:7700``."""
    if "://" in url:
        return url
    address, slash, path = url.partition("/")
    if ":" not in address.rsplit("]", 1)[-1]:
        address += f":{DEFAULT_PORT}"
    return f"http://{address}{slash}{path}"


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify)


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


@functools.cache
def _real_poll():
    # A zero-timeout poll never blocks, so gevent's cooperative version (which would
    # switch to the hub to answer) is not wanted here; either way this is the real one.
    monkey = sys.modules.get("gevent.monkey")
    return monkey.get_original("select", "poll") if monkey else getattr(select, "poll", None)


def _is_dropped(sock) -> bool:
    """Tell whether an idle connection was closed by the server or has stray bytes."""
    pending = getattr(sock, "pending", None)  # bytes already decrypted by TLS
    try:
        if pending is not None and pending():
            return True
        poll = _real_poll()
        if poll is None:  # no poll(2) on this platform
            return bool(select.select([sock], [], [], 0)[0])
        poller = poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
