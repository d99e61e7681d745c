"""Links are encrypted (protocol version 2, docs/PROTOCOL.md 6.1): what crosses a link is sealed.

The pure session as in-memory pairs (``Pair`` of test_link_session, whose eavesdropper holds
both ephemeral keys), then real ``xio-node`` processes: a recording TCP proxy on a link sees
none of a request's bytes, a flipped bit closes that link alone, a replayed handshake is
refused. Hostile peers are tests/hostile.py, written from the document alone.
"""

from __future__ import annotations

import os
import socket
import threading

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

import xio
from xio.budget import Budget
from xio.peering import codec
from xio.peering.cipher import REKEY_MESSAGES, ReceiveCipher
from xio.peering.codec import Auth, Bye, Ping, RecordFrame, ResponseFrame
from xio.peering.session import Closed, Established, LinkState, MessageArrived, Rejected

from .conftest import ROOT, wait_until
from .fuzzing import fuzz
from .hostile import Direction, HostilePeer, Key, _parse_frame, encode
from .test_link_session import Pair, of, request

INVENTORY = str(ROOT / "tests/apps/inventory")


def is_msgpack_map(data: bytes) -> bool:
    try:
        return isinstance(msgpack.unpackb(data), dict)
    except Exception:
        return False


# -- the pure session ------------------------------------------------------------------------


@pytest.fixture
def pair():
    return Pair().start()


def test_hello_and_auth_go_in_the_clear_and_everything_after_is_sealed():
    pair = Pair()
    pair.a.start(pair.now)
    pair.b.start(pair.now)
    pair.pump()
    pair.a.send(RecordFrame(b"r" * 100, b"s" * 64))
    request_id = pair.a.open_request("t", pair.now + 30)
    pair.a.send(request(request_id, body=b"secret body"))
    pair.tick("a", 0.5, bytes_in=1)  # a ping
    wire = pair.pull("a")
    assert len(wire) == 3 and not any(is_msgpack_map(message) for message in wire)
    assert not any(b"secret body" in message for message in wire)
    opened = pair.sent("a")
    kinds = [msgpack.unpackb(frame)["t"] for frame in opened]
    assert kinds == ["hello", "auth", "ping", "req", "record"]  # urgent first, all in order
    assert b"secret body" in opened[3]  # the eavesdropper with the keys does read it
    assert [len(m) for m in wire] == [len(frame) + 16 for frame in opened[2:]]


def test_our_auth_leaves_before_a_ping_queued_behind_it():
    # The peer's hello and auth arrive before our writer took our auth; then a ping is queued.
    # Urgent frames overtake queued ones, but never our auth: the ping is sealed after it.
    pair = Pair()
    pair.a.start(pair.now)
    pair.b.start(pair.now)
    [hello_a], [hello_b] = pair.pull("a"), pair.pull("b")
    pair.b.receive(hello_a, pair.now)
    [auth_b] = pair.pull("b")
    pair.a.receive(hello_b, pair.now)  # a's auth waits
    assert of(Established, pair.a.receive(auth_b, pair.now))
    pair.tick("a", 0.5, bytes_in=1)
    pair.sent("a")
    wire = pair.pull("a")
    assert [msgpack.unpackb(frame)["t"] for frame in pair.sent("a")] == ["auth", "ping"]
    for message in wire:
        pair.b.receive(message, pair.now)
    assert pair.b.established and pair.b.rejected == {}


def test_every_direction_opens_what_the_other_sealed(pair):
    request_id = pair.a.open_request("caller", pair.now + 30)
    pair.a.send(request(request_id))
    pair.pump()
    assert pair.b.respond(request_id, ResponseFrame(request_id, 200, (), b"ok"))
    pair.pump()
    [answer] = [event for event in pair.take("a") if hasattr(event, "token")]
    assert (answer.token, answer.frame.body) == ("caller", b"ok")
    assert pair.a.rejected == pair.b.rejected == {}


def assert_closed_by_a_bad_tag(pair: Pair, events: list) -> None:
    assert [(e.reason, e.fatal) for e in of(Rejected, events)] == [("bad_frame_mac", True)]
    assert of(Closed, events)[0].reason == "bad_frame_mac"
    assert pair.b.rejected["bad_frame_mac"] == 1 and pair.b.state is LinkState.CLOSED
    # Our sending direction is intact: the bye is sealed, and the peer opens it.
    [bye] = pair.b.final_frames()
    assert not is_msgpack_map(bye)
    [closed] = of(Closed, pair.a.receive(bye, pair.now))
    assert closed.reason == "peer_bye: bad_frame_mac"


@pytest.mark.parametrize(("index", "mask"), [(0, 0x01), (5, 0x08), (-1, 0x80)])  # -1: the tag
def test_a_flipped_bit_closes_the_link_with_bad_frame_mac(pair, index, mask):
    sealed = bytearray(pair.seal("a", codec.encode(Ping(1))))
    sealed[index] ^= mask
    assert_closed_by_a_bad_tag(pair, pair.b.receive(bytes(sealed), pair.now))


def test_a_replayed_or_reordered_message_fails_its_tag(pair):
    first = pair.seal("a", codec.encode(Ping(1)))
    second = pair.seal("a", codec.encode(Ping(2)))
    assert pair.b.receive(first, pair.now) == []
    assert_closed_by_a_bad_tag(pair, pair.b.receive(first, pair.now))  # replayed
    other = Pair().start()
    first, second = other.seal("a", codec.encode(Ping(1))), other.seal("a", codec.encode(Ping(2)))
    assert_closed_by_a_bad_tag(other, other.b.receive(second, other.now))  # reordered


def test_a_plaintext_frame_after_the_handshake_is_refused(pair):
    assert_closed_by_a_bad_tag(pair, pair.b.receive(codec.encode(Ping(1)), pair.now))


def test_a_message_shorter_than_its_tag_is_refused(pair):
    assert_closed_by_a_bad_tag(pair, pair.b.receive(b"short", pair.now))


def test_a_bye_after_our_auth_is_sealed_but_one_before_it_is_not():
    pair = Pair()
    pair.a.start(pair.now)
    pair.b.start(pair.now)
    [hello_b] = pair.pull("b")  # b has not seen a's hello: it has nothing to sign yet
    pair.a.receive(hello_b, pair.now)  # a answers with its auth, not yet taken by the writer
    events = pair.a.receive(codec.encode(Auth(bytes(64))), pair.now)
    assert of(Rejected, events)[0].reason == "bad_signature"
    final = pair.a.final_frames()
    pair.taps["a"].read(final)
    kinds = [msgpack.unpackb(frame)["t"] for frame in pair.sent("a")]
    assert kinds == ["hello", "auth", "bye"]
    assert [is_msgpack_map(message) for message in final] == [True, True, False]
    early = Pair()
    early.a.start(early.now)
    early.a.close("shutting_down")  # nothing signed yet: nothing to seal with
    assert early.a.final_frames()[-1] == codec.encode(Bye("shutting_down"))


def test_a_large_message_is_judged_by_its_decrypted_first_bytes_and_its_frame_size(pair):
    cap = codec.FRAME_CAPS["record"]
    record = codec.encode(RecordFrame(b"r" * (cap - 200), b"s" * 64))
    sealed = pair.seal("a", record)
    assert pair.b.admit(cap + 16, sealed[:64]) is True  # announced: the largest record, sealed
    assert of(MessageArrived, pair.b.receive(sealed, pair.now))
    sealed = pair.seal("a", record)
    events = pair.b.admit(cap + 17, sealed[:64])  # one byte more than a record may have
    assert of(Rejected, events)[0].reason == "frame_too_large"


def test_a_message_read_past_unkept_still_counts():
    pair = Pair(budget_b=Budget("body_bytes", 1000)).start()
    request_id = pair.a.open_request("caller", pair.now + 30)
    big = pair.seal("a", codec.encode(request(request_id, body=b"x" * 100_000)))
    assert pair.b.admit(len(big), big[:64]) is False  # over the budget: dropped unread
    assert pair.b.discarded() == []  # answered 503, the link stays
    assert pair.inject("b", Ping(9)) == []  # the next message opens: the counter skipped one
    pair.pump()
    assert pair.b.established and pair.b.rejected == {}
    assert [e.frame.status for e in pair.take("a") if hasattr(e, "token")] == [503]


@fuzz(200)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_fuzz_bytes_after_the_handshake_only_ever_close_with_bad_frame_mac(messages):
    pair = Pair().start()
    for message in messages:
        events = pair.b.receive(message, pair.now)
        if events:  # no forgery of ours opens: the first one closes the link
            assert [e.reason for e in of(Rejected, events)] == ["bad_frame_mac"]
            break
    assert pair.b.state is LinkState.CLOSED and pair.b.rejected == {"bad_frame_mac": 1}


def test_the_hostile_peers_reading_of_rekeying_agrees_with_the_node():
    # tests/hostile.py implements 6.1 from the document: past REKEY_MESSAGES both change keys.
    key = os.urandom(32)
    theirs, ours = Direction(key), ReceiveCipher(key)
    for number in range(REKEY_MESSAGES + 3):
        frame = codec.encode(Ping(number % 100))
        assert ours.open(theirs.seal(frame)) == frame
    assert ours.rekeys == 1 and ours.counter == theirs.counter == 3


# -- real nodes ------------------------------------------------------------------------------


class RecordingProxy:
    """A TCP relay on 127.0.0.1 that keeps every byte it carries, in each direction."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.to_upstream = bytearray()
        self.from_upstream = bytearray()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                return
            server.settimeout(None)
            self.sockets += [client, server]
            for source, target, log in ((client, server, self.to_upstream),
                                        (server, client, self.from_upstream)):  # fmt: skip
                threading.Thread(target=self._pump, args=(source, target, log), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, log: bytearray) -> None:
        try:
            while data := source.recv(65536):
                with self.lock:
                    log += data
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def captured(self) -> tuple[bytes, bytes]:
        with self.lock:
            return bytes(self.to_upstream), bytes(self.from_upstream)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def ws_messages(captured: bytes) -> list[bytes]:
    """Return the payloads of the WebSocket frames in one direction of a capture, unmasked."""
    buffer = bytearray(captured.partition(b"\r\n\r\n")[2])  # after the HTTP upgrade
    messages = []
    while (frame := _parse_frame(buffer)) is not None:
        opcode, _fin, payload = frame
        if opcode == 0x2:  # xio sends each message as one binary frame
            messages.append(payload)
    return messages


def port_of(process) -> int:
    return int(process.url.rsplit(":", 1)[1].split("/")[0])


def node_info(process) -> dict:
    return xio.client(process.url, timeout=5).get("/_xio/node").content


def peers(process) -> list[dict]:
    return xio.client(process.url, timeout=5).get("/_xio/peers").content


def test_a_request_and_its_response_cross_a_link_without_one_readable_byte(start_node):
    c = start_node("c", "--app", INVENTORY)
    proxy = RecordingProxy(port_of(c))
    try:
        a = start_node("a", "--peers", f"ws://127.0.0.1:{proxy.port}/_xio/ws")
        wait_until(
            lambda: xio.client(a.url, timeout=5).get("/inventory/").status == 200,
            what="a to reach inventory on c through the proxy",
        )
        markers = {name: f"{name}-{os.urandom(8).hex()}" for name in ("path", "header", "body")}
        response = xio.client(a.url, timeout=10).request(
            "PUT",
            f"/inventory/items/{markers['path']}",
            headers={"X-Test": markers["header"]},
            data={"secret": markers["body"]},
        )
        assert response.status == 200
        answer = response.content
        # The plaintext did carry every marker, both ways: the search below can fail.
        assert answer["id"] == markers["path"] and answer["header"] == markers["header"]
        assert answer["data"] == {"secret": markers["body"]}
        assert response.headers["X-Item"] == markers["path"]
        sent, received = proxy.captured()
        for direction, captured in (("a to c", sent), ("c to a", received)):
            # Unmasked (a client masks what it sends, RFC 6455 5.3: no secret, but it hides
            # plaintext from a byte search), the first two messages are the clear handshake.
            messages = ws_messages(captured)
            hello, auth = (msgpack.unpackb(message) for message in messages[:2])
            assert (hello["t"], hello["v"], len(hello["eph"]), auth["t"]) == (
                "hello",
                2,
                32,
                "auth",
            )
            assert len(messages) > 3, f"nothing but the handshake crossed {direction}"
            assert not any(is_msgpack_map(message) for message in messages[2:])
            for name, marker in markers.items():
                for where in (captured, b"".join(messages)):
                    assert marker.encode() not in where, f"the {name} marker crossed {direction}"
    finally:
        proxy.close()


@pytest.fixture
def served_pair(start_node):
    """V hosts inventory and is linked to W; returns both once the link is up."""
    v = start_node("v", "--app", INVENTORY)
    w = start_node("w", "--peers", xio_ws(v))
    wait_until(lambda: established(v) == {"w"}, what="v-w linked")
    return v, w


def xio_ws(process) -> str:
    return process.url.replace("http://", "ws://") + "/_xio/ws"


def established(process) -> set[str]:
    return {p["name"] for p in peers(process) if p["state"] == "established"}


def test_a_flipped_bit_closes_that_link_alone_and_is_counted(served_pair):
    v, w = served_pair
    attacker = HostilePeer(port_of(v), name="tamperer")
    attacker.handshake()
    attacker.start_reader()
    wait_until(lambda: established(v) == {"w", "tamperer"}, what="the tamperer linked")
    attacker.send("ping", n=1)  # sealed honestly: the link stays
    attacker.send_tampered("ping", n=2, flip_bit=9)
    assert attacker.wait_closed(10)
    assert attacker.bye_reason == "bad_frame_mac"  # said in a bye the attacker could open
    wait_until(lambda: node_info(v)["rejected"].get("bad_frame_mac") == 1, what="counted")
    assert node_info(v)["closed_links"].get("bad_frame_mac") == 1
    assert established(v) == {"w"}  # the other link is untouched
    assert xio.client(v.url, timeout=5).get("/inventory/items/1").status == 200
    assert xio.client(w.url, timeout=5).get("/inventory/items/1").status == 200  # across v-w


def test_a_version_1_hello_is_refused(served_pair):
    v, _ = served_pair
    old = HostilePeer(port_of(v), name="old")
    with pytest.raises(Exception, match="bad_version"):
        old.handshake(extra={"v": 1})
    wait_until(lambda: node_info(v)["rejected"].get("bad_version") == 1, what="counted")


def stolen_handshake(v) -> tuple[Key, list[bytes]]:
    """Link to V honestly once, keeping the hello and auth we sent; return them."""
    earlier = HostilePeer(port_of(v), name="earlier")
    earlier.handshake()
    earlier.close("shutting_down")
    return earlier.key, earlier.handshake_messages


def fresh_hello(key: Key) -> bytes:
    eph = X25519PrivateKey.generate().public_key().public_bytes_raw()
    return encode("hello", v=2, id=key.node_id, key=key.public, nonce=os.urandom(32),
                  name="earlier", role="initiator", eph=eph)  # fmt: skip


@pytest.mark.parametrize("replay", ["hello and auth", "auth only"])
def test_a_replayed_handshake_is_refused_and_counted(served_pair, replay):
    v, _ = served_pair
    key, (hello, auth) = stolen_handshake(v)
    assert msgpack.unpackb(hello)["nonce"] and msgpack.unpackb(auth)["t"] == "auth"
    replayer = HostilePeer(port_of(v), key=key, name="earlier")
    replayer.start_reader()
    replayer.send_message(hello if replay == "hello and auth" else fresh_hello(key), raw=True)
    replayer.send_message(auth, raw=True)
    assert replayer.wait_closed(10)
    wait_until(lambda: node_info(v)["rejected"].get("bad_signature") == 1, what="counted")
    assert established(v) == {"w"}
    assert xio.client(v.url, timeout=5).get("/inventory/items/1").status == 200
