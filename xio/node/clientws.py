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
from ..channel import ABORT, CANCEL, DATA, END, HEAD, REQ, ChannelError
from ..errors import HTTPError, PayloadTooLarge, ServiceUnavailable, StreamBroken
from ..request import Headers, Request, Response
from ..responses import error_response, serialize
from ..server import RAW_FIELDS, RAW_TARGET

__all__ = ["CLIENT_WS_PATH", "HIGH_WATER", "MAX_IN_FLIGHT", "PIECE", "ClientChannel",
           "same_origin"]  # fmt: skip

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


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """Tell whether ``origin`` is the node's own: a page it served itself.

    Browsers send ``Origin`` with every WebSocket upgrade and apply no same-origin rule to
    WebSockets, so the node does: a page's upgrade is accepted from its own origin or one
    ``--cors`` allows (``Node._admit_client``).
    """
    return (
        origin is not None and host is not None and origin.lower() == f"{scheme}://{host}".lower()
    )


class ClientChannel:
    """One client WebSocket: its requests in flight and the queue of what answers them.

    ``handle(req) -> Response`` is the node's router; ``environ`` is the upgrade request's
    (the client's address, Host and scheme for every request on the connection);
    ``reject(reason)`` counts a client's fault, ``refuse(reason)`` a cap of ours at work
    (``/_xio/node`` ``rejected`` and ``refused``); ``max_body`` and ``body_budget`` are the node's.
    """

    def __init__(
        self,
        transport,
        handle: Callable[[Request], Response],
        environ: dict,
        *,
        max_body: int,
        body_budget=None,
        reject: Callable[[str], None] = lambda reason: None,
        refuse: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.transport = transport
        self.handle = handle
        self.max_body = max_body
        self.body_budget = body_budget
        self.reject, self.refuse = reject, refuse
        self._base = {key: environ[key] for key in
                      ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "SERVER_NAME",
                       "SERVER_PORT", "SERVER_PROTOCOL") if key in environ}  # fmt: skip
        self._host = environ.get("HTTP_HOST")
        self._in_flight: dict[int, gevent.Greenlet | None] = {}
        self._cancelled: set[int] = set()
        self._bodies: dict[int, _Body] = {}  # request bodies arriving in pieces
        self._skipping: set[int] = set()  # bodies answered early, read past to their END
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
        ends = bool(prefix[1] & END)
        if kind == DATA and id in self._skipping:  # a body answered already: read past it
            if ends:
                self._skipping.discard(id)
            return False
        open_body = self._bodies.get(id)
        if not (kind == REQ and id not in self._in_flight) and not (kind == DATA and open_body):
            self._violation(ChannelError("bad_message", "a large message that is not a new REQ "
                                         "or a piece of a body being sent"))  # fmt: skip
            return False
        body = size - channel.PREFIX_SIZE - hlen + (open_body.size if open_body else 0)
        error = None
        if body > self.max_body:
            self.reject("client_ws_body_too_large")
            error = PayloadTooLarge(f"body of {body} bytes is over the limit of {self.max_body}")
        elif self.body_budget is not None and not self.body_budget.take(size):
            self.refuse("client_ws_body_budget")
            error = ServiceUnavailable("the node's budget for request bodies is spent; try again",
                                       headers={"Retry-After": "1"})  # fmt: skip
        if error is None:
            self._held = size if self.body_budget is not None else 0
            return True
        if open_body is not None:
            del self._bodies[id]
            self._give(open_body.held)
        if not ends:
            self._skip_rest(channel.Message(kind, id))
        self._answer_error(id, error)
        return False

    def _on_message(self, data: bytes) -> None:
        held, self._held = self._held, 0
        try:
            message = channel.decode(data)
        except ChannelError as exc:
            self._give(held)
            return self._violation(exc)
        if message.kind == REQ:
            return self._begin(message, held)
        if message.kind == DATA:
            return self._more(message, held)
        self._give(held)
        if message.kind == CANCEL:
            return self._cancel(message.id)
        return self._violation(ChannelError("bad_message", "a client sends REQ, DATA or CANCEL"))

    def _begin(self, message: channel.Message, held: int) -> None:
        id = message.id
        if id in self._in_flight or id in self._skipping:
            self._give(held)
            return self._violation(ChannelError("bad_message", f"request id {id} is in flight"))
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self._give(held)
            self.refuse("client_ws_in_flight")
            self._skip_rest(message)
            return self._answer_error(id, ServiceUnavailable(
                f"{MAX_IN_FLIGHT} requests are in flight on this connection",
                headers={"Retry-After": "1"}))  # fmt: skip
        self._in_flight[id] = None
        body = _Body(message, held)
        if message.end:
            return self._complete(id, body)
        self._bodies[id] = body
        return self._check(id, body, message, held == 0)

    def _more(self, message: channel.Message, held: int) -> None:
        """A further piece of a request body (PROTOCOL.md 16.2: a body sent in pieces)."""
        id = message.id
        if id in self._skipping:  # a body already answered 413 or 503: read past to its end
            self._give(held)
            if message.end:
                self._skipping.discard(id)
            return None
        body = self._bodies.get(id)
        if body is None:
            self._give(held)
            return self._violation(ChannelError("bad_message", f"DATA for {id}: no body open"))
        body.add(message.body, held)
        if not self._check(id, body, message, held == 0):
            return None
        if message.end:
            del self._bodies[id]
            self._complete(id, body)
        return None

    def _check(self, id: int, body: _Body, message: channel.Message, unheld: bool) -> bool:
        """Keep a body being sent in pieces within --max-body and the budget, or answer it."""
        error = None
        if body.size > self.max_body:
            self.reject("client_ws_body_too_large")
            error = PayloadTooLarge(f"body over the limit of {self.max_body} bytes")
        elif unheld and self.body_budget is not None:
            if self.body_budget.take(len(message.body)):
                body.held += len(message.body)
            else:
                self.refuse("client_ws_body_budget")
                error = ServiceUnavailable("the node's budget for request bodies is spent; "
                                           "try again", headers={"Retry-After": "1"})  # fmt: skip
        if error is None:
            return True
        self._bodies.pop(id, None)
        self._give(body.held)
        self._skip_rest(message)
        self._answer_error(id, error)
        return False

    def _skip_rest(self, message: channel.Message) -> None:
        if message.end:
            return
        if len(self._skipping) >= MAX_IN_FLIGHT:  # ids never ended: a client not following 16.2
            return self._violation(ChannelError("bad_message", "too many bodies left unended"))
        self._skipping.add(message.id)
        return None

    def _cancel(self, id: int) -> None:
        body = self._bodies.pop(id, None)
        if body is not None:  # still arriving: dropped; the client sends no more of it
            self._give(body.held)
            self._in_flight.pop(id, None)
        elif id in self._in_flight:
            self._cancelled.add(id)

    def _complete(self, id: int, body: _Body) -> None:
        first = body.first
        message = channel.Message(REQ, id, END, first.fields, body.joined())
        self._in_flight[id] = gevent.spawn(self._serve, message, body.held)

    def _violation(self, exc: ChannelError) -> None:
        self.reject("client_ws_bad_message")
        log.info("closing the client channel of %s: %s", self.transport.peer, exc)
        self.transport.close(f"protocol_error: {exc}"[:120], code=1002)

    def _on_close(self, reason: str) -> None:
        for body in self._bodies.values():
            self._give(body.held)
        self._bodies.clear()
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
                self.reject("client_ws_bad_request")
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
            try:
                for piece in _pieces(body):
                    if not self._queue(id, channel.encode(DATA, id, None, piece)):
                        return
            except Exception as exc:  # the body broke after its head: say so, never hang
                if not isinstance(exc, StreamBroken):
                    log.exception("the body of answer %d on %s failed", id, self.transport.peer)
                why = str(exc) if isinstance(exc, StreamBroken) else "the app's body failed"
                self._queue(id, channel.encode(DATA, id, {"error": why[:1000]}, b"", END | ABORT))
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
                self.refuse("client_ws_not_reading")
                self.transport.close("client_ws_not_reading: no answer taken for "
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


class _Body:
    """A request body arriving in pieces: its REQ, the pieces so far, the budget they hold."""

    def __init__(self, first: channel.Message, held: int) -> None:
        self.first, self.parts, self.size, self.held = first, [first.body], len(first.body), held

    def add(self, piece: bytes, held: int) -> None:
        self.parts.append(piece)
        self.size += len(piece)
        self.held += held

    def joined(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


#: How long a request waits for room in the queue before the client counts as not reading.
_STALL_TIMEOUT = 30.0


def _pieces(chunks: Iterable[bytes]):
    """Yield the body in pieces of at most ``PIECE`` bytes, none of them empty."""
    for chunk in chunks:
        if isinstance(chunk, str):
            chunk = chunk.encode()
        for start in range(0, len(chunk), PIECE):
            yield bytes(chunk[start : start + PIECE])
