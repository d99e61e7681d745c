"""``xio-node``: run a node in the foreground, or ask it something.

xio-node [options]         run a node (see --help)
xio-node --demo            a node on 127.0.0.1:7700 hosting a demo app, no discovery
xio-node id                print this machine's node id (from --state-dir)
xio-node mesh ...          the mesh authority: admit and revoke nodes (mesh_cli.py)
xio-node doctor            check why nodes on this LAN do (not) find each other (mDNS)
xio-node status|peers|routes|trace   ask a running node (status_cli.py)
xio-node check-config      print the settings in force and where each came from (settings.py)

Every value is checked as it is parsed (ports, durations, sizes, peers, TLS and CA files), so a
bad command line is one line on stderr and exit status 2, before anything starts; a state
directory held by another node, or a file in it that cannot be used, is exit status 1.
"""

from __future__ import annotations

import argparse
import base64
import functools
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, StateError
from ..resource import Resource
from ..version import __version__
from . import policy, settings
from .config import parse_pin, read_admin_token
from .cors import parse_origin
from .logs import FORMATS, parse_access_log
from .node import NodeConfig, parse_peer

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Every default is NodeConfig's: the flags and xio.node() cannot drift apart.
DEFAULTS = NodeConfig(name="")
SUBCOMMANDS = """subcommands:
  xio-node id [--name N | --state-dir DIR] [--create]
                        print the node id kept in the state directory
  xio-node mesh init|admit|revoke|show
                        the mesh authority: admit and revoke nodes (xio-node mesh --help)
  xio-node doctor       check why nodes on this LAN do (not) find each other (mDNS)
  xio-node status|peers|routes [--via URL] [--admin-token FILE] [--json]
                        ask a running node what it is, its links, its routes
  xio-node trace PATH_OR_URL [-X METHOD] [--via URL]
                        send one traced request and print each hop, like traceroute
  xio-node check-config [--config FILE] [--json] [options]
                        print every setting, its value and where it came from; exit 2 if
                        the configuration is invalid (README, "Configuration")"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors on one line: the usage of ~40 options would bury the message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_state_dir(name: str) -> Path:
    """Return where a node named ``name`` keeps its key and seq by default."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "xio" / name


def node_arguments(
    parser: argparse.ArgumentParser,
    *,
    port: int = DEFAULTS.port,
    host: str = DEFAULTS.host,
    mdns_default: str = "off by default",
) -> None:
    """Add the options shared by ``xio-node`` and ``app.main()``; defaults from NodeConfig."""
    parser.add_argument("--version", action="version", version=f"xio {__version__}")
    parser.add_argument("--name", help="this node's name (default: the host name)")
    parser.add_argument("--host", default=host, help=f"address to listen on (default {host})")
    parser.add_argument("--port", type=_port, default=port, help=f"port (default {port}; 0: any)")
    parser.add_argument("--peers", nargs="+", action="extend", default=[], metavar="URL",
                        type=_peer, help="peers to link to: ws://h:p, wss://h:p, http://h:p or "
                        "h:p, optionally with #<node-id> to pin the id")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, help="where the node key and seq are kept "
                        "(locked: one node per directory)")  # fmt: skip
    parser.add_argument("--mdns", dest="mdns", action="store_true", default=None,
                        help=f"announce and discover nodes on the LAN ({mdns_default})")  # fmt: skip
    parser.add_argument("--no-mdns", dest="mdns", action="store_false", help="no discovery")
    parser.add_argument("--mdns-interface", action="append", default=[], metavar="NAME_OR_ADDRESS",
                        help="run discovery on this interface only (repeatable; default: every "
                        "up, multicast interface except loopback and container bridges)")  # fmt: skip
    parser.add_argument("--advertise-address", action="append", default=[], metavar="ADDRESS",
                        help="address to announce by mDNS instead of the interfaces' own "
                        "(repeatable)")  # fmt: skip
    parser.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM): serve HTTPS")
    parser.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    parser.add_argument("--peer-ca", metavar="FILE", help="CA certificates (PEM) that wss:// "
                        "peers must be signed by (default: the system's authorities)")  # fmt: skip
    parser.add_argument("--advertise", action="append", default=[], metavar="URL",
                        help="URL to announce for this node (repeatable)")  # fmt: skip
    parser.add_argument("--pin-app", action="append", default=[], type=_pin,
                        metavar="APP=ID[,ID...]", help="send APP's requests only to these nodes "
                        "(repeatable; other hosts of APP are ignored, and shown as such)")  # fmt: skip
    parser.add_argument("--admin-token", metavar="FILE", help="file holding a bearer token "
                        "(mode 600): /_xio/ then answers only requests with Authorization: "
                        "Bearer <token>, loopback included (default: loopback clients only)")  # fmt: skip
    parser.add_argument("--cors", action="append", default=[], type=_origin, metavar="ORIGIN",
                        help="let browser pages of ORIGIN (https://app.example:8443, or '*' for "
                        "any) read this node's answers (repeatable; default: none)")  # fmt: skip
    parser.add_argument("--mesh-pub", metavar="FILE", action="append", help="the mesh "
                        "authority's public key (mesh.pub): closed mode, only nodes it admitted "
                        "may link, and only to the apps their certificates list (default: open "
                        "mode); given twice while the authority key is rotated: certificates "
                        "of either are accepted")  # fmt: skip
    parser.add_argument("--cert", metavar="FILE", help="this node's certificate, signed by "
                        "--mesh-pub's authority (xio-node mesh admit)")  # fmt: skip
    parser.add_argument("--link-timeout", type=_seconds, default=DEFAULTS.link_timeout,
                        metavar="SECONDS", help="a silent link is dead after this long "
                        f"(default {_show('seconds', DEFAULTS.link_timeout)})")  # fmt: skip
    parser.add_argument("--request-timeout", type=_seconds, default=DEFAULTS.request_timeout,
                        metavar="SECONDS", help="default deadline of a request "
                        f"(default {_show('seconds', DEFAULTS.request_timeout)})")  # fmt: skip
    parser.add_argument("--max-body", type=_size, default=DEFAULTS.max_body, metavar="BYTES",
                        help=f"request body limit (default {_show('size', DEFAULTS.max_body)})")  # fmt: skip
    parser.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS,
                        metavar="LEVEL",
                        help="debug, info, warning or error (default info)")  # fmt: skip
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="text (default; no timestamps under systemd, journald adds them) "
                        "or json: one JSON object per line")  # fmt: skip
    parser.add_argument("--access-log", default="on", type=parse_access_log, metavar="on|off|SHARE",
                        help="one line per HTTP request: on (default), off, or the share of "
                        "requests logged, e.g. 0.1 (5xx always); whatever --log-level says")  # fmt: skip
    limit_arguments(parser.add_argument_group("budgets and limits (all ours, none a peer's)"))
    policy_arguments(parser.add_argument_group('policies (README, "Policies")'))


def policy_arguments(group) -> None:
    """Add the flags of the resilience policies (xio.node.policy); defaults from NodeConfig."""
    group.add_argument("--retries", type=_retries, default=DEFAULTS.retries, metavar="N",
                       help="attempts after the first for a request the mesh failed to "
                       f"deliver or answer, 0 to {policy.MAX_RETRIES} (default "
                       f"{DEFAULTS.retries}; X-Xio-Retries: N per call)")  # fmt: skip
    methods = ",".join(DEFAULTS.retry_methods)  # argparse parses a default given as text
    group.add_argument("--retry-methods", type=_methods, default=methods, metavar="M,M",
                       help="methods sent again when a request may have reached the app "
                       f"(default {methods}); other methods only when it surely did not")  # fmt: skip
    group.add_argument("--breaker-failures", type=_count, default=DEFAULTS.breaker_failures,
                       metavar="N", help="failures towards one node, within --breaker-window, "
                       f"that open its circuit (default {DEFAULTS.breaker_failures})")  # fmt: skip
    group.add_argument("--breaker-window", type=_seconds, default=DEFAULTS.breaker_window,
                       metavar="SECONDS", help="the window failures are counted in "
                       f"(default {DEFAULTS.breaker_window:g})")  # fmt: skip
    group.add_argument("--breaker-cooloff", type=_seconds, default=DEFAULTS.breaker_cooloff,
                       metavar="SECONDS", help="how long an open circuit refuses before one "
                       f"probe may go (default {DEFAULTS.breaker_cooloff:g})")  # fmt: skip
    group.add_argument("--bulkhead", type=_count, default=DEFAULTS.bulkhead, metavar="N",
                       help="requests one app hosted here runs at once; more are answered 503 "
                       f"(default {DEFAULTS.bulkhead})")  # fmt: skip
    for flag, parse, metavar, text in (
        ("--app-timeout", _app_seconds, "APP=SECONDS", "APP's default deadline, in place of "
         "--request-timeout"),
        ("--app-retries", _app_retries, "APP=N", "APP's --retries"),
        ("--app-bulkhead", _app_count, "APP=N", "APP's --bulkhead"),
    ):  # fmt: skip
        group.add_argument(flag, action="append", default=[], type=parse, metavar=metavar,
                           help=f"{text} (repeatable)")  # fmt: skip


#: (flag, NodeConfig field, parser, help) of every budget and limit; defaults from NodeConfig.
LIMITS = (
    ("--record-lifetime", "record_lifetime", "seconds", "lifetime of this node's record; "
     "refreshed every third of it"),
    ("--max-inbound-links", "max_inbound_links", "count", "links accepted from peers"),
    ("--handshake-rate", "handshake_rate", "rate", "new links per second from one address"),
    ("--store-max-records", "store_max_records", "count", "records of other nodes held"),
    ("--store-max-bytes", "store_max_bytes", "size", "bytes of records held"),
    ("--record-max-size", "record_max_size", "size", "largest record accepted"),
    ("--origin-quota", "origin_quota", "count", "new nodes one neighbour may make known per "
     "minute"),
    ("--max-in-flight", "max_in_flight", "count", "requests held at once, HTTP and links"),
    ("--body-budget", "body_budget", "size", "request bodies held at once, HTTP and links"),
    ("--link-queue-bytes", "link_queue_bytes", "size", "frames waiting to be sent on one link"),
    ("--write-timeout", "write_timeout", "seconds", "close a link that takes nothing this long"),
    ("--max-ttl", "max_ttl", "seconds", "longest deadline a request may have"),
    ("--min-originate-interval", "min_originate_interval", "seconds", "hold-down between "
     "records made because links changed"),
    ("--drain-timeout", "drain_timeout", "seconds", "on SIGTERM or SIGINT: time given to the "
     "requests in flight before the node exits (a second signal: at once)"),
    ("--header-timeout", "header_timeout", "seconds", "HTTP: time for a request line and headers"),
    ("--body-timeout", "body_timeout", "seconds", "HTTP: time for a whole request body"),
    ("--idle-timeout", "idle_timeout", "seconds", "HTTP: close a keep-alive connection idle "
     "this long"),
    ("--max-connections", "max_connections", "count", "HTTP connections open at once, "
     "WebSockets included (kept below 3/4 of the fd limit)"),
    ("--max-connections-per-client", "max_connections_per_client", "count", "HTTP connections "
     "open at once from one address"),
    ("--max-header-bytes", "max_header_bytes", "size", "HTTP: largest request header section "
     "(431 past it)"),
)  # fmt: skip


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses NaN
        raise ValueError(text)
    return value


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def _size(text: str) -> int:
    """Parse ``16777216``, ``16MiB``, ``64k``: a positive number of bytes (units of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    number, unit = match.groups()
    return _count(str(int(float(number) * _UNITS[unit[:1].lower()])))


def _port(text: str) -> int:
    if not (text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def _peer(text: str) -> str:
    try:
        parse_peer(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _pin(text: str) -> tuple[str, frozenset[str]]:
    try:
        return parse_pin(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--pin-app {text!r}: ")) from exc


def _origin(text: str) -> str:
    try:
        return parse_origin(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--cors {text!r}: ")) from exc


def _retries(text: str) -> int:
    value = int(text)
    if not 0 <= value <= policy.MAX_RETRIES:
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 to {policy.MAX_RETRIES}")
    return value


def _methods(text: str) -> tuple[str, ...]:
    try:
        return policy.parse_methods(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _per_app(parse: Callable[[str], object], what: str) -> Callable[[str], tuple]:
    """Return the parser of ``APP=VALUE``, ``VALUE`` read by ``parse``."""

    def parse_pair(text: str) -> tuple:
        from ..peering.names import is_app_name

        app, sep, value = text.partition("=")
        if not sep or not is_app_name(app.strip()):
            raise argparse.ArgumentTypeError(f"{text!r}: expected APP={what}")
        try:
            return app.strip(), parse(value.strip())
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"{text!r}: {value.strip()!r} is not a "
                                             f"{what.lower()}") from None  # fmt: skip

    parse_pair.__name__ = f"APP={what}"
    return parse_pair


def _threads_option(text: str) -> tuple[str, int]:
    from ..threads import parse_threads_option

    return parse_threads_option(text)


# argparse names the type in its error: "invalid size value: '12x'".
_count.__name__, _seconds.__name__, _size.__name__ = "count", "seconds", "size"
_threads_option.__name__ = "APP=N"
_app_seconds = _per_app(_seconds, "SECONDS")
_app_count = _per_app(_count, "N")
_app_retries = _per_app(_retries, "N")


def _show(kind: str, value: float) -> str:
    if kind == "size":
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value >= size and value % size == 0:
                return f"{value // size}{unit}"
    return f"{value:g}"


def limit_arguments(group) -> None:
    """Add a flag for every budget and limit."""
    kinds = {"count": (_count, "N"), "seconds": (_seconds, "SECONDS"), "size": (_size, "BYTES"),
             "rate": (_seconds, "PER_SECOND")}  # fmt: skip
    for flag, attribute, kind, text in LIMITS:
        default = getattr(DEFAULTS, attribute)
        parse, metavar = kinds[kind]
        group.add_argument(flag, dest=attribute, type=parse, default=default, metavar=metavar,
                           help=f"{text} (default {_show(kind, default)})")  # fmt: skip


def config_from(args: argparse.Namespace, *, state_dir: Path | None, mdns: bool) -> NodeConfig:
    """Build a ``NodeConfig`` from parsed arguments."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        check_tls_files(args.tls_cert, args.tls_key)
    if bool(args.mesh_pub) != bool(args.cert):
        raise ConfigError("--mesh-pub and --cert go together (closed mode)")
    if args.peer_ca:
        from ..peering.dial import peer_tls_context

        peer_tls_context(args.peer_ca)  # a bad file is a bad command line, not a failed dial
    limits = {attribute: getattr(args, attribute) for _, attribute, _, _ in LIMITS}
    return NodeConfig(
        name=args.name, host=args.host, port=args.port, peers=args.peers,
        state_dir=state_dir, mdns=mdns, link_timeout=args.link_timeout,
        request_timeout=args.request_timeout, max_body=args.max_body,
        tls_cert=args.tls_cert, tls_key=args.tls_key, peer_ca=args.peer_ca,
        advertise=args.advertise,
        mdns_interfaces=args.mdns_interface, advertise_addresses=args.advertise_address,
        pin_apps=_pins(args.pin_app), admin_token_file=args.admin_token, cors=args.cors,
        mesh_pub=tuple(args.mesh_pub) if args.mesh_pub else None, cert=args.cert, **limits,
        retries=args.retries, retry_methods=args.retry_methods,
        breaker_failures=args.breaker_failures, breaker_window=args.breaker_window,
        breaker_cooloff=args.breaker_cooloff, bulkhead=args.bulkhead,
        app_timeouts=dict(args.app_timeout), app_retries=dict(args.app_retries),
        app_bulkheads=dict(args.app_bulkhead),
    )  # fmt: skip


def _pins(pins: list[tuple[str, frozenset[str]]]) -> dict[str, frozenset[str]]:
    joined: dict[str, frozenset[str]] = {}
    for app, nodes in pins:  # --pin-app shop=A --pin-app shop=B pins shop to A and B
        joined[app] = joined.get(app, frozenset()) | nodes
    return joined


def check_tls_files(cert: str, key: str) -> None:
    """Raise ``ConfigError`` naming the option and the file unless they make a TLS server."""
    import ssl

    for option, path, marker in (("--tls-cert", cert, "CERTIFICATE-----"),
                                 ("--tls-key", key, "PRIVATE KEY-----")):  # fmt: skip
        try:
            with open(path, "rb") as handle:
                text = handle.read(1024 * 1024)
        except OSError as exc:
            raise ConfigError(f"{option} {path}: {exc.strerror}") from exc
        if marker.encode() not in text:
            raise ConfigError(f"{option} {path}: no PEM {marker.strip('-').lower()} in it")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"--tls-key {key} does not go with --tls-cert {cert}: {exc.reason or exc}"
        ) from exc


def tune_process() -> None:
    """Set what a long-running node needs from the process, as servers do.

    * File descriptors: the soft limit goes up to the hard one (often 1024 against 524288),
      so idle connections from outside do not starve links and the state files of fds.
    * glibc malloc: large buffers (bodies, frames of 4 MiB and more) come from mmap and go back
      to the system when freed; by default glibc raises its mmap threshold after such frees,
      and memory taken by one burst of 16 MiB bodies then stays with the process. Smaller
      blocks stay on the heap: an mmap per request (msgpack's buffer) costs two syscalls.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # Above msgpack's 1 MiB packing buffer (malloc'd per packb), below the bodies.
        libc.mallopt(-3, 4 * 1024 * 1024)  # M_MMAP_THRESHOLD, fixed: no dynamic growth
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def setup_logging(level: str, log_format: str = "text", access_log: str = "on") -> None:
    """Log to stderr, one line per record, in ``log_format`` (``xio.node.logs``)."""
    from . import logs

    logs.setup(level, log_format, access_log)


#: Said at every start in open mode (no --mesh-pub).
OPEN_MESH_WARNING = (
    "xio: WARNING: open mesh: any node that reaches this port (or this LAN, with discovery on) "
    "can link, relay requests and claim any app (links are encrypted, but open to anyone). "
    "Keep the port on a trusted network (docs/SECURITY.md)."
)


def closed_mesh_line(closed) -> str:
    """Say, at start, which mesh this node is a member of and what it may host."""
    cert = closed.certificate
    apps = "any app" if cert.apps == ("*",) else ", ".join(cert.apps) or "no app (relay only)"
    return (f"xio: closed mesh of authority {closed.policy.authority}: admitted as "
            f"{cert.name!r}, may host {apps}")  # fmt: skip


def run_node(node, prog: str = "xio-node", reload: Callable[[], None] | None = None) -> int:
    """Start ``node``, serve until SIGINT or SIGTERM, stop cleanly; return the exit status.

    SIGHUP calls ``reload`` (``xio-node``: re-read the configuration), or is logged and ignored.
    """
    import gc

    import gevent

    tune_process()
    try:
        node.start()
    except OSError as exc:  # the port is taken, the address is not ours...
        address = f"{node.config.host}:{node.config.port}"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        print(f"{prog}: cannot serve on {address}: {reason}", file=sys.stderr)
        return 1
    # What exists now (code, apps, the first tables) lives as long as the process: keep it out
    # of the collector's full passes, which otherwise cost tens of ms on a big heap.
    gc.freeze()
    from . import logs

    logs.set_node(node.name)
    closed = getattr(node, "closed", None)
    if closed is None:  # before the line tests wait for
        logs.announce(OPEN_MESH_WARNING, "open_mesh", "warning")
    else:
        logs.announce(closed_mesh_line(closed), "closed_mesh")
    logs.announce(f"xio: {listening(node)}", "listening")
    from .sdnotify import Notifier

    node.notifier = Notifier.from_environ()  # systemd's NOTIFY_SOCKET, if any
    node.notifier.ready(node.describe_status())  # listening, first record out (start())
    node.notifier.start(node.describe_status)

    signals: list[int] = []  # counted here: the drain greenlet may not have run yet

    def on_signal() -> None:  # the first drains (README "Stopping"), a second stops at once
        signals.append(1)
        if len(signals) > 1:
            logging.getLogger("xio.node").warning("second signal: stopping now")
            gevent.spawn(node.stop)
        else:
            gevent.spawn(node.drain)

    def on_hangup() -> None:  # not the default action, which ends the process
        node.notifier.reloading()
        try:
            (reload or _reload_unsupported)()
        finally:
            node.notifier.reloaded(node.describe_status())

    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, on_signal)
    gevent.signal_handler(signal.SIGHUP, on_hangup)
    node.serve_forever()
    node.notifier.stop()
    logging.getLogger("xio.node").info("stopped")
    return 0


def _reload_unsupported() -> None:
    logging.getLogger("xio.node").warning("SIGHUP: nothing to reload (no config file here)")


def listening(node) -> str:
    """Say where ``node`` listens: a URL to reach it and, if different, what it is bound to."""
    host, port = node.server.address
    line = f"node {node.name} ({node.id}) listening on {node.url}"
    if host in ("0.0.0.0", "::", ""):
        bound = f"[{host}]" if ":" in host else (host or "0.0.0.0")
        line += f" (bound to {bound}:{port}: every address of this machine)"
    return line


def patch_for_handlers() -> None:
    """Make blocking calls in handlers (sleep, sockets) cooperate with the node's hub.

    ``thread`` and ``queue`` stay unpatched: zeroconf runs its own loop in a real thread.
    """
    import ifaddr  # noqa: F401  (for mDNS) its import runs ldconfig, which hangs once patched
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all(thread=False, queue=False, subprocess=False)


def main(argv: list[str] | None = None, demo: Callable[[str], Resource] | None = None) -> int:
    """Run ``xio-node``; ``demo(name)`` makes the app ``--demo`` hosts (``xio.nodemain``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["id"]:
        return _print_id(argv[1:])
    if argv[:1] == ["mesh"]:
        from .mesh_cli import main as mesh

        return mesh(argv[1:])
    if argv[:1] and argv[0] in ("status", "peers", "routes", "trace"):
        from .status_cli import main as status

        return status(argv[0], argv[1:])
    if argv[:1] == ["doctor"]:
        from .doctor import main as doctor

        return doctor(argv[1:])
    check = argv[:1] == ["check-config"]  # the node's own options, checked and shown
    argv = argv[1:] if check else argv
    description = ("Run an xio node. It announces itself and links to the nodes it finds on "
                   "the LAN (mDNS) unless given --no-mdns or --demo.")  # fmt: skip
    parser = ArgumentParser(prog="xio-node check-config" if check else "xio-node",
                            description=description, epilog=SUBCOMMANDS,
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    node_arguments(parser, mdns_default="on by default, except with --demo")
    parser.add_argument("--app", action="append", default=[], metavar="SPEC",
                        help="app to host: path/to/app.py, a folder with app.py, or "
                        "module:attribute (repeatable)")  # fmt: skip
    parser.add_argument("--threads", action="append", default=[], metavar="APP=N",
                        type=_threads_option, help="run app APP's handlers on N threads of "
                        "its own, so busy handlers do not stall the node (repeatable)")  # fmt: skip
    parser.add_argument("--demo", action="store_true",
                        help="host the demo app on 127.0.0.1, discovery off")  # fmt: skip
    settings.add_arguments(parser, check=check)
    if check and "--example" in argv:
        print(settings.example_file(parser))
        return 0
    environ = dict(os.environ)  # as at start: a reload (SIGHUP) reads the same variables
    try:  # defaults < config file < XIO_* environment < flags (settings.py)
        args, resolved = settings.resolve(parser, argv, environ)
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_format, args.access_log)
    for warning in resolved.warnings:
        logging.getLogger("xio.node").warning("%s", warning)
    patch_for_handlers()
    from .hosting import load_app
    from .node import Node

    load = functools.cache(load_app)  # a reload loads only the apps it adds
    make_demo = functools.cache(demo) if demo is not None else None
    try:
        config, apps = _node_setup(args, resolved, load, make_demo)
        if check:
            if config.admin_token_file is not None:
                read_admin_token(config.admin_token_file)
            print(settings.check_report(args, resolved, as_json=args.json))
            return 0
        node = Node(config, apps)
    except StateError as exc:  # not a bad command line: another node, or the disk
        print(f"xio-node: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, OSError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    return run_node(node, reload=lambda: _reload(node, parser, argv, environ, load, make_demo))


def _node_setup(args, resolved, load, demo) -> tuple[NodeConfig, dict[str, Resource]]:
    """Return the ``NodeConfig`` and the apps that resolved arguments say (at start, reload)."""
    if args.demo and resolved.sources.get("host") == "default":
        args.host = "127.0.0.1"
    args.name = args.name or ("demo" if args.demo else _hostname())
    mdns = bool(args.mdns) if args.mdns is not None else not args.demo
    state_dir = args.state_dir or (None if args.demo else default_state_dir(args.name))
    apps = dict(load(spec) for spec in args.app)
    for name, count in args.threads:
        if name not in apps:
            raise ConfigError(f"--threads {name}={count}: no app {name!r} is hosted")
        apps[name].threads = count
    if args.demo:
        if demo is None:
            raise ConfigError("--demo: this entry point has no demo app (run xio-node)")
        apps.setdefault("demo", demo(args.name))
    return config_from(args, state_dir=state_dir, mdns=mdns), apps


def _reload(node, parser, argv, environ, load, demo) -> None:
    """Re-read the configuration on SIGHUP and apply it; keep the old one if it is invalid."""
    log = logging.getLogger("xio.node")
    log.info("SIGHUP: reloading the configuration")
    try:
        args, resolved = settings.resolve(parser, argv, environ)
        config, apps = _node_setup(args, resolved, load, demo)
    except (ConfigError, OSError) as exc:
        log.warning("reload refused, the configuration in force is kept: %s", exc)
        return
    except (Exception, SystemExit) as exc:  # a reload must never end the node
        log.warning("reload refused, the configuration in force is kept: %r", exc)
        return
    setup_logging(args.log_level, args.log_format, args.access_log)  # level, format, access
    node.reload(config, apps)


def _print_id(argv: list[str]) -> int:
    parser = ArgumentParser(prog="xio-node id", description="Print the node id.")
    parser.add_argument("--name", help="node name (picks the default state folder)")
    parser.add_argument("--state-dir", type=Path, help="where the node key is kept")
    parser.add_argument("--create", action="store_true",
                        help="create a new identity there if it has none")  # fmt: skip
    parser.add_argument("--public-key", action="store_true",
                        help="print ID:BASE64KEY, as xio-node mesh admit --node takes it")  # fmt: skip
    args = parser.parse_args(argv)
    from ..peering import keyfile
    from ..peering.keyfile import KEY_FILE

    name = args.name or _hostname()
    state_dir = args.state_dir or default_state_dir(name)
    try:
        if not args.create and not (state_dir / KEY_FILE).exists():
            whose = f"in {state_dir}" if args.state_dir else f"for node {name!r}"
            print(f"xio-node id: no identity {whose}: {state_dir / KEY_FILE} does not exist "
                  "(a node creates it on its first start; or pass --create)",
                  file=sys.stderr)  # fmt: skip
            return 1
        identity = keyfile.load_or_create(state_dir)
    except ConfigError as exc:
        print(f"xio-node id: {exc}", file=sys.stderr)
        return 1
    key = ":" + base64.b64encode(identity.public_key).decode() if args.public_key else ""
    print(identity.node_id + key)
    return 0


def _hostname() -> str:
    import socket

    return socket.gethostname().split(".")[0] or "node"
