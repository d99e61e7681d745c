"""The node's own resources under ``/_xio/``: what it is, whom it links to, what it routes.

Every page is a snapshot the node (``AdminNode``) makes of itself: the node composes what
its parts report, so this module knows the pages' paths and nothing of the parts.

Who may read them is decided before the tree is reached (the router, by the rule of
``xio.node.access``): loopback clients only, or bearers of the admin token. Only the pages in
``PUBLIC_PAGES`` answer anyone; a page is public because it is listed there, never by default.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import BadRequest
from ..peering.routing import RoutingTable
from ..request import Response
from ..resource import Resource
from . import metrics as _metrics
from .clientjs import client_script_response
from .health import ReadinessFacts, liveness, readiness
from .ui import asset_response

#: The pages under /_xio/ that answer every client: "ws", the link endpoint peers dial from
#: anywhere, and "client-ws", the clients' channel (their upgrades are served by the HTTP
#: server itself; a plain GET is a 426; each request on the channel is judged as over HTTP); "ui",
#: the mesh map's static files, which hold no data: the page fetches /_xio/map with the
#: operator's token; "health", what load balancers and probes read (xio.node.health); and
#: "client.js" and "client.d.ts", the JavaScript client that pages import and its types
#: (xio.node.clientjs).
#: A page added here must show nothing of peers, links or routes.
PUBLIC_PAGES = frozenset({"ws", "client-ws", "ui", "health", "client.js", "client.d.ts"})


def is_admin_page(path: str) -> bool:
    """Tell whether ``path`` is an admin page: under /_xio/ and not in ``PUBLIC_PAGES``.

    Read as the router reads it (xio.node.router ``_route``): leading slashes do not count.
    """
    first, _, rest = path.lstrip("/").partition("/")
    return first == "_xio" and rest.partition("/")[0] not in PUBLIC_PAGES


#: Health answers are of this instant: never from a cache.
_NO_STORE = {"Cache-Control": "no-store"}


class AdminNode(Protocol):
    """What the admin pages read of a node (``xio.node.node.Node``)."""

    @property
    def table(self) -> RoutingTable: ...
    def status(self) -> dict: ...
    def peer_status(self) -> list[dict]: ...
    def route_status(self) -> list[dict]: ...
    def mesh_publish(self, text: str) -> dict: ...
    def mesh_map(self) -> dict: ...
    def readiness_facts(self) -> ReadinessFacts: ...

    metrics: _metrics.Metrics


def admin_resource(node: AdminNode) -> Resource:
    """Return the resource tree served at ``/_xio/`` for ``node``."""
    admin = Resource("_xio")

    @admin.bind("node", methods=["GET"])
    def node_info(req):
        """This node: identity, addresses, apps, budgets, and counters of what it refused."""
        return node.status()

    @admin.bind("peers", methods=["GET"])
    def peers(req):
        """The links of this node, established or being set up."""
        return node.peer_status()

    @admin.bind("routes", methods=["GET"])
    def routes(req):
        """Every reachable node: next hop, cost, seq and age of its record."""
        return node.route_status()

    @admin.bind("apps", methods=["GET"])
    def apps(req):
        """Every app in the mesh with its hosts, nearest first."""
        table, seen = node.table, node.app_hosts

        def entry(app, cost, host, **extra):
            since = seen.since_ms(app, host)
            found = {"node": host, "name": table.name_of(host), "cost": cost, **extra}
            if since is not None:
                found["since_ms"] = since
            if seen.is_second(app, host):
                found["second_host"] = True  # it appeared while another node served the app
            return found

        apps = {app: [entry(app, cost, host) for cost, host in hosts]
                for app, hosts in table.apps().items()}  # fmt: skip
        for app, hosts in table.excluded_hosts().items():  # hosts a --pin-app leaves out
            apps.setdefault(app, []).extend(
                entry(app, cost, host, excluded="not in --pin-app") for cost, host in hosts
            )
        return apps

    @admin.bind("map", methods=["GET"])
    def mesh_map(req):
        """The mesh as this node sees it: nodes, links with cost and RTT (xio.node.meshmap)."""
        return node.mesh_map()

    @admin.bind("ui", methods=["GET"])
    def ui_page(req):
        """The mesh map: draws /_xio/map live, lists the apps, sends a request (xio.node.ui)."""
        return asset_response("index.html")

    @admin.bind("ui/:file", methods=["GET"])
    def ui_file(req):
        """The mesh map page's script and style."""
        return asset_response(req.params["file"])

    @admin.bind("client.js", methods=["GET", "HEAD"])
    def client_js(req):
        """The JavaScript client (clients/js/xio.js), for pages to import (xio.node.clientjs)."""
        return client_script_response("client.js", req.header("If-None-Match"))

    @admin.bind("client.d.ts", methods=["GET", "HEAD"])
    def client_types(req):
        """The JavaScript client's types (clients/js/xio.d.ts)."""
        return client_script_response("client.d.ts", req.header("If-None-Match"))

    @admin.bind("metrics", methods=["GET"])
    def metrics(req):
        """This node's metrics in the Prometheus text format 0.0.4 (README, "Metrics")."""
        found = node.discovery.events
        text = _metrics.render(_metrics.families(node.metrics, node.status(), node.peer_status(),
                                                 found))  # fmt: skip
        return Response(text, 200, _metrics.CONTENT_TYPE)

    @admin.bind("health/live", methods=["GET", "HEAD"])
    def live(req):
        """200 while the process serves (a liveness probe)."""
        status, body = liveness()
        return Response(body, status, headers=dict(_NO_STORE))

    @admin.bind("health/ready", methods=["GET", "HEAD"])
    def ready(req):
        """200 when this node should get traffic; 503 with a reason, or draining, if not."""
        status, body = readiness(node.readiness_facts())
        return Response(body, status, headers=dict(_NO_STORE))

    @admin.bind("mesh", methods=["POST"])
    def mesh(req):
        """Apply an armored revocation (flooded on) or a renewed certificate of this node."""
        try:
            text = req.body.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest("the body is not an ASCII armored certificate or revocation") from None
        return node.mesh_publish(text)

    return admin
