"""HTTP/1.1 message rules, pure: the request head a server accepts, the response
fields it writes, and the limits that bound both.

Theory of operation. A request head is read line by line through a ``readline(limit)``
callable, so the reader never holds more than the limits allow: the request line is at
most ``MAX_REQUEST_LINE`` bytes (414 past it), the header section at most
``HTTPLimits.max_header_bytes`` bytes in ``max_header_count`` fields (431 past either).
Each field line must be ``token ":" OWS value OWS`` with no control character but HTAB
in the value; a line starting with a space or tab (obs-fold) is refused, as RFC 9112
section 5.2 allows, since a folded ``Transfer-Encoding`` is how requests get smuggled.

The body's framing follows RFC 9112 section 6 with no leniency, because two parsers
that disagree on where a body ends see two different request streams:
``Content-Length`` must be exactly one field of digits; ``Transfer-Encoding`` must be
exactly ``chunked`` (case-insensitive, OWS trimmed) or the answer is 501; the two
together are 400. Every refusal is an ``HTTPError`` whose status the server answers
with, closing the connection: after a framing error nothing read later can be trusted.

Responses: the server writing HTTP owns the framing. ``response_fields`` drops what a
handler or a peer may not decide (``Content-Length``, ``Transfer-Encoding``,
``Connection`` and the other hop-by-hop fields, and any field ``Connection`` names),
keeps repeated fields repeated, and refuses a name that is not a token or a value with
a control character (a 502 naming the field) rather than let it split the response.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import BadGateway, BadRequest, ConfigError, HTTPError

__all__ = [
    "MAX_REQUEST_LINE",
    "HOP_BY_HOP",
    "Framing",
    "HTTPLimits",
    "parse_request_line",
    "read_fields",
    "request_framing",
    "response_fields",
    "without_connection_fields",
]

#: Longest request line accepted, CRLF included (pywsgi's figure; 414 past it).
MAX_REQUEST_LINE = 8192

#: Fields that describe one connection, never a message: a server drops them from
#: whatever it relays and writes its own (RFC 9110 section 7.6.1, plus the framing).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """What one HTTP server lets a client hold: time, connections, header bytes.

    Times are in seconds. ``header_timeout`` bounds the request line and header section
    (a new connection's first request counts from the accept); ``body_timeout`` the
    whole body; ``idle_timeout`` the wait for the next request on a keep-alive
    connection. ``max_connections`` (total) and ``max_connections_per_client`` (per
    peer address) are open connections, WebSockets included; the total is also kept
    below the process's file-descriptor limit.
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_connections: int = 1000
    max_connections_per_client: int = 256
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"HTTP limit {name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class Framing:
    """How a request's body is delimited: a length, chunked, or no body at all."""

    content_length: int | None
    chunked: bool


class HeaderFieldsTooLarge(HTTPError):
    """The header section is over its size or count limit (431)."""

    status = 431

    def __init__(self, description: str) -> None:
        super().__init__(431, description)


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/(\d)\.(\d)\r?\n")
# A field line: token, colon, a value of visible characters, spaces, tabs and obs-text (no
# CR, LF, NUL or other control), line end (a bare LF is tolerated). Linear: the value's
# characters and the line end cannot overlap, so the pattern never backtracks.
_FIELD = re.compile(rb"(" + _TOKEN + rb"):([\t\x20-\x7e\x80-\xff]*)\r?\n")
_LOOSE_FIELD = re.compile(rb"(" + _TOKEN + rb"):[^\r\n]*\r?\n")
_DIGITS = re.compile(r"[0-9]{1,18}")  # 18 digits: any length a body could have, no overflow
_TOKEN_STR = re.compile(_TOKEN.decode())
_VALUE_STR = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    """Return ``(method, target, version)`` from a request line; raise a 4xx/505."""
    if len(line) > MAX_REQUEST_LINE or not line.endswith(b"\n"):
        raise HTTPError(414, f"request line over {MAX_REQUEST_LINE} bytes")
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise BadRequest(f"malformed request line {line[:80]!r}")
    method, target, major, minor = match.groups()
    if major != b"1":
        raise HTTPError(505, f"HTTP/{major.decode()}.{minor.decode()} is not served here")
    version = "HTTP/1.0" if minor == b"0" else "HTTP/1.1"
    return method.decode("ascii"), target.decode("latin-1"), version


def read_fields(readline: Callable[[int], bytes], limits: HTTPLimits) -> list[tuple[str, str]]:
    """Read a header section up to its blank line; return its ``(name, value)`` fields.

    ``readline(n)`` returns at most ``n`` bytes up to and including a newline (a file's
    ``readline``); ``b""`` means the peer closed, raised as ``ConnectionResetError``.
    """
    room = limits.max_header_bytes
    count_limit = limits.max_header_count
    fields: list[tuple[str, str]] = []
    match = _FIELD.fullmatch
    while True:
        line = readline(room + 1)
        if line in (b"\r\n", b"\n"):
            return fields
        if not line.endswith(b"\n"):
            if len(line) > room:
                raise HeaderFieldsTooLarge(f"header section over {limits.max_header_bytes} bytes")
            raise ConnectionResetError("the client closed the connection inside the headers")
        room -= len(line)
        if len(fields) >= count_limit:
            raise HeaderFieldsTooLarge(f"more than {count_limit} header fields")
        parsed = match(line)
        if parsed is None:
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("obsolete line folding (a header line starting with whitespace)")
            loose = _LOOSE_FIELD.fullmatch(line)
            if loose is not None:
                raise BadRequest(f"control character in header {loose.group(1).decode()!r}")
            raise BadRequest(f"malformed header line {line[:80]!r}")
        name, value = parsed.groups()
        value = value.strip(b" \t")
        fields.append((name.decode("ascii"), value.decode("latin-1")))


def request_framing(fields: Iterable[tuple[str, str]], version: str) -> Framing:
    """Return how the body of a request with these fields is framed; raise 400 or 501."""
    lengths: list[str] = []
    codings: list[str] = []
    hosts = 0
    for name, value in fields:
        key = name.lower()
        if key == "content-length":
            lengths.append(value)
        elif key == "transfer-encoding":
            codings.append(value)
        elif key == "host":
            hosts += 1
    if version == "HTTP/1.1" and hosts != 1:
        raise BadRequest("an HTTP/1.1 request needs exactly one Host header")
    if codings:
        if lengths:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if version == "HTTP/1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if len(codings) > 1 or codings[0].lower() != "chunked":
            raise HTTPError(
                501, f"Transfer-Encoding {', '.join(codings)!r}: only chunked is served"
            )
        return Framing(None, True)
    if not lengths:
        return Framing(None, False)
    if len(lengths) > 1:
        raise BadRequest("several Content-Length headers")
    if _DIGITS.fullmatch(lengths[0]) is None:
        raise BadRequest(f"bad Content-Length {lengths[0][:40]!r}")
    return Framing(int(lengths[0]), False)


def check_field(name: str, value: str) -> None:
    """Raise a 502 naming the field if it cannot be written as one header line."""
    if _TOKEN_STR.fullmatch(name) is None:
        raise BadGateway(f"response header name {name[:60]!r} is not a token")
    if _VALUE_STR.fullmatch(value) is None:
        raise BadGateway(f"response header {name!r} holds a control or non-latin-1 character")


def without_connection_fields(
    fields: Iterable[tuple[str, str]], keep: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """Return ``fields`` less the hop-by-hop and framing ones and those a ``Connection``
    field names (lower-case names in ``keep`` stay), in order, repeats kept."""
    fields = list(fields)
    named = set(HOP_BY_HOP - keep)
    for name, value in fields:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(","))
    return [(name, value) for name, value in fields if name.lower() not in named]


def response_fields(fields: Iterable[tuple[str, str]], status: int = 200) -> list[tuple[str, str]]:
    """Return the fields a server may write for a response; raise a 502 on a bad one.

    Framing and hop-by-hop fields, and those a ``Connection`` field names, are dropped:
    the server computes them for its own connection. A 426 keeps its ``Upgrade``, which
    RFC 9110 (15.5.22) requires it to name.
    """
    kept = without_connection_fields(fields, _UPGRADE if status == 426 else frozenset())
    for name, value in kept:
        check_field(name, value)
    return kept


_UPGRADE = frozenset({"upgrade"})
