"""``app.main()``: serve one app from the command line, as a node of its own.

The app answers at ``/`` (the seed README's behaviour) and at ``/<app name>/``; the
node joins a mesh only when asked (``--peers``, or ``--mdns``).
"""

from __future__ import annotations

import argparse
import sys

from .errors import ConfigError


def run(app, argv: list[str] | None = None) -> int:
    """Serve ``app`` as the command line says; return the exit status."""
    from .node.cli import config_from, node_arguments, patch_for_handlers, run_node, setup_logging
    from .node.hosting import check_app_name
    from .node.node import Node

    parser = argparse.ArgumentParser(
        prog=app.app_name, description=f"Serve the xio app {app.app_name}."
    )
    node_arguments(parser, port=8080, host="0.0.0.0")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.log_level)
    patch_for_handlers()
    try:
        check_app_name(app.app_name)
    except ConfigError:  # named after a folder like "my app": still served, as "app"
        app.app_name = "app"
    args.name = args.name or app.app_name
    try:
        config = config_from(args, state_dir=args.state_dir, mdns=bool(args.mdns))
    except ConfigError as exc:
        parser.error(str(exc))
    app.max_body = config.max_body
    return run_node(Node(config, {app.app_name: app}, main_app=app))
