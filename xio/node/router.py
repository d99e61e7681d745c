"""The node's HTTP front: which part of the mesh answers a path.

    /                        the mesh's apps and where they run (or the main app, if any)
    /_xio/...                this node's admin resources
    /~<node>/<app>/<path>    app ``<app>`` on that node only (node id or unique name)
    /<app>/<path>            app ``<app>``'s ``www/<path>``: here if hosted here, else on
                             the nearest node that hosts it (ties spread at random)
    anything else            the main app (``app.main()``), or 404 unknown app

``X-Xio-Timeout: <seconds>`` sets the request's deadline (default 30 s); past it the
answer is 504, wherever the request is.
"""

from __future__ import annotations

import logging
import time

from ..errors import BadRequest, Conflict, GatewayTimeout, HTTPError, NotFound, PayloadTooLarge
from ..peering.codec import DEFAULT_HOPS, MAX_BODY, RequestFrame, ResponseFrame
from ..request import Headers, Request, Response
from ..resource import error_response
from .admin import admin_resource
from .hosting import APP_NAME

log = logging.getLogger("xio.node")

#: Headers that belong to one HTTP connection, not to the request: never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
     "proxy-authorization", "trailer", "content-length", "host"}
)  # fmt: skip

TIMEOUT_HEADER = "X-Xio-Timeout"
MAX_TIMEOUT = 3600.0


class Router:
    """Answer HTTP requests for one node."""

    def __init__(self, node) -> None:
        self.node = node
        self.admin = admin_resource(node)

    def handle(self, req: Request) -> Response:
        """Answer ``req``; never raise."""
        if req.url_path.startswith("/_xio/"):
            # The admin resources answer at once and hold nothing: an operator must be able to
            # look at a node whose budget is spent.
            return self._answer(req)
        in_flight = self.node.in_flight
        if not in_flight.take():  # the node-wide budget, shared with every link
            self.node.refused["in_flight_budget"] += 1
            busy = "too many requests in flight at this node"
            return error_response(HTTPError(503, busy, headers={"Retry-After": "1"}))
        try:
            return self._answer(req)
        finally:
            in_flight.give()

    def _answer(self, req: Request) -> Response:
        try:
            return self._route(req)
        except HTTPError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug of ours: a 500 that says so, the traceback in the log
            log.exception("routing %s %s failed", req.method, req.url_path)
            return error_response(HTTPError(500, f"{type(exc).__name__}: {exc}"))

    def _route(self, req: Request) -> Response:
        path = req.url_path
        first, _, rest = path.lstrip("/").partition("/")
        if first == "_xio":
            req.url_path = rest
            return self.admin.handle(req)
        node = self.node
        if not first and node.main_app is None:
            return (
                Response(self.listing())
                if req.method in ("GET", "HEAD")
                else error_response(
                    HTTPError(405, "the mesh listing answers GET", headers={"Allow": "GET, HEAD"})
                )
            )
        deadline = time.monotonic() + self._timeout(req)
        if first.startswith("~"):
            return self._pinned(req, first[1:], rest, deadline)
        if first in node.apps:
            req.url_path = rest
            return node.answer_locally(node.apps[first], req, deadline)
        if APP_NAME.match(first) and node.table.hosts_of(first):
            return self._forward(req, node.table.pick_host(first), first, rest, deadline)
        if node.main_app is not None:
            return node.answer_locally(node.main_app, req, deadline)
        if not APP_NAME.match(first):
            raise BadRequest(f"malformed mesh path {path!r}: {first!r} cannot be an app name")
        raise NotFound(f"no app {first!r} in the mesh")

    def _timeout(self, req: Request) -> float:
        raw = req.header(TIMEOUT_HEADER)
        if raw is None:
            return self.node.config.request_timeout
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:  # also refuses NaN
            raise BadRequest(f"{TIMEOUT_HEADER} must be a positive number of seconds")
        return min(seconds, MAX_TIMEOUT, self.node.config.max_ttl)

    def _pinned(self, req: Request, token: str, rest: str, deadline: float) -> Response:
        app, _, below = rest.partition("/")
        if not token or not app or not APP_NAME.match(app):
            raise BadRequest("malformed mesh path: expected /~<node id or name>/<app>/<path>")
        node = self.node
        if token in (node.id, node.name) and app in node.apps:
            req.url_path = below
            return node.answer_locally(node.apps[app], req, deadline)
        matches = node.table.find_nodes(token)
        if not matches:
            raise NotFound(f"no node {token!r} in the mesh")
        if len(matches) > 1:
            raise Conflict(f"{len(matches)} nodes are named {token!r}: use a node id")
        target = matches[0]
        if target == node.id:
            raise NotFound(f"no app {app!r} on node {node.name}")
        if not any(host == target for _, host in node.table.hosts_of(app)):
            raise NotFound(f"no app {app!r} on node {token}")
        return self._forward(req, target, app, below, deadline)

    def _forward(self, req: Request, dst: str, app: str, below: str, deadline: float) -> Response:
        if time.monotonic() >= deadline:
            raise GatewayTimeout("deadline passed")
        if len(req.body) > MAX_BODY:
            raise PayloadTooLarge(f"a body crossing the mesh is at most {MAX_BODY} bytes")
        headers = tuple(
            (name, value) for name, value in req.headers.items() if name.lower() not in HOP_BY_HOP
        )
        frame = RequestFrame(
            0, dst, app, req.method, "/" + below if below or req.url_path.endswith("/") else "",
            req.query_string, headers, req.body, DEFAULT_HOPS + 1, 0,
        )  # fmt: skip
        return frame_to_response(self.node.forwarder.route(frame, deadline))

    def listing(self) -> dict:
        """Return every app in the mesh with the nodes that host it."""
        table = self.node.table
        return {
            "node": {"id": self.node.id, "name": self.node.name},
            "apps": {
                app: [
                    {"node": node, "name": table.name_of(node), "cost": cost}
                    for cost, node in hosts
                ]
                for app, hosts in table.apps().items()
            },
        }


def frame_to_response(frame: ResponseFrame) -> Response:
    """Turn a ``res`` frame into the HTTP response sent to the client."""
    headers = Headers(frame.headers)
    content_type = headers.pop("Content-Type", None)
    return Response(frame.body, frame.status, content_type, headers)
