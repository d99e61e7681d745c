"""An app hosted on two nodes by tests/test_failover.py: items, and orders kept in a journal."""

import os
import time

import xio

app = xio.app(__name__)
NODE = os.environ.get("XIO_TEST_NODE", "?")


@app.bind("www/items/:id")
def item(req):
    """One item, answered after ?s= seconds (so that some are in flight when a node dies)."""
    time.sleep(float(req.query.get("s", "0")))
    return {"id": req.params["id"], "served_by": NODE}


@app.bind("www/orders")
def orders(req):
    """POST an order ``{"id", "journal", "s"}``: each run is a line in the journal file,
    written before the ``s`` seconds of work, so that a test sees every run, cut or not."""
    order = req.data
    with open(order["journal"], "a") as journal:
        journal.write(f"{NODE} {order['id']}\n")
    time.sleep(float(order.get("s", 0)))
    return {"order": order["id"], "served_by": NODE}
