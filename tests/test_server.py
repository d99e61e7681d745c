"""The real app server: app.main() in its own process, spoken to over loopback sockets."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from urllib.parse import urlsplit

import pytest

import xio

from .certs import self_signed
from .conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

APP = textwrap.dedent(
    """
    import time
    import xio

    app = xio.app(__name__)

    @app.bind('www')
    def _(req):
        if req.GET:
            return 'it is a GET request'
        elif req.POST:
            return 'it is a POST request'

    @app.bind('www/items/:id')
    def item(req):
        '''One item.

        methods: GET, MYMETHOD
        '''
        return {'id': req.params['id'], 'method': req.method}

    @app.bind('www/slow')
    def slow(req):
        time.sleep(float(req.query.get('s', '0.5')))
        return 'done'

    @app.bind('www/echo')
    def echo(req):
        return {'size': len(req.body), 'data': req.data if isinstance(req.data, dict) else None}

    if __name__ == '__main__':
        app.main()
    """
)


@pytest.fixture
def app_file(tmp_path):
    folder = tmp_path / "shop"
    (folder / "www").mkdir(parents=True)
    (folder / "www" / "page.html").write_text("<p>static</p>")
    path = folder / "app.py"
    path.write_text(APP)
    return path


@pytest.fixture
def server(spawn, python, app_file):
    return spawn(
        [python, str(app_file), "--host", "127.0.0.1", "--port", "0", "--max-body", "1000"]
    )


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20
    )


def raw_exchange(url: str, data: bytes, read_until_close: bool = True) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while read_until_close:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_seed_readme_hello_world(spawn, python):
    hello = spawn([python, str(ROOT / "examples/hello/app.py"), "--port", "0"], "hello")
    result = curl(hello.url)
    assert result.stdout == "Hello World"


def test_get_post_custom_method_and_about_with_curl(server):
    assert curl(server.url).stdout == "it is a GET request"
    assert curl("-X", "POST", server.url).stdout == "it is a POST request"
    assert json.loads(curl("-X", "MYMETHOD", server.url + "/items/7").stdout) == {
        "id": "7", "method": "MYMETHOD"
    }  # fmt: skip
    about = json.loads(curl("-X", "ABOUT", server.url + "/items/7").stdout)
    assert about["doc"] == "One item."


def test_wrong_method_is_405_with_allow(server):
    result = curl("-i", "-X", "DELETE", server.url + "/items/7")
    assert result.stdout.startswith("HTTP/1.1 405")
    assert "Allow: ABOUT, GET, HEAD, MYMETHOD, OPTIONS" in result.stdout


def test_static_file_next_to_app(server):
    result = curl("-i", server.url + "/page.html")
    assert "Content-Type: text/html; charset=utf-8" in result.stdout
    assert result.stdout.endswith("<p>static</p>")


def test_malformed_json_is_400_and_server_keeps_serving(server):
    result = curl("-i", "-H", "Content-Type: application/json", "-d", "{nope", server.url + "/echo")
    assert result.stdout.startswith("HTTP/1.1 400")
    assert "malformed JSON body" in result.stdout
    assert curl(server.url).stdout == "it is a GET request"


def test_garbage_request_line_is_400(server):
    answer = raw_exchange(server.url, b"\x00\x01garbage\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    bad_header = raw_exchange(server.url, b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
    assert bad_header.startswith(b"HTTP/1.1 400")
    assert curl(server.url).stdout == "it is a GET request"


def test_body_over_the_limit_is_413_without_reading_it(server):
    # Announce far more than the limit and send only the headers: the answer must come
    # back at once, without the server waiting for a body that never arrives.
    request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
    started = time.monotonic()
    answer = raw_exchange(server.url, request)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"over the limit of 1000" in answer
    assert time.monotonic() - started < 5
    assert curl(server.url).stdout == "it is a GET request"


def test_keep_alive_serves_several_requests_on_one_connection(server):
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2
        + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(server.url, request)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.count(b"it is a GET request") == 3


def test_access_log_line_per_request(server):
    curl(server.url + "/items/9")
    deadline = time.monotonic() + 5
    while "GET /items/9 200" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in server.output().splitlines() if "GET /items/9 200" in line)
    assert line.rstrip().endswith("ms")


def test_sigterm_stops_cleanly(server):
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0


def test_sigint_stops_cleanly(server):
    server.signal(signal.SIGINT)
    assert server.wait(10) == 0


def test_https_with_tls_cert_and_key(spawn, python, app_file, tmp_path):
    cert, key = self_signed(tmp_path)
    server = spawn(
        [python, str(app_file), "--host", "127.0.0.1", "--port", "0",
         "--tls-cert", str(cert), "--tls-key", str(key)],
        "tls",
    )  # fmt: skip
    assert server.url.startswith("https://")
    result = curl("--cacert", str(cert), "--resolve", f"localhost:{urlsplit(server.url).port}:127.0.0.1",
                  f"https://localhost:{urlsplit(server.url).port}/")  # fmt: skip
    assert result.stdout == "it is a GET request"


def test_wsgi_callable_runs_under_another_server():
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    app = xio.app("hosted")
    app.bind("www/hi", lambda req: {"hi": req.query.get("who")})
    with make_server("127.0.0.1", 0, app, handler_class=Quiet) as httpd:
        import threading

        thread = threading.Thread(target=httpd.handle_request, daemon=True)
        thread.start()
        result = curl(f"http://127.0.0.1:{httpd.server_port}/hi?who=wsgi")
        thread.join(5)
    assert json.loads(result.stdout) == {"hi": "wsgi"}
