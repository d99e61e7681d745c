"""An app that streams: ``bytes?n=&size=`` yields n pieces of ``size`` bytes (each piece's
bytes are its index mod 256, so any lost, doubled or moved piece shows), ``ticks?n=&every=``
yields n lines, one every ``every`` seconds, and ``stats`` says how many streams were closed
before their end (the client went away), how many ran to it, and how many pieces were made."""

import os
import time

import xio

app = xio.app(__name__)
STATS = {
    "started": 0,
    "finished": 0,
    "closed_early": 0,
    "yielded": 0,
    "node": os.environ.get("XIO_TEST_NODE"),
}


def _counted(pieces):
    STATS["started"] += 1
    finished = False
    try:
        for piece in pieces:
            STATS["yielded"] += 1
            yield piece
        finished = True
    finally:  # closed, or stopped by the node's cancel while it waited
        STATS["finished" if finished else "closed_early"] += 1


@app.bind("www/bytes")
def stream_bytes(req):
    n, size = int(req.query.get("n", "4")), int(req.query.get("size", "65536"))
    return _counted(bytes([index % 256]) * size for index in range(n))


@app.bind("www/ticks")
def ticks(req):
    n, every = int(req.query.get("n", "3")), float(req.query.get("every", "0.1"))

    def lines():
        for index in range(n):
            if index:
                time.sleep(every)
            yield f"tick {index} {time.time():.6f}\n"

    return _counted(lines())


@app.bind("www/stats")
def stats(req):
    return STATS


@app.bind("www/events")
def events(req):
    """Server-sent events: n of them, every ``every`` seconds, each stamped when yielded."""
    n, every = int(req.query.get("n", "3")), float(req.query.get("every", "0.1"))

    def produce():
        for index in range(n):
            if index:
                time.sleep(every)
            if index % 2:
                yield {"index": index, "at": time.time()}  # a plain value: an unnamed event
            else:
                yield xio.Event(f'{{"index": {index}, "at": {time.time():.6f}}}', event="tick",
                                id=str(index))  # fmt: skip

    return _counted(produce())
