"""Values that several layers must agree on, defined once.

Theory of operation. The HTTP server, the wire codec, the node and its CLI, the client and the
app each used to write these literals down themselves, so a change in one place left the others
behind (a body the server took but no frame could carry, a default port the client guessed
wrong). This module is a leaf: it imports nothing, so every layer, the pure peering core
included, may import it. A limit that one module alone uses stays in that module.
"""

from __future__ import annotations

MiB = 1024 * 1024
#: The largest request or response body: what the HTTP server takes by default and what one
#: ``req`` or ``res`` frame carries.
MAX_BODY = 16 * MiB
#: A node's port when none is given (``xio-node``, ``--peers host``, ``xio.client("host")``).
DEFAULT_PORT = 7700
#: Where a node accepts links (a WebSocket upgrade on its HTTP port).
WS_PATH = "/_xio/ws"
#: The subtree of an app that the mesh serves: ``/<app>/<path>`` is the app's ``www/<path>``.
PUBLIC = "www"
