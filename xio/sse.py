"""Server-sent events: what a handler yields, as the text/event-stream format, and back.

Theory of operation. A handler that returns a generator answers a client asking with
``Accept: text/event-stream`` as a live resource: each item it yields becomes one event,
written (and, across the mesh, sent on) as soon as it is yielded. An item is an ``Event``, or
a plain value that becomes the ``data`` of an unnamed event: a str as it is, anything else as
JSON (bytes pass as they are: written in the format already). ``encode`` writes the format of the WHATWG HTML standard (9.2, server-sent events); the
``Parser`` reads it back, piece by piece, for the Python client. Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import content as _content
from .content import EVENT_STREAM, dump_json
from .errors import HTTPError, ResponseError, error_for

__all__ = ["EVENT_STREAM", "Event", "Parser", "encode", "encode_all", "read", "wants_events"]

#: A line the parser holds without its end is at most this long: a peer cannot make it grow.
MAX_LINE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event. ``data`` may hold newlines; ``comment`` alone is a keep-alive."""

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None  # ms the client waits before reconnecting
    comment: str | None = None

    def json(self):
        """Return ``data`` parsed as JSON."""
        import json

        return json.loads(self.data)


def _field(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an event's {name} cannot hold a line break")
    return f"{name}: {value}\n"


def encode(item) -> bytes:
    """Return one event as its lines and the blank line that ends it (bytes: as they are,
    the format already, as a stream from the mesh arrives)."""
    if isinstance(item, bytes):
        return item
    if not isinstance(item, Event):
        item = Event(item if isinstance(item, str) else dump_json(item).decode())
    lines = []
    if item.comment is not None:
        lines += [f": {line}\n" for line in item.comment.splitlines() or [""]]
    if item.event is not None:
        lines.append(_field("event", item.event))
    if item.id is not None:
        lines.append(_field("id", item.id))
    if item.retry is not None:
        lines.append(f"retry: {int(item.retry)}\n")
    if item.data or item.comment is None:
        lines += [f"data: {line}\n" for line in item.data.replace("\r\n", "\n").split("\n")]
    return ("".join(lines) + "\n").encode()


def encode_all(items: Iterable) -> Iterator[bytes]:
    """Yield each item of ``items`` as one event (the iterator is closed by the caller)."""
    for item in items:
        yield encode(item)


def wants_events(accept: str | None) -> bool:
    """Tell whether an ``Accept`` header asks for server-sent events."""
    return bool(accept) and EVENT_STREAM in accept.lower()


class Parser:
    """Read events from the text/event-stream bytes of a body, as they arrive."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Take the next bytes; return the events they complete."""
        self._buffer += chunk
        events = []
        while True:
            cut = min((i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0),
                      default=-1)  # fmt: skip
            if cut < 0 or cut == len(self._buffer) - 1 and self._buffer[cut] == 13:
                if len(self._buffer) > MAX_LINE:  # (a CR last may be the half of a CRLF)
                    raise ValueError(f"an event line over {MAX_LINE} bytes")
                return events
            line, rest = self._buffer[:cut], self._buffer[cut + 1 :]
            if self._buffer[cut : cut + 2] == b"\r\n":
                rest = rest[1:]
            self._buffer = rest
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> Event | None:
        if not line:  # a blank line ends the event, if it had data
            if not self._data:
                self._event = None
                return None
            event = Event("\n".join(self._data), self._event or "message", self._id, self._retry)
            self._data, self._event, self._retry = [], None, None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


def read(answer) -> Iterator[Event]:
    """Yield the events of a client's streamed ``answer`` (``Client.stream``), then close it.

    An answer that is not a 200 of text/event-stream raises its ``HTTPError`` (the node's
    description when it sent xio's error body), or ``ResponseError`` for a 200 of another type.
    """
    try:
        if answer.status != 200:
            try:
                content = _content.decode_answer(answer.read(), answer.content_type, "GET",
                                                 answer.status)  # fmt: skip
            except HTTPError:  # a body that does not parse as its type says
                content = None
            description = content.get("description") if isinstance(content, dict) else None
            raise error_for(answer.status, description or f"status {answer.status}")
        if _content.media_type(answer.content_type) != EVENT_STREAM:
            raise ResponseError(f"asked for events, got {answer.content_type!r}")
        parser = Parser()
        for piece in answer:
            yield from parser.feed(piece)
    finally:
        answer.close()
