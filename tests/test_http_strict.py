"""The HTTP front over real sockets: strict request framing, streamed responses, the
response headers the server writes, and canaries on the gevent internals it relies on."""

from __future__ import annotations

import inspect
import io
import json
import logging
import shutil
import subprocess

import gevent.pywsgi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xio
from xio import http11
from xio.errors import HTTPError
from xio.request import Headers, Response
from xio.server import PYWSGI_CONTRACT

from .http_wire import exchange, header_values, in_thread, parse_responses, start_server

HIDDEN = b"GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def served():
    """A server whose handler records every path it is asked for."""
    paths: list[str] = []
    files: list = []
    app = xio.App("web")

    @app.bind("www")
    def root(req):
        paths.append(req.path)
        return {"path": req.path, "body": req.body.decode("latin-1")}

    @app.bind("www/stream")
    def stream(req):
        return (f"part {i};" for i in range(1000))

    @app.bind("www/file")
    def file(req):
        handle = open(req.query["name"], "rb")  # noqa: SIM115 - the server closes it
        files.append(handle)
        return handle

    @app.bind("www/headers")
    def headers(req):
        name, value = req.query.get("name"), req.query.get("value")
        fields = Headers()
        fields.add("Set-Cookie", "a=1")
        fields.add("Set-Cookie", "b=2")
        for hop in ("Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade"):
            fields[hop] = {"Content-Length": "0", "Transfer-Encoding": "chunked"}.get(hop, "x")
        if name:
            fields[name] = value
        injected = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"
        return Response(injected, headers=fields)

    server = start_server(app.handle_public)
    server.paths = paths
    server.files = files
    yield server
    server.stop(timeout=0)


# -- point 6: framing (RFC 9112, section 6) ----------------------------------------------------

SMUGGLING = {
    "content-length and chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + HIDDEN,
        400,
    ),
    "two content-lengths, 0 then N": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n"
        % len(HIDDEN)
        + HIDDEN,
        400,
    ),
    "chunked with a trailing space, and content-length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked \r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n" + HIDDEN,
        400,
    ),
    "obs-folded transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n"
        b"\r\n0\r\n\r\n" + HIDDEN,
        400,
    ),
    "content-length 1_0": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n" + HIDDEN,
        400,
    ),
    "content-length +3": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n" + HIDDEN,
        400,
    ),
    "content-length 1 0": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n" + HIDDEN,
        400,
    ),
    "content-length -1": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + HIDDEN,
        400,
    ),
    "content-length 1,1": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\nx" + HIDDEN,
        400,
    ),
    "transfer-encoding gzip": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + HIDDEN,
        501,
    ),
    "transfer-encoding chunked, gzip": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + HIDDEN,
        501,
    ),
    "two transfer-encodings": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\n" + HIDDEN,
        501,
    ),
    "a header line starting with a tab": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tX-B: 2\r\n\r\n" + HIDDEN,
        400,
    ),
    "a space before the colon": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n" + HIDDEN,
        400,
    ),
    "a NUL in a value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + HIDDEN, 400),
    "a CR inside a value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n" + HIDDEN, 400),
    "a line with no colon": (b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n" + HIDDEN, 400),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" + HIDDEN, 400),
}


@pytest.mark.parametrize("case", SMUGGLING)
def test_ambiguous_framing_is_refused_and_closes_with_no_hidden_request(served, case):
    data, status = SMUGGLING[case]
    answers = parse_responses(exchange(served, data))  # also: the server closed the connection
    assert [answer[0] for answer in answers] == [status]
    assert header_values(answers[0][1], "Connection") == ["close"]
    assert json.loads(answers[0][2])["status"] == status  # xio's JSON error body
    assert served.paths == []  # neither the request nor the one hidden in its body ran


@pytest.mark.parametrize(
    "coding", [b"chunked", b"Chunked", b"CHUNKED", b"chunked ", b"chunked\t", b" chunked"]
)
def test_exactly_chunked_is_read_as_chunked(served, coding):
    data = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answers = parse_responses(exchange(served, data))
    assert [json.loads(body) for _, _, body in answers] == [
        {"path": "", "body": "abc"},
        {"path": "next", "body": ""},
    ]


def test_a_well_framed_pipeline_is_served_in_order(served):
    data = (
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
        b"\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"  # one stray CRLF is allowed
    )
    answers = parse_responses(exchange(served, data))
    assert [json.loads(body)["path"] for _, _, body in answers] == ["a", "b"]


# -- point 1: streamed responses served directly --------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess:
    return in_thread(
        subprocess.run, ["curl", "-sS", "--max-time", "10", *args], capture_output=True, timeout=20
    )


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
EXPECTED_STREAM = "".join(f"part {i};" for i in range(1000)).encode()


@needs_curl
def test_a_generator_streams_in_valid_chunked_encoding_to_curl(served):
    result = curl("-i", "--raw", served.url + "/stream")
    assert result.returncode == 0, result.stderr
    (status, headers, body), *rest = parse_responses(result.stdout)
    assert status == 200 and not rest
    assert header_values(headers, "Transfer-Encoding") == ["chunked"]
    assert body == EXPECTED_STREAM
    decoded = curl(served.url + "/stream")
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout == EXPECTED_STREAM


@needs_curl
def test_a_file_goes_out_whole_with_its_length_to_curl_and_is_closed(served, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    result = curl("-i", f"{served.url}/file?name={path}")
    assert result.returncode == 0, result.stderr
    (status, headers, body), *rest = parse_responses(result.stdout)
    assert status == 200 and not rest
    assert header_values(headers, "Content-Length") == [str(256_000)]
    assert body == path.read_bytes()
    assert served.files and all(handle.closed for handle in served.files)


def test_streams_and_files_over_the_python_client(served, tmp_path):
    path = tmp_path / "page.bin"
    path.write_bytes(b"0123456789" * 10_000)
    client = xio.client(served.url)
    stream = in_thread(client.get, "stream")
    assert stream.status == 200 and stream.content == EXPECTED_STREAM
    file = in_thread(client.get, "file", query={"name": str(path)})
    assert file.status == 200 and file.content == path.read_bytes()
    assert file.headers["Content-Length"] == "100000"
    head = in_thread(client.head, "file", query={"name": str(path)})
    assert head.status == 200 and head.headers["Content-Length"] == "100000"
    again = in_thread(client.get, "stream")  # the kept-alive connection is still in step
    assert again.content == EXPECTED_STREAM
    assert len(served.files) == 2 and all(handle.closed for handle in served.files)


def test_a_stream_to_an_http_1_0_client_ends_with_the_close(served):
    data = b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    ((status, headers, body),) = parse_responses(exchange(served, data))
    assert status == 200 and body == EXPECTED_STREAM
    assert header_values(headers, "Transfer-Encoding") == []
    assert header_values(headers, "Connection") == ["close"]


# -- point 2 (the HTTP-writing half): the server owns the framing ---------------------------------


def test_framing_and_hop_by_hop_headers_from_a_handler_are_dropped(served):
    data = (
        b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    first, second = parse_responses(exchange(served, data))
    status, headers, body = first
    assert status == 200
    assert body.startswith(b"HTTP/1.1 200 OK")  # the handler's text, not a response of its own
    assert header_values(headers, "Content-Length") == [str(len(body))]
    for hop in ("Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade"):
        assert header_values(headers, hop) == []
    assert header_values(headers, "Set-Cookie") == ["a=1", "b=2"]  # repeated, not merged
    assert json.loads(second[2])["path"] == "after"


@pytest.mark.parametrize("char", ["\x00", "\r", "\n", "\x0b", "\x0c", "\x01", "\x1f", "\x7f"])
def test_a_response_header_with_a_control_character_is_a_json_502(served, char, caplog):
    caplog.set_level(logging.INFO, "xio")
    data = (
        b"GET /headers?name=X-Bad&value=a%" + b"%02X" % ord(char) + b"b HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    first, second = parse_responses(exchange(served, data))
    assert first[0] == 502
    assert "X-Bad" in json.loads(first[2])["description"]
    assert json.loads(second[2])["path"] == "after"  # and the server goes on serving
    assert not [record for record in caplog.records if record.exc_info]


def test_a_tab_in_a_response_header_is_written(served):
    data = b"GET /headers?name=X-Tab&value=a%09b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ((status, headers, _),) = parse_responses(exchange(served, data))
    assert status == 200 and header_values(headers, "X-Tab") == ["a\tb"]


def test_headers_keep_repeated_values_behind_a_dict_api():
    headers = Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("X-One", "1")])
    assert headers["SET-COOKIE"] == "a=1, b=2" and len(headers) == 2
    assert headers.get_all("set-cookie") == ["a=1", "b=2"]
    assert headers.fields() == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-One", "1")]
    assert dict(headers.items()) == {"Set-Cookie": "a=1, b=2", "X-One": "1"}
    assert Headers(headers).fields() == headers.fields()
    copy = headers.copy()
    headers["Set-Cookie"] = "c=3"
    assert headers.get_all("Set-Cookie") == ["c=3"] and len(copy.get_all("Set-Cookie")) == 2


def test_response_fields_drop_what_connection_names():
    kept = http11.response_fields(
        [("Connection", "close, X-Private"), ("X-Private", "1"), ("X-Public", "2")]
    )
    assert kept == [("X-Public", "2")]


# -- point 8: the gevent internals this server relies on are still there -------------------------


@pytest.mark.parametrize("name", PYWSGI_CONTRACT)
def test_canary_pywsgi_still_has_what_the_server_overrides(name):
    owner, attribute = name.split(".")
    member = getattr(getattr(gevent.pywsgi, owner), attribute, None)
    assert callable(member), f"gevent.pywsgi.{name} is gone: xio/server.py must be revisited"
    parameters = tuple(inspect.signature(member).parameters)
    assert parameters[: len(PYWSGI_CONTRACT[name])] == PYWSGI_CONTRACT[name], (
        f"gevent.pywsgi.{name} now takes {parameters}: xio/server.py must be revisited"
    )


def test_canary_pywsgi_objects_still_carry_the_attributes_the_server_sets():
    message = gevent.pywsgi.OldMessage()
    message.set_raw("Content-Type", "text/plain")
    assert message.typeheader == "text/plain"
    assert list(message.headers) == ["Content-Type: text/plain\r\n"]
    assert {"content_length", "chunked_input", "rfile"} <= set(gevent.pywsgi.Input.__slots__)
    source = inspect.getsource(gevent.pywsgi.WSGIHandler.handle_one_response)
    for used in ("response_use_chunked", "wsgi_input", "run_application", "log_request"):
        assert used in source, f"pywsgi's handle_one_response no longer uses {used}"
    assert "response_use_chunked" in inspect.getsource(gevent.pywsgi.WSGIHandler.finalize_headers)


def test_the_server_no_longer_uses_the_stdlib_private_header_reader():
    import xio.server

    assert "_read_headers" not in inspect.getsource(xio.server)


# -- the pure rules, fuzzed: remote garbage is a 4xx or a close, nothing else --------------------


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_any_header_section_is_fields_or_a_4xx(data):
    limits = http11.HTTPLimits(max_header_bytes=256, max_header_count=8)
    try:
        fields = http11.read_fields(io.BytesIO(data).readline, limits)
    except HTTPError as exc:
        assert exc.status in (400, 431)
        return
    except ConnectionResetError:
        return
    assert len(fields) <= 8
    for name, value in fields:
        assert name and not set(name) & set(" \t\r\n:")
        assert "\r" not in value and "\n" not in value and "\x00" not in value
    try:
        http11.request_framing(fields, "HTTP/1.1")
    except HTTPError as exc:
        assert exc.status in (400, 501)


@given(st.binary(max_size=120))
def test_any_request_line_is_parsed_or_refused(line):
    try:
        method, target, version = http11.parse_request_line(line)
    except HTTPError as exc:
        assert exc.status in (400, 414, 505)
        return
    assert version in ("HTTP/1.0", "HTTP/1.1") and " " not in target


@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=6))
def test_response_fields_are_written_as_single_lines_or_refused_502(fields):
    try:
        kept = http11.response_fields(fields)
    except HTTPError as exc:
        assert exc.status == 502
        return
    for name, value in kept:
        line = f"{name}: {value}\r\n".encode("latin-1")  # every one fits latin-1
        assert line.count(b"\n") == 1 and line.count(b"\r") == 1
        assert name.lower() not in http11.HOP_BY_HOP
