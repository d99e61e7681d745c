"""A scripted hostile peer for xio nodes, written from docs/PROTOCOL.md alone.

Theory of operation
-------------------
Nothing here comes from ``xio.peering``: this is a second, independent reading of the protocol
document, so a test that drives a node with it also checks that the document is enough to
talk to a node. It uses plain blocking sockets and threads (no gevent), msgpack and
cryptography's Ed25519, X25519, HKDF and ChaCha20-Poly1305, and nothing else outside the
standard library.

``HostilePeer(port)`` opens a TCP connection to ``127.0.0.1:port`` (optionally from a chosen
source address such as ``127.0.0.7``, so that one test can look like many hosts), does the
RFC 6455 client upgrade to ``/_xio/ws`` and then speaks frames (section 3): every WebSocket
binary message is one msgpack map whose ``"t"`` names its type. From there a test chooses
how the peer behaves:

* ``handshake()`` authenticates with a fresh or given ``Key`` (section 6, version 2: an X25519
  ``eph`` in the hello, both in the signed transcript), optionally announcing the hello fields
  a newer node understands (``caps``, ``timeout``) or any others (``extra``, merged into the
  hello map last: a closed mesh's ``cert``, section 8.6.1; it may also replace ``v`` or
  ``eph``). From our ``auth`` on, everything ``send*`` writes is sealed (section 6.1) and
  every message read after the node's ``auth`` is opened, so a test writes and reads plain
  frames; ``send_tampered`` seals a frame and flips one bit of the sealed message,
  ``handshake_messages`` keeps the exact hello and auth sent, for a test that replays them on
  another connection (``send_message(raw=True)``);
* ``send(kind, **fields)``, ``send_map(map)``, ``send_message(bytes)`` and ``send_raw(bytes)``
  write a frame, any msgpack map, any binary message (``padded_ping(size)``: a legal ping
  padded with an ignored key), or raw bytes on the socket (only a frame header that declares
  17 MiB, say: never sealed);
* ``record_frame(key, seq, ...)`` builds and signs records (section 8) for the peer itself and
  for any number of fake identities, with an ``ext`` map if asked (a certificate, 8.6.2);
* ``start_reader()`` runs a thread that reads every frame, answers pings with pongs (so the
  peer stays alive), keeps the frames it got and counts the bytes; without it the peer never
  reads, and ``keep_pinging()`` lets it look alive anyway (the "stops reading" attack);
* ``close()`` ends it abruptly (optionally with an RST), or after a ``bye``.

Every blocking call has a timeout and every thread stops when the peer is closed, so a test
that forgets a peer still ends.

Where PROTOCOL.md left me guessing (kept here because each is a question for the document):

1. Sections 2 and 6: the node's ``hello`` came in the same read as its 101 answer. Nothing
   says a client must expect frames right behind the upgrade answer (this one keeps them).
2. Section 2 says nothing of a node refusing the upgrade itself (the fixed node answers HTTP
   503 when full and 429 over its handshake rate), nor whether a client should back off.
3. Section 3 caps "the message", but does not say a node may close on a frame header that
   declares too much, before the payload comes; nor what becomes of a refused frame's bytes.
4. Section 6 asks for "the canonical encoding of section 8.2" for the transcript array, but
   8.2 is written for record bodies: I read it as ``packb(use_bin_type=True)`` all the same.
5. Section 8.1: ``links`` entries are 2-element arrays "strictly ascending": I took the
   order to be by neighbour id alone.
6. Section 7: a peer "must ping more often than the other side's timeout", but has no way to
   learn it (the ``hello`` field ``timeout`` is not in the document); and "any frame counts as
   a sign of life" leaves open whether a peer that never answers our pings may be closed.
7. Section 9: how fast a new link is sent the store is not said, and the summary-first
   exchange (``caps`` ``"summary"``, frames ``summary`` / ``want``) is not in the document yet.
8. Section 11 bounds a ``req``'s ``ttl`` only by uint32 (49.7 days), while the ingress
   clamps ``X-Xio-Timeout`` to 3600 s.
9. Sections 7 and 12 bound in-flight requests per link and direction only: nothing bounds
   them per node, nor the request bodies a node holds at once.
10. Section 6.1: "every binary WebSocket message after a side's own auth is sealed", but a
   node that refuses our auth has sent its own already: its bye then comes sealed, under keys
   we can only derive if our hello was our own. I open it when I can and otherwise report
   the connection's end.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping

import msgpack
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VERSION = 2
LINK_DOMAIN = b"xio-link-v2\x00"
KEYS_INFO = b"xio-link-keys-v2"
REKEY_INFO = b"xio-link-rekey-v2"
REKEY_MESSAGES = 65_536
REKEY_BYTES = 2**30
RECORD_DOMAIN = b"xio-record-v1\x00"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3
MAX_LIFETIME_MS = 3_600_000

_BINARY, _CLOSE, _PING, _PONG = 0x2, 0x8, 0x9, 0xA


class PeerError(Exception):
    """The node did something this peer did not expect (or the connection ended)."""


class Refused(PeerError):
    """The node answered the WebSocket upgrade with ``status`` instead of 101."""

    def __init__(self, status: int, head: str) -> None:
        super().__init__(f"upgrade answered {status}: {head.splitlines()[0] if head else ''}")
        self.status = status


class Closed(PeerError):
    """The connection ended (``bye`` reason, close frame or end of stream)."""


class Direction:
    """One direction of a sealed link (section 6.1): a key, a counter, the rekey bounds."""

    def __init__(self, key: bytes) -> None:
        self.key, self.counter, self.size = key, 0, 0

    def _nonce(self) -> bytes:
        return bytes(4) + self.counter.to_bytes(8, "little")

    def _count(self, size: int) -> None:
        self.counter += 1
        self.size += size
        if self.counter >= REKEY_MESSAGES or self.size >= REKEY_BYTES:
            self.key = hkdf(self.key, b"", REKEY_INFO, 32)
            self.counter = self.size = 0

    def seal(self, frame: bytes) -> bytes:
        message = ChaCha20Poly1305(self.key).encrypt(self._nonce(), frame, b"")
        self._count(len(frame))
        return message

    def open(self, message: bytes) -> bytes:
        try:
            frame = ChaCha20Poly1305(self.key).decrypt(self._nonce(), message, b"")
        except (InvalidTag, ValueError) as exc:
            raise PeerError("a message from the node failed its tag") from exc
        self._count(len(frame))
        return frame


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """Return HKDF-SHA256 output (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def node_id_of(public_key: bytes) -> str:
    """Return the node id of a raw Ed25519 public key (section 5)."""
    digest = hashlib.sha256(public_key).digest()[:20]
    return base64.b32encode(digest).decode("ascii").lower()


class Key:
    """An Ed25519 key pair and the node id it proves."""

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        self.private = private or Ed25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.node_id = node_id_of(self.public)

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte signature of ``data``."""
        return self.private.sign(data)


def pack(value) -> bytes:
    """Encode ``value`` in the canonical msgpack of section 8.2."""
    return msgpack.packb(value, use_bin_type=True)


def encode(kind: str, **fields) -> bytes:
    """Return the frame of type ``kind``: ``"t"`` first, then ``fields`` in their order."""
    return pack({"t": kind, **fields})


def record_body(
    key: Key,
    seq: int,
    *,
    links: Mapping[str, int] | Iterable[str] = (),
    apps: Mapping[str, str] | Iterable[str] = (),
    urls: Iterable[str] = (),
    name: str = "fake",
    version: str = "0",
    issued_ms: int | None = None,
    lifetime_ms: int = MAX_LIFETIME_MS,
    ext: Mapping[str, object] | None = None,
) -> tuple[bytes, bytes]:
    """Return ``(body, signature)`` of a record of ``key`` (section 8.1, 8.3).

    ``ext``: the record's extensions map, e.g. ``{"cert": packed}`` (section 8.6).
    """
    issued = int(time.time() * 1000) if issued_ms is None else issued_ms
    links = links if isinstance(links, Mapping) else dict.fromkeys(links, 1)
    apps = apps if isinstance(apps, Mapping) else dict.fromkeys(apps, "")
    body = pack([
        1, key.node_id, key.public, seq, issued, issued + lifetime_ms, name, version,
        list(urls), [[peer, links[peer]] for peer in sorted(links)],
        [[app, apps[app]] for app in sorted(apps)], dict(sorted((ext or {}).items())),
    ])  # fmt: skip
    return body, key.sign(RECORD_DOMAIN + body)


def record_frame(key: Key, seq: int, **fields) -> bytes:
    """Return a signed ``record`` frame; ``fields`` as for ``record_body``."""
    body, signature = record_body(key, seq, **fields)
    return encode("record", b=body, s=signature)


def padded_ping(size: int, n: int = 1) -> bytes:
    """Return a legal ``ping`` frame of about ``size`` bytes: its extra key holds empty arrays.

    An empty array is one byte on the wire but an object to a decoder that builds them all:
    16 MiB make 16 million lists. They come 65535 to an array, within common decoder limits.
    """
    inner = b"\xdc\xff\xff" + b"\x90" * 0xFFFF
    head = b"\x83" + pack("t") + pack("ping") + pack("n") + pack(n) + pack("pad")
    count = (size - len(head) - 3) // len(inner)
    return head + b"\xdc" + struct.pack("!H", count) + inner * count


def _mask(key: bytes, data: bytes) -> bytes:
    # RFC 6455, 5.3, as one big-integer XOR: a 16 MiB payload takes milliseconds.
    if not data:
        return b""
    pad = (key * (len(data) // 4 + 1))[: len(data)]
    xored = int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")
    return xored.to_bytes(len(data), "little")


def ws_header(length: int, mask_key: bytes, opcode: int = _BINARY, fin: bool = True) -> bytes:
    """Return a client frame header declaring ``length`` payload bytes (RFC 6455, 5.2)."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + mask_key


def _parse_frame(buffer: bytearray) -> tuple[int, bool, bytes] | None:
    """Take one whole frame off the front of ``buffer``: ``(opcode, fin, payload)``, or None."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    length, start = second & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, start = struct.unpack_from("!H", buffer, 2)[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, start = struct.unpack_from("!Q", buffer, 2)[0], 10
    mask_key = None
    if second & 0x80:  # a server must not mask; unmask anyway rather than guess
        mask_key, start = bytes(buffer[start : start + 4]), start + 4
    end = start + length
    if len(buffer) < end:
        return None
    payload = bytes(buffer[start:end])
    del buffer[:end]
    return first & 0x0F, bool(first & 0x80), _mask(mask_key, payload) if mask_key else payload


#: Peers a test opened and leaves open: tests/conftest.py closes them when the test ends.
OPENED: list[HostilePeer] = []


class HostilePeer:
    """One WebSocket connection to a node, under the test's control (see the module doc)."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        source: str | None = None,
        key: Key | None = None,
        name: str = "hostile",
        receive_buffer: int | None = None,
        timeout: float = 10.0,
        path: str = "/_xio/ws",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.key = key or Key()
        self.name = name
        self.peer_id: str | None = None
        self.frames: deque = deque(maxlen=1000)  # the newest frames the reader got
        self.counts: Counter[str] = Counter()
        self.responses: dict[int, dict] = {}  # res frames by request id
        self.bytes_received = 0
        self.bye_reason: str | None = None
        self.closed = threading.Event()
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self.sealer: Direction | None = None  # from our auth on
        self.opener: Direction | None = None  # from the node's auth on
        self.handshake_messages: list[bytes] = []  # the hello and auth we sent
        self._threads: list[threading.Thread] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer:  # set before connect: it sizes the window we offer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            if source:
                sock.bind((source, 0))
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
            self._upgrade(f"{host}:{port}", path, headers or {})
        except BaseException:
            sock.close()
            raise

    def __repr__(self) -> str:
        return f"<HostilePeer {self.key.node_id[:8]} {'closed' if self.closed.is_set() else ''}>"

    # -- the WebSocket -------------------------------------------------------------------

    def _upgrade(self, authority: str, path: str, headers: dict[str, str]) -> None:
        nonce = base64.b64encode(os.urandom(16))
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
        self._buffer = bytearray(rest)  # frames may follow the 101 in the same read
        text = head.decode("latin-1")
        status = int(text.split(" ", 2)[1])
        if status != 101:
            raise Refused(status, text)
        accept = base64.b64encode(hashlib.sha1(nonce + WS_GUID).digest()).decode()
        if accept not in text:
            raise PeerError("the 101 answer has the wrong Sec-WebSocket-Accept")

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise Closed("end of stream")
        self.bytes_received += len(chunk)
        self._buffer += chunk

    def _read_frame(self) -> tuple[int, bool, bytes]:
        # The buffer is only consumed once a whole frame is in it, so a recv that times out
        # (the reader thread's way of checking for close) loses nothing.
        while (frame := _parse_frame(self._buffer)) is None:
            self._fill()
        return frame

    def receive_message(self) -> bytes:
        """Return the next binary message, answering WebSocket pings; raise ``Closed``."""
        parts: list[bytes] = []
        while True:
            opcode, fin, payload = self._read_frame()
            if opcode == _PING:
                self._write(ws_header(len(payload), b"\0\0\0\0", _PONG) + payload)
            elif opcode == _CLOSE:
                raise Closed(f"close frame {payload[:2].hex()} {payload[2:]!r}")
            elif opcode != _PONG:
                parts.append(payload)
                if fin:
                    message = b"".join(parts)
                    return self.opener.open(message) if self.opener else message

    def receive(self) -> dict:
        """Return the next frame as a dict (bin as bytes, str as str)."""
        return msgpack.unpackb(self.receive_message(), raw=False)

    def _write(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` on the socket as it is (a bare header, half a frame...)."""
        self._write(data)

    def send_message(self, payload: bytes, *, raw: bool = False, flip_bit: int | None = None):
        """Send ``payload`` as one masked binary WebSocket message, sealed after our auth.

        ``raw``: send it as it is, never sealed; ``flip_bit``: flip that bit of the sealed
        message (counted from the first byte's lowest bit), as a tampering relay would.
        """
        with self._send_lock:  # sealing and writing in one order: the counter is the order
            if self.sealer is not None and not raw:
                payload = self.sealer.seal(payload)
            if flip_bit is not None:
                tampered = bytearray(payload)
                tampered[flip_bit // 8] ^= 1 << (flip_bit % 8)
                payload = bytes(tampered)
            mask_key = os.urandom(4)
            self.sock.sendall(ws_header(len(payload), mask_key) + _mask(mask_key, payload))

    def send_tampered(self, kind: str, *, flip_bit: int = 0, **fields) -> None:
        """Seal a frame of type ``kind`` and send it with one bit of the sealed bytes flipped."""
        self.send_message(encode(kind, **fields), flip_bit=flip_bit)

    def send(self, kind: str, **fields) -> None:
        """Send a frame of type ``kind`` with ``fields``."""
        self.send_message(encode(kind, **fields))

    def send_map(self, value: dict) -> None:
        """Send any msgpack map as a frame (e.g. with keys the protocol does not know)."""
        self.send_message(pack(value))

    # -- the protocol ----------------------------------------------------------------------

    def handshake(
        self,
        *,
        expect: str | None = None,
        caps: Iterable[str] | None = None,
        timeout_ms: int | None = None,
        extra: dict | None = None,
    ) -> dict:
        """Authenticate as the initiator (section 6); return the node's hello.

        ``extra`` is merged into the hello map (e.g. ``{"cert": packed}``, section 8.6).
        """
        nonce = os.urandom(32)
        ephemeral = X25519PrivateKey.generate()
        hello = {"t": "hello", "v": VERSION, "id": self.key.node_id, "key": self.key.public,
                 "nonce": nonce, "name": self.name, "role": "initiator"}  # fmt: skip
        if expect is not None:
            hello["expect"] = expect
        if caps is not None:
            hello["caps"] = list(caps)
        if timeout_ms is not None:
            hello["timeout"] = timeout_ms
        hello["eph"] = ephemeral.public_key().public_bytes_raw()
        hello.update(extra or {})
        self._send_handshake(pack(hello))
        theirs = self._expect("hello")
        if theirs.get("role") != "responder" or node_id_of(theirs["key"]) != theirs["id"]:
            raise PeerError(f"the node's hello does not hold up: {theirs}")
        ends = [self.key.node_id, nonce, hello["eph"], theirs["id"], theirs["nonce"],
                theirs["eph"]]  # fmt: skip
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(theirs["eph"]))
        keys = hkdf(shared, hashlib.sha256(LINK_DOMAIN + pack(ends)).digest(), KEYS_INFO, 64)

        def transcript(role: str) -> bytes:
            return LINK_DOMAIN + pack([role, *ends])

        self._send_handshake(encode("auth", sig=self.key.sign(transcript("initiator"))))
        self.sealer = Direction(keys[:32])  # every message after our auth is sealed
        auth = self._expect("auth")
        try:
            Ed25519PublicKey.from_public_bytes(theirs["key"]).verify(
                auth["sig"], transcript("responder")
            )
        except InvalidSignature as exc:
            raise PeerError("the node's auth does not verify") from exc
        self.opener = Direction(keys[32:])  # every message after the node's auth is sealed
        self.peer_id = theirs["id"]
        return theirs

    def _send_handshake(self, frame: bytes) -> None:
        self.handshake_messages.append(frame)
        self.send_message(frame)

    def _expect(self, kind: str) -> dict:
        frame = self.receive()
        if frame.get("t") == "bye":
            self.bye_reason = frame.get("reason")
            raise Closed(f"bye during the handshake: {self.bye_reason}")
        if frame.get("t") != kind:
            raise PeerError(f"expected {kind}, got {frame.get('t')}")
        return frame

    def request(self, request_id: int, dst: str, app: str, path: str = "", *,
                method: str = "GET", query: str = "", body: bytes = b"", ttl_ms: int = 10_000,
                hops: int = 16) -> None:  # fmt: skip
        """Send a ``req`` frame (section 4)."""
        self.send("req", id=request_id, dst=dst, app=app, method=method, path=path, query=query,
                  headers=[], body=body, hops=hops, ttl=ttl_ms)  # fmt: skip

    # -- background behaviour ------------------------------------------------------------

    def start_reader(self, answer_pings: bool = True) -> HostilePeer:
        """Read every frame in a thread: keep it, count it, and answer pings if asked."""
        self._spawn(self._read_loop, answer_pings)
        return self

    def _read_loop(self, answer_pings: bool) -> None:
        while not self.closed.is_set():
            try:
                frame = self.receive()
            except TimeoutError:
                continue
            except (OSError, PeerError, ValueError, msgpack.UnpackException):
                break
            kind = frame.get("t") if isinstance(frame, dict) else None
            self.counts[kind] += 1
            self.frames.append(frame)
            if kind == "ping" and answer_pings:
                try:
                    self.send("pong", n=frame.get("n", 0))
                except OSError:
                    break
            elif kind == "res":
                self.responses[frame.get("id")] = frame
            elif kind == "bye":
                self.bye_reason = frame.get("reason")
        self.closed.set()

    def keep_pinging(self, interval: float, duration: float = 60.0) -> HostilePeer:
        """Send a ping every ``interval`` seconds for at most ``duration`` (never reading)."""
        self._spawn(self._ping_loop, interval, duration)
        return self

    def _ping_loop(self, interval: float, duration: float) -> None:
        stop_at = time.monotonic() + duration
        count = 0
        while not self.closed.wait(interval) and time.monotonic() < stop_at:
            count += 1
            try:
                self.send("ping", n=count)
            except OSError:
                break

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the connection ended (needs the reader); tell whether it did."""
        return self.closed.wait(timeout)

    def close(self, bye: str | None = None, *, reset: bool = False) -> None:
        """End the connection, after a ``bye`` if given; ``reset`` sends a TCP RST."""
        if bye is not None and not self.closed.is_set():
            try:
                self.send("bye", reason=bye)
            except OSError:
                pass
        self.closed.set()
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(2.0)
