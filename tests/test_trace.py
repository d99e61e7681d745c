"""Traced requests: ``X-Xio-Trace``, the ``trace`` fields of req and res, ``xio-node trace``."""

from __future__ import annotations

import json
import os
import threading

import pytest

import xio
from xio.errors import RemoteProtocolError
from xio.node import status_cli
from xio.peering import codec, trace
from xio.peering.codec import RequestFrame, ResponseFrame
from xio.peering.e2e import response_mac

from .conftest import ROOT, wait_until
from .hostile import OPENED, HostilePeer, record_frame
from .sealing import public_key_of, seal_response

EDGE = str(ROOT / "tests/apps/edge")
ID_A, ID_B, ID_C = "a" * 32, "b" * 32, "c" * 32


# -- the pure parts ------------------------------------------------------------------------


def test_entries_are_checked_and_bounded():
    good = [[ID_C, 50, 50], [ID_B, 10, 300]]
    assert trace.read_trace(good) == ((ID_C, 50, 50), (ID_B, 10, 300))
    assert trace.read_trace([]) == ()
    bad = [
        "x", {"a": 1}, [[ID_C, 50]], [[ID_C, 50, 50, 1]], [["not an id", 1, 1]],
        [[ID_C, -1, 5]], [[ID_C, 6, 5]], [[ID_C, True, 5]], [[ID_C, 1, 2**32]], [[ID_C, 1.5, 2]],
        [[ID_C, 1, 1]] * (trace.MAX_ENTRIES + 1),
    ]  # fmt: skip
    for value in bad:
        assert trace.read_trace(value) is None, value
    assert trace.read_trace(good, limit=1) is None  # more entries than nodes could be beyond


def test_the_header_is_in_hop_order_and_link_times_are_differences():
    entries = trace.append_entry(((ID_C, 500, 500), (ID_B, 20, 900)), ID_A, 0.0001, 0.0015)
    assert entries[-1] == (ID_A, 100, 1500)
    value = trace.header_value(entries)
    assert value == f"{ID_A};100;1500,{ID_B};20;900,{ID_C};500;500"
    hops = trace.parse_header(value)
    assert hops == ((ID_A, 100, 1500), (ID_B, 20, 900), (ID_C, 500, 500))
    # The link a -> b: a's total less its own time and b's total; b -> c likewise.
    assert trace.link_times(hops) == [None, 500, 380]
    for garbage in ("", "x;1", f"{ID_A};1;x", f"{ID_A};5;1", "zz;1;2"):
        assert trace.parse_header(garbage) is None, garbage


def test_trace_rows_name_the_nodes_and_mark_the_one_that_answered():
    value = f"{ID_A};100;1500,{ID_B};20;900,{ID_C};500;500"
    rows = status_cli.trace_rows(value, {ID_A: "a", ID_B: "b", ID_C: "c"}, ID_C)
    assert rows == [
        ["0", "a", ID_A, "0.10 ms", "-", "1.50 ms"],
        ["1", "b", ID_B, "0.02 ms", "0.50 ms", "0.90 ms"],
        ["2", "c (answered)", ID_C, "0.50 ms", "0.38 ms", "0.50 ms"],
    ]


def test_the_trace_fields_on_the_wire_and_outside_the_mac():
    req = RequestFrame(1, ID_C, "edge", "GET", "/x", hops=3, ttl_ms=10, trace=True)
    assert codec.decode(codec.encode(req)).trace is True
    plain = RequestFrame(1, ID_C, "edge", "GET", "/x", hops=3, ttl_ms=10)
    assert b"trace" not in codec.encode(plain)  # an untraced req carries no trace
    with pytest.raises(RemoteProtocolError):  # a req's flag is a bool or nothing
        codec.decode(codec.encode(req).replace(b"\xa5trace\xc3", b"\xa5trace\x07"))
    # A res takes any trace as decoded: its reader judges it, and the answer stands.
    res = ResponseFrame(1, 200, (("Content-Type", "x/y"),), b"ok", b"m" * 16, [[ID_C, 1, 1]])
    assert codec.decode(codec.encode(res)).trace == [[ID_C, 1, 1]]
    garbage = res.with_trace({"not": ["a", "trace"]})
    decoded = codec.decode(codec.encode(garbage))
    assert (decoded.status, decoded.body, decoded.mac) == (200, b"ok", b"m" * 16)
    # The response MAC is the same with or without a trace: relays append to it.
    key, nonce = b"k" * 32, b"n" * 16
    mac = response_mac(key, nonce, 200, res.headers, res.body)
    assert mac == response_mac(key, nonce, 200, garbage.headers, garbage.body)


# -- a real mesh --------------------------------------------------------------------------


def ws(process) -> str:
    return process.url.replace("http://", "ws://")


def admin(process, page: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return xio.client(process.url, timeout=5).get(f"/_xio/{page}", headers=headers).content


def hosts(process, app: str, token: str | None = None) -> list:
    return admin(process, "apps", token).get(app, [])


@pytest.fixture
def line(start_node):
    """A - B - C, the edge app on C."""
    c = start_node("c", "--app", EDGE)
    b = start_node("b", "--peers", ws(c))
    a = start_node("a", "--peers", ws(b))
    wait_until(lambda: hosts(a, "edge"), what="a to learn of edge on c")
    return a, b, c


def test_xio_node_trace_prints_every_hop_in_order_and_the_answer(line, capsys):
    a, b, c = line
    ids = [admin(p, "node")["id"] for p in (a, b, c)]
    code = status_cli.main("trace", [f"{a.url}/edge/echo/7"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"trace of GET /edge/echo/7 via {a.url}"
    assert lines[1].split() == ["Hop", "Node", "Id", "In", "node", "Link", "Total"]
    hops = [row.split() for row in lines[2:5]]
    assert [row[:3] for row in hops] == [["0", "a", ids[0]], ["1", "b", ids[1]]] + [
        ["2", "c", "(answered)"]
    ]
    assert hops[2][3] == ids[2]
    assert lines[5] == "200 OK" and len(lines) == 6


def test_the_trace_header_reaches_an_admin_client_and_no_one_else(line):
    a, _, _ = line
    client = xio.client(a.url, timeout=10)
    traced = client.get("/edge/echo/1", headers={"X-Xio-Trace": "1"})
    assert traced.status == 200
    hops = trace.parse_header(traced.headers["X-Xio-Trace"])
    assert len(hops) == 3 and hops[0][0] == admin(a, "node")["id"]
    untraced = client.get("/edge/echo/1")
    assert untraced.status == 200 and "X-Xio-Trace" not in untraced.headers


def test_a_client_without_the_admin_token_cannot_ask_for_a_trace(start_node, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    os.chmod(token_file, 0o600)
    c = start_node("c", "--app", EDGE)
    a = start_node("a", "--peers", ws(c), "--admin-token", str(token_file))
    wait_until(lambda: hosts(a, "edge", "tok-123"), what="a to learn of edge on c")
    client = xio.client(a.url, timeout=10)
    refused = client.get("/edge/echo/1", headers={"X-Xio-Trace": "1"})
    assert refused.status == 200 and "X-Xio-Trace" not in refused.headers  # ignored, served
    assert "X-Xio-Via" not in refused.headers
    allowed = client.get("/edge/echo/1", headers={"X-Xio-Trace": "1",
                                                   "Authorization": "Bearer tok-123"})  # fmt: skip
    assert allowed.status == 200 and len(trace.parse_header(allowed.headers["X-Xio-Trace"])) == 2


# -- a hostile destination --------------------------------------------------------------------


def evil_host(node, traces: list, ingress=None) -> HostilePeer:
    """Link a scripted peer to ``node`` hosting app ``evil``, answering with ``traces``.

    Its answers are sealed for ``ingress`` (default ``node``), the node that asks it.
    """
    peer = HostilePeer(int(node.url.rsplit(":", 1)[1]))
    OPENED.append(peer)
    peer.handshake()
    peer.start_reader()
    target = admin(node, "node")["id"]
    peer.send_message(record_frame(peer.key, 1, links=[target], apps=["evil"], name="evil"))
    wait_until(lambda: hosts(node, "evil"), what="the node to route app evil to the peer")
    done: set[int] = set()
    asker_key = public_key_of(ingress or node)

    def serve():
        while not peer.closed.wait(0.01):
            for frame in list(peer.frames):
                if frame.get("t") != "req" or frame["id"] in done:
                    continue
                done.add(frame["id"])
                headers, body = [["Content-Type", "text/plain"]], b"still here"
                mac = seal_response(peer.key, asker_key, frame, 200, headers, body)
                peer.send("res", id=frame["id"], status=200, headers=headers, body=body, mac=mac,
                          trace=traces[len(done) - 1])  # fmt: skip

    threading.Thread(target=serve, daemon=True).start()
    return peer


def test_a_malformed_trace_from_a_peer_is_dropped_and_counted_the_answer_arrives(start_node):
    a = start_node("a")
    peer = evil_host(a, [
        [["not a node id", 1, 2]],
        {"deep": [1, 2, 3]},
        [[("e" * 32), 5, 1]],  # node time over total time
        [[("e" * 32), 1, 1]],  # well formed, for a request that asked for no trace
    ])  # fmt: skip
    client = xio.client(a.url, timeout=10)
    own = admin(a, "node")["id"]
    for _ in range(3):
        answer = client.get("/evil/x", headers={"X-Xio-Trace": "1"})
        assert (answer.status, answer.text) == (200, "still here")
        hops = trace.parse_header(answer.headers["X-Xio-Trace"])
        assert [hop[0] for hop in hops] == [own]  # the ingress's own entry alone
    assert admin(a, "node")["forwarding"]["bad_trace"] == 3
    untraced = client.get("/evil/x")
    assert untraced.status == 200 and "X-Xio-Trace" not in untraced.headers
    assert not peer.closed.is_set()  # a bad trace is no reason to close the link
    assert json.loads(json.dumps(admin(a, "peers")))[0]["state"] == "established"


def test_a_request_answered_where_it_arrived_is_one_hop(start_node, capsys):
    c = start_node("c", "--app", EDGE)
    code = status_cli.main("trace", ["/edge/echo/3", "--via", c.url])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[2].split()[:4] == ["0", "c", "(answered)", admin(c, "node")["id"]]
    assert lines[3:] == ["200 OK"]


def test_a_relay_drops_a_malformed_trace_and_still_adds_its_own(start_node):
    b = start_node("b")
    a = start_node("a", "--peers", ws(b))
    evil_host(b, [[["x", "y"]]], ingress=a)
    wait_until(lambda: hosts(a, "evil"), what="a to route app evil through b")
    answer = xio.client(a.url, timeout=10).get("/evil/x", headers={"X-Xio-Trace": "1"})
    assert (answer.status, answer.text) == (200, "still here")
    hops = trace.parse_header(answer.headers["X-Xio-Trace"])
    assert [hop[0] for hop in hops] == [admin(a, "node")["id"], admin(b, "node")["id"]]
    assert admin(b, "node")["forwarding"]["bad_trace"] == 1
    assert "bad_trace" not in admin(a, "node")["forwarding"]  # what b passed on was good
