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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.identity import NODE_ID_PATTERN, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, is_node_id

__all__ = [
    "DECODE_REASONS",
    "DEFAULT_HOPS",
    "MAX_BODY",
    "MAX_FRAME",
    "MAX_HANDSHAKE_FRAME",
    "MAX_HEADERS",
    "MAX_STRING",
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
    "decode",
    "encode",
]

PROTOCOL_VERSION = 1
MAX_BODY = 16 * 1024 * 1024  # request / response body
MAX_FRAME = MAX_BODY + 1024 * 1024  # body plus headroom for the envelope
MAX_HANDSHAKE_FRAME = 4096  # what a link accepts before it is established
MAX_STRING = 64 * 1024  # any msgpack str in a frame
MAX_HEADERS = 256
MAX_NAME = 255  # node names, app names, methods
MAX_REASON = 1024
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1
MAX_HOPS = 255
DEFAULT_HOPS = 16
NONCE_LENGTH = 32
ROLES = ("initiator", "responder")

DECODE_REASONS = (
    "frame_too_large",
    "malformed_msgpack",
    "not_a_map",
    "unknown_type",
    "missing_field",
    "bad_field",
)

_REQUIRED = object()
_is_node_id = NODE_ID_PATTERN.fullmatch


# -- field checks: raise LocalProtocolError; decode turns it into RemoteProtocolError ----------


def _fail(owner: str, field: str, why: str) -> LocalProtocolError:
    return LocalProtocolError(f"{owner}.{field} {why}")


def _check_uint(owner: str, field: str, value: Any, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise _fail(owner, field, f"must be an int in 0..{maximum}, got {value!r:.40}")


def _check_str(owner: str, field: str, value: Any, maximum: int, minimum: int = 0) -> None:
    if not isinstance(value, str) or not minimum <= len(value) <= maximum:
        raise _fail(owner, field, f"must be a str of {minimum}..{maximum} chars")


def _check_bytes(owner: str, field: str, value: Any, length: int | None = None) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _fail(owner, field, f"must be bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise _fail(owner, field, f"must be exactly {length} bytes, got {len(value)}")


def _check_node_id(owner: str, field: str, value: Any) -> None:
    if not is_node_id(value):
        raise _fail(owner, field, f"must be a node id (32 chars a-z2-7), got {value!r:.40}")


def _check_headers(owner: str, value: Any) -> tuple[tuple[str, str], ...]:
    if type(value) is list and len(value) <= MAX_HEADERS:
        # Decoded frames: every pair is a 2-list of str; the tuple() copy makes it immutable.
        try:
            pairs = tuple([(name, text) for name, text in value])
        except (TypeError, ValueError):
            pairs = None
        if pairs is not None and all(type(n) is str and type(t) is str for n, t in pairs):
            return pairs
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
        return value
    return tuple((name, text) for name, text in value)


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
    )
    version: int
    node_id: str
    public_key: bytes
    nonce: bytes
    name: str
    role: str
    expect: str | None = None

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
            and 0 < len(self.app) <= MAX_NAME
            and type(self.method) is str
            and 0 < len(self.method) <= MAX_NAME
            and type(path) is str
            and len(path) <= MAX_STRING
            and (not path or path[0] == "/")
            and type(self.query) is str
            and len(self.query) <= MAX_STRING
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
        _check_str("req", "app", self.app, MAX_NAME, 1)
        _check_str("req", "method", self.method, MAX_NAME, 1)
        _check_str("req", "path", self.path, MAX_STRING)
        if self.path and self.path[0] != "/":
            raise _fail("req", "path", "must be empty or start with '/'")
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


Message = Hello | Auth | RecordFrame | RequestFrame | ResponseFrame | Cancel | Ping | Pong | Bye

_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Hello, Auth, RecordFrame, RequestFrame, ResponseFrame, Cancel, Ping, Pong, Bye)
}

_unpackb = msgpack.unpackb
_packb = msgpack.packb


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
    return _packb(frame, use_bin_type=True)


def decode(data: bytes, max_size: int = MAX_FRAME) -> Message:
    """Parse one frame, raising ``RemoteProtocolError`` for anything a peer got wrong.

    ``max_size`` lets a link accept only small frames before its handshake is done.
    """
    if len(data) > max_size:
        raise RemoteProtocolError("frame_too_large", f"{len(data)} bytes > {max_size}")
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
    get = frame.get
    values = [get(key, default) for _, key, default in cls.WIRE]
    if _REQUIRED in values:
        missing = cls.WIRE[values.index(_REQUIRED)][1]
        raise RemoteProtocolError("missing_field", f"{kind} frame has no {missing!r}")
    try:
        return cls(*values)
    except LocalProtocolError as exc:
        raise RemoteProtocolError("bad_field", str(exc)) from None
