"""Who called, as the app sees it (req.client), and the orders it took: tests/test_e2e_mesh.py."""

import xio

app = xio.app(__name__)
ORDERS: list[bytes] = []


@app.bind("www")
def whoami(req):
    """The caller of this request, with a cookie a relay might want to change."""
    client = req.client
    req.response.headers["Set-Cookie"] = "session=genuine"
    return {
        "node_id": client.node_id,
        "name": client.name,
        "member": client.member,
        "via_mesh": client.via_mesh,
    }


@app.bind("www/orders")
def orders(req):
    """POST takes an order (the body); GET says how many were taken."""
    if req.method == "POST":
        ORDERS.append(req.body)
    return {"orders": len(ORDERS), "last": ORDERS[-1].decode() if ORDERS else None}


@app.bind("www/lines")
def lines(req):
    """A streamed answer: ``n`` lines, each its own piece (a relay might change one)."""
    return (f"line {index}\n" for index in range(int(req.query.get("n", "3"))))
