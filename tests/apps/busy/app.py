"""An app whose handler keeps the CPU busy in pure Python for ?s= seconds, on two threads."""

import time

import xio

app = xio.app(__name__, threads=2)


@app.bind("www/spin")
def spin(req):
    seconds = float(req.query.get("s", "0"))
    end, turns = time.monotonic() + seconds, 0
    while time.monotonic() < end:  # pure Python: holds the GIL but for switch intervals
        turns += 1
    return {"spun": seconds, "turns": turns}


@app.bind("www/ping")
def ping(req):
    return "pong"
