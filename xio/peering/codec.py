"""Wire codec: one WebSocket binary message = one frame = one msgpack map.

Theory of operation
-------------------
Every frame is a msgpack map whose key ``"t"`` names the message type; the other keys are that
type's fields (see docs/PROTOCOL.md for the tables). Each type is a frozen, slotted dataclass that
validates itself when built, so a frame built locally and a frame decoded from a peer pass through
the same checks:

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

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from xio.constants import MAX_BODY
from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.identity import NODE_ID_PATTERN, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, is_node_id
from xio.peering.names import APP_NAME, APP_NAME_RULE, MAX_NAME
from xio.peering.reasons import DECODE_REASONS

__all__ = [
    "DECODE_REASONS",
    "DEFAULT_HOPS",
    "FRAME_CAPS",
    "MAX_BODY",
    "MAX_FRAME",
    "MAX_HANDSHAKE_FRAME",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_STRING",
    "MAX_SUMMARY_ENTRIES",
    "NONCE_LENGTH",
    "PROTOCOL_VERSION",
    "ROLES",
    "Auth",
    "Bye",
    "Cancel",
    "Hello",
    "Message",
    "Ping",
    "Pong",
    "RecordFrame",
    "RequestFrame",
    "ResponseFrame",
    "Summary",
    "Want",
    "decode",
    "encode",
    "peek_type_and_id",
]

PROTOCOL_VERSION = 1
MAX_FRAME = MAX_BODY + 1024 * 1024  # body plus headroom for the envelope
MAX_HANDSHAKE_FRAME = 4096  # what a link accepts before it is established
MAX_STRING = 64 * 1024  # any msgpack str in a frame
MAX_HEADERS = 256
#: All names and values of one req's or res's headers together, in UTF-8 bytes: with the path
#: and query (64 KiB each) they stay well inside the 1 MiB a frame has besides its body.
MAX_HEADER_BYTES = 256 * 1024
MAX_REASON = 1024
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1
MAX_HOPS = 255
DEFAULT_HOPS = 16
NONCE_LENGTH = 32
ROLES = ("initiator", "responder")
MAX_CAPS = 16  # capabilities announced in a hello
MAX_CAP = 32  # characters of one capability name
MAX_SUMMARY_ENTRIES = 1024  # (origin, seq) pairs in one summary frame, origins in one want
SMALL_FRAME = 64 * 1024  # frames up to this are decoded directly
MAX_LARGE_FRAME_OBJECTS = 4 * MAX_HEADERS + 64  # a req with 256 headers holds ~800

_REQUIRED = object()
_is_node_id = NODE_ID_PATTERN.fullmatch
_is_app_name = APP_NAME.fullmatch
#: A raw path: "/"-separated, every other byte unreserved, a sub-delim, ":" or "@" (RFC 3986
#: pchar), or a %XX escape. It is carried as the client sent it and decoded once, at the app.
_RAW_PATH = re.compile(r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*)?")
_is_raw_path = _RAW_PATH.fullmatch


def _utf8_size(text: str) -> int:
    # isascii() is O(1) in CPython: the common case costs no encoding.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


# -- field checks: raise LocalProtocolError; decode turns it into RemoteProtocolError ----------


def _fail(owner: str, field: str, why: str) -> LocalProtocolError:
    return LocalProtocolError(f"{owner}.{field} {why}")


def _check_uint(owner: str, field: str, value: Any, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise _fail(owner, field, f"must be an int in 0..{maximum}, got {value!r:.40}")


def _check_str(owner: str, field: str, value: Any, maximum: int, minimum: int = 0) -> None:
    if not isinstance(value, str) or not minimum <= len(value) <= maximum:
        raise _fail(owner, field, f"must be a str of {minimum}..{maximum} chars")
    if maximum == MAX_STRING and _utf8_size(value) > MAX_STRING:  # the decoder counts bytes
        raise _fail(owner, field, f"must be at most {MAX_STRING} bytes in UTF-8")


def _check_bytes(owner: str, field: str, value: Any, length: int | None = None) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _fail(owner, field, f"must be bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise _fail(owner, field, f"must be exactly {length} bytes, got {len(value)}")


def _check_node_id(owner: str, field: str, value: Any) -> None:
    if not is_node_id(value):
        raise _fail(owner, field, f"must be a node id (32 chars a-z2-7), got {value!r:.40}")


def _check_headers(owner: str, value: Any) -> tuple[tuple[str, str], ...]:
    # The same rules bind a frame built here and one decoded from a peer: at most MAX_HEADERS
    # pairs of str, each str at most MAX_STRING bytes (the decoder's msgpack limit), all of
    # them together at most MAX_HEADER_BYTES.
    pairs = None
    if type(value) is list and len(value) <= MAX_HEADERS:
        # Decoded frames: every pair is a 2-list of str; the tuple() copy makes it immutable.
        try:
            pairs = tuple([(name, text) for name, text in value])
        except (TypeError, ValueError):
            pairs = None
        if pairs is not None and not all(type(n) is str and type(t) is str for n, t in pairs):
            pairs = None
    if pairs is None:
        if not isinstance(value, (list, tuple)) or len(value) > MAX_HEADERS:
            raise _fail(owner, "headers", f"must be an array of at most {MAX_HEADERS} pairs")
        for pair in value:
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not isinstance(pair[1], str)
            ):
                raise _fail(owner, "headers", "must hold [name, value] pairs of str")
        if type(value) is tuple and all(type(pair) is tuple for pair in value):
            pairs = value
        else:
            pairs = tuple((name, text) for name, text in value)
    total = 0
    for name, text in pairs:  # inlined ASCII case: this runs for every req and res
        size = len(text) if text.isascii() else _utf8_size(text)
        if size > MAX_STRING:
            raise _fail(owner, "headers", f"value of {name[:64]!r} is over {MAX_STRING} bytes")
        total += (len(name) if name.isascii() else _utf8_size(name)) + size
    if total > MAX_HEADER_BYTES:
        raise _fail(owner, "headers", f"hold {total} bytes, over {MAX_HEADER_BYTES}")
    return pairs


# -- message types ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """Open a link: say who this side is and bring a fresh nonce."""

    TYPE: ClassVar[str] = "hello"
    WIRE: ClassVar[tuple] = (
        ("version", "v", _REQUIRED),
        ("node_id", "id", _REQUIRED),
        ("public_key", "key", _REQUIRED),
        ("nonce", "nonce", _REQUIRED),
        ("name", "name", _REQUIRED),
        ("role", "role", _REQUIRED),
        ("expect", "expect", None),
        ("caps", "caps", None),
        ("timeout_ms", "timeout", None),
    )
    version: int
    node_id: str
    public_key: bytes
    nonce: bytes
    name: str
    role: str
    expect: str | None = None
    #: Optional features the sender speaks ("summary": the summary-first initial exchange).
    caps: tuple[str, ...] | None = None
    #: The sender's link timeout: the peer must send something more often than this.
    timeout_ms: int | None = None

    def __post_init__(self) -> None:
        _check_uint("hello", "version", self.version, MAX_UINT32)
        _check_node_id("hello", "node_id", self.node_id)
        _check_bytes("hello", "public_key", self.public_key, PUBLIC_KEY_LENGTH)
        _check_bytes("hello", "nonce", self.nonce, NONCE_LENGTH)
        _check_str("hello", "name", self.name, MAX_NAME)
        if self.role not in ROLES:
            raise _fail("hello", "role", f"must be one of {ROLES}")
        if self.expect is not None:
            _check_node_id("hello", "expect", self.expect)
        if self.caps is not None:
            caps = self.caps
            if not isinstance(caps, (list, tuple)) or len(caps) > MAX_CAPS:
                raise _fail("hello", "caps", f"must be an array of at most {MAX_CAPS} str")
            for cap in caps:
                _check_str("hello", "caps", cap, MAX_CAP, 1)
            object.__setattr__(self, "caps", tuple(caps))
        if self.timeout_ms is not None:
            _check_uint("hello", "timeout_ms", self.timeout_ms, MAX_UINT32)
            if self.timeout_ms == 0:
                raise _fail("hello", "timeout_ms", "must be at least 1")


@dataclass(frozen=True, slots=True)
class Auth:
    """Prove the key: a signature over the handshake transcript."""

    TYPE: ClassVar[str] = "auth"
    WIRE: ClassVar[tuple] = (("signature", "sig", _REQUIRED),)
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("auth", "signature", self.signature, SIGNATURE_LENGTH)


@dataclass(frozen=True, slots=True)
class RecordFrame:
    """Carry one signed routing record: its exact body bytes and their signature."""

    TYPE: ClassVar[str] = "record"
    WIRE: ClassVar[tuple] = (("body", "b", _REQUIRED), ("signature", "s", _REQUIRED))
    body: bytes
    signature: bytes

    def __post_init__(self) -> None:
        # The body's size and content are judged by records.parse_record, which counts them.
        _check_bytes("record", "body", self.body)
        _check_bytes("record", "signature", self.signature, SIGNATURE_LENGTH)


@dataclass(frozen=True, slots=True)
class RequestFrame:
    """Carry one request one hop closer to node ``dst``."""

    TYPE: ClassVar[str] = "req"
    WIRE: ClassVar[tuple] = (
        ("request_id", "id", _REQUIRED),
        ("dst", "dst", _REQUIRED),
        ("app", "app", _REQUIRED),
        ("method", "method", _REQUIRED),
        ("path", "path", _REQUIRED),
        ("query", "query", ""),
        ("headers", "headers", ()),
        ("body", "body", b""),
        ("hops", "hops", _REQUIRED),
        ("ttl_ms", "ttl", _REQUIRED),
    )
    request_id: int
    dst: str
    app: str
    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    hops: int = DEFAULT_HOPS
    ttl_ms: int = 30_000

    def __post_init__(self) -> None:
        # Hot path: one cheap test of the common exact types, the detailed checks only when it
        # fails (to accept int/str/bytes subclasses built locally or to name the bad field).
        path = self.path
        if not (
            type(self.request_id) is int
            and 0 <= self.request_id <= MAX_UINT32
            and type(self.dst) is str
            and _is_node_id(self.dst)
            and type(self.app) is str
            and _is_app_name(self.app)
            and type(self.method) is str
            and 0 < len(self.method) <= MAX_NAME
            and type(path) is str
            and len(path) <= MAX_STRING
            and _is_raw_path(path)
            and type(self.query) is str
            and len(self.query) <= MAX_STRING
            and self.query.isascii()
            and type(self.body) is bytes
            and len(self.body) <= MAX_BODY
            and type(self.hops) is int
            and 0 <= self.hops <= MAX_HOPS
            and type(self.ttl_ms) is int
            and 0 <= self.ttl_ms <= MAX_UINT32
        ):
            self._check_slowly()
        object.__setattr__(self, "headers", _check_headers("req", self.headers))

    def _check_slowly(self) -> None:
        _check_uint("req", "request_id", self.request_id, MAX_UINT32)
        _check_node_id("req", "dst", self.dst)
        if type(self.app) is not str or not _is_app_name(self.app):
            raise _fail("req", "app", f"must be an app name ({APP_NAME_RULE})")
        _check_str("req", "method", self.method, MAX_NAME, 1)
        _check_str("req", "path", self.path, MAX_STRING)
        if self.path and self.path[0] != "/":
            raise _fail("req", "path", "must be empty or start with '/'")
        if not _is_raw_path(self.path):
            raise _fail("req", "path", "must be a raw path: pchars, '/' and %XX escapes only")
        _check_str("req", "query", self.query, MAX_STRING)
        _check_bytes("req", "body", self.body)
        if len(self.body) > MAX_BODY:
            raise _fail("req", "body", f"is larger than {MAX_BODY} bytes")
        _check_uint("req", "hops", self.hops, MAX_HOPS)
        _check_uint("req", "ttl_ms", self.ttl_ms, MAX_UINT32)


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """Answer the request ``request_id`` that the receiver of this frame sent."""

    TYPE: ClassVar[str] = "res"
    WIRE: ClassVar[tuple] = (
        ("request_id", "id", _REQUIRED),
        ("status", "status", _REQUIRED),
        ("headers", "headers", ()),
        ("body", "body", b""),
    )
    request_id: int
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        _check_uint("res", "request_id", self.request_id, MAX_UINT32)
        if not isinstance(self.status, int) or not 100 <= self.status <= 999:
            raise _fail("res", "status", "must be an int in 100..999")
        object.__setattr__(self, "headers", _check_headers("res", self.headers))
        _check_bytes("res", "body", self.body)
        if len(self.body) > MAX_BODY:
            raise _fail("res", "body", f"is larger than {MAX_BODY} bytes")


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw the request ``request_id``: its sender no longer wants the answer."""

    TYPE: ClassVar[str] = "cancel"
    WIRE: ClassVar[tuple] = (("request_id", "id", _REQUIRED),)
    request_id: int

    def __post_init__(self) -> None:
        _check_uint("cancel", "request_id", self.request_id, MAX_UINT32)


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a ``pong`` echoing ``n`` (keepalive, round-trip time)."""

    TYPE: ClassVar[str] = "ping"
    WIRE: ClassVar[tuple] = (("n", "n", _REQUIRED),)
    n: int

    def __post_init__(self) -> None:
        _check_uint("ping", "n", self.n, MAX_UINT64)


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer a ``ping`` with its ``n``."""

    TYPE: ClassVar[str] = "pong"
    WIRE: ClassVar[tuple] = (("n", "n", _REQUIRED),)
    n: int

    def __post_init__(self) -> None:
        _check_uint("pong", "n", self.n, MAX_UINT64)


@dataclass(frozen=True, slots=True)
class Bye:
    """Say why this side is about to close the link."""

    TYPE: ClassVar[str] = "bye"
    WIRE: ClassVar[tuple] = (("reason", "reason", _REQUIRED),)
    reason: str

    def __post_init__(self) -> None:
        _check_str("bye", "reason", self.reason, MAX_REASON)


@dataclass(frozen=True, slots=True)
class Summary:
    """Describe part of the sender's record store: ``(origin, seq)`` of records it holds."""

    TYPE: ClassVar[str] = "summary"
    WIRE: ClassVar[tuple] = (("entries", "e", _REQUIRED),)
    entries: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        entries = self.entries
        if not isinstance(entries, (list, tuple)) or len(entries) > MAX_SUMMARY_ENTRIES:
            raise _fail("summary", "entries", f"must hold at most {MAX_SUMMARY_ENTRIES} pairs")
        pairs = []
        for pair in entries:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise _fail("summary", "entries", "must hold [origin, seq] pairs")
            _check_node_id("summary", "entries", pair[0])
            _check_uint("summary", "entries", pair[1], MAX_UINT64)
            pairs.append((pair[0], pair[1]))
        object.__setattr__(self, "entries", tuple(pairs))


@dataclass(frozen=True, slots=True)
class Want:
    """Ask for the records of these origins (an answer to the peer's ``summary``)."""

    TYPE: ClassVar[str] = "want"
    WIRE: ClassVar[tuple] = (("origins", "ids", _REQUIRED),)
    origins: tuple[str, ...]

    def __post_init__(self) -> None:
        origins = self.origins
        if not isinstance(origins, (list, tuple)) or len(origins) > MAX_SUMMARY_ENTRIES:
            raise _fail("want", "origins", f"must hold at most {MAX_SUMMARY_ENTRIES} node ids")
        for origin in origins:
            _check_node_id("want", "origins", origin)
        object.__setattr__(self, "origins", tuple(origins))


Message = (
    Hello | Auth | RecordFrame | RequestFrame | ResponseFrame | Cancel | Ping | Pong | Bye
    | Summary | Want
)  # fmt: skip

_ALL_TYPES = (
    Hello, Auth, RecordFrame, RequestFrame, ResponseFrame, Cancel, Ping, Pong, Bye, Summary, Want,
)  # fmt: skip
_TYPES: dict[str, type] = {cls.TYPE: cls for cls in _ALL_TYPES}

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
    "req": MAX_FRAME,
    "res": MAX_FRAME,
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
    try:
        return cls(*values)
    except LocalProtocolError as exc:
        raise RemoteProtocolError("bad_field", str(exc)) from None
