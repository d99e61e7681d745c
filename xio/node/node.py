"""The node: one process that hosts apps, links to peers and routes the mesh's requests.

Theory of operation. A ``Node`` composes the parts below it, each with one job, and holds
what ties them together: its identity, its apps, and the budgets every part draws from.

- ``LinkTable`` (linktable.py): the links, one established per peer. Links come from
  ``Dialer`` s (``--peers``; mDNS through ``DiscoveryDialing``, discovery.py) and from the
  WebSocket endpoint, which the table admits (a cap and a rate per source address). When a
  link is established the ``RecordExchange`` (exchange.py) starts the summary-first initial
  exchange on it and the ``Originator`` (originator.py) re-originates, held down under churn.
- Records arriving are judged by the store (budgets, quotas, eviction), flooded when new, and
  change the ``Topology`` only when links, apps or names change. The topology and the link
  table bump one routing ``Version``; the ``RouteKeeper`` (routes.py) sees it, recomputes the
  routing table in the background and swaps it in, so requests never wait for routing.
- HTTP requests go through ``router.Router``; requests that arrive over links go through the
  ``Forwarder``. Both end in ``answer_locally`` for an app hosted here. Requests in flight and
  buffered bodies count against two node-wide budgets, shared by HTTP and every link.
- The node is every link's ``LinkOwner`` and what the admin pages and the router read
  (``AdminNode``, ``RouterNode``): ``status()``, ``peer_status()``, ``route_status()`` are
  snapshots, so no page reaches into a part.
- Every long-lived loop (origination, expiry, routing, dialling) catches, counts and goes on;
  ``loops`` under ``/_xio/node`` shows what failed.
- ``drain`` (SIGTERM) withdraws the apps and waits for what is in flight before ``stop``
  (drain.py); ``/_xio/health/*`` reads ``readiness_facts`` (health.py).
- In closed mode (``--mesh-pub``, ``--cert``) a ``ClosedMesh`` (closed.py) judges every peer's
  hello and every record, and takes the revocations; without it the node is in open mode.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from pathlib import Path

import gevent
from gevent import get_hub, getcurrent
from gevent.event import Event

from ..budget import Budget
from ..constants import PUBLIC
from ..errors import HTTPError, RemoteProtocolError
from ..peering import codec, keyfile
from ..peering.codec import RequestFrame, ResponseFrame, Revoke
from ..peering.dial import connect, peer_tls_context
from ..peering.forwarding import (
    STREAM_CAP,
    UPLOAD_CAP,
    VIA,
    Forwarder,
    error_frame,
    extend_via,
    via_of,
)
from ..peering.handshake import Handshake
from ..peering.identity import Identity
from ..peering.integrity import EndToEnd
from ..peering.links import Dialer, Link
from ..peering.reasons import FORWARDING_REFUSALS as _FORWARDING_REFUSALS
from ..peering.routing import RoutingTable, Topology
from ..peering.session import Closed, LinkLimits, LinkSession
from ..peering.store import RecordStore, StoreLimits
from ..peering.streams import Streamed
from ..peering.transport import WebSocketEndpoint
from ..request import Caller, Headers, Request, Response
from ..resource import RawPath, Resource
from ..responses import error_response
from ..server import HTTPLimits, Server, WSGIApp
from ..statedir import StateLock
from ..threads import HUB_WATCH, answer_on_threads
from ..version import __version__
from .admin import is_admin_page
from .apphosts import AppHosts
from .clientws import CLIENT_WS_PATH, MAX_MESSAGE, ClientChannel, same_origin
from .closed import REVOKE_CAP, ClosedMesh
from .config import WS_PATH, NodeConfig, parse_peer, read_admin_token
from .cors import CorsMiddleware, CorsPolicy
from .discovery import DiscoveryDialing
from .drain import QUIET, DrainClock
from .exchange import SUMMARY_CAP, RecordExchange, paced
from .frames import response_to_frame
from .health import ReadinessFacts, count_peers
from .linktable import LinkTable
from .meshmap import RTT_EXT, mesh_map, rtt_ext
from .metrics import Metrics, method_label
from .originator import Originator, RecordContent
from .policy import REFUSED, Policies, policy_settings
from .reload import ReloadPlan, plan_reload
from .router import Router
from .routes import RouteKeeper
from .sdnotify import Notifier

log = logging.getLogger("xio.node")

#: The loops whose failures are counted under /_xio/node "loops".
LOOPS = ("refresh", "expire", "routes", "dial")


class Node:
    """A running xio node; see the module docstring."""

    def __init__(
        self,
        config: NodeConfig,
        apps: dict[str, Resource] | None = None,
        main_app: Resource | None = None,
    ) -> None:
        self.config = config
        # First: a token file that cannot be used stops the start before anything is taken.
        admin_token = (read_admin_token(config.admin_token_file)
                       if config.admin_token_file is not None else None)  # fmt: skip
        self.apps: dict[str, Resource] = dict(apps or {})
        self.main_app = main_app
        self.state_lock: StateLock | None = None
        if config.state_dir is not None:  # one node per state dir: else one identity twice
            self.state_lock = StateLock.acquire(Path(config.state_dir))
            self.identity = keyfile.load_or_create(Path(config.state_dir))
        else:
            self.identity = Identity.generate()
        self.id = self.identity.node_id
        self.closed: ClosedMesh | None = None  # open mode
        if config.mesh_pub is not None:
            try:  # a certificate that does not admit this node stops the start (exit 2)
                self.closed = ClosedMesh.load(config.mesh_pub, config.cert, self.id,
                                             config.state_dir)  # fmt: skip
            except Exception:
                if self.state_lock is not None:
                    self.state_lock.release()
                raise
        self.cors = CorsPolicy.of(config.cors)  # a bad origin stops the start (ConfigError)
        self.name = config.name
        self.started_at = time.time()
        self.rejected: Counter[str] = Counter()  # a peer's fault, by reason
        self.refused: Counter[str] = Counter()  # our budgets and caps at work, by reason
        self.loops = {name: {"errors": 0, "last_error": ""} for name in LOOPS}
        self.in_flight = Budget("in_flight", config.max_in_flight)
        self.body_bytes = Budget("body_bytes", config.body_budget)
        self.metrics = Metrics()  # what only /_xio/metrics reports (xio.node.metrics)
        self.policy = Policies(policy_settings(config))  # retries, breakers, bulkheads
        # One context for every wss:// dial; a bad --peer-ca fails here, at start, not per dial.
        self._peer_tls = peer_tls_context(config.peer_ca) if config.peer_ca else None
        self._build_mesh_parts(config)
        self.dialers = [self._dialer(*parse_peer(p), self.dial) for p in config.peers]
        self.discovery = DiscoveryDialing(
            self.id, self.links, lambda: {dialer.peer_id for dialer in self.dialers},
            make_dialer=self._dialer, dial=self.dial, max_peers=config.max_peers,
        )  # fmt: skip
        self._stopping = False
        self.draining = False  # drain() began: readiness is 503, the record has no apps
        self.notifier = Notifier(None)  # xio-node sets systemd's (run_node)
        self._stopped = Event()
        self._greenlets: list = []
        self.server: Server | None = None
        self.mdns = None
        self.router = Router(self, admin_token=admin_token)

    def _build_mesh_parts(self, config: NodeConfig) -> None:
        """Make the link table, the record store, routing, origination and forwarding."""
        self.link_limits = LinkLimits(
            link_timeout=config.link_timeout, write_timeout=config.write_timeout,
            queue_bytes=config.link_queue_bytes, max_ttl_ms=int(config.max_ttl * 1000),
        )  # fmt: skip
        self.store = RecordStore(self.id, limits=StoreLimits(
            max_records=config.store_max_records, max_bytes=config.store_max_bytes,
            max_record_size=config.record_max_size, origin_quota=config.origin_quota,
        ), policy=self.closed.check_record if self.closed else None)  # fmt: skip
        self.topology = Topology()  # its version counts link changes too (the link table's)
        self.link_table = LinkTable(self.topology.version, self.refused,
                                    max_inbound=config.max_inbound_links,
                                    handshake_rate=config.handshake_rate)  # fmt: skip
        self.links = self.link_table.links  # peer id -> its one established link
        self.app_hosts = AppHosts()
        self.routes = RouteKeeper(self.id, self.topology, self._route_inputs,
                                  on_table=self._table_computed,
                                  pins=config.pin_apps)  # fmt: skip
        self.exchange = RecordExchange(
            self.store, self.topology, self.links, own_seq_seen=self._own_seq_seen,
            reject=self._reject_record, refused=self.refused,
        )  # fmt: skip
        self.originator = Originator(
            self.identity, self.store, self._record_content, self.exchange.flood_own,
            state_dir=config.state_dir, lifetime=config.record_lifetime,
            min_interval=config.min_originate_interval, max_size=config.record_max_size,
            on_error=self.loop_failed,
        )  # fmt: skip
        e2e = EndToEnd(self.identity, self._public_key_of)  # keys from the records we hold
        self.forwarder = Forwarder(
            self.id, self.deliver, self._link_towards, e2e=e2e, in_flight=self.in_flight,
            body_bytes=self.body_bytes, max_body=config.max_body,
        )  # fmt: skip

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Node:
        """Bind, originate the first record, start dialling; return at once."""
        config = self.config
        endpoint = WebSocketEndpoint(self.accept, path=WS_PATH, max_message=codec.MAX_FRAME,
                                     admit=self._admit_link)  # fmt: skip
        clients = WebSocketEndpoint(self._client_channel, path=CLIENT_WS_PATH,
                                    max_message=MAX_MESSAGE, admit=self._admit_client)  # fmt: skip
        wsgi = self.wsgi = WSGIApp(
            self.router.handle, max_body=config.max_body, body_budget=self.body_bytes
        )
        limits = HTTPLimits(
            header_timeout=config.header_timeout, body_timeout=config.body_timeout,
            idle_timeout=config.idle_timeout, max_connections=config.max_connections,
            max_connections_per_client=config.max_connections_per_client,
            max_header_bytes=config.max_header_bytes,
        )  # fmt: skip
        front = CorsMiddleware(wsgi, self.cors, is_admin_page) if self.cors.enabled else wsgi
        self.server = Server(front, config.host, config.port, certfile=config.tls_cert,
                             keyfile=config.tls_key, websocket_app=[endpoint, clients],
                             limits=limits)  # fmt: skip
        self.server.start()
        if not HUB_WATCH.started:  # warns of a handler that holds the hub (xio.threads)
            HUB_WATCH.start()
        self.routes.compute_now()
        self.originator.start()
        self.routes.start()
        if config.mdns:
            self._start_discovery()
        for dialer in self.dialers:
            dialer.start()
        self._greenlets = [gevent.spawn(self._expire)]
        # debug: xio-node and app.main() print the one "listening on" line themselves.
        log.debug("node %s (%s) listening on %s", self.name, self.id, self.url)
        return self

    def serve_forever(self) -> None:
        """Block until ``stop`` is called."""
        self._stopped.wait()

    def stop(self) -> None:
        """Say goodbye to every peer, close links, stop serving."""
        if self._stopping:
            return
        self._stopping = True
        self.discovery.stop()
        for dialer in self.dialers:
            dialer.stop()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self.originator.stop()
        self.routes.stop()
        if self.mdns is not None:
            self.mdns.stop()
        links = list(self.link_table.all)
        for link in links:
            link.close("shutting_down")
        for link in links:  # their byes leave, or are given up on, within a second
            link.transport.join(timeout=1.5)
        if self.server is not None:
            self.server.stop(timeout=1.0)
        if self.state_lock is not None:
            self.state_lock.release()
        self._stopped.set()  # last: serve_forever returns, and the process may end, after this

    def cors_allows(self, origin: str | None) -> bool:
        """Tell whether a page of ``origin`` may use this node (``--cors``; xio.node.cors)."""
        return self.cors.allows(origin)

    def reload(self, config: NodeConfig, apps: dict[str, Resource]) -> ReloadPlan:
        """Apply a new configuration (SIGHUP) without dropping the links that stay (reload.py).

        Keys that need a restart (host, port, state_dir, TLS, mesh...) keep their old values.
        """
        plan = plan_reload(self.config, config, self.apps, apps, parse_peer)
        if plan.restart:
            log.warning("reload: %s changed, which needs a restart: kept as it is until then",
                        ", ".join(plan.restart))  # fmt: skip
        self.config = config = plan.config  # request_timeout, max_ttl, advertise: read live
        for spec in plan.peers_removed:
            url, pinned = parse_peer(spec)
            for dialer in [d for d in self.dialers if (d.url, d.expected_peer_id) == (url, pinned)]:
                dialer.stop()
                self.dialers.remove(dialer)
                peer_link = self.links.get(dialer.peer_id) if dialer.peer_id else None
                for link in {peer_link, *[ln for ln in self.link_table.all if ln.url == url]}:
                    if link is not None:
                        link.close("peer_removed")
        for spec in plan.peers_added:
            dialer = self._dialer(*parse_peer(spec), self.dial)
            self.dialers.append(dialer)
            dialer.start()
        for name in plan.apps_removed:
            del self.apps[name]
        self.apps.update(apps)
        self.in_flight.limit, self.body_bytes.limit = config.max_in_flight, config.body_budget
        self.policy.configure(policy_settings(config))
        if self.server is not None:
            self.wsgi.max_body = self.forwarder.max_body = config.max_body
        self.link_table.max_inbound = config.max_inbound_links
        self.store.limits = dataclasses.replace(
            self.store.limits, max_records=config.store_max_records,
            max_bytes=config.store_max_bytes, origin_quota=config.origin_quota,
        )  # fmt: skip
        self.link_limits = dataclasses.replace(
            self.link_limits, link_timeout=config.link_timeout,
            write_timeout=config.write_timeout, queue_bytes=config.link_queue_bytes,
            max_ttl_ms=int(config.max_ttl * 1000),
        )  # fmt: skip
        if plan.apps_added or plan.apps_removed or "advertise" in plan.live:
            self.routes.invalidate()  # our own apps are an input of routing
            self.originate()  # the record lists the apps and the URLs
        log.warning("reloaded: %s", plan.summary())
        return plan

    def drain(self, timeout: float | None = None) -> str:
        """Stop gracefully: serve what is in flight (``timeout`` s at most), then ``stop``.

        The steps and when the wait ends: xio.node.drain. Returns ``"drained"`` or
        ``"timed_out"`` (or ``"stopped"`` if ``stop`` came first).
        """
        timeout = self.config.drain_timeout if timeout is None else timeout
        if self.draining or self._stopping:
            return "stopped"
        self.draining = True
        started = time.monotonic()
        self.notifier.stopping()
        log.warning("draining: %d request(s) in flight, up to %gs", self.in_flight.used, timeout)
        if self.server is not None:
            self.server.stop_accepting()
        try:  # our apps leave the mesh: peers route their new requests away
            self.originator.originate()
        except Exception as exc:
            log.exception("originating the final record failed")
            self.loop_failed("refresh", exc)
        if self.mdns is not None:
            self.mdns.stop()  # its goodbyes
        # With no link, nothing routed here can still be on its way: no quiet spell to wait.
        clock = DrainClock(started, timeout, quiet=QUIET if self.link_table.all else 0.0)
        outcome = None
        while outcome is None and not self._stopping:
            gevent.sleep(0.05)
            outcome = clock.step(time.monotonic(), self._busy())
        if self._stopping:
            return "stopped"
        left = self.in_flight.used
        log.warning("drained in %.2fs%s", time.monotonic() - started,
                    f": {left} request(s) still in flight, cut" if left else "")  # fmt: skip
        self.stop()
        return outcome

    def _busy(self) -> int:
        """Return a count that is 0 when nothing is in flight (an HTTP request counts twice:
        in the budget while answered, in the server's ``active`` while written)."""
        return self.in_flight.used + (self.server.active if self.server is not None else 0)

    def readiness_facts(self) -> ReadinessFacts:
        """Return what ``/_xio/health/ready`` decides on (xio.node.health)."""
        linked, given_up = count_peers(self.dialers, self.links)
        return ReadinessFacts(
            draining=self.draining or self._stopping, listening=self.server is not None,
            originated=self.originator.originated > 0, peers_configured=len(self.dialers),
            peers_linked=linked, peers_given_up=given_up,
            uptime=time.time() - self.started_at,
        )  # fmt: skip

    def describe_status(self) -> str:
        """Return the one-line STATUS systemd shows: "serving, 3 links, 12 routes"."""
        state = "draining" if self.draining else "serving"
        return f"{state}, {len(self.links)} links, {len(self.table.reachable_set())} routes"

    def loop_failed(self, loop: str, exc: Exception) -> None:
        """Count an error that a long-lived loop survived (shown under /_xio/node)."""
        entry = self.loops.setdefault(loop, {"errors": 0, "last_error": ""})
        entry["errors"] += 1
        entry["last_error"] = f"{type(exc).__name__}: {exc}"[:300]

    # -- what the node reports (``/_xio/``: xio.node.admin) -------------------------------

    def forwarding_counts(self) -> Counter[str]:
        """Return the forwarder's counts with those of every link's session, closed or not."""
        return self.forwarder.counts + self.link_table.forwarding_counts()

    def refusals(self, forwarding: Counter[str] | None = None) -> dict[str, int]:
        """Return what our budgets and caps refused, by reason."""
        forwarding = self.forwarding_counts() if forwarding is None else forwarding
        refused = Counter(self.refused)
        if self.server is not None:
            refused.update(self.server.refused)  # the HTTP front's: http_<status>, connections
        for reason in _FORWARDING_REFUSALS:
            if forwarding.get(reason):
                refused[reason] += forwarding[reason]
        return dict(sorted(refused.items()))

    def budgets(self) -> dict[str, dict]:
        """Return every budget in use and its limit."""
        store = self.store.usage()
        e2e = self.forwarder.e2e
        return {
            "in_flight": self.in_flight.describe(),
            "body_bytes": self.body_bytes.describe(),
            "store_records": {"used": store["records"], "limit": store["max_records"]},
            "store_bytes": {"used": store["bytes"], "limit": store["max_bytes"]},
            "inbound_links": {
                "used": self.link_table.inbound,
                "limit": self.config.max_inbound_links,
            },  # fmt: skip
            "http_connections": {
                "used": self.server.connections if self.server else 0,
                "limit": self.server.max_connections if self.server else 0,
            },
            "link_queue_bytes": {
                "used": self.link_table.queued_bytes(),
                "limit_per_link": self.config.link_queue_bytes,
            },
            # End to end (xio.peering.integrity): keys cached and (src, n) pairs remembered.
            "e2e_keys": {"used": len(e2e.keys), "limit": e2e.keys.capacity},
            "e2e_replay_pairs": {"used": len(e2e.window), "limit": e2e.window.capacity},
        }

    def status(self) -> dict:
        """Return a snapshot of this node: identity, addresses, apps, budgets, counters."""
        forwarding = self.forwarding_counts()
        now = time.monotonic()
        dialers = [*self.dialers, *self.discovery.dialers.values()]
        return {
            "id": self.id, "name": self.name, "version": __version__,
            "urls": self.advertised_urls(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "apps": sorted(self.apps), "links": len(self.links), "records": len(self.store),
            "seq": self.store.own_seq,
            "rejected": dict(sorted(self.rejected.items())),
            "refused": self.refusals(forwarding),
            "records_judged": {k: v for k, v in sorted(self.store.counters.items()) if v},
            "forwarding": dict(sorted(forwarding.items())),
            "closed_links": dict(sorted(self.link_table.closed_reasons.items())),
            "membership": self.membership_counts(),
            "mesh": self.closed.describe() if self.closed is not None else None,
            "loops": self.loops, "budgets": self.budgets(), "routing": self.routes.stats(),
            "link_queues": [link.queue_status(now) for link in self.link_table],
            "originated": {"records": self.originator.originated,
                           "trimmed": self.originator.trimmed},
            "dialling": [dialer.status() for dialer in dialers],
            "mdns": self.mdns.describe() if self.mdns is not None else None,
            "policy": self.policy.describe(now, self.table.name_of),
        }  # fmt: skip

    def membership_counts(self) -> dict[str, int]:
        """Return what closed mode refused (peers, records, revocations), by reason."""
        counts = Counter(self.store.membership)
        if self.closed is not None:
            counts.update(self.closed.counts)
        return dict(sorted(counts.items()))

    def is_member(self, node_id: str) -> tuple[bool, str | None]:
        """Tell whether ``node_id`` holds a valid certificate now, and its name in it.

        In open mode no node is a member: ``(False, None)``.
        """
        if self.closed is None:
            return False, None
        return self.closed.member(node_id, self.store.get(node_id))

    def mesh_publish(self, text: str) -> dict:
        """Apply an armored revocation or renewed certificate (``POST /_xio/mesh``)."""
        if self.closed is None:
            raise HTTPError(422, "this node is in open mode (started without --mesh-pub and "
                            "--cert): it takes no certificate or revocation")  # fmt: skip
        return self.closed.publish(text, revoke=self._apply_revocation, renew=self.originate)

    def peer_status(self) -> list[dict]:
        """Return a snapshot of every link, established or being set up."""
        now, wall_now = time.monotonic(), time.time()
        return [link.status(now, wall_now) for link in self.link_table]

    def route_status(self) -> list[dict]:
        """Return every reachable node: next hop, cost, seq and age of its record."""
        now_ms = time.time() * 1000
        table = self.table
        result = []
        for route in table.routes():
            record = self.store.get(route.dst)
            result.append({
                "destination": route.dst, "name": table.name_of(route.dst),
                "next_hop": route.next_hop, "cost": route.cost, "hops": route.hops,
                "seq": record.seq if record else None,
                "age_s": round((now_ms - record.issued_ms) / 1000, 3) if record else None,
                "apps": record.app_names() if record else [],
            })  # fmt: skip
        return result

    def mesh_map(self) -> dict:
        """Return the mesh as this node sees it: nodes, links, RTTs (``GET /_xio/map``)."""
        own = self.store.own
        records = [*self.store.records(), *([own.record] if own is not None else [])]
        return mesh_map(self.id, records, self._link_rtts(), int(time.time() * 1000),
                        self.table.reachable_set())  # fmt: skip

    def _link_rtts(self) -> dict[str, float | None]:
        return {peer: link.session.rtt for peer, link in self.links.items()}

    # -- discovery (mDNS) ---------------------------------------------------------------

    def _start_discovery(self) -> None:
        from ..peering.mdns import Discovery  # the one module that imports zeroconf

        config = self.config
        advertise = config.advertise_addresses
        if not advertise and config.host not in ("0.0.0.0", "::", ""):
            advertise = [config.host]  # listening on one address: announce only that one
        self.mdns = Discovery(
            node_id=self.id, name=self.name, port=self.port,
            on_discovered=self.discovery.discovered, on_vanished=self.discovery.vanished,
            interfaces=config.mdns_interfaces, advertise_addresses=advertise,
            tls=bool(config.tls_cert), ws_path=WS_PATH,
        ).start()  # fmt: skip

    @property
    def url(self) -> str:
        """Return the HTTP URL this node serves on."""
        return self.server.url if self.server else ""

    @property
    def port(self) -> int:
        return self.server.port if self.server else 0

    def advertised_urls(self) -> list[str]:
        """Return the URLs put in this node's record."""
        if self.config.advertise:
            return list(self.config.advertise)
        return [self.url] if self.server else []

    # -- links (the LinkOwner of every link) ----------------------------------------------

    def _dialer(self, url: str, expected: str | None, connect) -> Dialer:
        return Dialer(url, expected, connect, self.links.get, on_error=self.loop_failed)

    def dial(self, url: str, expected_peer_id: str | None) -> Link:
        """Connect to ``url`` and start a link as its initiator."""
        if self._peer_tls is None and url.startswith("wss:"):
            self._peer_tls = peer_tls_context()  # the system's authorities, loaded once
        transport = connect(url, timeout=5.0, max_message=codec.MAX_FRAME,
                            ssl_context=self._peer_tls)  # fmt: skip
        return self._new_link(transport, "initiator", expected_peer_id, url)

    def _admit_link(self, environ: dict):
        """Refuse a new inbound link over the rate or the cap (before the upgrade)."""
        return self.link_table.admit(environ.get("REMOTE_ADDR") or "?", time.monotonic())

    def _admit_client(self, environ: dict):
        """Refuse a client channel's upgrade from a browser page of an origin not allowed."""
        origin = environ.get("HTTP_ORIGIN")
        own = same_origin(origin, environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme", "http"))
        if origin is None or own or self.cors.allows(origin):
            return None
        self.refused["client_ws_origin"] += 1
        return ("403 Forbidden", f"origin {origin[:100]} may not open a client channel here "
                "(xio-node --cors ORIGIN allows one)", [])  # fmt: skip

    def _client_channel(self, transport) -> None:
        ClientChannel(transport, self.router.handle, transport.environ,
                      max_body=self.config.max_body, body_budget=self.body_bytes,
                      reject=self.count_rejection, refuse=self._refuse_client)  # fmt: skip

    def _refuse_client(self, reason: str) -> None:
        self.refused[reason] += 1

    def accept(self, transport) -> None:
        """Start a link as responder on a WebSocket a peer opened to us."""
        self._new_link(transport, "responder", None, None)

    def _new_link(self, transport, role: str, expected: str | None, url: str | None) -> Link:
        closed = self.closed
        handshake = Handshake(
            self.identity, role, self.name, expected_peer_id=expected,
            caps=(SUMMARY_CAP, STREAM_CAP, UPLOAD_CAP, REVOKE_CAP) if closed
            else (SUMMARY_CAP, STREAM_CAP, UPLOAD_CAP),
            timeout_ms=int(self.config.link_timeout * 1000),
            cert=closed.hello_cert if closed else None,
            peer_check=closed.check_peer if closed else None,
        )  # fmt: skip
        session = LinkSession(handshake, limits=self.link_limits, body_budget=self.body_bytes)
        link = Link(transport, session, self, url=url)
        self.link_table.add(link)
        link.start()
        return link

    def link_established(self, link: Link) -> None:
        """Adopt a newly authenticated link, collapsing a duplicate to the same peer."""
        if self.link_table.adopt(link):
            if self.closed is not None and REVOKE_CAP in link.session.peer_caps:
                # Every one we hold, before the records: taken as the writer has room, never
                # dropped for a full queue (4096 of them are more than a small queue holds).
                link.add_source(paced(iter(self.closed.revocation_frames())))
            self.exchange.link_up(link)
            self._links_changed()

    def link_closed(self, link: Link, closed: Closed) -> None:
        """Forget a closed link (the forwarder has answered what waited on it)."""
        self.exchange.link_down(link)
        if self.link_table.drop(link, closed):
            self._links_changed()

    def link_message(self, link: Link, message) -> None:
        """Take a record, summary, want or revocation from an established link."""
        if type(message) is Revoke:
            if self.closed is not None:  # else ignored: we never announced the capability
                try:
                    signed = self.closed.receive(message.revocation)
                except RemoteProtocolError as exc:  # forged: counted, and its link ends
                    link.close(exc.reason)
                    return
                if signed is not None:
                    self._apply_revocation(signed, source=link)
            return
        self.exchange.receive(link, message)

    def _apply_revocation(self, signed, source: Link | None = None) -> dict:
        """Cut a revoked node off: close its links, drop its record, flood the revocation."""
        node = signed.revocation.node_id
        cut = [link for link in self.link_table.all if link.peer_id == node]
        for link in cut:
            link.close("revoked")
        dropped = self.store.forget(node)
        if dropped:
            self.topology.remove(node)  # bumps its version: routes follow
        flooded = self.closed.flood(signed, list(self.links.values()), skip=source)
        log.warning("node %s is revoked: %d link(s) closed, record %s, flooded on %d link(s)",
                    node, len(cut), "dropped" if dropped else "not held", flooded)  # fmt: skip
        if node == self.id:
            log.error("this node's own certificates are revoked: members will refuse it")
        return {"closed_links": len(cut), "dropped_record": dropped, "flooded": flooded}

    def count_rejection(self, reason: str) -> None:
        """Count one rejected frame or record by reason (shown under /_xio/node)."""
        self.rejected[reason] += 1

    def _reject_record(self, link: Link, reason: str) -> None:
        link.session.rejected[reason] += 1
        self.count_rejection(reason)

    def _links_changed(self) -> None:
        self.store.set_context(neighbours=self.links.keys(),
                               reachable=self.routes.table.reachable_set())  # fmt: skip
        self.originator.changed()
        self.notifier.status(self.describe_status())

    def _public_key_of(self, node_id: str) -> bytes | None:
        record = self.store.get(node_id)
        return record.public_key if record is not None else None

    def _link_towards(self, dst: str) -> Link | None:
        next_hop = self.routes.table.next_hop(dst)
        return self.links.get(next_hop) if next_hop else None

    # -- records and routes -------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        """Return the current routing table (computed in the background, never here)."""
        return self.routes.table

    def _route_inputs(self):
        return {peer: 1 for peer in self.links}, list(self.apps), self.name

    def _table_computed(self, table: RoutingTable) -> None:
        self.metrics.route_compute.observe(self.routes.stats()["last_ms"] / 1000)
        self.store.set_context(neighbours=self.links.keys(), reachable=table.reachable_set())
        for new in self.app_hosts.update(table, int(time.time() * 1000)):
            log.warning("app %r has a second host: node %s (%s) beside %s", new.app,
                        table.name_of(new.node), new.node, ", ".join(new.others))  # fmt: skip

    def _record_content(self) -> RecordContent:
        # Draining: the final record has no apps, so peers send their new requests elsewhere.
        apps = {} if self.draining else {name: _summary(app) for name, app in self.apps.items()}
        links = {peer: 1 for peer in self.links}
        rtts = rtt_ext(self._link_rtts())  # as of this record (xio.node.meshmap)
        ext = {RTT_EXT: rtts} if rtts else {}
        if self.closed is None:
            return RecordContent(self.name, __version__, self.advertised_urls(), links, apps, ext)
        return RecordContent(self.name, __version__, self.advertised_urls(), links,
                             self.closed.advertised_apps(apps),
                             {**self.closed.record_ext(), **ext})  # fmt: skip

    def originate(self) -> None:
        """Sign a fresh record of this node and flood it to every link, now."""
        self.originator.originate()

    def _own_seq_seen(self, next_seq: int) -> None:
        self.originator.raise_seq(next_seq)

    def _expire(self) -> None:
        while True:
            gevent.sleep(1.0)
            try:
                for origin in self.store.expire(int(time.time() * 1000)):
                    self.topology.remove(origin)  # bumps its version: routes follow
                if self.closed is not None:
                    self._cut_lapsed_peers()
                    for origin in self.store.recheck(int(time.time() * 1000)):
                        self.topology.remove(origin)  # its certificate lapsed
            except Exception as exc:
                log.exception("expiring records failed")
                self.loop_failed("expire", exc)

    def _cut_lapsed_peers(self) -> None:
        # A certificate that expires, or is revoked, while its link is up ends that link.
        for link in list(self.links.values()):
            hello = link.session.handshake.peer_hello
            reason = self.closed.lapsed(hello) if hello is not None else None
            if reason is not None:
                link.close(reason)

    # -- answering ----------------------------------------------------------------------

    def deliver(
        self, frame: RequestFrame, deadline: float, upload=None
    ) -> ResponseFrame | Streamed:
        """Answer a request that came over a link for an app hosted here.

        The forwarder has checked its end-to-end MAC: ``frame.src`` is the authentic ingress.
        ``upload``: the request's streamed body, read when the app asks (``req.body``, whole;
        ``req.stream``, as it comes).
        """
        started = time.perf_counter()
        trail = via_of(frame.headers)
        app = self.apps.get(frame.app)
        if app is None:
            description = f"app {frame.app!r} is not hosted on node {self.name}"
            answer = error_frame(404, description, via=extend_via(trail, self.id))
        else:
            req = Request(frame.method, frame.path, query=frame.query,
                          headers=Headers(frame.headers), body=frame.body,
                          client=self._caller(frame.src), source=upload)  # fmt: skip
            response = self.answer_locally(app, req, deadline, trail)
            answer = response_to_frame(response, req.headers.get("Accept"),
                                       self.forwarder.counts, request_id=frame.request_id,
                                       stream=frame.win is not None)  # fmt: skip
        # A peer names any app: only hosted ones get a label of their own.
        self.metrics.requests.observe(frame.app if app is not None else "_unknown",
                                      method_label(frame.method), answer.status, "link",
                                      time.perf_counter() - started)  # fmt: skip
        return answer

    def _caller(self, src: str) -> Caller:
        """Return ``req.client`` of a request from ``src``, whose MAC the forwarder checked."""
        member, certified_name = self.is_member(src)
        record = self.store.get(src)
        name = certified_name or (record.name if record is not None else None)
        return Caller(node_id=src, name=name, member=member)

    def answer_locally(
        self, app: Resource, req: Request, deadline: float, trail: str = ""
    ) -> Response:
        """Run ``app`` on ``req``, whose ``url_path`` is the raw path below the app.

        The path is decoded once, segment by segment, by the resource tree (``RawPath``),
        whether the request came over HTTP here or over a link. A request that crossed the
        mesh (``trail``) gets its trail back in ``X-Xio-Via`` with this node appended.
        """
        req.url_path = RawPath("www/" + req.url_path.lstrip("/"))
        response = self._run_app(app, req, deadline)
        if trail:
            response.headers[VIA] = extend_via(trail, self.id)
        return response

    def _run_app(self, app: Resource, req: Request, deadline: float) -> Response:
        # The bulkhead: one app may run so many requests here at once, the rest wait nowhere.
        name = next((key for key, hosted in self.apps.items() if hosted is app), "_main")
        bulkhead = self.policy.bulkhead(name)
        if not bulkhead.enter():
            self.refused["bulkhead_full"] += 1
            busy = f"app {name!r} runs {bulkhead.limit} requests at once here, its bulkhead"
            return error_response(HTTPError(503, busy, headers={"Retry-After": "1",
                                                                REFUSED: "bulkhead"}))  # fmt: skip
        try:
            return self._run_app_now(app, req, deadline)
        finally:
            bulkhead.leave()

    def _run_app_now(self, app: Resource, req: Request, deadline: float) -> Response:
        if app.threads:  # on the app's own threads: the hub keeps serving links meanwhile
            if req.body_pending:  # a body still arriving is read by the hub, not a thread
                try:
                    _ = req.body
                except HTTPError as exc:
                    return error_response(exc)
            return answer_on_threads(app, req, deadline, self.refused)
        # A bare loop timer that throws only if it fires: no gevent.Timeout per request.
        timer = get_hub().loop.timer(max(deadline - time.monotonic(), 0.0))
        timer.start(getcurrent().throw, _AppDeadline)
        try:
            return app.handle(req)
        except _AppDeadline:
            return error_response(HTTPError(504, "the app did not answer before the deadline"))
        finally:
            timer.close()


class _AppDeadline(BaseException):
    """Thrown into an app's handler at its deadline (a BaseException, as gevent.Timeout is,
    so that a handler's ``except Exception`` does not swallow it)."""


def _summary(app: Resource) -> str:
    doc = getattr(app, "doc", "") or ""
    public = getattr(app, "children", {}).get(PUBLIC)
    doc = doc or (public.doc if public is not None else "")
    return doc.strip().split("\n", 1)[0][:200]


__all__ = ["Node", "NodeConfig", "parse_peer"]
