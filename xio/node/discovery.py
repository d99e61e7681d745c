"""From mDNS announcements to links: which discovered nodes a node dials, and when it stops.

Theory of operation. ``xio.peering.mdns.Discovery`` (the one module that imports zeroconf)
reports nodes announced and gone; this glue decides what to do with them. A discovered node
is dialled unless it is ourselves, linked already, dialled already (by discovery or a
configured ``--peers`` dialer pinned to its id), or the node has ``max_peers`` peers; each gets
a ``Dialer`` of its own, which retries with backoff. A node that said goodbye is forgotten: its
dialer stops and its link closes. A node that refuses ``GIVE_UP`` dials in a row is forgotten
too, until it is announced again, since a killed node sends no goodbye.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping

import gevent

from ..errors import ConnectError
from ..peering.links import Dialer, Link

__all__ = ["GIVE_UP", "DiscoveryDialing"]

log = logging.getLogger("xio.node")

#: A node found by mDNS that refuses connections this many times in a row is forgotten
#: until it is announced again (a killed node sends no goodbye).
GIVE_UP = 5

#: make_dialer(url, expected_id, connect) -> Dialer; dial(url, expected_id) -> Link
MakeDialer = Callable[[str, str | None, Callable[[str, str | None], Link]], Dialer]


class DiscoveryDialing:
    """Dial the nodes mDNS finds, within ``max_peers``; see the module docstring."""

    def __init__(
        self,
        own_id: str,
        links: Mapping[str, Link],
        pinned: Callable[[], Collection[str | None]],
        *,
        make_dialer: MakeDialer,
        dial: Callable[[str, str | None], Link],
        max_peers: int,
    ) -> None:
        self.own_id = own_id
        self.links = links
        self._pinned = pinned  # the peer ids configured dialers expect
        self._make_dialer = make_dialer
        self._dial = dial
        self.max_peers = max_peers
        self.dialers: dict[str, Dialer] = {}  # peer id -> dialer started by mDNS
        self.failures: dict[str, int] = {}
        self.stopped = False
        self.events: Counter[str] = Counter()  # found, lost, unreachable: not reasons (metrics)

    def discovered(self, node_id: str, urls: list[str]) -> None:
        """Link to a node found by mDNS, unless linked, dialling it already, or full."""
        if node_id == self.own_id or not urls:
            return
        self.events["found"] += 1
        if node_id in self.links:
            return
        if node_id in self.dialers or self.stopped or node_id in self._pinned():
            return
        peers = len(self.links.keys() | self.dialers.keys())
        if peers >= self.max_peers:
            log.warning("not linking to discovered %s: %d peers already", node_id, peers)
            return
        dialer = self._make_dialer(urls[0], node_id, self._dial_counted)
        self.dialers[node_id] = dialer
        dialer.start()

    def vanished(self, node_id: str) -> None:
        """Forget a node that said goodbye (or stays unreachable): stop dialling, unlink."""
        self.events["lost"] += 1
        dialer = self.dialers.pop(node_id, None)
        self.failures.pop(node_id, None)
        if dialer is None:
            return
        dialer.stop()
        link = self.links.get(node_id)
        if link is not None:
            link.close("peer_gone")

    def stop(self) -> None:
        """Stop every dialer; discover nothing more."""
        self.stopped = True
        for dialer in self.dialers.values():
            dialer.stop()

    def _dial_counted(self, url: str, node_id: str | None) -> Link:
        try:
            link = self._dial(url, node_id)
        except ConnectError:
            failures = self.failures.get(node_id, 0) + 1
            self.failures[node_id] = failures
            if failures >= GIVE_UP:  # gone without a goodbye (killed, unplugged)
                self.events["unreachable"] += 1
                log.info("discovered node %s unreachable %d times: forgotten", node_id, failures)
                gevent.spawn(self.vanished, node_id)
            raise
        self.failures.pop(node_id, None)
        return link
