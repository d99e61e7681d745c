"""The graceful drain (xio.node.drain): SIGTERM lets requests in flight finish.

The defects seen before: SIGTERM with three slow requests in flight on a node dropped all
three (curl exit 52), and through the mesh the clients got 502s. Here real xio-node
processes are stopped mid-request and mid-load, and every answer must still be a 200; the
in-process tests check what a drain does to keep-alive connections and the node's record.
"""

from __future__ import annotations

import http.client
import signal
import socket
import threading
from urllib.parse import urlsplit

import pytest

from xio.node.drain import DrainClock

from .conftest import ROOT, wait_until
from .http_wire import in_thread, parse_responses
from .mesh import InProcessMesh, wait_for

SLOW = str(ROOT / "tests/apps/slow")


def get(url: str, path: str, timeout: float = 30.0) -> tuple[int, dict | str]:
    """One GET on a connection of its own, no retry: what curl would see."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        import json

        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body.decode("latin-1")
    finally:
        connection.close()


def in_flight(process) -> int:
    import xio

    return (
        xio.client(process.url, timeout=5).get("/_xio/node").content["budgets"]["in_flight"]["used"]
    )


# -- the pure clock ---------------------------------------------------------------------------


def test_the_drain_ends_after_a_quiet_spell_with_nothing_in_flight():
    clock = DrainClock(started=0.0, timeout=10.0, quiet=0.5)
    assert clock.step(0.1, busy=3) is None
    assert clock.step(0.2, busy=0) is None  # the spell starts
    assert clock.step(0.5, busy=1) is None  # a request arrived: it starts over
    assert clock.step(0.6, busy=0) is None
    assert clock.step(1.1, busy=0) == "drained"


def test_the_drain_ends_at_its_deadline_whatever_is_in_flight():
    clock = DrainClock(started=0.0, timeout=2.0, quiet=0.5)
    assert clock.step(1.9, busy=2) is None
    assert clock.step(2.0, busy=2) == "timed_out"


# -- real processes ----------------------------------------------------------------------------


def test_three_slow_requests_in_flight_all_finish_after_sigterm(start_node):
    node = start_node("c", "--app", SLOW)
    results: list = []

    def client():
        results.append(get(node.url, "/slow/?s=1"))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: in_flight(node) == 3, what="three requests in flight")
    node.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    assert [status for status, _ in results] == [200, 200, 200], results
    assert all(body["served_by"] == "c" for _, body in results)
    assert node.wait(15) == 0
    log = node.output()
    assert "draining: 3 request(s) in flight" in log and "drained in" in log


def test_a_second_sigterm_during_the_drain_stops_at_once(start_node):
    node = start_node("c", "--app", SLOW, "--drain-timeout", "60")
    results: list = []

    def client():
        try:
            results.append(get(node.url, "/slow/?s=30"))
        except http.client.RemoteDisconnected as exc:  # cut, as asked
            results.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    wait_until(lambda: in_flight(node) == 1, what="a request in flight")
    node.signal(signal.SIGTERM)
    wait_until(lambda: "draining" in node.output(), what="the drain")
    node.signal(signal.SIGTERM)
    assert node.wait(15) == 0  # well before the 60 s drain or the 30 s request
    assert "second signal: stopping now" in node.output()
    thread.join(30)
    assert type(results[0]) is http.client.RemoteDisconnected  # not drained: cut


def test_sigterm_mid_load_through_the_mesh_fails_no_request(start_node):
    """a links to b and c, both host the app; c is stopped while a's clients keep asking."""
    c = start_node("c", "--app", SLOW, "--drain-timeout", "10")
    b = start_node("b", "--app", SLOW, "--peers", c.url)
    a = start_node("a", "--peers", b.url, c.url)
    import xio

    def hosts() -> int:
        return len(xio.client(a.url, timeout=5).get("/_xio/apps").content.get("slow", []))

    wait_until(lambda: hosts() == 2, what="a to see both hosts of slow")
    total, results, lock = 300, [], threading.Lock()
    c_served = threading.Event()

    def client():
        while True:
            with lock:
                if len(results) >= total:
                    return
            answer = get(a.url, "/slow/?s=0.02")
            with lock:
                results.append(answer)
                served = sum(1 for s, body in results if s == 200 and body["served_by"] == "c")
            if served >= 20:
                c_served.set()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert c_served.wait(60), "c never served a request"
    c.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(120)
    failed = [answer for answer in results if answer[0] != 200]
    assert not failed, failed[:5]
    assert {body["served_by"] for _, body in results} == {"b", "c"}
    assert c.wait(10 + 5) == 0
    assert "draining:" in c.output() and "drained in" in c.output()
    after = [get(a.url, "/slow/") for _ in range(5)]  # c is gone: b serves everything
    assert [(s, body["served_by"]) for s, body in after] == [(200, "b")] * 5


# -- in process: keep-alive connections and the final record ----------------------------------


@pytest.fixture
def mesh():
    mesh = InProcessMesh()
    yield mesh
    mesh.close()


def keep_alive(node) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.sendall(b"GET /_xio/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def test_a_drain_closes_the_listener_and_ends_keep_alive_connections(mesh):
    import gevent

    import xio

    app = xio.app("held")
    release = gevent.event.Event()

    @app.bind("www")
    def held(req):
        release.wait()
        return {"done": True}

    node = mesh.start("n", apps=[app])
    idle = in_thread(keep_alive, node)  # answered, then waits for its next request
    assert b"200 OK" in in_thread(idle.recv, 4096)
    busy = in_thread(socket.create_connection, ("127.0.0.1", node.port), 10)
    in_thread(busy.sendall, b"GET /held/ HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: node.in_flight.used == 1, "the held request")
    drain = gevent.spawn(node.drain, 10.0)
    wait_for(lambda: node.draining, "the drain")
    with pytest.raises(ConnectionRefusedError):  # no new connection
        in_thread(socket.create_connection, ("127.0.0.1", node.port), 2)
    assert in_thread(idle.recv, 4096) == b""  # the idle keep-alive connection is closed
    release.set()
    [(status, headers, body)] = parse_responses(in_thread(_read_all, busy))
    assert status == 200 and ("Connection", "close") in headers
    assert drain.get(timeout=15) == "drained"
    assert node.store.get(node.id).app_names() == []  # the final record: no apps


def _read_all(sock) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
