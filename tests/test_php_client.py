"""The PHP client (clients/php) beyond the conformance suite: real PHP against loopback servers.

Each test writes a short PHP script that loads clients/php/autoload.php, makes its calls and
prints what it saw as JSON; the test then judges that JSON, and the servers' own records of
what arrived (tests/test_client.py's echo server, or a raw socket that answers what it is told).
The README's PHP example runs as written against a real ``xio-node --demo``.
Skipped where there is no ``php`` with the curl extension (scripts/check installs both).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from xio.version import __version__

from .certs import self_signed
from .conftest import NODE
from .test_client import BAD_JSON, OK, start_echo_server

ROOT = Path(__file__).resolve().parent.parent
PHP_DIR = ROOT / "clients" / "php"
PHP = shutil.which("php")


def _has_curl() -> bool:
    if PHP is None:
        return False
    done = subprocess.run([PHP, "-m"], capture_output=True, text=True, timeout=30)
    return "curl" in done.stdout.split()


pytestmark = pytest.mark.skipif(not _has_curl(), reason="needs php with the curl extension")

PRELUDE = f"""<?php
declare(strict_types=1);
require {json.dumps(str(PHP_DIR / "autoload.php"))};
use Xio\\Client; use Xio\\Bytes;
function out(mixed $value): void {{
    echo json_encode($value, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\\n";
}}
/** What $call threw: its class, message and, for a ConnectError, whether nothing was sent. */
function thrown(callable $call): ?array {{
    try {{ $call(); }} catch (Throwable $exc) {{
        return ['class' => get_class($exc), 'message' => $exc->getMessage(),
                'nothingSent' => $exc instanceof Xio\\ConnectError ? $exc->nothingSent : null];
    }}
    return null;
}}
"""


@pytest.fixture
def php(tmp_path):
    """Run PHP ``code`` (after PRELUDE) and return each line it printed, decoded as JSON."""

    def run(code: str) -> list:
        script = tmp_path / "case.php"
        script.write_text(PRELUDE + code, encoding="utf-8")
        done = subprocess.run([PHP, "-d", "display_errors=stderr", "-d", "error_reporting=-1",
                               str(script)], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr  # no warning or deprecation either
        return [json.loads(line) for line in done.stdout.splitlines()]

    return run


@pytest.fixture
def echo():
    server, url = start_echo_server()
    yield url, server
    server.shutdown()
    server.server_close()


def listener(answer: bytes | None):
    """A loopback server that reads one request per connection and answers ``answer``.

    None closes without answering. Returns the server socket and the requests it read.
    """
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                seen.append(data)
                if answer is not None:
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server, seen


def unused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


# -- the files ------------------------------------------------------------------------------


def test_every_php_file_parses():
    files = [*sorted(PHP_DIR.rglob("*.php")), ROOT / "tests" / "conformance" / "run.php"]
    assert len(files) >= 10
    for path in files:
        done = subprocess.run([PHP, "-l", str(path)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{path}: {done.stdout}{done.stderr}"


def test_composer_json_maps_the_namespace_to_src():
    composer = json.loads((PHP_DIR / "composer.json").read_text(encoding="utf-8"))
    assert composer["name"] == "xio/client"
    assert composer["autoload"]["psr-4"] == {"Xio\\": "src/"}
    assert {"php", "ext-curl"} <= set(composer["require"])


def test_exceptions_form_one_tree_and_the_version_is_the_package_s(php):
    [tree] = php("""
        out(['version' => Client::VERSION,
             'parents' => array_map(fn ($c) => get_parent_class($c),
                 ['Xio\\TransportError', 'Xio\\ConnectError', 'Xio\\Timeout', 'Xio\\ResponseError'])]);
    """)
    assert tree["version"] == __version__
    assert tree["parents"] == ["RuntimeException", *["Xio\\TransportError"] * 3]


# -- requests -------------------------------------------------------------------------------


def test_verbs_send_their_method_and_only_the_bodies_asked_for(php, echo):
    seen = php(f"""
        $c = new Client('{echo[0]}/app');
        foreach (['get', 'post', 'put', 'patch', 'delete', 'about'] as $verb) {{
            out($c->$verb('things/1')->content);
        }}
        out($c->request('purge', 'x')->content);
        $head = $c->request('HEAD', 'x');
        out([$head->status, $head->content, $head->header('Content-Length')]);
    """)
    methods = [each["method"] for each in seen[:7]]
    assert methods == ["GET", "POST", "PUT", "PATCH", "DELETE", "ABOUT", "PURGE"]
    for each in seen[:7]:
        assert each["body"] == ""
        assert "Content-Type" not in each["headers"]  # curl adds a form type unless told not to
    assert [each["headers"].get("Content-Length") for each in seen[1:4]] == ["0"] * 3
    assert seen[0]["path"] == "/app/things/1"
    assert seen[7][:2] == [200, None] and int(seen[7][2]) > 0


def test_bodies_round_trip_by_their_php_type(php, echo):
    seen = php(f"""
        $c = new Client('{echo[0]}');
        $bodies = [['a' => [1, 2], 'b' => null], [1, 'x', 2.5], 42, true, new stdClass(), [],
                   'héllo wörld', new Bytes("\\x00\\xffbinary")];
        foreach ($bodies as $data) {{
            $back = $c->post('echo-body', $data);
            $sent = $c->post('x', $data)->content;
            $content = $back->content instanceof Bytes ? bin2hex((string) $back->content) : $back->content;
            out([$back->contentType, $content, $sent['headers']['Content-Type'], $sent['body']]);
        }}
    """)
    types = [each[0] for each in seen]
    assert types == ["application/json"] * 6 + [
        "text/plain; charset=utf-8",
        "application/octet-stream",
    ]
    assert types == [each[2] for each in seen]  # the type sent is the type that came back
    sent = [each[3].encode("latin-1") for each in seen]  # the echo server reads bytes as Latin-1
    assert sent[:6] == [b'{"a":[1,2],"b":null}', b'[1,"x",2.5]', b"42", b"true", b"{}", b"[]"]
    assert sent[6:] == ["héllo wörld".encode(), b"\x00\xffbinary"]
    assert seen[0][1] == {"a": [1, 2], "b": None}
    assert (seen[1][1], seen[2][1], seen[3][1]) == ([1, "x", 2.5], 42, True)
    assert seen[4][1] == seen[5][1] == []  # {} and [] both come back as PHP's [] (documented)
    assert seen[6][1] == "héllo wörld"
    assert bytes.fromhex(seen[7][1]) == b"\x00\xffbinary"


def test_headers_default_merge_and_an_explicit_content_type_wins(php, echo):
    [sent, typed, big] = php(f"""
        $c = new Client('{echo[0]}', ['headers' => ['X-Team' => 'a', 'X-Keep' => 1]]);
        out($c->get('x', [], ['headers' => ['x-team' => 'b', 'X-Empty' => '']])->content['headers']);
        out($c->post('x', ['a' => 1], ['headers' => ['Content-Type' => 'application/vnd.x+json']])->content);
        out($c->post('x', str_repeat('y', 2000000))->content['headers']);
    """)
    assert sent["User-Agent"] == f"xio-client-php/{__version__}"
    assert sent["Accept"] == "application/json, */*;q=0.5"
    assert (sent["x-team"], sent["X-Keep"], sent["X-Empty"]) == ("b", "1", "")
    assert "X-Team" not in sent
    assert typed["headers"]["Content-Type"] == "application/vnd.x+json"
    assert typed["body"] == '{"a":1}'
    assert "Expect" not in big  # no 100-continue round trip for a large body


def test_queries_and_paths_are_encoded(php, echo):
    seen = php(f"""
        $c = new Client('{echo[0]}/inventory/');
        out($c->get('q', ['tag' => ['a', 'b'], 'n' => 1, 's' => 'x y', 'ok' => true])->content);
        out($c->get('q', '?a=1&a=2')->content);
        out($c->post('q', null, ['query' => ['k' => 'ü&=']])->content);
        foreach (['items/42', '/items/42', '', 'a b/é/日本'] as $path) {{ out($c->get($path)->content['path']); }}
    """)
    assert seen[0]["query"] == {"tag": ["a", "b"], "n": ["1"], "s": ["x y"], "ok": ["true"]}
    assert seen[1]["query"] == {"a": ["1", "2"]}
    assert (seen[2]["method"], seen[2]["query"]) == ("POST", {"k": ["ü&="]})
    paths = [each for each in seen[3:]]
    assert paths == ["/inventory/items/42", "/inventory/items/42", "/inventory",
                     "/inventory/a%20b/%C3%A9/%E6%97%A5%E6%9C%AC"]  # fmt: skip


def test_answers_decode_by_type_and_status(php, echo):
    [answers] = php(f"""
        $c = new Client('{echo[0]}');
        $seen = [];
        foreach (['text/plain', 'application/octet-stream', 'application/json', 'application/problem+json'] as $t) {{
            $content = $c->get('empty', ['type' => $t])->content;
            $seen[] = $content instanceof Bytes ? ['bytes' => (string) $content] : $content;
        }}
        $r = $c->get('status/404');
        $seen[] = [$r->status, $r->content, $r->header('CONTENT-TYPE'), $r->headers['content-type']];
        $seen[] = $c->get('status/204')->content;
        out($seen);
    """)
    assert answers[:4] == ["", {"bytes": ""}, None, None]
    assert answers[4] == [404, {"status": 404}, "application/json", ["application/json"]]
    assert answers[5] is None


def test_keep_alive_reuses_one_connection_until_close(php, echo):
    [ports] = php(f"""
        $c = new Client('{echo[0]}');
        $first = $c->get('a')->content['port'];
        $second = $c->get('b')->content['port'];
        $c->close();
        out([$first, $second, $c->get('c')->content['port']]);
    """)
    assert ports[0] == ports[1] != ports[2]


# -- failures -------------------------------------------------------------------------------


def test_malformed_answers_are_response_errors(php):
    answers = [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",  # the connection ends in the head
        BAD_JSON,
    ]
    servers = [listener(answer) for answer in answers]
    try:
        urls = [f"http://127.0.0.1:{server.getsockname()[1]}" for server, _ in servers]
        seen = php(
            f"foreach ({json.dumps(urls)} as $url) {{ out(thrown(fn () => (new Client($url))->get('x'))); }}"
        )
    finally:
        for server, _ in servers:
            server.close()
    assert [each["class"] for each in seen] == ["Xio\\ResponseError"] * 5
    assert "in its headers" in seen[3]["message"]
    assert "malformed JSON" in seen[4]["message"]


def test_an_interim_answer_is_skipped_and_repeated_headers_are_kept(php):
    server, _ = listener(
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
        b'Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n{"n":1}'
    )
    try:
        [seen] = php(f"""
            $r = (new Client('http://127.0.0.1:{server.getsockname()[1]}'))->post('x', ['n' => 1]);
            out([$r->status, $r->content, $r->headers, $r->header('Set-Cookie'), $r->header('X-None')]);
        """)
    finally:
        server.close()
    assert seen[:2] == [201, {"n": 1}]
    assert seen[2]["set-cookie"] == ["a=1", "b=2"] and "x-interim" not in seen[2]
    assert seen[3:] == ["a=1", None]


def test_a_slow_answer_is_a_timeout_and_the_client_recovers(php, echo):
    url, server = echo
    [error, after] = php(f"""
        $c = new Client('{url}');
        out(thrown(fn () => $c->request('GET', 'slow', ['timeout' => 0.3])));
        out($c->get('after')->content['path']);
    """)
    assert error["class"] == "Xio\\Timeout" and "/slow" in error["message"]
    assert server.slow_answers == 0  # the client gave up before the 1 s answer was ready
    assert after == "/after"


def test_refused_and_lost_connections_are_connect_errors(php):
    lost, lost_seen = listener(None)
    down = unused_url()
    try:
        url = f"http://127.0.0.1:{lost.getsockname()[1]}"
        [refused, dropped] = php(f"""
            out(thrown(fn () => (new Client('{down}/app'))->get('x')));
            out(thrown(fn () => (new Client('{url}'))->post('orders', ['n' => 1])));
        """)
    finally:
        lost.close()
    assert refused["class"] == "Xio\\ConnectError" and refused["nothingSent"] is True
    assert f"{down}/app/x" in refused["message"]
    assert dropped["class"] == "Xio\\ConnectError" and dropped["nothingSent"] is False
    assert "before any response" in dropped["message"]
    assert len(lost_seen) == 1


def test_a_url_list_fails_over_only_when_nothing_was_sent(php):
    good, good_seen = listener(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    lost, lost_seen = listener(None)
    down, other_down = unused_url(), unused_url()
    try:
        good_url = f"http://127.0.0.1:{good.getsockname()[1]}/app"
        lost_url = f"http://127.0.0.1:{lost.getsockname()[1]}/app"
        [first, second, woken_called, all_down, never_twice] = php(f"""
            $c = new Client(['{down}/app', '{good_url}'], ['timeout' => 5]);
            out((string) $c->get('x')->content);
            // The first entry comes up, but the one that worked last is tried first.
            $woken = stream_socket_server('tcp://' . parse_url('{down}', PHP_URL_HOST) . ':'
                                          . parse_url('{down}', PHP_URL_PORT));
            out((string) $c->get('y')->content);
            stream_set_blocking($woken, false);
            out(@stream_socket_accept($woken, 0) !== false);
            out(thrown(fn () => (new Client(['{other_down}/app', 'http://no-such-host.invalid/app']))->get('x')));
            out(thrown(fn () => (new Client(['{lost_url}', '{good_url}']))->post('orders', ['n' => 1])));
        """)
    finally:
        good.close()
        lost.close()
    assert first == second == "ok"
    assert woken_called is False
    # x and y; the request the lost entry read was never sent again to the good one.
    assert [r.split(b" ")[1] for r in good_seen] == [b"/app/x", b"/app/y"]
    assert all_down["class"] == "Xio\\ConnectError"
    assert "no entry took a connection" in all_down["message"]
    assert (
        f"{other_down}/app" in all_down["message"] and "no-such-host.invalid" in all_down["message"]
    )
    assert never_twice["class"] == "Xio\\ConnectError" and len(lost_seen) == 1


def test_misuse_is_an_invalid_argument_and_sends_nothing(php):
    server, seen = listener(OK)
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        errors = php(f"""
            $c = new Client('{url}');
            $calls = [
                fn () => new Client('ws://127.0.0.1:1/app'),
                fn () => new Client('ftp://x/app'),
                fn () => new Client([]),
                fn () => new Client('{url}', ['timeot' => 1]),
                fn () => new Client('{url}', ['timeout' => -1]),
                fn () => $c->request('BAD METHOD', 'x'),
                fn () => $c->get('x', [], ['headers' => ['X-Evil' => "a\\r\\nX-Injected: 1"]]),
                fn () => $c->get('x', [], ['headers' => ['Bad Name' => 'v']]),
                fn () => $c->post('x', "\\xff\\xfe not text"),
                fn () => $c->post('x', [new Bytes('b')]),
                fn () => $c->post('x', fopen('php://memory', 'r')),
                fn () => $c->get('x', ['k' => ['nested' => 1]]),
                fn () => $c->request('HEAD', 'x', ['data' => 'a body']),
            ];
            foreach ($calls as $call) {{ out(thrown($call)); }}
        """)
    finally:
        server.close()
    assert [each["class"] for each in errors] == ["InvalidArgumentException"] * 13
    assert "HTTP only" in errors[0]["message"]
    assert "Xio\\Bytes" in errors[8]["message"]
    assert seen == []


@pytest.fixture
def tls_echo(tmp_path):
    cert_path, key_path = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server, url = start_echo_server(context)
    yield url, str(cert_path)
    server.shutdown()
    server.server_close()


def test_https_verifies_certificates_unless_told_not_to(php, tls_echo):
    url, ca_path = tls_echo
    [refused, with_ca, unverified] = php(f"""
        out(thrown(fn () => (new Client('{url}'))->get('x')));
        out((new Client('{url}', ['verify' => {json.dumps(ca_path)}]))->get('x')->status);
        out((new Client('{url}', ['verify' => false]))->get('x')->status);
    """)
    assert refused["class"] == "Xio\\ConnectError" and refused["nothingSent"] is True
    assert (with_ca, unverified) == (200, 200)


def test_a_connect_timeout_sent_nothing_so_the_next_entry_takes_the_request(php):
    # A listener whose accept queue is full: the kernel drops further SYNs, so connecting
    # hangs until the client's timeout (Linux; each loop here is three sockets).
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    queued = []
    for _ in range(3):
        one = socket.socket()
        one.setblocking(False)
        one.connect_ex(full.getsockname())
        queued.append(one)
    good, good_seen = listener(OK)
    try:
        full_url = f"http://127.0.0.1:{full.getsockname()[1]}/app"
        good_url = f"http://127.0.0.1:{good.getsockname()[1]}/app"
        [alone, listed] = php(f"""
            out(thrown(fn () => (new Client('{full_url}', ['timeout' => 0.5]))->get('x')));
            out((string) (new Client(['{full_url}', '{good_url}'], ['timeout' => 0.5]))->get('x')->content);
        """)
    finally:
        for one in [full, good, *queued]:
            one.close()
    assert alone["class"] == "Xio\\ConnectError" and alone["nothingSent"] is True
    assert listed == "ok" and len(good_seen) == 1


def test_the_readme_example_runs_as_written_against_a_demo_node(spawn, tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### PHP\n") :]
    example = re.search(r"```php\n(.*?)```", section, re.S)[1]
    node = spawn([*NODE, "--demo", "--host", "127.0.0.1", "--port", "0", "--no-mdns",
                  "--state-dir", str(tmp_path / "node")], "demo")  # fmt: skip
    # The example names the README's port; this node has a free one. It sits in the clone.
    example = example.replace("http://127.0.0.1:7700", node.url)
    example = example.replace(
        "__DIR__ . '/clients/php/autoload.php'", repr(str(PHP_DIR / "autoload.php"))
    )
    script = tmp_path / "demo.php"
    script.write_text(example, encoding="utf-8")
    done = subprocess.run([PHP, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert lines[:5] == ["200 application/json kettle", "201 3", "x y", "404", "items"]
    assert lines[5].startswith("Xio\\ConnectError: cannot connect to http://127.0.0.1:1/demo")


def test_a_reused_connection_closed_unanswered_is_retried_once_on_a_new_one(php):
    # As in the Python client and browsers (libcurl does it): the server answered /a on a
    # kept-alive connection, then read /b and closed without answering.
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve():
        for index in (1, 2):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                for _ in range(2 if index == 1 else 1):
                    data = b""
                    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                        data += chunk
                    received.append(data)
                    if index == 2 or len(received) == 1:
                        conn.sendall(OK)

    threading.Thread(target=serve, daemon=True).start()
    try:
        [answers] = php(f"""
            $c = new Client('http://127.0.0.1:{server.getsockname()[1]}');
            out([$c->get('a')->content, $c->get('b')->content]);
        """)
    finally:
        server.close()
    assert answers == ["ok", "ok"]
    assert [r.split(b" ")[1] for r in received] == [b"/a", b"/b", b"/b"]
