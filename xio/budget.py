"""Budgets: how much of something this node holds at once, bounded by a limit we set.

A ``Budget`` is a counter with a ceiling (requests in flight, bytes of buffered bodies). Whoever
takes from it gives back exactly what it took, once, when it lets go; a ``take`` that would pass
the limit is refused and counted, and the caller answers with a clear refusal (a 503) instead of
holding more. One budget is shared by the HTTP front and every link, so the node's total is
bounded however the load arrives. Pure: no IO, no clock.
"""

from __future__ import annotations

from xio.errors import LocalProtocolError

__all__ = ["Budget"]


class Budget:
    """A counted resource with a limit."""

    __slots__ = ("name", "limit", "used", "peak", "refused")

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise LocalProtocolError(f"budget {name} needs a positive limit, got {limit}")
        self.name = name
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.refused = 0

    def take(self, amount: int = 1) -> bool:
        """Take ``amount`` if it fits under the limit; tell whether it did."""
        used = self.used + amount
        if used > self.limit:
            self.refused += 1
            return False
        self.used = used
        if used > self.peak:
            self.peak = used
        return True

    def give(self, amount: int = 1) -> None:
        """Give back ``amount`` taken earlier."""
        self.used -= amount
        if self.used < 0:  # a double release: a bug, but never let the budget grow by it
            self.used = 0
            raise LocalProtocolError(f"budget {self.name} given back more than was taken")

    def describe(self) -> dict:
        """Return ``{"used", "limit", "peak", "refused"}`` for the admin resources."""
        return {"used": self.used, "limit": self.limit, "peak": self.peak, "refused": self.refused}
