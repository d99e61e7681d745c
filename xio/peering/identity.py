"""Node identity: an Ed25519 key pair and the node id derived from its public key.

Theory of operation
-------------------
A node is its key. The node id is a digest of the raw 32-byte Ed25519 public key:

    node_id = lowercase(base32(SHA-256(public_key)[:20]))      # RFC 4648, no padding, 32 chars

so an id alone proves nothing, and a key proves its id (``node_id_of(key) == id``). Anyone can
check that offline; the handshake and the record parser do.

A key is kept as an unencrypted PKCS#8 PEM file (readable by ``openssl pkey``); a file holding
exactly the raw 32-byte seed is accepted too, for keys made by other tools. This module only
turns such bytes into an identity and back: reading and writing the file, in the state
directory, is ``xio.peering.keyfile``'s, so the pure core touches no disk.

Library exceptions from ``cryptography`` never leave this module: ``verify`` answers a bool and
a key that cannot be parsed becomes ``ConfigError``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from xio.errors import ConfigError, LocalProtocolError

__all__ = [
    "NODE_ID_PATTERN",
    "PUBLIC_KEY_LENGTH",
    "SIGNATURE_LENGTH",
    "Identity",
    "is_node_id",
    "node_id_of",
    "public_key_from_pem",
    "verify",
]

PUBLIC_KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
SEED_LENGTH = 32

NODE_ID_PATTERN = re.compile(r"[a-z2-7]{32}")


def node_id_of(public_key: bytes) -> str:
    """Return the node id of a raw 32-byte Ed25519 public key."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LENGTH:
        raise LocalProtocolError("node_id_of needs the 32 raw bytes of an Ed25519 public key")
    digest = hashlib.sha256(public_key).digest()[:20]
    return base64.b32encode(digest).decode("ascii").lower()


def is_node_id(value: object) -> bool:
    """Tell whether ``value`` has the shape of a node id (32 chars of ``a-z2-7``)."""
    return type(value) is str and NODE_ID_PATTERN.fullmatch(value) is not None


#: Ed25519's field prime and the y coordinates of its points of small order (1, 2, 4, 8).
_P = 2**255 - 19
_Y_ORDER_8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y_ORDER_8, _P - _Y_ORDER_8})
_Y_MASK = (1 << 255) - 1


def _strict_point(encoded: bytes) -> bool:
    """Tell whether a point encoding (a key, or a signature's R) may sign (PROTOCOL.md §6).

    OpenSSL accepts a small-order key (the identity "signs" every message with R = identity,
    S = 0), a non-canonical key (y >= p) and a small-order R; the document refuses all three,
    so that every implementation gives every signature the same verdict.
    """
    y = int.from_bytes(encoded[:32], "little") & _Y_MASK
    return y < _P and y not in _SMALL_ORDER_Y


@functools.lru_cache(maxsize=4096)
def _public_key_object(public_key: bytes) -> Ed25519PublicKey:
    # Loading a key costs a few µs; records of the same origin are verified again and again.
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Tell whether ``signature`` is a valid Ed25519 signature of ``data`` by ``public_key``.

    Any malformed input (wrong lengths, wrong types, a key that is not a curve point) answers
    False: no exception from the crypto library escapes. What is valid is pinned in
    docs/PROTOCOL.md §6: S < L, canonical key, neither key nor R of small order.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LENGTH:
        return False
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
        return False
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return False
    if not (_strict_point(public_key) and _strict_point(signature)):  # signature[:32] is R
        return False
    try:
        _public_key_object(public_key).verify(signature, bytes(data))
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def public_key_from_pem(data: bytes, where: str = "public key") -> bytes:
    """Return the raw 32 bytes of a PEM SubjectPublicKeyInfo Ed25519 key (``Identity.public_pem``)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where} is not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Identity:
    """An Ed25519 private key and the node id it proves."""

    __slots__ = ("_private", "public_key", "node_id")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.node_id: str = node_id_of(self.public_key)

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id!r})"

    @classmethod
    def generate(cls) -> Identity:
        """Create a new random identity."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Build the identity of a raw 32-byte Ed25519 seed (private key)."""
        if not isinstance(seed, bytes) or len(seed) != SEED_LENGTH:
            raise LocalProtocolError("an Ed25519 seed is exactly 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_key_bytes(cls, data: bytes, where: str = "node key") -> Identity:
        """Build the identity of a key file's bytes: PKCS#8 PEM, or a raw 32-byte seed.

        ``where`` names the key in the ``ConfigError`` raised for anything else.
        """
        if len(data) == SEED_LENGTH:
            return cls.from_seed(data)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{where} is not an unencrypted PKCS#8 PEM key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{where} is not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> bytes:
        """Return the private key as an unencrypted PKCS#8 PEM file's bytes."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def to_seed(self) -> bytes:
        """Return the 32-byte private seed (for key conversion in memory, never to send)."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """Return the public key as a PEM SubjectPublicKeyInfo file's bytes."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``data``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(f"can only sign bytes, not {type(data).__name__}")
        return self._private.sign(bytes(data))
