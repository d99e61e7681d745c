"""An app whose answers take as long as asked (?s=seconds)."""

import os
import time

import xio

app = xio.app(__name__)


@app.bind("www")
def slow(req):
    time.sleep(float(req.query.get("s", "0")))
    return {"slept": req.query.get("s", "0"), "served_by": os.environ.get("XIO_TEST_NODE", "?")}
