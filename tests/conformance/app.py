"""The app every client's conformance run calls: ``conf``, hosted on the mesh's far node.

Each resource gives one kind of answer the cases in cases.json check: bodies of each type,
statuses made by the app itself, repeated headers, a slow answer, a streamed one. ``echo``
says what arrived, so that a case can check what its client sent.
"""

import hashlib
import time

import xio

app = xio.app("conf")

ECHO_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "PURGE"]


@app.bind("www/echo", methods=ECHO_METHODS)
def echo(req):
    """What arrived: method, path below echo, query, the X-Conf-* headers and the body."""
    body = req.body
    kind = req.headers.get("Content-Type")
    data = None
    if body and kind and (kind.startswith("application/json") or kind.startswith("text/")):
        data = req.data
    return {
        "method": req.method,
        "path": req.path,
        "query": req.query_all,
        "headers": {
            name.lower(): value
            for name, value in req.headers.items()
            if name.lower().startswith("x-conf")
        },
        "type": kind,
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "data": data,
    }


@app.bind("www/json")
def json_value(req):
    return {"name": "café ☕", "emoji": "🎉", "list": [1, 2.5, True, None], "nested": {"k": "v"}}


@app.bind("www/text")
def text(req):
    return "héllo wörld ✓ 日本"


@app.bind("www/text-empty")
def text_empty(req):
    return ""


@app.bind("www/bytes")
def octets(req):
    return bytes(range(256))


@app.bind("www/empty")
def empty(req):
    return xio.Response(None, 204)


@app.bind("www/cookies")
def cookies(req):
    response = xio.Response({"cookies": 2})
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/")
    response.headers["X-Conf"] = "yes"
    return response


@app.bind("www/bad")
def bad(req):
    raise xio.BadRequest("the conformance app refuses this on purpose")


@app.bind("www/fail")
def fail(req):
    raise RuntimeError("the conformance app fails on purpose")


@app.bind("www/gateway")
def gateway(req):
    raise xio.BadGateway("the conformance app's upstream refused")


@app.bind("www/only-get", methods=["GET"])
def only_get(req):
    return "only GET here"


@app.bind("www/slow")
def slow(req):
    time.sleep(float(req.query.get("s", "1")))
    return {"slept": req.query.get("s", "1")}


@app.bind("www/stream")
def stream(req):
    req.response.content_type = "text/plain; charset=utf-8"
    return (f"chunk-{i}\n" for i in range(5))
