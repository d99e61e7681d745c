"""Forwarding: requests travel hop by hop over links, many at once, each with a deadline.

Theory of operation. The node that receives a request over HTTP picks the node that
will answer it (``dst``) and calls ``Forwarder.route``. Each hop sends a ``req`` frame
to the next hop towards ``dst`` under a request id of its own on that link, and waits
for the matching ``res``; the frame carries the hops left and the milliseconds left
(relative, since clocks differ), so every node along the way enforces the same
deadline. A node that cannot go on answers in place of ``dst``, never silently:

    no next hop towards dst, or no hops left     502
    the next hop's link closed while waiting     502
    the deadline passed                          504 (and a ``cancel`` goes downstream)
    more than ``max_in_flight`` requests on a link  503

The waiting side keeps its ``AsyncResult`` in ``link.pending``; the answering side
keeps the job answering it in ``link.serving``, so that a ``cancel`` or a closed link can
stop it.

Each request that arrives over a link is answered in a greenlet of its own (an app may
block; the link's reader must not), but the greenlets are kept and reused (``Workers``):
on CPython 3.11 a new greenlet gets a fresh interpreter data stack, mapped on its first
call and unmapped at its end, and that cost about 50 us per request on this machine, a third
of a forwarded request's whole cost (bench/RESULTS.md, issue 3). Like HTTP requests on one
keep-alive connection, requests from links therefore share greenlets one after another.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import gevent
from gevent import GreenletExit, get_hub, getcurrent
from gevent.event import AsyncResult

from ..content import JSON, dump_json
from ..errors import ConnectionClosed, HTTPError
from .codec import Cancel, RequestFrame, ResponseFrame
from .links import Link

log = logging.getLogger("xio.forwarding")

DEFAULT_MAX_IN_FLIGHT = 1024
#: Idle workers kept for reuse; more are started when needed, and end when not kept.
DEFAULT_IDLE_WORKERS = 128
#: The ids of the nodes a request passed, comma-separated; see docs/PROTOCOL.md.
VIA = "X-Xio-Via"
#: What a request's deadline timer sets its result to.
_TIMED_OUT = object()


def via_of(headers) -> str:
    """Return the ``X-Xio-Via`` trail in a tuple of header pairs ('' if none)."""
    for name, value in headers:
        if name.lower() == "x-xio-via":
            return value
    return ""


def extend_via(trail: str, node_id: str) -> str:
    """Return ``trail`` with ``node_id`` appended."""
    return f"{trail},{node_id}" if trail else node_id


def with_via(headers: tuple, node_id: str) -> tuple:
    """Return ``headers`` with ``node_id`` appended to their ``X-Xio-Via`` trail."""
    kept = tuple(pair for pair in headers if pair[0].lower() != "x-xio-via")
    return (*kept, (VIA, extend_via(via_of(headers), node_id)))


def error_frame(status: int, description: str, request_id: int = 0, via: str = "") -> ResponseFrame:
    """Return a ``res`` frame carrying xio's JSON error body."""
    body = dump_json(HTTPError(status, description).to_dict())
    headers = (("Content-Type", JSON), (VIA, via)) if via else (("Content-Type", JSON),)
    return ResponseFrame(request_id, status, headers, body)


class Job:
    """One call being run by a worker: what ``link.serving`` holds for a request."""

    __slots__ = ("worker", "cancelled", "_workers")

    def __init__(self, workers: Workers) -> None:
        self.worker = None  # the greenlet running the call, None once it has returned
        self.cancelled = False
        self._workers = workers

    def kill(self, block: bool = False) -> None:
        """Stop the call with ``GreenletExit`` soon, as ``Greenlet.kill(block=False)`` does."""
        self._workers.cancel(self)


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
            job.worker = gevent.spawn(self._work, job, function, args)
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

    def _work(self, job: Job, function: Callable, args: tuple) -> None:
        me = getcurrent()
        hub = me.parent
        while True:
            try:
                function(*args)
            except GreenletExit:
                pass  # cancelled
            except Exception:
                log.exception("a worker's call failed")
            finally:
                job.worker = None
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
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        idle_workers: int = DEFAULT_IDLE_WORKERS,
    ) -> None:
        self.own_id = own_id
        self._deliver = deliver
        self._next_link = next_link
        self.max_in_flight = max_in_flight
        self.workers = Workers(idle_workers)
        self.counts: Counter[str] = Counter()

    # -- sending ------------------------------------------------------------------------

    def route(self, request: RequestFrame, deadline: float) -> ResponseFrame:
        """Carry ``request`` (its id is ignored) one hop towards ``request.dst``.

        Errors met here are answered here, with this node last on the ``X-Xio-Via`` trail.
        """
        headers = with_via(request.headers, self.own_id)
        trail = headers[-1][1]
        if request.hops <= 0:
            self.counts["hop_limit"] += 1
            return error_frame(502, f"hop limit reached before node {request.dst}", via=trail)
        link = self._next_link(request.dst)
        if link is None:
            self.counts["no_route"] += 1
            return error_frame(502, f"no route to node {request.dst}", via=trail)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.counts["deadline"] += 1
            return error_frame(504, "deadline passed before the request left this node", via=trail)
        request_id = link.next_request_id()
        frame = RequestFrame(
            request_id, request.dst, request.app, request.method, request.path, request.query,
            headers, request.body, request.hops - 1, int(remaining * 1000),
        )  # fmt: skip
        result = AsyncResult()
        link.pending[request_id] = result
        # The deadline is a bare loop timer that sets the result to _TIMED_OUT: the same
        # timer gevent.Timeout uses, without building a Timeout exception per request
        # (result.get(timeout=...) does, ~2 us).
        timer = get_hub().loop.timer(remaining)
        try:
            link.send(frame)
            self.counts["forwarded"] += 1
            timer.start(result.set, _TIMED_OUT)
            answer = result.get()
            if answer is _TIMED_OUT:
                self.counts["deadline"] += 1
                self._cancel(link, request_id)
                return error_frame(
                    504, f"no answer from node {request.dst} before the deadline", via=trail
                )
            if answer is None:  # set by link_closed
                raise ConnectionClosed(link.close_reason)
            return answer
        except ConnectionClosed:
            self.counts["next_hop_lost"] += 1
            return error_frame(502, f"link to {link.peer_name} closed, request lost", via=trail)
        except gevent.GreenletExit:
            self._cancel(link, request_id)  # our own caller gave up: tell the next hop
            raise
        finally:
            timer.close()
            link.pending.pop(request_id, None)

    @staticmethod
    def _cancel(link: Link, request_id: int) -> None:
        try:
            link.send(Cancel(request_id))
        except ConnectionClosed:
            pass

    # -- frames from links ----------------------------------------------------------------

    def on_request(self, link: Link, frame: RequestFrame) -> None:
        """Answer a ``req`` frame from ``link`` in a greenlet of its own (a worker)."""
        if frame.request_id in link.serving:
            link.reject("duplicate_request_id", f"request id {frame.request_id} is in flight")
            return
        if len(link.serving) >= self.max_in_flight:
            self.counts["overloaded"] += 1
            busy = error_frame(503, "too many requests in flight on this link", frame.request_id)
            self._reply(link, busy)
            return
        link.serving[frame.request_id] = self.workers.run(self._serve, link, frame)

    def _serve(self, link: Link, frame: RequestFrame) -> None:
        deadline = time.monotonic() + frame.ttl_ms / 1000
        try:
            if frame.dst == self.own_id:
                self.counts["served"] += 1
                answer = self._deliver(frame, deadline)
            else:
                answer = self.route(frame, deadline)
            self._reply(
                link, ResponseFrame(frame.request_id, answer.status, answer.headers, answer.body)
            )
        except Exception:
            log.exception("request %s from %s failed", frame.request_id, link.peer_name)
            self._reply(link, error_frame(500, "the node failed to answer", frame.request_id))
        finally:
            link.serving.pop(frame.request_id, None)

    @staticmethod
    def _reply(link: Link, frame: ResponseFrame) -> None:
        try:
            link.send(frame)
        except ConnectionClosed:
            pass  # the asker is gone; its side answers 502 by itself

    def on_response(self, link: Link, frame: ResponseFrame) -> None:
        """Hand a ``res`` frame to the request waiting for it."""
        waiting = link.pending.get(frame.request_id)
        if waiting is None:
            self.counts["late_response"] += 1  # it raced a cancel or a deadline
        else:
            waiting.set(frame)

    def on_cancel(self, link: Link, frame: Cancel) -> None:
        """Stop answering a request the asker no longer wants."""
        serving = link.serving.pop(frame.request_id, None)
        if serving is None:
            self.counts["late_cancel"] += 1
        else:
            self.counts["cancelled"] += 1
            serving.kill(block=False)

    def link_closed(self, link: Link) -> None:
        """Fail what waits on a closed link, and stop what answers it."""
        for waiting in list(link.pending.values()):
            waiting.set(None)  # the waiting route() call answers 502
        for serving in list(link.serving.values()):
            serving.kill(block=False)
        link.serving.clear()
