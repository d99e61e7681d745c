"""Closed mode, pure parts: the mesh policy, the store's policy hook, hello and revoke frames."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering import codec, membership
from xio.peering.admission import MEMBERSHIP_REASONS, MeshPolicy, certificate_of
from xio.peering.codec import Hello, Revoke
from xio.peering.handshake import Handshake, HandshakeState
from xio.peering.identity import Identity
from xio.peering.records import Record
from xio.peering.store import RecordStore

from .fuzzing import fuzz

NOW = 1_800_000_000_000
HOUR = 3_600_000
AUTHORITY = Identity.from_seed(bytes(range(32)))
OTHER_AUTHORITY = Identity.from_seed(bytes(range(1, 33)))
NODE = Identity.from_seed(bytes(range(2, 34)))
PEER = Identity.from_seed(bytes(range(3, 35)))


def cert_of(node, *, authority=AUTHORITY, apps=("*",), issued=NOW - HOUR, expires=NOW + HOUR):
    return membership.issue_certificate(
        authority, node.node_id, name="n", apps=apps, issued_ms=issued, expires_ms=expires,
        serial=7,
    )  # fmt: skip


def packed(node, **options) -> bytes:
    return membership.pack(cert_of(node, **options))


def reason_of(call, *args) -> str:
    with pytest.raises(RemoteProtocolError) as caught:
        call(*args)
    return caught.value.reason


@pytest.fixture
def policy():
    return MeshPolicy(AUTHORITY.public_key)


def test_a_member_is_admitted_and_every_other_verdict_has_its_reason(policy):
    assert policy.judge_peer(packed(PEER), PEER.node_id, NOW).node_id == PEER.node_id
    judge = policy.judge_peer
    assert reason_of(judge, None, PEER.node_id, NOW) == "no_certificate"
    assert reason_of(judge, b"", PEER.node_id, NOW) == "no_certificate"
    assert reason_of(judge, b"\x92junk", PEER.node_id, NOW) == "bad_certificate"
    other = packed(PEER, authority=OTHER_AUTHORITY)
    assert reason_of(judge, other, PEER.node_id, NOW) == "wrong_authority"
    assert reason_of(judge, packed(NODE), PEER.node_id, NOW) == "wrong_node"
    expired = packed(PEER, issued=NOW - 2 * HOUR, expires=NOW - HOUR)
    assert reason_of(judge, expired, PEER.node_id, NOW) == "expired"
    future = packed(PEER, issued=NOW + HOUR, expires=NOW + 2 * HOUR)
    assert reason_of(judge, future, PEER.node_id, NOW) == "not_yet_valid"


def test_a_forged_signature_is_bad_certificate(policy):
    real = cert_of(PEER)
    forged = membership.SignedCertificate(
        real.body, OTHER_AUTHORITY.sign(membership.CERT_DOMAIN + real.body), real.certificate
    )
    assert reason_of(policy.judge_peer, membership.pack(forged), PEER.node_id, NOW) == (
        "bad_certificate"
    )


def test_a_certificate_is_verified_once_and_its_times_are_judged_every_time(policy):
    cert = packed(PEER)
    for _ in range(5):
        policy.judge_peer(cert, PEER.node_id, NOW)
    assert policy.verifications == 1
    assert reason_of(policy.judge_peer, cert, PEER.node_id, NOW + 2 * HOUR) == "expired"
    assert reason_of(policy.judge_peer, cert, NODE.node_id, NOW) == "wrong_node"


def test_the_cache_is_bounded():
    policy = MeshPolicy(AUTHORITY.public_key, cache_size=2)
    certs = [packed(PEER, issued=NOW - HOUR + i) for i in range(3)]
    for cert in certs:
        policy.judge_peer(cert, PEER.node_id, NOW)
    policy.judge_peer(certs[0], PEER.node_id, NOW)  # dropped: verified again
    assert policy.verifications == 4


def test_a_revocation_voids_earlier_certificates_and_is_news_once(policy):
    revocation = membership.issue_revocation(AUTHORITY, PEER.node_id, issued_ms=NOW)
    assert policy.accept_revocation(membership.pack(revocation), NOW).node_id == PEER.node_id
    assert policy.accept_revocation(membership.pack(revocation), NOW) is None
    assert reason_of(policy.judge_peer, packed(PEER), PEER.node_id, NOW) == "revoked"
    later = packed(PEER, issued=NOW + 1, expires=NOW + HOUR)  # admitted again afterwards
    assert policy.judge_peer(later, PEER.node_id, NOW + 2).node_id == PEER.node_id
    assert policy.revocations() == [membership.pack(revocation)]
    assert policy.is_revoked(PEER.node_id) and not policy.is_revoked(NODE.node_id)


def test_forged_and_foreign_revocations_are_refused(policy):
    foreign = membership.issue_revocation(OTHER_AUTHORITY, PEER.node_id, issued_ms=NOW)
    assert reason_of(policy.accept_revocation, membership.pack(foreign), NOW) == "wrong_authority"
    real = membership.issue_revocation(AUTHORITY, PEER.node_id, issued_ms=NOW)
    forged = membership.SignedRevocation(
        real.body, OTHER_AUTHORITY.sign(membership.REVOKE_DOMAIN + real.body), real.revocation
    )
    assert reason_of(policy.accept_revocation, forged, NOW) == "bad_revocation"
    assert reason_of(policy.accept_revocation, b"\xc0", NOW) == "bad_revocation"
    assert policy.revoked == {}


def test_the_revocations_held_are_bounded_oldest_out():
    policy = MeshPolicy(AUTHORITY.public_key, max_revocations=2)
    nodes = [Identity.from_seed(bytes([i]) * 32) for i in range(3)]
    for number, node in enumerate(nodes):
        revocation = membership.issue_revocation(AUTHORITY, node.node_id, issued_ms=NOW + number)
        policy.accept_revocation(revocation, NOW)
    assert set(policy.revoked) == {nodes[1].node_id, nodes[2].node_id}
    assert len(policy.revocations()) == 2


def record(identity, *, apps=(), ext=None, seq=1):
    return Record.build(identity, seq, NOW, 60_000, "n", "1", [], {}, dict.fromkeys(apps, ""),
                        ext or {})  # fmt: skip


def test_a_record_needs_its_origins_certificate_and_claims_only_its_apps(policy):
    shop_only = {"cert": packed(PEER, apps=("shop",))}
    assert policy.check_record(record(PEER, apps=["shop"], ext=shop_only).record, NOW)
    claim = record(PEER, apps=["inventory", "shop"], ext=shop_only).record
    assert reason_of(policy.check_record, claim, NOW) == "app_not_allowed"
    assert reason_of(policy.check_record, record(PEER).record, NOW) == "no_certificate"
    borrowed = record(NODE, ext=shop_only).record  # a member's certificate on another record
    assert reason_of(policy.check_record, borrowed, NOW) == "wrong_node"
    assert certificate_of(record(PEER, ext=shop_only).record.ext) == shop_only["cert"]
    assert certificate_of({"cert": 5}) is None


def test_the_store_refuses_what_the_policy_refuses_counted_apart(policy):
    store = RecordStore(NODE.node_id, policy=policy.check_record)
    outsider = record(PEER)
    verdict = store.offer(outsider.body, outsider.signature, NOW, source=PEER.node_id)
    assert (verdict.accepted, verdict.reason, verdict.membership) == (False, "no_certificate", True)
    assert PEER.node_id not in store
    assert store.membership == {"no_certificate": 1}
    assert store.counters.get("no_certificate") is None  # not a record verdict
    member = record(PEER, ext={"cert": packed(PEER)}, seq=2)
    assert store.offer(member.body, member.signature, NOW, source=PEER.node_id).accepted
    assert store.forget(PEER.node_id) and PEER.node_id not in store
    assert not store.forget(PEER.node_id)


def test_hello_carries_a_certificate_and_the_peer_check_refuses_with_its_reason(policy):
    cert = packed(NODE)
    ours = Handshake(NODE, "initiator", cert=cert)
    hello = codec.decode(codec.encode(ours.start()[0]))
    assert hello.cert == cert

    def check(hello: Hello) -> None:
        policy.judge_peer(hello.cert, hello.node_id, NOW)

    theirs = Handshake(PEER, "responder", peer_check=check)
    theirs.start()
    with pytest.raises(RemoteProtocolError) as caught:
        theirs.receive(Handshake(NODE, "initiator").start()[0])  # no certificate
    assert caught.value.reason == "no_certificate"
    assert theirs.state is HandshakeState.FAILED
    admitted = Handshake(PEER, "responder", peer_check=check)
    admitted.start()
    assert admitted.receive(hello) and admitted.state is HandshakeState.AWAIT_AUTH


def test_frames_of_closed_mode_have_bounded_sizes():
    revocation = membership.pack(membership.issue_revocation(AUTHORITY, PEER.node_id, issued_ms=1))
    assert codec.decode(codec.encode(Revoke(revocation))) == Revoke(revocation)
    with pytest.raises(LocalProtocolError):
        Revoke(b"x" * 401)
    with pytest.raises(LocalProtocolError):
        Hello(1, NODE.node_id, NODE.public_key, bytes(32), "", "initiator", cert=b"x" * 2201)
    too_big = msgpack.packb({"t": "revoke", "r": b"x" * 600})
    assert reason_of(codec.decode, too_big) == "frame_too_large"
    assert reason_of(codec.decode, msgpack.packb({"t": "revoke", "r": b"x" * 401})) == "bad_field"


def test_the_store_drops_a_record_whose_certificate_lapses(policy):
    store = RecordStore(NODE.node_id, policy=policy.check_record)
    short = {"cert": packed(PEER, issued=NOW - 1000, expires=NOW + 1000)}
    member = record(PEER, ext=short)
    assert store.offer(member.body, member.signature, NOW, source=PEER.node_id).accepted
    assert store.recheck(NOW + 500) == []
    assert store.recheck(NOW + 1000) == [PEER.node_id]
    assert PEER.node_id not in store and store.membership == {"expired": 1}
    assert RecordStore(NODE.node_id).recheck(NOW) == []  # open mode: no policy, nothing to do


@fuzz(300)
@given(
    data=st.binary(max_size=3000)
    | st.builds(lambda x: membership.pack(cert_of(PEER))[:x], st.integers(0, 200))
)
def test_garbage_certificates_and_revocations_are_remote_errors_only(data):
    policy = MeshPolicy(AUTHORITY.public_key)
    for call in (
        lambda: policy.judge_peer(data, PEER.node_id, NOW),
        lambda: policy.accept_revocation(data, NOW),
        lambda: policy.check_record(record(PEER, ext={"cert": data}).record, NOW),
    ):
        try:
            call()
        except RemoteProtocolError as exc:
            assert exc.reason in MEMBERSHIP_REASONS


def test_a_revocation_held_already_is_known_without_a_signature_check(monkeypatch):
    from xio.peering import admission

    judged = []
    judge = admission.judge_revocation
    monkeypatch.setattr(admission, "judge_revocation", lambda *a: judged.append(1) or judge(*a))
    policy = MeshPolicy(AUTHORITY.public_key)
    signed = membership.issue_revocation(AUTHORITY, PEER.node_id, issued_ms=NOW)
    assert policy.accept_revocation(membership.pack(signed), NOW) is not None
    for _ in range(3):  # a member replaying it, again and again
        assert policy.accept_revocation(membership.pack(signed), NOW) is None
    assert len(judged) == 1  # its signature was checked once
