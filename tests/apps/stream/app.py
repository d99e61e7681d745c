"""An app that streams: ``bytes?n=&size=`` yields n pieces of ``size`` bytes (each piece's
bytes are its index mod 256, so any lost, doubled or moved piece shows), ``ticks?n=&every=``
yields n lines, one every ``every`` seconds, and ``stats`` says how many streams were closed
before their end (the client went away), how many ran to it, and how many pieces were made."""

import hashlib
import os
import time

import xio

app = xio.app(__name__)
STATS = {
    "started": 0,
    "finished": 0,
    "closed_early": 0,
    "yielded": 0,
    "sunk": 0,
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


@app.bind("www/sink")
def sink(req):
    """Read the body as it comes (``req.stream``), ``pause`` seconds after each piece; answer
    its size, its SHA-256 and the largest piece the app was handed."""
    pause = float(req.query.get("pause", "0"))
    digest, size, largest = hashlib.sha256(), 0, 0
    try:
        for piece in req.stream:
            digest.update(piece)
            size += len(piece)
            largest = max(largest, len(piece))
            STATS["sunk"] = size
            if pause:
                time.sleep(pause)
    except xio.HTTPError as exc:  # the body broke on the way: the app is told, and says so
        STATS["broken"] = STATS.get("broken", 0) + 1
        STATS["broken_reason"] = str(exc)
        raise
    return {"size": size, "sha256": digest.hexdigest(), "largest": largest}


@app.bind("www/upper")
def upper(req):
    """Answer as it reads: each piece of the body, upper-cased, as soon as it arrives."""
    return (piece.upper() for piece in req.stream)


@app.bind("www/whole")
def whole(req):
    """Read the body whole (``req.body``, within the node's --max-body)."""
    return {"size": len(req.body), "sha256": hashlib.sha256(req.body).hexdigest()}


@app.bind("www/ignore")
def ignore(req):
    """Answer without reading the body."""
    req.response.status = 201
    return "not read"
