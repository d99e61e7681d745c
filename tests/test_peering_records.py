"""Signed records and the record store: what is accepted, what is refused and why."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering import records as records_module
from xio.peering.identity import Identity
from xio.peering.records import MAX_LIFETIME_MS, RECORD_DOMAIN, Record, encode_body, parse_record
from xio.peering.store import STORE_REASONS, RecordStore

from .fuzzing import fuzz

NOW = 1_700_000_000_000
ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(32, 64)))
CAROL = Identity.from_seed(bytes(range(64, 96)))


def build(identity=ALICE, seq=1, now=NOW, lifetime=60_000, **overrides):
    fields = {
        "name": "alpha",
        "version": "0.1.0",
        "urls": ["ws://192.0.2.1:7700/_xio/ws"],
        "links": {BOB.node_id: 10},
        "apps": {"inventory": "stock levels"},
        **overrides,
    }
    return Record.build(identity, seq, now, lifetime, **fields)


def raw_body(identity=ALICE, **changes) -> list:
    """Return the body array of a good record of ``identity``, with ``changes`` applied."""
    items = msgpack.unpackb(build(identity).body)
    names = ["v", "id", "key", "seq", "issued", "expires", "name", "version", "urls", "links"]
    for key, value in changes.items():
        items[(*names, "apps", "ext").index(key)] = value
    return items


def signed(items, identity=ALICE, packer=None) -> tuple[bytes, bytes]:
    body = packer(items) if packer else msgpack.packb(items, use_bin_type=True)
    return body, identity.sign(RECORD_DOMAIN + body)


def reason_of(body, signature, now=NOW) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        parse_record(body, signature, now)
    return info.value.reason


# -- records -----------------------------------------------------------------------------------


def test_built_record_parses_back():
    made = build()
    record = parse_record(made.body, made.signature, NOW)
    assert record == made.record
    assert record.node_id == ALICE.node_id and record.public_key == ALICE.public_key
    assert record.expires_ms == NOW + 60_000
    assert record.links == ((BOB.node_id, 10),)
    assert record.app_names() == ["inventory"]
    assert encode_body(record) == made.body


def test_build_sorts_links_and_apps():
    made = build(links={CAROL.node_id: 3, BOB.node_id: 5}, apps=[("zoo", ""), ("api", "")])
    assert [peer for peer, _ in made.record.links] == sorted([BOB.node_id, CAROL.node_id])
    assert made.record.app_names() == ["api", "zoo"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"links": {ALICE.node_id: 1}},  # a link to itself
        {"links": {BOB.node_id: 0}},
        {"links": {BOB.node_id: 65536}},
        {"links": {"not-an-id": 1}},
        {"apps": {"a/b": ""}},
        {"apps": {"": ""}},
        {"name": "x" * 256},
        {"urls": ["ws://x"] * 17},
        {"links": [(BOB.node_id, 1), (BOB.node_id, 2)]},
    ],
)
def test_build_refuses_what_peers_would_refuse(overrides):
    with pytest.raises(LocalProtocolError):
        build(**overrides)


def test_build_refuses_long_lifetimes_and_unsortable_links():
    assert build(lifetime=MAX_LIFETIME_MS).record.expires_ms == NOW + MAX_LIFETIME_MS
    with pytest.raises(LocalProtocolError):
        build(lifetime=MAX_LIFETIME_MS + 1)
    with pytest.raises(LocalProtocolError):
        build(links=[(BOB.node_id, 1), (None, 1)])


def test_signature_covers_domain_and_exact_body():
    made = build()
    assert reason_of(made.body, ALICE.sign(made.body)) == "bad_signature"  # no domain
    assert reason_of(made.body, bytes(64)) == "bad_signature"
    assert reason_of(made.body, made.signature[:-1]) == "bad_signature"
    assert reason_of(made.body, BOB.sign(RECORD_DOMAIN + made.body)) == "bad_signature"
    other = build(seq=2)
    assert reason_of(other.body, made.signature) == "bad_signature"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"v": 2}, "bad_version"),
        ({"v": True}, "bad_version"),
        ({"id": CAROL.node_id}, "id_mismatch"),
        ({"key": b"k" * 31}, "malformed_record"),
        ({"seq": -1}, "malformed_record"),
        ({"issued": NOW + 1, "expires": NOW + 1}, "malformed_record"),  # zero lifetime
        ({"expires": NOW + MAX_LIFETIME_MS + 1}, "malformed_record"),
        ({"name": 5}, "malformed_record"),
        ({"urls": "ws://x"}, "malformed_record"),
        (
            {"links": [[p, 1] for p in sorted([BOB.node_id, CAROL.node_id])[::-1]]},
            "malformed_record",
        ),
        ({"links": [[BOB.node_id]]}, "malformed_record"),
        ({"links": [[BOB.node_id, 1.0]]}, "malformed_record"),
        ({"apps": [["b", ""], ["a", ""]]}, "malformed_record"),
        ({"apps": [["~x", ""]]}, "malformed_record"),
        ({"ext": [1]}, "malformed_record"),
        ({"ext": {"b": 1, "a": 2}}, "malformed_record"),  # keys not sorted
        ({"urls": ["ws://x"] * 17}, "too_large"),
        ({"apps": [[f"app{i:03}", ""] for i in range(257)]}, "too_large"),
    ],
)
def test_bad_bodies_are_refused_even_when_signed(changes, reason):
    body, signature = signed(raw_body(**changes))
    assert reason_of(body, signature) == reason


def test_too_many_links_is_too_large():
    peers = sorted(Identity.generate().node_id for _ in range(257))
    body, signature = signed(raw_body(links=[[peer, 1] for peer in peers]))
    assert reason_of(body, signature) == "too_large"


def test_ext_with_sorted_keys_is_accepted_for_forward_compatibility():
    body, signature = signed(raw_body(ext={"cert": b"\x01\x02", "zone": "eu"}))
    assert parse_record(body, signature, NOW).ext == (("cert", b"\x01\x02"), ("zone", "eu"))


def test_non_canonical_encodings_are_malformed():
    items = raw_body()
    # seq 1 written as a uint32 instead of a positive fixint: same value, other bytes.
    body = msgpack.packb(items, use_bin_type=True)
    seq_at = body.index(msgpack.packb(items[2], use_bin_type=True)) + 34
    assert body[seq_at] == 1
    wide = body[:seq_at] + b"\xce\x00\x00\x00\x01" + body[seq_at + 1 :]
    assert msgpack.unpackb(wide) == items
    assert reason_of(wide, ALICE.sign(RECORD_DOMAIN + wide)) == "malformed_record"
    # a str where bin is expected, with the same bytes
    body, signature = signed(items, packer=lambda i: msgpack.packb(i, use_bin_type=False))
    assert reason_of(body, signature) == "malformed_record"
    # a float32
    body, signature = signed(
        raw_body(ext={"x": 1.5}), packer=lambda i: msgpack.packb(i, use_single_float=True)
    )
    assert reason_of(body, signature) == "malformed_record"


def test_body_shape_errors():
    for items in ([], [1], raw_body()[:-1], [*raw_body(), None], {"v": 1}):
        body, signature = signed(items)
        assert reason_of(body, signature) == "malformed_record", items
    assert reason_of(b"\xc1", bytes(64)) == "malformed_record"
    assert reason_of(b"\x00" * (64 * 1024 + 1), bytes(64)) == "too_large"
    assert reason_of("text", bytes(64)) == "malformed_record"


def test_time_window():
    made = build(now=NOW, lifetime=60_000)
    assert parse_record(made.body, made.signature, NOW + 59_999)
    assert reason_of(made.body, made.signature, NOW + 60_000) == "expired"
    assert parse_record(made.body, made.signature, NOW - 60_000)  # 60 s of skew is tolerated
    assert reason_of(made.body, made.signature, NOW - 60_001) == "from_future"


@fuzz(500)
@given(st.binary(max_size=300), st.binary(max_size=70))
def test_fuzz_parse_record_only_raises_remote_errors(body, signature):
    with pytest.raises(RemoteProtocolError) as info:
        parse_record(body, signature, NOW)
    assert info.value.reason in records_module.RECORD_REASONS


@fuzz(300)
@given(st.data())
def test_fuzz_mutated_records(data):
    raw = bytearray(build().body)
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    store = RecordStore(CAROL.node_id)
    verdict = store.offer(bytes(raw), build().signature, NOW)
    assert not verdict.accepted
    assert verdict.reason in STORE_REASONS


# -- the store ---------------------------------------------------------------------------------


def offer(store, made, now=NOW):
    return store.offer(made.body, made.signature, now)


def test_store_accepts_new_then_newer_and_dedupes():
    store = RecordStore(CAROL.node_id)
    first = offer(store, build(seq=5))
    assert first.accepted and first.reason == "accepted" and first.node_id == ALICE.node_id
    assert store.get(ALICE.node_id).seq == 5 and ALICE.node_id in store and len(store) == 1
    assert offer(store, build(seq=5)).reason == "duplicate"
    assert offer(store, build(seq=4)).reason == "stale"
    assert offer(store, build(seq=6)).accepted
    assert store.get(ALICE.node_id).seq == 6
    assert store.counters["accepted"] == 2
    assert store.counters["duplicate"] == store.counters["stale"] == 1


def test_duplicates_are_not_verified_again():
    store = RecordStore(CAROL.node_id)
    made = build(seq=5)
    offer(store, made)
    # A broken signature on a known (origin, seq) costs no verification and changes nothing.
    assert store.offer(made.body, bytes(64), NOW).reason == "duplicate"
    newer = build(seq=6)
    assert store.offer(newer.body, bytes(64), NOW).reason == "bad_signature"
    assert store.get(ALICE.node_id).seq == 5


def test_equal_seq_conflict_resolves_the_same_everywhere():
    old = build(seq=3, now=NOW)
    new = build(seq=3, now=NOW + 1000, name="alpha-restarted")
    one, two = RecordStore(BOB.node_id), RecordStore(CAROL.node_id)
    offer(one, old), offer(one, new)
    offer(two, new), offer(two, old)
    assert one.get(ALICE.node_id) == two.get(ALICE.node_id) == new.record


def test_rejections_are_counted_by_reason():
    store = RecordStore(CAROL.node_id)
    made = build()
    assert store.offer(made.body, bytes(64), NOW).reason == "bad_signature"
    assert offer(store, made, now=NOW + 60_000).reason == "expired"
    assert store.offer(b"junk", bytes(64), NOW).reason == "malformed_record"
    assert {k: v for k, v in store.counters.items() if v} == {
        "bad_signature": 1,
        "expired": 1,
        "malformed_record": 1,
    }


def test_own_record_echo_is_a_duplicate_and_old_incarnations_bump_seq():
    store = RecordStore(ALICE.node_id)
    assert store.own is None and store.own_seq == 0
    current = build(seq=10)
    store.set_own(current)
    assert offer(store, current).reason == "duplicate"
    older = offer(store, build(seq=9))
    assert (older.reason, older.next_own_seq) == ("own_record", None)
    # Same seq, other content: a previous life of this node reused the seq.
    clash = offer(store, build(seq=10, name="previous life"))
    assert (clash.accepted, clash.reason, clash.next_own_seq) == (False, "own_record", 11)
    ahead = offer(store, build(seq=40))
    assert ahead.next_own_seq == 41
    # Forged "own" records do not move the seq.
    forged = build(seq=99)
    assert store.offer(forged.body, bytes(64), NOW).reason == "bad_signature"
    assert len(store) == 0


def test_lost_state_restart_learns_its_seq_from_a_snapshot():
    before = RecordStore(ALICE.node_id)
    before.set_own(build(seq=500))
    neighbour = RecordStore(BOB.node_id)
    for body, signature in before.snapshot():
        assert neighbour.offer(body, signature, NOW).accepted
    restarted = RecordStore(ALICE.node_id)
    restarted.set_own(build(seq=1))
    verdicts = [restarted.offer(b, s, NOW) for b, s in neighbour.snapshot()]
    jump = max(v.next_own_seq or 0 for v in verdicts)
    assert jump == 501
    restarted.set_own(build(seq=jump))
    assert neighbour.offer(restarted.own.body, restarted.own.signature, NOW).accepted


def test_set_own_is_checked():
    store = RecordStore(ALICE.node_id)
    store.set_own(build(seq=2))
    with pytest.raises(LocalProtocolError):
        store.set_own(build(seq=2))
    with pytest.raises(LocalProtocolError):
        store.set_own(build(BOB, seq=3))


def test_store_is_bounded():
    store = RecordStore(CAROL.node_id, max_records=1)
    assert offer(store, build(ALICE)).accepted
    assert offer(store, build(BOB, links={})).reason == "store_full"
    assert offer(store, build(ALICE, seq=2)).accepted  # updates still fit


def test_expire_removes_and_refuses_replays_of_older_records():
    store = RecordStore(CAROL.node_id)
    long_lived = build(seq=1, lifetime=600_000)
    short_lived = build(seq=2, lifetime=10_000)
    offer(store, long_lived), offer(store, short_lived)
    assert store.expire(NOW + 9_999) == []
    assert store.expire(NOW + 10_000) == [ALICE.node_id]
    assert store.get(ALICE.node_id) is None and store.records() == []
    # seq 1 is still unexpired, but seq 2 was seen: a relay replaying it gets nowhere.
    assert offer(store, long_lived, now=NOW + 20_000).reason == "stale"
    assert offer(store, build(seq=3, now=NOW + 20_000), now=NOW + 20_000).accepted


def test_snapshot_sends_others_then_own_and_skips_expired():
    store = RecordStore(CAROL.node_id)
    offer(store, build(ALICE, lifetime=5_000))
    offer(store, build(BOB, links={}))
    own = build(CAROL, links={})
    store.set_own(own)
    snapshot = store.snapshot()
    assert snapshot[-1] == (own.body, own.signature) and len(snapshot) == 3
    later = store.snapshot(now_ms=NOW + 5_000)
    assert len(later) == 2 and store.signed(ALICE.node_id).body not in [b for b, _ in later]
    assert [r.node_id for r in store.records()] == sorted([ALICE.node_id, BOB.node_id])
    assert store.get(CAROL.node_id) == own.record
