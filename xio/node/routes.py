"""Keep the routing table current in the background; readers always get a whole table.

Theory of operation
-------------------
The pure core (``xio.peering.routing``) computes a table in slices: ``compute_stepwise`` takes a
snapshot of the ``Topology`` and this node's inputs, then yields between slices of work. A
``RouteKeeper`` owns one greenlet that waits until something is invalidated, drives the
computation and calls ``gevent.sleep(0)`` between slices, so HTTP requests and link readers run
while a large table is being built; then it swaps ``self.table`` in one assignment. Readers take
``keeper.table`` and use it: it is always a complete table, the newest finished one, never one
under construction, and reading it never computes anything.

The keeper learns of changes from a ``Version`` count (``xio.peering.routing``), not from
callers: the ``Topology`` bumps it whenever a record changes what routing reads, and the node's
link table (sharing the same count) on every link up or down, so no caller has to remember to
invalidate anything. Each table remembers the count it was computed at (``table_version``); a
table is stale while the count is ahead of it. Changes coalesce: a bump sets a flag that the
greenlet clears when it starts a computation, so any number of changes during one computation
give exactly one more. ``invalidate`` bumps the count by hand, for inputs nothing counts.

The greenlet never dies of an error: an exception from ``inputs()``, the computation or
``on_table`` is logged, counted in ``stats()``, and after a failed computation the keeper tries
again after ``retry_pause`` seconds (the table it holds is stale until then). ``compute_now``
computes synchronously, for startup and tests; a background computation that started before it
finishes is then dropped, since its snapshot is older than the table ``compute_now`` installed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping

import gevent
from gevent.event import Event

from ..peering.routing import RoutingTable, Topology, compute_stepwise

__all__ = ["RouteKeeper"]

log = logging.getLogger("xio.routes")

Inputs = Callable[[], tuple[Mapping[str, int], Iterable[str], str]]


class RouteKeeper:
    """Keep the routing table current in the background; readers always get a whole table.

    ``inputs()`` returns ``(own_links, own_apps, own_name)`` at the moment a computation
    starts. ``on_table(table)`` is called after each table computed after construction is
    swapped in (the first one, computed in the constructor, is only in ``table``).
    """

    def __init__(
        self,
        own_id: str,
        topology: Topology,
        inputs: Inputs,
        *,
        on_table: Callable[[RoutingTable], None] | None = None,
        step: int = 256,
        retry_pause: float = 1.0,
        pins: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.own_id = own_id
        self._pins = dict(pins or {})
        self.topology = topology
        self._inputs = inputs
        self._on_table = on_table
        self._step = step
        self._retry_pause = retry_pause
        self._wanted = Event()
        self.version = topology.version
        self.version.watch(self._wanted.set)
        self.table_version = 0  # the count the installed table was computed at
        self._greenlet: gevent.Greenlet | None = None
        self._started = 0  # computations started: each one's generation
        self._installed = 0  # the generation of self.table
        self._computations = 0
        self._errors = 0
        self._last_error = ""
        self._last_ms = 0.0
        self._last_busy_ms = 0.0
        self._max_slice_ms = 0.0
        self._nodes = 0
        self._computing = False
        self.table: RoutingTable
        self._compute_blocking(notify=False)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RouteKeeper({self.own_id!r}, {state}, {self.table!r})"

    @property
    def running(self) -> bool:
        """Return True while the background greenlet is alive."""
        return self._greenlet is not None and not self._greenlet.dead

    def invalidate(self) -> None:
        """Note that something routing reads changed (bump the count): compute a table soon.

        Cheap and safe to call often; calls made while a computation runs cause exactly one
        more. Before ``start()`` (or after ``stop()``) the request waits for the next start.
        """
        self.version.bump()

    def start(self) -> None:
        """Start the background greenlet (a no-op if it runs already)."""
        if not self.running:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop the background greenlet; a computation under way is abandoned."""
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill()

    def compute_now(self) -> RoutingTable:
        """Compute a table synchronously from the current inputs, install it and return it.

        Blocks the hub for the whole computation; errors propagate to the caller.
        """
        self._wanted.clear()  # this computation covers every change made so far
        try:
            self._compute_blocking(notify=True)
        except Exception:
            self._wanted.set()  # not covered after all: leave it to the background greenlet
            raise
        return self.table

    def stats(self) -> dict:
        """Return counters for the admin page: computations, durations, errors, pending work.

        ``pending``: a computation is wanted and not started; ``computing``: one is under way.
        ``last_ms`` is the wall time of the last installed computation (slices and the
        pauses between them), ``last_busy_ms`` its CPU-bound part, ``max_slice_ms`` the
        longest slice any background computation held the hub for.
        """
        return {
            "computations": self._computations,
            "last_ms": round(self._last_ms, 3),
            "last_busy_ms": round(self._last_busy_ms, 3),
            "max_slice_ms": round(self._max_slice_ms, 3),
            "nodes": self._nodes,
            "version": self.version.value,
            "table_version": self.table_version,
            "reachable": len(self.table),
            "pending": self._wanted.is_set(),
            "computing": self._computing,
            "running": self.running,
            "errors": self._errors,
            "last_error": self._last_error,
        }

    # -- the background greenlet ------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            self._computing = True
            try:
                self._compute_in_slices()
            except Exception as exc:  # the keeper must outlive any fault
                self._count_error(exc, "computing the routing table")
                self._wanted.set()  # the table is stale: try again after the pause
                gevent.sleep(self._retry_pause)
            finally:
                self._computing = False

    def _compute_blocking(self, notify: bool) -> None:
        started = time.perf_counter()
        stamp, slices = self._begin()
        table, busy, _longest = _drain(slices, None, started)
        self._install(stamp, table, time.perf_counter() - started, busy, notify)

    def _compute_in_slices(self) -> None:
        started = time.perf_counter()
        stamp, slices = self._begin()  # part of the first slice: no yield before it
        table, busy, longest = _drain(slices, _yield_to_others, started)
        self._max_slice_ms = max(self._max_slice_ms, longest * 1000)
        self._install(stamp, table, time.perf_counter() - started, busy, True)
        log.debug("routing table for %d nodes in %.1f ms (%.1f ms busy, longest slice %.2f ms)",
                  self._nodes, self._last_ms, self._last_busy_ms, longest * 1000)  # fmt: skip

    def _begin(self) -> tuple[tuple[int, int], Generator[None, None, RoutingTable]]:
        """Read the inputs and snapshot the topology for a new computation."""
        version = self.version.value  # before the inputs: a change while reading them is newer
        own_links, own_apps, own_name = self._inputs()
        self._started += 1
        self._nodes = len(self.topology)
        slices = compute_stepwise(self.own_id, own_links, self.topology, own_apps, own_name,
                                  step=self._step, pins=self._pins)  # fmt: skip
        return (self._started, version), slices

    def _install(
        self, stamp: tuple[int, int], table: RoutingTable, wall: float, busy: float, notify: bool
    ) -> None:
        generation, version = stamp
        if generation < self._installed:
            return  # compute_now installed a table from a newer snapshot meanwhile
        self.table = table
        self._installed, self.table_version = generation, version
        self._computations += 1
        self._last_ms, self._last_busy_ms = wall * 1000, busy * 1000
        if notify and self._on_table is not None:
            try:
                self._on_table(table)
            except Exception as exc:  # a faulty listener must not stop the routing
                self._count_error(exc, "in on_table")

    def _count_error(self, exc: Exception, doing: str) -> None:
        self._errors += 1
        self._last_error = f"{doing}: {type(exc).__name__}: {exc}"
        log.error("route keeper: error %s", doing, exc_info=exc)


def _yield_to_others() -> None:
    gevent.sleep(0)


def _drain(
    slices: Generator[None, None, RoutingTable],
    between: Callable[[], None] | None,
    slice_started: float,
) -> tuple[RoutingTable, float, float]:
    """Run ``slices`` to the end, calling ``between()`` after each slice.

    The first slice counts from ``slice_started``. Return the table, the total time spent in
    slices and the longest slice, in seconds.
    """
    busy = longest = 0.0
    while True:
        try:
            next(slices)
        except StopIteration as finished:
            elapsed = time.perf_counter() - slice_started
            return finished.value, busy + elapsed, max(longest, elapsed)
        elapsed = time.perf_counter() - slice_started
        busy += elapsed
        longest = max(longest, elapsed)
        if between is not None:
            between()
        slice_started = time.perf_counter()
