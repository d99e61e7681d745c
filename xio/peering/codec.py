"""Wire codec: one WebSocket binary message = one frame = one msgpack map.

Theory of operation
-------------------
Every frame is a msgpack map whose key ``"t"`` names the message type; the other keys are that
type's fields (see docs/PROTOCOL.md for the tables). Each type is a frozen, slotted dataclass that
validates itself when built (``xio.peering.frames``, re-exported here), so a frame built locally
and a frame decoded from a peer pass through the same checks, and its wire table is derived from
its fields:

* building a bad message locally raises ``LocalProtocolError`` (a bug in this process);
* ``decode`` turns every problem with a peer's bytes into ``RemoteProtocolError(reason)``, with
  ``reason`` one of ``DECODE_REASONS``; no msgpack exception escapes.

Unknown keys in a known type are ignored (newer peers may add optional fields); an unknown
``"t"`` is an error, because a new message type is only ever sent to a peer that announced it
understands it. ``encode`` writes ``"t"`` first, then the fields in table order, and leaves out
optional fields whose value is ``None``.

The hot path (``req`` / ``res``) is one ``unpackb``, one dict walk and one dataclass build: a few
microseconds and no cryptography. Links are authenticated once, by the handshake.

Memory is never taken on a peer's word. Each type has a frame size cap (``FRAME_CAPS``: a ``ping``
is tens of bytes, only ``req`` and ``res`` may be megabytes), checked after decoding; a frame
larger than ``SMALL_FRAME`` is checked from its first bytes when ``"t"`` comes first, as xio and
every encoder following PROTOCOL.md write it, and then walked without building anything and
refused if it holds more than ``MAX_LARGE_FRAME_OBJECTS`` msgpack objects, because
one byte of msgpack (an empty array) becomes some 64 bytes of Python objects: a large frame may
be large only by its strings and bins.
"""

from __future__ import annotations

from typing import Any

import msgpack

from xio.constants import MAX_BODY
from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.frames import (
    DEFAULT_HOPS,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_PIECE,
    MAX_REASON,
    MAX_STRING,
    MAX_SUMMARY_ENTRIES,
    NONCE_LENGTH,
    PROTOCOL_VERSION,
    ROLES,
    Auth,
    Bye,
    Cancel,
    CreditFrame,
    DataFrame,
    EndFrame,
    Hello,
    Message,
    Ping,
    Pong,
    RecordFrame,
    RequestFrame,
    ResponseFrame,
    Revoke,
    Summary,
    Want,
)
from xio.peering.frames import REQUIRED as _REQUIRED
from xio.peering.frames import TYPES as _TYPES
from xio.peering.reasons import DECODE_REASONS
from xio.peering.trace import MAX_ENTRIES as MAX_TRACE_ENTRIES

__all__ = [
    "DECODE_REASONS",
    "DEFAULT_HOPS",
    "FRAME_CAPS",
    "MAX_BODY",
    "MAX_FRAME",
    "MAX_HANDSHAKE_FRAME",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_PIECE",
    "MAX_STRING",
    "MAX_SUMMARY_ENTRIES",
    "NONCE_LENGTH",
    "PROTOCOL_VERSION",
    "ROLES",
    "Auth",
    "Bye",
    "Cancel",
    "CreditFrame",
    "DataFrame",
    "EndFrame",
    "Hello",
    "Message",
    "Ping",
    "Pong",
    "RecordFrame",
    "RequestFrame",
    "ResponseFrame",
    "Revoke",
    "Summary",
    "Want",
    "decode",
    "encode",
    "peek_type_and_id",
]

MAX_FRAME = MAX_BODY + 1024 * 1024  # body plus headroom for the envelope
MAX_HANDSHAKE_FRAME = 4096  # what a link accepts before it is established
SMALL_FRAME = 64 * 1024  # frames up to this are decoded directly
#: A req with 256 headers holds ~800; a res may also hold a trace of 256 entries (4 each).
MAX_LARGE_FRAME_OBJECTS = 4 * MAX_HEADERS + 64 + 4 * MAX_TRACE_ENTRIES

#: The largest frame of each type, in bytes. Small types stay small whatever a peer pads them
#: with; only ``req`` and ``res`` carry bodies.
FRAME_CAPS: dict[str, int] = {
    "hello": MAX_HANDSHAKE_FRAME,
    "auth": MAX_HANDSHAKE_FRAME,
    "ping": 64,
    "pong": 64,
    "cancel": 64,
    "bye": 4 * MAX_REASON + 64,
    "record": 64 * 1024 + 256,  # records.MAX_RECORD_SIZE plus the envelope
    "summary": SMALL_FRAME,
    "want": SMALL_FRAME,
    "revoke": 512,  # one packed revocation (frames.MAX_REVOCATION) plus the envelope
    "req": MAX_FRAME,
    "res": MAX_FRAME,
    # A streamed answer (docs/PROTOCOL.md 4.1), sent only to a peer whose req asked for it.
    "data": MAX_PIECE + 64,
    "credit": 64,
    "end": 4 * MAX_REASON + 64,
}

_unpackb = msgpack.unpackb
# One packer, reused: packb makes a packer per call, and each one mallocs a 1 MiB buffer. Frames
# are encoded on the hub's thread only, one at a time (pack does not switch greenlets).
_pack = msgpack.Packer(use_bin_type=True).pack


def encode(message: Message) -> bytes:
    """Return the frame bytes of ``message``."""
    try:
        wire = type(message).WIRE
    except AttributeError:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}") from None
    frame: dict[str, Any] = {"t": message.TYPE}
    for attr, key, default in wire:
        value = getattr(message, attr)
        if value is None and default is None:
            continue
        frame[key] = value
    try:
        data = _pack(frame)
    except (UnicodeEncodeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate
        raise LocalProtocolError(f"cannot encode {message.TYPE}: {exc}") from None
    # The decoder's rules, applied to what we send: a frame a peer must refuse (and close the
    # link for) is never sent. Valid fields keep every frame within its cap; this is the guard.
    if len(data) > FRAME_CAPS[message.TYPE]:
        raise LocalProtocolError(
            f"{message.TYPE} frame of {len(data)} bytes > {FRAME_CAPS[message.TYPE]}"
        )
    return data


def peek_type_and_id(prefix: bytes) -> tuple[str | None, int | None]:
    """Return the type and request id at the start of a frame, when they come first.

    Reads only ``prefix`` (the first bytes of a frame, e.g. 64): a map header, then ``"t"`` and
    its short str, then ``"id"`` and its uint. Returns ``(None, None)`` or ``(type, None)`` when
    the frame is not laid out that way (a peer may order keys as it likes; callers then decode).
    """
    size = len(prefix)
    if size < 4:
        return None, None
    first = prefix[0]
    if 0x80 <= first <= 0x8F:
        pos = 1
    elif first == 0xDE:
        pos = 3
    else:
        return None, None
    if prefix[pos : pos + 2] != b"\xa1t" or pos + 3 > size:
        return None, None
    head = prefix[pos + 2]
    if not 0xA0 <= head <= 0xBF:
        return None, None
    start, pos = pos + 3, pos + 3 + (head & 0x1F)
    if pos > size:
        return None, None
    try:
        kind = bytes(prefix[start:pos]).decode()
    except UnicodeDecodeError:
        return None, None
    if prefix[pos : pos + 3] != b"\xa2id" or pos + 4 > size:
        return kind, None
    head, pos = prefix[pos + 3], pos + 4
    if head <= 0x7F:
        return kind, head
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4}.get(head)
    if width is None or pos + width > size:
        return kind, None
    return kind, int.from_bytes(prefix[pos : pos + width], "big")


# msgpack heads (spec: github.com/msgpack/msgpack/blob/master/spec.md) for the walk below.
_FIXED_WIDTH = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2,
                0xD2: 4, 0xD3: 8}  # fmt: skip
_LENGTH_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin, str
_ARRAY_WIDTH = {0xDC: 2, 0xDD: 4}
_MAP_WIDTH = {0xDE: 2, 0xDF: 4}


def _check_object_count(data: bytes, limit: int) -> None:
    """Walk the msgpack in ``data`` without building it; refuse more than ``limit`` objects."""
    pos, pending, count, end = 0, 1, 0, len(data)
    while pending:
        if pos >= end:
            raise RemoteProtocolError("malformed_msgpack", "frame ends inside an object")
        head = data[pos]
        pos += 1
        pending -= 1
        count += 1
        if count > limit:
            raise RemoteProtocolError(
                "frame_too_large", f"a frame over {SMALL_FRAME} bytes holds over {limit} objects"
            )
        if head <= 0x7F or head >= 0xE0 or head in (0xC0, 0xC2, 0xC3):
            continue  # fixint, nil, bool
        if head <= 0x8F:
            pending += 2 * (head & 0x0F)
        elif head <= 0x9F:
            pending += head & 0x0F
        elif head <= 0xBF:
            pos += head & 0x1F
        elif head in _FIXED_WIDTH:
            pos += _FIXED_WIDTH[head]
        elif head in _LENGTH_WIDTH:
            width = _LENGTH_WIDTH[head]
            pos += width + int.from_bytes(data[pos : pos + width], "big")
        elif head in _ARRAY_WIDTH:
            width = _ARRAY_WIDTH[head]
            pending += int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif head in _MAP_WIDTH:
            width = _MAP_WIDTH[head]
            pending += 2 * int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:  # 0xc1 (never used) and the ext family
            raise RemoteProtocolError("malformed_msgpack", f"msgpack head {head:#04x}")


def _check_cap(kind: str, size: int) -> None:
    cap = FRAME_CAPS.get(kind)
    if cap is not None and size > cap:
        raise RemoteProtocolError("frame_too_large", f"{kind} frame of {size} bytes > {cap}")


def decode(data: bytes, max_size: int = MAX_FRAME) -> Message:
    """Parse one frame, raising ``RemoteProtocolError`` for anything a peer got wrong.

    ``max_size`` lets a link accept only small frames before its handshake is done.
    """
    size = len(data)
    if size > max_size:
        raise RemoteProtocolError("frame_too_large", f"{size} bytes > {max_size}")
    if size > SMALL_FRAME:  # smaller frames are capped by type after decoding: it is cheap
        kind, _ = peek_type_and_id(data[:16])
        if kind is not None:
            _check_cap(kind, size)
        _check_object_count(data, MAX_LARGE_FRAME_OBJECTS)
    try:
        frame = _unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_STRING,
            max_bin_len=MAX_FRAME,
            max_array_len=65536,
            max_map_len=256,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many kinds (ValueError, StackError, ...)
        raise RemoteProtocolError("malformed_msgpack", str(exc)[:200]) from exc
    if type(frame) is not dict:
        raise RemoteProtocolError("not_a_map", f"frame is a {type(frame).__name__}")
    kind = frame.get("t")
    cls = _TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise RemoteProtocolError("unknown_type", f"t={kind!r:.40}")
    if size > FRAME_CAPS["ping"]:
        _check_cap(kind, size)  # "t" may not have come first
    get = frame.get
    values = [get(key, default) for _, key, default in cls.WIRE]
    if _REQUIRED in values:
        missing = cls.WIRE[values.index(_REQUIRED)][1]
        raise RemoteProtocolError("missing_field", f"{kind} frame has no {missing!r}")
    keywords = cls.WIRE_KEYWORDS  # required fields after optional ones (req: hops, ttl)
    try:
        if not keywords:
            return cls(*values)
        split = len(values) - len(keywords)
        return cls(*values[:split], **dict(zip(keywords, values[split:], strict=True)))
    except LocalProtocolError as exc:
        raise RemoteProtocolError("bad_field", str(exc)) from None
