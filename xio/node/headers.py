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
from ..http11 import HOP_BY_HOP, check_field

__all__ = ["end_to_end", "first_bad_header"]


def _connection_options(pairs: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in pairs:
        if name.lower() == "connection":
            named.update(option.strip().lower() for option in value.split(","))
    return named


def end_to_end(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return ``pairs`` without hop-by-hop and framing headers, in order, repeats kept."""
    pairs = list(pairs)
    named = _connection_options(pairs)
    kept = []
    for name, value in pairs:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or lower.startswith("proxy-"):
            continue
        kept.append((name, value))
    return kept


def first_bad_header(pairs: Iterable[tuple[str, str]]) -> str | None:
    """Return the name of the first header that HTTP cannot carry (None if all can)."""
    for name, value in pairs:
        try:
            check_field(name, value)
        except HTTPError:
            return name
    return None
