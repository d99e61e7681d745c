"""A local app's answer as a ``res`` frame: the same bytes the HTTP writer would send.

Theory of operation. ``xio.responses.serialize`` turns the ``Response`` into status, header
fields and body, exactly as it does for an answer written over HTTP here, so the app answers
the same through the mesh (Content-Type from its headers, no body for 204 and 304, a 426 with
its ``Upgrade``). What only a frame needs is added here. When the asker takes a streamed answer
(its ``req`` had ``win``), a body that is a stream, or bytes larger than a ``res`` carries,
becomes a head and its pieces (``xio.peering.streams.Streamed``, sent by the forwarder);
otherwise a stream is gathered, up to the 16 MiB a frame carries. The frame rules are checked
where the answer was made: an answer that no frame may carry fails this request alone with a
502 counted as ``response_too_large``, instead of a frame the next node must refuse.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..constants import MAX_BODY
from ..errors import LocalProtocolError
from ..peering.codec import ResponseFrame
from ..peering.forwarding import VIA, error_frame
from ..peering.streams import Streamed, pieces_of
from ..request import Response
from ..responses import serialize

log = logging.getLogger("xio.node")

__all__ = ["response_to_frame"]


def response_to_frame(
    response: Response, accept: str | None, counts: Counter | None = None, request_id: int = 0,
    stream: bool = False,
) -> ResponseFrame | Streamed:  # fmt: skip
    """Encode a local app's response for the trip back over links (``stream``: the asker
    takes a streamed answer)."""
    via = response.headers.get(VIA, "")
    wire = serialize(response, accept, "a request from the mesh")
    body = wire.body
    if not wire.has_body:
        wire.discard()
        body = b""
    elif stream and (type(body) is not bytes or len(body) > MAX_BODY):
        return _streamed(wire, request_id, via, counts)
    elif type(body) is not bytes:
        body = _gather(body)
    if body is None or len(body) > MAX_BODY:
        return _unsendable(f"response is larger than {MAX_BODY} bytes", via, counts)
    try:
        return ResponseFrame(request_id, wire.status, wire.headers, body)
    except LocalProtocolError as exc:
        return _unsendable(f"the response cannot cross the mesh: {exc}", via, counts)


def _streamed(wire, request_id: int, via: str, counts: Counter | None) -> Streamed | ResponseFrame:
    body = wire.body if type(wire.body) is not bytes else pieces_of(wire.body)
    try:
        head = ResponseFrame(request_id, wire.status, wire.headers, more=True)
    except LocalProtocolError as exc:
        wire.discard()
        return _unsendable(f"the response cannot cross the mesh: {exc}", via, counts)
    return Streamed(head, body)


def _gather(chunks) -> bytes | None:
    """Return a streamed body whole, or None once it passes ``MAX_BODY`` (then close it)."""
    gathered, size = [], 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_BODY:
                return None
            gathered.append(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return b"".join(gathered)


def _unsendable(description: str, via: str, counts: Counter | None) -> ResponseFrame:
    if counts is not None:
        counts["response_too_large"] += 1
    log.warning("refused a local response: %s", description)
    return error_frame(502, description, via=via)
