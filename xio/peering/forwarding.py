"""Forwarding: requests travel hop by hop over links, many at once, each with a deadline.

Theory of operation. The node that receives a request over HTTP (the ingress) picks the node
that will answer it (``dst``) and calls ``Forwarder.route``, which waits, in that HTTP
greenlet, for the answer or the deadline. Every other node on the way is a relay or the
destination, and acts on events from its links, never blocking the link's reader:

* a relay opens a request of its own on the link towards ``dst``, with one hop less, the time
  left, and its id on the ``X-Xio-Via`` trail, and queues it; the ``res`` that comes back is
  queued on the asking link under the asker's id. A ``cancel``, a deadline or a closed link on
  either side is passed on to the other (``Relay`` ties the two requests together);
* the destination runs the app in a worker greenlet (an app may block) and queues its answer.

A node that cannot go on answers in place of ``dst``, never silently:

    an unreadable X-Xio-Via trail                       400 (judged by the link session)
    a trail that holds this node already (a loop)       508 (judged by the link session)
    no route to dst, or no hops left                    502
    the next hop's link closed while waiting            502
    the deadline passed                                 504 (and a ``cancel`` goes downstream)
    too many requests in flight (link, or node-wide)    503
    the node's body budget is spent                     503
    the next hop's send queue is full                   503

Every request held here counts against the node's ``in_flight`` budget until it is answered,
cancelled, expired or lost; a request's body counts against the ``body_bytes`` budget while it
waits here (queued on the next link it is bounded by that link's queue instead).

Each request served here runs in a greenlet of its own, but the greenlets are kept and reused
(``Workers``): on CPython 3.11 a new greenlet gets a fresh interpreter data stack, mapped on its
first call and unmapped at its end, and that cost about 50 us per request on this machine, a
third of a forwarded request's whole cost (bench/RESULTS.md, issue 3).

End to end (docs/PROTOCOL.md 11.1, ``xio.peering.integrity``): the ingress seals each request
with ``src``, ``n`` and ``mac`` and checks the MAC of its answer; a relay passes the three
fields and the answer's ``mac`` on untouched; the destination checks the request in the
worker, before the app (a MAC over a large body is not hashed on the link's reader), and
seals every answer it makes. Those checks use the wall clock (nonces carry their issue time).

Streamed answers (docs/PROTOCOL.md 4.1, ``xio.peering.streams``): the ingress asks for one
(``win``) on every link whose peer announced the ``stream`` capability; the destination
streams only a body that is a stream or larger than a ``res`` carries. A relay passes the head
up, the pieces and the end up, the credit down, holding the stream in flight until its end; a
piece it cannot queue (the asking link is congested) breaks that stream alone (``end`` with an
error upstream, ``cancel`` downstream). A link lost mid-stream ends the stream with an error;
the ingress then aborts its client's transfer. The ingress takes a window of the body budget
for each stream it receives, until the stream ends.

Traces (docs/PROTOCOL.md 11.2, ``xio.peering.trace``): a ``req`` with ``trace`` is timed at
every node, on its monotonic clock: the destination puts its entry on its answer, and each
relay and the ingress append theirs to the checked entries of the ``res`` that came back. An
untraced request pays one falsy test per node for this.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import gevent
from gevent import GreenletExit, get_hub, getcurrent
from gevent.event import AsyncResult, Event

from ..budget import Budget
from ..errors import ConnectionClosed, HTTPError, LocalProtocolError, QueueFull
from .codec import RequestFrame, ResponseFrame
from .e2e import UPLOAD_BODY_DOMAIN, BodyMac
from .integrity import EndToEnd, Sealed
from .links import Link
from .session import Closed, error_frame
from .streams import WINDOW, Answer, Streamed, Upload, pump, send_body
from .trace import append_entry, read_trace
from .via import VIA, extend_via, via_of, with_via

__all__ = [
    "STREAM_CAP",
    "UPLOAD_CAP",
    "VIA",
    "Forwarder",
    "Workers",
    "error_frame",
    "extend_via",
    "via_of",
    "with_via",
]

log = logging.getLogger("xio.forwarding")

#: Idle workers kept for reuse; more are started when needed, and end when not kept.
DEFAULT_IDLE_WORKERS = 128
#: How long a destination waits for the record of a request's unknown ``src``: a new node's
#: record is flooded behind requests (bulk after normal frames), so its first request to a node
#: two hops away may arrive first. Bounded by the node's in-flight budget, like a slow app.
RECORD_WAIT = 2.0
_RECORD_POLL = 0.05
#: What a request's deadline timer sets its result to.
_TIMED_OUT = object()
#: The capability of a node that speaks streamed answers (docs/PROTOCOL.md 4.1).
STREAM_CAP = "stream"
#: The capability of a node that takes streamed request bodies (docs/PROTOCOL.md 4.2).
UPLOAD_CAP = "upload"
_monotonic = time.monotonic


def _wall_ms() -> int:
    return int(time.time() * 1000)


class _Held:
    """What a request in flight here holds of the node's budgets; given back once."""

    __slots__ = ("body", "done")

    def __init__(self, body: int) -> None:
        self.body = body
        self.done = False


class Task(_Held):
    """A request answered here by the app, in a worker: ``job`` can cancel it."""

    __slots__ = ("job", "started", "wake", "upload")

    def __init__(self, body: int, started: float | None = None) -> None:
        super().__init__(body)
        self.job: Job | None = None
        self.started = started  # when a traced req arrived (monotonic); None: not traced
        self.wake: Event | None = None  # a streamed answer's producer waits on it for credit
        self.upload: Upload | None = None  # the request's streamed body, as it arrives


class Relay(_Held):
    """A request passed on: ``in_id`` on ``in_link`` is ``out_id`` on ``out_link``."""

    __slots__ = (
        "in_link", "in_id", "out_link", "out_id", "trail", "started", "sent", "hops", "streaming",
    )  # fmt: skip

    def __init__(self, in_link: Link, in_id: int, out_link: Link, trail: str, body: int):
        super().__init__(body)
        self.in_link = in_link
        self.in_id = in_id
        self.out_link = out_link
        self.out_id = 0
        self.trail = trail
        self.started: float | None = None  # a traced req: when it arrived (monotonic)
        self.sent = 0.0  # and when it was queued on out_link
        self.hops = 0  # its hops on arrival: the most entries the nodes beyond can add
        self.streaming = False  # its answer's head has passed: pieces and an end follow


class Job:
    """One call being run by a worker, which ``cancel`` can stop."""

    __slots__ = ("worker", "cancelled", "_workers", "_ended")

    def __init__(self, workers: Workers) -> None:
        self.worker = None  # the greenlet running the call, None once it has returned
        self.cancelled = False
        self._workers = workers
        self._ended: Event | None = None  # made only for a blocking kill: most jobs need none

    def kill(self, block: bool = False) -> None:
        """Stop the call with ``GreenletExit``, as ``Greenlet.kill`` does.

        With ``block``, return only once the call has ended (at once from the call itself,
        which cannot wait for its own end); without it, return at once and stop it soon.
        """
        self._workers.cancel(self)
        if block and self.worker is not None and self.worker is not getcurrent():
            if self._ended is None:
                self._ended = Event()
            self._ended.wait()


class Workers:
    """Greenlets that run one call each at a time and are kept, up to ``max_idle``, for reuse."""

    def __init__(self, max_idle: int = DEFAULT_IDLE_WORKERS) -> None:
        self.max_idle = max_idle
        self.started = 0  # greenlets made so far (a test and a curious operator read it)
        self._idle: list = []

    def run(self, function: Callable, *args) -> Job:
        """Call ``function(*args)`` in a worker greenlet, soon; return its job."""
        job = Job(self)
        if self._idle:
            worker = self._idle.pop()
            job.worker = worker
            # The hub hands the worker its job, as it starts a spawned greenlet.
            worker.parent.loop.run_callback(worker.switch, (job, function, args))
        else:
            self.started += 1
            # The first call goes in a list the worker empties: a greenlet keeps the arguments
            # it was spawned with for its whole life, and they must not outlive the call.
            job.worker = gevent.spawn(self._work, [(job, function, args)])
        return job

    def cancel(self, job: Job) -> None:
        """Raise ``GreenletExit`` in ``job``'s call, unless it has returned by then."""
        if job.worker is not None and not job.cancelled:
            job.cancelled = True
            job.worker.parent.loop.run_callback(self._throw, job)

    @staticmethod
    def _throw(job: Job) -> None:
        # Run by the hub after the job's own start: the worker is suspended inside this
        # job's call, or has finished it (worker None) and may be running another by now,
        # which the check keeps from being hit.
        worker = job.worker
        if worker is not None and worker:
            worker.throw(GreenletExit)

    def _work(self, first: list) -> None:
        me = getcurrent()
        hub = me.parent
        job, function, args = first.pop()
        while True:
            try:
                if not job.cancelled:  # cancelled before this worker took it: never run it
                    function(*args)
            except GreenletExit:
                pass  # cancelled
            except Exception:
                log.exception("a worker's call failed")
            finally:
                job.worker = None
                if job._ended is not None:
                    job._ended.set()
            # Drop what the call held before parking: an idle worker must not keep its last
            # request (and its body) alive.
            job = function = args = None
            if len(self._idle) >= self.max_idle:
                return
            self._idle.append(me)
            try:
                job, function, args = hub.switch()  # parked until run() hands it a job
            except GreenletExit:  # not from cancel(): the greenlet is being killed or collected
                if me in self._idle:
                    self._idle.remove(me)
                return


class Forwarder:
    """Carry requests over links and answer the ones that arrive on them."""

    def __init__(
        self,
        own_id: str,
        deliver: Callable[[RequestFrame, float], ResponseFrame],
        next_link: Callable[[str], Link | None],
        *,
        e2e: EndToEnd,
        in_flight: Budget | None = None,
        body_bytes: Budget | None = None,
        idle_workers: int = DEFAULT_IDLE_WORKERS,
        max_body: int = 16 * 1024 * 1024,
    ) -> None:
        self.own_id = own_id
        self.max_body = max_body  # a streamed body read whole by an app: at most this
        self._deliver = deliver
        self._next_link = next_link
        self.in_flight = in_flight or Budget("in_flight", 4096)
        self.body_bytes = body_bytes or Budget("body_bytes", 256 * 1024 * 1024)
        self.workers = Workers(idle_workers)
        self.e2e = e2e
        self.counts: Counter[str] = e2e.counts  # one counter: the end-to-end refusals too

    # -- the ingress: an HTTP greenlet waits for the answer --------------------------------

    def can_stream_body(self, dst: str) -> bool:
        """Tell whether a request to ``dst`` may have its body streamed (the next hop takes
        streamed bodies; the nodes beyond it answer 502 if they do not)."""
        link = self._next_link(dst)
        return link is not None and UPLOAD_CAP in link.session.peer_caps

    def route(self, request: RequestFrame, deadline: float, body=None) -> ResponseFrame:
        """Carry ``request`` (its id is ignored) one hop towards ``request.dst`` and wait.

        ``body``: a body still to be read (``pieces()``), streamed after the ``req``
        (docs/PROTOCOL.md 4.2) when the next hop takes it; ``request.body`` is then empty.
        Errors met here are answered here, with this node last on the ``X-Xio-Via`` trail.
        A traced request's answer (``request.trace``) gets this node's trace entry last.
        """
        started = _monotonic() if request.trace else 0.0
        headers = with_via(request.headers, self.own_id)
        trail = headers[-1][1]
        if request.hops <= 0:
            self.counts["hop_limit"] += 1
            return error_frame(502, f"hop limit reached before node {request.dst}", via=trail)
        link = self._next_link(request.dst)
        if link is None:
            self.counts["no_route"] += 1
            return error_frame(502, f"no route to node {request.dst}", via=trail)
        sealed = self.e2e.seal_request(request, _wall_ms())  # counted when None
        if sealed is None:
            description = f"no record of node {request.dst}'s key here: cannot authenticate"
            return error_frame(502, description, via=trail)
        remaining = deadline - _monotonic()
        if remaining <= 0:
            self.counts["deadline"] += 1
            return error_frame(504, "deadline passed before the request left this node", via=trail)
        window = WINDOW if STREAM_CAP in link.session.peer_caps else 0
        upload = body is not None
        if upload and UPLOAD_CAP not in link.session.peer_caps:
            return error_frame(502, f"node {link.peer_name} takes no streamed body", via=trail)
        result = Answer() if window or upload else AsyncResult()
        request_id = link.session.open_request(result, deadline, window, upload)
        try:
            frame = RequestFrame(
                request_id, request.dst, request.app, request.method, request.path, request.query,
                headers, request.body, hops=request.hops - 1, ttl_ms=int(remaining * 1000),
                src=self.own_id, nonce=sealed.nonce, mac=sealed.mac, trace=request.trace,
                win=window or None, more=True if upload else None,
            )  # fmt: skip
        except LocalProtocolError:  # the caller's request breaks a frame rule: the caller says
            link.session.forget_request(request_id)
            raise
        # The deadline runs from now, whatever the link does: a bare loop timer that sets the
        # result (gevent.Timeout would build an exception per request).
        timer = get_hub().loop.timer(remaining)
        timer.start(result.set, _TIMED_OUT)
        try:
            link.send(frame)
        except QueueFull:
            timer.close()
            link.session.forget_request(request_id)
            self.counts["queue_full"] += 1
            return error_frame(503, f"link to {link.peer_name} is congested", via=trail)
        except ConnectionClosed:
            timer.close()
            self.counts["next_hop_lost"] += 1
            return error_frame(502, f"link to {link.peer_name} closed, request lost", via=trail)
        self.counts["forwarded"] += 1
        # A streamed body goes from a greenlet of its own, so that its answer (which may come
        # before the body's end: a refusal, or an app that answers as it reads) is taken here.
        sender = self._send_body(link, request_id, result, body, sealed, remaining) if upload \
            else None  # fmt: skip
        try:
            if not request.trace:
                answer = self._await_answer(link, request_id, result, timer, request.dst, trail,
                                            sealed)  # fmt: skip
            else:
                sent = _monotonic()
                answer = self._await_answer(link, request_id, result, timer, request.dst, trail,
                                            sealed)  # fmt: skip
                answer = self._traced(answer, request.hops, started, sent, _monotonic())
            if answer.more:
                answer = self._stream_in(link, request_id, result, answer, sealed, remaining,
                                         trail, sender)  # fmt: skip
                sender = None  # the body goes on beside the answer's; the answer's end stops it
            return answer
        finally:
            if sender is not None:  # answered whole: the rest of the body is not wanted
                sender.kill(block=True)

    def _send_body(self, link: Link, request_id: int, result: Answer, body, sealed: Sealed,
                   idle: float):  # fmt: skip
        """Start streaming the request's body to the destination, within its credit, until
        it ends or the request is answered whole; return the sending greenlet.

        A body the client fails to send (malformed, too slow, gone) is ended with an error
        there, and the request answered here with the client's error (400, 408).
        """
        result.credit_wake = Event()
        self.counts["bodies_out"] += 1
        body_mac = BodyMac(sealed.key, sealed.nonce, UPLOAD_BODY_DOMAIN)

        def send() -> None:
            try:
                send_body(link, request_id, body.pieces(), body_mac, result, result.credit_wake,
                          idle, link.session.limits.write_timeout)  # fmt: skip
            except HTTPError as exc:  # the client's mistake: it hears of it, the app does not
                link.cancel_request(request_id)
                if not result.ready():
                    result.set(error_frame(exc.status, str(exc), via=self.own_id))
            except Exception:
                log.exception("sending the body of request %s failed", request_id)
                link.cancel_request(request_id)
                if not result.ready():
                    result.set(
                        error_frame(500, "the node failed to send the body", via=self.own_id)
                    )

        return gevent.spawn(send)

    def _stream_in(
        self, link: Link, request_id: int, result: Answer, head: ResponseFrame, sealed: Sealed,
        idle: float, trail: str, sender=None,
    ) -> Streamed | ResponseFrame:  # fmt: skip
        """Return a checked head with the iterator of its body, which the caller must close.

        ``sender``: the greenlet still sending the request's body, stopped when the answer
        ends (it may not outlive the exchange: the client's connection is read by it).
        """
        if not self.body_bytes.take(WINDOW):
            link.cancel_request(request_id)
            self.counts["body_budget"] += 1
            if sender is not None:
                sender.kill(block=True)
            return error_frame(503, "the node's budget for bodies is spent", via=trail)
        self.counts["streams_in"] += 1

        def done(outcome: str) -> None:
            if sender is not None:
                sender.kill(block=True)
            self.body_bytes.give(WINDOW)
            self.counts[outcome] += 1

        body = result.body(link, request_id, idle, BodyMac(sealed.key, sealed.nonce), done)
        return Streamed(head, body)

    def _traced(
        self, answer: ResponseFrame, hops: int, started: float, sent: float, back: float
    ) -> ResponseFrame:
        """Return ``answer`` with this node's trace entry after the checked ones beyond it."""
        beyond = () if answer.trace is None else read_trace(answer.trace, hops)
        if beyond is None:  # a peer's garbage: dropped, the answer itself goes on
            self.counts["bad_trace"] += 1
            beyond = ()
        now = _monotonic()
        entries = append_entry(beyond, self.own_id, (sent - started) + (now - back), now - started)
        return answer.with_trace(entries)

    def _await_answer(
        self, link: Link, request_id: int, result: AsyncResult, timer, dst: str, trail: str,
        sealed: Sealed,
    ) -> ResponseFrame:  # fmt: skip
        """Wait for the answer to a request sent on ``link``, or for its deadline."""
        try:
            answer = result.get()
        except GreenletExit:
            link.cancel_request(request_id)  # our own caller gave up: tell the next hop
            raise
        finally:
            timer.close()
        if answer is _TIMED_OUT:
            self.counts["deadline"] += 1
            link.cancel_request(request_id)
            return error_frame(504, f"no answer from node {dst} before the deadline", via=trail)
        if answer is None:  # set by link_closed
            self.counts["next_hop_lost"] += 1
            return error_frame(502, f"link to {link.peer_name} closed, request lost", via=trail)
        if answer.request_id != request_id:  # our session's own 502: a res over the body budget
            return answer
        opened = self.e2e.open_response(sealed, answer)
        if answer.more and opened is not answer:  # a head refused: its stream is not wanted
            link.cancel_request(request_id)
        return opened

    # -- events from links: never block ----------------------------------------------------

    def on_request(self, link: Link, frame: RequestFrame, deadline: float) -> None:
        """Serve a ``req`` from ``link`` here, or pass it on towards its ``dst``."""
        request_id = frame.request_id
        started = _monotonic() if frame.trace else None  # the one check an untraced req pays
        if not self.in_flight.take():
            self._refuse(link, frame, "in_flight_budget", "too many requests in flight here")
            return
        size = len(frame.body)
        if frame.more and frame.dst == self.own_id:  # a streamed body: a window of it here
            size = WINDOW
        if size and not self.body_bytes.take(size):
            self.in_flight.give()
            self._refuse(link, frame, "body_budget", "the node's budget for bodies is spent")
            return
        if frame.dst == self.own_id:
            task = Task(size, started)
            if frame.more:  # its pieces queue here, within the credit the app's reading grants
                self.counts["bodies_in"] += 1
                task.upload = Upload(link, request_id, max(deadline - _monotonic(), 0.001),
                                     self.max_body, self.body_bytes)  # fmt: skip
            link.session.attach(request_id, task)
            self.counts["served"] += 1
            task.job = self.workers.run(self._serve, link, frame, deadline, task)
        else:
            self._relay(link, frame, deadline, size, started)

    def _refuse(self, link: Link, frame: RequestFrame, reason: str, description: str) -> None:
        self.counts[reason] += 1
        via = extend_via(via_of(frame.headers), self.own_id)
        link.respond(frame.request_id, error_frame(503, description, frame.request_id, via))

    def _serve(self, link: Link, frame: RequestFrame, deadline: float, task: Task) -> None:
        try:
            key, answer = self._answer_here(link, frame, deadline, task.upload)
            body = None
            if type(answer) is Streamed:
                answer, body = answer.head, answer.body
            if key is not None:  # every answer of ours is signed, errors too
                answer = self.e2e.seal_response(key, frame, answer)
            elif answer.request_id != frame.request_id:  # an error frame made without the id
                answer = answer.under(frame.request_id)
            if task.started is not None:  # the destination's entry: all its time is its own
                spent = _monotonic() - task.started
                answer = answer.with_trace(append_entry((), self.own_id, spent, spent))
            if body is None:
                link.respond(frame.request_id, answer)
            else:
                self._stream_out(link, frame, task, key, answer, body)
        finally:
            if task.upload is not None:
                task.upload.close()
            self._finish(task)

    def _stream_out(
        self, link: Link, frame: RequestFrame, task: Task, key: bytes | None,
        head: ResponseFrame, body,
    ) -> None:  # fmt: skip
        """Send a signed head, then the body as it is made, within the credit granted."""
        task.wake = Event()
        if not link.respond(frame.request_id, head):
            close = getattr(body, "close", None)
            if close is not None:
                close()
            return
        self.counts["streams_out"] += 1
        body_mac = BodyMac(key, frame.nonce) if key is not None else None
        pump(link, frame.request_id, body, body_mac, task.wake,
             link.session.limits.write_timeout)  # fmt: skip

    def _answer_here(
        self, link: Link, frame: RequestFrame, deadline: float, upload: Upload | None = None
    ) -> tuple[bytes | None, ResponseFrame | Streamed]:
        """Return the answer to a req for this node, checked end to end, and the key to sign
        it with (None: the request is not authentic, the refusal goes unsigned)."""
        request_id = frame.request_id
        via = extend_via(via_of(frame.headers), self.own_id)
        key = None
        try:
            if frame.src is not None and self.e2e.key_of(frame.src) is None:
                self._await_record(frame.src, deadline)
            key, answer = self.e2e.open_request(frame, _wall_ms(), via)  # counted if refused
            if answer is None:  # authentic and fresh: the app may run
                if upload is None:
                    answer = self._deliver(frame, deadline)
                else:  # authentic: its body is checked with the same key, in the end
                    upload.body_mac = BodyMac(key, frame.nonce, UPLOAD_BODY_DOMAIN)
                    answer = self._deliver(frame, deadline, upload)
        except GreenletExit:
            raise
        except Exception:
            log.exception("request %s from %s failed", request_id, link.peer_name)
            answer = error_frame(500, "the node failed to answer", request_id, via)
        return key, answer

    def _await_record(self, src: str, deadline: float) -> None:
        """Wait a little for the record of ``src``, which may trail its request."""
        give_up = min(deadline, _monotonic() + RECORD_WAIT)
        while _monotonic() < give_up and self.e2e.key_of(src) is None:
            gevent.sleep(_RECORD_POLL)

    def _relay(
        self, link: Link, frame: RequestFrame, deadline: float, size: int,
        started: float | None = None,
    ) -> None:  # fmt: skip
        request_id = frame.request_id
        headers = with_via(frame.headers, self.own_id)
        trail = headers[-1][1]
        out = self._next_link(frame.dst)
        if out is None or not out.established:
            self.counts["no_route"] += 1
            self._answer(link, request_id, size, 502, f"no route to node {frame.dst}", trail)
            return
        remaining = deadline - _monotonic()
        if remaining <= 0:
            self.counts["deadline"] += 1
            self._answer(link, request_id, size, 504, "deadline passed before relaying", trail)
            return
        if frame.more and UPLOAD_CAP not in out.session.peer_caps:
            self.counts["no_upload"] += 1
            description = f"node {out.peer_name} on the way takes no streamed body"
            self._answer(link, request_id, size, 502, description, trail)
            return
        relay = Relay(link, request_id, out, trail, size)
        window = frame.win if frame.win is not None and STREAM_CAP in out.session.peer_caps else 0
        relay.out_id = out.session.open_request(relay, deadline, window, frame.more is True)
        try:
            forward = RequestFrame(
                relay.out_id, frame.dst, frame.app, frame.method, frame.path, frame.query,
                headers, frame.body, hops=frame.hops - 1, ttl_ms=int(remaining * 1000),
                src=frame.src, nonce=frame.nonce, mac=frame.mac,  # end to end: never ours
                trace=frame.trace,
                # The window is end to end too: credit passes through, so it stays the same.
                win=frame.win if STREAM_CAP in out.session.peer_caps else None,
                more=frame.more,
            )  # fmt: skip
        except LocalProtocolError as exc:  # our id made the headers too large: refuse it alone
            out.session.forget_request(relay.out_id)
            self.counts["too_large"] += 1
            self._answer(link, request_id, size, 502, f"cannot relay the request: {exc}", trail)
            return
        try:
            out.send(forward)
        except (QueueFull, ConnectionClosed):
            out.session.forget_request(relay.out_id)
            self.counts["queue_full"] += 1
            description = f"link to {out.peer_name} is congested"
            self._answer(link, request_id, size, 503, description, trail)
            return
        if started is not None:
            relay.started, relay.sent, relay.hops = started, _monotonic(), frame.hops
        link.session.attach(request_id, relay)
        self.counts["relayed"] += 1
        # The body now waits in the next link's queue, which bounds it; it is no longer ours.
        self.body_bytes.give(size)
        relay.body = 0

    def _answer(
        self, link: Link, request_id: int, size: int, status: int, description: str, via: str
    ) -> None:
        """Answer a request we hold nothing for yet, and give back what it took."""
        link.respond(request_id, error_frame(status, description, request_id, via))
        self.in_flight.give()
        if size:
            self.body_bytes.give(size)

    def on_response(self, link: Link, frame: ResponseFrame, token: object) -> None:
        """Hand a ``res`` to the request waiting for it: an ingress, or a relay's asker."""
        if type(token) is Relay:
            relay = token
            if frame.more:
                answer = frame.under(relay.in_id)
            else:
                answer = ResponseFrame(relay.in_id, frame.status, frame.headers, frame.body,
                                       frame.mac)  # fmt: skip
            if relay.started is not None:  # untraced: a trace the peer sent is not passed on
                answer = self._traced(answer.with_trace(frame.trace), relay.hops, relay.started,
                                      relay.sent, _monotonic())  # fmt: skip
            if not frame.more:
                relay.in_link.respond(relay.in_id, answer)
                self._finish(relay)
                return
            relay.streaming = True
            try:
                passed = relay.in_link.respond(relay.in_id, answer)
            except LocalProtocolError:  # the asker never asked for a stream: not ours to send
                passed = False
            if not passed:
                self._drop(relay)
        else:
            if frame.more:
                token.streaming = True
            token.set(frame)

    # -- streamed answers: pieces and the end go towards the ingress, credit away from it --

    def on_data(self, link: Link, request_id: int, body: bytes, token: object) -> None:
        """Pass a piece of a streamed answer on towards its ingress, or hand it to it."""
        if type(token) is not Relay:
            token.push(body)
            return
        relay = token
        try:
            passed = relay.in_link.send_data(relay.in_id, body)
        except (QueueFull, LocalProtocolError):
            self.counts["queue_full"] += 1
            description = f"queue_full: link to {relay.in_link.peer_name} is congested"
            relay.in_link.end_stream(relay.in_id, error=description)
            passed = False
        if not passed:
            self._drop(relay)

    def on_credit(self, link: Link, request_id: int, n: int, token: object) -> None:
        """Pass credit on towards a streamed answer's producer, or wake it."""
        if type(token) is Relay:
            token.out_link.grant(token.out_id, n)
        elif type(token) is Task and token.wake is not None:
            token.wake.set()

    def on_end(self, link: Link, request_id: int, mac, error, token: object) -> None:
        """Pass the end of a streamed answer on, or hand it to its ingress."""
        if type(token) is not Relay:
            token.finish(mac, error)
            return
        token.in_link.end_stream(token.in_id, mac, error)
        self._finish(token)

    # -- streamed request bodies: pieces and the end go towards the destination, credit
    # -- away from it (docs/PROTOCOL.md 4.2)

    def on_body_data(self, link: Link, request_id: int, body: bytes, token: object) -> None:
        """Pass a piece of a request's streamed body on, or hand it to the app's reader."""
        if type(token) is Task:
            if token.upload is not None:
                token.upload.push(body)
            return
        if type(token) is not Relay:
            return
        relay = token
        try:
            relay.out_link.send_body_data(relay.out_id, body)
        except (QueueFull, LocalProtocolError):  # within the credit: the next link is stuck
            self.counts["queue_full"] += 1
            description = f"queue_full: link to {relay.out_link.peer_name} is congested"
            relay.out_link.end_body(relay.out_id, error=description)

    def on_body_credit(self, link: Link, request_id: int, n: int, token: object) -> None:
        """Pass the destination's credit on towards the ingress, or wake its sender."""
        if type(token) is Relay:
            token.in_link.grant_body(token.in_id, n)
        elif type(token) is Answer and token.credit_wake is not None:
            token.credit_wake.set()

    def on_body_end(self, link: Link, request_id: int, mac, error, token: object) -> None:
        """Pass the end of a request's streamed body on, or hand it to the app's reader."""
        if type(token) is Relay:
            token.out_link.end_body(token.out_id, mac, error)
        elif type(token) is Task and token.upload is not None:
            token.upload.finish(mac, error)

    def on_cancel(self, link: Link, request_id: int, token: object) -> None:
        """Stop answering a request the asker no longer wants."""
        self.counts["cancelled"] += 1
        self._drop(token)

    def on_expired(self, link: Link, request_id: int, token: object, incoming: bool) -> None:
        """Forget a request that outlived its deadline (its owner has answered it by now)."""
        if incoming:
            self._drop(token)
        elif type(token) is Relay:
            relay = token
            if relay.streaming:
                relay.in_link.end_stream(relay.in_id, error="the stream went quiet too long")
            else:
                lost = error_frame(504, "no answer before the deadline", relay.in_id, relay.trail)
                relay.in_link.respond(relay.in_id, lost)
            self._finish(relay)
        elif type(token) is Answer and token.streaming:
            token.finish(None, "the stream went quiet too long")
        else:
            token.set(_TIMED_OUT)

    def link_closed(self, link: Link, closed: Closed) -> None:
        """Answer what waited on a closed link, and stop what answered it."""
        for _, token in closed.outgoing:
            if type(token) is Relay:
                relay = token
                self.counts["next_hop_lost"] += 1
                if relay.streaming:
                    description = f"link to {link.peer_name} closed mid-stream"
                    relay.in_link.end_stream(relay.in_id, error=description)
                else:
                    description = f"link to {link.peer_name} closed, request lost"
                    relay.in_link.respond(
                        relay.in_id, error_frame(502, description, relay.in_id, relay.trail)
                    )
                self._finish(relay)
            elif type(token) is Answer and token.streaming:
                self.counts["next_hop_lost"] += 1
                token.finish(None, f"link to {link.peer_name} closed mid-stream")
            else:
                token.set(None)  # the waiting route() call answers 502
        for _, token in closed.incoming:
            self._drop(token)

    def _drop(self, token: object) -> None:
        """Stop a request we no longer owe an answer for."""
        if type(token) is Relay:
            token.out_link.cancel_request(token.out_id)
            self._finish(token)
        elif type(token) is Task:
            if token.job is not None:
                token.job.kill()
            self._finish(token)

    def _finish(self, held: _Held) -> None:
        if held.done:
            return
        held.done = True
        self.in_flight.give()
        if held.body:
            self.body_bytes.give(held.body)
