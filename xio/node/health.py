"""Health checks: ``/_xio/health/live`` and ``/_xio/health/ready``, decided here, pure.

Theory of operation. *Live* is "the process serves HTTP": any answer at all is proof, so the
page always says ``live`` (a hub stalled by a handler answers nothing, and the probe times
out). *Ready* is "send me traffic": ``readiness(facts)`` returns the status and the body from
a snapshot the node takes of itself (``ReadinessFacts``), in this order:

1. draining (SIGTERM received): ``503 {"status": "draining"}``, at once and to the end;
2. not listening, or this node's first record not yet originated: ``503 not_ready``;
3. a configured ``--peers`` peer neither linked nor *given up*: ``503 not_ready``;
4. else ``200 {"status": "ready"}``.

A configured peer is **given up** once a dial to it ended without a link at least once (the
connection was refused, timed out, or the link closed), or ``PEER_GRACE`` seconds after the
node started, whichever comes first: a peer that is down must not keep a node out of service,
but a node that has not tried yet is not ready. Discovered (mDNS) peers are never waited for.
The pages are public (load balancers probe from anywhere): they show counts and a reason,
never a peer's address or id.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PEER_GRACE", "ReadinessFacts", "count_peers", "liveness", "readiness"]

#: Seconds after start past which a configured peer that is still not linked is given up.
PEER_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class ReadinessFacts:
    """What readiness is decided on: a snapshot, no clock of its own."""

    draining: bool
    listening: bool
    originated: bool  # this node's own record is out
    peers_configured: int
    peers_linked: int
    peers_given_up: int  # configured, not linked, and at least one dial ended without a link
    uptime: float  # seconds since start


def count_peers(dialers, links: dict) -> tuple[int, int]:
    """Return how many configured peers (their ``Dialer`` s) are linked, and given up.

    ``links`` maps a peer id to its established link; a link we dialled carries our URL.
    """
    linked = given_up = 0
    dialled = {link.url for link in links.values()}
    for dialer in dialers:
        if dialer.url in dialled or (dialer.peer_id and dialer.peer_id in links):
            linked += 1
        elif dialer.failures or dialer.last_error:  # a dial ended without a link
            given_up += 1
    return linked, given_up


def liveness() -> tuple[int, dict]:
    """Return the live page: the process answered, so it lives."""
    return 200, {"status": "live"}


def readiness(facts: ReadinessFacts) -> tuple[int, dict]:
    """Return the status code and body of the ready page for ``facts``."""
    if facts.draining:
        return 503, {"status": "draining"}
    if not facts.listening:
        return 503, {"status": "not_ready", "reason": "not listening yet"}
    if not facts.originated:
        return 503, {"status": "not_ready", "reason": "own record not originated yet"}
    waiting = facts.peers_configured - facts.peers_linked - facts.peers_given_up
    if waiting > 0 and facts.uptime < PEER_GRACE:
        return 503, {"status": "not_ready",
                     "reason": f"{waiting} of {facts.peers_configured} configured peers "
                     "not linked yet"}  # fmt: skip
    return 200, {"status": "ready"}
