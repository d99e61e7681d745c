"""Issue 8, pure parts: one rule set for frames built here and frames decoded from a peer, the
``X-Xio-Via`` trail, the headers that cross the mesh and the raw path."""

from __future__ import annotations

import msgpack
import pytest

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.node.headers import end_to_end, first_bad_header
from xio.peering import codec
from xio.peering.codec import RequestFrame, ResponseFrame, decode, encode
from xio.peering.via import judge_trail, with_via
from xio.request import Request
from xio.resource import RawPath, Resource

NODE_A, NODE_B, NODE_C = "a" * 32, "b" * 32, "c" * 32


def refusal(fields: dict) -> str:
    """Return the reason a peer's frame made of ``fields`` is refused."""
    with pytest.raises(RemoteProtocolError) as caught:
        decode(msgpack.packb(fields, use_bin_type=True))
    return caught.value.reason


def request_fields(**changes) -> dict:
    fields = {"t": "req", "id": 1, "dst": NODE_B, "app": "a", "method": "GET", "path": "/x",
              "query": "", "headers": [], "body": b"", "hops": 16, "ttl": 1000}  # fmt: skip
    return {**fields, **changes}


# Each value is refused the same way whichever side it comes from: built here, it is a
# LocalProtocolError (the frame is never sent); from a peer, the frame is refused.
SAME_RULES = [
    ("a header value over 64 KiB", {"headers": [["X-Big", "x" * (64 * 1024 + 1)]]}),
    ("64 KiB of non-ASCII text", {"headers": [["X-Wide", "é" * (40 * 1024)]]}),
    ("headers over 256 KiB in all", {"headers": [[f"X-{i}", "v" * 60_000] for i in range(5)]}),
    ("a method over 255 characters", {"method": "M" * 256}),
    ("a path with a space", {"path": "/a b"}),
    ("a path with a broken escape", {"path": "/100%zz"}),
]


@pytest.mark.parametrize(("what", "changes"), SAME_RULES, ids=[w for w, _ in SAME_RULES])
def test_a_value_a_peer_may_not_send_cannot_be_built_here(what, changes):
    fields = request_fields(**changes)
    assert refusal(fields) in ("bad_field", "malformed_msgpack")
    with pytest.raises(LocalProtocolError):
        RequestFrame(
            1, NODE_B, fields["app"], fields["method"], fields["path"],
            headers=tuple(tuple(pair) for pair in fields["headers"]), hops=1, ttl_ms=1,
        )  # fmt: skip
    if "headers" in changes:  # the same rules for a res
        with pytest.raises(LocalProtocolError):
            ResponseFrame(1, 200, tuple(tuple(pair) for pair in fields["headers"]))


def test_every_frame_built_within_the_rules_is_one_a_peer_accepts():
    headers = tuple((f"X-{i:03}", "v" * 900) for i in range(256))  # 230 KiB, 256 pairs
    largest = ResponseFrame(2**32 - 1, 599, headers, b"\0" * codec.MAX_BODY)
    data = encode(largest)
    assert len(data) <= codec.FRAME_CAPS["res"]
    assert decode(data).headers == headers
    raw = RequestFrame(1, NODE_B, "a", "GET", "/a%2Fb/c~:@!$&'()*+,;=", "q=%20 ü", hops=1, ttl_ms=1)
    assert decode(encode(raw)) == raw


def test_a_string_that_cannot_be_encoded_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        encode(ResponseFrame(1, 200, (("X-Bad", "\udc80"),)))


# -- the trail ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ((), None, None),
        ((("X-Xio-Via", f"{NODE_A},{NODE_C}"),), None, None),
        ((("X-Xio-Via", f"{NODE_A},{NODE_B}"),), 508, "loop"),
        ((("x-xio-via", NODE_B),), 508, "loop"),
        ((("X-Xio-Via", f"{NODE_A}, {NODE_C}"),), 400, "bad_via"),
        ((("X-Xio-Via", "spoofed"),), 400, "bad_via"),
        ((("X-Xio-Via", ""),), 400, "bad_via"),
        ((("X-Xio-Via", NODE_A), ("X-Xio-Via", NODE_C)), 400, "bad_via"),
    ],
)
def test_a_trail_is_node_ids_without_this_node(headers, status, reason):
    _, problem = judge_trail(headers, NODE_B)
    if status is None:
        assert problem is None
    else:
        assert (problem.status, problem.reason) == (status, reason)


def test_a_relay_appends_only_its_own_id_to_one_header():
    headers = (("Accept", "*/*"), ("x-xio-via", NODE_A))
    assert with_via(headers, NODE_B) == (("Accept", "*/*"), ("X-Xio-Via", f"{NODE_A},{NODE_B}"))


# -- headers -----------------------------------------------------------------------------------


def test_only_end_to_end_headers_cross_and_repeats_stay_in_order():
    sent = [("Set-Cookie", "a=1"), ("Connection", "close, X-Named"), ("X-Named", "1"),
            ("Keep-Alive", "5"), ("Proxy-Authenticate", "x"), ("Content-Length", "0"),
            ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Trailer", "X"),
            ("Upgrade", "h2c"), ("set-cookie", "b=2"), ("Host", "h")]  # fmt: skip
    assert end_to_end(sent) == [("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("Host", "h")]


def test_headers_http_cannot_carry_are_named():
    assert first_bad_header([("A", "ok\tfine"), ("B", "x\r\nEvil: 1")]) == "B"
    assert first_bad_header([("Bad Name", "x")]) == "Bad Name"
    assert first_bad_header([("A", "nul\0")]) == "A"
    assert first_bad_header([("A", "fine")]) is None


# -- the raw path ------------------------------------------------------------------------------


def test_a_raw_path_is_split_before_it_is_decoded():
    tree = Resource()

    @tree.bind("www/items/:id")
    def item(req):
        return {"id": req.params["id"], "path": req.path}

    raw = tree.handle(Request("GET", RawPath("www/items/a%2Fb/c%20d")))
    assert raw.content == {"id": "a/b", "path": "c d"}
    decoded = tree.handle(Request("GET", "www/items/100%"))  # in-process paths are not decoded
    assert decoded.content == {"id": "100%", "path": ""}
