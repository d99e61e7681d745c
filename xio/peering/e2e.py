"""End-to-end integrity of a request across relays: pairwise keys, MACs and a replay window.

Theory of operation
-------------------
A request enters at an ingress node, crosses relays as ``req`` frames and is served at its
destination; a relay may change only ``hops``, ``ttl`` and append its id to ``X-Xio-Via``
(docs/PROTOCOL.md section 11). This module lets the ingress and the destination check that
nothing else changed on the way, and that the answer is the destination's, with no message
exchanged to agree on a key (docs/PROTOCOL.md section 11.1; what a node does with these is
``xio.peering.integrity``).

* **Key.** Both ends know each other's Ed25519 key from the signed records. Each turns its own
  Ed25519 seed into an X25519 private key (``SHA-512(seed)[:32]``, clamped) and the peer's
  Ed25519 public key into an X25519 one (``u = (1 + y) / (1 - y) mod p``), as libsodium's
  ``crypto_sign_ed25519_*_to_curve25519`` do; the X25519 shared secret goes through HKDF with
  both node ids, smaller first, so both directions derive the same 32-byte key. A peer key that
  is non-canonical or of small order is refused (the shared secret would be predictable).
* **MAC.** HMAC-SHA256 truncated to 16 bytes over a canonical, length-prefixed encoding of
  the fields no relay may change, behind a domain string that differs between a request and a
  response, so one can never stand for the other. A response MAC covers the request's nonce,
  binding the answer to its question.
* **Replay.** The ingress picks a fresh 16-byte nonce per request (its issue time, then
  random bytes: ``xio.peering.integrity``); the destination keeps ``(src, nonce)`` pairs for
  as long as a nonce is accepted, in a bounded window that fails closed when full.

Why these choices: HMAC-SHA256 against keyed BLAKE2b-128 (bench/e2e_bench.py, bench/RESULTS.md
"Issue 10: end-to-end MACs"): BLAKE2b wins below about 2 KiB of body, by at most 2 µs (1.1
against 2.2 µs at 100 B), and loses above, by 2.5x at 1 MiB (1.5 ms against 0.6 ms), because
OpenSSL's SHA-256 uses the CPU's SHA extensions and Python's BLAKE2b has no SIMD. Each request
costs four MACs (two per end), so HMAC-SHA256 caps the cost of the large answers that pages and
lists are while the small ones lose 1-2 µs out of a ~200 µs request.
16 bytes (128 bits) is enough: a forger must guess online, each guess costs a request through
the mesh, and 2^-128 per try is far beyond any number of tries; collisions do not matter for a
MAC whose key the attacker lacks.

Pure: cryptography, hashlib, hmac, struct; no clock (``now_ms`` is a parameter).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.cipher import hkdf_sha256
from xio.peering.identity import PUBLIC_KEY_LENGTH, SEED_LENGTH, _strict_point, node_id_of

__all__ = [
    "KEY_INFO",
    "MAC_LENGTH",
    "NONCE_LENGTH",
    "REQUEST_DOMAIN",
    "RESPONSE_DOMAIN",
    "STREAM_BODY_DOMAIN",
    "STREAM_HEAD_DOMAIN",
    "UPLOAD_BODY_DOMAIN",
    "UPLOAD_HEAD_DOMAIN",
    "BodyMac",
    "head_mac",
    "VIA_HEADER",
    "PairwiseKeys",
    "ReplayWindow",
    "encode_request",
    "encode_response",
    "ed25519_public_to_x25519",
    "ed25519_seed_to_x25519",
    "pairwise_key",
    "request_mac",
    "response_mac",
    "upload_head_mac",
    "verify_head",
    "verify_request",
    "verify_response",
    "verify_upload_head",
]

MAC_LENGTH = 16
NONCE_LENGTH = 16
KEY_LENGTH = 32
KEY_INFO = b"xio-e2e-v1\x00"
REQUEST_DOMAIN = b"xio-e2e-req-v1\x00"
RESPONSE_DOMAIN = b"xio-e2e-res-v1\x00"
#: A streamed answer has two MACs: its head's (status and headers) and its body's, in the end.
STREAM_HEAD_DOMAIN = b"xio-e2e-head-v1\x00"
STREAM_BODY_DOMAIN = b"xio-e2e-body-v1\x00"
#: So does a request whose body is streamed (PROTOCOL.md 4.2): its head's MAC, then its body's.
UPLOAD_HEAD_DOMAIN = b"xio-e2e-reqhead-v1\x00"
UPLOAD_BODY_DOMAIN = b"xio-e2e-reqbody-v1\x00"
#: The one header relays change (they append their id), so no MAC covers it, in any case.
VIA_HEADER = "x-xio-via"

_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
#: Bodies up to this size are joined to their head and hashed in one call; larger ones are
#: hashed in place, part by part.
_ONE_SHOT_BODY = 16 * 1024


# -- keys ------------------------------------------------------------------------------------


def ed25519_seed_to_x25519(seed: bytes) -> X25519PrivateKey:
    """Return the X25519 private key of an Ed25519 seed: ``SHA-512(seed)[:32]``, clamped."""
    if not isinstance(seed, bytes) or len(seed) != SEED_LENGTH:
        raise LocalProtocolError("an Ed25519 seed is exactly 32 bytes")
    # from_private_bytes clamps (clears bits 0-2 and 255, sets bit 254), as Ed25519 does.
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])


def ed25519_public_to_x25519(public_key: bytes) -> bytes:
    """Return the X25519 public key (Montgomery u) of a raw Ed25519 public key.

    Refuses (``LocalProtocolError``) a key whose y is not below p or is one of the small-order
    points: identity.py's strict check, the same that keys and signatures get in records.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LENGTH:
        raise LocalProtocolError("an Ed25519 public key is exactly 32 bytes")
    if not _strict_point(public_key):
        raise LocalProtocolError("the peer's Ed25519 key is non-canonical or of small order")
    y = int.from_bytes(public_key, "little") & _Y_MASK
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P  # y != 1: 1 is the identity, refused above
    return u.to_bytes(32, "little")


def pairwise_key(identity, peer_key: bytes) -> bytes:
    """Return the 32-byte key this node shares with the node of Ed25519 key ``peer_key``.

    ``identity`` is an ``xio.peering.identity.Identity``. Both ends compute the same key:
    HKDF-SHA256(X25519(ours, theirs), salt empty, info = KEY_INFO + smaller id + larger id).
    """
    peer_x = ed25519_public_to_x25519(peer_key)
    shared = ed25519_seed_to_x25519(identity.to_seed()).exchange(
        X25519PublicKey.from_public_bytes(peer_x)
    )
    if shared == bytes(32):  # a small-order u slipped through: never a key
        raise LocalProtocolError("the peer's key gives an all-zero X25519 secret")
    ids = sorted((identity.node_id, node_id_of(peer_key)))
    info = KEY_INFO + ids[0].encode("ascii") + ids[1].encode("ascii")
    return hkdf_sha256(shared, b"", info, KEY_LENGTH)


class PairwiseKeys:
    """Remember the pairwise key of recent peers (an X25519 costs ~100 µs), least recent out."""

    __slots__ = ("_identity", "_keys", "capacity")

    def __init__(self, identity, capacity: int = 4096) -> None:
        if capacity < 1:
            raise LocalProtocolError("a key cache holds at least one key")
        self._identity = identity
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self._keys)

    def key_for(self, peer_key: bytes) -> bytes:
        """Return the key shared with the node of Ed25519 key ``peer_key``, deriving it once."""
        key = self._keys.get(peer_key)
        if key is not None:
            self._keys.move_to_end(peer_key)
            return key
        key = pairwise_key(self._identity, peer_key)
        self._keys[peer_key] = key
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return key


# -- canonical encoding and MACs ---------------------------------------------------------------


_NONCE_FIELD = _U32.pack(NONCE_LENGTH)  # a nonce's length prefix, always the same


def _add_headers(parts: list[bytes], headers: Iterable[tuple[str, str]]) -> None:
    kept = [pair for pair in headers if pair[0].lower() != VIA_HEADER]
    pack, append = _U32.pack, parts.append
    append(pack(len(kept)))
    for name, value in kept:
        name_bytes, value_bytes = name.encode("utf-8"), value.encode("utf-8")
        append(pack(len(name_bytes)))
        append(name_bytes)
        append(pack(len(value_bytes)))
        append(value_bytes)


def _check_nonce(nonce: object) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_LENGTH:
        raise LocalProtocolError("an e2e nonce is exactly 16 bytes")


def _request_parts(
    src, dst, app, method, path, query, headers, body, nonce, domain: bytes = REQUEST_DOMAIN
) -> list[bytes]:
    # The encoding in three pieces (all before the body, the body, after it), so that a MAC
    # hashes a large body in place instead of copying it into one string first. Runs twice per
    # request (sealed and checked): plain appends, no helper per field.
    _check_nonce(nonce)
    parts = [domain]
    pack, append = _U32.pack, parts.append
    for text in (src, dst, app, method, path, query):
        data = text.encode("utf-8")
        append(pack(len(data)))
        append(data)
    _add_headers(parts, headers)
    append(pack(len(body)))
    return [b"".join(parts), body, _NONCE_FIELD + nonce]


def _response_parts(
    request_nonce, status, headers, body, domain: bytes = RESPONSE_DOMAIN
) -> list[bytes]:
    _check_nonce(request_nonce)
    if type(status) is not int or not 100 <= status <= 999:
        raise LocalProtocolError("an HTTP status is an int in 100..999")
    parts = [domain, _NONCE_FIELD, request_nonce, _U16.pack(status)]
    _add_headers(parts, headers)
    parts.append(_U32.pack(len(body)))
    return [b"".join(parts), body]


def encode_request(src, dst, app, method, path, query, headers, body, nonce) -> bytes:
    """Return the bytes a request MAC covers (docs/PROTOCOL.md section 11.1).

    ``REQUEST_DOMAIN``, then each field as a 4-byte big-endian length and its bytes (str in
    UTF-8): src, dst, app, method, path, query, the header count and each name and value in
    order with their case kept, ``X-Xio-Via`` left out, the body, the nonce.
    """
    return b"".join(_request_parts(src, dst, app, method, path, query, headers, body, nonce))


def encode_response(request_nonce, status, headers, body) -> bytes:
    """Return the bytes a response MAC covers: domain, nonce, 2-byte status, headers, body."""
    return b"".join(_response_parts(request_nonce, status, headers, body))


def _mac(key: bytes, parts: list[bytes]) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
        raise LocalProtocolError("an e2e key is exactly 32 bytes")
    if len(parts[1]) <= _ONE_SHOT_BODY:  # one C call: cheaper than copying nothing in three
        return hmac.digest(key, b"".join(parts), "sha256")[:MAC_LENGTH]
    hasher = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:  # hashed in place: a large body is never copied into one string
        hasher.update(part)
    return hasher.digest()[:MAC_LENGTH]


def request_mac(key, src, dst, app, method, path, query, headers, body, nonce) -> bytes:
    """Return the 16-byte MAC of a request from node ``src`` to node ``dst``."""
    return _mac(key, _request_parts(src, dst, app, method, path, query, headers, body, nonce))


def upload_head_mac(key, src, dst, app, method, path, query, headers, nonce) -> bytes:
    """Return the MAC of a request whose body is streamed: a request's encoding behind its
    own domain, with an empty body (so no relay can pass it off as a request with none)."""
    parts = _request_parts(src, dst, app, method, path, query, headers, b"", nonce,
                           UPLOAD_HEAD_DOMAIN)  # fmt: skip
    return _mac(key, parts)


def response_mac(key, request_nonce, status, headers, body) -> bytes:
    """Return the 16-byte MAC of the answer to the request of nonce ``request_nonce``."""
    return _mac(key, _response_parts(request_nonce, status, headers, body))


def head_mac(key, request_nonce, status, headers) -> bytes:
    """Return the MAC of a streamed answer's head: a response's encoding behind its own
    domain, with an empty body (so no relay can pass a head off as a whole, empty answer)."""
    return _mac(key, _response_parts(request_nonce, status, headers, b"", STREAM_HEAD_DOMAIN))


class BodyMac:
    """The MAC of a streamed body, computed piece by piece as it passes.

    It covers ``STREAM_BODY_DOMAIN`` (an answer's; ``UPLOAD_BODY_DOMAIN`` for a request's
    streamed body), the request's nonce (length-prefixed, as in a response),
    every byte of the body in order, and the body's total length as 8 bytes big-endian: pieces
    may be cut anywhere, but no byte can be added, dropped or moved.
    """

    __slots__ = ("size", "_hasher")

    def __init__(
        self, key: bytes, request_nonce: bytes, domain: bytes = STREAM_BODY_DOMAIN
    ) -> None:
        _check_nonce(request_nonce)
        if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
            raise LocalProtocolError("an e2e key is exactly 32 bytes")
        self.size = 0
        self._hasher = hmac.new(key, domain + _NONCE_FIELD + request_nonce, hashlib.sha256)

    def update(self, piece: bytes) -> None:
        self.size += len(piece)
        self._hasher.update(piece)

    def digest(self) -> bytes:
        """Return the 16-byte MAC of the body so far (the hasher is copied, not ended)."""
        hasher = self._hasher.copy()
        hasher.update(self.size.to_bytes(8, "big"))
        return hasher.digest()[:MAC_LENGTH]

    def verify(self, mac: object) -> None:
        """Raise ``RemoteProtocolError("bad_e2e_mac")`` unless ``mac`` is the body's MAC."""
        _check(self.digest(), mac, "streamed body")


def _check(expected: bytes, mac: object, what: str) -> None:
    if not isinstance(mac, bytes) or not hmac.compare_digest(expected, mac):
        raise RemoteProtocolError("bad_e2e_mac", f"the {what} MAC does not verify")


def verify_upload_head(key, src, dst, app, method, path, query, headers, nonce, mac) -> None:
    """Raise ``RemoteProtocolError("bad_e2e_mac")`` unless ``mac`` is the MAC of a request
    whose body is streamed."""
    expected = upload_head_mac(key, src, dst, app, method, path, query, headers, nonce)
    _check(expected, mac, "req")


def verify_request(key, src, dst, app, method, path, query, headers, body, nonce, mac) -> None:
    """Raise ``RemoteProtocolError("bad_e2e_mac")`` unless ``mac`` is the request's MAC."""
    _check(request_mac(key, src, dst, app, method, path, query, headers, body, nonce), mac, "req")


def verify_head(key, request_nonce, status, headers, mac) -> None:
    """Raise ``RemoteProtocolError("bad_e2e_mac")`` unless ``mac`` is a streamed head's MAC."""
    _check(head_mac(key, request_nonce, status, headers), mac, "streamed head")


def verify_response(key, request_nonce, status, headers, body, mac) -> None:
    """Raise ``RemoteProtocolError("bad_e2e_mac")`` unless ``mac`` is the response's MAC."""
    _check(response_mac(key, request_nonce, status, headers, body), mac, "res")


# -- replay ----------------------------------------------------------------------------------


class ReplayWindow:
    """Remember ``(src, nonce)`` pairs for ``horizon_ms``, at most ``capacity`` of them.

    ``horizon_ms`` must be at least as long as a nonce is accepted at all, so that a replay
    inside that time is always caught. When the window is full the oldest pair goes; if it had
    not yet reached its horizon, ``early_evictions`` counts it, telling the operator the window
    is too small for the traffic.

    With ``issued_of`` (a nonce's issue time, by its sender's clock) a pair pushed out early
    is not simply forgotten: it raises its ``src``'s *floor* to that time, and a nonce of that
    ``src`` issued at or before its floor is reported as seen, since the window can no longer
    tell. So a full window refuses what it cannot judge (a request held back longer than the
    window now spans) instead of serving a replay. Floors are kept for ``max_floors`` sources,
    the least recently raised one out first.
    """

    __slots__ = ("_floors", "_issued_of", "_seen", "capacity", "early_evictions", "horizon_ms",
                 "max_floors")  # fmt: skip

    def __init__(
        self,
        capacity: int,
        horizon_ms: int,
        issued_of: Callable[[bytes], int] | None = None,
        max_floors: int = 4096,
    ) -> None:
        if capacity < 1 or horizon_ms < 0 or max_floors < 1:
            raise LocalProtocolError("a replay window needs capacity >= 1 and horizon_ms >= 0")
        self._seen: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._floors: OrderedDict[str, int] = OrderedDict()
        self._issued_of = issued_of
        self.capacity = capacity
        self.horizon_ms = horizon_ms
        self.max_floors = max_floors
        self.early_evictions = 0

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, src: str, nonce: bytes, now_ms: int) -> bool:
        """Tell whether ``(src, nonce)`` was seen within the horizon; remember it if not."""
        seen = self._seen
        # Pairs arrive in time order (now_ms is the caller's monotonic clock): expire from the
        # front. A clock step back only keeps pairs longer.
        while seen:
            oldest = next(iter(seen.values()))
            if now_ms - oldest < self.horizon_ms:
                break
            seen.popitem(last=False)
        pair = (src, nonce)
        if pair in seen:
            return True
        issued_of, floors = self._issued_of, self._floors
        if issued_of is not None and floors and issued_of(nonce) <= floors.get(src, -1):
            return True
        seen[pair] = now_ms
        if len(seen) > self.capacity:
            # Younger than the horizon, or the loop above had dropped it.
            (old_src, old_nonce), _ = seen.popitem(last=False)
            self.early_evictions += 1
            if issued_of is not None:
                floors[old_src] = max(floors.pop(old_src, -1), issued_of(old_nonce))
                if len(floors) > self.max_floors:
                    floors.popitem(last=False)
        return False
