"""An in-process mesh: several nodes on this test's gevent hub, linked over loopback.

Theory of operation. ``InProcessMesh.start(name, ...)`` builds a ``Node(NodeConfig(...))`` on
127.0.0.1, port 0, with mDNS off and a fresh identity, and starts it on the calling thread's
hub; ``close()`` stops every node it started. The nodes make progress whenever the test waits
cooperatively, so a test waits with ``wait_for`` (``gevent.sleep`` between looks at observable
state) and makes HTTP calls with ``call``, which runs the blocking ``xio.client`` on a real
thread of the hub's pool while the hub keeps serving. The test process is not monkey-patched:
the nodes use gevent's sockets themselves.

For tests that need no process of their own: no start-up cost, and the nodes' state
(``node.links``, ``node.table``, ``node.store``) can be read directly.
"""

from __future__ import annotations

import socket

import xio
from xio.node import Node, NodeConfig

from .http_wire import in_thread, wait_for

__all__ = ["InProcessMesh", "call", "unused_port", "wait_for", "ws_url"]


class InProcessMesh:
    """Nodes started on this hub by one test, stopped together at its end."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def start(self, name: str, *, peers=(), apps=None, **options) -> Node:
        """Start node ``name`` linked to ``peers`` (nodes or URLs), hosting ``apps``."""
        urls = [ws_url(peer) if isinstance(peer, Node) else peer for peer in peers]
        config = NodeConfig(name=name, host="127.0.0.1", port=0, peers=urls, mdns=False,
                            **options)  # fmt: skip
        apps = {app.app_name: app for app in apps or ()}
        node = Node(config, apps).start()
        self.nodes.append(node)
        return node

    def line(self, *names: str, apps_at_end=()) -> list[Node]:
        """Start nodes linked in a line, the last one first, hosting ``apps_at_end``."""
        nodes = [self.start(names[-1], apps=apps_at_end)]
        for name in reversed(names[:-1]):
            nodes.insert(0, self.start(name, peers=[nodes[0]]))
        for app in apps_at_end:
            wait_for(lambda app=app: nodes[0].table.hosts_of(app.app_name),
                     f"{names[0]} to learn of {app.app_name}")  # fmt: skip
        return nodes

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()


def ws_url(node: Node) -> str:
    """Return the URL peers dial ``node`` at."""
    scheme = "wss" if node.config.tls_cert else "ws"
    return f"{scheme}://127.0.0.1:{node.port}/_xio/ws"


def call(node: Node, method: str, path: str, **options) -> xio.Response:
    """Send one HTTP request to ``node`` from a real thread, as an outside client would."""
    client = xio.client(node.url, timeout=10, verify=options.pop("verify", True))
    return in_thread(client.request, method, path, **options)


def unused_port() -> int:
    """Return a loopback port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
