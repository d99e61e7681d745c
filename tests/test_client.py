"""The HTTP client against real loopback servers: a stdlib echo server and raw sockets."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import msgpack
import pytest

import xio
from xio.client import Client
from xio.errors import ConnectError, ReadTimeout, ResponseError, TransportError

from .certs import self_signed
from .conftest import wait_until

LOOPBACK = ipaddress.ip_address("127.0.0.1")
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class EchoHandler(BaseHTTPRequestHandler):
    """Answer any method; by default with a JSON description of the request."""

    protocol_version = "HTTP/1.1"  # keep-alive, with Content-Length on every answer

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def finish(self) -> None:
        super().finish()
        self.server.closed_ports.append(self.client_address[1])

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # do_GET, do_ABOUT, do_MYMETHOD...
            return self._answer
        raise AttributeError(name)

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        if url.path.startswith("/status/"):
            status = int(url.path.rsplit("/", 1)[1])
            return self._reply(status, b"" if status == 204 else b'{"status": %d}' % status)
        if url.path == "/slow":
            time.sleep(1.0)
            self.server.slow_answers += 1
        if url.path == "/echo-body":
            return self._reply(200, body, self.headers.get("Content-Type"))
        if url.path == "/msgpack":
            return self._reply(200, msgpack.packb({"a": 1, "b": [1, 2]}), "application/msgpack")
        if url.path == "/empty":
            return self._reply(200, b"", parse_qs(url.query)["type"][0])
        echo = {
            "method": self.command,
            "path": url.path,
            "query": parse_qs(url.query),
            "headers": dict(self.headers.items()),
            "body": body.decode("latin-1"),
            "port": self.client_address[1],
        }
        self._reply(200, json.dumps(echo).encode(), "application/json")
        if url.path == "/close":  # close after answering, without saying so
            self.close_connection = True

    def _reply(self, status: int, body: bytes, content_type: str | None = "application/json"):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class EchoServer(ThreadingHTTPServer):
    """A threaded echo server that records the client ports whose connection ended."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.closed_ports: list[int] = []
        self.slow_answers = 0  # /slow answers the server had finished writing

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up
            super().handle_error(request, client_address)


def start_echo_server(tls: ssl.SSLContext | None = None) -> tuple[EchoServer, str]:
    """Start an echo server on a free loopback port; return it and its base URL."""
    server = EchoServer()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def echo():
    server, url = start_echo_server()
    yield url, server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(echo):
    with Client(echo[0]) as instance:
        yield instance


@pytest.fixture
def raw_server():
    """Start ``handle(conn, index)`` in a thread for each connection to a raw server."""
    servers = []

    def start(handle) -> tuple[str, list]:
        accepted: list[socket.socket] = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                accepted.append(self.request)
                handle(self.request, len(accepted))

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True  # do not wait for handlers that hold a connection
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}", accepted

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def read_request(conn: socket.socket) -> bytes:
    """Read one request head (the tests' raw servers only get bodiless requests)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    return data


# -- verbs, bodies, URLs ---------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["get", "options", "post", "put", "patch", "delete"])
def test_each_verb_sends_its_method_and_no_body(api, verb):
    response = getattr(api, verb)("things/1")
    assert response.status == 200
    assert (response.content["method"], response.content["path"]) == (verb.upper(), "/things/1")
    assert response.content["body"] == ""
    assert "Content-Type" not in response.content["headers"]


def test_custom_method_about_and_head(api):
    assert api.request("mymethod", "x").content["method"] == "MYMETHOD"
    about = api.about("x")
    assert (about.content_type, about.content["method"]) == ("application/json", "ABOUT")
    head = api.head("x")
    assert (head.status, head.content) == (200, None)
    assert int(head.headers["content-length"]) > 0


@pytest.mark.parametrize(
    "data, content_type",
    [
        ({"a": [1, 2], "b": None}, "application/json"),
        ([1, "x", 2.5], "application/json"),
        (42, "application/json"),
        (True, "application/json"),
        ("héllo wörld", "text/plain; charset=utf-8"),
        (b"\x00\xffbinary", "application/octet-stream"),
    ],
)
def test_bodies_round_trip(api, data, content_type):
    response = api.post("echo-body", data)
    assert response.content_type == content_type
    assert response.content == data


@pytest.mark.parametrize(
    "content_type, expected",
    [("text/plain", ""), ("application/octet-stream", b""), ("application/json", None)],
)
def test_empty_bodies(api, content_type, expected):
    assert api.get("empty", query={"type": content_type}).content == expected
    assert api.get("status/204").content is None


def test_query_dict_with_lists_and_query_string(api):
    echoed = api.get("q", query={"tag": ["a", "b"], "n": 1, "s": "x y"}).content
    assert echoed["query"] == {"tag": ["a", "b"], "n": ["1"], "s": ["x y"]}
    assert api.get("q", query="a=1&a=2").content["query"] == {"a": ["1", "2"]}


@pytest.mark.parametrize("base", ["/inventory", "/inventory/"])
@pytest.mark.parametrize("path", ["items/42", "/items/42"])
def test_paths_join_the_base_path(echo, base, path):
    with xio.client(echo[0] + base) as inventory:  # the public factory
        assert inventory.get(path).content["path"] == "/inventory/items/42"
        assert inventory.get().content["path"] == "/inventory"
        assert inventory.get("a b/é").content["path"] == "/inventory/a%20b/%C3%A9"


def test_headers_merge_over_client_headers_and_are_checked(echo):
    with Client(echo[0], headers={"X-Team": "a", "X-Keep": "1"}) as api:
        sent = api.get("x", headers={"x-team": "b"}).content["headers"]
    assert sent["User-Agent"].startswith("xio-client/")
    assert sent["Accept"] == "application/json, */*;q=0.5"
    assert (sent["x-team"], sent["X-Keep"]) == ("b", "1")
    with pytest.raises(ValueError):  # no header injection
        api.get("x", headers={"X-Evil": "a\r\nX-Injected: 1"})


def test_error_statuses_are_responses(api):
    for status in (404, 500):
        response = api.get(f"status/{status}")
        assert (response.status, response.ok) == (status, False)
        assert response.content == {"status": status}


def test_msgpack_response_is_decoded(api):
    assert api.get("msgpack").content == {"a": 1, "b": [1, 2]}


# -- connections --------------------------------------------------------------------------


def test_keep_alive_reuses_the_connection_until_close(echo):
    url, server = echo
    with Client(url) as api:
        port = api.get("a").content["port"]
        assert api.get("b").content["port"] == port
    deadline = time.monotonic() + 2
    while port not in server.closed_ports and time.monotonic() < deadline:
        time.sleep(0.01)
    assert port in server.closed_ports


def test_server_closing_an_idle_connection_is_harmless(echo):
    url, server = echo
    with Client(url) as api:
        first = api.get("close").content["port"]
        # The server has closed the connection while the client holds it idle.
        wait_until(lambda: first in server.closed_ports, timeout=2, what="the server's close")
        again = api.get("x")
    assert again.status == 200
    assert again.content["port"] != first


def test_request_is_resent_once_when_a_reused_connection_was_closed(raw_server):
    received = []

    def handle(conn, index):
        received.append(read_request(conn))
        conn.sendall(OK)
        if index == 1:  # the next request arrives, then the server closes unanswered
            received.append(read_request(conn))

    url, accepted = raw_server(handle)
    with Client(url) as api:
        assert [api.get("a").content, api.get("b").content] == ["ok", "ok"]
    assert len(accepted) == 2
    assert [r.split(b" ")[1] for r in received] == [b"/a", b"/b", b"/b"]


def test_fresh_connection_closed_without_answer_is_not_resent(raw_server):
    url, accepted = raw_server(lambda conn, index: read_request(conn))
    with pytest.raises(ConnectError, match="before any response") as caught:
        Client(url).get("x")
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert len(accepted) == 1


def test_connection_close_from_the_server_is_honoured(raw_server):
    def handle(conn, index):
        read_request(conn)
        conn.sendall(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        time.sleep(1.5)  # hold the connection open: only the header says it is over

    url, accepted = raw_server(handle)
    with Client(url, timeout=1) as api:
        assert [api.get("a").content, api.get("b").content] == ["ok", "ok"]
    assert len(accepted) == 2


def test_threads_share_one_client(api):
    paths = [f"/t/{n}" for n in range(200)]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda path: api.get(path).content["path"], paths)) == paths


# -- failures -------------------------------------------------------------------------------


def test_connection_refused_is_connect_error():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}/x") as caught:
        Client(f"http://127.0.0.1:{port}").get("x")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_slow_answer_is_read_timeout_and_the_client_recovers(echo, api):
    with pytest.raises(ReadTimeout) as caught:
        api.request("GET", "slow", timeout=0.3)
    assert echo[1].slow_answers == 0  # the client gave up before the 1 s answer was ready
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert api.get("after").content["path"] == "/after"  # not the late answer to /slow


BAD_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{x}"


@pytest.mark.parametrize(
    "answer, cause",
    [
        (b"garbage\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", http.client.IncompleteRead),
        (BAD_JSON, None),
    ],
)
def test_malformed_answer_is_response_error(raw_server, answer, cause):
    url, _ = raw_server(lambda conn, index: (read_request(conn), conn.sendall(answer)))
    with pytest.raises(ResponseError) as caught:
        Client(url).get("x")
    assert caught.value.__cause__ is not None
    if cause:
        assert isinstance(caught.value.__cause__, cause)


def test_only_xio_errors_escape(raw_server, echo):
    def reset_in_headers(conn, index):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # with a zero linger time: a reset, not a FIN

    url, _ = raw_server(reset_in_headers)
    https_to_plain = echo[0].replace("http://", "https://")
    for target in (url, https_to_plain, "http://127.0.0.1:1"):
        with pytest.raises(TransportError) as caught:
            Client(target, timeout=2, verify=False).get("x")
        assert caught.value.__cause__ is not None


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture
def tls_echo(tmp_path):
    """Start an HTTPS echo server with a fresh self-signed certificate for 127.0.0.1."""
    cert_path, key_path = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server, url = start_echo_server(context)
    yield url, str(cert_path)
    server.shutdown()
    server.server_close()


def test_https_with_verification_off(tls_echo):
    url, _ = tls_echo
    with Client(url, verify=False) as api:
        first = api.post("x", {"a": 1}).content
        assert (first["method"], first["body"]) == ("POST", '{"a":1}')
        assert api.get("y").content["port"] == first["port"]  # kept alive over TLS too


def test_https_verifies_against_system_cas_or_a_ca_file(tls_echo):
    url, ca_path = tls_echo
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        Client(url).get("x")
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    with Client(url, verify=ca_path) as api:
        assert api.get("x").status == 200


def _listener(answer: bytes | None):
    """A loopback server that reads one request and answers ``answer`` (None: just closes)."""
    server = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(65536))
                if answer is not None:
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server, seen


def test_a_url_list_fails_over_to_the_next_entry_when_the_first_takes_no_connection():
    good, seen = _listener(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        down = probe.getsockname()[1]
    try:
        port = good.getsockname()[1]
        both = xio.client([f"http://127.0.0.1:{down}/app", f"http://127.0.0.1:{port}/app"])
        assert both.get("x").content == b"ok"
        assert len(seen) == 1
        with pytest.raises(ConnectError, match="no entry took a connection"):
            xio.client([f"http://127.0.0.1:{down}/app"]).get("x")
    finally:
        good.close()


def test_a_url_list_never_resends_a_request_the_first_entry_received():
    # The first entry reads the request and closes without answering: it may have acted on
    # it, so the request must not go to the second one.
    lost, lost_seen = _listener(None)
    good, good_seen = _listener(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    try:
        urls = [f"http://127.0.0.1:{s.getsockname()[1]}/app" for s in (lost, good)]
        with pytest.raises(ConnectError, match="connection lost before any response"):
            xio.client(urls).post("orders", {"n": 1})
        assert len(lost_seen) == 1 and good_seen == []
    finally:
        lost.close()
        good.close()
