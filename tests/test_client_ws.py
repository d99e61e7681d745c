"""The client channel (/_xio/client-ws) and the WebSocket client, against real nodes.

The conformance suite (test_conformance.py, runner python-ws) shows that every case answers
over the channel as over HTTP; this file holds what only the channel has: many requests in
flight on one connection, answers streamed as they are made, reconnecting, cancelling, and a
hostile client's messages (PROTOCOL.md, section 16).
"""

from __future__ import annotations

import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import xio
from xio import channel
from xio.channel import CANCEL, DATA, END, HEAD, REQ

from .conftest import NODE, Process
from .hostile import Closed, HostilePeer, Refused
from .mesh import unused_port

APP = """
import time
import xio

app = xio.app("chan")
released = []


@app.bind("www/echo", methods=["GET", "POST"])
def echo(req):
    return {"method": req.method, "size": len(req.body), "query": req.query}


@app.bind("www/slow")
def slow(req):
    time.sleep(float(req.query.get("s", "1")))
    return {"slept": req.query.get("s", "1")}


@app.bind("www/hold")
def hold(req):
    # The second piece is made only once www/release was called: a client that sees the first
    # before calling it sees pieces as they are made, not the whole answer at its end.
    def pieces():
        yield "first\\n"
        give_up = time.monotonic() + 20
        while not released and time.monotonic() < give_up:
            time.sleep(0.02)
        yield "second\\n" if released else "never released\\n"

    released.clear()
    req.response.content_type = "text/plain; charset=utf-8"
    return pieces()


@app.bind("www/big")
def big(req):
    return bytes(range(256)) * 800  # 204800 bytes: more than three pieces


@app.bind("www/release")
def release(req):
    released.append(1)
    return "released"
"""


def start(tmp_path, name="n", port=0, *args) -> Process:
    app = tmp_path / "chan_app.py"
    app.write_text(APP, encoding="utf-8")
    command = [*NODE, "--name", name, "--host", "127.0.0.1", "--port", str(port),
               "--state-dir", str(tmp_path / f"state-{name}"), "--no-mdns", "--app", str(app),
               "--max-body", "100000", *args]  # fmt: skip
    return Process(command, tmp_path / f"{name}-{time.monotonic_ns()}.log").start()


@pytest.fixture
def node(tmp_path):
    process = start(tmp_path)
    yield process
    process.stop()


def ws_url(process: Process, path: str = "chan") -> str:
    return "ws" + process.url[len("http") :] + "/" + path


def port_of(process: Process) -> int:
    return int(process.url.rsplit(":", 1)[1])


def rejected(process: Process, key: str = "rejected") -> dict:
    return xio.client(process.url).get("/_xio/node").content[key]


# -- the client ------------------------------------------------------------------------------


def test_many_requests_are_in_flight_at_once_on_one_connection(node):
    client = xio.client(ws_url(node), timeout=10)
    assert client.get("echo").status == 200
    channel_before = client._channel
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda n: client.get("slow", query={"s": "0.5"}), range(20)))
    assert [a.content for a in answers] == [{"slept": "0.5"}] * 20
    assert client._channel is channel_before  # every one of them on the same WebSocket
    client.close()


def test_a_streamed_answer_arrives_piece_by_piece(node):
    client = xio.client(ws_url(node), timeout=10)
    with client.stream("GET", "hold") as answer:
        assert (answer.status, answer.content_type) == (200, "text/plain; charset=utf-8")
        pieces = iter(answer)
        assert next(pieces) == b"first\n"  # before the second piece exists
        assert xio.client(node.url + "/chan").post("release").content == "released"
        assert b"".join(pieces) == b"second\n"
    client.close()


def test_a_timeout_cancels_that_request_and_the_connection_keeps_serving(node):
    client = xio.client(ws_url(node), timeout=10)
    with pytest.raises(xio.Timeout):
        client.request("GET", "slow", query={"s": "1.5"}, timeout=0.3)
    assert client.get("echo", query={"after": "timeout"}).content["query"] == {"after": "timeout"}
    client.close()


def test_the_client_reconnects_after_the_node_restarts(tmp_path):
    port = unused_port()
    process = start(tmp_path, "r", port)
    client = xio.client(f"ws://127.0.0.1:{port}/chan", timeout=5)
    try:
        assert client.get("echo").status == 200
        process.stop()
        with pytest.raises(xio.ConnectError):
            client.get("echo")
        process = start(tmp_path, "r", port)
        # The backoff after the failed attempt is 0.1 s at first: well within the timeout.
        assert client.get("echo").status == 200
    finally:
        client.close()
        process.stop()


def test_a_list_of_ws_entries_moves_past_one_that_is_down(node):
    down = f"ws://127.0.0.1:{unused_port()}/chan"
    client = xio.client([down, ws_url(node)], timeout=5)
    assert client.get("echo").status == 200
    client.close()


# -- a hostile client ------------------------------------------------------------------------


def peer(process: Process, **headers) -> HostilePeer:
    return HostilePeer(port_of(process), path="/_xio/client-ws", headers=headers)


def req(id: int, path: str = "/chan/echo", body: bytes = b"", **fields) -> bytes:
    return channel.encode(REQ, id, {"method": "GET", "path": path, **fields}, body, END)


def answer(conn: HostilePeer) -> channel.Message:
    return channel.decode(conn.receive_message())


def test_bad_fields_are_a_400_for_that_request_and_the_connection_keeps_serving(node):
    conn = peer(node)
    conn.send_message(channel.encode(REQ, 1, {"method": "G T", "path": "/chan/echo"}, flags=END))
    first = answer(conn)
    assert (first.kind, first.id, first.fields["status"], first.end) == (HEAD, 1, 400, True)
    assert "method" in json.loads(first.body)["description"]
    conn.send_message(req(2))
    second = answer(conn)
    assert (second.id, second.fields["status"]) == (2, 200)
    assert rejected(node).get("client_ws_bad_request") == 1


@pytest.mark.parametrize(
    "message",
    [b"\x01\x00", struct.pack(">BBII", 9, 0, 1, 0), struct.pack(">BBII", 1, 1, 0, 0),
     struct.pack(">BBII", 1, 1, 1, 50) + b"{}", struct.pack(">BBII", 1, 1, 1, 2) + b"[]",
     channel.encode(HEAD, 1, {"status": 200})],
    ids=["short", "unknown-kind", "id-0", "json-cut-short", "json-not-object", "head-from-client"],
)  # fmt: skip
def test_a_message_that_is_not_a_channel_message_closes_with_1002_and_is_counted(node, message):
    conn = peer(node)
    conn.send_message(message)
    with pytest.raises(Closed, match="close frame 03ea"):  # 1002
        conn.receive_message()
    assert rejected(node).get("client_ws_bad_message") == 1
    assert xio.client(ws_url(node), timeout=5).get("echo").status == 200  # others still served


def test_a_body_over_max_body_is_a_413_read_past_and_the_connection_keeps_serving(node):
    conn = peer(node)
    conn.send_message(req(1, body=b"x" * 150_000))  # --max-body 100000
    first = answer(conn)
    assert (first.id, first.fields["status"]) == (1, 413)
    conn.send_message(req(2, method="POST", body=b"y" * 1000))
    second = answer(conn)
    assert (second.id, second.fields["status"], json.loads(second.body)["size"]) == (2, 200, 1000)


def test_a_connection_has_a_bounded_number_of_requests_in_flight(node):
    from xio.node.clientws import MAX_IN_FLIGHT

    conn = peer(node)
    for id in range(1, MAX_IN_FLIGHT + 3):
        conn.send_message(req(id, "/chan/slow", query="s=1"))
    statuses = {}
    while len(statuses) < MAX_IN_FLIGHT + 2:
        message = answer(conn)
        statuses[message.id] = message.fields["status"]
    assert sorted(statuses.values()).count(503) == 2
    assert list(statuses.values()).count(200) == MAX_IN_FLIGHT
    assert rejected(node, "refused").get("client_ws_in_flight") == 2


def test_a_cancelled_request_gets_no_answer(node):
    conn = peer(node)
    conn.send_message(req(1, "/chan/slow", query="s=0.5"))
    conn.send_message(channel.encode(CANCEL, 1))
    conn.send_message(req(2, "/chan/slow", query="s=0.8"))
    message = answer(conn)
    assert (message.id, message.fields["status"]) == (2, 200)  # 1 finished first, unsent


def test_a_reused_id_in_flight_closes_the_connection(node):
    conn = peer(node)
    conn.send_message(req(1, "/chan/slow", query="s=1"))
    conn.send_message(req(1))
    with pytest.raises(Closed, match="close frame 03ea"):
        conn.receive_message()


def test_a_browser_page_of_another_origin_is_refused_unless_allowed(node):
    with pytest.raises(Refused) as refused:
        peer(node, Origin="http://evil.example")
    assert refused.value.status == 403
    assert rejected(node, "refused").get("client_ws_origin") == 1
    own = peer(node, Origin=node.url)  # a page the node itself served
    own.send_message(req(1))
    assert answer(own).fields["status"] == 200


def test_a_large_answer_comes_as_a_head_and_data_messages_the_last_marked_end(node):
    conn = peer(node)
    conn.send_message(req(1, "/chan/big"))
    messages = [answer(conn)]
    while not messages[-1].end:
        messages.append(answer(conn))
    assert [m.kind for m in messages] == [HEAD, DATA, DATA, DATA]
    assert b"".join(m.body for m in messages) == bytes(range(256)) * 800
    assert max(len(m.body) for m in messages) == 64 * 1024


def test_a_streamed_answer_is_a_head_then_a_data_message_per_piece(node):
    conn = peer(node)
    conn.send_message(req(1, "/chan/hold"))
    head = answer(conn)
    assert (head.kind, head.end, head.body) == (HEAD, False, b"")
    first = answer(conn)
    assert (first.kind, first.end, first.body) == (DATA, False, b"first\n")
    xio.client(node.url + "/chan").post("release")
    pieces = []
    while not (message := answer(conn)).end:
        pieces.append(message.body)
    assert b"".join(pieces) + message.body == b"second\n"


def test_the_http_client_streams_an_answer_piece_by_piece_too(node):
    client = xio.client(node.url + "/chan", timeout=10)
    with client.stream("GET", "hold") as answer:
        assert (answer.status, answer.content_type) == (200, "text/plain; charset=utf-8")
        pieces = iter(answer)
        assert next(pieces) == b"first\n"
        assert xio.client(node.url + "/chan").post("release").content == "released"
        assert b"".join(pieces) == b"second\n"
    assert client.get("echo").status == 200  # the connection went back to the pool
    assert len(client._idle) == 1
    client.close()


def pieces(id: int, body: bytes, size: int = 30_000, path: str = "/chan/echo") -> list[bytes]:
    """A POST whose body is sent in pieces: a REQ without END, DATA, the last with END."""
    parts = [body[start : start + size] for start in range(0, len(body), size)]
    first = channel.encode(REQ, id, {"method": "POST", "path": path}, parts[0])
    rest = [channel.encode(DATA, id, None, part, END if n == len(parts) - 2 else 0)
            for n, part in enumerate(parts[1:])]  # fmt: skip
    return [first, *rest]


def test_a_body_sent_in_pieces_is_one_request_body(node):
    conn = peer(node)
    for message in pieces(1, b"p" * 95_000):  # four pieces, as a browser's WebSocket may need
        conn.send_message(message)
    head = answer(conn)
    assert (head.id, head.fields["status"], json.loads(head.body)["size"]) == (1, 200, 95_000)


def test_a_body_in_pieces_over_max_body_is_a_413_and_its_other_pieces_are_read_past(node):
    conn = peer(node)
    for message in pieces(1, b"q" * 150_000):  # --max-body 100000: the fourth piece is over
        conn.send_message(message)
    conn.send_message(req(2))
    seen = {message.id: message.fields["status"] for message in (answer(conn), answer(conn))}
    assert seen == {1: 413, 2: 200}


def test_data_for_no_body_being_sent_closes_with_1002(node):
    conn = peer(node)
    conn.send_message(channel.encode(DATA, 5, None, b"stray", END))
    with pytest.raises(Closed, match="close frame 03ea"):
        conn.receive_message()


def test_the_python_client_sends_a_large_body_in_pieces_within_64_kib_each(node):
    from xio.wsclient import request_messages

    messages = request_messages(1, {"method": "POST", "path": "/chan/echo"}, b"r" * 99_000)
    assert len(messages) == 4 and max(map(len, messages)) <= 65_536
    client = xio.client(ws_url(node), timeout=10)
    assert client.post("echo", b"r" * 99_000).content["size"] == 99_000
    client.close()
