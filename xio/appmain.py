"""``app.main()``: serve one app from the command line, as a node of its own.

The app answers at ``/`` (the seed README's behaviour) and at ``/<app name>/``; the
node joins a mesh only when asked (``--peers``, or ``--mdns``).
"""

from __future__ import annotations

import sys

from .errors import ConfigError, StateError


def run(app, argv: list[str] | None = None) -> int:
    """Serve ``app`` as the command line says; return 0 once stopped.

    The command line is checked as ``xio-node``'s is, and fails with the same one-line
    messages and exit statuses (``SystemExit``: 2 for a bad command line, as argparse does;
    1 for a state directory in use or a port that is taken), even under a bare ``app.main()``.
    """
    from .node import cli
    from .node.hosting import check_app_name
    from .node.node import Node

    parser = cli.ArgumentParser(prog=app.app_name, description=f"Serve the xio app {app.app_name}.")
    cli.node_arguments(parser, port=8080, host="0.0.0.0", mdns_default="off by default")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cli.setup_logging(args.log_level, args.log_format, args.access_log)
    cli.patch_for_handlers()
    try:
        check_app_name(app.app_name)
    except ConfigError:  # named after a folder like "my app": still served, as "app"
        app.app_name = "app"
    args.name = args.name or app.app_name
    try:
        config = cli.config_from(args, state_dir=args.state_dir, mdns=bool(args.mdns))
    except ConfigError as exc:
        parser.error(str(exc))
    app.max_body = config.max_body
    try:
        node = Node(config, {app.app_name: app}, main_app=app)
    except StateError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as exc:
        parser.error(str(exc))
    status = cli.run_node(node, parser.prog)
    if status:
        sys.exit(status)
    return status
