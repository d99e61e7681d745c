"""Streamed request bodies across the mesh with real xio-node processes (docs/PROTOCOL.md 4.2).

The line A - B - C of tests/test_streams.py, the streaming app on C: every body enters at A
and crosses two links to the app, which reads it as it comes (``req.stream``) or whole
(``req.body``). Bodies are sent with http.client, from a generator, so the test holds none.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import xio

from .test_streams import forwarding, line, stats  # noqa: F401 - line is a fixture

MiB = 1024 * 1024


def pattern(size: int, piece: int = MiB):
    """Yield ``size`` bytes in pieces, each piece's bytes its index mod 251 (a moved, lost or
    doubled piece changes the hash)."""
    for index, start in enumerate(range(0, size, piece)):
        yield bytes([index % 251]) * min(piece, size - start)


def pattern_hash(size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(size):
        digest.update(piece)
    return digest.hexdigest()


def post(node, path: str, size: int, chunked: bool = False, timeout: float = 60.0):
    """POST ``size`` bytes of ``pattern`` to ``path``; return (status, decoded JSON or text)."""
    parts = urlsplit(node.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/octet-stream"}
    if not chunked:
        headers["Content-Length"] = str(size)
    try:
        connection.request("POST", path, body=pattern(size), headers=headers,
                           encode_chunked=chunked)  # fmt: skip
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(body) if "json" in kind else body.decode()


def rss_mib(process) -> float:
    for line_ in open(f"/proc/{process.proc.pid}/status"):
        if line_.startswith("VmRSS:"):
            return int(line_.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_body_larger_than_any_frame_reaches_the_app_two_hops_away_intact(line):  # noqa: F811
    a, _, _ = line
    size = 40 * MiB  # over the 16 MiB a frame (and a whole body) may hold
    status, answer = post(a, "/stream/sink", size)
    assert status == 200, answer
    assert (answer["size"], answer["sha256"]) == (size, pattern_hash(size))
    assert answer["largest"] <= 64 * 1024  # it came in pieces, never whole
    assert forwarding(a)["bodies_out"] == 1


def test_a_chunked_body_is_streamed_too(line):  # noqa: F811
    a, _, _ = line
    size = 5 * MiB + 123
    status, answer = post(a, "/stream/sink", size, chunked=True)
    assert status == 200, answer
    assert (answer["size"], answer["sha256"]) == (size, pattern_hash(size))


def test_an_app_reading_the_body_whole_gets_it_within_its_nodes_max_body(line):  # noqa: F811
    a, _, _ = line
    status, answer = post(a, "/stream/whole", 3 * MiB)
    assert (status, answer["size"], answer["sha256"]) == (200, 3 * MiB, pattern_hash(3 * MiB))
    status, answer = post(a, "/stream/whole", 17 * MiB)  # C's --max-body is 16 MiB
    assert status == 413 and "limit" in answer["description"]


def test_an_app_that_does_not_read_the_body_answers_and_the_body_is_not_sent(line):  # noqa: F811
    a, _, c = line
    sunk_before = stats(c)["sunk"]
    # 6 MiB: over what is read before the handler (1 MiB), within what the node reads and
    # drops after answering (8 MiB), so a client that sends it all before it reads, as
    # http.client does, still gets the answer; past that it would be reset.
    status, answer = post(a, "/stream/ignore", 6 * MiB)
    assert (status, answer) == (201, "not read")
    assert stats(c)["sunk"] == sunk_before
    assert forwarding(a)["bodies_out"] == 1  # it was asked for, and none of it came
    assert xio.client(a.url, timeout=5).get("/stream/stats").status == 200


def test_a_slow_reader_two_hops_away_holds_back_the_sender_and_memory_stays_flat(line):  # noqa: F811
    a, b, c = line
    before = {node.name: rss_mib(node) for node in line}
    peak = dict(before)
    size = 96 * MiB
    result = {}

    def send():
        result["answer"] = post(a, "/stream/sink?pause=0.002", size, timeout=120)

    sender = threading.Thread(target=send)
    sender.start()
    stop_at = time.monotonic() + 120
    while sender.is_alive() and time.monotonic() < stop_at:
        for node in line:
            peak[node.name] = max(peak[node.name], rss_mib(node))
        time.sleep(0.1)
    sender.join(5)
    status, answer = result["answer"]
    assert status == 200 and (answer["size"], answer["sha256"]) == (size, pattern_hash(size))
    growth = {name: peak[name] - before[name] for name in peak}
    # A window (256 KiB) per hop and the link queues, never the body: far below 96 MiB.
    assert all(grown < 48 for grown in growth.values()), growth


def dechunk(raw: bytes) -> bytes:
    """Return the body of a chunked HTTP/1.1 message body ``raw``."""
    out, at = bytearray(), 0
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


def test_an_app_answers_as_it_reads_a_body_larger_than_both_windows(line):  # noqa: F811
    # The answer streams back while the body streams in: the node sends the body from a
    # greenlet of its own, so neither direction waits for the other's end. The client must
    # read as it sends (one that sends all first, like http.client, would stall once both
    # windows are full, as with any server that answers as it reads).
    import socket

    a, _, _ = line
    pieces, piece = 16, b"abc" * 100_000  # 4.8 MB, far over the two 256 KiB windows
    parts = urlsplit(a.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (f"POST /stream/upper HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Length: {pieces * len(piece)}\r\n\r\n")  # fmt: skip
        sender = threading.Thread(target=lambda: sock.sendall(head.encode() + piece * pieces))
        sender.start()
        raw = bytearray()
        while chunk := sock.recv(1 << 20):
            raw += chunk
        sender.join(10)
    header, _, body = bytes(raw).partition(b"\r\n\r\n")
    assert header.startswith(b"HTTP/1.1 200")
    assert dechunk(body) == piece.upper() * pieces


def test_a_client_that_stops_mid_body_cancels_the_app_and_the_node_goes_on(line):  # noqa: F811
    import socket

    a, _, c = line
    cancelled = forwarding(c).get("cancelled", 0)
    parts = urlsplit(a.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST /stream/sink HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n")
        sock.sendall(b"x" * 3_000_000)  # then it goes away, 5 MB short
    # A's read of the body ends short: it ends the body with an error and cancels the
    # request, so the app two hops away stops (as when a client of a download goes away).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and forwarding(c).get("cancelled", 0) == cancelled:
        time.sleep(0.1)
    assert forwarding(c)["cancelled"] == cancelled + 1
    assert 0 < stats(c)["sunk"] < 8_000_000
    status, answer = post(a, "/stream/sink", 2 * MiB)  # the mesh serves the next one
    assert status == 200 and answer["sha256"] == pattern_hash(2 * MiB)
