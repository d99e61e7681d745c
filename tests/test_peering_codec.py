"""Wire codec: every frame type round-trips, every peer mistake is a counted RemoteProtocolError."""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering import codec
from xio.peering.codec import (
    MAX_FRAME,
    Auth,
    Bye,
    Cancel,
    Hello,
    Ping,
    Pong,
    RecordFrame,
    RequestFrame,
    ResponseFrame,
    decode,
    encode,
)

from .conftest import ROOT
from .fuzzing import fuzz

#: The message types that docs/PROTOCOL.md section 4 defines (its "### hello — ..." headings).
DOCUMENTED_TYPES = frozenset(
    name
    for names in re.findall(
        r"^### ([a-z]+(?: / [a-z]+)?) — ",
        (ROOT / "docs/PROTOCOL.md").read_text().split("\n## 4.")[1].split("\n## 5.")[0],
        flags=re.M,
    )
    for name in names.split(" / ")
)

NODE_A = "a" * 32
NODE_B = "b" * 32

EXAMPLES = [
    Hello(1, NODE_A, b"k" * 32, b"n" * 32, "alpha", "initiator"),
    Hello(1, NODE_A, b"k" * 32, b"n" * 32, "alpha", "responder", expect=NODE_B),
    Auth(b"s" * 64),
    RecordFrame(b"\x9c\x01", b"s" * 64),
    RequestFrame(
        7,
        NODE_B,
        "inventory",
        "GET",
        "/items/42",
        "a=1",
        (("Accept", "*/*"),),
        b"",
        hops=16,
        ttl_ms=30_000,
    ),
    RequestFrame(2**32 - 1, NODE_B, "app", "POST", "", "", (), b"\x00" * 1000, hops=0, ttl_ms=0),
    ResponseFrame(7, 200, (("Content-Type", "application/json"),), b"{}"),
    ResponseFrame(0, 504),
    Cancel(7),
    Ping(2**64 - 1),
    Pong(0),
    Bye("shutting down"),
]


def frame(**fields) -> bytes:
    """Pack a raw frame map, bypassing the dataclasses (what a sloppy peer would send)."""
    return msgpack.packb(fields, use_bin_type=True)


def good_request_fields() -> dict:
    return msgpack.unpackb(encode(EXAMPLES[4]))


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message):
    data = encode(message)
    assert decode(data) == message
    assert encode(decode(data)) == data


def test_the_codec_speaks_exactly_the_documented_types():
    assert len(DOCUMENTED_TYPES) >= 10
    assert set(codec._TYPES) == DOCUMENTED_TYPES
    for message in EXAMPLES:
        assert msgpack.unpackb(encode(message))["t"] == type(message).TYPE
        assert type(decode(encode(message))) is type(message)


def test_encoding_puts_type_first_and_uses_short_keys():
    data = encode(EXAMPLES[4])
    assert list(msgpack.unpackb(data)) == [
        "t", "id", "dst", "app", "method", "path", "query", "headers", "body", "hops", "ttl",
    ]  # fmt: skip
    assert msgpack.unpackb(encode(EXAMPLES[3])) == {"t": "record", "b": b"\x9c\x01", "s": b"s" * 64}


def test_absent_optional_field_is_left_out():
    assert "expect" not in msgpack.unpackb(encode(EXAMPLES[0]))
    assert msgpack.unpackb(encode(EXAMPLES[1]))["expect"] == NODE_B


def test_unknown_keys_are_ignored():
    fields = good_request_fields()
    fields["future_field"] = [1, 2, {"x": b"y"}]
    assert decode(frame(**fields)) == EXAMPLES[4]


def test_optional_request_fields_default_to_empty():
    message = decode(
        frame(t="req", id=1, dst=NODE_B, app="a", method="GET", path="/", hops=3, ttl=100)
    )
    assert (message.query, message.headers, message.body) == ("", (), b"")


def test_decoded_headers_are_tuples_of_pairs():
    assert decode(encode(EXAMPLES[4])).headers == (("Accept", "*/*"),)


def test_bytes_like_input_is_accepted():
    data = encode(EXAMPLES[8])
    assert decode(bytearray(data)) == decode(memoryview(data)) == EXAMPLES[8]


def reason_of(data: bytes, **kwargs) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data, **kwargs)
    return info.value.reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed_msgpack"),
        (b"\xc1", "malformed_msgpack"),  # never-used msgpack byte
        (encode(Ping(1))[:-1], "malformed_msgpack"),  # truncated
        (encode(Ping(1)) + b"\x00", "malformed_msgpack"),  # trailing bytes
        (b"\x81\xa1t\xa2\xff\xfe", "malformed_msgpack"),  # str that is not UTF-8
        (b"\x81\x01\xa1x", "malformed_msgpack"),  # int map key
        (msgpack.packb({"t": "ping", "n": msgpack.ExtType(5, b"x")}), "malformed_msgpack"),
        (msgpack.packb([1, 2]), "not_a_map"),
        (msgpack.packb("ping"), "not_a_map"),
        (frame(n=1), "unknown_type"),
        (frame(t="gossip"), "unknown_type"),
        (frame(t=3), "unknown_type"),
        (frame(t=["ping"]), "unknown_type"),
        (frame(t="ping"), "missing_field"),
        (
            frame(t="req", id=1, dst=NODE_B, app="a", method="GET", path="/", hops=3),
            "missing_field",
        ),
        (frame(t="ping", n=-1), "bad_field"),
        (frame(t="ping", n=True), "bad_field"),
        (frame(t="ping", n=1.0), "bad_field"),
        (frame(t="cancel", id=2**32), "bad_field"),
        (frame(t="auth", sig=b"s" * 63), "bad_field"),
        (frame(t="auth", sig="s" * 64), "bad_field"),
        (frame(t="bye", reason="x" * 2000), "bad_field"),
        (frame(t="res", id=1, status=42), "bad_field"),
        (frame(t="res", id=1, status=200, headers=[["a"]]), "bad_field"),
        (frame(t="res", id=1, status=200, headers=[["a", 1]]), "bad_field"),
        (frame(t="res", id=1, status=200, headers={"a": "b"}), "bad_field"),
        (frame(t="res", id=1, status=200, body="text"), "bad_field"),
    ],
)
def test_peer_mistakes_have_reasons(data, reason):
    assert reason_of(data) == reason


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dst", "NOT-A-NODE-ID"),
        ("dst", "a" * 31),
        ("app", ""),
        ("method", ""),
        ("path", "items/42"),
        ("query", 5),
        ("headers", [["x", "y"]] * 300),
        ("hops", 256),
        ("ttl", -1),
        ("body", None),
    ],
)
def test_bad_request_fields(key, value):
    fields = good_request_fields()
    fields[key] = value
    assert reason_of(frame(**fields)) == "bad_field"


def test_bad_hello_fields():
    good = msgpack.unpackb(encode(EXAMPLES[0]))
    for key, value in [("key", b"k" * 31), ("nonce", b""), ("role", "boss"), ("id", "A" * 32)]:
        assert reason_of(frame(**{**good, key: value})) == "bad_field", key
    assert reason_of(frame(**{**good, "expect": "nobody"})) == "bad_field"


def test_frame_size_limits():
    assert reason_of(b"\x00" * (MAX_FRAME + 1)) == "frame_too_large"
    assert reason_of(encode(Bye("x" * 100)), max_size=64) == "frame_too_large"
    big = RequestFrame(1, NODE_B, "a", "PUT", "/", body=b"\x00" * codec.MAX_BODY, hops=1, ttl_ms=1)
    assert len(decode(encode(big)).body) == codec.MAX_BODY


def test_long_strings_are_refused_before_they_are_built():
    long_path = {**good_request_fields(), "path": "/" + "x" * codec.MAX_STRING}
    assert reason_of(frame(**long_path)) == "malformed_msgpack"
    # A small type is refused by its size cap before msgpack is even read.
    assert reason_of(frame(t="bye", reason="x" * (codec.MAX_STRING + 1))) == "frame_too_large"


def test_building_a_bad_message_is_a_local_error():
    with pytest.raises(LocalProtocolError, match="req.path"):
        RequestFrame(1, NODE_B, "a", "GET", "no-slash", hops=1, ttl_ms=1)
    with pytest.raises(LocalProtocolError, match="res.status"):
        ResponseFrame(1, 1000)
    with pytest.raises(LocalProtocolError, match="ping.n"):
        Ping(-1)
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode("ping")


def test_locally_built_frames_may_use_lists_and_memoryviews():
    message = ResponseFrame(1, 200, [["A", "b"]], memoryview(b"abc"))
    assert message.headers == (("A", "b"),)
    assert decode(encode(message)).body == b"abc"


# -- fuzzing: remote garbage gives RemoteProtocolError, nothing else ----------------------------


def decodes_or_refuses(data: bytes) -> None:
    try:
        message = decode(data)
    except RemoteProtocolError as exc:
        assert exc.reason in codec.DECODE_REASONS
    else:
        # What decoded is what the frame said it is, a type of the document, and stays itself.
        assert msgpack.unpackb(data, strict_map_key=False)["t"] == type(message).TYPE
        assert type(message).TYPE in DOCUMENTED_TYPES
        assert decode(encode(message)) == message


@fuzz(1000)
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data):
    decodes_or_refuses(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=70),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=6,
)
field_names = st.sampled_from(
    ["t", "v", "id", "key", "nonce", "name", "role", "expect", "sig", "b", "s", "dst", "app"]
    + ["method", "path", "query", "headers", "body", "hops", "ttl", "status", "n", "reason"]
)


@fuzz(300)
@given(
    st.sampled_from(sorted(codec._TYPES)),
    st.dictionaries(field_names, msgpack_values, max_size=12),
)
def test_fuzz_frames_with_plausible_keys(kind, fields):
    decodes_or_refuses(msgpack.packb({**fields, "t": kind}, use_bin_type=True))


@fuzz(500)
@given(st.sampled_from(EXAMPLES), st.data())
def test_fuzz_mutated_valid_frames(message, data):
    raw = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    decodes_or_refuses(bytes(raw))
