"""The WebSocket transport over real loopback sockets, on the gevent hub of the test process."""

from __future__ import annotations

import ast
import os
import random
import socket
import ssl
import struct
from base64 import b64encode
from contextlib import suppress
from hashlib import sha1
from pathlib import Path

import gevent
import gevent.socket
import gevent.ssl
import pytest
from gevent.event import Event
from gevent.queue import Queue
from gevent.server import StreamServer

from xio.errors import ConnectError, ConnectionClosed, QueueFull
from xio.peering.dial import connect
from xio.peering.transport import CLOSE_TIMEOUT, Transport, WebSocketEndpoint
from xio.server import Server

from .certs import self_signed
from .ws_wire import raw_frame

ROOT = Path(__file__).resolve().parent.parent
MAX = 2 * 1024 * 1024
MiB = 1024 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KNOWN_REASONS = {
    "peer_closed",
    "connection_lost",
    "protocol_error",
    "text_frame",
    "frame_too_large",
}


@pytest.fixture(autouse=True)
def time_limit():
    """Fail a test that waits on the hub for more than 20 seconds."""
    timer = gevent.Timeout(20, AssertionError("test took more than 20 s"))
    timer.start()
    yield
    timer.close()


@pytest.fixture(autouse=True)
def hub_errors(monkeypatch):
    """Fail a test in which an exception escaped into the hub from any greenlet."""
    errors = []
    hub = gevent.get_hub()

    def handle_error(context, kind, value, tb):
        if not issubclass(kind, hub.NOT_ERROR):  # the resolver's gaierror is "not an error"
            errors.append(value)

    monkeypatch.setattr(hub, "handle_error", handle_error)
    yield errors
    assert errors == []


class End:
    """One end of a transport: what it received and how it closed."""

    def __init__(self, transport: Transport, echo: bool = False) -> None:
        self.transport = transport
        self.echo = echo
        self.messages: Queue = Queue()
        self.reasons: list[str] = []
        self.closed = Event()
        transport.on_message = self._message
        transport.on_close = self._close

    def _message(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        if self.echo:
            self.transport.send(data)
        self.messages.put(data)

    def _close(self, reason: str) -> None:
        self.reasons.append(reason)
        self.closed.set()

    def receive(self, count: int) -> list[bytes]:
        return [self.messages.get(timeout=10) for _ in range(count)]

    def wait_closed(self) -> str:
        assert self.closed.wait(10), "on_close was not called"
        # Once its reader and writer have ended, nothing could call on_close a second time.
        assert self.transport.wait_ended(10), "the connection's greenlets did not end"
        assert len(self.reasons) == 1, self.reasons
        return self.reasons[0]


def not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Length", "9")])
    return [b"not found"]


class Served:
    def __init__(self, echo: bool = False, max_message: int = MAX, **tls) -> None:
        self.ends: Queue = Queue()
        self.echo = echo
        self.max_message = max_message
        self.endpoint = WebSocketEndpoint(self._accept, max_message=max_message)
        self.server = Server(not_found, "127.0.0.1", 0, websocket_app=self.endpoint, **tls)
        self.server.start()
        self.url = self.server.url.replace("http", "ws", 1) + "/_xio/ws"

    def _accept(self, transport: Transport) -> None:
        assert not transport.initiator
        self.ends.put(End(transport, self.echo))

    def accepted(self) -> End:
        return self.ends.get(timeout=10)

    def dial(self, **options) -> tuple[End, End]:
        client = End(connect(self.url, max_message=self.max_message, **options))
        client.transport.start()
        return client, self.accepted()

    def check_still_serving(self) -> None:
        client, server = self.dial()
        client.transport.send(b"still there?")
        assert server.receive(1) == [b"still there?"]
        client.transport.close()


@pytest.fixture
def served():
    served = Served()
    yield served
    served.server.stop(timeout=0.5)


# -- raw WebSocket pieces, to play a peer that misbehaves --------------------------------


def frame(opcode: int, payload: bytes, *, fin=True, mask=True, length=None) -> bytes:
    """Build one frame; ``length`` overrides the length written in the header."""
    key = os.urandom(4) if mask else None
    return raw_frame(opcode, payload, fin=fin, key=key, length=length)


def read_frame(stream) -> tuple[int, bytes]:
    """Read one unmasked frame from a file made by ``makefile('rb')``."""
    first, second = stream.read(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", stream.read(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", stream.read(8))
    return first & 0x0F, stream.read(size)


def read_client_frame(stream) -> tuple[int, bytes]:
    """Read one masked frame (at most 125 bytes) from a dialling side; return it unmasked."""
    first, second = stream.read(2)
    assert second & 0x80, "a client's frame must be masked"
    key, masked = stream.read(4), stream.read(second & 0x7F)
    return first, bytes(b ^ key[i % 4] for i, b in enumerate(masked))


def read_close_code(sock) -> int | None:
    """Read frames until a close frame and return its code (None if the socket ends)."""
    stream = sock.makefile("rb")
    try:
        while True:
            opcode, payload = read_frame(stream)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]
    except (ValueError, OSError):
        return None


def raw_upgrade(served: Served, key: bytes | None = None):
    """Open a WebSocket by hand and return the socket, just after the 101 answer."""
    sock = gevent.socket.create_connection(served.server.address)
    key = key or b64encode(os.urandom(16))
    sock.sendall(
        b"GET /_xio/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    return sock, head


def fake_server(handle) -> StreamServer:
    """Serve ``handle(sock, request_head)`` on a free port, to play a bad WebSocket server."""

    def serve(sock, _address):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        handle(sock, head)

    server = StreamServer(("127.0.0.1", 0), serve)
    server.start()
    return server


def accept_answer(request_head: bytes) -> bytes:
    """Return a valid 101 answer to ``request_head``."""
    for line in request_head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            accept = b64encode(sha1(value.strip() + WS_GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def eventually(predicate, timeout: float = 5.0):
    """Wait, letting other greenlets run, until ``predicate()`` is true; fail if it never is."""
    deadline = gevent.get_hub().loop.now() + timeout
    while not predicate():
        if gevent.get_hub().loop.now() > deadline:
            pytest.fail(f"still not true after {timeout} s")
        gevent.sleep(0.01)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- messages --------------------------------------------------------------------------


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000, 200]


def test_messages_arrive_whole_and_in_order_both_ways(served):
    client, server = served.dial()
    assert client.transport.initiator and not server.transport.initiator
    sent = [bytes([i % 256]) * SIZES[i % len(SIZES)] + i.to_bytes(4, "big") for i in range(600)]
    sent += [b"", b"\x00" * 3, b""]
    for data in sent:
        client.transport.send(data)
        server.transport.send(data[::-1])
    assert server.receive(len(sent)) == sent
    assert client.receive(len(sent)) == [data[::-1] for data in sent]
    assert client.transport.peer == "{}:{}".format(*served.server.address)
    assert server.transport.peer.startswith("127.0.0.1:")


def test_concurrent_large_sends_never_interleave(served):
    client, server = served.dial()
    count = 20

    def message(sender: int, i: int) -> bytes:
        return bytes([sender, i]) + bytes([(sender * 20 + i) % 251]) * MiB

    def send_from(end: End, sender: int):
        return [gevent.spawn(end.transport.send, message(sender, i)) for i in range(count)]

    greenlets = send_from(client, 1) + send_from(server, 2)
    gevent.joinall(greenlets, raise_error=True)
    for end, sender in ((server, 1), (client, 2)):
        received = end.receive(count)
        assert sorted(received) == sorted(message(sender, i) for i in range(count))


def test_a_message_sent_from_on_transport_arrives_first(served):
    served.endpoint.on_transport = lambda transport: transport.send(b"hello")
    client = End(connect(served.url, max_message=MAX))
    client.transport.start()
    assert client.receive(1) == [b"hello"]


def test_frames_right_behind_the_101_answer_are_delivered():
    heads = []

    def handle(sock, head):  # answer and first message in one write
        heads.append(head)
        sock.sendall(accept_answer(head) + frame(0x2, b"first", mask=False))
        sock.recv(1)

    fake = fake_server(handle)
    url = f"ws://127.0.0.1:{fake.server_port}/path?q=1"
    client = End(connect(url, max_message=MAX, headers={"X-Xio": "yes"}))
    client.transport.start()
    assert client.receive(1) == [b"first"]
    assert heads[0].startswith(b"GET /path?q=1 HTTP/1.1\r\n")
    assert b"\r\nX-Xio: yes" in heads[0]
    client.transport.close()
    fake.stop()


def test_fragmented_message_under_the_cap_is_reassembled(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    sock.sendall(
        frame(0x2, b"ab", fin=False) + frame(0x9, b"ping?") + frame(0x0, b"cd", fin=False)
        + frame(0x0, b"ef")
    )  # fmt: skip
    assert server.receive(1) == [b"abcdef"]
    opcode, payload = read_frame(sock.makefile("rb"))
    assert (opcode, payload) == (0xA, b"ping?")  # the ping was answered
    sock.close()


# -- framing: how frames are cut and joined --------------------------------------------


def test_many_fragments_with_pings_between_them_make_one_message(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    parts = [b"", b"a" * 125, b"b" * 126, b"", b"c" * 65000, b"d"]
    frames = frame(0x2, parts[0], fin=False)
    for index, part in enumerate(parts[1:], 1):
        frames += frame(0x9, b"ping %d" % index)  # control frames may come between fragments
        frames += frame(0x0, part, fin=index == len(parts) - 1)
    sock.sendall(frames + frame(0x2, b"next"))
    assert server.receive(2) == [b"".join(parts), b"next"]
    # Pings are answered, the newest one always (RFC 6455 5.5.3 lets older ones go unanswered,
    # so that a peer pinging without reading cannot pile up pongs).
    stream = sock.makefile("rb")
    pongs = [read_frame(stream)]
    while pongs[-1][1] != b"ping %d" % (len(parts) - 1):
        pongs.append(read_frame(stream))
    pings = [(0xA, b"ping %d" % index) for index in range(1, len(parts))]
    assert pongs == sorted(pongs) and set(pongs) <= set(pings)
    sock.close()


def test_fragmented_message_to_the_dialling_side_is_reassembled():
    def handle(sock, head):
        sock.sendall(
            accept_answer(head) + frame(0x2, b"he", fin=False, mask=False)
            + frame(0x9, b"?", mask=False) + frame(0x0, b"llo", mask=False)
        )  # fmt: skip
        pongs.append(read_client_frame(sock.makefile("rb")))
        sock.recv(1)

    pongs = []
    fake = fake_server(handle)
    client = End(connect(f"ws://127.0.0.1:{fake.server_port}/", max_message=MAX))
    client.transport.start()
    assert client.receive(1) == [b"hello"]
    eventually(lambda: pongs)
    assert pongs == [(0x8A, b"?")]  # a final pong, masked as a client's frames are
    client.transport.close()
    fake.stop()


def test_many_frames_in_one_segment_all_arrive_in_order(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    sent = [b"%d" % i * (i % 7) for i in range(300)]
    sock.sendall(b"".join(frame(0x2, data) for data in sent))  # one write, few segments
    assert server.receive(len(sent)) == sent
    sock.close()


def test_frames_sent_byte_by_byte_arrive_whole(served):
    sock, _ = raw_upgrade(served)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one segment per byte
    server = served.accepted()
    sent = [b"x" * 5, b"y" * 300, b"z" * 70000]
    data = b"".join(frame(0x2, payload) for payload in sent)
    # Every header byte (the three headers end before byte 333) in a segment of its own.
    cuts = [*range(400), *range(400, len(data), 997), len(data)]
    for start, end in zip(cuts, cuts[1:], strict=False):
        sock.sendall(data[start:end])
        gevent.sleep(0.0002)
    assert server.receive(len(sent)) == sent
    sock.close()


@pytest.mark.parametrize("size", [0, 125, 126, 127, 65535, 65536, 65537])
def test_length_encodings_at_their_boundaries(served, size):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    payload = os.urandom(size)
    sock.sendall(frame(0x2, payload))  # the test's own encoder, not the transport's
    assert server.receive(1) == [payload]
    server.transport.send(payload)
    stream = sock.makefile("rb")
    first, second = stream.read(2)
    assert (first, second & 0x80) == (0x82, 0)  # final binary frame, unmasked from a server
    length = {0: 0, 125: 125, 126: 126, 127: 126, 65535: 126}.get(size, 127)
    assert second & 0x7F == length
    if length == 126:
        assert struct.unpack("!H", stream.read(2)) == (size,)
    elif length == 127:
        assert struct.unpack("!Q", stream.read(8)) == (size,)
    assert stream.read(size) == payload
    sock.close()


@pytest.mark.parametrize("size", [64 * 1024, 16 * MiB])
def test_large_messages_both_ways(size):
    served = Served(max_message=16 * MiB)
    try:
        client, server = served.dial()
        payload = os.urandom(size)
        client.transport.send(payload)
        assert server.receive(1) == [payload]
        server.transport.send(payload[::-1])
        assert client.receive(1) == [payload[::-1]]
        client.transport.close()
        assert server.wait_closed() == "peer_closed"
    finally:
        served.server.stop(timeout=0.5)


def test_client_frames_are_masked_with_fresh_keys():
    frames = []

    def handle(sock, head):
        sock.sendall(accept_answer(head))
        stream = sock.makefile("rb")
        for _ in range(3):
            first, second = stream.read(2)
            key = stream.read(4)
            frames.append((first, second, key, stream.read(second & 0x7F)))

    fake = fake_server(handle)
    client = End(connect(f"ws://127.0.0.1:{fake.server_port}/", max_message=MAX))
    client.transport.start()
    for _ in range(3):
        client.transport.send(b"same")
    eventually(lambda: len(frames) >= 3)
    client.transport.close()
    fake.stop()
    assert [(first, second) for first, second, _, _ in frames] == [(0x82, 0x84)] * 3
    assert len({key for _, _, key, _ in frames}) == 3
    for _, _, key, masked in frames:
        assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == b"same"


# -- closing ---------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["client", "server"])
def test_close_from_either_side_tells_both_ends_once(served, closer):
    client, server = served.dial()
    client.transport.send(b"before")
    assert server.receive(1) == [b"before"]
    local, remote = (client, server) if closer == "client" else (server, client)
    local.transport.close("bye_now")
    local.transport.close("again")  # idempotent
    assert local.wait_closed() == "bye_now"
    assert remote.wait_closed() == "peer_closed"
    for end in (local, remote):
        assert end.transport.closed
        with pytest.raises(ConnectionClosed):
            end.transport.send(b"after")


def test_close_without_reason_says_local_close(served):
    client, server = served.dial()
    client.transport.close()
    assert client.wait_closed() == "local_close"
    assert server.wait_closed() == "peer_closed"


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_peer_socket_dropped_fires_on_close(served, how):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert server.wait_closed() == "connection_lost"
    served.check_still_serving()


def test_server_dropped_fires_on_close_on_the_dialling_side():
    def handle(sock, head):
        sock.sendall(accept_answer(head))
        sock.close()

    fake = fake_server(handle)
    client = End(connect(f"ws://127.0.0.1:{fake.server_port}/x", max_message=MAX))
    client.transport.start()
    assert client.wait_closed() == "connection_lost"
    fake.stop()


def stop_reading(end: End) -> None:
    """Make ``end`` read nothing more: its reader sleeps in its first message."""
    end.transport.on_message = lambda data: gevent.sleep(30)


def test_sends_never_block_and_a_peer_that_does_not_read_fills_only_the_queue(served):
    client, server = served.dial()
    stop_reading(server)
    client.transport.max_queue = 8 * MiB
    client.transport.send(b"x")  # the reader's first message: from now on it reads nothing
    sent = 0
    with pytest.raises(QueueFull):
        for _ in range(1000):  # far more than socket buffers and the queue can take
            client.transport.send(b"x" * MiB)
            sent += 1
            gevent.sleep(0.002)  # let the writer push what the socket takes
    assert 8 <= sent < 1000
    assert client.transport.writing  # the writer waits on the socket; nobody else does
    stalled = client.transport.bytes_sent
    gevent.sleep(0.2)
    assert client.transport.bytes_sent == stalled
    client.transport.close("give_up")
    server.transport.close()


def test_close_while_the_writer_is_stuck_returns_at_once(served):
    client, server = served.dial()
    stop_reading(server)
    client.transport.send(b"x")
    with suppress(QueueFull):
        for _ in range(200):
            client.transport.send(b"x" * MiB)
            gevent.sleep(0.002)
    assert client.transport.writing
    client.transport.close("give_up")  # does not wait for the stuck writer
    assert client.wait_closed() == "give_up"
    with pytest.raises(ConnectionClosed):
        client.transport.send(b"after")
    # The socket itself is closed within CLOSE_TIMEOUT, unblocking the writer.
    eventually(lambda: client.transport._connection.sock is None, timeout=CLOSE_TIMEOUT + 2)
    server.transport.close()


# -- limits and misbehaving peers ------------------------------------------------------


def test_message_over_the_cap_closes_with_1009_and_server_goes_on(served):
    client, server = served.dial()
    client.transport.send(b"x" * MAX)  # exactly the cap is fine
    assert len(server.receive(1)[0]) == MAX
    client.transport.send(b"x" * (MAX + 1))
    assert server.wait_closed() == "frame_too_large"
    assert client.wait_closed() == "peer_closed"
    served.check_still_serving()


def test_oversized_header_is_refused_before_any_payload_arrives(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    sock.sendall(frame(0x2, b"", length=1 << 40)[:14])  # header and mask key, no payload
    assert server.wait_closed() == "frame_too_large"
    assert read_close_code(sock) == 1009
    sock.close()


def test_fragments_adding_up_over_the_cap_close_as_too_large(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    half = b"y" * (MAX // 2 + 1)
    sock.sendall(frame(0x2, half, fin=False) + frame(0x0, half, fin=False))
    assert server.wait_closed() == "frame_too_large"
    assert read_close_code(sock) == 1009
    served.check_still_serving()


def test_a_fragmented_message_over_64_kib_closes_as_too_large(served):
    # Fragments of at most 64 KiB are never shown to ``admit``: together they must not make
    # a large message that no budget agreed to, however large the transport's cap is.
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    part = b"f" * 40_000
    sock.sendall(frame(0x2, part, fin=False) + frame(0x0, part))
    assert server.wait_closed() == "frame_too_large"
    assert read_close_code(sock) == 1009
    served.check_still_serving()


def test_max_message_can_be_lowered_on_a_live_transport(served):
    client, server = served.dial()
    server.transport.max_message = 200
    client.transport.send(b"z" * 200)
    assert server.receive(1) == [b"z" * 200]
    client.transport.send(b"z" * 201)
    assert server.wait_closed() == "frame_too_large"


@pytest.mark.parametrize("fin", [True, False])
def test_text_frame_is_refused(served, fin):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    sock.sendall(frame(0x1, b"hello", fin=fin))
    assert server.wait_closed() == "text_frame"
    assert read_close_code(sock) == 1003
    sock.close()


def test_text_frame_to_the_dialling_side_is_refused():
    def handle(sock, head):
        sock.sendall(accept_answer(head) + frame(0x1, b"text", mask=False))
        sock.recv(1024)

    fake = fake_server(handle)
    client = End(connect(f"ws://127.0.0.1:{fake.server_port}/", max_message=MAX))
    client.transport.start()
    assert client.wait_closed() == "text_frame"
    fake.stop()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 64,  # reserved bits and opcode
        frame(0x2, b"unmasked", mask=False),  # a client must mask
        frame(0x3, b"reserved opcode"),
        frame(0x0, b"continuation of nothing"),
        frame(0x9, b"p" * 126),  # control frame over 125 bytes
        frame(0x9, b"fragmented ping", fin=False),
        frame(0x2, b"fragment", fin=False) + frame(0x2, b"new message inside it"),
        bytes([0xC2]) + frame(0x2, b"rsv1")[1:],  # compressed, never negotiated
        frame(0x8, b"\x03"),  # a close frame's payload is empty or at least a code
    ],
    # The masks are random: ids of their own keep the tests' names the same in every run.
    ids=(
        "reserved-bits unmasked reserved-opcode lone-continuation long-control "
        "fragmented-control interleaved-data rsv1 one-byte-close"
    ).split(),
)
def test_invalid_frames_close_with_protocol_error(served, garbage):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    sock.sendall(garbage)
    assert server.wait_closed() == "protocol_error"
    assert read_close_code(sock) == 1002
    sock.close()
    served.check_still_serving()


def test_masked_frame_to_the_dialling_side_is_a_protocol_error():
    def handle(sock, head):
        sock.sendall(accept_answer(head) + frame(0x2, b"masked", mask=True))
        first, payload = read_client_frame(sock.makefile("rb"))
        codes.append((first, struct.unpack("!H", payload[:2])[0]))

    codes = []
    fake = fake_server(handle)
    client = End(connect(f"ws://127.0.0.1:{fake.server_port}/", max_message=MAX))
    client.transport.start()
    assert client.wait_closed() == "protocol_error"
    eventually(lambda: codes)
    assert codes == [(0x88, 1002)]
    fake.stop()


def test_random_garbage_after_the_upgrade_only_ever_closes(served):
    rng = random.Random(6455)
    for _ in range(40):
        sock, _ = raw_upgrade(served)
        server = served.accepted()
        garbage = rng.randbytes(rng.randrange(1, 300))
        sock.sendall(garbage)

        # the server has taken it all, or refused it on its first bad bytes
        def read_or_closed(end=server, size=len(garbage)):  # noqa: B008
            return end.closed.is_set() or end.transport.bytes_received >= size

        eventually(read_or_closed)
        sock.close()
        assert server.wait_closed() in KNOWN_REASONS
    served.check_still_serving()


def test_bad_upgrade_request_gets_400_and_server_goes_on(served):
    sock = gevent.socket.create_connection(served.server.address)
    sock.sendall(
        b"GET /_xio/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert sock.recv(100).startswith(b"HTTP/1.1 400")
    sock.close()
    served.check_still_serving()


def test_endpoint_answers_426_to_a_request_that_is_no_upgrade(served):
    answers = []
    body = served.endpoint(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/_xio/ws"},
        lambda status, headers: answers.append((status, dict(headers))),
    )
    assert answers[0][0] == "426 Upgrade Required"
    assert answers[0][1]["Upgrade"] == "websocket"
    assert b"WebSocket" in b"".join(body)


# -- dialling failures -----------------------------------------------------------------


def test_connect_to_a_closed_port_raises_connect_error():
    url = f"ws://127.0.0.1:{free_port()}/_xio/ws"
    with pytest.raises(ConnectError, match=url) as caught:
        connect(url, max_message=MAX)
    assert isinstance(caught.value.__cause__, OSError)


def test_connect_to_a_plain_http_path_raises_connect_error(served):
    url = served.url.replace("/_xio/ws", "/not-a-websocket")
    with pytest.raises(ConnectError, match="404"):
        connect(url, max_message=MAX)
    served.check_still_serving()


def test_connect_times_out_on_a_silent_server():
    fake = fake_server(lambda sock, head: gevent.sleep(10))
    url = f"ws://127.0.0.1:{fake.server_port}/"
    with pytest.raises(ConnectError, match="within 0.3s"):
        connect(url, timeout=0.3, max_message=MAX)
    fake.stop(timeout=0)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"garbage\r\n\r\n",
        b"",
    ],
)
def test_bad_upgrade_answer_raises_connect_error(answer):
    fake = fake_server(lambda sock, head: sock.sendall(answer))
    with pytest.raises(ConnectError):
        connect(f"ws://127.0.0.1:{fake.server_port}/", max_message=MAX)
    fake.stop(timeout=0)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:1/", "ws:///nohost", "ws://127.0.0.1:99999/"],
)
def test_malformed_url_raises_connect_error(url):
    with pytest.raises(ConnectError):
        connect(url, timeout=3, max_message=MAX)


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path):
    return tuple(str(path) for path in self_signed(tmp_path))


def test_wss_carries_messages_and_verifies_the_server(tls_files, hub_errors):
    certfile, keyfile = tls_files
    served = Served(echo=True, certfile=certfile, keyfile=keyfile)
    assert served.url.startswith("wss://")
    try:
        with pytest.raises(ConnectError, match="verify failed: self-signed certificate"):
            connect(served.url, max_message=MAX)  # self-signed: not trusted by default
        gevent.sleep(0.1)
        context = ssl.create_default_context(cafile=certfile)
        client, server = served.dial(ssl_context=context)
        sent = [os.urandom(n) for n in (0, 200, 70000, MiB)] * 3
        for data in sent:
            client.transport.send(data)
        assert client.receive(len(sent)) == sent
        client.transport.close()
        assert server.wait_closed() == "peer_closed"
    finally:
        served.server.stop(timeout=0.5)


# -- the adapter boundary --------------------------------------------------------------


def test_no_module_but_the_transport_imports_ws4py():
    importers = []
    for path in sorted((ROOT / "xio").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name == "ws4py" or name.startswith("ws4py.") for name in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert set(importers) == {"xio/peering/transport.py"}


def test_no_module_but_the_transport_speaks_ws4py_environ_protocol():
    # The HTTP server hands upgrades over through a generic hook; "ws4py.socket" and
    # "ws4py.websocket" in its code would mean the library is not fenced in one module.
    speakers = []
    for path in sorted((ROOT / "xio").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith("ws4py."):
                    speakers.append(path.relative_to(ROOT).as_posix())
    assert set(speakers) == {"xio/peering/transport.py"}


def test_the_server_hands_an_upgraded_socket_to_any_hook():
    class EchoOnce:
        """An upgrade hook that is not a WebSocket: answer 101, then echo one line."""

        path = "/echo"

        def accept(self, environ, start_response, sock):
            start_response("101 Switching Protocols", [("Upgrade", "websocket")])
            return [], lambda: sock.sendall(sock.recv(100).upper())

    server = Server(not_found, "127.0.0.1", 0, websocket_app=EchoOnce())
    server.start()
    try:
        sock = gevent.socket.create_connection(server.address)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"HTTP/1.1 101")
        while stream.readline() != b"\r\n":
            pass
        sock.sendall(b"hello\n")
        assert stream.readline() == b"HELLO\n"
        sock.close()
    finally:
        server.stop(timeout=0.5)


# -- large messages: admitted before they are buffered ---------------------------------


def test_a_large_message_is_shown_to_admit_before_its_payload_has_arrived(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    asked = []
    server.transport.admit = lambda size, prefix: asked.append((size, prefix)) or True
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = frame(0x2, payload)
    sock.sendall(data[: 14 + 64])  # the header, the mask key and 64 payload bytes
    eventually(lambda: asked)
    assert asked == [(len(payload), payload[:64])]
    assert server.messages.empty()
    sock.sendall(data[14 + 64 :])
    assert server.receive(1) == [payload]
    sock.close()


def test_a_message_not_admitted_is_read_past_and_the_next_one_arrives(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    discarded = []
    server.transport.admit = lambda size, prefix: size < 100_000
    server.transport.on_discarded = lambda: discarded.append(True)
    sock.sendall(frame(0x2, b"a" * 200_000) + frame(0x2, b"small") + frame(0x2, b"b" * 70_000))
    assert server.receive(2) == [b"small", b"b" * 70_000]
    assert discarded == [True]
    sock.close()


def test_admit_may_close_the_transport_instead(served):
    sock, _ = raw_upgrade(served)
    server = served.accepted()
    server.transport.admit = lambda size, prefix: server.transport.close("no_thanks")
    sock.sendall(frame(0x2, b"a" * 200_000))
    assert server.wait_closed() == "no_thanks"
    assert read_close_code(sock) == 1000
    served.check_still_serving()
