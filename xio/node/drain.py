"""The graceful drain of a node that was told to stop (SIGTERM, SIGINT): when it may end.

Theory of operation. ``Node.drain(timeout)`` does, in order: readiness goes 503; the HTTP
listener closes (keep-alive connections end after their next answer, which says
``Connection: close``); a final record with no apps is originated and flooded, so peers route
their new requests away; the mDNS goodbye is sent; then the node waits while requests are in
flight, over HTTP and over links, with the links kept up so that what was already routed
here still arrives, is answered and can be relayed; last, the links close with a bye.

``DrainClock`` (pure, the clock a parameter) says when the wait is over: once nothing has
been in flight for ``quiet`` seconds in a row (a request a peer routed here just before our
final record reached it is still on its way: the quiet spell lets it land), or at the
deadline, whatever is still in flight then. Nothing in flight at SIGTERM still costs one quiet
spell, so that the final record is out on every link before the links close.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["QUIET", "DrainClock"]

#: Seconds with nothing in flight after which a drain is over.
QUIET = 0.5


@dataclass(slots=True)
class DrainClock:
    """When a drain that began at ``started`` is over; fed ``step(now, busy)``."""

    started: float
    timeout: float
    quiet: float = QUIET
    _idle_since: float | None = field(default=None)

    def step(self, now: float, busy: int) -> str | None:
        """Return None to wait on, ``"drained"`` or ``"timed_out"`` when the drain is over."""
        if busy:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if self._idle_since is not None and now - self._idle_since >= min(self.quiet, self.timeout):
            return "drained"
        if now - self.started >= self.timeout:
            return "timed_out"
        return None
