"""The node: one process that hosts apps, links to peers and routes the mesh's requests.

Theory of operation. A ``Node`` composes the parts below it and holds the state that ties
them together: its identity, the established links (one per peer), the record store and the
routing topology, and the budgets every part draws from.

- Links come from ``Dialer`` s (``--peers``, mDNS) and from the WebSocket endpoint, which
  admits at most ``max_inbound_links`` and ``handshake_rate`` new links per second per source
  address. When a link is established the ``RecordExchange`` starts the summary-first initial
  exchange on it and the ``Originator`` re-originates (held down under churn); two links to
  one peer collapse to the one ``keep_link`` names, on both ends.
- Records arriving are judged by the store (budgets, quotas, eviction), flooded when new, and
  change the ``Topology`` only when links, apps or names change; the ``RouteKeeper``
  recomputes the routing table in the background and swaps it in, so requests never wait for
  routing.
- HTTP requests go through ``router.Router``; requests that arrive over links go through the
  ``Forwarder``. Both end in ``answer_locally`` for an app hosted here. Requests in flight and
  buffered bodies count against two node-wide budgets, shared by HTTP and every link.
- Every long-lived loop (origination, expiry, routing, dialling) catches, counts and goes on;
  ``loops`` under ``/_xio/node`` shows what failed.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent import get_hub, getcurrent
from gevent.event import Event

from .. import __version__
from ..budget import Budget
from ..constants import DEFAULT_PORT, PUBLIC, WS_PATH, MiB
from ..errors import ConfigError, ConnectError, HTTPError
from ..peering import codec
from ..peering.codec import RequestFrame, ResponseFrame
from ..peering.forwarding import VIA, Forwarder, error_frame, extend_via, via_of
from ..peering.handshake import Handshake
from ..peering.identity import Identity, is_node_id
from ..peering.links import Dialer, Link
from ..peering.reasons import FORWARDING_REFUSALS as _FORWARDING_REFUSALS
from ..peering.records import DEFAULT_LIFETIME_MS
from ..peering.routing import RoutingTable, Topology, keep_link
from ..peering.schedule import RateLimiter
from ..peering.session import Closed, LinkLimits, LinkSession
from ..peering.store import RecordStore, StoreLimits
from ..peering.transport import WebSocketEndpoint, connect
from ..request import Headers, Request, Response
from ..resource import RawPath, Resource
from ..server import DEFAULT_MAX_BODY, HTTPLimits, Server, WSGIApp
from ..statedir import StateLock
from ..threads import HUB_WATCH, answer_on_threads
from .exchange import SUMMARY_CAP, RecordExchange
from .frames import response_to_frame
from .originator import Originator, RecordContent
from .router import Router
from .routes import RouteKeeper

log = logging.getLogger("xio.node")

#: A node found by mDNS that refuses connections this many times in a row is forgotten
#: until it is announced again (a killed node sends no goodbye).
DISCOVERY_GIVE_UP = 5
#: The loops whose failures are counted under /_xio/node "loops".
LOOPS = ("refresh", "expire", "routes", "dial")


_HTTP_DEFAULTS = HTTPLimits()


@dataclass
class NodeConfig:
    """Everything a node is started with; the CLI and ``xio.node()`` fill it in."""

    name: str = field(default_factory=socket.gethostname)
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    peers: list[str] = field(default_factory=list)
    state_dir: Path | None = None  # None: a fresh identity that lives as long as the process
    mdns: bool = False
    mdns_interfaces: list[str] = field(default_factory=list)  # names or addresses; [] = auto
    advertise_addresses: list[str] = field(default_factory=list)  # for mDNS A/AAAA records
    max_peers: int = 64  # discovery links to no more peers than this
    link_timeout: float = 2.5
    record_lifetime: float = DEFAULT_LIFETIME_MS / 1000
    request_timeout: float = 30.0
    max_body: int = DEFAULT_MAX_BODY
    tls_cert: str | None = None
    tls_key: str | None = None
    advertise: list[str] = field(default_factory=list)
    # Budgets and limits: every one is ours to set, none a peer's (docs/PROTOCOL.md, 12).
    max_inbound_links: int = 128  # well below the 256 links a record may list
    handshake_rate: float = 10.0  # new links per second per source address (burst: twice)
    store_max_records: int = 4096
    store_max_bytes: int = 32 * MiB
    record_max_size: int = 16 * 1024
    origin_quota: int = 1024  # new origins one neighbour may introduce per minute
    max_in_flight: int = 4096  # requests held at once, HTTP and links together
    body_budget: int = 256 * MiB  # request bodies buffered at once, HTTP and links together
    link_queue_bytes: int = 8 * MiB  # frames waiting to be sent on one link
    write_timeout: float = 5.0  # a link whose frames wait this long with no progress is closed
    max_ttl: float = 3600.0  # a request's deadline is never further away than this
    min_originate_interval: float = 1.0  # hold-down between originations caused by changes
    # The HTTP front (xio.server.HTTPLimits; README, "HTTP limits").
    header_timeout: float = _HTTP_DEFAULTS.header_timeout
    body_timeout: float = _HTTP_DEFAULTS.body_timeout
    idle_timeout: float = _HTTP_DEFAULTS.idle_timeout
    max_connections: int = _HTTP_DEFAULTS.max_connections
    max_connections_per_client: int = _HTTP_DEFAULTS.max_connections_per_client
    max_header_bytes: int = _HTTP_DEFAULTS.max_header_bytes


def parse_peer(spec: str) -> tuple[str, str | None]:
    """Return ``(websocket_url, pinned_id)`` for ``ws://h:p``, ``http://h:p``, ``h:p``...

    An optional ``#<node-id>`` suffix pins the id the peer must prove.
    """
    spec, _, pinned = spec.strip().partition("#")
    if pinned and not is_node_id(pinned):
        raise ConfigError(f"peer {spec}#{pinned}: {pinned!r} is not a node id")
    scheme, sep, rest = spec.partition("://")
    if not sep:
        scheme, rest = "ws", spec
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(scheme.lower())
    if scheme is None or not rest or rest.startswith("/"):
        raise ConfigError(f"peer {spec!r}: expected ws://host:port, wss://, http://, or host:port")
    address, slash, path = rest.partition("/")
    if ":" not in address.rsplit("]", 1)[-1]:
        address += f":{DEFAULT_PORT}"
    port = address.rsplit(":", 1)[1]
    if not (port.isdigit() and 0 < int(port) < 65536):  # else it would be dialled forever
        raise ConfigError(f"peer {spec!r}: {port!r} is not a port (1 to 65535)")
    return f"{scheme}://{address}{'/' + path if slash and path else WS_PATH}", pinned or None


class Node:
    """A running xio node; see the module docstring."""

    def __init__(
        self,
        config: NodeConfig,
        apps: dict[str, Resource] | None = None,
        main_app: Resource | None = None,
    ) -> None:
        self.config = config
        self.apps: dict[str, Resource] = dict(apps or {})
        self.main_app = main_app
        self.state_lock: StateLock | None = None
        if config.state_dir is not None:  # one node per state dir: else one identity twice
            self.state_lock = StateLock.acquire(Path(config.state_dir))
            self.identity = Identity.load_or_create(Path(config.state_dir))
        else:
            self.identity = Identity.generate()
        self.id = self.identity.node_id
        self.name = config.name
        self.started_at = time.time()
        self.links: dict[str, Link] = {}  # peer id -> its one established link
        self.all_links: set[Link] = set()
        self.rejected: Counter[str] = Counter()  # a peer's fault, by reason
        self.refused: Counter[str] = Counter()  # our budgets and caps at work, by reason
        self.closed_links: Counter[str] = Counter()
        self._closed_link_counts: Counter[str] = Counter()  # counts of sessions now closed
        self.loops = {name: {"errors": 0, "last_error": ""} for name in LOOPS}
        self.in_flight = Budget("in_flight", config.max_in_flight)
        self.body_bytes = Budget("body_bytes", config.body_budget)
        self.link_limits = LinkLimits(
            link_timeout=config.link_timeout, write_timeout=config.write_timeout,
            queue_bytes=config.link_queue_bytes, max_ttl_ms=int(config.max_ttl * 1000),
        )  # fmt: skip
        self.store = RecordStore(self.id, limits=StoreLimits(
            max_records=config.store_max_records, max_bytes=config.store_max_bytes,
            max_record_size=config.record_max_size, origin_quota=config.origin_quota,
        ))  # fmt: skip
        self.topology = Topology()
        self.routes = RouteKeeper(self.id, self.topology, self._route_inputs,
                                  on_table=self._table_computed)  # fmt: skip
        self.exchange = RecordExchange(
            self.store, self.topology, self.links, routes_changed=self.routes.invalidate,
            own_seq_seen=self._own_seq_seen, reject=self._reject_record, refused=self.refused,
        )  # fmt: skip
        self.originator = Originator(
            self.identity, self.store, self._record_content, self.exchange.flood_own,
            state_dir=config.state_dir, lifetime=config.record_lifetime,
            min_interval=config.min_originate_interval, max_size=config.record_max_size,
            on_error=self.loop_failed,
        )  # fmt: skip
        self.forwarder = Forwarder(self.id, self.deliver, self._link_towards,
                                   in_flight=self.in_flight, body_bytes=self.body_bytes)  # fmt: skip
        self._handshakes = RateLimiter(config.handshake_rate, 2 * config.handshake_rate)
        self._inbound = 0  # links accepted and not yet closed
        self.dialers = [self._dialer(*parse_peer(p), self.dial) for p in config.peers]
        self._stopping = False
        self._stopped = Event()
        self._greenlets: list = []
        self.server: Server | None = None
        self.mdns = None
        self.discovery_dialers: dict[str, Dialer] = {}  # peer id -> dialer started by mDNS
        self._discovery_failures: dict[str, int] = {}
        self.router = Router(self)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Node:
        """Bind, originate the first record, start dialling; return at once."""
        config = self.config
        endpoint = WebSocketEndpoint(self.accept, path=WS_PATH, max_message=codec.MAX_FRAME,
                                     admit=self._admit_link)  # fmt: skip
        wsgi = WSGIApp(self.router.handle, max_body=config.max_body, body_budget=self.body_bytes)
        limits = HTTPLimits(
            header_timeout=config.header_timeout, body_timeout=config.body_timeout,
            idle_timeout=config.idle_timeout, max_connections=config.max_connections,
            max_connections_per_client=config.max_connections_per_client,
            max_header_bytes=config.max_header_bytes,
        )  # fmt: skip
        self.server = Server(wsgi, config.host, config.port, certfile=config.tls_cert,
                             keyfile=config.tls_key, websocket_app=endpoint,
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
        for dialer in [*self.dialers, *self.discovery_dialers.values()]:
            dialer.stop()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self.originator.stop()
        self.routes.stop()
        if self.mdns is not None:
            self.mdns.stop()
        links = list(self.all_links)
        for link in links:
            link.close("shutting_down")
        for link in links:  # their byes leave, or are given up on, within a second
            link.transport.join(timeout=1.5)
        if self.server is not None:
            self.server.stop(timeout=1.0)
        if self.state_lock is not None:
            self.state_lock.release()
        self._stopped.set()  # last: serve_forever returns, and the process may end, after this

    def forwarding_counts(self) -> Counter[str]:
        """Return the forwarder's counts with those of every link's session, closed or not."""
        counts = self.forwarder.counts + self._closed_link_counts
        for link in self.all_links:
            counts.update(link.session.counts)
        return counts

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
        return {
            "in_flight": self.in_flight.describe(),
            "body_bytes": self.body_bytes.describe(),
            "store_records": {"used": store["records"], "limit": store["max_records"]},
            "store_bytes": {"used": store["bytes"], "limit": store["max_bytes"]},
            "inbound_links": {"used": self._inbound, "limit": self.config.max_inbound_links},
            "http_connections": {
                "used": self.server.connections if self.server else 0,
                "limit": self.server.max_connections if self.server else 0,
            },
            "link_queue_bytes": {
                "used": sum(link.session.queued_bytes for link in self.all_links),
                "limit_per_link": self.config.link_queue_bytes,
            },
        }

    def loop_failed(self, loop: str, exc: Exception) -> None:
        """Count an error that a long-lived loop survived (shown under /_xio/node)."""
        entry = self.loops.setdefault(loop, {"errors": 0, "last_error": ""})
        entry["errors"] += 1
        entry["last_error"] = f"{type(exc).__name__}: {exc}"[:300]

    # -- discovery (mDNS) ---------------------------------------------------------------

    def _start_discovery(self) -> None:
        from ..peering.mdns import Discovery  # the one module that imports zeroconf

        config = self.config
        advertise = config.advertise_addresses
        if not advertise and config.host not in ("0.0.0.0", "::", ""):
            advertise = [config.host]  # listening on one address: announce only that one
        self.mdns = Discovery(
            node_id=self.id, name=self.name, port=self.port, on_discovered=self.discovered,
            on_vanished=self.vanished, interfaces=config.mdns_interfaces,
            advertise_addresses=advertise, tls=bool(config.tls_cert), ws_path=WS_PATH,
        ).start()  # fmt: skip

    def discovered(self, node_id: str, urls: list[str]) -> None:
        """Link to a node found by mDNS, unless linked, dialling it already, or full."""
        if node_id == self.id or not urls or node_id in self.links:
            return
        if node_id in self.discovery_dialers or self._stopping:
            return
        if any(dialer.peer_id == node_id for dialer in self.dialers):
            return
        peers = len(self.links.keys() | self.discovery_dialers.keys())
        if peers >= self.config.max_peers:
            log.warning("not linking to discovered %s: %d peers already", node_id, peers)
            return
        dialer = self._dialer(urls[0], node_id, self._dial_discovered)
        self.discovery_dialers[node_id] = dialer
        dialer.start()

    def vanished(self, node_id: str) -> None:
        """Forget a node that said goodbye (or stays unreachable): stop dialling, unlink."""
        dialer = self.discovery_dialers.pop(node_id, None)
        self._discovery_failures.pop(node_id, None)
        if dialer is None:
            return
        dialer.stop()
        link = self.links.get(node_id)
        if link is not None:
            link.close("peer_gone")

    def _dial_discovered(self, url: str, node_id: str | None) -> Link:
        try:
            link = self.dial(url, node_id)
        except ConnectError:
            failures = self._discovery_failures.get(node_id, 0) + 1
            self._discovery_failures[node_id] = failures
            if failures >= DISCOVERY_GIVE_UP:  # gone without a goodbye (killed, unplugged)
                log.info("discovered node %s unreachable %d times: forgotten", node_id, failures)
                gevent.spawn(self.vanished, node_id)
            raise
        self._discovery_failures.pop(node_id, None)
        return link

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

    # -- links --------------------------------------------------------------------------

    def _dialer(self, url: str, expected: str | None, connect) -> Dialer:
        return Dialer(url, expected, connect, self.links.get, on_error=self.loop_failed)

    def dial(self, url: str, expected_peer_id: str | None) -> Link:
        """Connect to ``url`` and start a link as its initiator."""
        transport = connect(url, timeout=5.0, max_message=codec.MAX_FRAME)
        return self._new_link(transport, "initiator", expected_peer_id, url)

    def _admit_link(self, environ: dict):
        """Refuse a new inbound link over the rate or the cap (before the upgrade)."""
        address = environ.get("REMOTE_ADDR") or "?"
        if not self._handshakes.allow(address, time.monotonic()):
            self.refused["handshake_rate"] += 1
            return (
                "429 Too Many Requests",
                "too many new links from this address",
                [("Retry-After", "1")],
            )
        if self._inbound >= self.config.max_inbound_links:
            self.refused["inbound_links_full"] += 1
            return (
                "503 Service Unavailable",
                "this node accepts no more links",
                [("Retry-After", "5")],
            )
        return None

    def accept(self, transport) -> None:
        """Start a link as responder on a WebSocket a peer opened to us."""
        self._inbound += 1
        self._new_link(transport, "responder", None, None)

    def _new_link(self, transport, role: str, expected: str | None, url: str | None) -> Link:
        handshake = Handshake(
            self.identity, role, self.name, expected_peer_id=expected, caps=(SUMMARY_CAP,),
            timeout_ms=int(self.config.link_timeout * 1000),
        )  # fmt: skip
        session = LinkSession(handshake, limits=self.link_limits, body_budget=self.body_bytes)
        link = Link(transport, session, self, url=url)
        self.all_links.add(link)
        link.start()
        return link

    def link_established(self, link: Link) -> None:
        """Adopt a newly authenticated link, collapsing a duplicate to the same peer."""
        existing = self.links.get(link.peer_id)
        if existing is not None and existing is not link:
            keep = keep_link(existing.session.handshake.link_key, link.session.handshake.link_key)
            loser = link if keep == existing.session.handshake.link_key else existing
            loser.close("duplicate_link")
            if loser is link:
                return
        self.links[link.peer_id] = link
        log.info("link up: %s (%s)", link.peer_name, link.peer_id)
        self.exchange.link_up(link)
        self._links_changed()

    def link_closed(self, link: Link, closed: Closed) -> None:
        """Forget a closed link (the forwarder has answered what waited on it)."""
        self.all_links.discard(link)
        if not link.initiator:
            self._inbound -= 1
        self.exchange.link_down(link)
        self.closed_links[closed.reason.split(":", 1)[0]] += 1
        self._closed_link_counts.update(link.session.counts)
        link.session.counts.clear()  # counted once, here, from now on
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            log.info("link down: %s (%s): %s", link.peer_name, link.peer_id, closed.reason)
            self._links_changed()

    def link_message(self, link: Link, message) -> None:
        """Take a record, summary or want from an established link."""
        self.exchange.receive(link, message)

    def count_rejection(self, reason: str) -> None:
        """Count one rejected frame or record by reason (shown under /_xio/node)."""
        self.rejected[reason] += 1

    def _reject_record(self, link: Link, reason: str) -> None:
        link.session.rejected[reason] += 1
        self.count_rejection(reason)

    def _links_changed(self) -> None:
        self.store.set_context(neighbours=self.links.keys(),
                               reachable=self.routes.table.reachable_set())  # fmt: skip
        self.routes.invalidate()
        self.originator.changed()

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
        self.store.set_context(neighbours=self.links.keys(), reachable=table.reachable_set())

    def _record_content(self) -> RecordContent:
        apps = {name: _summary(app) for name, app in self.apps.items()}
        links = {peer: 1 for peer in self.links}
        return RecordContent(self.name, __version__, self.advertised_urls(), links, apps)

    def originate(self) -> None:
        """Sign a fresh record of this node and flood it to every link, now."""
        self.originator.originate()

    def _own_seq_seen(self, next_seq: int) -> None:
        self.originator.raise_seq(next_seq)

    def _expire(self) -> None:
        while True:
            gevent.sleep(1.0)
            try:
                removed = self.store.expire(int(time.time() * 1000))
                changed = False
                for origin in removed:
                    changed = self.topology.remove(origin) or changed
                if changed:
                    self.routes.invalidate()
            except Exception as exc:
                log.exception("expiring records failed")
                self.loop_failed("expire", exc)

    # -- answering ----------------------------------------------------------------------

    def deliver(self, frame: RequestFrame, deadline: float) -> ResponseFrame:
        """Answer a request that came over a link for an app hosted here."""
        trail = via_of(frame.headers)
        app = self.apps.get(frame.app)
        if app is None:
            description = f"app {frame.app!r} is not hosted on node {self.name}"
            return error_frame(404, description, via=extend_via(trail, self.id))
        req = Request(frame.method, frame.path, query=frame.query,
                      headers=Headers(frame.headers), body=frame.body)  # fmt: skip
        response = self.answer_locally(app, req, deadline, trail)
        return response_to_frame(response, req.headers.get("Accept"), self.forwarder.counts,
                                 request_id=frame.request_id)  # fmt: skip

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
        if app.threads:  # on the app's own threads: the hub keeps serving links meanwhile
            return answer_on_threads(app, req, deadline, self.refused)
        # A bare loop timer that throws only if it fires: no gevent.Timeout per request.
        timer = get_hub().loop.timer(max(deadline - time.monotonic(), 0.0))
        timer.start(getcurrent().throw, _AppDeadline)
        try:
            return app.handle(req)
        except _AppDeadline:
            return Response(
                HTTPError(504, "the app did not answer before the deadline").to_dict(), 504
            )
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
