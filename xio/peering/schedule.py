"""When to act: dial backoff, origination hold-down, and rate limits, as pure decisions.

Theory of operation
-------------------
Each class here answers "how long until ..." or "may I ... now?" from the times it is given
(``now``, float seconds of any monotonic clock); none reads a clock or sleeps. The gevent adapters
(``links.Dialer``, the node's originator loop, the WebSocket endpoint) call them and do the
waiting.

* ``Backoff``: the delay before the next dial. It doubles from ``first`` up to ``maximum`` after
  every failure, and starts over once a link has been *healthy*: established and up for
  ``healthy_after`` seconds. Jitter is the caller's (a random factor per wait).
* ``OriginationSchedule``: a node re-originates its record when its links or apps change and
  every ``refresh`` seconds. Changes are coalesced (``coalesce``) and held down: after a burst of
  ``burst`` quick ones, originations caused by changes come at most one per ``min_interval``, so
  a churning neighbourhood costs every peer a bounded number of our records per second (OSPF's
  MinLSInterval, with room for a node that is bringing up its first few links).
* ``RateLimiter``: a token bucket per key (e.g. per source address), bounded in the number of
  keys it remembers, so a stranger cannot make it grow without limit.
"""

from __future__ import annotations

from collections import OrderedDict

from xio.errors import LocalProtocolError

__all__ = ["Backoff", "OriginationSchedule", "RateLimiter", "TokenBucket"]


class Backoff:
    """Delays between attempts to dial one peer."""

    def __init__(self, first: float = 0.25, maximum: float = 30.0, healthy_after: float = 10.0):
        if not 0 < first <= maximum:
            raise LocalProtocolError("backoff needs 0 < first <= maximum")
        self.first = first
        self.maximum = maximum
        self.healthy_after = healthy_after
        self._next = first
        self._established_at: float | None = None

    def established(self, now: float) -> None:
        """Note that the link is up (authenticated) from ``now``."""
        self._established_at = now

    def next_delay(self, now: float) -> float:
        """Return the delay before the next attempt, the attempt that just ended being over."""
        up_since, self._established_at = self._established_at, None
        if up_since is not None and now - up_since >= self.healthy_after:
            self._next = self.first  # a healthy link ended: start over from a short wait
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


class OriginationSchedule:
    """When this node should next originate its record."""

    def __init__(
        self, refresh: float, min_interval: float = 1.0, *, burst: int = 3, coalesce: float = 0.05
    ) -> None:
        if refresh <= 0 or min_interval < 0 or coalesce < 0 or burst < 1:
            raise LocalProtocolError("refresh must be positive, burst >= 1, intervals >= 0")
        self.refresh = refresh
        self.min_interval = min_interval
        self.coalesce = coalesce
        self.last: float | None = None  # when the last record was originated
        self._change_at: float | None = None  # when a pending change is to be originated
        # Change-driven originations: a few at once (a node starting links to its peers),
        # then one per min_interval. The credit is a token bucket in units of originations.
        self._burst = burst
        self._credit = float(burst)
        self._credit_at = 0.0

    def changed(self, now: float) -> None:
        """Note that links or apps changed at ``now``: originate soon, but not too often."""
        if self._change_at is not None:
            return  # already pending: this change rides along
        at = now + self.coalesce
        credit = self._credit_after(at)
        if credit < 1 and self.min_interval > 0:
            at += (1 - credit) * self.min_interval
        self._change_at = at

    def _credit_after(self, at: float) -> float:
        if self.min_interval == 0:
            return float(self._burst)
        gained = max(0.0, at - self._credit_at) / self.min_interval
        return min(float(self._burst), self._credit + gained)

    def next_at(self) -> float | None:
        """Return when to originate next (None: at once, nothing originated yet)."""
        if self.last is None:
            return None
        refresh_at = self.last + self.refresh
        return refresh_at if self._change_at is None else min(refresh_at, self._change_at)

    def due(self, now: float) -> bool:
        """Tell whether an origination is due at ``now``."""
        at = self.next_at()
        return at is None or now >= at

    def originated(self, now: float) -> None:
        """Note that a record was originated (and flooded) at ``now``."""
        if self._change_at is not None:  # a change-driven origination spends credit
            self._credit = max(0.0, self._credit_after(now) - 1)
            self._credit_at = now
        self.last = now
        self._change_at = None


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if there are that many; tell whether it did."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


class RateLimiter:
    """A token bucket per key, remembering at most ``max_keys`` keys (least recent forgotten)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise LocalProtocolError("a rate limiter needs rate > 0, burst >= 1, max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Tell whether ``key`` may act at ``now`` (and count the act if so)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                # A forgotten key starts with a full bucket again: bounded memory is worth that.
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)
