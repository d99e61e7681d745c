"""The client channel's codec (xio.channel): the vectors of docs/PROTOCOL.md section 16, and
every malformed message it must refuse. Pure: bytes in, values out."""

from __future__ import annotations

import struct

import pytest

from xio import channel
from xio.channel import ABORT, CANCEL, DATA, END, HEAD, REQ, ChannelError
from xio.errors import BadRequest

# (name, the message, its bytes in hex): the same table as PROTOCOL.md 16.4.
VECTORS = [
    ("req", (REQ, 1, {"method": "GET", "path": "/inventory/items/42", "query": "full=1",
                      "headers": [["Accept", "application/json"]]}, b"", END),
     "010100000001000000687b226d6574686f64223a22474554222c2270617468223a222f696e76656e746f7279"
     "2f6974656d732f3432222c227175657279223a2266756c6c3d31222c2268656164657273223a5b5b22416363"
     "657074222c226170706c69636174696f6e2f6a736f6e225d5d7d"),
    ("req_body", (REQ, 2, {"method": "POST", "path": "/inventory/items",
                           "headers": [["Content-Type", "application/json"]]},
                  b'{"name":"kettle"}', END),
     "0101000000020000005b7b226d6574686f64223a22504f5354222c2270617468223a222f696e76656e746f72"
     "792f6974656d73222c2268656164657273223a5b5b22436f6e74656e742d54797065222c226170706c696361"
     "74696f6e2f6a736f6e225d5d7d7b226e616d65223a226b6574746c65227d"),
    ("cancel", (CANCEL, 2, None, b"", 0), "02000000000200000000"),
    ("head", (HEAD, 1, {"status": 200, "headers": [["Content-Type", "application/json"]]},
              b'{"id":42}', END),
     "0301000000010000003e7b22737461747573223a3230302c2268656164657273223a5b5b22436f6e74656e74"
     "2d54797065222c226170706c69636174696f6e2f6a736f6e225d5d7d7b226964223a34327d"),
    ("head_open", (HEAD, 3, {"status": 200,
                             "headers": [["Content-Type", "text/plain; charset=utf-8"]]}, b"", 0),
     "030000000003000000477b22737461747573223a3230302c2268656164657273223a5b5b22436f6e74656e74"
     "2d54797065222c22746578742f706c61696e3b20636861727365743d7574662d38225d5d7d"),
    ("data", (DATA, 3, None, b"chunk-0\n", 0), "040000000003000000006368756e6b2d300a"),
    ("data_end", (DATA, 3, None, b"", END), "04010000000300000000"),
    ("data_abort", (DATA, 3, {"error": "link to b closed mid-stream"}, b"", END | ABORT),
     "040300000003000000277b226572726f72223a226c696e6b20746f206220636c6f736564206d69642d737472"
     "65616d227d"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "message", "wire"), VECTORS, ids=[v[0] for v in VECTORS])
def test_the_vectors_encode_and_decode_byte_for_byte(name, message, wire):
    kind, id, fields, body, flags = message
    assert channel.encode(kind, id, fields, body, flags).hex() == wire
    decoded = channel.decode(bytes.fromhex(wire))
    assert (decoded.kind, decoded.id, decoded.fields, decoded.body, decoded.end) == (
        kind, id, fields or {}, body, bool(flags))  # fmt: skip


@pytest.mark.parametrize(
    ("data", "why"),
    [(b"\x01\x01\x00", "at least 10 bytes"), (struct.pack(">BBII", 5, 0, 1, 0), "unknown"),
     (struct.pack(">BBII", 1, 1, 0, 0), "id 0"),
     (struct.pack(">BBII", 1, 1, 1, channel.MAX_JSON + 1), "bytes of JSON"),
     (struct.pack(">BBII", 1, 1, 1, 9) + b"{}", "cut short"),
     (struct.pack(">BBII", 1, 1, 1, 3) + b"{x}", "does not parse"),
     (struct.pack(">BBII", 1, 1, 1, 2) + b"\xff\xfe", "does not parse"),
     (struct.pack(">BBII", 1, 1, 1, 2) + b"[]", "not an object")],
)  # fmt: skip
def test_a_malformed_message_is_a_channel_error_saying_why(data, why):
    with pytest.raises(ChannelError, match=why):
        channel.decode(data)


def test_peek_judges_a_message_from_its_prefix_alone():
    prefix = channel.encode(REQ, 7, {"method": "PUT", "path": "/a"}, b"x" * 100)[:10]
    assert channel.peek(prefix) == (REQ, 7, len(b'{"method":"PUT","path":"/a"}'))


@pytest.mark.parametrize(
    ("fields", "why"),
    [({"path": "/a"}, "method"), ({"method": "G T", "path": "/a"}, "method"),
     ({"method": "GET"}, "path"), ({"method": "GET", "path": "a"}, "path"),
     ({"method": "GET", "path": "/a", "query": 1}, "query"),
     ({"method": "GET", "path": "/a", "headers": {"A": "b"}}, "headers"),
     ({"method": "GET", "path": "/a", "headers": [["A", "b\r\nX: y"]]}, "header"),
     ({"method": "GET", "path": "/a", "headers": [["A B", "b"]]}, "header"),
     ({"method": "GET", "path": "/a", "headers": [["A", 1]]}, "header")],
)  # fmt: skip
def test_bad_request_fields_are_a_bad_request_for_that_request(fields, why):
    with pytest.raises(BadRequest, match=why):
        channel.request_fields(fields)


def test_request_fields_read_a_request():
    fields = {"method": "purge", "path": "/app/x", "query": "?k=1&k=2",
              "headers": [["Set-Cookie", "a"], ["Set-Cookie", "b"]]}  # fmt: skip
    assert channel.request_fields(fields) == (
        "PURGE", "/app/x", "k=1&k=2", [("Set-Cookie", "a"), ("Set-Cookie", "b")])  # fmt: skip
