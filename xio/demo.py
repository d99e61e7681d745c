"""The app ``xio-node --demo`` hosts, so a newcomer's first command shows something real."""

from __future__ import annotations

import socket
import time

from .app import App
from .errors import BadRequest, NotFound


def demo_app(node_name: str) -> App:
    """Return the demo app; its answers say which node served them."""
    app = App("demo")
    items = {"1": {"id": "1", "name": "kettle"}, "2": {"id": "2", "name": "teapot"}}

    @app.bind("www")
    def hello(req):
        """Say hello, and where from.

        methods: GET
        """
        return {
            "hello": "world",
            "served_by": node_name,
            "host": socket.gethostname(),
            "try": ["/demo/items", "/demo/items/1", "/demo/echo", "/_xio/node", "/_xio/routes"],
        }

    @app.bind("www/items")
    def list_items(req):
        """List the items, or add one with POST {"name": ...}.

        methods: GET, POST
        """
        if req.POST:
            name = req.data.get("name") if isinstance(req.data, dict) else None
            if not isinstance(name, str) or not name:
                raise BadRequest("give a 'name'")
            item_id = str(max((int(k) for k in items), default=0) + 1)
            items[item_id] = {"id": item_id, "name": name}
            req.response.status = 201
            return items[item_id]
        return sorted(items.values(), key=lambda item: int(item["id"]))

    @app.bind("www/items/:id")
    def item(req):
        """One item by id.

        methods: GET, DELETE
        """
        found = items.get(req.params["id"])
        if found is None:
            raise NotFound("no such item")
        if req.method == "DELETE":
            del items[req.params["id"]]
        return found

    @app.bind("www/echo")
    def echo(req):
        """Echo the request back: method, path, query, headers, body size."""
        headers = dict(req.headers.items())
        return {"method": req.method, "path": req.path, "query": req.query, "headers": headers,
                "body_bytes": len(req.body), "served_by": node_name, "time": time.time()}  # fmt: skip

    return app
