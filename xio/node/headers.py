"""Which headers cross the mesh, and in what shape (docs/PROTOCOL.md, section 11).

Theory of operation. An HTTP message has two kinds of headers: end-to-end ones, which belong
to the request or the response, and those that belong to one HTTP connection: hop-by-hop
(``Connection`` and what it names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``) and framing (``Content-Length``). Only end-to-end headers
travel in ``req`` and ``res`` frames, in both directions: the node that writes HTTP owns the
framing, so a peer's ``Content-Length: 0`` can never make a client read the rest of a body as
its next response. Names keep their case, repeated headers stay repeated and in order. Which
fields belong to a connection, and which a response may hold, are ``xio.http11``'s rules: the
same for an app's answer written here and for one that crossed the mesh.

Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import HTTPError
from ..http11 import check_field, without_connection_fields

__all__ = ["end_to_end", "first_bad_header"]


def end_to_end(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return ``pairs`` without hop-by-hop, framing and ``Proxy-*`` headers, in order."""
    return [pair for pair in without_connection_fields(pairs) if not _is_proxy(pair[0])]


def _is_proxy(name: str) -> bool:
    return name[:6].lower() == "proxy-"


def first_bad_header(pairs: Iterable[tuple[str, str]]) -> str | None:
    """Return the name of the first header that HTTP cannot carry (None if all can)."""
    for name, value in pairs:
        try:
            check_field(name, value)
        except HTTPError:
            return name
    return None
