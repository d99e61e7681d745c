"""Certificates and revocations of a mesh authority (xio/peering/membership.py), in memory."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering import membership as m
from xio.peering.identity import Identity

from .fuzzing import fuzz

AUTHORITY = Identity.from_seed(bytes(range(0x40, 0x60)))
OTHER_AUTHORITY = Identity.from_seed(bytes(range(0x60, 0x80)))
NODE = Identity.from_seed(bytes(range(0x00, 0x20)))
STRANGER = Identity.from_seed(bytes(range(0x20, 0x40)))
NOW = 1_700_000_000_000
DAY = 86_400_000
KEY = AUTHORITY.public_key


def issue(authority=AUTHORITY, node=NODE, **fields):
    fields = {"issued_ms": NOW, "expires_ms": NOW + DAY, "serial": 1, **fields}
    return m.issue_certificate(authority, node.node_id, **fields)


def reason(call, *args, **kwargs) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        call(*args, **kwargs)
    return info.value.reason


def resign_body(items: list) -> bytes:
    """A certificate with these body fields, validly signed by AUTHORITY: only rules can fail."""
    body = msgpack.packb(items, use_bin_type=True)
    return msgpack.packb([body, AUTHORITY.sign(m.CERT_DOMAIN + body)], use_bin_type=True)


def good_items() -> list:
    return [1, AUTHORITY.node_id, NODE.node_id, NODE.public_key, "alpha", ["shop"], NOW,
            NOW + DAY, 7]  # fmt: skip


def test_a_certificate_round_trips_packed_and_armored():
    signed = issue(public_key=NODE.public_key, name="alpha", apps=["shop", "inventory"])
    assert signed.certificate.apps == ("inventory", "shop")  # sorted by the issuer
    for again in (m.unpack_certificate(m.pack(signed)), m.read_armor(m.armor(signed))):
        assert again == signed
    cert = m.judge_certificate(m.pack(signed), KEY, NOW, node_id=NODE.node_id)
    assert cert == signed.certificate
    assert m.armor(signed).startswith("-----BEGIN XIO MESH CERTIFICATE-----\n")


def test_the_armor_is_found_amid_other_text_and_wrapped_at_64():
    text = m.armor(issue(name="x" * 255))
    lines = text.splitlines()
    assert all(len(line) <= 64 for line in lines[1:-1]) and len(lines) > 4
    assert m.read_armor("issued for alpha\n\n" + text + "\ntrailer\n") == m.read_armor(text)


def test_a_revocation_round_trips_and_is_judged():
    signed = m.issue_revocation(AUTHORITY, NODE.node_id, issued_ms=NOW)
    assert m.read_armor(m.armor(signed)) == signed
    assert m.armor(signed).startswith("-----BEGIN XIO MESH REVOCATION-----\n")
    assert m.judge_revocation(m.pack(signed), KEY, NOW) == signed.revocation
    assert reason(m.judge_revocation, m.pack(signed), OTHER_AUTHORITY.public_key, NOW) == (
        "wrong_authority"
    )
    assert reason(m.judge_revocation, signed, KEY, NOW - 61_000) == "not_yet_valid"


def test_a_forged_revocation_is_refused():
    genuine = m.issue_revocation(AUTHORITY, NODE.node_id, issued_ms=NOW)
    forged = m.SignedRevocation(
        genuine.body, STRANGER.sign(m.REVOKE_DOMAIN + genuine.body), genuine.revocation
    )
    assert reason(m.judge_revocation, m.pack(forged), KEY, NOW) == "bad_revocation"
    cross = m.SignedRevocation(genuine.body, AUTHORITY.sign(m.CERT_DOMAIN + genuine.body), None)
    assert reason(m.judge_revocation, m.pack(cross), KEY, NOW) == "bad_revocation"


def test_every_verdict_of_a_certificate():
    signed = issue(issued_ms=NOW, expires_ms=NOW + DAY)
    assert reason(m.judge_certificate, None, KEY, NOW) == "no_certificate"
    assert reason(m.judge_certificate, b"", KEY, NOW) == "no_certificate"
    assert reason(m.judge_certificate, b"\xc1", KEY, NOW) == "bad_certificate"
    other = issue(authority=OTHER_AUTHORITY)
    assert reason(m.judge_certificate, m.pack(other), KEY, NOW) == "wrong_authority"
    assert reason(m.judge_certificate, signed, KEY, NOW, node_id=STRANGER.node_id) == "wrong_node"
    assert reason(m.judge_certificate, signed, KEY, NOW + DAY) == "expired"
    assert m.judge_certificate(signed, KEY, NOW + DAY - 1)
    assert reason(m.judge_certificate, signed, KEY, NOW - 60_001) == "not_yet_valid"
    assert m.judge_certificate(signed, KEY, NOW - 60_000)
    assert reason(m.judge_certificate, signed, KEY, NOW, {NODE.node_id}) == "revoked"
    assert reason(m.judge_certificate, signed, KEY, NOW, {NODE.node_id: NOW}) == "revoked"
    # A node revoked and admitted again later: the newer certificate is valid.
    assert m.judge_certificate(signed, KEY, NOW, {NODE.node_id: NOW - 1})
    assert m.judge_certificate(signed, KEY, NOW, {STRANGER.node_id: NOW})


def test_a_forged_signature_and_a_cross_domain_signature_are_bad_certificates():
    genuine = issue()
    forged = m.pack(
        m.SignedCertificate(genuine.body, NODE.sign(m.CERT_DOMAIN + genuine.body), None)
    )
    assert reason(m.judge_certificate, forged, KEY, NOW) == "bad_certificate"
    cross = AUTHORITY.sign(m.REVOKE_DOMAIN + genuine.body)  # the right key, the wrong domain
    cross_packed = m.pack(m.SignedCertificate(genuine.body, cross, None))
    assert reason(m.judge_certificate, cross_packed, KEY, NOW) == "bad_certificate"
    # A cert of another authority, relabelled as ours, fails on the signature.
    items = msgpack.unpackb(issue(authority=OTHER_AUTHORITY).body)
    items[1] = AUTHORITY.node_id
    body = msgpack.packb(items, use_bin_type=True)
    relabelled = msgpack.packb([body, OTHER_AUTHORITY.sign(m.CERT_DOMAIN + body)])
    assert reason(m.judge_certificate, relabelled, KEY, NOW) == "bad_certificate"


def test_apps_allowed():
    anyone = issue().certificate
    assert m.app_allowed(anyone, "shop") and m.app_allowed(anyone, "anything")
    listed = issue(apps=["shop"]).certificate
    assert m.app_allowed(listed, "shop") and not m.app_allowed(listed, "bank")
    assert reason(m.check_app, listed, "bank") == "app_not_allowed"
    m.check_app(listed, "shop")
    relay = issue(apps=[]).certificate
    assert not m.app_allowed(relay, "shop")


def test_newest_certificate_wins_by_issued_ms_then_serial():
    old, new = issue(serial=9).certificate, issue(issued_ms=NOW + 1, serial=1).certificate
    assert m.newer(new, old) and not m.newer(old, new)
    assert m.newer(issue(serial=2).certificate, issue(serial=1).certificate)


def test_note_revocation_keeps_the_newest():
    revoked: dict[str, int] = {}
    later = m.Revocation(AUTHORITY.node_id, NODE.node_id, NOW + 5)
    assert m.note_revocation(revoked, later)
    assert not m.note_revocation(revoked, m.Revocation(AUTHORITY.node_id, NODE.node_id, NOW))
    assert revoked == {NODE.node_id: NOW + 5}


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 2),  # version
        (0, True),
        (1, "not an id"),
        (2, NODE.node_id.upper()),
        (3, b"\x00" * 31),
        (3, STRANGER.public_key),  # does not hash to the node id
        (3, "a str, not bin"),
        (4, "n" * 256),
        (4, b"bytes"),
        (5, ["shop", "inventory"]),  # not ascending
        (5, ["shop", "shop"]),
        (5, ["*", "shop"]),
        (5, ["_xio"]),
        (5, [f"app{i:02}" for i in range(33)]),
        (5, "shop"),
        (6, -1),
        (6, 1.5),
        (7, NOW),  # expires_ms == issued_ms
        (8, 2**64),
        (8, False),
    ],
)
def test_every_field_rule_is_checked_even_under_a_valid_signature(index, value):
    items = good_items()
    items[index] = value
    try:
        packed = resign_body(items)
    except (OverflowError, TypeError):  # 2**64 cannot even be packed: as good as refused
        return
    assert reason(m.judge_certificate, packed, KEY, NOW) == "bad_certificate"


def test_the_good_items_pass_and_extra_or_missing_fields_do_not():
    assert m.judge_certificate(resign_body(good_items()), KEY, NOW).serial == 7
    assert reason(m.judge_certificate, resign_body([*good_items(), 0]), KEY, NOW) == (
        "bad_certificate"
    )
    assert reason(m.judge_certificate, resign_body(good_items()[:-1]), KEY, NOW) == (
        "bad_certificate"
    )


def test_a_non_canonical_body_or_packing_is_refused():
    body = issue().body
    assert body[-1] == 1  # serial 1 as a positive fixint; uint8 0xcc 0x01 is the same number
    long_body = body[:-1] + b"\xcc\x01"
    packed = msgpack.packb([long_body, AUTHORITY.sign(m.CERT_DOMAIN + long_body)])
    assert reason(m.judge_certificate, packed, KEY, NOW) == "bad_certificate"
    signed = issue()
    good = m.pack(signed)
    assert good[:2] == b"\x92\xc4"
    loose = b"\x92\xc5" + len(signed.body).to_bytes(2, "big") + good[3:]  # bin16 for a bin8
    assert reason(m.unpack_certificate, loose) == "bad_certificate"
    assert reason(m.unpack_certificate, good + b"\x00") == "bad_certificate"


def test_a_body_of_nearly_2048_bytes_round_trips():
    signed = issue(name="n" * 255, apps=[f"{i:02}" + "a" * 48 for i in range(32)])
    assert 2000 < len(signed.body) <= 2048
    assert m.judge_certificate(m.pack(signed), KEY, NOW) == signed.certificate


def test_the_issuer_refuses_what_a_receiver_would():
    with pytest.raises(LocalProtocolError):
        issue(apps=["*", "shop"])
    with pytest.raises(LocalProtocolError):
        issue(expires_ms=NOW)
    with pytest.raises(LocalProtocolError):
        issue(public_key=STRANGER.public_key)
    with pytest.raises(LocalProtocolError):
        issue(apps=[f"{i:02}" + "a" * 62 for i in range(32)])  # over the 2048-byte body
    with pytest.raises(LocalProtocolError):
        m.issue_revocation(AUTHORITY, "nobody", issued_ms=NOW)


def test_armor_errors():
    text = m.armor(issue())
    assert reason(m.read_armor, "no block here") == "bad_certificate"
    assert reason(m.read_armor, text.replace("A", "!", 1)) == "bad_certificate"
    revocation = m.armor(m.issue_revocation(AUTHORITY, NODE.node_id, issued_ms=NOW))
    assert reason(m.read_armor, revocation.replace("\n-----END", "AA\n-----END")) == (
        "bad_revocation"
    )
    assert reason(m.read_armor, b"bytes") == "bad_certificate"
    swapped = text.replace("CERTIFICATE", "REVOCATION")  # a certificate labelled a revocation
    assert reason(m.read_armor, swapped) == "bad_revocation"


# -- fuzz: remote garbage gives RemoteProtocolError, nothing else ------------------------------


def judge_everything(data) -> None:
    for call in (
        lambda: m.judge_certificate(data, KEY, NOW, {STRANGER.node_id: NOW}),
        lambda: m.judge_revocation(data, KEY, NOW),
        lambda: m.unpack_certificate(data),
    ):
        try:
            call()
        except RemoteProtocolError:
            pass


@fuzz(300)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_only_raise_the_protocol_error(data):
    judge_everything(data)


@fuzz(300)
@given(st.text(max_size=300))
def test_arbitrary_armor_text_only_raises_the_protocol_error(text):
    try:
        m.read_armor("-----BEGIN XIO MESH CERTIFICATE-----\n" + text)
    except RemoteProtocolError:
        pass


VALID = [m.pack(issue(public_key=NODE.public_key, name="alpha", apps=["a", "b"])),
         m.pack(m.issue_revocation(AUTHORITY, NODE.node_id, issued_ms=NOW))]  # fmt: skip


@fuzz(500)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 3),
)
def test_mutated_valid_ones_only_raise_the_protocol_error_or_stay_identical(base, flips, cut):
    data = bytearray(base)
    for where, byte in flips:
        data[where % len(data)] = byte
    data = bytes(data[: len(data) - cut])
    if data == base:
        return
    for call in (m.judge_certificate, m.judge_revocation):
        # Any change of packed bytes breaks the form, the canonical rule or the signature.
        with pytest.raises(RemoteProtocolError):
            call(data, KEY, NOW)


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=40)
    | st.binary(max_size=40) | st.floats(),
    lambda inner: st.lists(inner, max_size=10),
    max_leaves=30,
)  # fmt: skip


@fuzz(300)
@given(st.lists(MSGPACK_VALUES, max_size=11))
def test_arbitrary_bodies_under_a_valid_signature_only_raise_the_protocol_error(items):
    try:
        data = resign_body(items)
    except (OverflowError, TypeError, ValueError):  # not even packable
        return
    judge_everything(data)
