"""Issue 8: the request path across the mesh is exact, with real xio-node processes.

A - B - C in a line, the ``edge`` app on C; requests enter at A (two hops) or at C (served
locally), over raw sockets where the bytes on the wire are what a client would notice. Peers
that misbehave are the scripted peer of tests/hostile.py, written from docs/PROTOCOL.md.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

import xio

from .conftest import ROOT, wait_until
from .hostile import OPENED, HostilePeer, record_frame
from .sealing import introduce, public_key_of, seal_request, seal_response

EDGE = str(ROOT / "tests/apps/edge")


def ws(process) -> str:
    return process.url.replace("http://", "ws://")


def port_of(process) -> int:
    return int(process.url.rsplit(":", 1)[1])


def info(process) -> dict:
    return xio.client(process.url, timeout=5).get("/_xio/node").content


def node_id(process) -> str:
    return info(process)["id"]


def hosts(process, app: str) -> list:
    return xio.client(process.url, timeout=5).get("/_xio/apps").content.get(app, [])


class Http:
    """One keep-alive HTTP/1.1 connection, read byte-exactly (no client library in between)."""

    def __init__(self, process) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port_of(process)), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the node closed the connection")
        self.buffer += chunk

    def send(self, method: str, target: str, headers: list[tuple[str, str]] = ()) -> None:
        lines = [f"{method} {target} HTTP/1.1", "Host: test", *(f"{n}: {v}" for n, v in headers)]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def read(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Return ``(status, header pairs as sent, body)`` of the next response."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        pairs = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
        length = [int(v) for n, v in pairs if n.lower() == "content-length"]
        assert len(length) == 1, f"not exactly one Content-Length: {pairs}"
        while len(self.buffer) < length[0]:
            self._fill()
        body, self.buffer = self.buffer[: length[0]], self.buffer[length[0] :]
        return int(status_line.split()[1]), pairs, body

    def ask(self, method: str, target: str, headers=()) -> tuple[int, list, bytes]:
        self.send(method, target, headers)
        return self.read()


def values(pairs, name: str) -> list[str]:
    return [v for n, v in pairs if n.lower() == name.lower()]


@pytest.fixture
def line(start_node):
    """A - B - C, the edge app on C; returns the processes and their ids."""
    c = start_node("c", "--app", EDGE)
    b = start_node("b", "--peers", ws(c))
    a = start_node("a", "--peers", ws(b))
    wait_until(lambda: hosts(a, "edge"), what="a to learn of edge on c")
    ids = {name: node_id(p) for name, p in (("a", a), ("b", b), ("c", c))}
    return a, b, c, ids


def peer_of(process) -> HostilePeer:
    peer = HostilePeer(port_of(process))
    OPENED.append(peer)
    peer.handshake()
    return peer.start_reader()


def answer_of(peer: HostilePeer, request_id: int) -> dict:
    wait_until(lambda: request_id in peer.responses, what=f"an answer to request {request_id}")
    return peer.responses[request_id]


# -- point 4: X-Xio-Via is written by nodes only ------------------------------------------------


def test_a_client_cannot_write_the_trail_and_nodes_add_only_their_ids(line):
    a, _, c, ids = line
    spoofed = [("X-Xio-Via", "spoofed, not-a-node")]
    connection = Http(a)
    status, pairs, body = connection.ask("GET", "/edge/echo/1", spoofed)
    assert status == 200
    seen = dict((n.lower(), v) for n, v in json.loads(body)["headers"])
    assert seen["x-xio-via"] == f"{ids['a']},{ids['b']}"  # what the app at C was told
    assert values(pairs, "X-Xio-Via") == [f"{ids['a']},{ids['b']},{ids['c']}"]
    # Served where it arrived: the app sees no trail and the answer carries none.
    status, pairs, body = Http(c).ask("GET", "/edge/echo/1", spoofed)
    assert status == 200
    assert "x-xio-via" not in {n.lower() for n, _ in json.loads(body)["headers"]}
    assert values(pairs, "X-Xio-Via") == []


def test_a_loop_and_an_unreadable_trail_are_refused_and_counted(line):
    _, b, c, ids = line
    peer = peer_of(b)
    edge = {"dst": ids["c"], "app": "edge", "path": "/echo/1", "method": "GET", "hops": 16,
            "ttl": 10_000, "query": "", "body": b""}  # fmt: skip
    peer.send("req", id=1, **edge, headers=[["X-Xio-Via", f"{peer.key.node_id},{ids['b']}"]])
    peer.send("req", id=2, **edge, headers=[["X-Xio-Via", f"{peer.key.node_id}, {ids['a']}"]])
    peer.send("req", id=3, **edge, headers=[["X-Xio-Via", ids["a"]], ["x-xio-via", ids["a"]]])
    introduce(peer)  # C takes the peer's key from its record (docs/PROTOCOL.md 11.1)
    sealed = seal_request(peer.key, public_key_of(c), ids["c"], "edge", path="/echo/1")
    peer.send("req", id=4, **edge, headers=[["X-Xio-Via", peer.key.node_id]], **sealed)
    loop = answer_of(peer, 1)
    assert loop["status"] == 508
    assert json.loads(loop["body"])["title"] == "Loop Detected"
    assert dict(loop["headers"])["X-Xio-Via"] == f"{peer.key.node_id},{ids['b']},{ids['b']}"
    for request_id in (2, 3):
        refused = answer_of(peer, request_id)
        assert refused["status"] == 400, refused
        assert dict(refused["headers"])["X-Xio-Via"] == ids["b"]
    good = answer_of(peer, 4)
    assert good["status"] == 200
    assert dict(good["headers"])["X-Xio-Via"] == f"{peer.key.node_id},{ids['b']},{ids['c']}"
    counts = info(b)["forwarding"]
    assert counts["loop"] == 1 and counts["bad_via"] == 2
    assert not peer.closed.is_set()  # refused requests, not a broken link


def test_the_destination_answers_app_not_hosted_with_the_trail(line):
    _, _, c, ids = line
    peer = peer_of(c)
    introduce(peer)
    sealed = seal_request(peer.key, public_key_of(c), ids["c"], "nothere")
    peer.send("req", id=1, dst=ids["c"], app="nothere", method="GET", path="", hops=16,
              ttl=10_000, headers=[["X-Xio-Via", peer.key.node_id]], **sealed)  # fmt: skip
    answer = answer_of(peer, 1)
    assert answer["status"] == 404
    assert dict(answer["headers"])["X-Xio-Via"] == f"{peer.key.node_id},{ids['c']}"


def test_a_request_arriving_with_no_time_left_at_its_destination_is_504(line):
    _, _, c, ids = line
    peer = peer_of(c)
    peer.send("req", id=1, dst=ids["c"], app="edge", method="GET", path="/echo/1", hops=16, ttl=0)
    assert answer_of(peer, 1)["status"] == 504


# -- point 2: headers across the mesh --------------------------------------------------------


def test_repeated_headers_stay_repeated_and_hop_by_hop_ones_stop(line):
    a, _, c, _ = line
    for node in (a, c):  # through two hops, and served where it arrived
        connection = Http(node)
        status, pairs, body = connection.ask("GET", "/edge/cookies")
        assert status == 200, body
        assert values(pairs, "Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
        assert values(pairs, "X-Kept") == ["yes"]
        assert values(pairs, "Content-Length") == [str(len(body))]
        assert json.loads(body) == {"cookies": 2}
        if node is a:  # the app's own hop-by-hop headers never leave C
            for name in ("Connection", "Keep-Alive", "X-Hop"):
                assert values(pairs, name) == [], name
        # The connection is still good for the next request.
        assert connection.ask("GET", "/_xio/node")[0] == 200
        connection.close()


def test_request_headers_arrive_in_order_with_their_case(line):
    a, _, c, _ = line
    sent = [("X-First", "1"), ("x-lower", "2"), ("X-Twice", "a"), ("X-Twice", "b"),
            ("Connection", "keep-alive, X-Drop"), ("X-Drop", "hop"), ("Keep-Alive", "5"),
            ("Proxy-Authorization", "secret"), ("TE", "trailers")]  # fmt: skip
    status, _, body = Http(a).ask("GET", "/edge/echo/1", sent)
    assert status == 200
    seen = json.loads(body)["headers"]
    names = [name for name, _ in seen]
    assert ["Host", "test"] in seen
    assert [n for n in names if n.lower().startswith("x-") and n != "X-Xio-Via"] == [
        "X-First", "x-lower", "X-Twice",
    ]  # fmt: skip
    assert ["X-Twice", "a, b"] in seen  # the app's Headers join repeats; both arrived
    for gone in ("connection", "x-drop", "keep-alive", "proxy-authorization", "te"):
        assert gone not in {n.lower() for n in names}, gone


def evil_host(node, answers: dict) -> HostilePeer:
    """Link a scripted peer to ``node`` that hosts app ``evil`` and answers ``answers[path]``."""
    peer = peer_of(node)
    target = node_id(node)
    peer.send_message(record_frame(peer.key, 1, links=[target], apps=["evil"], name="evil"))
    wait_until(lambda: hosts(node, "evil"), what="the node to route app evil to the peer")
    done: set[int] = set()
    asker_key = public_key_of(node)

    def serve():
        while not peer.closed.wait(0.01):
            for frame in list(peer.frames):
                if frame.get("t") != "req" or frame["id"] in done:
                    continue
                done.add(frame["id"])
                status, headers, body = answers[frame["path"]]
                # Signed, as the destination's answers are: the node judges what it says.
                mac = seal_response(peer.key, asker_key, frame, status, headers, body)
                peer.send("res", id=frame["id"], status=status, headers=headers, body=body,
                          mac=mac)  # fmt: skip

    threading.Thread(target=serve, daemon=True).start()
    return peer


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nEVIL!"


def test_a_peers_framing_headers_cannot_desynchronise_the_client(start_node):
    a = start_node("a")
    evil_host(a, {
        "/cl0": (200, [["Content-Length", "0"], ["Content-Type", "text/plain"]], INJECTED),
        "/te": (200, [["Transfer-Encoding", "chunked"], ["Connection", "close"]], INJECTED),
        "/crlf": (200, [["X-Split", "a\r\nSet-Cookie: evil=1"]], b"x"),
        "/interim": (101, [["Upgrade", "websocket"]], b""),
    })  # fmt: skip
    connection = Http(a)
    for path in ("/cl0", "/te"):
        status, pairs, body = connection.ask("GET", f"/evil{path}")
        assert (status, body) == (200, INJECTED)  # the whole body, framed by the node
        assert values(pairs, "Transfer-Encoding") == [] and values(pairs, "Connection") == []
        status, _, body = connection.ask("GET", "/_xio/node")
        assert status == 200 and json.loads(body)["id"] == node_id(a)
    for path, why in (("/crlf", "X-Split"), ("/interim", "status 101")):
        status, pairs, body = connection.ask("GET", f"/evil{path}")
        assert status == 502 and why in json.loads(body)["description"], body
        assert values(pairs, "Set-Cookie") == []
    assert info(a)["forwarding"]["bad_response"] == 2


# -- point 5: the raw path ---------------------------------------------------------------------


def test_an_encoded_slash_stays_inside_its_segment_locally_and_across_two_hops(line):
    a, _, c, _ = line
    answers = []
    for node in (c, a):
        status, _, body = Http(node).ask("GET", "/edge/echo/a%2Fb/c%20d")
        assert status == 200, body
        answer = json.loads(body)
        answers.append({key: answer[key] for key in ("id", "path")})
    assert answers[0] == answers[1] == {"id": "a/b", "path": "c d"}
    assert Http(a).ask("GET", "/edge/echo/100%zz")[0] == 400  # not a percent-encoding


# -- point 3: the same frame rules on both sides ---------------------------------------------


def test_a_local_header_no_frame_can_carry_fails_that_request_alone(line):
    a, b, c, _ = line
    connection = Http(a)
    status, _, body = connection.ask("GET", "/edge/big-header")
    assert status == 502
    assert "X-Big" in json.loads(body)["description"]
    assert info(c)["forwarding"]["response_too_large"] == 1
    assert connection.ask("GET", "/edge/echo/1")[0] == 200
    for node in (b, c):  # the link B - C was never closed for it
        assert info(node)["closed_links"] == {}, node.name


def test_client_values_over_the_frame_limits_are_4xx_at_the_ingress(line):
    a, _, _, _ = line
    connection = Http(a)
    status, _, body = connection.ask("X" * 300, "/edge/echo/1")
    assert status == 400 and "255" in json.loads(body)["description"]
    many = [(f"X-Fill-{i}", "v" * 3000) for i in range(90)]  # 270 KB of headers
    status, _, body = Http(a).ask("GET", "/edge/echo/1", many)
    assert status == 431, body
    assert Http(a).ask("GET", "/edge/echo/1")[0] == 200


# -- point 13: the WebSocket path without an upgrade -----------------------------------------


def test_the_websocket_path_without_an_upgrade_is_426(start_node):
    node = start_node("solo")
    status, pairs, body = Http(node).ask("GET", "/_xio/ws")
    assert status == 426
    assert values(pairs, "Upgrade") == ["websocket"]
    assert json.loads(body)["title"] == "Upgrade Required"
