"""The node: one process that hosts apps, links to peers and routes the mesh's requests.

Theory of operation. A ``Node`` composes the parts below it and holds the state that
ties them together: its identity, the established links (one per peer), the record
store, and a routing table recomputed lazily after anything that can change it.

- Links come from ``Dialer`` s (``--peers``) and from the WebSocket endpoint. When a
  link is established the node sends it every record it knows, and re-originates its
  own record (its neighbours changed); when a link closes it re-originates at once.
  Two links to one peer collapse to the one ``keep_link`` names, on both ends.
- Records are originated with a growing seq (persisted in the state folder so that it
  survives restarts), refreshed every third of their lifetime, verified when they
  arrive, flooded byte for byte to every other link when new, and dropped at expiry.
- HTTP requests go through ``router.Router``; requests that arrive over links go
  through ``Forwarder``. Both end in ``answer_locally`` for an app hosted here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.event import Event

from .. import __version__
from ..content import encode as encode_content
from ..errors import ConfigError, ConnectError, ConnectionClosed, HTTPError
from ..peering import codec
from ..peering.codec import Auth, Cancel, Hello, RecordFrame, RequestFrame, ResponseFrame
from ..peering.forwarding import VIA, Forwarder, error_frame, extend_via, via_of
from ..peering.handshake import Handshake
from ..peering.identity import Identity, is_node_id
from ..peering.links import Dialer, Link
from ..peering.records import DEFAULT_LIFETIME_MS, Record, RecordStore
from ..peering.routing import RoutingTable, compute_routes, keep_link
from ..peering.transport import WebSocketEndpoint, connect
from ..request import Headers, Request, Response
from ..resource import Resource
from ..server import DEFAULT_MAX_BODY, Server, WSGIApp
from .router import HOP_BY_HOP, Router

log = logging.getLogger("xio.node")

WS_PATH = "/_xio/ws"
SEQ_FILE = "seq"
#: A node found by mDNS that refuses connections this many times in a row is forgotten
#: until it is announced again (a killed node sends no goodbye).
DISCOVERY_GIVE_UP = 5


@dataclass
class NodeConfig:
    """Everything a node is started with; the CLI and ``xio.node()`` fill it in."""

    name: str = field(default_factory=socket.gethostname)
    host: str = "0.0.0.0"
    port: int = 7700
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
        address += ":7700"
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
        if config.state_dir is not None:
            self.identity = Identity.load_or_create(Path(config.state_dir))
        else:
            self.identity = Identity.generate()
        self.id = self.identity.node_id
        self.name = config.name
        self.store = RecordStore(self.id)
        self.links: dict[str, Link] = {}  # peer id -> its one established link
        self.all_links: set[Link] = set()
        self.rejected: dict[str, int] = {}
        self.started_at = time.time()
        self.forwarder = Forwarder(self.id, self.deliver, self._link_towards)
        self.dialers = [Dialer(*parse_peer(p), self.dial, self.links.get) for p in config.peers]
        self._table: RoutingTable | None = None
        self._originate_pending = False
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
        endpoint = WebSocketEndpoint(self.accept, path=WS_PATH, max_message=codec.MAX_FRAME)
        wsgi = WSGIApp(self.router.handle, max_body=config.max_body)
        self.server = Server(wsgi, config.host, config.port, certfile=config.tls_cert,
                             keyfile=config.tls_key, websocket_app=endpoint)  # fmt: skip
        self.server.start()
        self.originate()
        if config.mdns:
            self._start_discovery()
        for dialer in self.dialers:
            dialer.start()
        self._greenlets = [gevent.spawn(self._refresh), gevent.spawn(self._expire)]
        log.info("node %s (%s) listening on %s", self.name, self.id, self.url)
        return self

    def serve_forever(self) -> None:
        """Block until ``stop`` is called."""
        self._stopped.wait()

    def stop(self) -> None:
        """Say goodbye to every peer, close links, stop serving."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for dialer in [*self.dialers, *self.discovery_dialers.values()]:
            dialer.stop()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        if self.mdns is not None:
            self.mdns.stop()
        for link in list(self.all_links):
            link.close("shutting_down")
        if self.server is not None:
            self.server.stop(timeout=1.0)

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
        if node_id in self.discovery_dialers or self._stopped.is_set():
            return
        if any(dialer.peer_id == node_id for dialer in self.dialers):
            return
        peers = len(self.links.keys() | self.discovery_dialers.keys())
        if peers >= self.config.max_peers:
            log.warning("not linking to discovered %s: %d peers already", node_id, peers)
            return
        dialer = Dialer(urls[0], node_id, self._dial_discovered, self.links.get)
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

    def dial(self, url: str, expected_peer_id: str | None) -> Link:
        """Connect to ``url`` and start a link as its initiator."""
        transport = connect(url, timeout=5.0, max_message=codec.MAX_FRAME)
        link = self._new_link(transport, "initiator", expected_peer_id, url)
        return link

    def accept(self, transport) -> None:
        """Start a link as responder on a WebSocket a peer opened to us."""
        self._new_link(transport, "responder", None, None)

    def _new_link(self, transport, role: str, expected: str | None, url: str | None) -> Link:
        handshake = Handshake(self.identity, role, self.name, expected_peer_id=expected)
        link = Link(transport, handshake, self, dead_after=self.config.link_timeout, url=url)
        self.all_links.add(link)
        link.start()
        return link

    def link_established(self, link: Link) -> None:
        """Adopt a newly authenticated link, collapsing a duplicate to the same peer."""
        existing = self.links.get(link.peer_id)
        if existing is not None and existing is not link:
            keep = keep_link(existing.handshake.link_key, link.handshake.link_key)
            loser = link if keep == existing.handshake.link_key else existing
            loser.close("duplicate_link")
            if loser is link:
                return
        self.links[link.peer_id] = link
        log.info("link up: %s (%s)", link.peer_name, link.peer_id)
        now_ms = _now_ms()
        try:
            for body, signature in self.store.snapshot(now_ms):
                link.send(RecordFrame(body, signature))
        except ConnectionClosed:
            return
        self.schedule_originate()

    def link_closed(self, link: Link, was_established: bool) -> None:
        """Forget a closed link; fail what waited on it; re-originate at once."""
        self.all_links.discard(link)
        self.forwarder.link_closed(link)
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            log.info("link down: %s (%s): %s", link.peer_name, link.peer_id, link.close_reason)
            self.schedule_originate()

    def link_message(self, link: Link, message) -> None:
        """Dispatch one frame from an established link."""
        kind = type(message)
        if kind is RequestFrame:
            self.forwarder.on_request(link, message)
        elif kind is ResponseFrame:
            self.forwarder.on_response(link, message)
        elif kind is RecordFrame:
            self._receive_record(link, message)
        elif kind is Cancel:
            self.forwarder.on_cancel(link, message)
        elif kind in (Hello, Auth):
            link.reject("unexpected_frame", f"{kind.TYPE} after the handshake", fatal=True)

    def count_rejection(self, reason: str) -> None:
        """Count one rejected frame or record by reason (shown under /_xio/node)."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _link_towards(self, dst: str) -> Link | None:
        next_hop = self.table.next_hop(dst)
        return self.links.get(next_hop) if next_hop else None

    # -- records and routes -------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        """Return the routing table, recomputing it if anything changed."""
        if self._table is None:
            self._table = compute_routes(
                self.id, {peer: 1 for peer in self.links}, self.store.records(),
                own_apps=self.apps, own_name=self.name,
            )  # fmt: skip
        return self._table

    def schedule_originate(self) -> None:
        """Re-originate soon, once for any number of changes made in the same moment."""
        self._table = None
        if not self._originate_pending:
            self._originate_pending = True
            gevent.spawn(self.originate)

    def originate(self) -> None:
        """Sign a fresh record of this node and flood it to every link."""
        self._originate_pending = False
        seq = max(self.store.own_seq, self._persisted_seq()) + 1
        apps = {name: _summary(app) for name, app in self.apps.items()}
        signed = Record.build(
            self.identity, seq, _now_ms(), int(self.config.record_lifetime * 1000),
            self.name, __version__, self.advertised_urls(),
            {peer: 1 for peer in self.links}, apps,
        )  # fmt: skip
        self.store.set_own(signed)
        self._persist_seq(seq)
        self._table = None
        self._flood(codec.encode(RecordFrame(signed.body, signed.signature)), None)

    def _receive_record(self, link: Link, frame: RecordFrame) -> None:
        verdict = self.store.offer(frame.body, frame.signature, _now_ms())
        if verdict.accepted:
            self._table = None
            self._flood(codec.encode(frame), link)
        elif verdict.next_own_seq is not None:
            # An older life of this node left a higher seq in the mesh: jump past it.
            self._persist_seq(verdict.next_own_seq)
            self.schedule_originate()
        elif verdict.reason not in ("duplicate", "stale"):
            link.reject(verdict.reason, f"record from {link.peer_name} refused")

    def _flood(self, frame: bytes, source: Link | None) -> None:
        for link in list(self.links.values()):
            if link is not source:
                try:
                    link.send_bytes(frame)
                except ConnectionClosed:
                    pass

    def _persisted_seq(self) -> int:
        if self.config.state_dir is None:
            return 0
        try:
            return int((Path(self.config.state_dir) / SEQ_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _persist_seq(self, seq: int) -> None:
        if self.config.state_dir is None:
            return
        path = Path(self.config.state_dir) / SEQ_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(str(seq))
        os.replace(temporary, path)

    def _refresh(self) -> None:
        while True:
            gevent.sleep(self.config.record_lifetime / 3)
            self.originate()

    def _expire(self) -> None:
        while True:
            gevent.sleep(1.0)
            if self.store.expire(_now_ms()):
                self._table = None

    # -- answering ----------------------------------------------------------------------

    def deliver(self, frame: RequestFrame, deadline: float) -> ResponseFrame:
        """Answer a request that came over a link for an app hosted here."""
        app = self.apps.get(frame.app)
        if app is None:
            return error_frame(404, f"app {frame.app!r} is not hosted on node {self.name}")
        req = Request(frame.method, frame.path, query=frame.query,
                      headers=Headers(frame.headers), body=frame.body)  # fmt: skip
        response = self.answer_locally(app, req, deadline, via_of(frame.headers))
        return response_to_frame(response, req.headers.get("Accept"))

    def answer_locally(
        self, app: Resource, req: Request, deadline: float, trail: str = ""
    ) -> Response:
        """Run ``app`` on ``req`` (path below the app) with the deadline enforced.

        A request that crossed the mesh (``trail``) gets its trail back in ``X-Xio-Via``
        with this node appended.
        """
        req.url_path = "www/" + req.url_path.lstrip("/")
        response = self._run_app(app, req, deadline)
        if trail:
            response.headers[VIA] = extend_via(trail, self.id)
        return response

    def _run_app(self, app: Resource, req: Request, deadline: float) -> Response:
        timer = gevent.Timeout(max(deadline - time.monotonic(), 0.0))
        timer.start()
        try:
            return app.handle(req)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return Response(
                HTTPError(504, "the app did not answer before the deadline").to_dict(), 504
            )
        finally:
            timer.close()


def response_to_frame(response: Response, accept: str | None) -> ResponseFrame:
    """Encode a local app's response for the trip back over links."""
    try:
        body, content_type = encode_content(response.content, response.content_type, accept)
    except TypeError as exc:
        return error_frame(500, f"TypeError: {exc}")
    if not isinstance(body, bytes):
        chunks, size = [], 0
        for chunk in body:
            size += len(chunk)
            if size > codec.MAX_BODY:
                return error_frame(502, f"response is larger than {codec.MAX_BODY} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
    if len(body) > codec.MAX_BODY:
        return error_frame(502, f"response is larger than {codec.MAX_BODY} bytes")
    headers = [("Content-Type", content_type)] if response.status not in (204, 304) else []
    headers += [(n, v) for n, v in response.headers.items() if n.lower() not in HOP_BY_HOP]
    return ResponseFrame(0, response.status, tuple(headers), body)


def _summary(app: Resource) -> str:
    doc = getattr(app, "doc", "") or ""
    public = getattr(app, "children", {}).get("www")
    doc = doc or (public.doc if public is not None else "")
    return doc.strip().split("\n", 1)[0][:200]


def _now_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["Node", "NodeConfig", "parse_peer"]
