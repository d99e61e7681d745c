"""Handlers and the hub: a bounded pool of real threads per app, and a watch on the hub.

Theory of operation
-------------------
One gevent hub, in the main thread, serves HTTP, links, routing and forwarding. A handler that
computes for long (pure Python, or a C call that keeps the GIL) holds the hub: keepalives stop
and, after ``--link-timeout``, the node's links die and its apps vanish from the mesh.

* ``HandlerPool``: an app given ``threads=N`` (``xio.app(__name__, threads=N)``, or
  ``xio-node --threads APP=N``) has its handlers run on N native threads of a
  ``gevent.threadpool.ThreadPool``. The request's greenlet waits for the result cooperatively.
  The hub keeps running beside a busy thread: CPython hands the GIL to the waiting hub thread
  every switch interval (5 ms), and at once when the handler enters a C call that releases it.
  Bounds: N run and ``QUEUE_PER_THREAD * N`` wait; one more is a 503 at once, never a longer
  queue. At the request's deadline the answer is a 504; the thread runs on, its result is
  dropped, and its place in the pool is free only when it ends (so an app whose handlers
  overrun keeps getting 503s rather than piling up threads).
* ``HubWatch``: a native thread pings the hub every ``interval`` through an async watcher. When
  the hub has not answered for ``limit`` (100 ms) and its thread is inside a handler (a
  ``Resource._answer`` frame on its stack, read from ``sys._current_frames``), it logs one
  warning naming the handler and the ``threads=`` option, and one line when the hub is free
  again. Requests pay nothing for it: the watch reads the stack only when the hub is late.

Handlers on threads share the app's objects with each other: what they mutate needs a lock
(``threading.Lock``: ``thread`` is not monkey-patched by ``xio-node``).
"""

from __future__ import annotations

import collections
import gc
import logging
import sys
import time

import gevent
from gevent.monkey import get_original, is_module_patched
from gevent.threadpool import ThreadPool

from .errors import HTTPError
from .request import Request, Response
from .resource import Resource
from .responses import error_response

log = logging.getLogger("xio.threads")

#: Requests that may wait for a thread of an app, per thread: with ``threads=2``, 2 run,
#: 8 wait, and the 11th is refused (503) at once.
QUEUE_PER_THREAD = 4
#: The most threads one app may have.
MAX_THREADS = 256
#: The hub held longer than this by one handler is logged (seconds).
BLOCKING_LIMIT = 0.1


def check_threads(value, what: str = "threads") -> int:
    """Return ``value`` as a thread count (0: on the hub), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise ValueError(f"{what} must be a whole number from 0 to {MAX_THREADS}, not {value!r}")
    return value


def parse_threads_option(text: str) -> tuple[str, int]:
    """Parse ``APP=N`` (``--threads``) into ``(app name, N)``; raise ``ValueError``."""
    name, sep, count = text.partition("=")
    if not sep or not name or not count.strip().isdigit():
        raise ValueError(text)
    return name, check_threads(int(count))


class HandlerPool:
    """The threads one app's handlers run on; see the module docstring."""

    def __init__(self, threads: int) -> None:
        self.threads = check_threads(threads)
        self.limit = threads * (1 + QUEUE_PER_THREAD)
        self.held = 0  # requests running or waiting, and overrun ones still running
        self._pool = ThreadPool(threads)  # its hub is this thread's: spawn only from here

    def answer(self, app: Resource, req: Request, deadline: float, refused) -> Response:
        """Run ``app.handle(req)`` on a thread; 503 when full, 504 at ``deadline``."""
        if self.held >= self.limit:
            refused["threads_full"] += 1
            busy = f"every thread of this app is busy ({self.threads} running, queue full)"
            return error_response(HTTPError(503, busy, headers={"Retry-After": "1"}))
        self.held += 1
        result = None
        timer = gevent.Timeout(max(deadline - time.monotonic(), 0.0))
        timer.start()
        try:
            result = self._pool.spawn(app.handle, req)  # may wait for a slot: under the timer
            result.rawlink(self._release)
            return result.get()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return error_response(HTTPError(504, "the app did not answer before the deadline"))
        finally:
            timer.close()
            if result is None:  # never handed to a thread
                self.held -= 1

    def _release(self, _result) -> None:
        self.held -= 1


def answer_on_threads(app: Resource, req: Request, deadline: float, refused) -> Response:
    """Answer ``req`` on the threads of ``app`` (created on first use, on this hub)."""
    pool = app.__dict__.get("_handler_pool")
    if pool is None or pool.threads != app.threads:
        pool = app.__dict__["_handler_pool"] = HandlerPool(app.threads)
    return pool.answer(app, req, deadline, refused)


class HubWatch:
    """Warn when a handler holds the hub longer than ``limit``; see the module docstring."""

    def __init__(self, limit: float = BLOCKING_LIMIT, interval: float = 0.05) -> None:
        self.limit = limit
        self.interval = interval
        self.started = False
        self._asked = 0  # pings sent (by the watch thread)
        self._answered = 0  # pings the hub answered
        self._deferred: collections.deque[str] = collections.deque()
        self._hub_thread = 0
        self._watcher = None

    def start(self) -> HubWatch:
        """Start watching this thread's hub (call from the hub's thread)."""
        if self.started:
            return self
        self.started = True
        self._hub_thread = get_original("_thread", "get_ident")()
        self._watcher = gevent.get_hub().loop.async_(ref=False)
        self._watcher.start(self._pong)
        # With ``threading`` patched, logging's locks are gevent's: log from the hub instead.
        self._log_here = not is_module_patched("threading")
        get_original("_thread", "start_new_thread")(self._watch, ())
        return self

    def _pong(self) -> None:  # on the hub
        self._answered = self._asked
        while self._deferred:
            log.warning("%s", self._deferred.popleft())

    def _say(self, message: str) -> None:
        if self._log_here:
            log.warning("%s", message)
        else:
            self._deferred.append(message)

    def _watch(self) -> None:  # on the watch thread
        sleep = get_original("time", "sleep")
        while True:
            self._asked += 1
            asked, sent = self._asked, time.perf_counter()
            self._watcher.send()
            sleep(self.interval)
            handler = None
            while self._answered < asked:
                held = time.perf_counter() - sent
                if handler is None and held >= self.limit:
                    handler, app = self.handler_on_hub() or (None, None)
                    if handler:
                        self._say(
                            f"{handler} has held the hub for {held:.2f} s: links and other "
                            "requests wait; give its app threads (xio.app(..., threads=N) "
                            f"or xio-node --threads {app}=N)"
                        )
                # Late with no handler on the hub (its loop is not running, say): look again
                # at the usual pace, not ten times as often.
                sleep(0.01 if handler else self.interval)
            if handler:
                self._say(f"{handler} released the hub after {held:.2f} s")

    def handler_on_hub(self) -> tuple[str, str] | None:
        """Return the handler running on the hub's thread and its app's name, if one is."""
        frame = _frame_of(self._hub_thread)
        answering, app = None, None
        while frame is not None:
            if frame.f_code is _ANSWER and answering is None:
                answering = frame.f_locals
            elif frame.f_code is _HANDLE:
                app = frame.f_locals.get("self")  # the outermost handle is the app's
            frame = frame.f_back
        if answering is None:
            return None
        resource, req = answering.get("self"), answering.get("req")
        handler = getattr(resource, "handler", None)
        name = getattr(handler, "__qualname__", None) or repr(handler)
        code = getattr(handler, "__code__", None)
        where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
        method = getattr(req, "method", "?")
        described = f"handler {name}{where} for {method} {getattr(resource, 'path', '')!r}"
        return described, getattr(app, "app_name", None) or "APP"


def _frame_of(thread_id: int):
    """Return the frame thread ``thread_id`` is running, read from another thread.

    The collector stays off meanwhile: CPython up to 3.11 holds its thread-list lock while
    ``sys._current_frames`` builds frame objects, and a collection started by one of those
    allocations can free an object whose dealloc takes that lock again, against a thread
    waiting for the GIL: the whole process hangs (CPython gh-106883, not fixed in 3.11; seen
    here as the suite hung in futex waits while a test held the hub).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames().get(thread_id)
    finally:
        if enabled:
            gc.enable()


_ANSWER = Resource._answer.__code__
_HANDLE = Resource.handle.__code__

#: The one watch of this process's hub (started with the first node).
HUB_WATCH = HubWatch()

__all__ = ["HUB_WATCH", "HandlerPool", "HubWatch", "answer_on_threads", "parse_threads_option"]
