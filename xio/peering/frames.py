"""The message types of a link, as frozen, slotted dataclasses that check their fields.

Theory of operation
-------------------
Each type validates itself when built, so a message built here and one decoded from a peer
(``xio.peering.codec``) pass through the same checks; a bad one raises ``LocalProtocolError``
naming the field, which the decoder turns into ``RemoteProtocolError("bad_field")``.

A type's wire table (``WIRE``: attribute, msgpack key, default) is derived from its dataclass
fields by ``_on_wire``, so the class and the wire cannot disagree: a field with a default is
optional on the wire with that default, a field without one is required (``missing_field``
when absent). Keys differ from attribute names only where ``_on_wire`` renames them. In a
``req``, ``hops`` and ``ttl`` are required on the wire (docs/PROTOCOL.md, section 4), so they
have no default in the class either: they come last and are given by keyword, after the
optional ``query``, ``headers`` and ``body``. The end-to-end fields of docs/PROTOCOL.md 11.1
(``src``, ``n``, ``mac`` of a ``req``; ``mac`` of a ``res``) are optional here, all or none in a
``req``: a frame is built without them and sealed by the ingress (``xio.peering.integrity``),
and the destination, not the frame, refuses a request that lacks them.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from xio.constants import MAX_BODY
from xio.errors import LocalProtocolError
from xio.peering.identity import NODE_ID_PATTERN, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, is_node_id
from xio.peering.names import APP_NAME, APP_NAME_RULE, MAX_NAME

__all__ = [
    "ALL_TYPES",
    "DEFAULT_HOPS",
    "EPHEMERAL_LENGTH",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_PIECE",
    "MAX_STRING",
    "MAX_SUMMARY_ENTRIES",
    "NONCE_LENGTH",
    "PROTOCOL_VERSION",
    "REQUIRED",
    "ROLES",
    "TYPES",
    "MAX_CERT",
    "MAX_REVOCATION",
    "Revoke",
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
    "Summary",
    "Want",
]

PROTOCOL_VERSION = 2  # version 2: links are encrypted (docs/PROTOCOL.md 6.1)
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
EPHEMERAL_LENGTH = 32  # an X25519 public key
ROLES = ("initiator", "responder")
MAX_CAPS = 16  # capabilities announced in a hello
MAX_CAP = 32  # characters of one capability name
MAX_SUMMARY_ENTRIES = 1024  # (origin, seq) pairs in one summary frame, origins in one want
MAX_CERT = 2200  # a packed certificate: membership.MAX_CERT_BODY + signature + headers
MAX_REVOCATION = 400  # a packed revocation: membership.MAX_REVOCATION_BODY + signature + headers
E2E_NONCE_LENGTH = 16  # a req's "n" (docs/PROTOCOL.md 11.1; xio.peering.e2e.NONCE_LENGTH)
E2E_MAC_LENGTH = 16  # a req's or res's "mac" (xio.peering.e2e.MAC_LENGTH)
#: The most body bytes one ``data`` frame carries (a streamed answer, docs/PROTOCOL.md 4.1).
MAX_PIECE = 1024 * 1024

#: The default of a field that must be on the wire.
REQUIRED = object()
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


def _check_e2e(owner: str, src: Any, nonce: Any, mac: Any) -> None:
    # All or none: a req with a MAC but no nonce (or the reverse) is no request any node made.
    if src is None and nonce is None and mac is None:
        return
    if owner == "req" and (src is None or nonce is None or mac is None):
        raise _fail(owner, "src", "and n and mac go together: all three or none")
    if src is not None:
        _check_node_id(owner, "src", src)
    if nonce is not None:
        _check_bytes(owner, "n", nonce, E2E_NONCE_LENGTH)
    _check_bytes(owner, "mac", mac, E2E_MAC_LENGTH)


def _check_flag(frame: str, name: str, value: object) -> None:
    if type(value) is not bool:
        raise _fail(frame, name, f"must be a bool, got {value!r:.40}")


def _on_wire(**keys: str):
    """Derive a message type's ``WIRE`` table from its fields; ``keys`` renames attributes."""

    def derive(cls):
        table = []
        for item in fields(cls):
            default = REQUIRED if item.default is MISSING else item.default
            table.append((item.name, keys.get(item.name, item.name), default))
        cls.WIRE = tuple(table)
        cls.WIRE_KEYWORDS = tuple(item.name for item in fields(cls) if item.kw_only)
        return cls

    return derive


# -- message types ---------------------------------------------------------------------------


@_on_wire(version="v", node_id="id", public_key="key", timeout_ms="timeout")
@dataclass(frozen=True, slots=True)
class Hello:
    """Open a link: say who this side is and bring a fresh nonce."""

    TYPE: ClassVar[str] = "hello"
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
    #: The sender's X25519 public key for this link. Optional on the wire so that a version 1
    #: hello still decodes and is refused as ``bad_version``; a version 2 handshake needs it.
    eph: bytes | None = None
    #: The sender's packed membership certificate (a closed mesh, PROTOCOL.md 8.6).
    cert: bytes | None = None

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
        if self.eph is not None:
            _check_bytes("hello", "eph", self.eph, EPHEMERAL_LENGTH)
        if self.cert is not None:
            _check_bytes("hello", "cert", self.cert)
            if len(self.cert) > MAX_CERT:
                raise _fail("hello", "cert", f"must be at most {MAX_CERT} bytes")


@_on_wire(signature="sig")
@dataclass(frozen=True, slots=True)
class Auth:
    """Prove the key: a signature over the handshake transcript."""

    TYPE: ClassVar[str] = "auth"
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("auth", "signature", self.signature, SIGNATURE_LENGTH)


@_on_wire(body="b", signature="s")
@dataclass(frozen=True, slots=True)
class RecordFrame:
    """Carry one signed routing record: its exact body bytes and their signature."""

    TYPE: ClassVar[str] = "record"
    body: bytes
    signature: bytes

    def __post_init__(self) -> None:
        # The body's size and content are judged by records.parse_record, which counts them.
        _check_bytes("record", "body", self.body)
        _check_bytes("record", "signature", self.signature, SIGNATURE_LENGTH)


@_on_wire(request_id="id", ttl_ms="ttl", nonce="n")
@dataclass(frozen=True, slots=True)
class RequestFrame:
    """Carry one request one hop closer to node ``dst``."""

    TYPE: ClassVar[str] = "req"
    request_id: int
    dst: str
    app: str
    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: Required on the wire, so required here too: given by keyword after the optional fields.
    hops: int = field(kw_only=True)
    ttl_ms: int = field(kw_only=True)
    #: End-to-end (docs/PROTOCOL.md 11.1): the ingress's id, its nonce, the request MAC.
    src: str | None = field(default=None, kw_only=True)
    nonce: bytes | None = field(default=None, kw_only=True)
    mac: bytes | None = field(default=None, kw_only=True)
    #: The ingress asks every node on the way to time it (xio.peering.trace); not end to end.
    trace: bool | None = field(default=None, kw_only=True)
    #: The sender takes a streamed answer (docs/PROTOCOL.md 4.1), ``win`` bytes of it at first.
    win: int | None = field(default=None, kw_only=True)
    #: True: the body is streamed (docs/PROTOCOL.md 4.2): it follows in ``data`` frames with
    #: ``up``, within the credit the answerer grants, and an ``end``; this frame has none.
    more: bool | None = field(default=None, kw_only=True)

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
        if not (
            type(self.src) is str
            and _is_node_id(self.src)
            and type(self.nonce) is bytes
            and len(self.nonce) == E2E_NONCE_LENGTH
            and type(self.mac) is bytes
            and len(self.mac) == E2E_MAC_LENGTH
        ):
            _check_e2e("req", self.src, self.nonce, self.mac)
        if self.trace is not None and type(self.trace) is not bool:
            raise _fail("req", "trace", f"must be a bool, got {self.trace!r:.40}")
        if self.win is not None:
            _check_uint("req", "win", self.win, MAX_UINT32)
            if self.win == 0:
                raise _fail("req", "win", "must be at least 1")
        if self.more is not None:
            _check_flag("req", "more", self.more)
            if self.more and self.body:
                raise _fail("req", "body", "must be empty when the body is streamed")

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


@_on_wire(request_id="id")
@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """Answer the request ``request_id`` that the receiver of this frame sent."""

    TYPE: ClassVar[str] = "res"
    request_id: int
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: The destination's response MAC (docs/PROTOCOL.md 11.1); None on a relay's own errors.
    mac: bytes | None = None
    #: The nodes' times of a traced request, as decoded: not checked here but by its reader
    #: (``xio.peering.trace.read_trace``), which drops a bad one: it must not cost the answer.
    trace: Any = None
    #: True: this is the head of a streamed answer, its body follows in ``data`` frames and an
    #: ``end`` (docs/PROTOCOL.md 4.1); the head itself has no body.
    more: bool | None = None

    def __post_init__(self) -> None:
        _check_uint("res", "request_id", self.request_id, MAX_UINT32)
        if not isinstance(self.status, int) or not 100 <= self.status <= 999:
            raise _fail("res", "status", "must be an int in 100..999")
        object.__setattr__(self, "headers", _check_headers("res", self.headers))
        _check_bytes("res", "body", self.body)
        if len(self.body) > MAX_BODY:
            raise _fail("res", "body", f"is larger than {MAX_BODY} bytes")
        if self.mac is not None:
            _check_e2e("res", None, None, self.mac)
        if self.more is not None:
            _check_flag("res", "more", self.more)
            if self.more and self.body:
                raise _fail("res", "body", "must be empty in the head of a streamed answer")

    def signed(self, request_id: int, mac: bytes) -> ResponseFrame:
        """Return this answer under ``request_id`` with ``mac``, checking only those two.

        The destination signs every answer it made (and checked) a moment ago: its headers,
        the costly check, are not checked a second time.
        """
        _check_uint("res", "request_id", request_id, MAX_UINT32)
        _check_e2e("res", None, None, mac)
        copy = object.__new__(ResponseFrame)
        for name, value in (("request_id", request_id), ("status", self.status),
                            ("headers", self.headers), ("body", self.body), ("mac", mac),
                            ("trace", self.trace), ("more", self.more)):  # fmt: skip
            object.__setattr__(copy, name, value)
        return copy

    def with_trace(self, trace) -> ResponseFrame:
        """Return this answer with ``trace`` (entries of ``xio.peering.trace``), unchecked again.

        The trace is outside the end-to-end MAC: every other field stays as it is.
        """
        copy = object.__new__(ResponseFrame)
        for name in ("request_id", "status", "headers", "body", "mac", "more"):
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "trace", trace)
        return copy

    def under(self, request_id: int) -> ResponseFrame:
        """Return this answer under another ``request_id`` (a relay's), without its trace (a
        relay passes one on only for a traced request), the rest unchecked again."""
        _check_uint("res", "request_id", request_id, MAX_UINT32)
        copy = object.__new__(ResponseFrame)
        for name in ("status", "headers", "body", "mac", "more"):
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "request_id", request_id)
        object.__setattr__(copy, "trace", None)
        return copy


@_on_wire(request_id="id")
@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw the request ``request_id``: its sender no longer wants the answer."""

    TYPE: ClassVar[str] = "cancel"
    request_id: int

    def __post_init__(self) -> None:
        _check_uint("cancel", "request_id", self.request_id, MAX_UINT32)


@_on_wire(request_id="id", body="b")
@dataclass(frozen=True, slots=True)
class DataFrame:
    """Carry the next piece of the streamed answer to the request ``request_id`` or, with
    ``up``, of that request's streamed body (from the asker to the answerer)."""

    TYPE: ClassVar[str] = "data"
    request_id: int
    body: bytes
    up: bool | None = None

    def __post_init__(self) -> None:
        if not (
            type(self.request_id) is int
            and 0 <= self.request_id <= MAX_UINT32
            and type(self.body) is bytes
            and 0 < len(self.body) <= MAX_PIECE
        ):
            _check_uint("data", "request_id", self.request_id, MAX_UINT32)
            _check_bytes("data", "body", self.body)
            if not 0 < len(self.body) <= MAX_PIECE:
                raise _fail("data", "body", f"must hold 1..{MAX_PIECE} bytes")
        if self.up is not None:
            _check_flag("data", "up", self.up)


@_on_wire(request_id="id")
@dataclass(frozen=True, slots=True)
class CreditFrame:
    """Let the answerer of ``request_id`` send ``n`` more bytes of its streamed answer or,
    with ``up``, let the asker send ``n`` more bytes of the request's streamed body."""

    TYPE: ClassVar[str] = "credit"
    request_id: int
    n: int
    up: bool | None = None

    def __post_init__(self) -> None:
        _check_uint("credit", "request_id", self.request_id, MAX_UINT32)
        _check_uint("credit", "n", self.n, MAX_UINT32)
        if self.n == 0:
            raise _fail("credit", "n", "must be at least 1")
        if self.up is not None:
            _check_flag("credit", "up", self.up)


@_on_wire(request_id="id", error="err")
@dataclass(frozen=True, slots=True)
class EndFrame:
    """End the streamed answer to ``request_id`` (or with ``up``, its streamed body): whole
    (with its MAC), or broken (``error``)."""

    TYPE: ClassVar[str] = "end"
    request_id: int
    #: The destination's MAC over the whole streamed body (docs/PROTOCOL.md 11.1).
    mac: bytes | None = None
    #: Why the body is incomplete; absent when it is whole.
    error: str | None = None
    #: True: this ends the request's streamed body (its MAC is the ingress's), not the answer.
    up: bool | None = None

    def __post_init__(self) -> None:
        _check_uint("end", "request_id", self.request_id, MAX_UINT32)
        if self.mac is not None:
            _check_bytes("end", "mac", self.mac, E2E_MAC_LENGTH)
        if self.error is not None:
            _check_str("end", "error", self.error, MAX_REASON)
        if self.up is not None:
            _check_flag("end", "up", self.up)


@_on_wire()
@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a ``pong`` echoing ``n`` (keepalive, round-trip time)."""

    TYPE: ClassVar[str] = "ping"
    n: int

    def __post_init__(self) -> None:
        _check_uint("ping", "n", self.n, MAX_UINT64)


@_on_wire()
@dataclass(frozen=True, slots=True)
class Pong:
    """Answer a ``ping`` with its ``n``."""

    TYPE: ClassVar[str] = "pong"
    n: int

    def __post_init__(self) -> None:
        _check_uint("pong", "n", self.n, MAX_UINT64)


@_on_wire()
@dataclass(frozen=True, slots=True)
class Bye:
    """Say why this side is about to close the link."""

    TYPE: ClassVar[str] = "bye"
    reason: str

    def __post_init__(self) -> None:
        _check_str("bye", "reason", self.reason, MAX_REASON)


@_on_wire(entries="e")
@dataclass(frozen=True, slots=True)
class Summary:
    """Describe part of the sender's record store: ``(origin, seq)`` of records it holds."""

    TYPE: ClassVar[str] = "summary"
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


@_on_wire(origins="ids")
@dataclass(frozen=True, slots=True)
class Want:
    """Ask for the records of these origins (an answer to the peer's ``summary``)."""

    TYPE: ClassVar[str] = "want"
    origins: tuple[str, ...]

    def __post_init__(self) -> None:
        origins = self.origins
        if not isinstance(origins, (list, tuple)) or len(origins) > MAX_SUMMARY_ENTRIES:
            raise _fail("want", "origins", f"must hold at most {MAX_SUMMARY_ENTRIES} node ids")
        for origin in origins:
            _check_node_id("want", "origins", origin)
        object.__setattr__(self, "origins", tuple(origins))


@_on_wire(revocation="r")
@dataclass(frozen=True, slots=True)
class Revoke:
    """Carry one packed revocation of a closed mesh (sent to peers with the "revoke" cap)."""

    TYPE: ClassVar[str] = "revoke"
    revocation: bytes

    def __post_init__(self) -> None:
        # Its content is judged by membership.judge_revocation, which counts it.
        _check_bytes("revoke", "revocation", self.revocation)
        if len(self.revocation) > MAX_REVOCATION:
            raise _fail("revoke", "revocation", f"must be at most {MAX_REVOCATION} bytes")


Message = (
    Hello | Auth | RecordFrame | RequestFrame | ResponseFrame | Cancel | Ping | Pong | Bye
    | Summary | Want | Revoke | DataFrame | CreditFrame | EndFrame
)  # fmt: skip

ALL_TYPES = (
    Hello, Auth, RecordFrame, RequestFrame, ResponseFrame, Cancel, Ping, Pong, Bye, Summary, Want,
    Revoke, DataFrame, CreditFrame, EndFrame,
)  # fmt: skip
TYPES: dict[str, type] = {cls.TYPE: cls for cls in ALL_TYPES}
