"""Link encryption (protocol version 2): key exchange and frame ciphers.

Theory of operation
-------------------
Each end of a link makes a fresh X25519 key (``EphemeralKey``) for this link only and sends its
public half in its ``hello`` next to its nonce. Both ends then know the *link transcript*: both
node ids, both nonces and both ephemeral public keys. Each signs it with its node key in
``auth`` (``transcript_v2``, the v1 transcript with the ephemeral keys added), so a relay cannot
swap an ephemeral key without breaking a signature, and both derive the link keys from it
(``derive_link_keys``)::

    shared = X25519(own_ephemeral, peer_ephemeral)        # all zero: bad_key_exchange
    salt   = transcript_hash(i_id, i_nonce, i_eph, r_id, r_nonce, r_eph)
    okm    = HKDF-SHA256(ikm=shared, salt=salt, info=b"xio-link-keys-v2", length=64)
    k_i2r, k_r2i = okm[:32], okm[32:]

The ephemeral private keys are dropped once the keys are derived, so a node key stolen later
cannot decrypt a recorded link (forward secrecy); the signatures over the transcript tie the
ephemeral keys to the node keys (authentication). This is Noise's XX idea, simplified because
the node keys are Ed25519 signing keys exchanged in the clear in ``hello``.

Each direction is one ``CipherState``: ChaCha20-Poly1305 with a 32-byte key, the nonce
``4 zero bytes + counter as 8-byte little-endian``, the counter starting at 0 and going up by
one per message, empty associated data. Frames go in order over one TCP connection, so the
receiver needs no window (WireGuard has one because UDP reorders): a replayed, reordered,
dropped or altered message fails its tag, ``bad_frame_mac``, and the link closes. After
``rekey_messages`` messages or ``rekey_bytes`` plaintext bytes, whichever comes first, both
ends replace the key by ``HKDF-SHA256(ikm=k, salt=b"", info=b"xio-link-rekey-v2", 32)`` and
the counter goes back to 0; the old key is forgotten, so a key taken from memory opens no
earlier traffic of the link. The bounds are counted on both sides from the plaintext sizes,
so no rekey message is needed. With the bound at most 2**64 messages a counter never wraps.

Large frames: the link session admits a large message from its first bytes (``"t"`` and
``"id"``) before it has it all. ``ReceiveCipher.peek(prefix)`` decrypts those first bytes
*without* authenticating them (ChaCha20 keystream from block 1, as RFC 8439's AEAD uses for
the plaintext) and changes no state; the message is authenticated by ``open`` once whole, or
read past with ``skip(size)``, which advances the state exactly as ``open`` would. A peeked
prefix is attacker-controlled until then: use it to refuse, never to act.

Use (``handshake.Handshake`` and ``session.LinkSession`` do exactly this)::

    eph = EphemeralKey()                        # per link; eph.public goes in hello["eph"]
    # ... peer hello received; sign transcript_v2(own_role, ...) in auth, verify the peer's ...
    salt = transcript_hash(i_id, i_nonce, i_eph, r_id, r_nonce, r_eph)
    link = derive_link_keys(eph, peer_eph, salt, own_role)   # may raise bad_key_exchange
    wire = link.send.seal(encode(frame))        # every frame after our own auth, in send order
    frame = decode(link.receive.open(wire))     # every message after the peer's auth
    link.receive.peek(prefix); link.receive.skip(size)       # AdmitRequest / Discarded

A ``RemoteProtocolError`` from ``open`` leaves that direction spent (``LocalProtocolError`` if
used again); the sending direction still works for a sealed ``bye``.

Pure: only ``cryptography``, hashlib, hmac, struct and msgpack (for the canonical transcript).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xio.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "KEY_INFO",
    "KEY_LENGTH",
    "LINK_DOMAIN_V2",
    "REKEY_BYTES",
    "REKEY_INFO",
    "REKEY_MESSAGES",
    "TAG_LENGTH",
    "CipherState",
    "EphemeralKey",
    "LinkCiphers",
    "ReceiveCipher",
    "SendCipher",
    "derive_link_keys",
    "hkdf_sha256",
    "transcript_hash",
    "transcript_v2",
]

LINK_DOMAIN_V2 = b"xio-link-v2\x00"
KEY_INFO = b"xio-link-keys-v2"
REKEY_INFO = b"xio-link-rekey-v2"
KEY_LENGTH = 32
TAG_LENGTH = 16
REKEY_MESSAGES = 2**16
REKEY_BYTES = 2**30
MAX_MESSAGES = 2**64  # nonces per key: the counter is 8 bytes

_NONCE = struct.Struct("<4xQ")  # 4 zero bytes + 8-byte little-endian counter
_BLOCK_ONE = struct.pack("<I", 1)  # ChaCha20 block counter of the AEAD's first plaintext block
_ZERO_SECRET = bytes(32)


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """Return HKDF-SHA256 (RFC 5869) output; an empty salt means 32 zero bytes, as there."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _role(role: object) -> str:
    return role.value if isinstance(role, enum.Enum) else str(role)


def transcript_v2(
    signer_role: object,
    initiator_id: str,
    initiator_nonce: bytes,
    initiator_ephemeral: bytes,
    responder_id: str,
    responder_nonce: bytes,
    responder_ephemeral: bytes,
) -> bytes:
    """Return the bytes the ``signer_role`` end signs in its version 2 ``auth``."""
    fields = [
        _role(signer_role),
        initiator_id,
        initiator_nonce,
        initiator_ephemeral,
        responder_id,
        responder_nonce,
        responder_ephemeral,
    ]
    return LINK_DOMAIN_V2 + msgpack.packb(fields, use_bin_type=True)


def transcript_hash(
    initiator_id: str,
    initiator_nonce: bytes,
    initiator_ephemeral: bytes,
    responder_id: str,
    responder_nonce: bytes,
    responder_ephemeral: bytes,
) -> bytes:
    """Return the HKDF salt: SHA-256 of the domain and the six fields without the role.

    Both ends compute the same value (no role in it). A six-element array never equals the
    seven-element array of a signed transcript, so the two cannot stand for each other.
    """
    fields = [
        initiator_id,
        initiator_nonce,
        initiator_ephemeral,
        responder_id,
        responder_nonce,
        responder_ephemeral,
    ]
    return hashlib.sha256(LINK_DOMAIN_V2 + msgpack.packb(fields, use_bin_type=True)).digest()


class EphemeralKey:
    """A fresh X25519 key for one link; ``public`` is its 32-byte public half."""

    __slots__ = ("_private", "public")

    def __init__(self, private: bytes | None = None) -> None:
        # ``private`` (32 bytes) is for test vectors only: a link always makes a fresh one.
        key = (
            X25519PrivateKey.generate()
            if private is None
            else X25519PrivateKey.from_private_bytes(private)
        )
        self._private: X25519PrivateKey | None = key
        self.public: bytes = key.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return f"EphemeralKey(public={self.public.hex()[:16]}…)"

    def exchange(self, peer_public: bytes) -> bytes:
        """Return the X25519 shared secret with ``peer_public``, refusing a small-order key."""
        if self._private is None:
            raise LocalProtocolError("this ephemeral key was used already")
        if not isinstance(peer_public, bytes) or len(peer_public) != 32:
            raise RemoteProtocolError("bad_key_exchange", "an ephemeral key is 32 bytes")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # cryptography refuses the all-zero result itself
            shared = _ZERO_SECRET
        if hmac.compare_digest(shared, _ZERO_SECRET):
            raise RemoteProtocolError("bad_key_exchange", "the peer's key has a small order")
        return shared

    def forget(self) -> None:
        """Drop the private key: what makes the link's keys unrecoverable later."""
        self._private = None


class CipherState:
    """One direction of a link: its key, message counter and rekey bounds."""

    __slots__ = ("_aead", "_bounds", "_key", "bytes_since_rekey", "counter", "failed", "rekeys")

    def __init__(
        self, key: bytes, *, rekey_messages: int = REKEY_MESSAGES, rekey_bytes: int = REKEY_BYTES
    ) -> None:
        if len(key) != KEY_LENGTH:
            raise ValueError("a link key is 32 bytes")
        if not 1 <= rekey_messages <= MAX_MESSAGES:
            raise ValueError("rekey_messages must be in 1..2**64: the counter may not wrap")
        if rekey_bytes < 1:
            raise ValueError("rekey_bytes must be positive")
        self._set_key(key)
        self._bounds = (rekey_messages, rekey_bytes)
        self.failed = False
        self.rekeys = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(counter={self.counter}, rekeys={self.rekeys})"

    def _set_key(self, key: bytes) -> None:
        self._key = key
        self._aead = ChaCha20Poly1305(key)  # one object per key: the hot path reuses it
        self.counter = 0
        self.bytes_since_rekey = 0

    def _advance(self, size: int) -> None:
        self.counter += 1
        self.bytes_since_rekey += size
        messages, nbytes = self._bounds
        if self.counter >= messages or self.bytes_since_rekey >= nbytes:
            self._set_key(hkdf_sha256(self._key, b"", REKEY_INFO, KEY_LENGTH))
            self.rekeys += 1

    def _nonce(self) -> bytes:
        if self.failed:
            raise LocalProtocolError(f"{type(self).__name__} used after a failure")
        if self.counter >= MAX_MESSAGES:  # unreachable with the bound checked above
            raise LocalProtocolError("message counter would wrap")
        return _NONCE.pack(self.counter)


class SendCipher(CipherState):
    """The sending direction: ``seal`` each frame in the order it goes on the wire."""

    __slots__ = ()

    def seal(self, frame: bytes) -> bytes:
        """Return ``frame`` encrypted, followed by its 16-byte tag; the counter moves on."""
        sealed = self._aead.encrypt(self._nonce(), frame, None)
        self._advance(len(frame))
        return sealed


class ReceiveCipher(CipherState):
    """The receiving direction: ``open`` (or ``skip``) each message in the order it came."""

    __slots__ = ()

    def open(self, message: bytes) -> bytes:
        """Return the frame sealed in ``message``; ``bad_frame_mac`` if its tag fails."""
        nonce = self._nonce()
        try:
            frame = self._aead.decrypt(nonce, message, None)
        except (InvalidTag, ValueError, TypeError):
            self.failed = True  # the link closes; nothing may be opened after a forgery
            raise RemoteProtocolError("bad_frame_mac", "a frame failed its tag") from None
        self._advance(len(frame))
        return frame

    def skip(self, size: int) -> None:
        """Read past a sealed message of ``size`` bytes unopened, as ``open`` would advance."""
        self._nonce()
        if size < TAG_LENGTH:
            self.failed = True
            raise RemoteProtocolError("bad_frame_mac", "a frame shorter than its tag")
        self._advance(size - TAG_LENGTH)

    def peek(self, prefix: bytes) -> bytes:
        """Return the *unauthenticated* plaintext of the first bytes of the next message.

        ``prefix`` must not reach into the tag (the last 16 bytes); the state does not change.
        """
        nonce = _BLOCK_ONE + self._nonce()
        return Cipher(algorithms.ChaCha20(self._key, nonce), mode=None).encryptor().update(prefix)


@dataclass(frozen=True, slots=True)
class LinkCiphers:
    """The two directions of one end of a link."""

    send: SendCipher
    receive: ReceiveCipher


def derive_link_keys(
    own_ephemeral: EphemeralKey,
    peer_public: bytes,
    transcript_hash: bytes,
    role: object,
    *,
    rekey_messages: int = REKEY_MESSAGES,
    rekey_bytes: int = REKEY_BYTES,
) -> LinkCiphers:
    """Return this end's ciphers; ``role`` is ``"initiator"`` or ``"responder"`` (or a Role).

    Forgets ``own_ephemeral``'s private key. Raises ``RemoteProtocolError("bad_key_exchange")``
    for a small-order peer key.
    """
    side = _role(role)
    if side not in ("initiator", "responder"):
        raise LocalProtocolError(f"no such role {side!r}")
    try:
        shared = own_ephemeral.exchange(peer_public)
    finally:
        own_ephemeral.forget()  # used once, whatever the outcome
    okm = hkdf_sha256(shared, transcript_hash, KEY_INFO, 2 * KEY_LENGTH)
    i2r, r2i = okm[:KEY_LENGTH], okm[KEY_LENGTH:]
    send, receive = (i2r, r2i) if side == "initiator" else (r2i, i2r)
    bounds = {"rekey_messages": rekey_messages, "rekey_bytes": rekey_bytes}
    return LinkCiphers(SendCipher(send, **bounds), ReceiveCipher(receive, **bounds))
