"""What a reload (SIGHUP) changes: the diff of two node configurations, as a plan.

Theory of operation. ``plan_reload(old, new, old_apps, new_apps, peer_key)`` compares the
configuration in force with the one just read and says what ``Node.reload`` must do:

* ``peers_added`` / ``peers_removed``: ``--peers`` specs compared by what they dial
  (``peer_key``: ``config.parse_peer``, so ``h:1`` and ``ws://h:1/_xio/ws`` are one peer).
  A peer in both keeps its dialer and its link.
* ``apps_added`` / ``apps_removed``: by app name.
* ``live``: the keys of ``LIVE`` that changed; the node applies them at once (some to links
  made after the reload, as the README says).
* ``restart``: every other key that changed (host, port, state_dir, TLS, mesh...). They need a
  restart; ``config`` is the new configuration with their old values put back, so the node
  goes on with what it runs with, and says so.

Any key not in ``LIVE`` needs a restart, so an option added later is safe by default.
Pure: compares dataclasses, imports nothing of the node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["LIVE", "LIVE_FOR_NEW_LINKS", "ReloadPlan", "plan_reload"]

#: Keys of NodeConfig a reload applies (besides the peers, and the apps, which are not keys).
LIVE = frozenset({
    "request_timeout", "max_ttl", "max_body", "max_in_flight", "body_budget",
    "store_max_records", "store_max_bytes", "origin_quota", "max_inbound_links", "advertise",
    "link_timeout", "write_timeout", "link_queue_bytes",
    # The policies (xio.node.policy): breakers and bulkheads keep their state.
    "retries", "retry_methods", "breaker_failures", "breaker_window", "breaker_cooloff",
    "bulkhead", "app_timeouts", "app_retries", "app_bulkheads",
})  # fmt: skip
#: Of those, the ones that apply to links set up after the reload (a link keeps its limits).
LIVE_FOR_NEW_LINKS = frozenset({"link_timeout", "write_timeout", "link_queue_bytes", "max_ttl"})


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does; ``config`` is what the node runs with after it."""

    config: object
    peers_added: tuple[str, ...] = ()
    peers_removed: tuple[str, ...] = ()
    apps_added: tuple[str, ...] = ()
    apps_removed: tuple[str, ...] = ()
    live: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.peers_added or self.peers_removed or self.apps_added
                    or self.apps_removed or self.live)  # fmt: skip

    def summary(self) -> str:
        """Say in one line what the reload changed."""
        parts = [f"{label} {', '.join(items)}" for label, items in (
            ("peers added:", self.peers_added), ("peers removed:", self.peers_removed),
            ("apps added:", self.apps_added), ("apps removed:", self.apps_removed),
            ("changed:", self.live), ("kept until a restart:", self.restart),
        ) if items]  # fmt: skip
        return "; ".join(parts) or "nothing changed"


def plan_reload(
    old,
    new,
    old_apps: Iterable[str],
    new_apps: Iterable[str],
    peer_key: Callable[[str], object],
) -> ReloadPlan:
    """Return the plan that takes a node running ``old`` (a dataclass) to ``new``."""
    changed = [f.name for f in dataclasses.fields(old)
               if f.name != "peers" and getattr(old, f.name) != getattr(new, f.name)]  # fmt: skip
    restart = tuple(key for key in changed if key not in LIVE)
    config = dataclasses.replace(new, **{key: getattr(old, key) for key in restart})
    old_peers = _by_key(old.peers, peer_key)
    new_peers = _by_key(new.peers, peer_key)
    old_names, new_names = set(old_apps), set(new_apps)
    return ReloadPlan(
        config=config,
        peers_added=tuple(spec for key, spec in new_peers.items() if key not in old_peers),
        peers_removed=tuple(spec for key, spec in old_peers.items() if key not in new_peers),
        apps_added=tuple(sorted(new_names - old_names)),
        apps_removed=tuple(sorted(old_names - new_names)),
        live=tuple(key for key in changed if key in LIVE),
        restart=restart,
    )


def _by_key(specs: Iterable[str], peer_key: Callable[[str], object]) -> Mapping[object, str]:
    return {peer_key(spec): spec for spec in specs}
