"""``app.main()``: parse the command line and serve one app until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import gevent

from .server import Server

log = logging.getLogger("xio")


def parser(prog: str) -> argparse.ArgumentParser:
    """Return the argument parser of ``app.main()``."""
    p = argparse.ArgumentParser(prog=prog, description="Serve this xio app over HTTP(S).")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM): serve HTTPS")
    p.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    p.add_argument("--max-body", type=int, metavar="BYTES", help="request body limit (16 MiB)")
    p.add_argument("--log-level", default="info", help="debug, info, warning or error")
    return p


def setup_logging(level: str) -> None:
    """Log to stderr, one line per record, at ``level``."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def run(app, argv: list[str] | None = None) -> int:
    """Serve ``app`` as the command line says; return the exit status."""
    args = parser(app.app_name).parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser(app.app_name).error("--tls-cert and --tls-key go together")
    setup_logging(args.log_level)
    if args.max_body:
        app.max_body = args.max_body
    server = Server(app, args.host, args.port, certfile=args.tls_cert, keyfile=args.tls_key)
    server.start()
    log.info("serving %s at %s", app.app_name, server.url)
    print(f"xio: {app.app_name} listening on {server.url}", file=sys.stderr, flush=True)
    stopped = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopped.set)
    stopped.wait()
    log.info("stopping")
    server.stop()
    return 0
