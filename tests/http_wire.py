"""Helpers for HTTP tests over real loopback sockets against a server on this test's hub.

The server runs in the test process (gevent's hub); the test talks to it with gevent
sockets, or runs curl and the blocking ``xio.client`` on a real thread of the hub's pool so
the hub keeps serving meanwhile.
"""

from __future__ import annotations

import re
import socket

import gevent
import gevent.socket

from xio.server import Server, WSGIApp

WAIT = 10.0  # no answer or close within this long is a failure, never a timing figure


def start_server(handle, *, limits=None, body_budget=None, max_body=None) -> Server:
    """Start a Server on 127.0.0.1, port 0, serving ``handle(Request) -> Response``."""
    options = {"body_budget": body_budget}
    if max_body is not None:
        options["max_body"] = max_body
    server = Server(WSGIApp(handle, **options), "127.0.0.1", 0, limits=limits)
    server.start()
    return server


def connect(server: Server, source: str | None = None) -> gevent.socket.socket:
    """Open a connection to ``server`` (from ``source``, e.g. 127.0.0.2, when given)."""
    sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.settimeout(WAIT)
    sock.connect(server.address)
    return sock


def read_until_closed(sock) -> bytes:
    """Read everything until the server closes; fail if it keeps the connection open."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"the server kept the connection open; got {b''.join(chunks)[:300]!r}"
            ) from None
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def exchange(server: Server, data: bytes) -> bytes:
    """Send ``data`` on a new connection and return all the server wrote before closing."""
    sock = connect(server)
    sock.sendall(data)
    return read_until_closed(sock)


_HEAD_END = re.compile(rb"\r?\n\r?\n")


def parse_responses(raw: bytes) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    """Split a byte stream into ``(status, headers, body)`` responses, framed as a client
    would: Content-Length, chunked, or the rest of the stream."""
    responses = []
    while raw:
        end = _HEAD_END.search(raw)
        assert end, f"an incomplete response head: {raw[:200]!r}"
        lines = raw[: end.start()].decode("latin-1").split("\r\n")
        raw = raw[end.end() :]
        status = int(lines[0].split()[1])
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        names = {name.lower(): value for name, value in headers}
        if "content-length" in names:
            size = int(names["content-length"])
            assert len(raw) >= size, f"body cut short: {size} announced, {len(raw)} sent"
            body, raw = raw[:size], raw[size:]
        elif names.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size_line, raw = raw.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    assert raw.startswith(b"\r\n"), raw[:50]
                    raw = raw[2:]
                    break
                body, raw = body + raw[:size], raw[size + 2 :]
        elif status in (204, 304) or status < 200:
            body = b""
        else:
            body, raw = raw, b""
        responses.append((status, headers, body))
    return responses


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


def in_thread(function, *args, **kwargs):
    """Run a blocking call on a real thread while this hub keeps serving."""
    return gevent.get_hub().threadpool.spawn(function, *args, **kwargs).get()


def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` while this hub keeps serving; fail after ``timeout`` seconds."""
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {what}")):
        while not predicate():
            gevent.sleep(0.01)
