"""Which headers cross the mesh, and in what shape (docs/PROTOCOL.md, section 11).

Theory of operation. An HTTP message has two kinds of headers: end-to-end ones, which belong
to the request or the response, and those that belong to one HTTP connection: hop-by-hop
(``Connection`` and what it names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``) and framing (``Content-Length``). Only end-to-end headers
travel in ``req`` and ``res`` frames, in both directions: the node that writes HTTP owns the
framing, so a peer's ``Content-Length: 0`` can never make a client read the rest of a body as
its next response. Names keep their case, repeated headers stay repeated and in order.

``HeaderList`` carries repeated response headers (two ``Set-Cookie``) through a ``Response``,
whose ``Headers`` would join them with commas.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..request import Headers

__all__ = ["HOP_BY_HOP", "HeaderList", "end_to_end", "first_bad_header"]

#: Headers of one HTTP connection, never carried across the mesh ("proxy-*" too).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
#: Headers that frame a message on one connection; the node writing HTTP computes them.
FRAMING = frozenset({"content-length", "transfer-encoding"})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 5.5: HTAB is the only one allowed


def _connection_options(pairs: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in pairs:
        if name.lower() == "connection":
            named.update(option.strip().lower() for option in value.split(","))
    return named


def end_to_end(
    pairs: Iterable[tuple[str, str]], framing: frozenset[str] = FRAMING
) -> list[tuple[str, str]]:
    """Return ``pairs`` without hop-by-hop and ``framing`` headers, in order, repeats kept."""
    pairs = list(pairs)
    named = _connection_options(pairs)
    kept = []
    for name, value in pairs:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in framing or lower in named or lower.startswith("proxy-"):
            continue
        kept.append((name, value))
    return kept


def first_bad_header(pairs: Iterable[tuple[str, str]]) -> str | None:
    """Return the name of the first header that HTTP cannot carry (None if all can).

    A name must be a token; a value must hold no control character but HTAB (a CR or LF
    would end the header early, a NUL is refused by many clients).
    """
    for name, value in pairs:
        if not _TOKEN.fullmatch(name) or _CONTROL.search(value):
            return name
    return None


class HeaderList(Headers):
    """Response headers that keep repeated names repeated, in order.

    Lookups are case-insensitive and see repeated values joined, as in ``Headers``;
    ``items()`` gives every pair as added, which is what the HTTP writer sends.
    """

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: list[tuple[str, str]] = []
        super().__init__(list(pairs))

    def add(self, name: str, value: str) -> None:
        """Add one more header of this name (a repeat stays a separate header)."""
        super().add(name, value)
        self._pairs.append((name, str(value)))

    def __setitem__(self, name: str, value: str) -> None:
        super().__setitem__(name, value)
        key = name.lower()
        self._pairs = [pair for pair in self._pairs if pair[0].lower() != key]
        self._pairs.append((name, str(value)))

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        key = name.lower()
        self._pairs = [pair for pair in self._pairs if pair[0].lower() != key]

    def items(self):  # type: ignore[override]
        return list(self._pairs)

    def copy(self) -> HeaderList:
        """Return an independent copy."""
        return HeaderList(self._pairs)
