"""A test client that calls a WSGI app directly, with no socket in between.

    client = xio.testing.TestClient(app)
    response = client.get('/items/42')
    assert response.status == 200

It builds a real WSGI environ (as a server would) and decodes the answer the way the
network client does, so a test sees exactly what an HTTP caller would see.
"""

from __future__ import annotations

import io
from urllib.parse import unquote, urlencode

from . import content as _content
from .request import Headers, Response


class TestClient:
    """Send requests to ``wsgi_app`` in-process and return ``Response`` objects."""

    __test__ = False  # not a pytest test class

    def __init__(self, wsgi_app) -> None:
        self.app = wsgi_app

    def request(
        self,
        method: str,
        path: str = "/",
        data=None,
        query=None,
        headers=None,
        body: bytes | None = None,
    ) -> Response:
        """Send one request; ``data`` is encoded like the network client does it."""
        headers = Headers(headers)
        if body is None and data is not None:
            body, content_type = _content.encode(data, None)
            headers.setdefault("Content-Type", content_type)
        body = body or b""
        path, _, query_string = path.partition("?")
        if query:
            query_string = query if isinstance(query, str) else urlencode(query, doseq=True)
        environ = {
            "REQUEST_METHOD": method.upper(),
            "PATH_INFO": unquote(path).encode().decode("latin-1"),  # as servers decode it
            "QUERY_STRING": query_string,
            "SERVER_NAME": "testclient",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "CONTENT_LENGTH": str(len(body)) if body else "",
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ["HTTP_" + key] = value
        started = {}

        def start_response(status, response_headers, exc_info=None):
            started["status"] = int(status.split(" ", 1)[0])
            started["headers"] = Headers(response_headers)

        chunks = self.app(environ, start_response)
        try:
            raw = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        response_headers = started["headers"]
        content_type = response_headers.get("Content-Type")
        status = started["status"]
        value = _content.decode_answer(raw, content_type, environ["REQUEST_METHOD"], status)
        return Response(value, status, content_type, response_headers)

    def get(self, path: str = "/", **kwargs) -> Response:
        """Send GET."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str = "/", **kwargs) -> Response:
        """Send HEAD."""
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str = "/", data=None, **kwargs) -> Response:
        """Send POST."""
        return self.request("POST", path, data, **kwargs)

    def put(self, path: str = "/", data=None, **kwargs) -> Response:
        """Send PUT."""
        return self.request("PUT", path, data, **kwargs)

    def patch(self, path: str = "/", data=None, **kwargs) -> Response:
        """Send PATCH."""
        return self.request("PATCH", path, data, **kwargs)

    def delete(self, path: str = "/", **kwargs) -> Response:
        """Send DELETE."""
        return self.request("DELETE", path, **kwargs)

    def about(self, path: str = "/", **kwargs) -> Response:
        """Send ABOUT."""
        return self.request("ABOUT", path, **kwargs)
