"""The links of one node: which are being set up, which is the one per peer, what they counted.

Theory of operation. Every link the node starts or accepts is in ``all`` from its first frame
to its close; ``links`` maps a peer's id to its one *established* link. Two links to one peer
(both sides dialled at once, or a peer that reconnects) collapse to the one ``keep_link``
names, on both ends, so both keep the same one without a word exchanged. A link coming up or
going down bumps the routing ``Version`` it shares with the topology: the route keeper sees
it, and no caller has to invalidate routes.

Inbound links are admitted before the WebSocket upgrade: at most ``max_inbound`` at once, and
``handshake_rate`` new ones per second per source address (a burst of twice that); a refusal
is an HTTP status with ``Retry-After``, counted under ``refused``. A closed link's counts
(``forwarding_counts``) are folded into the table's own, so they survive the link.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from ..peering.links import Link
from ..peering.routing import Version, keep_link
from ..peering.schedule import RateLimiter
from ..peering.session import Closed

__all__ = ["LinkTable", "Refusal"]

log = logging.getLogger("xio.node")

#: What an inbound link is refused with: (HTTP status line, description, headers).
Refusal = tuple[str, str, list[tuple[str, str]]]


class LinkTable:
    """The links of one node; see the module docstring."""

    def __init__(
        self, version: Version, refused: Counter, *, max_inbound: int, handshake_rate: float
    ) -> None:
        self.version = version
        self.refused = refused  # shared with the node: our caps at work, by reason
        self.max_inbound = max_inbound
        self.links: dict[str, Link] = {}  # peer id -> its one established link
        self.all: set[Link] = set()
        self.inbound = 0  # links accepted and not yet closed
        self.closed_reasons: Counter[str] = Counter()
        self._closed_counts: Counter[str] = Counter()  # counts of sessions now closed
        self._handshakes = RateLimiter(handshake_rate, 2 * handshake_rate)

    def __len__(self) -> int:
        return len(self.links)

    def __iter__(self) -> Iterator[Link]:
        """Every link, established or not, by peer name (as the admin pages list them)."""
        return iter(sorted(self.all, key=lambda link: link.peer_name or ""))

    def admit(self, address: str, now: float) -> Refusal | None:
        """Refuse a new inbound link over the rate or the cap (before the upgrade)."""
        if not self._handshakes.allow(address, now):
            self.refused["handshake_rate"] += 1
            return (
                "429 Too Many Requests",
                "too many new links from this address",
                [("Retry-After", "1")],
            )
        if self.inbound >= self.max_inbound:
            self.refused["inbound_links_full"] += 1
            return (
                "503 Service Unavailable",
                "this node accepts no more links",
                [("Retry-After", "5")],
            )
        return None

    def add(self, link: Link) -> None:
        """Hold a link from its first frame on."""
        self.all.add(link)
        if not link.initiator:
            self.inbound += 1

    def adopt(self, link: Link) -> bool:
        """Make a newly established link the peer's one, unless a duplicate wins; say which."""
        existing = self.links.get(link.peer_id)
        if existing is not None and existing is not link:
            keep = keep_link(existing.session.handshake.link_key, link.session.handshake.link_key)
            loser = link if keep == existing.session.handshake.link_key else existing
            loser.close("duplicate_link")
            if loser is link:
                return False
        self.links[link.peer_id] = link
        log.info("link up: %s (%s)", link.peer_name, link.peer_id)
        self.version.bump()
        return True

    def drop(self, link: Link, closed: Closed) -> bool:
        """Forget a closed link; return True if it was its peer's established one."""
        self.all.discard(link)
        if not link.initiator:
            self.inbound -= 1
        self.closed_reasons[closed.reason.split(":", 1)[0]] += 1
        self._closed_counts.update(link.session.counts)
        link.session.counts.clear()  # counted once, here, from now on
        if self.links.get(link.peer_id) is not link:
            return False
        del self.links[link.peer_id]
        log.info("link down: %s (%s): %s", link.peer_name, link.peer_id, closed.reason)
        self.version.bump()
        return True

    def forwarding_counts(self) -> Counter[str]:
        """Return the counts of every link's session, closed or not."""
        counts = Counter(self._closed_counts)
        for link in self.all:
            counts.update(link.session.counts)
        return counts

    def queued_bytes(self) -> int:
        """Return the bytes waiting to be sent, over all links."""
        return sum(link.session.queued_bytes for link in self.all)
