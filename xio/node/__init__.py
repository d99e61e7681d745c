"""The xio daemon: a node hosts apps and links to peers; ``xio.node()`` embeds one."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..resource import Resource
from .hosting import check_app_name
from .node import Node, NodeConfig

#: What ``xio.node()`` says in a process that is not monkey-patched.
PATCH_FIRST = (
    "xio.node() runs on gevent and needs its cooperative sockets and sleep: put "
    "'from gevent import monkey; monkey.patch_all(thread=False, queue=False)' at the top of "
    "the script, before other imports (xio-node and app.main() do this themselves)"
)


def node(
    name: str = "node",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    peers: list[str] | tuple[str, ...] = (),
    apps: dict[str, Resource] | list | tuple = (),
    state_dir: str | Path | None = None,
    mdns: bool = False,
    start: bool = True,
    **options,
) -> Node:
    """Start a node inside this process and return it (``node.stop()`` ends it).

    ``apps`` maps names to apps, or lists apps (each hosted under its ``app_name``).
    The defaults suit a script or a test: 127.0.0.1, a free port (``node.url``), no mDNS,
    and a fresh identity that lives as long as the process (``state_dir`` keeps one).

    The node runs on this process's gevent hub: it makes progress whenever the calling
    code waits cooperatively, so the process must be monkey-patched first (a plain
    ``socket`` or ``time.sleep`` would stop the node: an ``xio.client`` call to it would
    hang and its links die). Unpatched, this raises ``ConfigError`` saying what to call.
    """
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise ConfigError(PATCH_FIRST)
    if not isinstance(apps, dict):
        apps = {app.app_name: app for app in apps}
    # One rule for every app name (xio.peering.names): a name this node's record could not
    # carry, or the router could not route to, is refused here, not at the first refresh.
    apps = {check_app_name(name): app for name, app in apps.items()}
    config = NodeConfig(
        name=name, host=host, port=port, peers=list(peers),
        state_dir=Path(state_dir) if state_dir else None, mdns=mdns, **options,
    )  # fmt: skip
    running = Node(config, apps)
    return running.start() if start else running


__all__ = ["Node", "NodeConfig", "node"]
