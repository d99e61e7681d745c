"""Streamed answers across the mesh with real xio-node processes (docs/PROTOCOL.md 4.1).

A line A - B - C with the streaming app (tests/apps/stream) on C; every request enters at A,
so each answer crosses two links. The client reads with http.client, piece by piece.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest

import xio

from .conftest import ROOT, wait_until
from .test_conformance import node_command
from .test_mesh import apps_seen, ws

STREAM = str(ROOT / "tests/apps/stream")
PIECE = 64 * 1024


@pytest.fixture
def line(start_node):
    c = start_node("c", "--app", STREAM)
    b = start_node("b", "--peers", ws(c))
    a = start_node("a", "--peers", ws(b))
    wait_until(lambda: "stream" in apps_seen(a), what="a to learn of the stream app on c")
    return a, b, c


def open_stream(node, path: str, timeout: float = 20.0) -> http.client.HTTPResponse:
    parts = urlsplit(node.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    connection.request("GET", path)
    response = connection.getresponse()
    response.connection = connection  # closed with the response by the caller
    return response


def stats(node) -> dict:
    return xio.client(node.url, timeout=5).get("/stream/stats").content


def forwarding(node) -> dict:
    return xio.client(node.url, timeout=5).get("/_xio/node").content["forwarding"]


def expected_bytes(n: int, size: int = PIECE) -> str:
    digest = hashlib.sha256()
    for index in range(n):
        digest.update(bytes([index % 256]) * size)
    return digest.hexdigest()


def test_lines_arrive_through_two_hops_as_they_are_produced(line):
    a, _, _ = line
    response = open_stream(a, "/stream/ticks?n=3&every=0.5")
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    first = response.readline()
    received_first = time.time()
    rest = response.read().decode().splitlines()
    produced = [float(text.split()[2]) for text in [first.decode(), *rest]]
    assert [text.split()[1] for text in [first.decode(), *rest]] == ["0", "1", "2"]
    # The first line was in the client's hands before the app had even made the last one:
    # nothing on the way waited for the whole body.
    assert received_first < produced[2]


def test_a_body_larger_than_any_frame_arrives_whole_and_in_order(line):
    a, _, c = line
    n = 300  # 19.7 MB: over the 16 MiB a res frame carries
    response = open_stream(a, f"/stream/bytes?n={n}&size={PIECE}")
    digest = hashlib.sha256()
    while piece := response.read(1 << 20):
        digest.update(piece)
    assert digest.hexdigest() == expected_bytes(n)
    assert stats(c)["finished"] == 1
    assert forwarding(a)["streamed"] == 1  # its end-to-end MAC checked at the end


def test_a_client_that_stops_reading_holds_back_the_producer_two_hops_away(line):
    a, _, c = line
    n = 3000  # 197 MB if nothing held the producer back
    response = open_stream(a, f"/stream/bytes?n={n}&size={PIECE}")
    response.read(PIECE)
    time.sleep(1.5)  # the client reads nothing: every window and buffer on the way fills
    made = stats(c)["yielded"]
    # At most the 256 KiB window is in flight on the links; the rest is what the kernel holds
    # in the ingress's socket to the client (a few MiB on loopback).
    assert made * PIECE < 32 * 1024 * 1024, f"{made} pieces made while the client read 1"
    digest = hashlib.sha256(bytes([0]) * PIECE)
    while piece := response.read(1 << 20):
        digest.update(piece)
    assert digest.hexdigest() == expected_bytes(n)


def test_a_client_that_goes_away_stops_the_producer(line):
    a, b, c = line
    response = open_stream(a, "/stream/ticks?n=1000&every=0.05")
    assert response.readline().startswith(b"tick 0")
    response.close()
    response.connection.close()
    wait_until(lambda: stats(c)["closed_early"] == 1, what="the generator on c to be closed")
    assert stats(c)["finished"] == 0
    assert forwarding(a)["stream_abandoned"] == 1
    assert forwarding(b)["cancelled"] >= 1 and forwarding(c)["cancelled"] >= 1


def test_a_relay_lost_mid_stream_aborts_the_transfer_and_stops_the_producer(line):
    a, b, c = line
    response = open_stream(a, "/stream/ticks?n=1000&every=0.05")
    assert response.readline().startswith(b"tick 0")
    b.proc.kill()
    started = time.monotonic()
    with pytest.raises(http.client.IncompleteRead):  # never a clean end of a broken body
        response.read()
    assert time.monotonic() - started < 10  # not left hanging
    wait_until(lambda: forwarding(a).get("stream_broken") == 1, what="a to count it")
    wait_until(lambda: stats(c)["closed_early"] == 1, what="the generator on c to be stopped")


def test_the_python_clients_report_a_broken_stream_as_a_transport_error(line):
    a, b, c = line
    over_http = xio.client(a.url, timeout=20).stream("GET", "/stream/ticks?n=1000&every=0.05")
    over_ws = xio.client(ws(a).replace("/_xio/ws", ""), timeout=20)
    streamed = over_ws.stream("GET", "/stream/ticks?n=1000&every=0.05")
    http_pieces, ws_pieces = iter(over_http), iter(streamed)
    assert next(http_pieces).startswith(b"tick 0") and next(ws_pieces).startswith(b"tick 0")
    b.proc.kill()
    with pytest.raises(xio.TransportError):
        for _ in http_pieces:
            pass
    with pytest.raises(xio.StreamBroken, match="closed mid-stream"):
        for _ in ws_pieces:
            pass
    over_ws.close()


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_server_sent_events_cross_two_hops_each_as_it_is_yielded(line, transport):
    a, _, c = line
    base = a.url if transport == "http" else ws(a).replace("/_xio/ws", "")
    client = xio.client(base, timeout=20)
    received = []
    for event in client.events("/stream/events", query={"n": "4", "every": "0.3"}):
        received.append((time.time(), event))
    if transport == "ws":
        client.close()
    assert [event.event for _, event in received] == ["tick", "message", "tick", "message"]
    # An event's id is the last one the stream set, as a browser's EventSource keeps it.
    assert [event.id for _, event in received] == ["0", "0", "2", "2"]
    stamps = [event.json()["at"] for _, event in received]
    assert [event.json()["index"] for _, event in received] == [0, 1, 2, 3]
    # Each event was in the client's hands before the app yielded the next one.
    assert all(got < later for (got, _), later in zip(received, stamps[1:], strict=False))
    assert stats(c)["finished"] == 1


def test_an_events_request_to_an_unknown_app_raises_its_error(line):
    a, _, _ = line
    with pytest.raises(xio.NotFound, match="no app 'nowhere'"):
        list(xio.client(a.url, timeout=10).events("/nowhere/live"))


@pytest.mark.skipif(not shutil.which("node"), reason="scripts/check installs nodejs")
def test_the_javascript_client_iterates_server_sent_events_over_both_transports(line):
    a, _, _ = line
    script = f"""
import {{ client }} from {json.dumps((ROOT / "clients/js/xio.js").as_uri())};
const seen = {{}};
for (const base of [{json.dumps(a.url)}, {json.dumps(ws(a).replace("/_xio/ws", ""))}]) {{
  const c = client(base, {{ timeout: 20 }});
  const events = [];
  for await (const e of c.events('/stream/events', {{ query: {{ n: '3', every: '0.2' }} }})) {{
    events.push([e.event, e.id, e.json().index, Date.now() / 1000, e.json().at]);
  }}
  let missing;
  try {{ for await (const e of c.events('/nowhere/live')) {{}} }} catch (error) {{
    missing = [error.name, error.status];
  }}
  c.close();
  seen[base.slice(0, 2)] = {{ events, missing }};
}}
process.stdout.write(JSON.stringify(seen));
"""
    done = subprocess.run([*node_command(), "--input-type=module", "-e", script],
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for transport in json.loads(done.stdout).values():
        events = transport["events"]
        assert [event[:3] for event in events] == [["tick", "0", 0], ["message", "0", 1],
                                                   ["tick", "2", 2]]  # fmt: skip
        assert events[0][3] < events[2][4]  # the first was in hand before the last was made
        assert transport["missing"] == ["ResponseError", 404]
