"""An app at the edges of the request path: paths, headers and sizes a frame must carry."""

import os

import xio
from xio.request import Headers, Response

app = xio.app(__name__)
NODE = os.environ.get("XIO_TEST_NODE", "?")


@app.bind("www/echo/:id")
def echo(req):
    """Echo what the app was given: the parameter, the rest of the path, the headers."""
    return {
        "id": req.params["id"],
        "path": req.path,
        "headers": [list(pair) for pair in req.headers.items()],
        "served_by": NODE,
    }


@app.bind("www/cookies")
def cookies(req):
    """Set two cookies, and headers that belong to one HTTP connection only."""
    headers = Headers()  # add() keeps a repeated name repeated
    headers.add("Set-Cookie", "a=1; Path=/")
    headers.add("Set-Cookie", "b=2; Path=/")
    headers.add("Connection", "close, X-Hop")
    headers.add("X-Hop", "only for the next hop")
    headers.add("Keep-Alive", "timeout=1")
    headers.add("Content-Length", "999")
    headers.add("X-Kept", "yes")
    return Response({"cookies": 2}, headers=headers)


@app.bind("www/big-header")
def big_header(req):
    """Answer with a header larger than any frame may carry (64 KiB)."""
    req.response.headers["X-Big"] = "x" * (70 * 1024)
    return "too big to travel"
