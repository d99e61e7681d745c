"""A message type's wire table is its dataclass fields: the class and the wire cannot disagree.

``RequestFrame.hops`` used to have a default in the class while a ``req`` without ``hops`` was
refused as ``missing_field``: a frame built here without it was one no peer would accept.
"""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from xio.errors import RemoteProtocolError
from xio.peering import codec, frames
from xio.peering.identity import Identity

NODE_B = Identity.from_seed(bytes(range(32, 64))).node_id


@pytest.mark.parametrize("cls", frames.ALL_TYPES, ids=lambda cls: cls.TYPE)
def test_a_field_is_required_on_the_wire_exactly_when_the_class_requires_it(cls):
    for item, (attribute, _key, default) in zip(dataclasses.fields(cls), cls.WIRE, strict=True):
        assert attribute == item.name
        if item.default is dataclasses.MISSING:
            assert default is frames.REQUIRED, f"{cls.TYPE}.{attribute}"
        else:
            assert default == item.default, f"{cls.TYPE}.{attribute}"


def test_a_req_needs_hops_and_ttl_when_built_as_on_the_wire():
    with pytest.raises(TypeError, match="hops"):
        codec.RequestFrame(1, NODE_B, "app", "GET", "/", ttl_ms=1000)
    with pytest.raises(TypeError, match="ttl_ms"):
        codec.RequestFrame(1, NODE_B, "app", "GET", "/", hops=16)
    fields = {"t": "req", "id": 1, "dst": NODE_B, "app": "app", "method": "GET", "path": "/"}
    for given in ({"ttl": 1000}, {"hops": 16}):
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(msgpack.packb({**fields, **given}))
        assert info.value.reason == "missing_field"
    frame = codec.decode(msgpack.packb({**fields, "hops": 16, "ttl": 1000}))
    assert (frame.hops, frame.ttl_ms, frame.query, frame.headers, frame.body) == (
        16,
        1000,
        "",
        (),
        b"",
    )
    assert codec.decode(codec.encode(frame)) == frame


def test_the_names_other_modules_import_from_codec_are_still_there():
    for name in ("RequestFrame", "ResponseFrame", "Hello", "MAX_STRING", "MAX_HEADERS",
                 "MAX_HEADER_BYTES", "DEFAULT_HOPS", "NONCE_LENGTH", "PROTOCOL_VERSION"):  # fmt: skip
        assert getattr(codec, name) is getattr(frames, name)
