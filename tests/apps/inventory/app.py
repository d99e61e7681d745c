"""An inventory app hosted by test nodes."""

import os

import xio

app = xio.app(__name__)
NODE = os.environ.get("XIO_TEST_NODE", "?")


@app.bind("www")
def root(req):
    """Inventory of items."""
    return {"app": "inventory", "path": req.path, "served_by": NODE}


@app.bind("www/items/:id")
def item(req):
    """One item.

    methods: GET, PUT, MYMETHOD
    """
    req.response.headers["X-Item"] = req.params["id"]
    return {
        "id": req.params["id"],
        "method": req.method,
        "query": req.query,
        "data": req.data if not isinstance(req.data, bytes) else len(req.data),
        "header": req.headers.get("X-Test"),
        "served_by": NODE,
    }


@app.bind("www/created")
def created(req):
    req.response.status = 201
    return "made"


@app.bind("www/blob")
def blob(req):
    return {"size": len(req.body)}
