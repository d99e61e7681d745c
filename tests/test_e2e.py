"""End-to-end integrity (xio/peering/e2e.py): keys agree, MACs cover what relays may not touch.

The rules are docs/PROTOCOL.md section 11.1; its vectors block is recomputed here from the
fixed seeds of tests/test_protocol_vectors.py. Refresh it with ``python -m tests.test_e2e``.
The second half tests xio/peering/integrity.py in memory: what the ingress and the destination
do with the MACs (tests/test_e2e_mesh.py does the same across a tampering relay).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import re
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering import codec, e2e
from xio.peering.codec import RequestFrame, ResponseFrame
from xio.peering.identity import Identity
from xio.peering.integrity import (
    MAX_AGE_MS,
    MAX_AHEAD_MS,
    UNSIGNED_STATUSES,
    EndToEnd,
    nonce_time_ms,
)
from xio.peering.link_events import error_frame

from .fuzzing import fuzz

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
BLOCK = re.compile(r"```text xio-e2e-vectors\n(.*?)```", re.DOTALL)

SEED_A = bytes(range(0x00, 0x20))
SEED_B = bytes(range(0x20, 0x40))
NONCE = bytes(range(0x40, 0x50))
ALICE, BOB = Identity.from_seed(SEED_A), Identity.from_seed(SEED_B)
KEY = e2e.pairwise_key(ALICE, BOB.public_key)

REQUEST = {
    "src": ALICE.node_id,
    "dst": BOB.node_id,
    "app": "echo",
    "method": "POST",
    "path": "/items/42",
    "query": "a=1&b=2",
    "headers": (("Content-Type", "text/plain"), ("X-Xio-Via", ALICE.node_id), ("Accept", "*/*")),
    "body": b"hello",
    "nonce": NONCE,
}
RESPONSE = {"request_nonce": NONCE, "status": 200, "headers": (("Content-Type", "x/y"),)}


def req_mac(**changes):
    return e2e.request_mac(KEY, **{**REQUEST, **changes})


def res_mac(**changes):
    return e2e.response_mac(KEY, **{**RESPONSE, "body": b"ok", **changes})


def compute_vectors() -> dict[str, str]:
    """Compute every value of the document's e2e vectors block from the fixed inputs."""
    x_priv_a = e2e.ed25519_seed_to_x25519(SEED_A)
    return {
        "x25519_private_a": x_priv_a.private_bytes_raw().hex(),
        "x25519_public_a": e2e.ed25519_public_to_x25519(ALICE.public_key).hex(),
        "x25519_public_b": e2e.ed25519_public_to_x25519(BOB.public_key).hex(),
        "pairwise_key": KEY.hex(),
        "request_encoding": e2e.encode_request(**REQUEST).hex(),
        "request_mac": req_mac().hex(),
        "response_encoding": e2e.encode_response(**RESPONSE, body=b"ok").hex(),
        "response_mac": res_mac().hex(),
        "stream_head_mac": e2e.head_mac(KEY, **RESPONSE).hex(),
        "stream_body_mac": streamed_body_mac(b"ok", b"!!").hex(),
        # The same request with its body streamed (4.2): its head's MAC, then its body's.
        "upload_head_mac": e2e.upload_head_mac(
            KEY, **{k: v for k, v in REQUEST.items() if k != "body"}
        ).hex(),
        "upload_body_mac": streamed_body_mac(b"hel", b"lo", domain=e2e.UPLOAD_BODY_DOMAIN).hex(),
    }


def streamed_body_mac(*pieces: bytes, domain: bytes = e2e.STREAM_BODY_DOMAIN) -> bytes:
    body_mac = e2e.BodyMac(KEY, NONCE, domain)
    for piece in pieces:
        body_mac.update(piece)
    return body_mac.digest()


def format_vectors() -> str:
    return "".join(f"{name} = {value}\n" for name, value in compute_vectors().items())


def test_the_documented_vectors_are_what_the_code_computes():
    (block,) = BLOCK.findall(PROTOCOL.read_text())
    assert block == format_vectors()


def test_the_streamed_macs_are_the_ones_section_4_1_describes():
    # Written from the document: the head is a response's encoding behind its own domain with
    # an empty body; the body's MAC covers domain, nonce, the bytes and their length.
    head = e2e.encode_response(**RESPONSE, body=b"").replace(
        e2e.RESPONSE_DOMAIN, b"xio-e2e-head-v1\x00", 1
    )
    assert e2e.head_mac(KEY, **RESPONSE) == hmac.new(KEY, head, hashlib.sha256).digest()[:16]
    covered = b"xio-e2e-body-v1\x00" + (16).to_bytes(4, "big") + NONCE + b"ok!!"
    covered += (4).to_bytes(8, "big")
    assert streamed_body_mac(b"ok", b"!!") == hmac.new(KEY, covered, hashlib.sha256).digest()[:16]
    # Cut anywhere, the same body has the same MAC; one byte moved or dropped, another.
    assert streamed_body_mac(b"o", b"k!", b"!") == streamed_body_mac(b"ok!!")
    assert streamed_body_mac(b"ok!") != streamed_body_mac(b"ok!!")
    assert streamed_body_mac(b"!!", b"ok") != streamed_body_mac(b"ok", b"!!")
    # A head can never pass for a whole answer with an empty body.
    assert e2e.head_mac(KEY, **RESPONSE) != e2e.response_mac(KEY, **RESPONSE, body=b"")


def test_the_mac_is_hmac_sha256_of_the_encoding_truncated_to_16_bytes():
    # Written from section 11.1, not from e2e._mac: another implementation computes this.
    expected = hmac.new(KEY, e2e.encode_request(**REQUEST), hashlib.sha256).digest()[:16]
    assert req_mac() == expected
    response = e2e.encode_response(**RESPONSE, body=b"ok")
    assert res_mac() == hmac.new(KEY, response, hashlib.sha256).digest()[:16]


def test_both_ends_derive_the_same_key_and_other_pairs_do_not():
    assert e2e.pairwise_key(BOB, ALICE.public_key) == KEY
    carol = Identity.from_seed(b"\x77" * 32)
    assert e2e.pairwise_key(ALICE, carol.public_key) not in {KEY}
    assert e2e.pairwise_key(carol, ALICE.public_key) == e2e.pairwise_key(ALICE, carol.public_key)


def test_the_conversion_matches_on_both_sides_like_libsodium():
    # X25519(our_x_priv, their_x_pub) == X25519(their_x_priv, our_x_pub), and the converted
    # public key is the public key of the converted private key.
    for seed in (SEED_A, SEED_B, b"\xff" * 32):
        ident = Identity.from_seed(seed)
        x_priv = e2e.ed25519_seed_to_x25519(seed)
        assert x_priv.public_key().public_bytes_raw() == e2e.ed25519_public_to_x25519(
            ident.public_key
        )
    a, b = e2e.ed25519_seed_to_x25519(SEED_A), e2e.ed25519_seed_to_x25519(SEED_B)
    a_pub = X25519PublicKey.from_public_bytes(e2e.ed25519_public_to_x25519(ALICE.public_key))
    b_pub = X25519PublicKey.from_public_bytes(e2e.ed25519_public_to_x25519(BOB.public_key))
    assert a.exchange(b_pub) == b.exchange(a_pub)


P = 2**255 - 19
SMALL_ORDER_Y = [0, 1, P - 1, 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7]


@pytest.mark.parametrize("y", [*SMALL_ORDER_Y, P, P + 1, 2**255 - 1])
@pytest.mark.parametrize("sign", [0, 1 << 255])
def test_small_order_and_non_canonical_peer_keys_are_refused(y, sign):
    bad = (y | sign).to_bytes(32, "little")
    with pytest.raises(LocalProtocolError):
        e2e.ed25519_public_to_x25519(bad)
    with pytest.raises(LocalProtocolError):
        e2e.pairwise_key(ALICE, bad)


def test_the_key_cache_is_bounded_and_answers_the_same_key():
    cache = e2e.PairwiseKeys(ALICE, capacity=2)
    peers = [Identity.from_seed(bytes([i]) * 32).public_key for i in range(3, 6)]
    keys = [cache.key_for(peer) for peer in peers]
    assert len(cache) == 2
    assert cache.key_for(peers[0]) == keys[0] == e2e.pairwise_key(ALICE, peers[0])
    assert cache.key_for(BOB.public_key) == KEY


@pytest.mark.parametrize(
    "changes",
    [
        {"src": BOB.node_id},
        {"dst": ALICE.node_id},
        {"app": "echo2"},
        {"method": "PUT"},
        {"path": "/items/43"},
        {"query": "a=1&b=3"},
        {"query": ""},
        {"body": b"hellO"},
        {"body": b""},
        {"nonce": b"\x00" * 16},
        {"headers": (("content-type", "text/plain"), ("Accept", "*/*"))},
        {"headers": (("Content-Type", "text/html"), ("Accept", "*/*"))},
        {"headers": (("Accept", "*/*"), ("Content-Type", "text/plain"))},
        {"headers": (("Content-Type", "text/plain"),)},
        {"headers": (("Content-Type", "text/plain"), ("Accept", "*/*"), ("Accept", "*/*"))},
        # Length prefixes: moving a byte from one field to the next is a different request.
        {"path": "/items/42a", "query": "=1&b=2"},
    ],
)
def test_every_request_field_is_covered(changes):
    assert req_mac(**changes) != req_mac()


@pytest.mark.parametrize(
    "via",
    [(), (("X-Xio-Via", "a"),), (("x-xio-via", ALICE.node_id + "," + BOB.node_id),)],
)
def test_relays_may_change_the_via_trail(via):
    headers = (("Content-Type", "text/plain"), *via, ("Accept", "*/*"))
    assert req_mac(headers=headers) == req_mac()
    e2e.verify_request(KEY, **{**REQUEST, "headers": headers}, mac=req_mac())


@pytest.mark.parametrize(
    "changes",
    [
        {"status": 201},
        {"request_nonce": b"\x01" * 16},
        {"headers": (("Content-Type", "x/z"),)},
        {"headers": ()},
        {"body": b"ok!"},
    ],
)
def test_every_response_field_is_covered(changes):
    assert res_mac(**changes) != res_mac()


def test_a_request_mac_is_no_response_mac():
    # The same bytes after the domain would still differ by domain; check the verdict too.
    with pytest.raises(RemoteProtocolError) as caught:
        e2e.verify_response(KEY, NONCE, 200, (), b"", mac=req_mac())
    assert caught.value.reason == "bad_e2e_mac"
    assert e2e.encode_request(**REQUEST).startswith(e2e.REQUEST_DOMAIN)
    assert not e2e.encode_request(**REQUEST).startswith(e2e.RESPONSE_DOMAIN)


def test_verify_accepts_the_mac_and_refuses_a_wrong_one_or_key():
    e2e.verify_request(KEY, **REQUEST, mac=req_mac())
    e2e.verify_response(KEY, **RESPONSE, body=b"ok", mac=res_mac())
    for mac in (req_mac()[:-1] + b"\x00", req_mac()[:8], b"", None):
        with pytest.raises(RemoteProtocolError, match="bad_e2e_mac"):
            e2e.verify_request(KEY, **REQUEST, mac=mac)
    other = e2e.pairwise_key(ALICE, Identity.from_seed(b"\x09" * 32).public_key)
    with pytest.raises(RemoteProtocolError, match="bad_e2e_mac"):
        e2e.verify_request(other, **REQUEST, mac=req_mac())


def test_the_replay_window_detects_a_replay_within_its_horizon():
    window = e2e.ReplayWindow(capacity=100, horizon_ms=30_000)
    assert not window.seen("a", NONCE, 1_000)
    assert window.seen("a", NONCE, 1_001)
    assert window.seen("a", NONCE, 30_999)
    assert not window.seen("b", NONCE, 2_000)  # the pair is (src, nonce)
    assert not window.seen("a", NONCE, 31_000)  # past its horizon: forgotten, then new again
    assert window.early_evictions == 0


def test_the_replay_window_is_bounded_and_counts_early_evictions():
    window = e2e.ReplayWindow(capacity=3, horizon_ms=30_000)
    nonces = [bytes([i]) * 16 for i in range(5)]
    for i, nonce in enumerate(nonces):
        assert not window.seen("a", nonce, 1_000 + i)
    assert len(window) == 3
    assert window.early_evictions == 2
    assert window.seen("a", nonces[4], 1_010)
    assert not window.seen("a", nonces[0], 1_010)  # evicted early: the operator was told


def issued(nonce: bytes) -> int:
    return nonce[0]  # the tests' nonces: their first byte is their issue time


def test_a_full_window_refuses_what_it_forgot_from_that_source_only():
    window = e2e.ReplayWindow(capacity=2, horizon_ms=30_000, issued_of=issued)
    a1, a2, a3 = (bytes([t]) + bytes([0xAA]) * 15 for t in (1, 2, 3))
    for nonce in (a1, a2, a3):
        assert not window.seen("a", nonce, 1_000)
    assert window.early_evictions == 1  # a1 went: a's floor is now its time, 1
    assert window.seen("a", a1, 1_001)  # the replay of what was forgotten: refused
    assert window.seen("a", bytes([1]) + bytes(15), 1_001)  # as old: cannot be judged
    assert not window.seen("a", bytes([4]) + bytes(15), 1_001)  # newer: judged, fresh
    assert not window.seen("b", bytes([0]) + bytes(15), 1_001)  # b's clock is b's own


def test_floors_are_bounded():
    window = e2e.ReplayWindow(capacity=1, horizon_ms=30_000, issued_of=issued, max_floors=2)
    for index, src in enumerate("abcd"):
        window.seen(src, bytes([9]) + bytes([index]) * 15, 1_000)
    assert len(window._floors) == 2  # noqa: SLF001 - the bound is what is tested


def test_expired_pairs_leave_without_counting():
    window = e2e.ReplayWindow(capacity=2, horizon_ms=100)
    for i in range(10):
        assert not window.seen("a", bytes([i]) * 16, i * 100)
    assert window.early_evictions == 0
    assert len(window) == 1


text = st.text(max_size=40)
header = st.tuples(st.text(min_size=1, max_size=10), st.text(max_size=20))
fields = st.fixed_dictionaries(
    {
        "src": text,
        "dst": text,
        "app": text,
        "method": text,
        "path": text,
        "query": text,
        "headers": st.lists(header, max_size=5).map(tuple),
        "body": st.binary(max_size=200),
        "nonce": st.binary(min_size=16, max_size=16),
    }
)


@given(fields, fields)
def test_two_requests_share_a_mac_only_if_they_encode_the_same(one, two):
    # The encoding is injective on what it covers: equal encodings, equal covered fields.
    same = e2e.encode_request(**one) == e2e.encode_request(**two)
    assert (e2e.request_mac(KEY, **one) == e2e.request_mac(KEY, **two)) == same

    def covered(f):
        kept = tuple(h for h in f["headers"] if h[0].lower() != "x-xio-via")
        return {**f, "headers": kept}

    assert same == (covered(one) == covered(two))


@given(fields)
def test_any_request_verifies_with_its_own_mac(one):
    e2e.verify_request(KEY, **one, mac=e2e.request_mac(KEY, **one))


@given(
    st.binary(min_size=16, max_size=16),
    st.integers(100, 999),
    st.lists(header, max_size=5).map(tuple),
    st.binary(max_size=200),
)
def test_any_response_verifies_and_its_mac_never_passes_as_a_request_mac(nonce, status, hs, body):
    mac = e2e.response_mac(KEY, nonce, status, hs, body)
    e2e.verify_response(KEY, nonce, status, hs, body, mac=mac)
    with pytest.raises(RemoteProtocolError, match="bad_e2e_mac"):
        e2e.verify_request(KEY, **{**REQUEST, "nonce": nonce, "body": body}, mac=mac)


@pytest.mark.parametrize(
    "call",
    [
        lambda: e2e.request_mac(b"short", **REQUEST),
        lambda: e2e.request_mac(KEY, **{**REQUEST, "nonce": b"\x00" * 15}),
        lambda: e2e.response_mac(KEY, NONCE, 1000, (), b""),
        lambda: e2e.ed25519_public_to_x25519(b"\x00" * 31),
        lambda: e2e.ed25519_seed_to_x25519("not bytes"),
        lambda: e2e.ReplayWindow(0, 1000),
        lambda: e2e.PairwiseKeys(ALICE, capacity=0),
    ],
)
def test_local_misuse_is_a_local_protocol_error(call):
    with pytest.raises(LocalProtocolError):
        call()


# -- on the wire: xio.peering.integrity, what the forwarder does with the MACs ---------------

CAROL = Identity.from_seed(b"\x77" * 32)
NOW = 1_800_000_000_000
RECORDS = {ALICE.node_id: ALICE.public_key, BOB.node_id: BOB.public_key}


def ends(**options):
    """Return (ingress Alice, destination Bob), each knowing the other's record key only.

    Their random bytes count 1, 2, 3...: nonces differ in a known way.
    """
    counter = itertools.count(1)
    return tuple(
        EndToEnd(who, RECORDS.get, random_bytes=lambda n: next(counter).to_bytes(n, "big"),
                 **options)
        for who in (ALICE, BOB)
    )  # fmt: skip


def req_frame(**changes) -> RequestFrame:
    fields = {"request_id": 9, "dst": BOB.node_id, "app": "echo", "method": "POST",
              "path": "/items/42", "query": "a=1", "headers": (("Accept", "*/*"),),
              "body": b"hello", "hops": 15, "ttl_ms": 5000, **changes}  # fmt: skip
    return RequestFrame(**fields)


def sealed_pair(alice, frame=None):
    frame = frame or req_frame()
    seal = alice.seal_request(frame, NOW)
    return seal, dataclasses.replace(frame, src=ALICE.node_id, nonce=seal.nonce, mac=seal.mac)


def test_a_sealed_request_opens_at_its_destination_and_its_answer_at_the_ingress():
    alice, bob = ends()
    seal, frame = sealed_pair(alice)
    assert nonce_time_ms(seal.nonce) == NOW and seal.nonce[8:] == (1).to_bytes(8, "big")
    # What relays change: the trail, hops, ttl, the request id of each link.
    trail = (*frame.headers, ("X-Xio-Via", ALICE.node_id))
    relayed = dataclasses.replace(frame, request_id=3, hops=2, ttl_ms=10, headers=trail)
    key, refusal = bob.open_request(relayed, NOW + 5)
    assert refusal is None and key == KEY
    answer = bob.seal_response(key, relayed, ResponseFrame(0, 200, (("Set-Cookie", "s=1"),), b"ok"))
    assert answer.request_id == 3 and answer.mac is not None
    assert alice.open_response(seal, answer) is answer
    assert not alice.counts and not bob.counts


@pytest.mark.parametrize(
    "changes",
    [{"body": b"hellO"}, {"method": "PUT"}, {"path": "/items/43"}, {"query": "a=2"},
     {"app": "other"}, {"headers": (("Accept", "text/html"),)}, {"headers": ()},
     {"src": CAROL.node_id}],
    ids=lambda changes: next(iter(changes)),
)  # fmt: skip
def test_a_request_changed_on_the_way_is_refused_signed_and_counted(changes):
    alice, bob = ends()
    seal, frame = sealed_pair(alice)
    bob_records = {**RECORDS, CAROL.node_id: CAROL.public_key}
    bob = EndToEnd(BOB, bob_records.get)
    key, refusal = bob.open_request(dataclasses.replace(frame, **changes), NOW, via="x")
    assert refusal.status == 502 and b"bad_e2e_mac" in refusal.body
    assert bob.counts == {"bad_e2e_mac": 1}
    if "src" not in changes:  # signed for the claimed src: Alice trusts the refusal
        signed = bob.seal_response(key, frame, refusal)
        assert alice.open_response(seal, signed).status == 502
        assert not alice.counts


def test_a_request_without_macs_or_from_an_unknown_node_is_refused():
    alice, bob = ends()
    key, refusal = bob.open_request(req_frame(), NOW)
    assert (key, refusal.status) == (None, 502) and bob.counts == {"bad_e2e_mac": 1}
    stranger = EndToEnd(CAROL, RECORDS.get)
    seal = stranger.seal_request(req_frame(), NOW)
    frame = req_frame(src=CAROL.node_id, nonce=seal.nonce, mac=seal.mac)
    key, refusal = bob.open_request(frame, NOW)
    assert key is None and b"no record here" in refusal.body
    assert bob.counts["e2e_unknown_node"] == 1
    assert alice.seal_request(req_frame(dst=CAROL.node_id), NOW) is None  # no record of Carol
    assert alice.counts == {"e2e_unknown_node": 1}


def test_a_replayed_request_is_refused_unsigned_and_an_old_one_as_stale():
    alice, bob = ends()
    _, frame = sealed_pair(alice)
    assert bob.open_request(frame, NOW)[1] is None
    key, refusal = bob.open_request(dataclasses.replace(frame, request_id=77, ttl_ms=9), NOW + 1)
    assert key is None and b"a replay" in refusal.body  # no signed second answer to one n
    assert bob.counts == {"e2e_replay": 1}
    for late in (MAX_AGE_MS + 1, -MAX_AHEAD_MS - 1):  # by Bob's clock, against the nonce's
        _, fresh = sealed_pair(alice)
        key, refusal = bob.open_request(fresh, NOW + late)
        assert key == KEY and refusal.status == 502 and b"issued" in refusal.body
    assert bob.counts["e2e_stale"] == 2


def test_a_full_replay_window_is_counted():
    alice, _ = ends()
    bob = EndToEnd(BOB, RECORDS.get, replay_pairs=2)
    frames = [sealed_pair(alice)[1] for _ in range(3)]
    first = frames[0]
    for frame in frames:
        assert bob.open_request(frame, NOW)[1] is None
    assert bob.counts == {"e2e_window_full": 1}
    # The first pair was forgotten: its replay is refused all the same, the window failed closed.
    assert bob.open_request(first, NOW + 1)[0] is None
    assert bob.counts == {"e2e_window_full": 1, "e2e_replay": 1}


RESPONSE_CHANGES = [
    {"status": 201}, {"body": b"ok!"}, {"headers": (("Set-Cookie", "s=2"),)},
    {"headers": (("Set-Cookie", "s=1"), ("Location", "/x"))}, {"mac": b"\x00" * 16},
]  # fmt: skip


@pytest.mark.parametrize("changes", RESPONSE_CHANGES, ids=lambda c: next(iter(c)))
def test_an_answer_changed_on_the_way_is_a_502_counted_at_the_ingress(changes):
    alice, bob = ends()
    seal, frame = sealed_pair(alice)
    key, _ = bob.open_request(frame, NOW)
    answer = bob.seal_response(key, frame, ResponseFrame(0, 200, (("Set-Cookie", "s=1"),), b"ok"))
    seen = alice.open_response(seal, dataclasses.replace(answer, **changes))
    assert seen.status == 502 and b"the response was altered on the way" in seen.body
    assert seen.mac is None  # nothing of the altered answer passes, the ingress's trail only
    assert dict(seen.headers) == {"Content-Type": "application/json", "X-Xio-Via": ALICE.node_id}
    assert alice.counts == {"bad_e2e_mac": 1}


def test_an_answer_bound_to_another_request_is_refused():
    alice, bob = ends()
    seal, frame = sealed_pair(alice)
    other_seal, other = sealed_pair(alice, req_frame(path="/other"))
    key, _ = bob.open_request(other, NOW)
    answer = bob.seal_response(key, other, ResponseFrame(0, 200, (), b"other"))
    assert alice.open_response(seal, answer).status == 502
    assert alice.open_response(other_seal, answer) is answer


@pytest.mark.parametrize("status", sorted(UNSIGNED_STATUSES))
def test_a_nodes_own_error_passes_unsigned_and_marked_nothing_else_does(status):
    alice, _ = ends()
    seal, _ = sealed_pair(alice)
    relay_error = error_frame(status, "no route to node x", via=f"{ALICE.node_id},{CAROL.node_id}")
    relay_error = dataclasses.replace(
        relay_error, headers=(*relay_error.headers, ("Set-Cookie", "evil=1"))
    )
    seen = alice.open_response(seal, relay_error)
    assert seen.status == status
    assert json.loads(seen.body)["description"] == (
        "no route to node x (said by a node on the way, unauthenticated)"
    )
    assert dict(seen.headers) == {"Content-Type": "application/json",
                                  "X-Xio-Via": f"{ALICE.node_id},{CAROL.node_id}"}  # fmt: skip
    assert alice.counts == {"e2e_unsigned_error": 1}


@pytest.mark.parametrize(
    "answer",
    [ResponseFrame(0, 200, (), b"{}"), ResponseFrame(0, 404, (), b'{"description": "x"}'),
     ResponseFrame(0, 502, (), b"<html>not xio's error</html>")],
    ids=["200", "404", "502 not json"],
)  # fmt: skip
def test_an_unsigned_answer_that_is_no_node_error_is_refused(answer):
    alice, _ = ends()
    seal, _ = sealed_pair(alice)
    assert alice.open_response(seal, answer).status == 502
    assert alice.counts == {"bad_e2e_mac": 1}


def test_the_end_to_end_fields_cross_the_wire_all_or_none():
    alice, _ = ends()
    _, frame = sealed_pair(alice)
    assert codec.decode(codec.encode(frame)) == frame
    wire = msgpack.unpackb(codec.encode(frame))
    assert (wire["src"], wire["n"], wire["mac"]) == (frame.src, frame.nonce, frame.mac)
    assert "mac" not in msgpack.unpackb(codec.encode(req_frame()))
    for missing in ("src", "nonce", "mac"):
        with pytest.raises(LocalProtocolError, match="all three or none"):
            dataclasses.replace(frame, **{missing: None})
    with pytest.raises(LocalProtocolError, match="exactly 16 bytes"):
        dataclasses.replace(frame, mac=b"short")
    res = ResponseFrame(1, 200, (), b"", b"\x01" * 16)
    assert codec.decode(codec.encode(res)) == res
    answer = ResponseFrame(0, 200, (("A", "b"),), b"x")
    assert answer.signed(5, b"\x02" * 16) == ResponseFrame(
        5, 200, (("A", "b"),), b"x", b"\x02" * 16
    )
    with pytest.raises(LocalProtocolError):
        answer.signed(5, b"short")
    with pytest.raises(RemoteProtocolError):
        codec.decode(msgpack.packb({"t": "res", "id": 1, "status": 200, "mac": b"x"}))


if __name__ == "__main__":
    print(format_vectors(), end="")


# -- fuzzing: whatever a relay makes of a req or a res, the ends only refuse ------------------

_IDS = st.sampled_from([ALICE.node_id, BOB.node_id, "a" * 32])
_TEXT = st.text(max_size=40)
_HEADERS = st.lists(st.tuples(_TEXT, _TEXT), max_size=4).map(tuple)


@fuzz(300)
@given(
    fields=st.none()  # all three or none: a frame with some is bad_field at decoding
    | st.tuples(_IDS, st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
    method=st.sampled_from(["GET", "POST", "X"]),
    path=st.sampled_from(["", "/items/42", "/a%2Fb"]),
    headers=_HEADERS,
    body=st.binary(max_size=64),
    keep=st.booleans(),
)
def test_fuzz_a_forged_req_is_refused_and_a_sealed_one_served(
    fields, method, path, headers, body, keep
):
    alice, bob = ends()
    frame = req_frame(method=method, path=path, headers=headers, body=body)
    _, sealed = sealed_pair(alice, frame)
    if not keep:  # a relay's version: any src, n, mac, the rest as sealed
        src, nonce, mac = fields or (None, None, None)
        sealed = dataclasses.replace(sealed, src=src, nonce=nonce, mac=mac)
    _, refusal = bob.open_request(sealed, NOW)
    assert (refusal is None) == keep  # only the untouched frame verifies (a forgery: 2**-128)
    if refusal is not None:
        assert refusal.status == 502 and sum(bob.counts.values()) == 1


@fuzz(300)
@given(
    status=st.integers(100, 999),
    headers=_HEADERS,
    body=st.binary(max_size=64),
    mac=st.none() | st.binary(min_size=16, max_size=16),
)
def test_fuzz_a_forged_res_reaches_the_client_only_as_a_502_or_a_marked_error(
    status, headers, body, mac
):
    alice, bob = ends()
    seal, _ = sealed_pair(alice)
    answer = alice.open_response(seal, ResponseFrame(9, status, headers, body, mac=mac))
    assert answer.status == 502 or (mac is None and answer.status == status)
    assert sum(alice.counts.values()) == 1
