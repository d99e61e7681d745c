"""Streamed answers across links: what the ingress receives and what the destination sends.

Theory of operation (docs/PROTOCOL.md 4.1). An ingress that asks for a streamed answer puts
``win`` in its ``req``: it grants the destination ``WINDOW`` bytes of body at first. The
destination answers whole, as always, unless the app's body is a stream (a generator, a file)
or larger than a ``res`` carries; then it sends a ``res`` head with ``more``, ``data`` pieces
of at most ``PIECE`` bytes, never more than the credit the ingress granted, and an ``end``.
Relays map ids and pass every frame on: credit up the path, pieces and the end down it, so the
window is end to end and a relay holds at most one window of a stream in its send queue.

* ``Answer`` is what the ingress waits on: the head is set on it as on an ``AsyncResult``,
  then pieces queue on it, at most a window of them, since the peer may not send past its
  credit. ``body`` is the iterator the HTTP writer (or the client channel) takes pieces
  from; a piece is granted back as credit once the writer asks for the next one, that is once
  the client's socket took it, so a slow client slows the producer however far away it is.
  Closing the iterator early (the client went away) cancels the request along the path.
* An altered stream cannot be caught before its end: pieces go to the client as they come,
  and the end's MAC covers the whole body (``e2e.BodyMac``). A bad MAC, an ``end`` with an
  error, a closed link or no piece for the idle timeout raise ``StreamBroken`` in the writer,
  which aborts the client's transfer: a client never receives a complete altered body.
* ``pump`` is the destination's side, run in the request's worker: it cuts the app's body
  into pieces and sends each when there is credit and room in the link's queue.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator

import gevent
from gevent import GreenletExit
from gevent.event import AsyncResult, Event

from ..errors import (
    BadGateway,
    LocalProtocolError,
    PayloadTooLarge,
    QueueFull,
    RemoteProtocolError,
    ServiceUnavailable,
    StreamBroken,
)
from .codec import ResponseFrame

__all__ = [
    "PIECE",
    "WINDOW",
    "Answer",
    "Pieces",
    "StreamBroken",
    "Streamed",
    "Upload",
    "pieces_of",
    "pump",
    "send_body",
]

log = logging.getLogger("xio.forwarding")

#: The credit an ingress grants at first: the most of one stream in flight on the path.
WINDOW = 256 * 1024
#: The most body bytes a destination puts in one ``data`` frame.
PIECE = 64 * 1024
#: Credit goes back in batches of at least this much (a credit frame per piece at most).
_GRANT_BATCH = PIECE


class Streamed:
    """An answer whose body is streamed: the head (a ``res`` frame with ``more``) and the body
    as an iterator of bytes."""

    __slots__ = ("head", "body")

    def __init__(self, head: ResponseFrame, body: Iterator[bytes]) -> None:
        self.head = head
        self.body = body

    @property
    def status(self) -> int:
        return self.head.status


def pieces_of(data: bytes, size: int = PIECE) -> Iterator[bytes]:
    """Yield ``data`` in pieces of ``size`` bytes (a large bytes body, streamed)."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


class Answer(AsyncResult):
    """What an ingress waits on for a request that may be answered by a stream."""

    __slots__ = ("streaming", "credit_wake", "_pieces", "_wake", "_ended", "_mac", "_error")

    def __init__(self) -> None:
        super().__init__()
        self.streaming = False  # set once a head with ``more`` has been taken
        self.credit_wake: Event | None = None  # a streamed body's sender waits on it
        self._pieces: deque[bytes] = deque()
        self._wake = Event()
        self._ended = False
        self._mac: bytes | None = None
        self._error: str | None = None

    # -- from the link's reader: never block -------------------------------------------

    def push(self, piece: bytes) -> None:
        """Take a piece (the session checked it is within the credit we granted)."""
        self._pieces.append(piece)
        self._wake.set()

    def finish(self, mac: bytes | None, error: str | None) -> None:
        """The stream ended: whole (its ``mac``) or broken (``error``)."""
        if not self._ended:
            self._ended, self._mac, self._error = True, mac, error
            self._wake.set()
            if self.credit_wake is not None:  # a body still being sent: nobody takes it now
                self.credit_wake.set()

    # -- from the writer's greenlet ----------------------------------------------------

    def body(
        self, link, request_id: int, idle: float, body_mac, done: Callable[[str], None]
    ) -> Pieces:
        """Return the iterator of the pieces, which grants credit as the writer takes them."""
        return Pieces(self, link, request_id, idle, body_mac, done)


class Pieces:
    """The body of a streamed answer at the ingress, as an iterator of bytes.

    A piece is granted back once the writer asks for the next one (the client took it).
    ``idle``: the longest wait for a piece; ``body_mac``: an ``e2e.BodyMac`` to check the end
    with, or None; ``done(outcome)`` is called once, when the iterator ends or is closed (a
    class, not a generator, so that closing it before the first piece still cancels and gives
    back): ``streamed``, ``stream_broken``, ``stream_idle``, ``bad_e2e_mac`` or
    ``stream_abandoned`` (closed before the end: the client went away).
    """

    __slots__ = ("_answer", "_link", "_request_id", "_idle", "_mac", "_done", "_taken", "_outcome")

    def __init__(self, answer: Answer, link, request_id: int, idle: float, body_mac,
                 done: Callable[[str], None]) -> None:  # fmt: skip
        self._answer = answer
        self._link = link
        self._request_id = request_id
        self._idle = idle
        self._mac = body_mac
        self._done: Callable[[str], None] | None = done
        self._taken = 0
        self._outcome = "streamed"  # what ``done`` is told, unless the stream broke

    def __iter__(self) -> Pieces:
        return self

    def __next__(self) -> bytes:
        answer = self._answer
        if self._done is None:
            raise StopIteration
        if self._taken >= _GRANT_BATCH:  # asked for more: the client took the last piece
            self._link.grant(self._request_id, self._taken)
            self._taken = 0
        try:
            while not answer._pieces:
                if answer._ended:
                    self._check_end()
                    self.close()
                    raise StopIteration
                answer._wake.clear()
                if not answer._wake.wait(self._idle):
                    self._outcome = "stream_idle"
                    raise StreamBroken(f"no piece of the streamed answer for {self._idle:g} s")
        except StreamBroken:
            self.close()
            raise
        piece = answer._pieces.popleft()
        if self._mac is not None:
            self._mac.update(piece)
        self._taken += len(piece)
        return piece

    def _check_end(self) -> None:
        answer = self._answer
        if answer._error is not None:
            self._outcome = "stream_broken"
            raise StreamBroken(f"the streamed answer broke on the way: {answer._error}")
        if self._mac is not None:
            try:
                self._mac.verify(answer._mac)
            except RemoteProtocolError:
                self._outcome = "bad_e2e_mac"
                raise StreamBroken(
                    "bad_e2e_mac: the streamed answer was altered on the way"
                ) from None

    def close(self) -> None:
        """Stop: cancel the request along the path unless it ended, and give back, once."""
        done, self._done = self._done, None
        if done is None:
            return
        answer = self._answer
        if not answer._ended:  # the client went away, or the wait gave up: stop the producer
            answer._ended = True
            self._link.cancel_request(self._request_id)
            if self._outcome == "streamed":
                self._outcome = "stream_abandoned"
        answer._pieces.clear()
        done(self._outcome)


class Upload:
    """A request's streamed body at its destination (docs/PROTOCOL.md 4.2), read once by the
    app: as pieces (``pieces``, held a window at a time) or whole (``read_all``, within
    ``max_body`` and the node's body budget, like a body that came whole).

    Nothing is granted until the app asks for the body: an app that never reads it costs
    nothing, and its answer ends the upload. Then a window is granted, and each piece taken
    is granted back. The link's reader ``push``-es pieces and ``finish``-es the body; a
    broken, altered, or idle body raises a 502 in the app, which it answers with.
    """

    __slots__ = ("_link", "_request_id", "_idle", "body_mac", "_max_body", "_budget", "_pieces",
                 "_wake", "_ended", "_end_mac", "_error", "consumed", "complete", "_held")  # fmt: skip

    def __init__(self, link, request_id: int, idle: float, max_body: int,
                 budget=None) -> None:  # fmt: skip
        self._link = link
        self._request_id = request_id
        self._idle = idle
        self.body_mac = None  # an e2e.BodyMac, set once the request is found authentic
        self._max_body = max_body
        self._budget = budget
        self._pieces: deque[bytes] = deque()
        self._wake = Event()
        self._ended = False
        self._end_mac: bytes | None = None
        self._error: str | None = None
        self.consumed = False
        self.complete = False
        self._held = 0

    # -- from the link's reader: never block -------------------------------------------

    def push(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._wake.set()

    def finish(self, mac: bytes | None, error: str | None) -> None:
        if not self._ended:
            self._ended, self._end_mac, self._error = True, mac, error
            self._wake.set()

    # -- from the app ------------------------------------------------------------------

    def pieces(self) -> Iterator[bytes]:
        if self.consumed:
            raise LocalProtocolError("the streamed body was read already")
        self.consumed = True
        link, request_id = self._link, self._request_id
        link.grant_body(request_id, WINDOW)
        taken = 0
        while True:
            while not self._pieces:
                if self._ended:
                    self._check_end()
                    self.complete = True
                    return
                self._wake.clear()
                if not self._wake.wait(self._idle):
                    raise BadGateway(f"no piece of the streamed body for {self._idle:g} s")
            piece = self._pieces.popleft()
            if self.body_mac is not None:
                self.body_mac.update(piece)
            yield piece
            taken += len(piece)  # the app took it: the asker may send as much again
            if taken >= _GRANT_BATCH:
                link.grant_body(request_id, taken)
                taken = 0

    def _check_end(self) -> None:
        if self._error is not None:
            raise BadGateway(f"the streamed body broke on the way: {self._error}")
        if self.body_mac is not None:
            try:
                self.body_mac.verify(self._end_mac)
            except RemoteProtocolError:
                raise BadGateway("bad_e2e_mac: the streamed body was altered on the way") from None

    def read_all(self) -> bytes:
        body = bytearray()
        budget = self._budget
        for piece in self.pieces():
            if len(body) + len(piece) > self._max_body:
                raise PayloadTooLarge(f"body is over the limit of {self._max_body} bytes")
            if budget is not None:
                if not budget.take(len(piece)):
                    raise ServiceUnavailable("the node's budget for request bodies is spent",
                                             headers={"Retry-After": "1"})  # fmt: skip
                self._held += len(piece)
            body += piece
        return bytes(body)

    def close(self) -> None:
        """Give back what ``read_all`` took of the budget."""
        if self._held:
            self._budget.give(self._held)
            self._held = 0


def send_body(link, request_id: int, body: Iterator[bytes], body_mac, answered: Answer,
              wake: Event, idle: float, write_timeout: float) -> None:  # fmt: skip
    """Send ``body`` as the streamed body of our request ``request_id``, then its ``end``.

    Run by the ingress in a greenlet of its own, beside the one that waits for the answer: it
    sends only within the credit the destination grants (``wake`` is set when some arrives)
    and stops once the request is answered whole (``answered`` is set: early, by a refusal,
    the deadline or a closed link) or is no longer in flight. After a streamed answer's head
    it goes on (an app may answer as it reads), each wait for credit then bounded by
    ``idle``. A body that cannot be read (the client's mistake, or it went away) is ended
    with an error and the error raised; a kill (the answer ended) ends it with an error too.
    """
    session = link.session
    try:
        for chunk in body:
            offset, size = 0, len(chunk)
            while offset < size:
                credit = session.body_credit_of(request_id)
                if credit is None or (answered.ready() and not answered.streaming):
                    return
                if credit == 0:
                    wake.clear()
                    if not answered.ready():
                        gevent.wait((wake, answered), count=1)
                    elif not wake.wait(idle):
                        link.end_body(request_id, error=f"no credit for {idle:g} s")
                        return
                    continue
                piece = chunk[offset : offset + min(PIECE, credit)]
                try:
                    if not link.send_body_data(request_id, bytes(piece)):
                        return
                except QueueFull:
                    link.wait_room(write_timeout)
                    continue
                if body_mac is not None:
                    body_mac.update(piece)
                offset += len(piece)
    except GreenletExit:
        link.end_body(request_id, error="the answer ended before the body")
        raise
    except Exception as exc:
        link.end_body(request_id, error=f"the client's body could not be read: {exc}")
        raise
    link.end_body(request_id, body_mac.digest() if body_mac is not None else None)


def pump(link, request_id: int, body: Iterator[bytes], body_mac, wake: Event,
         write_timeout: float) -> None:  # fmt: skip
    """Send ``body`` as the streamed answer to ``request_id`` on ``link``, then its ``end``.

    Run in the request's worker: it waits for credit (``wake`` is set when some arrives) and
    for room in the link's queue. A cancel kills the worker (``GreenletExit``); a request no
    longer waited for (closed link, expiry) ends it quietly. The body is always closed.
    """
    session = link.session
    try:
        for chunk in body:
            offset, size = 0, len(chunk)
            while offset < size:
                wake.clear()
                credit = session.credit_of(request_id)
                if credit is None:
                    return  # nobody waits any more
                if credit == 0:
                    wake.wait()  # until credit, a cancel (kill) or the session's expiry
                    continue
                piece = chunk[offset : offset + min(PIECE, credit)]
                try:
                    if not link.send_data(request_id, bytes(piece)):
                        return
                except QueueFull:
                    link.wait_room(write_timeout)  # the link closes if it cannot drain
                    continue
                if body_mac is not None:
                    body_mac.update(piece)
                offset += len(piece)
        link.end_stream(request_id, body_mac.digest() if body_mac is not None else None)
    except GreenletExit:
        raise
    except Exception:
        log.exception("the streamed answer to request %s failed", request_id)
        link.end_stream(request_id, error="the app failed while streaming its answer")
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
