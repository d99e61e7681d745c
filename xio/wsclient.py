"""Call xio services over one WebSocket: ``xio.client('ws://node:7700/inventory')``.

The same verbs and the same ``Response`` as the HTTP client (``xio.client``), carried by the
node's client channel, ``/_xio/client-ws`` (docs/PROTOCOL.md, section 16; ``xio.channel`` is
the codec): many requests in flight on one connection, and ``stream()`` for an answer whose
body should be read as it arrives.

Theory of operation
-------------------
A ``WSClient`` holds at most one ``_Channel``: a socket upgraded to WebSocket and a reader
thread (a greenlet under gevent's monkey-patching) that turns frames into channel messages and
hands each to the queue of the request it answers. A request takes the next id, registers its
queue, writes one masked ``REQ`` frame under the channel's write lock and waits on its queue,
each wait bounded by the timeout; when the timeout passes it sends ``CANCEL`` so that the node
drops what it would still send, and raises ``ReadTimeout``.

When the connection ends, every request waiting on it gets ``ConnectError`` (the node may have
had it: it is never sent again), and the next request opens a new one. A connection that could
not be made is retried no sooner than a backoff that doubles from 0.1 s to 5 s; a request that
comes during the backoff waits for it if its timeout allows, else fails at once. Either way the
error says nothing was sent, so a list of entry URLs moves on to the next (``FailoverClient``).

Bounded: a message from the node is at most ``MAX_MESSAGE`` bytes (a larger one ends the
connection), and one request's queue holds what the node sent for it until it is read.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import time
from base64 import b64encode
from collections.abc import Iterator, Mapping
from secrets import token_bytes
from urllib.parse import urlsplit

from . import channel, sse
from . import content as _content
from .channel import ABORT, CANCEL, DATA, END, HEAD, REQ, ChannelError
from .client import Client, _unsent
from .content import EVENT_STREAM
from .errors import BadRequest, ConnectError, ReadTimeout, ResponseError, StreamBroken
from .peering import websocket
from .request import Headers, Response, Verbs

__all__ = ["MAX_MESSAGE", "StreamedResponse", "WSClient"]

CLIENT_WS_PATH = "/_xio/client-ws"
#: The largest message taken from a node: a HEAD or DATA carries at most 64 KiB of body.
MAX_MESSAGE = 16 * 1024 * 1024
#: The body bytes a client's REQ or DATA carries at most (a larger body goes in pieces).
BODY_PIECE = 32 * 1024
_HEAD_LIMIT = 64 * 1024  # the upgrade answer's head
_FIRST_DELAY, _MAX_DELAY = 0.1, 5.0
_mask_keys = websocket.MaskKeys()


class WSClient(Verbs):
    """Send requests to the service at ``base_url`` (``ws://`` or ``wss://``) on one WebSocket.

    Options as for ``xio.Client``: ``timeout`` bounds connecting and each wait for an answer,
    ``headers`` go with every request, ``verify`` checks a ``wss://`` node's certificate.
    """

    def __init__(self, base_url: str, *, timeout: float | None = 30.0,
                 headers: Mapping[str, str] | None = None, verify: bool | str = True,
                 **_pool) -> None:  # fmt: skip
        parts = urlsplit(base_url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"not a ws(s) URL: {base_url!r}")
        self.base_url = base_url
        self.timeout = timeout
        # The HTTP client of the same node renders targets and headers the same way.
        http = ("https" if parts.scheme == "wss" else "http") + base_url[len(parts.scheme) :]
        self._http = Client(http, timeout=timeout, headers=headers, verify=verify)
        self.headers = self._http.headers
        self._lock = threading.Lock()
        self._channel: _Channel | None = None
        self._delay = 0.0
        self._retry_at = 0.0

    def request(self, method: str, path: str = "", data=None, query=None, headers=None,
                timeout: float | None = None) -> Response:  # fmt: skip
        """Send ``method path`` and return the whole answer, whatever its status."""
        answer = self.stream(method, path, data, query, headers, timeout)
        raw = answer.read()
        try:
            content = _content.decode_answer(raw, answer.content_type, answer.method,
                                             answer.status)  # fmt: skip
        except BadRequest as exc:
            raise ResponseError(f"{self.base_url}: {exc.description}") from exc
        return Response(content, answer.status, answer.content_type, answer.headers)

    def events(self, path: str = "", query=None, headers=None, timeout: float | None = None):
        """GET ``path`` as server-sent events: an iterator of ``xio.Event`` as they come
        (``xio.sse.read``); a non-200 answer raises its ``HTTPError``. ``timeout`` bounds each
        wait, as for ``stream``."""
        asked = {**dict(headers or {}), "Accept": EVENT_STREAM}
        return sse.read(self.stream("GET", path, query=query, headers=asked, timeout=timeout))

    def stream(self, method: str, path: str = "", data=None, query=None, headers=None,
               timeout: float | None = None) -> StreamedResponse:  # fmt: skip
        """Send ``method path``; return the answer once its head came, its body still to read.

        Iterate over it for the pieces of the body as they arrive (``read()`` joins them);
        ``close()`` gives up on the rest.
        """
        method = method.upper()
        timeout = self.timeout if timeout is None else timeout
        target = self._http._target(path, query)  # noqa: SLF001 - one rule for both transports
        fields, body = self._fields(method, target, data, headers)
        chan = self._connected(timeout)
        id, answers = chan.open_request()
        try:
            for message in request_messages(id, fields, body):
                chan.send(message)
            head = chan.next(id, answers, timeout, self.base_url)
        except BaseException:
            chan.forget(id)
            raise
        if head.kind != HEAD:
            chan.forget(id)
            raise ResponseError(f"{self.base_url}: the answer began with message kind {head.kind}")
        return StreamedResponse(chan, id, answers, head, method, timeout, self.base_url)

    def close(self) -> None:
        """Close the connection; the client stays usable and reconnects on demand."""
        with self._lock:
            chan, self._channel = self._channel, None
        if chan is not None:
            chan.shut("closed by the client")

    def __enter__(self) -> WSClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<WSClient {self.base_url}>"

    def _fields(self, method, target, data, headers) -> tuple[dict, bytes]:
        merged = self.headers.copy()
        if headers:
            merged.update(headers)
        body = b""
        if data is not None:
            body, content_type = _content.encode(data, merged.get("Content-Type"))
            if not isinstance(body, bytes):
                body = b"".join(body)
            merged.setdefault("Content-Type", content_type)
        path, _, query = target.partition("?")
        fields = {"method": method, "path": path, "headers": [list(p) for p in merged.items()]}
        if query:
            fields["query"] = query
        return fields, body

    def _connected(self, timeout: float | None) -> _Channel:
        """Return the open channel, opening one (after the backoff, if one runs)."""
        with self._lock:
            if self._channel is not None and self._channel.error is None:
                return self._channel
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                if timeout is not None and wait > timeout:
                    raise _unsent(f"cannot connect to {self.base_url}: the last attempt failed; "
                                  f"the next is in {wait:.2f} s")  # fmt: skip
                time.sleep(wait)
            try:
                self._channel = _Channel.open(self._http, timeout)
            except ConnectError:
                self._delay = min(_MAX_DELAY, max(_FIRST_DELAY, self._delay * 2))
                self._retry_at = time.monotonic() + self._delay
                raise
            self._delay = 0.0
            return self._channel


def request_messages(id: int, fields: dict, body: bytes) -> list[bytes]:
    """Return the messages of one request: a ``REQ``, and ``DATA`` for a body over one piece.

    Every message stays within 65 536 bytes, the most a WebSocket library may fragment and
    a node still take (PROTOCOL.md 16.1): browsers fragment large messages.
    """
    if len(body) <= BODY_PIECE:
        return [channel.encode(REQ, id, fields, body, END)]
    messages = [channel.encode(REQ, id, fields, body[:BODY_PIECE])]
    for start in range(BODY_PIECE, len(body), BODY_PIECE):
        end = END if start + BODY_PIECE >= len(body) else 0
        messages.append(channel.encode(DATA, id, None, body[start : start + BODY_PIECE], end))
    return messages


class StreamedResponse:
    """An answer whose head has come: ``status``, ``content_type``, ``headers``; iterate for
    the body's pieces (bytes) as they arrive, or ``read()`` them all."""

    def __init__(self, chan, id, answers, head, method, timeout, where) -> None:
        fields = head.fields
        status, pairs = fields.get("status"), fields.get("headers", [])
        if type(status) is not int or not 100 <= status <= 999 or type(pairs) is not list:
            chan.forget(id)
            raise ResponseError(f"{where}: a HEAD without a status and headers: {fields!r:.200}")
        try:
            self.headers = Headers((str(name), str(value)) for name, value in pairs)
        except (TypeError, ValueError):
            chan.forget(id)
            raise ResponseError(f"{where}: malformed headers in a HEAD") from None
        self.status = status
        self.content_type = self.headers.get("Content-Type")
        self.method = method
        self._chan, self._id, self._answers = chan, id, answers
        self._first, self._ended = head.body, head.end
        self._timeout, self._where = timeout, where
        if self._ended:
            chan.forget(id)

    def __iter__(self) -> Iterator[bytes]:
        if self._first:
            first, self._first = self._first, b""
            yield first
        while not self._ended:
            try:
                message = self._chan.next(self._id, self._answers, self._timeout, self._where)
            except BaseException:
                self.close()
                raise
            if message.kind != DATA:
                self.close()
                raise ResponseError(f"{self._where}: message kind {message.kind} in a body")
            if message.end:
                self._ended = True
                self._chan.forget(self._id)
            if message.flags & ABORT:
                why = message.fields.get("error", "")
                raise StreamBroken(f"{self._where}: the answer broke off: {why!s:.300}")
            if message.body:
                yield message.body

    def read(self) -> bytes:
        """Return the rest of the body."""
        return b"".join(self)

    def close(self) -> None:
        """Give up on the rest of the body (the node is told to stop sending it)."""
        if not self._ended:
            self._ended = True
            self._chan.cancel(self._id)

    def __enter__(self) -> StreamedResponse:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StreamedResponse {self.status} {self.content_type}>"


class _Channel:
    """One WebSocket to a node's ``/_xio/client-ws``, its reader thread and its requests."""

    def __init__(self, sock, leftover: bytes, where: str) -> None:
        self.sock = sock
        self.where = where
        self.error: ConnectError | None = None
        self._reader = websocket.FrameReader(client=True, max_message=MAX_MESSAGE,
                                             admit_above=MAX_MESSAGE)  # fmt: skip
        self._pending: dict[int, queue.Queue] = {}
        self._ids = itertools.count(1)
        self._write = threading.Lock()
        threading.Thread(target=self._run, args=(leftover,), daemon=True,
                         name=f"xio-ws {where}").start()  # fmt: skip

    @classmethod
    def open(cls, http: Client, timeout: float | None) -> _Channel:
        """Connect and upgrade (``http``'s address, TLS and timeout); raise ``ConnectError``."""
        sock = http._connect(CLIENT_WS_PATH, timeout)  # noqa: SLF001 - its unsent errors too
        where = http._origin + CLIENT_WS_PATH  # noqa: SLF001
        key = b64encode(token_bytes(16))
        try:
            sock.sendall(websocket.upgrade_request(CLIENT_WS_PATH, http._host, key, {}))  # noqa: SLF001
            head, leftover = _read_head(sock)
            websocket.check_upgrade_answer(head, key)
        except (OSError, ConnectError) as exc:
            sock.close()
            raise _unsent(f"cannot open {where}: {exc}") from exc
        sock.settimeout(None)  # the reader waits as long as the connection lives
        return cls(sock, leftover, where)

    def open_request(self) -> tuple[int, queue.Queue]:
        id = next(self._ids)
        answers: queue.Queue = queue.Queue()
        self._pending[id] = answers
        return id, answers

    def send(self, message: bytes) -> None:
        if self.error is not None:
            raise self.error
        data = b"".join(websocket.frame_parts(websocket.BINARY, message, _mask_keys.take()))
        try:
            with self._write:
                self.sock.sendall(data)
        except OSError as exc:
            self._fail(f"lost while sending: {exc}")
            raise ConnectError(f"{self.where}: connection lost while sending: {exc}") from exc

    def next(self, id: int, answers: queue.Queue, timeout: float | None, where: str):
        """Return the next message for request ``id``; raise on timeout or a lost connection."""
        try:
            message = answers.get(timeout=timeout)
        except queue.Empty:
            self.cancel(id)
            raise ReadTimeout(f"{where}: no answer within {timeout} s") from None
        if isinstance(message, Exception):
            raise message
        return message

    def cancel(self, id: int) -> None:
        if self._pending.pop(id, None) is not None and self.error is None:
            try:
                self.send(channel.encode(CANCEL, id))
            except ConnectError:
                pass

    def forget(self, id: int) -> None:
        self._pending.pop(id, None)

    def shut(self, reason: str) -> None:
        if self.error is None:
            try:
                with self._write:
                    self.sock.sendall(websocket.frame(websocket.CLOSE,
                                                      websocket.close_payload(1000, ""),
                                                      _mask_keys.take()))  # fmt: skip
            except OSError:
                pass
        self._fail(reason)

    def _run(self, leftover: bytes) -> None:
        data = leftover
        try:
            while True:
                if data:
                    self._events(self._reader.receive(data))
                if self.error is not None:
                    return
                data = self.sock.recv(64 * 1024)
                if not data:
                    return self._fail("the node closed the connection")
        except OSError as exc:
            self._fail(f"connection lost: {exc}")
        except Exception as exc:  # a bug of ours must not leave requests waiting forever
            self._fail(f"reader failed: {type(exc).__name__}: {exc}")

    def _events(self, events) -> None:
        for event in events:
            kind = type(event)
            if kind is websocket.Message:
                self._deliver(event.data)
            elif kind is websocket.Ping:
                with self._write:
                    self.sock.sendall(websocket.frame(websocket.PONG, event.payload,
                                                      _mask_keys.take()))  # fmt: skip
            elif kind is websocket.Close:
                self._fail(f"the node closed the connection ({event.code} {event.reason})")
            elif kind is websocket.Violation:
                self._fail(f"the node broke the WebSocket protocol: {event.detail}")

    def _deliver(self, data: bytes) -> None:
        try:
            message = channel.decode(data)
        except ChannelError as exc:
            return self._fail(f"not a channel message: {exc}")
        answers = self._pending.get(message.id)
        if answers is not None:  # else: an answer to a request given up on
            answers.put(message)
        return None

    def _fail(self, reason: str) -> None:
        if self.error is not None:
            return
        self.error = ConnectError(f"{self.where}: {reason}")
        pending, self._pending = self._pending, {}
        for answers in pending.values():
            answers.put(ConnectError(f"{self.where}: {reason} before the answer was complete"))
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _read_head(sock) -> tuple[bytes, bytes]:
    """Return the upgrade answer's head and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_LIMIT:
            raise ConnectError(f"the upgrade answer's head is over {_HEAD_LIMIT} bytes")
        piece = sock.recv(4096)
        if not piece:
            raise ConnectError("the node closed the connection during the upgrade")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest
