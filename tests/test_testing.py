"""``xio.testing.TestClient`` answers as the network client does through a real server.

The same app runs in-process under the test client and as ``app.main()`` in a process of its
own; every answer, empty ones above all, must look the same to the test as to an HTTP caller.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

import xio
from xio.testing import TestClient

APP = textwrap.dedent(
    """
    import io
    import xio
    from xio.request import Response

    app = xio.app("answers")
    app.bind("www/text", lambda req: "plain")
    app.bind("www/number", lambda req: 42)
    app.bind("www/empty-text", lambda req: "")
    app.bind("www/empty-bytes", lambda req: b"")
    app.bind("www/none", lambda req: None)
    app.bind("www/no-content", lambda req: Response(None, 204))
    app.bind("www/not-modified", lambda req: Response(None, 304))
    app.bind("www/empty-json", lambda req: Response(b"", 200, "application/json"))
    app.bind("www/empty-html", lambda req: Response("", 201, "text/html"))
    app.bind("www/empty-stream", lambda req: (part for part in []))
    app.bind("www/empty-file", lambda req: io.BytesIO(b""))

    if __name__ == "__main__":
        app.main()
    """
)
PATHS = ["/text", "/number", "/empty-text", "/empty-bytes", "/none", "/no-content",
         "/not-modified", "/empty-json", "/empty-html", "/empty-stream", "/empty-file",
         "/missing"]  # fmt: skip
#: Written by the server, not the app: the date, its name, and how a streamed body is framed.
SERVER_FIELDS = {"date", "server", "transfer-encoding"}


@pytest.fixture(scope="module")
def answers_app(tmp_path_factory):
    path = tmp_path_factory.mktemp("answers") / "answers.py"
    path.write_text(APP)
    namespace: dict = {}
    exec(compile(APP, str(path), "exec"), namespace)
    return path, namespace["app"]


@pytest.fixture
def both(answers_app, spawn):
    path, app = answers_app
    server = spawn([sys.executable, str(path), "--host", "127.0.0.1", "--port", "0"], "answers")
    with xio.client(server.url, timeout=5) as network:
        yield network, TestClient(app)


def seen(response: xio.Response, streamed: bool) -> tuple:
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() not in SERVER_FIELDS}
    if streamed:  # the server frames a stream by itself (chunked; a HEAD's length is its own)
        headers.pop("content-length", None)
    return response.status, response.content, response.content_type, headers


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_test_client_sees_what_an_http_caller_sees(both, method):
    network, in_process = both
    for path in PATHS:
        streamed = path in ("/empty-stream", "/empty-file")
        over_http, here = network.request(method, path), in_process.request(method, path)
        assert seen(here, streamed) == seen(over_http, streamed), f"{method} {path}"


def test_empty_bodies_are_the_empty_value_of_their_type():
    app = xio.app("empties")
    app.bind("www/text", lambda req: "")
    app.bind("www/bytes", lambda req: b"")
    app.bind("www/none", lambda req: None)
    client = TestClient(app)
    assert client.get("/text").content == ""
    assert client.get("/bytes").content == b""
    assert client.get("/none").content is None  # JSON null: a body of its own
    assert client.head("/text").content is None  # HEAD: no body at all
