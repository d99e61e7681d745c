"""The ``xio`` command line: its rules as pure functions, then the command against a real node.

The node is one ``xio-node`` process hosting the conformance app (tests/conformance/app.py),
whose ``echo`` resource says what arrived; the command runs as ``python -m xio.clientmain``
in a subprocess, piped (as a script would run it) or on a pseudo-terminal for the pretty
output, and each test looks at its stdout, stderr and exit status.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

import xio
from xio import clientmain
from xio.clientmain import UsageError, body_of, exit_code, query_of, render, resolve_url

from .conftest import NODE, ROOT, Process, wait_until
from .mesh import unused_port

XIO = [sys.executable, "-m", "xio.clientmain"]
JSON_VALUE = {"name": "café ☕", "emoji": "🎉", "list": [1, 2.5, True, None], "nested": {"k": "v"}}
OCTETS = bytes(range(256))


def no_stdin():
    raise AssertionError("stdin read")


def no_file(name):
    raise AssertionError(f"file {name} read")


# -- pure: reading the command line -----------------------------------------------------------


def test_an_xio_url_is_resolved_against_the_node_given():
    assert resolve_url("xio://conf/echo/x", "127.0.0.1:7700") == "127.0.0.1:7700/conf/echo/x"
    assert resolve_url("xio://conf", "http://h:1/") == "http://h:1/conf"
    assert resolve_url("http://h:1/conf", None) == "http://h:1/conf"  # not xio://: as it is


@pytest.mark.parametrize("via", [None, ""])
def test_an_xio_url_without_a_node_is_a_usage_error_naming_both_ways(via):
    with pytest.raises(UsageError, match="--via.*XIO_NODE"):
        resolve_url("xio://conf/json", via)


@pytest.mark.parametrize("url", ["xio://", "xio:///json"])
def test_an_xio_url_without_an_app_is_a_usage_error(url):
    with pytest.raises(UsageError, match="names no app"):
        resolve_url(url, "h:1")


def test_query_pairs_follow_the_urls_own_query_and_keep_repeats():
    assert query_of("a=0", ["k=1", "k=2", "z=ü é&="]) == "a=0&k=1&k=2&z=%C3%BC+%C3%A9%26%3D"
    assert query_of("", ["empty="]) == "empty="
    assert query_of("", []) == ""


@pytest.mark.parametrize("pair", ["novalue", "=value"])
def test_a_query_pair_needs_a_name_and_an_equals_sign(pair):
    with pytest.raises(UsageError, match="name=value"):
        query_of("", [pair])


def test_header_lines_are_read_into_pairs_and_bad_ones_refused():
    assert clientmain.headers_of(["X-A: 1", "X-B:two: words "]) == (
        ("X-A", "1"),
        ("X-B", "two: words"),
    )
    for bad in ["no colon", ": no name", "X-A : space before the colon"]:
        with pytest.raises(UsageError, match="Name: value"):
            clientmain.headers_of([bad])


@pytest.mark.parametrize(
    "data, body, kind",
    [
        ('{"a": 1}', b'{"a": 1}', "application/json"),  # sent as typed, not re-encoded
        ("42", b"42", "application/json"),
        ('"@home"', b'"@home"', "application/json"),
        ("hello", b"hello", "text/plain; charset=utf-8"),
        ("NaN", b"NaN", "text/plain; charset=utf-8"),  # json.loads takes it; JSON does not
        ("", b"", "text/plain; charset=utf-8"),
        ("日本", "日本".encode(), "text/plain; charset=utf-8"),
    ],
)
def test_inline_data_is_json_when_it_parses_else_text(data, body, kind):
    assert body_of(data, no_stdin, no_file) == (body, kind)


def test_no_data_is_no_body():
    assert body_of(None, no_stdin, no_file) == (None, None)


@pytest.mark.parametrize(
    "name, kind",
    [("item.json", "application/json"), ("notes.txt", "text/plain"),
     ("blob", "application/octet-stream"), ("x.unknown-ext", "application/octet-stream"),
     ("logs.tar.gz", "application/octet-stream")],
)  # fmt: skip
def test_a_file_is_sent_as_its_bytes_typed_by_its_name(name, kind):
    assert body_of(f"@{name}", no_stdin, lambda path: b"\x00raw" + path.encode()) == (
        b"\x00raw" + name.encode(),
        kind,
    )


def test_a_file_that_cannot_be_read_is_a_usage_error_naming_it(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(UsageError, match="missing.json"):
        body_of(f"@{missing}", no_stdin, clientmain._read_file)
    with pytest.raises(UsageError, match="file name"):
        body_of("@", no_stdin, no_file)


@pytest.mark.parametrize(
    "raw, kind",
    [(b'{"a": [1]}\n', "application/json"), (b"plain words", "application/octet-stream"),
     (OCTETS, "application/octet-stream"), (b"", "application/octet-stream")],
)  # fmt: skip
def test_stdin_is_sent_as_its_bytes_json_when_it_parses(raw, kind):
    assert body_of("-", lambda: raw, no_file) == (raw, kind)


@pytest.mark.parametrize(
    "status, code", [(100, 0), (200, 0), (204, 0), (302, 0), (399, 0), (400, 4), (404, 4),
                     (499, 4), (500, 5), (504, 5), (599, 5)],
)  # fmt: skip
def test_the_exit_status_says_the_class_of_the_http_status(status, code):
    assert exit_code(status) == code


# -- pure: writing the answer -----------------------------------------------------------------


def answer(content, status=200, content_type="application/json", headers=()):
    return xio.Response(content, status, content_type, [("Content-Type", content_type), *headers])


def test_json_is_compact_on_one_line_when_piped_and_indented_on_a_terminal():
    response = answer({"a": [1, "é"]})
    assert render(response, "GET", pretty=False, include_head=False) == '{"a":[1,"é"]}\n'.encode()
    pretty = '{\n  "a": [\n    1,\n    "é"\n  ]\n}\n'.encode()
    assert render(response, "GET", pretty=True, include_head=False) == pretty


def test_text_and_octets_are_written_as_they_are():
    assert render(answer("héllo", content_type="text/plain"), "GET", pretty=True,
                  include_head=False) == "héllo".encode()  # fmt: skip
    assert render(answer(OCTETS, content_type="application/octet-stream"), "GET", pretty=True,
                  include_head=False) == OCTETS  # fmt: skip


def test_no_body_prints_nothing_but_json_null_prints_null():
    assert render(answer(None, 204, None), "GET", pretty=False, include_head=False) == b""
    assert render(answer(None), "HEAD", pretty=False, include_head=False) == b""
    assert render(answer(None), "GET", pretty=False, include_head=False) == b"null\n"


def test_include_prints_the_status_line_each_header_line_and_a_blank_line():
    response = answer({"x": 1}, 404, headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    out = render(response, "GET", pretty=False, include_head=True).decode()
    assert out == (
        "HTTP 404 Not Found\nContent-Type: application/json\nSet-Cookie: a=1\nSet-Cookie: b=2\n"
        '\n{"x":1}\n'
    )
    assert render(answer("", 799, "text/plain"), "GET", pretty=False, include_head=True) == (
        b"HTTP 799\nContent-Type: text/plain\n\n"  # no reason phrase for an unknown status
    )


def test_the_console_script_is_declared():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = config["options.entry_points"]["console_scripts"].split("\n")
    assert "xio = xio.clientmain:main" in [line.strip() for line in scripts]


def test_the_installed_console_script_runs():
    # scripts/check pip-installs the project; a venv installed before `xio` existed has none.
    script = os.path.join(os.path.dirname(sys.executable), "xio")
    if not os.path.exists(script):
        pytest.skip("no installed `xio` script: pip install -e . (scripts/check does)")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "call" in done.stdout


# -- the command against a real node ----------------------------------------------------------


#: A second app for what the conformance app has no resource for: a stream held open
#: until the test lets it end, and bodies whose type the command must decode or refuse.
CLI_APP = """
import time
from pathlib import Path

import msgpack
import xio

app = xio.app("cli")


@app.bind("www/feed")
def feed(req):
    gate = Path(req.query["gate"])

    def pieces():
        yield "first\\n"
        for _ in range(400):  # 20 s at most: the test opens the gate long before
            if gate.exists():
                yield "second\\n"
                return
            time.sleep(0.05)
        yield "the gate never opened\\n"

    req.response.content_type = "text/plain; charset=utf-8"
    return pieces()


@app.bind("www/not-json")
def not_json(req):
    return xio.Response(b"{this is not JSON", content_type="application/json")


@app.bind("www/msgpack")
def packed(req):
    return xio.Response(msgpack.packb({"n": [1, 2]}), content_type="application/msgpack")
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xio-cli")
    (tmp / "cli_app.py").write_text(CLI_APP, encoding="utf-8")
    args = [*NODE, "--name", "c", "--host", "127.0.0.1", "--port", "0", "--no-mdns",
            "--state-dir", str(tmp / "state"), "--max-body", "65536",
            "--app", str(ROOT / "tests/conformance/app.py"),
            "--app", str(tmp / "cli_app.py")]  # fmt: skip
    process = Process(args, tmp / "node.log").start()

    def routes_apps():
        try:
            apps = xio.client(process.url, timeout=2).get("/").content["apps"]
        except xio.TransportError:
            return False
        return "conf" in apps and "cli" in apps

    wait_until(routes_apps, timeout=20, what="the node to host conf and cli")
    yield process
    process.stop()


@pytest.fixture
def conf(node):
    return f"{node.url}/conf"


def env(**extra) -> dict:
    base = {key: value for key, value in os.environ.items() if key != "XIO_NODE"}
    return {**base, "PYTHONPATH": str(ROOT), **extra}


def xio_cli(*args, stdin: bytes = b"", environ: dict | None = None):
    """Run the command piped; return the finished process (stdout bytes, stderr text)."""
    done = subprocess.run([*XIO, *args], input=stdin, capture_output=True, timeout=60,
                          env=environ or env(), cwd=ROOT)  # fmt: skip
    done.stderr = done.stderr.decode(errors="replace")
    return done


def echoed(done) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_get_prints_compact_json_when_piped_and_exits_0(conf):
    done = xio_cli("get", f"{conf}/json")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.decode() == json.dumps(JSON_VALUE, separators=(",", ":"),
                                              ensure_ascii=False) + "\n"  # fmt: skip


def test_text_and_octets_come_out_as_they_are(conf):
    assert xio_cli("get", f"{conf}/text").stdout == "héllo wörld ✓ 日本".encode()
    assert xio_cli("get", f"{conf}/bytes").stdout == OCTETS
    assert xio_cli("get", f"{conf}/empty").stdout == b""


def test_on_a_terminal_json_is_pretty_printed(conf):
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([*XIO, "get", f"{conf}/json"], stdin=subprocess.DEVNULL,
                                   stdout=follower, stderr=subprocess.PIPE, env=env())  # fmt: skip
        os.close(follower)
        output, deadline = b"", time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(30) == 0, process.stderr.read()
        process.stderr.close()
    finally:
        os.close(leader)
    text = output.decode().replace("\r\n", "\n")  # the terminal turns \n into \r\n
    assert text == json.dumps(JSON_VALUE, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(
    "path, code, status",
    [("bad", 4, 400), ("no/such/thing", 4, 404), ("fail", 5, 500), ("gateway", 5, 502)],
)
def test_an_error_status_still_prints_the_body_and_sets_the_exit_status(conf, path, code, status):
    done = xio_cli("get", f"{conf}/{path}")
    assert done.returncode == code
    assert json.loads(done.stdout)["status"] == status
    assert done.stderr == ""


def test_over_the_body_limit_is_a_413_and_exit_4(conf, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100_000)
    done = xio_cli("post", f"{conf}/echo", f"@{big}")
    assert done.returncode == 4 and json.loads(done.stdout)["status"] == 413


def test_include_shows_the_status_line_and_repeated_headers_then_the_body(conf):
    done = xio_cli("get", "-i", f"{conf}/cookies")
    head, blank, body = done.stdout.decode().partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "HTTP 200 OK" and blank
    assert [line for line in lines if line.startswith("Set-Cookie")] == [
        "Set-Cookie: a=1; Path=/",
        "Set-Cookie: b=2; Path=/",
    ]
    assert "X-Conf: yes" in lines
    assert json.loads(body) == {"cookies": 2}


def test_include_on_a_405_shows_allow_and_exits_4(conf):
    done = xio_cli("delete", f"{conf}/only-get", "-i")
    assert done.returncode == 4
    head = done.stdout.decode().split("\n\n")[0].split("\n")
    assert head[0] == "HTTP 405 Method Not Allowed"
    assert any(line.lower().startswith("allow:") and "GET" in line for line in head)


def test_no_connection_exits_1_naming_the_error_on_stderr(tmp_path):
    done = xio_cli("get", f"http://127.0.0.1:{unused_port()}/conf/json")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.startswith("xio: ConnectError: ") and "127.0.0.1" in done.stderr


def test_an_answer_that_is_not_http_exits_1_with_response_error():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def answer_garbage():
        try:
            peer, _ = listener.accept()
        except OSError:  # the test ended without connecting
            return
        with peer:
            peer.settimeout(5)
            try:
                peer.recv(65536)
                peer.sendall(b"this is not HTTP at all\r\n\r\n")
            except OSError:
                pass

    server = threading.Thread(target=answer_garbage, daemon=True)
    server.start()
    try:
        done = xio_cli("get", f"http://127.0.0.1:{listener.getsockname()[1]}/conf/json")
    finally:
        listener.close()
        server.join(10)
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.startswith("xio: ResponseError: ")


def test_no_answer_in_time_exits_1_with_timeout(conf):
    done = xio_cli("get", f"{conf}/slow", "-q", "s=3", "--timeout", "0.3")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.startswith("xio: Timeout: ")


@pytest.mark.parametrize(
    "args, says",
    [
        ([], "COMMAND"),
        (["frob", "http://h/x"], "invalid choice"),
        (["get"], "URL"),
        (["get", "xio://conf/json"], "XIO_NODE"),
        (["get", "http://h:1/x", "-q", "novalue"], "name=value"),
        (["get", "http://h:1/x", "-H", "no colon"], "Name: value"),
        (["post", "http://h:1/x", "@/no/such/file.json"], "file.json"),
        (["get", "ftp://h/x"], "not an http"),
        (["call", "BAD METHOD", "http://h:1/x"], "method"),
        (["get", "http://h:1/x", "--timeout", "0"], "positive"),
        (["get", "http://h:1/x", "-H", "X-A: ☕"], "Latin-1"),
    ],
)
def test_a_usage_error_exits_2_and_says_what_is_wrong(args, says):
    done = xio_cli(*args)
    assert done.returncode == 2 and done.stdout == b""
    assert says in done.stderr and "usage: xio" in done.stderr


def test_help_lists_the_commands_and_the_exit_statuses():
    done = xio_cli("--help")
    text = done.stdout.decode()
    assert done.returncode == 0
    for command in ["get", "post", "put", "patch", "delete", "about", "call"]:
        assert f"\n  {command} " in text
    assert "text/plain" in text and "Exit status" in text


def test_xio_urls_resolve_through_via_or_xio_node(conf, node):
    address = node.url[len("http://") :]
    by_flag = xio_cli("get", "xio://conf/json", "--via", node.url)
    by_env = xio_cli("get", "xio://conf/json", environ=env(XIO_NODE=address))
    assert json.loads(by_flag.stdout) == json.loads(by_env.stdout) == JSON_VALUE
    flag_wins = xio_cli("get", "xio://conf/json", "--via", node.url,
                        environ=env(XIO_NODE=f"127.0.0.1:{unused_port()}"))  # fmt: skip
    assert flag_wins.returncode == 0


def test_a_url_without_a_scheme_is_plain_http(node):
    address = node.url[len("http://") :]
    assert json.loads(xio_cli("get", f"{address}/conf/json").stdout) == JSON_VALUE


def test_inline_json_and_text_arrive_typed(conf):
    sent = echoed(xio_cli("post", f"{conf}/echo", '{"a": 1, "s": "日本"}'))
    assert sent["method"] == "POST" and sent["type"] == "application/json"
    assert sent["data"] == {"a": 1, "s": "日本"}
    sent = echoed(xio_cli("put", f"{conf}/echo/7", "plain words"))
    assert (sent["method"], sent["path"]) == ("PUT", "7")
    assert (sent["type"], sent["data"]) == ("text/plain; charset=utf-8", "plain words")


def test_a_file_arrives_as_its_bytes_typed_by_its_name(conf, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(OCTETS)
    sent = echoed(xio_cli("patch", f"{conf}/echo", f"@{blob}"))
    assert sent["type"] == "application/octet-stream" and sent["size"] == 256
    assert sent["sha256"] == hashlib.sha256(OCTETS).hexdigest()
    item = tmp_path / "item.json"
    item.write_text('{"n": 7}\n')
    sent = echoed(xio_cli("post", f"{conf}/echo", f"@{item}"))
    assert (sent["type"], sent["data"]) == ("application/json", {"n": 7})


def test_stdin_arrives_as_json_when_it_parses_else_as_octets(conf):
    sent = echoed(xio_cli("post", f"{conf}/echo", "-", stdin=b'{"z": [1]}\n'))
    assert (sent["type"], sent["data"]) == ("application/json", {"z": [1]})
    sent = echoed(xio_cli("post", f"{conf}/echo", "-", stdin=OCTETS))
    assert sent["type"] == "application/octet-stream"
    assert sent["sha256"] == hashlib.sha256(OCTETS).hexdigest()


def test_a_content_type_header_overrides_the_guess(conf):
    sent = echoed(xio_cli("post", f"{conf}/echo", "hello", "-H", "Content-Type: text/x-mine"))
    assert (sent["type"], sent["data"]) == ("text/x-mine", "hello")


def test_query_pairs_repeat_and_join_the_urls_own_query(conf):
    sent = echoed(xio_cli("get", f"{conf}/echo?a=0", "-q", "k=1", "-q", "k=2",
                          "-q", "z=ü é&=?"))  # fmt: skip
    assert sent["query"] == {"a": ["0"], "k": ["1", "2"], "z": ["ü é&=?"]}


def test_headers_are_sent_and_data_may_follow_options(conf):
    sent = echoed(xio_cli("post", f"{conf}/echo", "-H", "X-Conf-One: 1",
                          "-H", "X-Conf-Two: two words, with a comma", "-q", "a=1", "42"))  # fmt: skip
    assert sent["headers"] == {"x-conf-one": "1", "x-conf-two": "two words, with a comma"}
    assert sent["data"] == 42 and sent["query"] == {"a": ["1"]}


def test_call_sends_any_method_and_unicode_paths_are_encoded(conf):
    sent = echoed(xio_cli("call", "purge", f"{conf}/echo/café/日本"))
    assert (sent["method"], sent["path"]) == ("PURGE", "café/日本")
    head = xio_cli("call", "HEAD", f"{conf}/json", "-i")
    assert head.returncode == 0 and head.stdout.decode().endswith("\n\n")  # no body after it


def test_about_prints_the_description(conf):
    about = echoed(xio_cli("about", f"{conf}/echo"))
    assert about["name"] == "echo" and "PURGE" in about["methods"]


# -- over the WebSocket channel, and bodies the command passes through or must decode --------


def test_a_ws_url_sends_the_call_on_the_client_channel(node):
    conf_ws = "ws" + node.url[len("http") :] + "/conf"
    assert json.loads(xio_cli("get", f"{conf_ws}/json").stdout) == JSON_VALUE
    sent = echoed(xio_cli("post", f"{conf_ws}/echo/café", "-", "-q", "k=1", "-q", "k=2",
                          "-H", "X-Conf-One: 1", stdin=OCTETS))  # fmt: skip
    assert (sent["method"], sent["path"], sent["query"]) == ("POST", "café", {"k": ["1", "2"]})
    assert sent["headers"] == {"x-conf-one": "1"}
    assert sent["sha256"] == hashlib.sha256(OCTETS).hexdigest()
    assert xio_cli("get", f"{conf_ws}/bytes").stdout == OCTETS
    failed = xio_cli("get", f"{conf_ws}/fail")
    assert failed.returncode == 5 and json.loads(failed.stdout)["status"] == 500


def test_a_ws_url_where_nothing_listens_exits_1_with_connect_error():
    done = xio_cli("get", f"ws://127.0.0.1:{unused_port()}/conf/json")
    assert done.returncode == 1 and done.stderr.startswith("xio: ConnectError: ")


def read_until(stream, wanted: bytes, seconds: float = 30) -> bytes:
    """Read a pipe until ``wanted`` has come (or it ends, or ``seconds`` pass)."""
    seen, deadline = b"", time.monotonic() + seconds
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            piece = os.read(stream.fileno(), 65536)
            if not piece:
                break
            seen += piece
    return seen


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_a_text_stream_is_printed_as_it_arrives(node, tmp_path, scheme):
    gate = tmp_path / "gate"
    url = scheme + node.url[len("http") :] + "/cli/feed"
    process = subprocess.Popen([*XIO, "get", "-i", url, "-q", f"gate={gate}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env=env())  # fmt: skip
    try:
        early = read_until(process.stdout, b"first\n")
        assert early.startswith(b"HTTP 200 OK\n") and early.endswith(b"\n\nfirst\n")
        gate.touch()  # only now may the app end its answer
        rest = process.stdout.read()
        assert process.wait(30) == 0, process.stderr.read()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert rest == b"second\n"


def test_a_json_body_that_does_not_parse_exits_1_with_response_error(node):
    done = xio_cli("get", f"{node.url}/cli/not-json")
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.startswith("xio: ResponseError: ") and "JSON" in done.stderr


def test_a_msgpack_body_is_printed_as_json(node):
    assert xio_cli("get", f"{node.url}/cli/msgpack").stdout == b'{"n":[1,2]}\n'
