"""Link encryption core (xio/peering/cipher.py): keys both ends agree on, frames nobody can alter.

The deterministic vectors at the end are the ones docs/PROTOCOL.md section 6.1 gives; run
``python -m pytest tests/test_cipher.py -k vector -s`` to print them.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering import cipher
from xio.peering.cipher import (
    EphemeralKey,
    ReceiveCipher,
    SendCipher,
    derive_link_keys,
    transcript_hash,
    transcript_v2,
)
from xio.peering.handshake import Role, transcript

from .fuzzing import fuzz

I_ID, R_ID = "a" * 32, "b" * 32  # node-id shaped; the cipher does not check them
I_NONCE, R_NONCE = bytes(range(32)), bytes(range(32, 64))


def link(**bounds):
    """Return (initiator ciphers, responder ciphers) of one fresh link."""
    i_eph, r_eph = EphemeralKey(), EphemeralKey()
    salt = transcript_hash(I_ID, I_NONCE, i_eph.public, R_ID, R_NONCE, r_eph.public)
    i_pub, r_pub = i_eph.public, r_eph.public
    initiator = derive_link_keys(i_eph, r_pub, salt, Role.INITIATOR, **bounds)
    responder = derive_link_keys(r_eph, i_pub, salt, "responder", **bounds)
    return initiator, responder


class _Reason:
    """Expect a RemoteProtocolError with this reason (pytest.raises cannot check the reason)."""

    def __init__(self, reason):
        self.reason = reason

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        assert kind is RemoteProtocolError, f"expected {self.reason}, got {kind}"
        assert exc.reason == self.reason
        return True


# -- keys ----------------------------------------------------------------------------------


def test_both_ends_derive_matching_keys_and_frames_pass_both_ways():
    initiator, responder = link()
    for n in range(5):
        frame = b"req %d" % n
        assert responder.receive.open(initiator.send.seal(frame)) == frame
        assert initiator.receive.open(responder.send.seal(frame * 2)) == frame * 2


def test_the_two_directions_use_different_keys():
    initiator, responder = link()
    sealed = initiator.send.seal(b"ping")
    with _Reason("bad_frame_mac"):
        initiator.receive.open(sealed)  # our own frame reflected back at us


def test_a_different_transcript_gives_different_keys():
    i_eph, r_eph = EphemeralKey(), EphemeralKey()
    salt = transcript_hash(I_ID, I_NONCE, i_eph.public, R_ID, R_NONCE, r_eph.public)
    other = transcript_hash(I_ID, R_NONCE, i_eph.public, R_ID, I_NONCE, r_eph.public)
    i_pub = i_eph.public
    sender = derive_link_keys(i_eph, r_eph.public, salt, "initiator").send
    receiver = derive_link_keys(r_eph, i_pub, other, "responder").receive
    with _Reason("bad_frame_mac"):
        receiver.open(sender.seal(b"x"))


def test_derivation_is_hkdf_sha256_of_the_x25519_secret_salted_with_the_transcript_hash():
    i_eph, r_eph = EphemeralKey(bytes([1] * 32)), EphemeralKey(bytes([2] * 32))
    shared = i_eph.exchange(r_eph.public)
    salt = transcript_hash(I_ID, I_NONCE, i_eph.public, R_ID, R_NONCE, r_eph.public)
    okm = HKDF(hashes.SHA256(), 64, salt, b"xio-link-keys-v2").derive(shared)
    ours = derive_link_keys(i_eph, r_eph.public, salt, "initiator")
    assert ChaCha20Poly1305(okm[:32]).decrypt(bytes(12), ours.send.seal(b"frame"), b"") == b"frame"
    assert ours.send._key == okm[:32] and ours.receive._key == okm[32:]


def test_own_hkdf_matches_cryptography_hkdf():
    for salt in (b"", b"s" * 32, b"x" * 80):
        ikm = hashlib.sha256(salt).digest()
        expected = HKDF(hashes.SHA256(), 64, salt or None, b"info").derive(ikm)
        assert cipher.hkdf_sha256(ikm, salt, b"info", 64) == expected


def test_transcript_hash_is_sha256_of_the_role_free_v2_transcript():
    fields = (I_ID, I_NONCE, b"e" * 32, R_ID, R_NONCE, b"f" * 32)
    signed = transcript_v2("initiator", *fields)
    assert signed.startswith(b"xio-link-v2\x00")
    assert signed != transcript("initiator", I_ID, I_NONCE, R_ID, R_NONCE)
    assert signed != transcript_v2("responder", *fields)
    # the role-free part: the same domain and msgpack array without its first element
    import msgpack

    body = b"xio-link-v2\x00" + msgpack.packb(list(fields), use_bin_type=True)
    assert transcript_hash(*fields) == hashlib.sha256(body).digest()


def test_the_ephemeral_private_key_is_forgotten_once_used():
    i_eph, r_eph = EphemeralKey(), EphemeralKey()
    derive_link_keys(i_eph, r_eph.public, bytes(32), "initiator")
    with pytest.raises(LocalProtocolError):
        i_eph.exchange(r_eph.public)


P = 2**255 - 19
LOW_ORDER = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
    P,
    P + 1,
]
LOW_ORDER_KEYS = [n.to_bytes(32, "little") for n in LOW_ORDER] + [
    (n + 2**255).to_bytes(32, "little")
    for n in LOW_ORDER[:4]  # high bit set: X25519 masks it
]


@pytest.mark.parametrize("public", LOW_ORDER_KEYS, ids=lambda b: b.hex()[:8] + "…" + b.hex()[-4:])
def test_a_small_order_peer_key_is_refused(public):
    own = EphemeralKey()
    with _Reason("bad_key_exchange"):
        derive_link_keys(own, public, bytes(32), "initiator")
    with pytest.raises(LocalProtocolError):  # forgotten all the same: one use per link
        own.exchange(EphemeralKey().public)


@pytest.mark.parametrize("public", [b"", b"x" * 31, b"x" * 33, "x" * 32])
def test_a_peer_key_of_the_wrong_length_is_refused(public):
    with _Reason("bad_key_exchange"):
        derive_link_keys(EphemeralKey(), public, bytes(32), "initiator")


def test_a_bad_role_is_the_callers_mistake():
    with pytest.raises(LocalProtocolError):
        derive_link_keys(EphemeralKey(), EphemeralKey().public, bytes(32), "relay")


# -- frames --------------------------------------------------------------------------------


def test_one_flipped_bit_anywhere_is_bad_frame_mac():
    frame = b"\x82\xa1t\xa3req\xa2id\x07" + b"body" * 10
    sealed = link()[0].send.seal(frame)
    assert len(sealed) == len(frame) + 16 and frame not in sealed
    for bit in range(len(sealed) * 8):
        initiator, responder = link()
        good = initiator.send.seal(frame)
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        with _Reason("bad_frame_mac"):
            responder.receive.open(bytes(bad))


def test_truncated_or_extended_messages_are_bad_frame_mac():
    for cut in (0, 15, -1, None):
        initiator, responder = link()
        sealed = initiator.send.seal(b"a frame")
        bad = sealed + b"\0" if cut is None else sealed[:cut]
        with _Reason("bad_frame_mac"):
            responder.receive.open(bad)


def test_replay_is_bad_frame_mac():
    initiator, responder = link()
    first = initiator.send.seal(b"one")
    assert responder.receive.open(first) == b"one"
    with _Reason("bad_frame_mac"):
        responder.receive.open(first)


def test_reorder_and_drop_are_bad_frame_mac():
    initiator, responder = link()
    first, second = initiator.send.seal(b"one"), initiator.send.seal(b"two")
    with _Reason("bad_frame_mac"):
        responder.receive.open(second)
    # after a failure the direction is spent: the link closes
    with pytest.raises(LocalProtocolError):
        responder.receive.open(first)


def test_nonce_is_four_zero_bytes_and_the_little_endian_counter():
    key = bytes(range(32))
    sender = SendCipher(key)
    for n in range(3):
        sealed = sender.seal(b"frame %d" % n)
        nonce = bytes(4) + n.to_bytes(8, "little")
        assert ChaCha20Poly1305(key).decrypt(nonce, sealed, b"") == b"frame %d" % n


def test_rekey_after_the_message_bound_on_both_ends():
    initiator, responder = link(rekey_messages=3)
    keys = [initiator.send._key]
    for n in range(10):
        assert responder.receive.open(initiator.send.seal(b"%d" % n)) == b"%d" % n
        keys.append(initiator.send._key)
    assert initiator.send.rekeys == responder.receive.rekeys == 3
    assert initiator.send.counter == responder.receive.counter == 1
    assert len(set(keys)) == 4
    old = keys[0]
    assert cipher.hkdf_sha256(old, b"", b"xio-link-rekey-v2", 32) == keys[3]


def test_rekey_after_the_byte_bound_on_both_ends():
    initiator, responder = link(rekey_bytes=100)
    for size in (60, 39, 1, 150, 0, 99, 1):  # rekeys after 100, 250 and 100 bytes
        frame = b"x" * size
        assert responder.receive.open(initiator.send.seal(frame)) == frame
    assert initiator.send.rekeys == responder.receive.rekeys == 3
    assert initiator.send.bytes_since_rekey == responder.receive.bytes_since_rekey == 0


def test_a_frame_sealed_before_the_rekey_does_not_open_after_it():
    initiator, responder = link(rekey_messages=1)
    first = initiator.send.seal(b"one")
    responder.receive.open(first)
    with _Reason("bad_frame_mac"):
        responder.receive.open(first)  # counter 0 again, but under the next key


def test_the_default_bounds():
    assert cipher.REKEY_MESSAGES == 2**16 and cipher.REKEY_BYTES == 2**30
    sender = SendCipher(bytes(32))
    sender.counter = 2**16 - 1
    sender.seal(b"x")
    assert sender.rekeys == 1 and sender.counter == 0


def test_a_bound_that_would_let_the_counter_wrap_is_refused():
    with pytest.raises(ValueError):
        SendCipher(bytes(32), rekey_messages=2**64 + 1)
    sender = SendCipher(bytes(32), rekey_messages=2**64)
    sender.counter = 2**64 - 1
    sender.seal(b"last")  # the last nonce of the key; then a new key, counter 0
    assert sender.counter == 0 and sender.rekeys == 1


def test_skip_keeps_both_ends_in_step_across_a_rekey():
    initiator, responder = link(rekey_messages=4, rekey_bytes=1000)
    for n in range(12):
        frame = b"y" * (n * 50)
        sealed = initiator.send.seal(frame)
        if n % 3 == 1:
            responder.receive.skip(len(sealed))
        else:
            assert responder.receive.open(sealed) == frame
        assert responder.receive.counter == initiator.send.counter
        assert responder.receive._key == initiator.send._key


def test_skip_of_less_than_a_tag_is_bad_frame_mac():
    with _Reason("bad_frame_mac"):
        ReceiveCipher(bytes(32)).skip(15)


def test_peek_gives_the_plaintext_prefix_and_changes_nothing():
    initiator, responder = link()
    initiator.send.seal(b"advance the counter")
    responder.receive.skip(len(b"advance the counter") + 16)
    frame = b"\x84\xa1t\xa3req\xa2id\xcd\x01\x00" + bytes(range(256)) * 4
    sealed = initiator.send.seal(frame)
    before = (responder.receive.counter, responder.receive.bytes_since_rekey)
    for n in (0, 1, 63, 64, 65, 200):
        assert responder.receive.peek(sealed[:n]) == frame[:n]
    assert (responder.receive.counter, responder.receive.bytes_since_rekey) == before
    assert responder.receive.open(sealed) == frame


# -- any input -----------------------------------------------------------------------------


@fuzz(200)
@given(st.lists(st.binary(max_size=2000), max_size=20), st.integers(1, 5), st.integers(1, 3000))
def test_random_frames_round_trip(frames, messages, nbytes):
    initiator, responder = link(rekey_messages=messages, rekey_bytes=nbytes)
    for frame in frames:
        sealed = initiator.send.seal(frame)
        assert responder.receive.peek(sealed[: len(frame)]) == frame
        assert responder.receive.open(sealed) == frame


@fuzz(300)
@given(st.lists(st.binary(max_size=200), max_size=5), st.binary(min_size=0, max_size=40))
def test_random_bytes_only_ever_raise_the_protocol_error(messages, public):
    initiator, responder = link()
    try:
        derive_link_keys(EphemeralKey(), public, bytes(32), "responder")
    except RemoteProtocolError as exc:
        assert exc.reason == "bad_key_exchange"
    for message in messages:
        try:
            responder.receive.open(message)
        except RemoteProtocolError as exc:
            assert exc.reason == "bad_frame_mac"
            break
        pytest.fail("random bytes opened")  # pragma: no cover


# -- deterministic vectors (docs/PROTOCOL.md 6.1) ------------------------------------------

VECTOR_I_PRIVATE = bytes(range(1, 33))
VECTOR_R_PRIVATE = bytes(range(33, 65))
VECTOR_FRAME = b"\x82\xa1t\xa4ping\xa1n\x01"  # {"t": "ping", "n": 1}
EXPECTED = {
    "i_eph": "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c",
    "r_eph": "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b",
    "shared": "a84dc7c3c8f058b1b2dc4cd1e9b5dc0a7987f88b6a9564cde3391fc421159e77",
    "salt": "e02735a50fb9fbfe203e9ece14d6ea8f9aa8a43a70dd222ea62f998d0b55927f",
    "k_i2r": "4e03049507a9f71e1e04c76017dffccfd1a381e3d1dae149516e42204a8dd4a5",
    "k_r2i": "35605fa0379eb20998394b6237fc73c9e86c3dd40b4622ef4caca59cc9b4d19e",
    "sealed_0": "2427486e27d41196c2d310268b505da8413cdb5a6ec2d838beb6d0",
    "sealed_1": "4371d254d36610a8189bb5d9407f23e5f767bc879a865938f44a2d",
    "k_i2r_rekeyed": "f7fd00e9fde6f26bca19d0ab5bec58a4647cf74daba9cead7c4d1e09fa009f38",
}


def vector():
    i_eph, r_eph = EphemeralKey(VECTOR_I_PRIVATE), EphemeralKey(VECTOR_R_PRIVATE)
    shared = i_eph.exchange(r_eph.public)
    salt = transcript_hash(I_ID, I_NONCE, i_eph.public, R_ID, R_NONCE, r_eph.public)
    out = {"i_eph": i_eph.public, "r_eph": r_eph.public, "shared": shared, "salt": salt}
    ciphers = derive_link_keys(i_eph, r_eph.public, salt, "initiator", rekey_messages=2)
    out["k_i2r"], out["k_r2i"] = ciphers.send._key, ciphers.receive._key
    out["sealed_0"] = ciphers.send.seal(VECTOR_FRAME)
    out["sealed_1"] = ciphers.send.seal(VECTOR_FRAME)
    out["k_i2r_rekeyed"] = ciphers.send._key
    return {name: value.hex() for name, value in out.items()}


def test_vector():
    got = vector()
    for name, value in got.items():
        print(f"{name:14} {value}")
    assert got == EXPECTED
    # the sealed vectors open with the bare AEAD, key and nonce as section 6.1 writes them
    key, rekeyed = bytes.fromhex(got["k_i2r"]), bytes.fromhex(got["k_i2r_rekeyed"])
    for counter in (0, 1):
        nonce = bytes(4) + counter.to_bytes(8, "little")
        sealed = bytes.fromhex(got[f"sealed_{counter}"])
        assert ChaCha20Poly1305(key).decrypt(nonce, sealed, b"") == VECTOR_FRAME
    assert HKDF(hashes.SHA256(), 32, None, b"xio-link-rekey-v2").derive(key) == rekeyed
