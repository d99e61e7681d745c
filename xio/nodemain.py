"""``xio-node``: the node's command line, handed the demo app.

``xio.node`` hosts apps and never makes one (it must not import ``xio.app``, which imports
the node for ``app.main()``), so the one app the node ships, the demo, is made up here and
handed to ``xio.node.cli.main``. ``python -m xio.nodemain`` is the same as ``xio-node``.
"""

from __future__ import annotations

import sys

from .demo import demo_app
from .node import cli


def main(argv: list[str] | None = None) -> int:
    """Run ``xio-node``."""
    return cli.main(argv, demo=demo_app)


if __name__ == "__main__":
    sys.exit(main())
