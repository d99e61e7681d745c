"""Turn Python values into HTTP bodies and back.

A handler returns a plain value; its type picks the content type:

    str                              text/plain; charset=utf-8
    dict, list, int, float, bool, None  application/json (or msgpack when asked)
    bytes, bytearray, memoryview     application/octet-stream
    file object or iterator          streamed, application/octet-stream

``encode`` does that; ``decode`` is its inverse for bodies that arrive (a request body
on the server, a response body in the client). Both are pure and shared by the server,
the client and the mesh forwarder, so a value looks the same whichever way it travels.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qsl

import msgpack

from .errors import BadRequest

JSON = "application/json"
MSGPACK = "application/msgpack"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
EVENT_STREAM = "text/event-stream"  # server-sent events (xio.sse)
FORM = "application/x-www-form-urlencoded"

_JSON_TYPES = (dict, list, tuple, int, float, bool, type(None))
_CHUNK = 64 * 1024


def _json_default(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dump_json(value) -> bytes:
    """Serialise ``value`` as compact UTF-8 JSON."""
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, default=_json_default
    ).encode()


def wants_msgpack(accept: str | None) -> bool:
    """Tell whether an ``Accept`` header asks for msgpack rather than JSON."""
    return bool(accept) and ("application/msgpack" in accept or "application/x-msgpack" in accept)


def media_type(content_type: str | None) -> str:
    """Return the bare, lower-case media type of a Content-Type value."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def encode(content, content_type: str | None, accept: str | None = None):
    """Return ``(body, content_type)``; body is ``bytes`` or an iterator of ``bytes``.

    An explicit ``content_type`` wins for the header; structured values are then
    serialised in the format it names (JSON unless it says msgpack).
    """
    if isinstance(content, str):
        return content.encode(), content_type or TEXT
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content), content_type or BINARY
    if isinstance(content, _JSON_TYPES) or isinstance(content, (set, frozenset)):
        if content_type is None:
            content_type = MSGPACK if wants_msgpack(accept) else JSON
        if "msgpack" in media_type(content_type):
            return msgpack.packb(content, default=_json_default), content_type
        return dump_json(content), content_type
    if hasattr(content, "read"):
        return _read_chunks(content), content_type or BINARY
    if isinstance(content, (Iterator, Iterable)):
        from . import sse  # noqa: PLC0415 - sse writes its JSON with dump_json, from here

        if media_type(content_type) == sse.EVENT_STREAM or (
            content_type is None and sse.wants_events(accept)
        ):  # a live resource: each item one event
            return _encode_chunks(content, sse.encode), sse.EVENT_STREAM
        return _encode_chunks(content), content_type or BINARY
    raise TypeError(f"a handler cannot return a {type(content).__name__}")


def _read_chunks(stream) -> Iterator[bytes]:
    try:
        while chunk := stream.read(_CHUNK):
            yield chunk.encode() if isinstance(chunk, str) else chunk
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()


class _encode_chunks:  # noqa: N801 - used as the function it replaced
    """An app's iterable as non-empty bytes chunks: each item as bytes, or through ``item``
    (an event's encoding); a str as UTF-8, any other value as a line of JSON (NDJSON).

    A class, not a generator, so that ``close`` closes the app's iterable even when no chunk
    was ever asked for (a generator's ``finally`` would not run then): a streamed answer from
    the mesh holds a budget and a request on its path until it is closed.
    """

    __slots__ = ("_source", "_chunks", "_item")

    def __init__(self, source, item=None) -> None:
        self._source = source
        self._chunks = iter(source)
        self._item = item

    def __iter__(self) -> _encode_chunks:
        return self

    def __next__(self) -> bytes:
        while True:
            chunk = next(self._chunks)
            if self._item is not None:
                return self._item(chunk)
            if isinstance(chunk, str):
                chunk = chunk.encode()
            elif not isinstance(chunk, (bytes, bytearray, memoryview)):
                chunk = dump_json(chunk) + b"\n"
            if chunk:
                return bytes(chunk)  # no copy of a bytes object

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


def decode(body: bytes, content_type: str | None):
    """Return the value a body carries, by its content type.

    JSON and msgpack become Python values, forms a dict, text a ``str``; anything else
    stays ``bytes``. A body that does not parse raises ``BadRequest`` saying why.
    """
    kind = media_type(content_type)
    if kind == JSON or kind.endswith("+json"):
        try:
            return json.loads(body)
        except UnicodeDecodeError as exc:
            raise BadRequest(f"malformed JSON body: not UTF-8 ({exc.reason})") from exc
        except ValueError as exc:
            raise BadRequest(f"malformed JSON body: {exc}") from exc
    if kind in (MSGPACK, "application/x-msgpack"):
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise BadRequest(f"malformed msgpack body: {exc}") from exc
    if kind == FORM:
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise BadRequest("malformed form body: not UTF-8") from exc
    if kind.startswith("text/"):
        return body.decode("utf-8", "replace")
    return body


def decode_answer(body: bytes, content_type: str | None, method: str, status: int):
    """Return the value of a response body, as an HTTP caller sees it.

    A non-empty body decodes by its content type (raising ``BadRequest`` as ``decode`` does).
    An empty one is no value (``None``) for a HEAD, a 204 or 304, or a JSON or msgpack type,
    and the empty value of its kind otherwise: ``""`` for text, ``b""`` for anything else.
    The network client and ``xio.testing.TestClient`` both answer with this, so a test sees
    what a caller over HTTP would.
    """
    if body:
        return decode(body, content_type)
    if method == "HEAD" or status in (204, 304):
        return None
    kind = media_type(content_type)
    if kind.startswith("text/"):
        return ""
    if kind in (JSON, MSGPACK) or kind.endswith("+json"):
        return None
    return b""
