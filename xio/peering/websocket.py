"""RFC 6455 framing with no IO: bytes in, events out (sans-IO, as wsproto's FrameProtocol).

Theory of operation
-------------------
A ``FrameReader`` is the receiving half of one upgraded WebSocket connection. Its owner (the
transport adapter) hands it whatever the socket gave, ``receive(data)``, and acts on the
events returned, in order:

* ``Message(data)``: one whole binary message (a final frame, or its fragments joined);
* ``Ping(payload)`` and ``Pong(payload)``: control frames (the owner answers the newest ping);
* ``Close(code, reason)``: the peer's close frame; the reader takes nothing after it;
* ``AdmitRequest(size, prefix)``: a message of more than ``admit_above`` bytes whose first
  ``PREFIX`` bytes have come. The reader stops there until the owner answers with
  ``admit(True)`` (buffer it) or ``admit(False)`` (read past it keeping nothing: ``Discarded``
  follows once its last byte went by); ``admit`` returns the events that follow;
* ``Violation(reason, code, detail)``: the peer broke a rule; always the last event, the reader
  is spent and the owner closes with ``code``.

The rules, all checked from the frame header before any of its payload is buffered: larger than
``max_message`` (the owner may change it any time) is 1009 ``frame_too_large``, and so is a
fragmented message of more than ``admit_above`` in all (fragments too small to be admitted one
by one must not add up to a message that was never admitted; xio never fragments and RFC 6455
lets a receiver set limits); a text frame is 1003 ``text_frame`` (binary only); anything else
against the RFC is 1002 ``protocol_error``: reserved bits (no extension is ever negotiated), an
unknown opcode, an unmasked frame to a server or a masked one to a client, a continuation of
nothing, a new message inside a fragmented one, a fragmented or long control frame, a close
frame with a 1-byte payload.

Bounded: a payload buffer grows only as its bytes arrive, so a header that declares 17 MiB costs
nothing until 17 MiB have come, and a message not admitted is never held. Besides the frame it
may accept, the reader holds at most the rest of the owner's last chunk. ``payload_left`` tells
the owner how much of a large payload is still to come, so that it can read it in large pieces
and never past it.

The sending half is pure functions: ``frame`` / ``frame_parts`` build one final frame,
masked with the 4-byte key the caller hands in (a client must mask, RFC 6455 5.3);
``MaskKeys`` draws such keys from ``secrets`` in batches.
"""

from __future__ import annotations

import enum
import secrets
import struct
from base64 import b64encode
from dataclasses import dataclass
from hashlib import sha1

from xio.errors import ConnectError, LocalProtocolError

__all__ = [
    "ADMIT_ABOVE",
    "AdmitRequest",
    "Close",
    "Discarded",
    "FrameReader",
    "MaskKeys",
    "Message",
    "ReaderState",
    "Ping",
    "Pong",
    "Violation",
    "check_upgrade_answer",
    "close_payload",
    "frame",
    "frame_header",
    "frame_parts",
    "mask",
    "upgrade_request",
]

# Opcodes (RFC 6455, 5.2).
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN = 0x80
MASKED = 0x80
RESERVED_BITS = 0x70  # RSV1-3

CONTROL_PAYLOAD = 125  # RFC 6455 5.5: the most a control frame may carry
PREFIX = 64  # bytes of a large message shown to the owner before it is admitted
JOIN_LIMIT = 64 * 1024  # frame_parts: a payload up to this is copied behind its header
#: Messages larger than this are buffered only when the owner admits them.
ADMIT_ABOVE = 64 * 1024

_MASK_KEYS = 4096  # bytes of randomness drawn at once: masking keys for 1024 frames
_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One whole binary message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping; answer it with a pong carrying ``payload`` (the newest one is enough)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong (xio's links have their own pings: nothing to do)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame: ``code`` is None when it carried none."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    """A message of ``size`` bytes starting with ``prefix`` waits for ``FrameReader.admit``."""

    size: int
    prefix: bytes


@dataclass(frozen=True, slots=True)
class Discarded:
    """The message the owner refused (``size`` bytes) has been read past."""

    size: int


@dataclass(frozen=True, slots=True)
class Violation:
    """The peer broke a framing rule: close with ``code``, counted as ``reason``."""

    reason: str
    code: int
    detail: str


Event = Message | Ping | Pong | Close | AdmitRequest | Discarded | Violation


class _Broken(Exception):
    """Raised inside the reader to end parsing with a ``Violation``."""

    def __init__(self, reason: str, code: int, detail: str) -> None:
        super().__init__(detail)
        self.violation = Violation(reason, code, detail)


def _protocol_error(detail: str) -> _Broken:
    return _Broken("protocol_error", 1002, detail)


class ReaderState(enum.Enum):
    """Where a ``FrameReader`` is in the byte stream."""

    FRAMES = "frames"  # between frames, or inside a small one
    PREFIX = "prefix"  # a large message: waiting for its first PREFIX bytes
    ADMITTING = "admitting"  # a large message: waiting for the owner's admit()
    BUFFERING = "buffering"  # a large message admitted: its payload grows as bytes arrive
    SKIPPING = "skipping"  # a large message refused: read past, nothing kept
    ENDED = "ended"  # after a close frame or a violation


# -- reading -----------------------------------------------------------------------------------


class FrameReader:
    """The frames a peer sends, turned into events; see the module docstring.

    ``client``: we dialled, so the peer's frames must not be masked (a server's must be).
    """

    def __init__(self, *, client: bool, max_message: int, admit_above: int = ADMIT_ABOVE) -> None:
        self.client = client
        self.max_message = max_message
        self.admit_above = admit_above
        self.state = ReaderState.FRAMES
        self._data = b""  # received bytes not parsed yet, from self._pos on
        self._pos = 0
        self._partial: bytearray | None = None  # a small frame's bytes while it is incomplete
        self._partial_size = 0  # the bytes that frame needs, header included
        self._fragments: list[bytes] | None = None  # an unfinished fragmented message
        self._fragments_size = 0
        self._large_size = 0  # the payload length of a large message
        self._large_key: bytes | None = None  # its masking key
        self._payload = bytearray()  # what arrived of it (only while admitted or before)
        self._skip = 0  # bytes still to read past

    @property
    def payload_left(self) -> int:
        """Return how many bytes of an admitted or refused large message are still to come."""
        if self.state is ReaderState.BUFFERING:
            return self._large_size - len(self._payload)
        return self._skip if self.state is ReaderState.SKIPPING else 0

    @property
    def buffered(self) -> int:
        """Return how many received bytes the reader holds."""
        partial = len(self._partial) if self._partial is not None else 0
        held = len(self._data) - self._pos + partial + self._fragments_size
        return held + len(self._payload)

    def receive(self, data: bytes) -> list[Event]:
        """Take bytes from the peer; return the events they complete, in order."""
        state = self.state
        if state is ReaderState.FRAMES:
            self._take(data)
            return self._parse()
        if state is ReaderState.ENDED:
            return []
        if state is ReaderState.ADMITTING:
            raise LocalProtocolError("answer the AdmitRequest (admit) before receiving more")
        if state is ReaderState.SKIPPING:
            used = min(len(data), self._skip)
            self._skip -= used
            self._take(data[used:])
            return self._after_skip() if not self._skip else []
        self._take_payload(data)  # PREFIX or BUFFERING
        return self._after_payload()

    def admit(self, accept: bool) -> list[Event]:
        """Answer the last ``AdmitRequest``: True buffers the message, False reads past it."""
        if self.state is not ReaderState.ADMITTING:
            raise LocalProtocolError(f"no message waits to be admitted ({self.state.name})")
        if accept:
            self.state = ReaderState.BUFFERING
            return self._after_payload()
        self.state = ReaderState.SKIPPING
        self._skip = self._large_size - len(self._payload)
        self._payload = bytearray()  # nothing of a refused message is kept
        return self._after_skip() if not self._skip else []

    def _take(self, data: bytes) -> None:
        """Keep ``data`` behind what is not parsed yet."""
        if self._partial is not None:
            self._partial += data  # a bytearray: a frame trickling in is not copied each time
            if len(self._partial) >= self._partial_size:
                self._data, self._pos, self._partial = bytes(self._partial), 0, None
        elif self._pos >= len(self._data):
            self._data, self._pos = data, 0  # the fast path: no copy
        elif data:
            self._data, self._pos = self._data[self._pos :] + data, 0  # a partial header

    def _take_payload(self, data: bytes) -> None:
        used = self._large_size - len(self._payload)
        self._payload += data[:used]
        self._take(data[used:])

    def _after_payload(self) -> list[Event]:
        """Ask for admission once the prefix is in; deliver once the payload is whole."""
        payload = self._payload
        if self.state is ReaderState.PREFIX:
            if len(payload) < min(PREFIX, self._large_size):
                return []
            self.state = ReaderState.ADMITTING
            prefix = bytes(payload[:PREFIX])
            if self._large_key is not None:
                prefix = mask(self._large_key, prefix)
            return [AdmitRequest(self._large_size, prefix)]
        if len(payload) < self._large_size:
            return []
        key, self._payload, self.state = self._large_key, bytearray(), ReaderState.FRAMES
        message = Message(mask(key, payload) if key is not None else bytes(payload))
        return [message, *self._parse()]

    def _after_skip(self) -> list[Event]:
        self.state = ReaderState.FRAMES
        return [Discarded(self._large_size), *self._parse()]

    def _parse(self) -> list[Event]:
        """Turn every complete frame in the buffer into events."""
        events: list[Event] = []
        data, pos = self._data, self._pos
        # The fast path: a whole binary message, masked the right way and small enough.
        fast_mask = 0 if self.client else MASKED
        most = min(self.max_message, self.admit_above)
        try:
            while self._partial is None:
                header = _parse_header(data, pos)
                if header is None:
                    break
                first, second, length, start = header
                fast = (
                    first == FIN | BINARY
                    and second & MASKED == fast_mask
                    and length <= most
                    and self._fragments is None
                )
                if not fast:
                    if events and length > self.max_message:
                        break  # judged on the next receive: the owner may raise the cap first
                    self._check(first, second, length)  # before any payload is buffered
                    if length > self.admit_above and first & 0x0F < CLOSE:
                        pos = self._begin_large(data, start, length, second)
                        events += self._after_payload()
                        break
                end = start + length
                if end > len(data):  # the rest of the frame is still to come
                    self._partial, self._partial_size = bytearray(data[pos:]), end - pos
                    data, pos = b"", 0
                    break
                payload = data[start:end]
                if second & MASKED:
                    payload = mask(data[start - 4 : start], payload)
                pos = end
                if fast:
                    events.append(Message(payload))
                    continue
                event = self._frame(first, payload)
                if event is not None:
                    events.append(event)
                    if type(event) is Close:
                        break
        except _Broken as broken:
            self._end()
            events.append(broken.violation)
            return events
        if self.state is ReaderState.ENDED:  # a close frame: nothing after it is read
            self._end()
        else:
            self._data, self._pos = data, pos
        return events

    def _begin_large(self, data: bytes, start: int, length: int, second: int) -> int:
        """Start on a message over ``admit_above``; return where the bytes after it begin."""
        self.state = ReaderState.PREFIX
        self._large_size = length
        self._large_key = data[start - 4 : start] if second & MASKED else None
        end = min(start + length, len(data))
        self._payload = bytearray(data[start:end])
        self._data, self._pos = data, end
        return end

    def _end(self) -> None:
        self.state = ReaderState.ENDED
        self._data, self._pos, self._partial = b"", 0, None
        self._fragments, self._fragments_size, self._payload = None, 0, bytearray()

    def _check(self, first: int, second: int, length: int) -> None:
        """Refuse a frame from its header alone."""
        opcode = first & 0x0F
        if first & RESERVED_BITS:
            raise _protocol_error("reserved bits set")
        if bool(second & MASKED) == self.client:
            raise _protocol_error("frame masked the wrong way for its sender")
        if opcode >= CLOSE:
            if opcode > PONG:
                raise _protocol_error(f"unknown opcode {opcode:#x}")
            if not first & FIN or length > CONTROL_PAYLOAD:
                raise _protocol_error("fragmented or long control frame")
            return
        if opcode > BINARY:
            raise _protocol_error(f"unknown opcode {opcode:#x}")
        if (opcode == CONTINUATION) != (self._fragments is not None):
            raise _protocol_error("continuation out of place")
        if opcode == TEXT:
            raise _Broken("text_frame", 1003, "text frame")
        if self._fragments_size + length > self.max_message:
            raise _Broken("frame_too_large", 1009, f"message over {length} bytes")
        fragmented = opcode == CONTINUATION or not first & FIN
        if fragmented and self._fragments_size + length > self.admit_above:
            detail = f"fragmented message > {self.admit_above} bytes"
            raise _Broken("frame_too_large", 1009, detail)

    def _frame(self, first: int, payload: bytes) -> Event | None:
        """Return the event of one checked frame, if it completes one."""
        opcode = first & 0x0F
        if opcode == BINARY and first & FIN:
            return Message(payload)
        if opcode < CLOSE:  # the first or a further fragment of a message
            if self._fragments is None:
                self._fragments = []
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if not first & FIN:
                return None
            message = b"".join(self._fragments)
            self._fragments, self._fragments_size = None, 0
            return Message(message)
        if opcode == PING:
            return Ping(bytes(payload))
        if opcode == PONG:
            return Pong(bytes(payload))
        if len(payload) == 1:
            raise _protocol_error("close frame with a 1-byte payload")
        self.state = ReaderState.ENDED
        code = int.from_bytes(payload[:2], "big") if payload else None
        return Close(code, bytes(payload[2:]).decode("utf-8", "replace"))


def _parse_header(data: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """Return ``(first byte, second byte, payload length, payload offset)`` of the frame at
    ``data[pos:]``, or None until its header (mask key included) is complete."""
    available = len(data) - pos
    if available < 2:
        return None
    first, second = data[pos], data[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        if available < 4:
            return None
        length = int.from_bytes(data[start : start + 2], "big")
        start += 2
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(data[start : start + 8], "big")
        start += 8
    if second & MASKED:
        start += 4
    return None if start > len(data) else (first, second, length, start)


# -- writing -----------------------------------------------------------------------------------


def mask(key: bytes, data: bytes | bytearray) -> bytes:
    """Mask or unmask ``data`` with a 4-byte ``key`` (RFC 6455, 5.3)."""
    # One big-integer XOR: ws4py's byte-by-byte loop took 14 us for 200 bytes and 96 ms
    # for 1 MiB (the hub blocked); this is 20-25 times faster and needs no C extension.
    size = len(data)
    if not size:
        return b""
    pad = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(size, "little")


def frame_header(opcode: int, size: int, mask_key: bytes | None = None) -> bytes:
    """Return the header of a final frame of ``size`` payload bytes."""
    mask_bit = MASKED if mask_key is not None else 0
    if size < 126:
        header = bytes((FIN | opcode, mask_bit | size))
    elif size < 65536:
        header = _LENGTH_16.pack(FIN | opcode, mask_bit | 126, size)
    else:
        header = _LENGTH_64.pack(FIN | opcode, mask_bit | 127, size)
    return header + mask_key if mask_key is not None else header


def frame_parts(opcode: int, payload: bytes, mask_key: bytes | None = None) -> list[bytes]:
    """Return one final frame carrying ``payload``, masked with ``mask_key`` if given: in one
    piece, or as header and payload when the payload is too large to copy again."""
    header = frame_header(opcode, len(payload), mask_key)
    if mask_key is not None:
        payload = mask(mask_key, payload)
    return [header + payload] if len(payload) <= JOIN_LIMIT else [header, payload]


def frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """Return one final frame carrying ``payload``, masked with ``mask_key`` if given."""
    return b"".join(frame_parts(opcode, payload, mask_key))


def close_payload(code: int, reason: str) -> bytes:
    """Return a close frame's payload: ``code`` and as much of ``reason`` as fits in 125."""
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return code.to_bytes(2, "big") + text


class MaskKeys:
    """Masking keys for a client's frames, drawn from ``secrets`` in batches."""

    # RFC 6455 10.3 wants keys an attacker cannot predict; one getrandom call per frame was a
    # syscall per request, so keys are drawn 1024 at a time. A forked child must call
    # ``reset`` (the adapter registers it) so that it does not reuse its parent's keys.
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the keys drawn so far."""
        self._pool = b""
        self._next = 0

    def take(self) -> bytes:
        """Return a fresh 4-byte key."""
        start = self._next
        if start >= len(self._pool):
            self._pool, start = secrets.token_bytes(_MASK_KEYS), 0
        self._next = start + 4
        return self._pool[start : start + 4]


# -- the client's half of the upgrade (RFC 6455, 4.1) -------------------------------------

#: The GUID a server appends to the client's key to prove it read the upgrade (RFC 6455, 1.3).
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def upgrade_request(target: str, host: str, key: bytes, headers: dict[str, str]) -> bytes:
    """Return the client's upgrade request for ``target`` (path and query); ``key`` is the
    base64 of 16 random bytes (``Sec-WebSocket-Key``)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}",
             "Sec-WebSocket-Version: 13", *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"


def check_upgrade_answer(head: bytes, key: bytes) -> None:
    """Raise ``ConnectError`` unless ``head`` (the answer up to its blank line) is a
    101 that accepts the upgrade made with ``key``."""
    status, *lines = head.decode("latin-1").split("\r\n")
    if status.split(" ", 2)[1:2] != ["101"]:
        raise ConnectError(f"answered {status!r}, not 101")
    answer = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    accept = b64encode(sha1(key + _ACCEPT_GUID).digest()).decode()
    if (
        answer.get("upgrade", "").lower() != "websocket"
        or "upgrade" not in answer.get("connection", "").lower()
        or answer.get("sec-websocket-accept") != accept
    ):
        raise ConnectError("the 101 answer is not a valid WebSocket upgrade")
