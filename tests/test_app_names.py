"""One rule for an app's name, wherever a name enters: hosting, records, frames, the router.

A record used to accept names the router refused (``_xio``, 65 characters and more), so a
node could advertise an app that no URL could reach.
"""

from __future__ import annotations

import msgpack
import pytest

from xio.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from xio.node.hosting import check_app_name
from xio.peering import codec
from xio.peering.identity import Identity
from xio.peering.names import MAX_APP_NAME, is_app_name
from xio.peering.records import RECORD_DOMAIN, Record, parse_record

NOW = 1_700_000_000_000
ALICE = Identity.from_seed(bytes(range(32)))
NODE_B = Identity.from_seed(bytes(range(32, 64))).node_id

GOOD = ["inventory", "a", "9", "v1.2-beta_3", "x" * MAX_APP_NAME]
#: Names the router never routes to; before the rule was shared, records took the first three.
BAD = ["_xio", "_private", "x" * (MAX_APP_NAME + 1), "a b", "~node", "a/b", "é", "-x", "a\n", ""]


def record_body_with_app(name: str) -> tuple[bytes, bytes]:
    """Return a validly signed record body advertising app ``name``, built by hand."""
    items = msgpack.unpackb(Record.build(ALICE, 1, NOW, 60_000, "a", "1", [], {}, {}).body)
    items[10] = [[name, ""]]
    body = msgpack.packb(items, use_bin_type=True)
    return body, ALICE.sign(RECORD_DOMAIN + body)


@pytest.mark.parametrize("name", GOOD)
def test_a_good_name_is_accepted_everywhere(name):
    assert is_app_name(name)
    assert check_app_name(name) == name
    body, signature = record_body_with_app(name)
    assert parse_record(body, signature, NOW).app_names() == [name]
    frame = codec.RequestFrame(1, NODE_B, name, "GET", "/", hops=1, ttl_ms=1000)
    assert codec.decode(codec.encode(frame)) == frame


@pytest.mark.parametrize("name", BAD)
def test_a_name_the_router_refuses_is_refused_by_records_and_frames_too(name):
    assert not is_app_name(name)  # what the router matches a path's first segment with
    with pytest.raises(ConfigError, match="not usable"):
        check_app_name(name)
    with pytest.raises(LocalProtocolError):
        Record.build(ALICE, 1, NOW, 60_000, "a", "1", [], {}, {name: ""})
    body, signature = record_body_with_app(name)
    with pytest.raises(RemoteProtocolError) as info:
        parse_record(body, signature, NOW)
    assert info.value.reason == "malformed_record"
    with pytest.raises(LocalProtocolError, match="req.app"):
        codec.RequestFrame(1, NODE_B, name, "GET", "/", hops=1, ttl_ms=1000)


def test_a_req_frame_for_an_unroutable_app_is_a_bad_field():
    fields = {"t": "req", "id": 1, "dst": NODE_B, "app": "_xio", "method": "GET", "path": "/",
              "hops": 1, "ttl": 1000}  # fmt: skip
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(msgpack.packb(fields))
    assert info.value.reason == "bad_field"
