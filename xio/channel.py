"""The messages of the client channel, ``/_xio/client-ws``: bytes in, values out, no IO.

A client (``xio.client('ws://node:7700/app')``, the JavaScript client) keeps one WebSocket to
a node and sends many requests on it; the node answers each with a head and, for a body that
is produced piece by piece, data messages until one carries ``END``. docs/PROTOCOL.md,
section 16, is the reference; this module is its codec, shared by the node and the Python
client.

Theory of operation
-------------------
Every message is one binary WebSocket message made of a 10-byte prefix, a JSON object and a
body::

    kind   u8    REQ 1, CANCEL 2, HEAD 3, DATA 4
    flags  u8    bit 0: END (HEAD, DATA): the body is complete with this message
                 bit 1: ABORT (with END, on DATA): the body broke off; JSON "error" says why
    id     u32   big-endian; the client's number for the request, 1..2**32-1
    hlen   u32   big-endian; bytes of JSON that follow (0: none, read as {})
    JSON   hlen  UTF-8, an object
    body         the rest of the message

The prefix is binary so that a node can judge a large request from its first bytes (its
kind, its id, how much body it declares) before reading it: it fits in the 64 bytes the
WebSocket reader shows before admitting a large message. JSON (not msgpack) so that a
browser needs nothing it does not have. ``decode`` checks only the frame's shape and raises
``ChannelError``, for which the node closes the connection; the values inside a ``REQ``'s
JSON are checked by ``request_fields``, which raises ``BadRequest``: one request's fault,
answered 400 on the same connection.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field

from .errors import BadRequest, RemoteProtocolError

__all__ = [
    "CANCEL",
    "DATA",
    "ABORT",
    "END",
    "HEAD",
    "PREFIX_SIZE",
    "REQ",
    "ChannelError",
    "Message",
    "decode",
    "encode",
    "peek",
    "request_fields",
]

REQ, CANCEL, HEAD, DATA = 1, 2, 3, 4
KINDS = frozenset({REQ, CANCEL, HEAD, DATA})
END = 0x01
#: With END on a node's DATA: the body is incomplete (a stream broke); JSON ``error`` says why.
ABORT = 0x02
MAX_ID = 2**32 - 1
#: Most JSON one message may carry: request headers at their largest, with room to spare.
MAX_JSON = 256 * 1024
_PREFIX = struct.Struct(">BBII")
PREFIX_SIZE = _PREFIX.size
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ChannelError(RemoteProtocolError):
    """A message that is not a channel message: the connection is closed (code 1002)."""


@dataclass(frozen=True)
class Message:
    kind: int
    id: int
    flags: int = 0
    fields: dict = field(default_factory=dict)
    body: bytes = b""

    @property
    def end(self) -> bool:
        return bool(self.flags & END)


def encode(kind: int, id: int, fields: dict | None = None, body: bytes = b"", flags: int = 0):
    """Return one message as bytes (``fields`` as compact JSON, none when empty)."""
    header = (
        json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode() if fields else b""
    )
    return _PREFIX.pack(kind, flags, id, len(header)) + header + body


def peek(prefix: bytes) -> tuple[int, int, int]:
    """Return ``(kind, id, hlen)`` from a message's first bytes; raise ``ChannelError``."""
    if len(prefix) < PREFIX_SIZE:
        raise ChannelError("bad_message", f"a message is at least {PREFIX_SIZE} bytes")
    kind, _flags, id, hlen = _PREFIX.unpack_from(prefix)
    if kind not in KINDS:
        raise ChannelError("bad_message", f"unknown message kind {kind}")
    if id == 0:
        raise ChannelError("bad_message", "request id 0 is reserved")
    if hlen > MAX_JSON:
        raise ChannelError("bad_message", f"{hlen} bytes of JSON; at most {MAX_JSON}")
    return kind, id, hlen


def decode(data: bytes) -> Message:
    """Return the ``Message`` in ``data``; raise ``ChannelError`` when it is malformed."""
    kind, id, hlen = peek(data)
    flags = data[1]
    end = PREFIX_SIZE + hlen
    if len(data) < end:
        raise ChannelError("bad_message", f"the JSON is cut short ({len(data) - PREFIX_SIZE} "
                           f"of {hlen} bytes)")  # fmt: skip
    fields = {}
    if hlen:
        try:
            fields = json.loads(data[PREFIX_SIZE:end])
        except (UnicodeDecodeError, ValueError) as exc:
            raise ChannelError("bad_message", f"the JSON does not parse: {exc}") from None
        if type(fields) is not dict:
            raise ChannelError("bad_message", "the JSON is not an object")
    return Message(kind, id, flags, fields, bytes(data[end:]))


def request_fields(fields: dict) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Return ``(method, path, query, headers)`` of a ``REQ``; raise ``BadRequest``."""
    method = fields.get("method")
    if type(method) is not str or not _TOKEN.fullmatch(method):
        raise BadRequest("a request's method must be an HTTP token")
    path = fields.get("path")
    if type(path) is not str or not path.startswith("/"):
        raise BadRequest("a request's path must be a string starting with '/'")
    query = fields.get("query", "")
    if type(query) is not str:
        raise BadRequest("a request's query must be a string")
    raw = fields.get("headers", [])
    if type(raw) is not list:
        raise BadRequest("a request's headers must be a list of [name, value] pairs")
    headers = []
    for pair in raw:
        if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str
                or type(pair[1]) is not str or not _TOKEN.fullmatch(pair[0])
                or "\r" in pair[1] or "\n" in pair[1] or "\0" in pair[1]):  # fmt: skip
            raise BadRequest(f"bad request header {str(pair)[:80]}: a [name, value] pair "
                             "of strings, the name a token, no CR, LF or NUL in the value")  # fmt: skip
        headers.append((pair[0], pair[1]))
    return method.upper(), path, query.lstrip("?"), headers
