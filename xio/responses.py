"""What an answer becomes: the JSON error body, and a ``Response`` as status, headers and bytes.

Theory of operation. ``serialize`` is the one place that turns a ``Response`` into what is
written: the HTTP server frames its result for a connection, and the node puts it in a
``res`` frame, so an app answers the same here and through the mesh. It settles:

* the Content-Type: ``content_type``, else the one in ``headers``; the content is encoded as
  it says (``xio.content``), else by its type, JSON or msgpack as the client accepts;
* the headers: ``xio.http11``'s rule for a response (framing and hop-by-hop fields dropped,
  a 426 keeps its ``Upgrade``), without ``Proxy-*`` (they belong to one hop, as in a
  ``req``); a field that cannot be one HTTP line makes the answer a 502 that says so;
* the body: none for 1xx, 204 and 304 (and no Content-Type), else bytes or an iterator of
  bytes; ``length`` is known for bytes and for regular files (sent as they are read).

Every error xio answers with, wherever it is written (a resource's
``HTTPError``, the HTTP server refusing a request before it has one, a router's 404, a relay's
502 in a ``res`` frame, an app on threads missing its deadline), carries the same JSON body:
``{"status": ..., "title": ..., "description": ...}`` from ``HTTPError.to_dict``. It is built
here, by ``error_response`` (a ``Response``, encoded like any other: JSON, or msgpack when the
client asks) and ``error_json`` (compact JSON bytes, for the places that write bytes before
there is a ``Response``); ``session.error_frame`` writes the same dict with the same encoder.

This module sits below the HTTP server and the resource tree and above ``request``: the
server needs error bodies without importing the resource tree, and the resource tree needs
them without importing the server.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from . import content as _content
from .content import dump_json
from .errors import HTTPError
from .http11 import response_fields
from .request import Headers, Response

__all__ = ["NO_BODY_STATUSES", "Wire", "error_json", "error_response", "serialize"]

log = logging.getLogger("xio")

NO_BODY_STATUSES = frozenset({204, 304})
_PIECE = 64 * 1024  # a file is read this much at a time


def error_response(exc: HTTPError) -> Response:
    """Return the JSON response for an ``HTTPError``, with the headers it names."""
    return Response(exc.to_dict(), exc.status, headers=exc.headers)


def error_json(exc: HTTPError) -> bytes:
    """Return the JSON error body of ``exc`` as compact UTF-8 bytes."""
    return dump_json(exc.to_dict())


@dataclass(frozen=True, slots=True)
class Wire:
    """A response as it is written: status, header fields, body and the body's length."""

    status: int
    #: Content-Type first when there is a body, then the other fields in order, repeats kept.
    headers: tuple[tuple[str, str], ...]
    body: bytes | Iterator[bytes]
    #: Bytes in ``body`` when known (bytes, a regular file), else None (a stream).
    length: int | None
    has_body: bool
    #: What the app returned, closed by ``discard`` when the body is never sent.
    source: object = None

    def discard(self) -> None:
        """Close a body that will not be sent (HEAD, 204), and what it was read from."""
        if type(self.body) is not bytes:
            _close(self.body)
            _close(self.source)


def serialize(response: Response, accept: str | None = None, where: str = "") -> Wire:
    """Return what ``response`` becomes on the wire (see the module docstring).

    ``accept`` is the request's Accept header; ``where`` names the request in log lines.
    """
    status, content = response.status, response.content
    content_type, extra = response.content_type, response.headers
    if content_type is None and extra and "Content-Type" in extra:
        content_type = extra["Content-Type"]
    try:
        pairs = Headers.fields_of(extra)
        fields = header_fields(pairs, status) if pairs else []
    except HTTPError as exc:  # a header that cannot be written as one line
        log.warning("refused the response to %s: %s", where or "a request", exc.description)
        _close(content)
        status, content, content_type, fields = exc.status, exc.to_dict(), None, []
    length = None
    if type(content) is str and content_type is None:  # the commonest answer, first
        body, content_type = content.encode(), _content.TEXT
    elif (length := _file_length(content)) is not None:
        body, content_type = _read_file(content, length), content_type or _content.BINARY
    else:
        try:
            body, content_type = _content.encode(content, content_type, accept)
        except TypeError as exc:
            log.error("cannot encode the response to %s: %s", where or "a request", exc)
            status, body = 500, error_json(HTTPError(500, f"TypeError: {exc}"))
            content_type = _content.JSON
    if type(body) is bytes:
        length = len(body)
    has_body = status not in NO_BODY_STATUSES and status >= 200
    headers = [("Content-Type", content_type)] if has_body else []
    headers += [pair for pair in fields if pair[0].lower() != "content-type"]
    if content_type == _content.EVENT_STREAM and not any(
        name.lower() == "cache-control" for name, _ in headers
    ):  # a live resource: no cache on the way may hold its events back
        headers.append(("Cache-Control", "no-cache"))
    return Wire(status, tuple(headers), body, length, has_body, content)


def header_fields(pairs, status: int = 200) -> list[tuple[str, str]]:
    """Return the fields of an answer that are written, by the one rule for answers."""
    return [pair for pair in response_fields(pairs, status) if pair[0][:6].lower() != "proxy-"]


def _file_length(content) -> int | None:
    """Return the bytes left in an open regular file, or None for any other content."""
    if not hasattr(content, "fileno") or isinstance(content, io.TextIOBase):
        return None  # a text file's size in bytes is not the length of what it reads
    try:
        info = os.fstat(content.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(0, info.st_size - content.tell())
    except (OSError, ValueError):  # no real descriptor (a wrapped stream), or closed
        return None


def _read_file(stream, length: int):
    """Yield exactly ``length`` bytes of ``stream``, then close it."""
    try:
        left = length
        while left:
            chunk = stream.read(min(left, _PIECE))
            if not chunk:  # it shrank since Content-Length went out: end the connection
                raise OSError(f"file ended {left} bytes short of its Content-Length")
            left -= len(chunk)
            yield chunk.encode() if isinstance(chunk, str) else chunk
    finally:
        stream.close()


def _close(content) -> None:
    close = getattr(content, "close", None)
    if close is not None and not isinstance(content, (bytes, str)):
        close()
