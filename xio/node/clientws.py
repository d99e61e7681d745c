"""The client channel, ``/_xio/client-ws``: many HTTP-like requests on one client WebSocket.

A client (``xio.client('ws://node:7700/app')``, the JavaScript client's ``ws://`` URLs) keeps
one WebSocket to a node and sends its requests on it as ``REQ`` messages (``xio.channel``, the
codec; docs/PROTOCOL.md, section 16). Each is answered by the node's router exactly as the same
request over HTTP would be, as a ``HEAD`` message and, for a body larger than one message or
produced piece by piece, ``DATA`` messages until one carries ``END``.

Theory of operation
-------------------
``ClientChannel`` owns one such connection. Its reader (the transport's greenlet) decodes each
message; a ``REQ`` becomes a ``Request`` that carries what the HTTP front would have put in its
environ (the raw target, the header fields as sent, the client's address), and is answered in a
greenlet of its own, so a slow request holds up none of the others. A client's faults are kept
to the smallest thing they spoil: bad fields in one ``REQ`` are a 400 for that request; a
message that is not a channel message closes the connection (1002), since nothing after it can
be trusted to be framed right. Each is counted under ``/_xio/node`` ``rejected``.

Bounded by us, not by the client:

* at most ``MAX_IN_FLIGHT`` requests per connection (more are answered 503 at once), besides
  the node's own in-flight budget, which the router applies to every request however it came;
* a message over ``ADMIT_ABOVE`` is read only if its body fits ``--max-body`` (else 413, read
  past and dropped) and the node's budget for request bodies (else 503);
* what waits to be written: answers leave in pieces of ``PIECE`` bytes through one queue, and
  a request adds a piece only while less than ``HIGH_WATER`` bytes wait. A client that stops
  reading stalls only its own requests, each until its deadline, and then loses the connection.

A ``CANCEL`` drops what is still to be sent for that request (the client gave up on it); the
answer being computed is not interrupted, as a closed HTTP connection does not interrupt it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote

import gevent
from gevent.event import Event

from .. import channel
from ..channel import CANCEL, DATA, END, HEAD, REQ, ChannelError
from ..errors import HTTPError, PayloadTooLarge, ServiceUnavailable
from ..request import Headers, Request, Response
from ..responses import error_response, serialize
from ..server import RAW_FIELDS, RAW_TARGET

__all__ = ["CLIENT_WS_PATH", "HIGH_WATER", "MAX_IN_FLIGHT", "PIECE", "ClientChannel",
           "origin_allowed"]  # fmt: skip

log = logging.getLogger("xio.clientws")

CLIENT_WS_PATH = "/_xio/client-ws"
#: Requests one connection may have in flight; the next is answered 503 at once.
MAX_IN_FLIGHT = 128
#: Body bytes per HEAD or DATA message.
PIECE = 64 * 1024
#: Bytes waiting to be written above which a request waits before queuing its next piece.
HIGH_WATER = 1024 * 1024
#: The largest message read at all (a larger one closes the connection with 1009); one with a
#: body over --max-body but under this is read past, keeping nothing, and answered 413.
MAX_MESSAGE = 1024 * 1024 * 1024
# Characters that stay as they are in a path; '%' too, so that escapes the client wrote stay.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


def origin_allowed(origin: str | None, host: str | None, scheme: str,
                   allowed: Iterable[str]) -> bool:  # fmt: skip
    """Tell whether a WebSocket upgrade from ``origin`` may open a client channel.

    Browsers send ``Origin`` with every WebSocket upgrade and apply no same-origin rule to
    WebSockets, so the node does: no ``Origin`` (not a browser), the node's own origin, or
    one that ``--cors`` allows (``*`` allows any).
    """
    if origin is None:
        return True
    allowed = tuple(allowed)
    if "*" in allowed or origin in allowed:
        return True
    return host is not None and origin.lower() == f"{scheme}://{host}".lower()


class ClientChannel:
    """One client WebSocket: its requests in flight and the queue of what answers them.

    ``handle(req) -> Response`` is the node's router; ``environ`` is the upgrade request's
    (the client's address, Host and scheme for every request on the connection);
    ``count(reason)`` counts a rejection; ``max_body`` and ``body_budget`` are the node's.
    """

    def __init__(
        self,
        transport,
        handle: Callable[[Request], Response],
        environ: dict,
        *,
        max_body: int,
        body_budget=None,
        count: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.transport = transport
        self.handle = handle
        self.max_body = max_body
        self.body_budget = body_budget
        self.count = count
        self._base = {key: environ[key] for key in
                      ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "SERVER_NAME",
                       "SERVER_PORT", "SERVER_PROTOCOL") if key in environ}  # fmt: skip
        self._host = environ.get("HTTP_HOST")
        self._in_flight: dict[int, gevent.Greenlet | None] = {}
        self._cancelled: set[int] = set()
        self._held = 0  # the budget taken for the message being read (admit -> on_message)
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._room = Event()
        self._room.set()
        transport.max_message = MAX_MESSAGE
        transport.on_message = self._on_message
        transport.admit = self._admit
        transport.on_discarded = lambda: None
        transport.on_close = self._on_close
        transport.pull = self._pull

    # -- what arrives (the reader greenlet) ----------------------------------------------

    def _admit(self, size: int, prefix: bytes) -> bool:
        """Judge a large message from its first bytes: read it, or answer it and skip it."""
        try:
            kind, id, hlen = channel.peek(prefix)
        except ChannelError as exc:
            self._violation(exc)
            return False
        if kind != REQ or id in self._in_flight:
            self._violation(ChannelError("bad_message", "a large message that is not a new REQ"))
            return False
        body = size - channel.PREFIX_SIZE - hlen
        if body > self.max_body:
            self.count("client_ws_body_too_large")
            self._answer_error(id, PayloadTooLarge(
                f"body of {body} bytes is over the limit of {self.max_body}"))  # fmt: skip
            return False
        budget = self.body_budget
        if budget is not None and not budget.take(size):
            self.count("client_ws_body_budget")
            self._answer_error(id, ServiceUnavailable(
                "the node's budget for request bodies is spent; try again",
                headers={"Retry-After": "1"}))  # fmt: skip
            return False
        self._held = size if budget is not None else 0
        return True

    def _on_message(self, data: bytes) -> None:
        held, self._held = self._held, 0
        try:
            message = channel.decode(data)
        except ChannelError as exc:
            self._give(held)
            return self._violation(exc)
        if message.kind == CANCEL:
            self._give(held)
            if message.id in self._in_flight:
                self._cancelled.add(message.id)
            return None
        if message.kind != REQ:
            self._give(held)
            return self._violation(ChannelError("bad_message", "a client sends REQ or CANCEL"))
        if message.id in self._in_flight:
            self._give(held)
            return self._violation(ChannelError("bad_message",
                                                f"request id {message.id} is in flight"))  # fmt: skip
        if len(message.body) > self.max_body:  # a small message over a smaller --max-body
            self._give(held)
            self.count("client_ws_body_too_large")
            return self._answer_error(message.id, PayloadTooLarge(
                f"body of {len(message.body)} bytes is over the limit of {self.max_body}"))  # fmt: skip
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self._give(held)
            self.count("client_ws_in_flight")
            return self._answer_error(message.id, ServiceUnavailable(
                f"{MAX_IN_FLIGHT} requests are in flight on this connection",
                headers={"Retry-After": "1"}))  # fmt: skip
        self._in_flight[message.id] = None
        self._in_flight[message.id] = gevent.spawn(self._serve, message, held)
        return None

    def _violation(self, exc: ChannelError) -> None:
        self.count("client_ws_bad_message")
        log.info("closing the client channel of %s: %s", self.transport.peer, exc)
        self.transport.close(f"protocol_error: {exc}"[:120], code=1002)

    def _on_close(self, reason: str) -> None:
        self._room.set()  # wake the waiting requests: they find the connection closed
        self._out.clear()
        self._out_bytes = 0

    def _give(self, held: int) -> None:
        if held:
            self.body_budget.give(held)

    # -- answering (a greenlet per request) ----------------------------------------------

    def _serve(self, message: channel.Message, held: int) -> None:
        id = message.id
        try:
            try:
                req = self._request(message)
            except HTTPError as exc:
                self.count("client_ws_bad_request")
                response, method, accept = error_response(exc), "GET", None
            else:
                response = self.handle(req)
                method, accept = req.method, req.headers.get("Accept")
            self._send_response(id, method, response, accept)
        except Exception:  # a connection that ends mid-answer, a body that fails to iterate
            log.exception("the answer to request %d on %s failed", id, self.transport.peer)
        finally:
            self._give(held)
            self._in_flight.pop(id, None)
            self._cancelled.discard(id)

    def _request(self, message: channel.Message) -> Request:
        method, path, query, headers = channel.request_fields(message.fields)
        # As over HTTP: the raw target keeps the client's escapes (a raw non-ASCII character
        # is taken as its UTF-8 escape); the decoded path is what the resource tree sees.
        target = quote(path, safe=_PATH_SAFE)
        if query:
            target += "?" + query
        if self._host and not any(name.lower() == "host" for name, _ in headers):
            headers.insert(0, ("Host", self._host))
        environ = dict(self._base, REQUEST_METHOD=method, PATH_INFO=unquote(path),
                       QUERY_STRING=query)  # fmt: skip
        environ[RAW_TARGET] = target
        environ[RAW_FIELDS] = headers
        return Request(method, environ["PATH_INFO"], query=query, headers=Headers(headers),
                       body=message.body, environ=environ)  # fmt: skip

    def _answer_error(self, id: int, exc: HTTPError) -> None:
        self._in_flight.setdefault(id, None)
        gevent.spawn(self._send_error, id, exc)

    def _send_error(self, id: int, exc: HTTPError) -> None:
        try:
            self._send_response(id, "GET", error_response(exc), None)
        except Exception:
            log.exception("the error answer to request %d failed", id)
        finally:
            self._in_flight.pop(id, None)

    def _send_response(self, id: int, method: str, response: Response, accept) -> None:
        wire = serialize(response, accept, f"{method} on the client channel")
        head = {"status": wire.status, "headers": [list(pair) for pair in wire.headers]}
        if not wire.has_body or method == "HEAD":
            wire.discard()
            self._queue(id, channel.encode(HEAD, id, head, flags=END))
            return
        body = wire.body
        if type(body) is bytes:  # the common case: pieces known ahead, the last marked END
            last = max(0, (len(body) - 1) // PIECE)
            for n in range(last + 1):
                piece = body[n * PIECE : (n + 1) * PIECE]
                kind, fields = (HEAD, head) if n == 0 else (DATA, None)
                if not self._queue(id, channel.encode(kind, id, fields, piece,
                                                      END if n == last else 0)):  # fmt: skip
                    return
            return
        # A body produced piece by piece: each piece leaves as soon as it is made.
        try:
            if not self._queue(id, channel.encode(HEAD, id, head)):
                return
            for piece in _pieces(body):
                if not self._queue(id, channel.encode(DATA, id, None, piece)):
                    return
            self._queue(id, channel.encode(DATA, id, flags=END))
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def _queue(self, id: int, data: bytes) -> bool:
        """Queue one message for the writer; False when the request is no longer wanted."""
        while self._out_bytes >= HIGH_WATER and not self.transport.closed:
            self._room.clear()
            if not self._room.wait(timeout=_STALL_TIMEOUT):
                self.count("client_ws_not_reading")
                self.transport.close("not_reading: the client took no answer for "
                                     f"{_STALL_TIMEOUT:g} s")  # fmt: skip
        if self.transport.closed or id in self._cancelled:
            return False
        self._out.append(data)
        self._out_bytes += len(data)
        self.transport.wake()
        return True

    def _pull(self, max_bytes: int) -> list[bytes]:
        """The writer's side of the queue: the next messages, about ``max_bytes`` in all."""
        out, taken, size = self._out, [], 0
        while out and (not taken or size + len(out[0]) <= max_bytes):
            data = out.popleft()
            taken.append(data)
            size += len(data)
        self._out_bytes -= size
        if self._out_bytes < HIGH_WATER:
            self._room.set()
        return taken


#: How long a request waits for room in the queue before the client counts as not reading.
_STALL_TIMEOUT = 30.0


def _pieces(chunks: Iterable[bytes]):
    """Yield the body in pieces of at most ``PIECE`` bytes, none of them empty."""
    for chunk in chunks:
        if isinstance(chunk, str):
            chunk = chunk.encode()
        for start in range(0, len(chunk), PIECE):
            yield bytes(chunk[start : start + PIECE])
