"""The node's own resources under ``/_xio/``: what it is, whom it links to, what it routes."""

from __future__ import annotations

import time

from ..resource import Resource
from ..version import __version__


def admin_resource(node) -> Resource:
    """Return the resource tree served at ``/_xio/`` for ``node``."""
    admin = Resource("_xio")

    @admin.bind("node", methods=["GET"])
    def node_info(req):
        """This node: identity, addresses, apps, budgets, and counters of what it refused."""
        forwarding = node.forwarding_counts()
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
            "refused": node.refusals(forwarding),
            "records_judged": {k: v for k, v in sorted(node.store.counters.items()) if v},
            "forwarding": dict(sorted(forwarding.items())),
            "closed_links": dict(sorted(node.closed_links.items())),
            "loops": node.loops,
            "budgets": node.budgets(),
            "routing": node.routes.stats(),
            "link_queues": [link_queue(link, time.monotonic()) for link in sorted_links()],
            "originated": {
                "records": node.originator.originated,
                "trimmed": node.originator.trimmed,
            },  # fmt: skip
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

    def sorted_links():
        return sorted(node.all_links, key=lambda link: link.peer_name or "")

    def link_queue(link, now: float) -> dict:
        session = link.session
        return {
            "peer": link.peer_id,
            "name": link.peer_name,
            "queued_bytes": session.queued_bytes,
            "queued_frames": session.queued_frames,
            "oldest_unsent_s": round(session.oldest_unsent(now), 3),
            "writing": link.transport.writing,
        }

    @admin.bind("peers", methods=["GET"])
    def peers(req):
        """The links of this node, established or being set up."""
        now = time.monotonic()
        result = []
        for link in sorted_links():
            session = link.session
            result.append(
                {
                    "id": link.peer_id,
                    "name": link.peer_name,
                    "state": link.state.value,
                    "direction": "out" if link.initiator else "in",
                    "url": link.url,
                    "address": link.transport.peer,
                    # when it was established (Unix time), and for how long (s)
                    "since": round(time.time() - (now - session.established_at), 3)
                    if session.established_at is not None
                    else None,
                    "up_s": round(now - session.established_at, 3)
                    if session.established_at is not None
                    else None,
                    "rtt_ms": round(session.rtt * 1000, 3) if session.rtt is not None else None,
                    "in_flight": len(session.outgoing) + len(session.incoming),
                    "caps": list(session.peer_caps),
                    "bytes_in": link.transport.bytes_received,
                    "bytes_out": link.transport.bytes_sent,
                    "rejected": dict(session.rejected),
                    **link_queue(link, now),
                }
            )
        return result

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
