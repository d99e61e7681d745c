"""The test vectors printed in docs/PROTOCOL.md are what this code produces, byte for byte.

The inputs are fixed here and described in the document; every hex value in the document's
``xio-test-vectors`` block is recomputed and compared. To refresh the block after a deliberate
protocol change, run ``python -m tests.test_protocol_vectors`` and paste its output.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xio.peering.cipher import EphemeralKey
from xio.peering.codec import (
    Bye,
    Cancel,
    CreditFrame,
    DataFrame,
    EndFrame,
    Ping,
    Pong,
    RecordFrame,
    RequestFrame,
    ResponseFrame,
    Summary,
    Want,
    decode,
    encode,
)
from xio.peering.handshake import Handshake, HandshakeState, transcript_v2
from xio.peering.identity import Identity, node_id_of, verify
from xio.peering.membership import (
    CERT_DOMAIN,
    REVOKE_DOMAIN,
    armor,
    issue_certificate,
    issue_revocation,
    judge_certificate,
    judge_revocation,
    pack,
    read_armor,
)
from xio.peering.records import RECORD_DOMAIN, Record, parse_record

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
BLOCK = re.compile(r"```text xio-test-vectors\n(.*?)```", re.DOTALL)

SEED_A = bytes(range(0x00, 0x20))
SEED_B = bytes(range(0x20, 0x40))
NONCE_A = b"\x11" * 32
NONCE_B = b"\x22" * 32
EPH_A = bytes(range(0x01, 0x21))  # X25519 private keys, as in section 6.1
EPH_B = bytes(range(0x21, 0x41))
ISSUED_MS = 1_700_000_000_000
CAPS = ("summary",)
SEED_AUTHORITY = bytes(range(0x40, 0x60))
YEAR_MS = 365 * 86_400_000
ARMOR = re.compile(
    r"-----BEGIN XIO MESH CERTIFICATE-----\n.*?-----END XIO MESH CERTIFICATE-----\n", re.DOTALL
)


def compute_vectors() -> dict[str, str]:
    """Compute every vector of the document from the fixed inputs."""
    alice, bob = Identity.from_seed(SEED_A), Identity.from_seed(SEED_B)
    vectors: dict[str, object] = {
        "seed_a": SEED_A,
        "public_key_a": alice.public_key,
        "node_id_a": alice.node_id,
        "seed_b": SEED_B,
        "public_key_b": bob.public_key,
        "node_id_b": bob.node_id,
    }
    # Handshake: Alice dials Bob.
    initiator = Handshake(alice, "initiator", "alpha", nonce=NONCE_A, caps=CAPS, timeout_ms=2500,
                          ephemeral=EphemeralKey(EPH_A))  # fmt: skip
    responder = Handshake(bob, "responder", "beta", nonce=NONCE_B, caps=CAPS, timeout_ms=2500,
                          ephemeral=EphemeralKey(EPH_B))  # fmt: skip
    (hello_a,), (hello_b,) = initiator.start(), responder.start()
    (auth_a,) = initiator.receive(decode(encode(hello_b)))
    (auth_b,) = responder.receive(decode(encode(hello_a)))
    assert responder.receive(decode(encode(auth_a))) == []
    assert initiator.receive(decode(encode(auth_b))) == []
    assert initiator.state is responder.state is HandshakeState.ESTABLISHED
    ids = (alice.node_id, NONCE_A, hello_a.eph, bob.node_id, NONCE_B, hello_b.eph)
    vectors.update(
        eph_private_a=EPH_A,
        eph_private_b=EPH_B,
        hello_initiator_frame=encode(hello_a),
        hello_responder_frame=encode(hello_b),
        transcript_initiator=transcript_v2("initiator", *ids),
        auth_initiator_frame=encode(auth_a),
        transcript_responder=transcript_v2("responder", *ids),
        auth_responder_frame=encode(auth_b),
        # The first message each side sends after its auth: the ping below, sealed (6.1).
        sealed_ping_initiator=initiator.ciphers.send.seal(encode(Ping(5))),
        sealed_ping_responder=responder.ciphers.send.seal(encode(Ping(5))),
    )
    # Alice's record.
    signed = Record.build(
        alice,
        seq=7,
        now_ms=ISSUED_MS,
        lifetime_ms=60_000,
        name="alpha",
        version="0.1.0",
        urls=["ws://192.0.2.1:7700/_xio/ws"],
        links={bob.node_id: 10},
        apps={"inventory": "stock levels"},
    )
    vectors.update(
        record_body=signed.body,
        record_signed_bytes=RECORD_DOMAIN + signed.body,
        record_signature=signed.signature,
        record_frame=encode(RecordFrame(signed.body, signed.signature)),
    )
    # Hot-path and control frames.
    request = RequestFrame(
        request_id=1,
        dst=bob.node_id,
        app="inventory",
        method="GET",
        path="/items/42",
        query="full=1",
        headers=(("Accept", "application/json"), ("X-Xio-Via", alice.node_id)),
        body=b"",
        hops=16,
        ttl_ms=30_000,
    )
    answer = ResponseFrame(1, 200, (("Content-Type", "application/json"),), b'{"id": 42}')
    vectors.update(
        req_frame=encode(request),
        res_frame=encode(answer),
        # Traces (11.2): the same req asking for one, and the res with B's then A's entry.
        req_trace_frame=encode(dataclasses.replace(request, trace=True)),
        res_trace_frame=encode(
            dataclasses.replace(answer, trace=((bob.node_id, 880, 880), (alice.node_id, 210, 1900)))
        ),
        cancel_frame=encode(Cancel(1)),
        # Streamed answers (4.1): the req taking one, its head, a piece, credit and the end.
        req_stream_frame=encode(dataclasses.replace(request, win=262_144)),
        res_head_frame=encode(
            ResponseFrame(1, 200, (("Content-Type", "application/json"),), more=True)
        ),
        data_frame=encode(DataFrame(1, b'{"id": 42}')),
        credit_frame=encode(CreditFrame(1, 65_536)),
        end_frame=encode(EndFrame(1, mac=bytes(range(0x60, 0x70)))),
        end_error_frame=encode(EndFrame(1, error="link to beta closed mid-stream")),
        # Streamed request bodies (4.2): the req, a piece of its body, credit for it, its end.
        req_upload_frame=encode(dataclasses.replace(request, method="POST", more=True)),
        data_up_frame=encode(DataFrame(1, b"hello", True)),
        credit_up_frame=encode(CreditFrame(1, 262_144, True)),
        end_up_frame=encode(EndFrame(1, mac=bytes(range(0x70, 0x80)), up=True)),
        ping_frame=encode(Ping(5)),
        pong_frame=encode(Pong(5)),
        bye_frame=encode(Bye("shutting_down")),
        summary_frame=encode(Summary(((alice.node_id, 7), (bob.node_id, 3)))),
        want_frame=encode(Want((bob.node_id,))),
    )
    vectors.update(signature_vectors(SEED_A, alice))
    vectors.update(membership_vectors(alice, bob))
    return {k: v.hex() if isinstance(v, bytes) else str(v) for k, v in vectors.items()}


def membership_certificate(alice: Identity):
    """The authority's certificate of A (section 8.6), its key included."""
    return issue_certificate(
        Identity.from_seed(SEED_AUTHORITY),
        alice.node_id,
        public_key=alice.public_key,
        name="alpha",
        apps=["inventory", "shop"],
        issued_ms=ISSUED_MS,
        expires_ms=ISSUED_MS + YEAR_MS,
        serial=1,
    )


def membership_vectors(alice: Identity, bob: Identity) -> dict[str, object]:
    """Section 8.6: a certificate of A and a revocation of B by the authority."""
    authority = Identity.from_seed(SEED_AUTHORITY)
    cert = membership_certificate(alice)
    revocation = issue_revocation(authority, bob.node_id, issued_ms=ISSUED_MS)
    return {
        "authority_seed": SEED_AUTHORITY,
        "authority_public_key": authority.public_key,
        "authority_id": authority.node_id,
        "cert_body": cert.body,
        "cert_signed_bytes": CERT_DOMAIN + cert.body,
        "cert_signature": cert.signature,
        "cert_packed": pack(cert),
        "revocation_body": revocation.body,
        "revocation_signed_bytes": REVOKE_DOMAIN + revocation.body,
        "revocation_signature": revocation.signature,
        "revocation_packed": pack(revocation),
    }


#: Ed25519's group order and field prime (RFC 8032).
L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19
IDENTITY = (1).to_bytes(32, "little")  # the neutral point: x = 0, y = 1
ORDER_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
SIGNATURE_MESSAGE = b"xio-test-0"  # SHA-512(IDENTITY + ORDER_8 + it) mod L is a multiple of 8


def _challenge(r: bytes, key: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + key + message).digest(), "little") % L


def signature_vectors(seed: bytes, alice: Identity) -> dict[str, bytes]:
    """The section 6 cases: signatures the document refuses that a lax verifier accepts."""
    message = SIGNATURE_MESSAGE
    valid = alice.sign(message)
    s = int.from_bytes(valid[32:], "little")
    digest = hashlib.sha512(seed).digest()  # RFC 8032 5.1.5: A's secret scalar
    scalar = (int.from_bytes(digest[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    small_r = (_challenge(IDENTITY, alice.public_key, message) * scalar) % L
    return {
        "sig_message": message,
        "sig_valid": valid,
        "sig_s_plus_l": valid[:32] + (s + L).to_bytes(32, "little"),
        "sig_small_r": IDENTITY + small_r.to_bytes(32, "little"),
        "key_small_order_1": IDENTITY,
        "key_small_order_8": ORDER_8,
        "key_non_canonical": (P + 1).to_bytes(32, "little"),  # y = p + 1: the identity again
        "sig_small_key": IDENTITY + bytes(32),
    }


def format_block(vectors: dict[str, str], width: int = 64) -> str:
    """Render the vectors as the document's block: long values wrap on indented lines."""
    lines = []
    for name, value in vectors.items():
        chunks = [value[i : i + width] for i in range(0, len(value), width)] or [""]
        lines.append(f"{name:<24}{chunks[0]}")
        lines.extend(f"{'':<24}{chunk}" for chunk in chunks[1:])
    return "\n".join(lines) + "\n"


def documented_vectors() -> dict[str, str]:
    """Parse the ``xio-test-vectors`` block of docs/PROTOCOL.md."""
    match = BLOCK.search(PROTOCOL.read_text())
    assert match, "docs/PROTOCOL.md has no xio-test-vectors block"
    vectors: dict[str, str] = {}
    name = None
    for line in match[1].splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            vectors[name] += line.strip()
        else:
            name, _, value = line.partition(" ")
            vectors[name] = value.strip()
    return vectors


def test_document_vectors_match_the_code():
    documented, computed = documented_vectors(), compute_vectors()
    assert list(documented) == list(computed)
    for name, value in computed.items():
        assert documented[name] == value, f"vector {name} differs"


def test_vectors_are_self_consistent():
    """Check the vectors the way an independent implementation would use them."""
    v = {
        k: bytes.fromhex(x) if not (k.startswith("node_id") or k == "authority_id") else x
        for k, x in documented_vectors().items()
    }
    for side in "ab":  # the node id rule, written out independently of identity.py
        digest = hashlib.sha256(v[f"public_key_{side}"]).digest()[:20]
        assert base64.b32encode(digest).decode().lower() == v[f"node_id_{side}"]
    assert Identity.from_seed(v["seed_a"]).public_key == v["public_key_a"]
    assert node_id_of(v["public_key_a"]) == v["node_id_a"]
    assert node_id_of(v["public_key_b"]) == v["node_id_b"]
    assert verify(
        v["public_key_a"], decode(v["auth_initiator_frame"]).signature, v["transcript_initiator"]
    )
    assert verify(
        v["public_key_b"], decode(v["auth_responder_frame"]).signature, v["transcript_responder"]
    )
    assert v["record_signed_bytes"] == b"xio-record-v1\x00" + v["record_body"]
    assert verify(v["public_key_a"], v["record_signature"], v["record_signed_bytes"])
    record = parse_record(v["record_body"], v["record_signature"], ISSUED_MS)
    assert (record.seq, record.name, record.links) == (7, "alpha", ((v["node_id_b"], 10),))
    assert msgpack.unpackb(v["record_frame"]) == {
        "t": "record",
        "b": v["record_body"],
        "s": v["record_signature"],
    }
    hello_a, hello_b = (
        msgpack.unpackb(v[f"hello_{end}_frame"]) for end in ("initiator", "responder")
    )
    assert hello_a["v"] == hello_b["v"] == 2
    assert v["transcript_initiator"][:12] == b"xio-link-v2\x00"
    assert msgpack.unpackb(v["transcript_initiator"][12:]) == [
        "initiator",
        v["node_id_a"],
        NONCE_A,
        hello_a["eph"],
        v["node_id_b"],
        NONCE_B,
        hello_b["eph"],
    ]


def test_the_sealed_pings_open_with_keys_derived_as_section_6_1_says():
    """Derive the link keys from the documented inputs with cryptography alone."""
    v = documented_vectors()
    hello_a = msgpack.unpackb(bytes.fromhex(v["hello_initiator_frame"]))
    hello_b = msgpack.unpackb(bytes.fromhex(v["hello_responder_frame"]))
    private_a = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["eph_private_a"]))
    assert private_a.public_key().public_bytes_raw() == hello_a["eph"]
    shared = private_a.exchange(X25519PublicKey.from_public_bytes(hello_b["eph"]))
    fields = [hello_a["id"], hello_a["nonce"], hello_a["eph"],
              hello_b["id"], hello_b["nonce"], hello_b["eph"]]  # fmt: skip
    salt = hashlib.sha256(b"xio-link-v2\x00" + msgpack.packb(fields, use_bin_type=True)).digest()
    okm = HKDF(hashes.SHA256(), 64, salt, b"xio-link-keys-v2").derive(shared)
    nonce = bytes(12)  # counter 0
    ping = bytes.fromhex(v["ping_frame"])
    for key, name in ((okm[:32], "sealed_ping_initiator"), (okm[32:], "sealed_ping_responder")):
        sealed = bytes.fromhex(v[name])
        assert len(sealed) == len(ping) + 16
        assert ChaCha20Poly1305(key).decrypt(nonce, sealed, None) == ping


def test_membership_vectors_verify_and_the_armor_is_the_documented_one():
    v = {k: x for k, x in documented_vectors().items()}
    key = bytes.fromhex(v["authority_public_key"])
    assert node_id_of(key) == v["authority_id"]
    cert_body, cert_signature = bytes.fromhex(v["cert_body"]), bytes.fromhex(v["cert_signature"])
    assert bytes.fromhex(v["cert_signed_bytes"]) == b"xio-cert-v1\x00" + cert_body
    assert verify(key, cert_signature, b"xio-cert-v1\x00" + cert_body)
    assert msgpack.unpackb(bytes.fromhex(v["cert_packed"])) == [cert_body, cert_signature]
    assert msgpack.unpackb(cert_body) == [1, v["authority_id"], v["node_id_a"],
        bytes.fromhex(v["public_key_a"]), "alpha", ["inventory", "shop"], ISSUED_MS,
        ISSUED_MS + YEAR_MS, 1]  # fmt: skip
    cert = judge_certificate(bytes.fromhex(v["cert_packed"]), key, ISSUED_MS)
    assert cert.node_id == v["node_id_a"]
    revocation_body = bytes.fromhex(v["revocation_body"])
    assert msgpack.unpackb(revocation_body) == [1, v["authority_id"], v["node_id_b"], ISSUED_MS]
    assert verify(
        key, bytes.fromhex(v["revocation_signature"]), b"xio-revoke-v1\x00" + revocation_body
    )
    assert (
        judge_revocation(bytes.fromhex(v["revocation_packed"]), key, ISSUED_MS).node_id
        == (v["node_id_b"])
    )
    documented_armor = ARMOR.search(PROTOCOL.read_text())[0]
    assert documented_armor == armor(membership_certificate(Identity.from_seed(SEED_A)))
    assert pack(read_armor(documented_armor)) == bytes.fromhex(v["cert_packed"])


def test_signature_vectors_are_refused_but_the_valid_one():
    v = {k: bytes.fromhex(x) for k, x in documented_vectors().items() if k[:4] in ("sig_", "key_")}
    message, key_a = v["sig_message"], bytes.fromhex(documented_vectors()["public_key_a"])
    assert verify(key_a, v["sig_valid"], message)
    s = int.from_bytes(v["sig_valid"][32:], "little")
    assert s < L and int.from_bytes(v["sig_s_plus_l"][32:], "little") == s + L
    assert not verify(key_a, v["sig_s_plus_l"], message)  # S >= L
    assert v["sig_small_r"][:32] == IDENTITY
    assert not verify(key_a, v["sig_small_r"], message)  # R of order 1
    # R = identity, S = 0 satisfies [S]B = R + [k]A for A of order 1, and of order 8 when
    # 8 divides k: the cofactorless equation alone would accept these forgeries.
    assert _challenge(IDENTITY, v["key_small_order_8"], message) % 8 == 0
    for key in ("key_small_order_1", "key_small_order_8", "key_non_canonical"):
        assert not verify(v[key], v["sig_small_key"], message), key
        assert not verify(v[key], v["sig_small_key"], b"any other message"), key


def test_a_key_or_r_of_small_order_never_signs():
    alice = Identity.from_seed(SEED_A)
    order_2 = (P - 1).to_bytes(32, "little")
    order_4 = bytes(32)
    for small in (IDENTITY, order_2, order_4, ORDER_8):
        for sign_bit in (0, 0x80):
            point = small[:31] + bytes([small[31] | sign_bit])
            for number in range(16):  # some of these would pass the bare equation
                message = b"xio-test-%d" % number
                assert not verify(point, IDENTITY + bytes(32), message)
                assert not verify(point, point + bytes(32), message)
        assert not verify(alice.public_key, small + bytes(32), b"m")


if __name__ == "__main__":
    print("```text xio-test-vectors")
    print(format_block(compute_vectors()), end="")
    print("```")
    print(armor(membership_certificate(Identity.from_seed(SEED_A))), end="")
