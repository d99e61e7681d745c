"""Hostile peers against a real xio-node: every bad frame is refused, counted, and the node
keeps serving. The evil peer is built here from xio's own transport, codec and handshake."""

from __future__ import annotations

import dataclasses
import os
import time

import gevent
import msgpack
import pytest

import xio
from xio.peering import codec
from xio.peering.codec import Auth, Hello, RecordFrame
from xio.peering.dial import connect
from xio.peering.handshake import Handshake
from xio.peering.identity import Identity
from xio.peering.records import RECORD_DOMAIN, Record, encode_body

from .conftest import ROOT, wait_until

INVENTORY = str(ROOT / "tests/apps/inventory")


def ws_url(process) -> str:
    return process.url.replace("http://", "ws://") + "/_xio/ws"


def rejected(process) -> dict:
    return xio.client(process.url, timeout=2).get("/_xio/node").content["rejected"]


def judged(process) -> dict:
    return xio.client(process.url, timeout=2).get("/_xio/node").content["records_judged"]


class EvilPeer:
    """A peer under the test's control, speaking raw frames to a node.

    After an honest ``handshake`` what it sends is sealed, as protocol version 2 requires, so
    that a frame's own faults are what the node judges; before it, frames go in the clear.
    """

    def __init__(self, url: str, identity: Identity | None = None, name: str = "evil") -> None:
        self.identity = identity or Identity.generate()
        self.transport = connect(url, timeout=5, max_message=codec.MAX_FRAME)
        self.received: list[bytes] = []  # messages as they came (the handshake decodes them)
        self.sealer = None  # the handshake's send cipher, once our auth is sent
        self.closed = gevent.event.Event()
        self.transport.on_message = self.received.append
        self.transport.on_close = lambda reason: self.closed.set()
        self.transport.start()
        self.name = name

    def send(self, data: bytes) -> None:
        """Send ``data`` now: the test's own waits (time.sleep) do not let the hub run."""
        if self.sealer is not None:
            data = self.sealer.seal(data)
        self.transport.send(data)
        self.transport.flush()

    def handshake(self) -> Handshake:
        """Authenticate honestly; return the finished handshake."""
        shake = Handshake(self.identity, "initiator", self.name)
        for frame in shake.start():
            self.send(codec.encode(frame))
        with gevent.Timeout(5):
            while not shake.established:
                while not self.received:
                    gevent.sleep(0.01)
                for answer in shake.receive(codec.decode(self.received.pop(0))):
                    self.send(codec.encode(answer))
                    self.sealer = shake.ciphers.send  # what follows our auth is sealed
        return shake

    def wait_closed(self, seconds: float = 5) -> bool:
        return self.closed.wait(seconds)


@pytest.fixture
def node(start_node):
    return start_node("target", "--app", INVENTORY)


def still_serves(process) -> bool:
    return xio.client(process.url, timeout=5).get("/inventory/items/1").status == 200


@pytest.mark.parametrize(
    "garbage, reason",
    [
        (b"\xc1\xc1\xc1", "malformed_msgpack"),
        (msgpack.packb([1, 2, 3]), "not_a_map"),
        (msgpack.packb({"t": "launch_missiles"}), "unknown_type"),
        (msgpack.packb({"t": "hello", "v": 1}), "missing_field"),
        (b"\x00" * 5000, "frame_too_large"),
    ],
    ids=["msgpack", "not_a_map", "unknown_type", "missing_field", "too_large"],
)
def test_garbage_before_the_handshake_disconnects_and_is_counted(node, garbage, reason):
    evil = EvilPeer(ws_url(node))
    evil.send(garbage)
    assert evil.wait_closed()
    wait_until(lambda: rejected(node).get(reason) == 1, what=f"{reason} counted")
    assert still_serves(node)


def test_hello_whose_id_is_not_its_key_is_refused(node):
    evil = EvilPeer(ws_url(node))
    liar = Identity.generate()
    hello = Hello(
        2, Identity.generate().node_id, liar.public_key, os.urandom(32), "liar", "initiator",
        eph=os.urandom(32),
    )  # fmt: skip
    evil.send(codec.encode(hello))
    assert evil.wait_closed()
    wait_until(lambda: rejected(node).get("id_mismatch") == 1, what="id_mismatch counted")
    assert still_serves(node)


def test_auth_with_a_bad_signature_is_refused(node):
    evil = EvilPeer(ws_url(node))
    shake = Handshake(evil.identity, "initiator", "evil")
    evil.send(codec.encode(shake.start()[0]))
    evil.send(codec.encode(Auth(b"\x00" * 64)))
    assert evil.wait_closed()
    wait_until(lambda: rejected(node).get("bad_signature") == 1, what="bad_signature counted")


def test_pinned_id_mismatch_refuses_the_link(start_node, node):
    wrong = Identity.generate().node_id
    other = start_node("pinner", "--peers", node.url.replace("http://", "ws://") + "#" + wrong)
    wait_until(lambda: rejected(other).get("pinned_id_mismatch", 0) >= 1, what="pin refused")
    assert len(xio.client(other.url).get("/_xio/routes").content) == 1
    dialling = xio.client(other.url).get("/_xio/node").content["dialling"]
    wait_until(
        lambda: xio.client(other.url).get("/_xio/node").content["dialling"][0]["attempts"] >= 1,
        what="the failing dial shown",
    )
    assert dialling[0]["url"].endswith("/_xio/ws")


def test_records_forged_stale_or_unconfirmed_are_refused_but_the_link_stays(start_node):
    c = start_node("c")
    b = start_node("b", "--peers", ws_url(c))
    a = start_node("a", "--peers", ws_url(b))
    wait_until(lambda: len(xio.client(a.url).get("/_xio/routes").content) == 3, what="a-b-c")
    routes = {r["name"]: r for r in xio.client(a.url).get("/_xio/routes").content}
    b_id, c_id = routes["b"]["destination"], routes["c"]["destination"]
    # An evil peer whose id sorts before b's, so that a route through it would win ties.
    evil_identity = Identity.generate()
    while evil_identity.node_id > b_id:
        evil_identity = Identity.generate()
    evil = EvilPeer(ws_url(a), evil_identity)
    evil.handshake()
    now_ms = int(time.time() * 1000)

    def record(identity, seq, links, apps=()):
        return Record.build(identity, seq, now_ms, 60_000, "evil", "0", [], links, apps)

    # 1. A record claiming to be c's, signed by the evil key: its id does not match its key.
    honest = record(evil_identity, 5, {a_id(a): 1, c_id: 1}, {"inventory": "fake"})
    as_c = dataclasses.replace(honest.record, node_id=c_id, links=((a_id(a), 1),))
    as_c_body = encode_body(as_c)
    evil.send(codec.encode(RecordFrame(as_c_body, evil_identity.sign(RECORD_DOMAIN + as_c_body))))
    # ... and its own record with a signature over something else.
    evil.send(codec.encode(RecordFrame(honest.body, evil_identity.sign(b"other bytes"))))
    # 2. Its own record claiming a link to c, which c does not confirm.
    evil.send(codec.encode(RecordFrame(honest.body, honest.signature)))
    # 3. The same again, and an older one: replays.
    evil.send(codec.encode(RecordFrame(honest.body, honest.signature)))
    old = record(evil_identity, 4, {a_id(a): 1})
    evil.send(codec.encode(RecordFrame(old.body, old.signature)))
    wait_until(lambda: judged(a).get("stale", 0) >= 1, what="stale counted")
    counts = judged(a)
    assert counts.get("id_mismatch") == 1
    assert counts.get("bad_signature") == 1
    assert counts.get("duplicate", 0) >= 1
    # The unconfirmed edge evil-c is not used: c is still reached through b ...
    routes = {r["destination"]: r for r in xio.client(a.url).get("/_xio/routes").content}
    assert routes[c_id]["next_hop"] == b_id
    # ... and none of this closed the link: refused records are not link errors.
    assert not evil.closed.is_set()
    assert routes[evil_identity.node_id]["cost"] == 1


def a_id(process) -> str:
    return xio.client(process.url).get("/_xio/node").content["id"]


def test_unknown_frame_after_the_handshake_disconnects(node):
    evil = EvilPeer(ws_url(node))
    evil.handshake()
    evil.send(msgpack.packb({"t": "nonsense"}))
    assert evil.wait_closed()
    wait_until(lambda: rejected(node).get("unknown_type") == 1, what="unknown_type counted")
    assert still_serves(node)


def test_many_hostile_connections_do_not_grow_memory(start_node):
    # The handshake rate limit would refuse most of them: this test is about memory.
    node = start_node("target", "--app", INVENTORY, "--handshake-rate", "100000")
    pid = node.proc.pid

    def rss_kib() -> int:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    def attack(count: int) -> None:
        for index in range(count):
            evil = EvilPeer(ws_url(node))
            evil.send(b"\xc1" if index % 2 else os.urandom(3000))
            evil.wait_closed(2)
            evil.transport.close()

    attack(100)  # warm up: allocator pools, lazily imported code
    before = rss_kib()
    attack(300)
    grown = rss_kib() - before
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB over 300 hostile connections"
    assert still_serves(node)
