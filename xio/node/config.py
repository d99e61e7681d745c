"""What a node is started with: ``NodeConfig``, and the parsing of ``--peers`` specs.

Theory of operation. ``NodeConfig`` is the one place each setting and its default is
written: the CLI (``xio.node.cli``) reads its defaults from here, ``xio.node()`` fills it in
from keyword arguments, and every part of the node takes the values it needs from it. Limits
of the HTTP front default to ``xio.server.HTTPLimits``' own, so they too are written once.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import DEFAULT_PORT, WS_PATH, MiB
from ..errors import ConfigError
from ..peering.identity import is_node_id
from ..peering.names import is_app_name
from ..peering.records import DEFAULT_LIFETIME_MS
from ..server import DEFAULT_MAX_BODY, HTTPLimits
from . import policy as _policy
from .access import TOKEN_RULE

__all__ = ["WS_PATH", "NodeConfig", "parse_peer", "parse_pin", "read_admin_token"]


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
    peer_ca: str | None = None  # PEM CA certificates wss:// peers are verified by; None: system's
    advertise: list[str] = field(default_factory=list)
    # --pin-app APP=ID,ID: only those nodes are ever sent the app's requests (this one too).
    pin_apps: dict[str, frozenset[str]] = field(default_factory=dict)
    # /_xio/ answers loopback only, or (with this file) bearers of its token (xio.node.access).
    admin_token_file: str | Path | None = None
    # --cors ORIGIN: pages of these origins ("*": any) may read answers (xio.node.cors).
    cors: list[str] = field(default_factory=list)
    # A closed mesh (xio.node.closed): the authority's public key and this node's certificate.
    # Without mesh_pub the node is in open mode. Several keys while the authority is rotated.
    mesh_pub: str | Path | tuple[str | Path, ...] | None = None
    cert: str | Path | None = None
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
    drain_timeout: float = 10.0  # SIGTERM: requests in flight get this long (xio.node.drain)
    # The HTTP front (xio.server.HTTPLimits; README, "HTTP limits").
    header_timeout: float = _HTTP_DEFAULTS.header_timeout
    body_timeout: float = _HTTP_DEFAULTS.body_timeout
    idle_timeout: float = _HTTP_DEFAULTS.idle_timeout
    max_connections: int = _HTTP_DEFAULTS.max_connections
    max_connections_per_client: int = _HTTP_DEFAULTS.max_connections_per_client
    max_header_bytes: int = _HTTP_DEFAULTS.max_header_bytes
    # Resilience (xio.node.policy; README, "Policies"): retries at the ingress, a breaker per
    # destination node, a bulkhead per app hosted here; the app_* maps override per app.
    retries: int = _policy.DEFAULT_RETRIES
    retry_methods: tuple[str, ...] = _policy.DEFAULT_RETRY_METHODS
    breaker_failures: int = _policy.DEFAULT_BREAKER_FAILURES
    breaker_window: float = _policy.DEFAULT_BREAKER_WINDOW
    breaker_cooloff: float = _policy.DEFAULT_BREAKER_COOLOFF
    bulkhead: int = _policy.DEFAULT_BULKHEAD
    app_timeouts: dict[str, float] = field(default_factory=dict)
    app_retries: dict[str, int] = field(default_factory=dict)
    app_bulkheads: dict[str, int] = field(default_factory=dict)


def parse_pin(spec: str) -> tuple[str, frozenset[str]]:
    """Return ``(app, node_ids)`` for ``--pin-app APP=ID,ID``."""
    app, sep, ids = spec.partition("=")
    app = app.strip()
    if not sep or not is_app_name(app):
        raise ConfigError(f"--pin-app {spec!r}: expected APP=NODE_ID[,NODE_ID...]")
    nodes = frozenset(part.strip() for part in ids.split(",") if part.strip())
    if not nodes:
        raise ConfigError(f"--pin-app {spec!r}: name at least one node id")
    for node in sorted(nodes):
        if not is_node_id(node):
            raise ConfigError(f"--pin-app {spec!r}: {node!r} is not a node id (xio-node id)")
    return app, nodes


def read_admin_token(path: str | Path) -> str:
    """Return the admin token held in ``path``, its surrounding whitespace stripped.

    Refused, as ssh refuses a private key, unless the file is the owner's alone: a token that
    other users of the host can read protects nothing from them.
    """
    option = f"--admin-token {path}"
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read(4097)
    except OSError as exc:
        raise ConfigError(f"{option}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{option}: not a regular file")
    if mode & 0o077:
        raise ConfigError(f"{option}: open to group or others (mode {stat.S_IMODE(mode):04o});"
                          f" make it the owner's alone: chmod 600 {path}")  # fmt: skip
    if len(raw) > 4096:
        raise ConfigError(f"{option}: over 4096 bytes; a token is one line")
    token = raw.strip().decode("ascii", "replace")
    if not token:
        raise ConfigError(f"{option}: the file is empty (write a token in it, e.g. "
                          "openssl rand -hex 32)")  # fmt: skip
    if not TOKEN_RULE.fullmatch(token):
        raise ConfigError(f"{option}: a token is letters, digits and -._~+/ (then '=' only), "
                          "on one line")  # fmt: skip
    return token


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
