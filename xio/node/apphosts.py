"""Watch which nodes host each app, and say so when a second host appears.

In an open mesh any node can claim any app, and the nearer claimant draws its requests: the
one trace an operator gets is a new host of an app that had one already. ``AppHosts.update``
is given each new routing table; it remembers when each (app, host) pair was first seen and
returns the hosts that joined an app already served elsewhere, which the node logs. The memory
is bounded by the table itself: a pair that leaves the table is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..peering.routing import RoutingTable


@dataclass(frozen=True, slots=True)
class NewHost:
    """``node`` began to host ``app``, which ``others`` hosted already."""

    app: str
    node: str
    others: tuple[str, ...]


class AppHosts:
    """When each app's hosts were first seen, and which of them came second."""

    def __init__(self) -> None:
        self._since: dict[tuple[str, str], int] = {}
        self._second: set[tuple[str, str]] = set()

    def update(self, table: RoutingTable, now_ms: int) -> list[NewHost]:
        """Take a new table; return the hosts that appeared beside an app's existing ones."""
        current = {(app, node) for app, hosts in table.apps().items() for _, node in hosts}
        staying: dict[str, list[str]] = {}  # app -> hosts known before, still hosting
        for app, node in current & self._since.keys():
            staying.setdefault(app, []).append(node)
        found = []
        for pair in sorted(current - self._since.keys()):
            app, node = pair
            if app in staying:
                self._second.add(pair)
                found.append(NewHost(app, node, tuple(sorted(staying[app]))))
            self._since[pair] = now_ms
        for gone in self._since.keys() - current:
            del self._since[gone]
            self._second.discard(gone)
        return found

    def since_ms(self, app: str, node: str) -> int | None:
        """Return when ``node`` was first seen hosting ``app`` (ms since the epoch)."""
        return self._since.get((app, node))

    def is_second(self, app: str, node: str) -> bool:
        """Tell whether ``node`` appeared as a host of ``app`` while another hosted it."""
        return (app, node) in self._second
