"""The xio daemon: a node hosts apps and links to peers; ``xio.node()`` embeds one."""

from __future__ import annotations

from pathlib import Path

from ..resource import Resource
from .node import Node, NodeConfig


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
    The node runs on this process's gevent hub: it makes progress whenever the calling
    code waits cooperatively (``node.serve_forever()``, ``gevent.sleep``, ...).
    """
    if not isinstance(apps, dict):
        apps = {app.app_name: app for app in apps}
    config = NodeConfig(
        name=name, host=host, port=port, peers=list(peers),
        state_dir=Path(state_dir) if state_dir else None, mdns=mdns, **options,
    )  # fmt: skip
    running = Node(config, apps)
    return running.start() if start else running


__all__ = ["Node", "NodeConfig", "node"]
