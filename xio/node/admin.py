"""The node's own resources under ``/_xio/``: what it is, whom it links to, what it routes."""

from __future__ import annotations

import time

from .. import __version__
from ..resource import Resource


def admin_resource(node) -> Resource:
    """Return the resource tree served at ``/_xio/`` for ``node``."""
    admin = Resource("_xio")

    @admin.bind("node", methods=["GET"])
    def node_info(req):
        """This node: identity, addresses, apps, counters of what it refused."""
        return {
            "id": node.id,
            "name": node.name,
            "version": __version__,
            "urls": node.advertised_urls(),
            "uptime_s": round(time.time() - node.started_at, 3),
            "apps": sorted(node.apps),
            "links": len(node.links),
            "records": len(node.store),
            "seq": node.store.own_seq,
            "rejected": dict(sorted(node.rejected.items())),
            "records_judged": {k: v for k, v in sorted(node.store.counters.items()) if v},
            "forwarding": dict(sorted(node.forwarder.counts.items())),
            "dialling": [
                {
                    "url": d.url,
                    "peer": d.peer_id,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                }
                for d in [*node.dialers, *node.discovery_dialers.values()]
            ],
            "mdns": node.mdns.describe() if node.mdns is not None else None,
        }

    @admin.bind("peers", methods=["GET"])
    def peers(req):
        """The links of this node, established or being set up."""
        now = time.monotonic()
        return [
            {
                "id": link.peer_id,
                "name": link.peer_name,
                "state": link.state.value,
                "direction": "out" if link.initiator else "in",
                "url": link.url,
                "address": link.transport.peer,
                "since": link.established_at,
                "rtt_ms": round(link.rtt * 1000, 3) if link.rtt is not None else None,
                "idle_s": round(now - link.last_received, 3),
                "in_flight": len(link.pending) + len(link.serving),
                "rejected": dict(link.rejected),
            }
            for link in sorted(node.all_links, key=lambda link: link.peer_name or "")
        ]

    @admin.bind("routes", methods=["GET"])
    def routes(req):
        """Every reachable node: next hop, cost, seq and age of its record."""
        now_ms = time.time() * 1000
        table = node.table
        result = []
        for route in table.routes():
            record = node.store.get(route.dst)
            result.append(
                {
                    "destination": route.dst,
                    "name": table.name_of(route.dst),
                    "next_hop": route.next_hop,
                    "cost": route.cost,
                    "hops": route.hops,
                    "seq": record.seq if record else None,
                    "age_s": round((now_ms - record.issued_ms) / 1000, 3) if record else None,
                    "apps": record.app_names() if record else [],
                }
            )
        return result

    @admin.bind("apps", methods=["GET"])
    def apps(req):
        """Every app in the mesh with its hosts, nearest first."""
        table = node.table
        return {
            app: [{"node": host, "name": table.name_of(host), "cost": cost} for cost, host in hosts]
            for app, hosts in table.apps().items()
        }

    return admin
