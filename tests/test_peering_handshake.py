"""Identity and the link handshake, run as in-memory pairs through the real codec."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xio.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from xio.peering import keyfile
from xio.peering.cipher import EphemeralKey
from xio.peering.codec import Auth, Bye, Hello, Ping, decode, encode
from xio.peering.handshake import (
    HANDSHAKE_REASONS,
    Handshake,
    HandshakeState,
    Role,
    transcript,
    transcript_v2,
)
from xio.peering.identity import Identity, is_node_id, node_id_of, verify
from xio.peering.keyfile import KEY_FILE
from xio.peering.routing import keep_link

from .fuzzing import fuzz

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(32, 64)))
MALLORY = Identity.from_seed(bytes(range(64, 96)))
ALICE_EPH = EphemeralKey(bytes(range(1, 33)))  # its public half goes in the hellos below

# -- identity ----------------------------------------------------------------------------------


def test_node_id_is_base32_of_truncated_sha256():
    assert len(ALICE.node_id) == 32 and is_node_id(ALICE.node_id)
    assert node_id_of(ALICE.public_key) == ALICE.node_id
    assert Identity.from_seed(bytes(range(32))).node_id == ALICE.node_id
    assert ALICE.node_id != BOB.node_id
    assert not is_node_id(ALICE.node_id.upper()) and not is_node_id(ALICE.node_id + "a")
    with pytest.raises(LocalProtocolError):
        node_id_of(b"short")


def test_sign_and_verify():
    signature = ALICE.sign(b"data")
    assert len(signature) == 64 and verify(ALICE.public_key, signature, b"data")
    assert not verify(ALICE.public_key, signature, b"Data")
    assert not verify(BOB.public_key, signature, b"data")
    assert not verify(ALICE.public_key, signature, 4)  # not bytes(4) == four zero bytes
    with pytest.raises(LocalProtocolError):
        ALICE.sign("text")


@pytest.mark.parametrize(
    ("key", "signature"),
    [
        (b"\x00" * 31, b"\x00" * 64),
        (b"\xff" * 32, b"\x00" * 64),  # not a point on the curve
        ("text", b"\x00" * 64),
        (None, None),
        (b"\x01" * 32, b"\x00" * 63),
        (b"\x01" * 32, 12),
    ],
)
def test_verify_never_raises(key, signature):
    assert verify(key, signature, b"data") is False


def test_load_or_create_writes_a_private_pem_once(tmp_path):
    state = tmp_path / "state"
    first = keyfile.load_or_create(state)
    path = state / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keyfile.load_or_create(state).node_id == first.node_id
    assert [p.name for p in state.iterdir()] == [KEY_FILE]


def test_load_accepts_a_raw_seed(tmp_path):
    path = tmp_path / KEY_FILE
    path.write_bytes(bytes(range(32)))
    path.chmod(0o600)
    assert keyfile.load_or_create(tmp_path).node_id == ALICE.node_id


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (bytes(range(32)), 0o644, "readable by group or others"),
        (b"garbage", 0o600, "not an unencrypted PKCS#8 PEM"),
    ],
)
def test_bad_key_files_are_config_errors(tmp_path, content, mode, message):
    path = tmp_path / KEY_FILE
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=message):
        keyfile.load_or_create(tmp_path)


# -- handshake ---------------------------------------------------------------------------------


def wire(message):
    """Send a frame through the real codec, as a link would."""
    return decode(encode(message))


def run_pair(initiator: Handshake, responder: Handshake, initiator_reads_first: bool = True):
    """Run a handshake to completion; both orders of delivery must work."""
    to_responder = list(initiator.start())
    to_initiator = list(responder.start())
    ends = [(initiator, to_initiator, to_responder), (responder, to_responder, to_initiator)]
    if not initiator_reads_first:
        ends.reverse()
    while to_initiator or to_responder:
        for end, inbox, outbox in ends:
            while inbox:
                outbox.extend(end.receive(wire(inbox.pop(0))))


def pair(**responder_kwargs):
    initiator = Handshake(ALICE, Role.INITIATOR, "alice", nonce=b"\x11" * 32)
    responder = Handshake(BOB, "responder", "bob", nonce=b"\x22" * 32, **responder_kwargs)
    return initiator, responder


@pytest.mark.parametrize("initiator_reads_first", [True, False])
def test_pair_establishes_in_either_order(initiator_reads_first):
    initiator, responder = pair()
    run_pair(initiator, responder, initiator_reads_first)
    assert initiator.established and responder.established
    assert (initiator.peer_id, initiator.peer_key, initiator.peer_name) == (
        BOB.node_id,
        BOB.public_key,
        "bob",
    )
    assert (responder.peer_id, responder.peer_name) == (ALICE.node_id, "alice")
    assert initiator.link_key == responder.link_key == (ALICE.node_id, b"\x11" * 32)


def test_pinning_the_right_peer_works_on_both_sides():
    initiator = Handshake(ALICE, "initiator", expected_peer_id=BOB.node_id)
    responder = Handshake(BOB, "responder", expected_peer_id=ALICE.node_id)
    run_pair(initiator, responder)
    assert initiator.established and responder.established


def test_auth_signs_the_documented_v2_transcript_with_both_ephemeral_keys():
    initiator, responder = pair()
    initiator.start()
    hello = responder.start()[0]
    (auth,) = initiator.receive(wire(hello))
    i_eph, r_eph = initiator.eph, hello.eph
    assert len(i_eph) == len(r_eph) == 32 and i_eph != r_eph
    signed = transcript_v2(
        "initiator", ALICE.node_id, b"\x11" * 32, i_eph, BOB.node_id, b"\x22" * 32, r_eph
    )
    assert signed.startswith(b"xio-link-v2\x00")
    assert verify(ALICE.public_key, auth.signature, signed)
    v1 = transcript("initiator", ALICE.node_id, b"\x11" * 32, BOB.node_id, b"\x22" * 32)
    assert not verify(ALICE.public_key, auth.signature, v1)  # version 1 is not signed any more


def test_a_hello_carries_a_fresh_ephemeral_key_per_link():
    first, second = Handshake(ALICE, "initiator"), Handshake(ALICE, "initiator")
    (hello_1,), (hello_2,) = first.start(), second.start()
    assert hello_1.version == 2
    assert len(hello_1.eph) == 32 and hello_1.eph != hello_2.eph


def test_both_ends_derive_matching_ciphers():
    initiator, responder = pair()
    run_pair(initiator, responder)
    for sender, receiver in ((initiator, responder), (responder, initiator)):
        sealed = sender.ciphers.send.seal(b"frame")
        assert b"frame" not in sealed
        assert receiver.ciphers.receive.open(sealed) == b"frame"
    # Forward secrecy: the ephemeral private keys are gone once the keys are derived.
    with pytest.raises(LocalProtocolError):
        initiator.ephemeral.exchange(responder.eph)


def test_ciphers_are_known_once_our_auth_is_made():
    handshake = started()
    assert handshake.ciphers is None
    handshake.receive(hello_of())
    assert handshake.ciphers is not None and not handshake.established


def started(identity=BOB, role="responder", **kwargs) -> Handshake:
    handshake = Handshake(identity, role, **kwargs)
    handshake.start()
    return handshake


def hello_of(identity=ALICE, **changes) -> Hello:
    fields = dict(
        version=2,
        node_id=identity.node_id,
        public_key=identity.public_key,
        nonce=b"\x11" * 32,
        name="x",
        role="initiator",
        eph=ALICE_EPH.public,
    )
    return Hello(**{**fields, **changes})


def refused(handshake: Handshake, message) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        handshake.receive(message)
    assert handshake.state is HandshakeState.FAILED
    assert info.value.reason in HANDSHAKE_REASONS
    return info.value.reason


@pytest.mark.parametrize(
    ("handshake_kwargs", "hello", "reason"),
    [
        ({}, hello_of(version=1), "bad_version"),  # v1 links were plaintext: refused
        ({}, hello_of(version=1, eph=None), "bad_version"),
        ({}, hello_of(version=3), "bad_version"),
        ({}, hello_of(role="responder"), "role_conflict"),
        ({}, hello_of(node_id=MALLORY.node_id), "id_mismatch"),
        ({}, hello_of(BOB), "self_link"),
        ({"expected_peer_id": MALLORY.node_id}, hello_of(), "pinned_id_mismatch"),
        ({}, hello_of(expect=MALLORY.node_id), "pinned_id_mismatch"),
        ({}, hello_of(eph=None), "bad_key_exchange"),
        ({}, hello_of(eph=bytes(32)), "bad_key_exchange"),  # small order: all-zero secret
        ({}, hello_of(eph=(1).to_bytes(32, "little")), "bad_key_exchange"),
    ],
)
def test_bad_hellos(handshake_kwargs, hello, reason):
    assert refused(started(**handshake_kwargs), hello) == reason


def test_bad_auth_signatures():
    for signature in (bytes(64), MALLORY.sign(b"anything")):
        handshake = started()
        handshake.receive(hello_of())
        assert refused(handshake, Auth(signature)) == "bad_signature"


def test_reflected_auth_is_refused():
    # Mallory relays Alice's hello to Bob, and echoes Bob's own auth back to him.
    bob = started()
    (bobs_auth,) = bob.receive(hello_of())
    assert refused(bob, bobs_auth) == "bad_signature"


def test_auth_replayed_on_another_link_is_refused():
    # Mallory recorded Alice's hello and auth on an earlier link and replays both on a new one.
    initiator, responder = pair()
    (hello,), (bobs_hello,) = initiator.start(), responder.start()
    (stolen,) = initiator.receive(wire(bobs_hello))
    responder.receive(wire(hello))
    assert responder.receive(wire(stolen)) == []  # genuine on its own link
    fresh = started()  # a new nonce and ephemeral key for Bob
    fresh.receive(wire(hello))
    assert refused(fresh, wire(stolen)) == "bad_signature"


@pytest.mark.parametrize(
    "frames",
    [
        [Ping(1)],
        [Auth(bytes(64))],  # auth before hello
        [hello_of(), hello_of()],  # second hello
    ],
)
def test_unexpected_frames(frames):
    handshake = started()
    for message in frames[:-1]:
        handshake.receive(message)
    assert refused(handshake, frames[-1]) == "unexpected_frame"


def test_hello_after_establishment_is_unexpected():
    initiator, responder = pair()
    run_pair(initiator, responder)
    with pytest.raises(RemoteProtocolError, match="unexpected_frame: hello in state ESTABLISHED"):
        initiator.receive(hello_of(BOB, role="responder"))


def test_bye_during_handshake_reports_the_peers_reason():
    with pytest.raises(RemoteProtocolError, match="peer_bye.*pinned_id_mismatch") as info:
        started().receive(Bye("pinned_id_mismatch"))
    assert info.value.reason == "peer_bye"


def test_local_misuse_names_event_and_state():
    handshake = Handshake(BOB, "responder")
    with pytest.raises(LocalProtocolError, match="hello in state IDLE"):
        handshake.receive(hello_of())
    with pytest.raises(LocalProtocolError, match="link_key asked in state IDLE"):
        handshake.link_key  # noqa: B018
    handshake.start()
    with pytest.raises(LocalProtocolError, match="start a handshake in state AWAIT_HELLO"):
        handshake.start()
    refused(handshake, Ping(1))
    with pytest.raises(LocalProtocolError, match="hello in state FAILED"):
        handshake.receive(hello_of())
    initiator, responder = pair()
    run_pair(initiator, responder)
    with pytest.raises(LocalProtocolError, match="ping belongs to the link"):
        initiator.receive(Ping(1))
    with pytest.raises(LocalProtocolError):
        Handshake(BOB, "boss")
    with pytest.raises(LocalProtocolError):
        Handshake(BOB, "initiator", nonce=b"short")
    with pytest.raises(LocalProtocolError):
        Handshake(BOB, "initiator", expected_peer_id="nobody")


def test_duplicate_links_are_resolved_the_same_on_both_ends():
    # Both nodes dialled each other at once: two established links between one pair.
    a_to_b = pair()
    b_to_a = (Handshake(BOB, "initiator"), Handshake(ALICE, "responder"))
    run_pair(*a_to_b)
    run_pair(*b_to_a)
    alice_view = keep_link(a_to_b[0].link_key, b_to_a[1].link_key)
    bob_view = keep_link(b_to_a[0].link_key, a_to_b[1].link_key)
    kept = a_to_b if ALICE.node_id < BOB.node_id else b_to_a
    assert alice_view == bob_view == kept[0].link_key


message_strategy = st.one_of(
    st.builds(hello_of, role=st.sampled_from(["initiator", "responder"])),
    st.builds(hello_of, st.sampled_from([ALICE, BOB, MALLORY])),
    st.builds(Auth, st.binary(min_size=64, max_size=64)),
    st.builds(Ping, st.integers(0, 10)),
    st.builds(Bye, st.text(max_size=10)),
)


@fuzz(300)
@given(st.lists(message_strategy, max_size=4))
def test_fuzz_any_frame_sequence_only_raises_protocol_errors(messages):
    handshake = started()
    for message in messages:
        try:
            handshake.receive(message)
        except RemoteProtocolError as exc:
            assert exc.reason in HANDSHAKE_REASONS
            assert handshake.state is HandshakeState.FAILED
            return
        except LocalProtocolError:
            assert handshake.established  # only non-handshake frames after establishment
            return
    assert not handshake.established  # nobody here could sign as Alice for this nonce
