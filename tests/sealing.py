"""Seal what a scripted peer sends, as an honest ingress or destination would (PROTOCOL 11.1).

Every ``req`` that crosses a link carries ``src``, ``n`` and ``mac``, and every answer of a
destination a ``mac``, or it is refused before anything else a test looks at. A scripted peer
of tests/hostile.py (a ``Key``) or tests/test_link_hostile.py (an ``Identity``) that sends or
answers requests uses these helpers; its record must reach the destination first
(``introduce``), since the destination takes the peer's key from its record.
"""

from __future__ import annotations

import secrets
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xio.peering import e2e, keyfile
from xio.peering.identity import Identity

from .hostile import Key, record_frame

__all__ = [
    "identity_of",
    "introduce",
    "key_of",
    "public_key_of",
    "record_of",
    "seal_request",
    "seal_response",
]


def identity_of(key) -> Identity:
    """Return the ``Identity`` of a tests/hostile.py ``Key`` (or an ``Identity`` as it is)."""
    if isinstance(key, Identity):
        return key
    return Identity.from_seed(key.private.private_bytes_raw())


def key_of(identity: Identity) -> Key:
    """Return the tests/hostile.py ``Key`` of an ``Identity`` (to sign its record)."""
    return Key(Ed25519PrivateKey.from_private_bytes(identity.to_seed()))


def public_key_of(process) -> bytes:
    """Return the Ed25519 key of a node process, from its state folder."""
    return keyfile.load(process.state_dir / keyfile.KEY_FILE).public_key


def introduce(peer, *, links=(), apps=(), name: str = "scripted") -> None:
    """Send the record of a tests/hostile.py peer, so that nodes know its key."""
    peer.send_message(record_frame(peer.key, 1, links=links, apps=apps, name=name))


def record_of(identity: Identity, **fields) -> bytes:
    """Return a signed record frame of ``identity`` (fields as for hostile.record_body)."""
    return record_frame(key_of(identity), 1, **fields)


def seal_request(
    key,
    dst_key: bytes,
    dst: str,
    app: str,
    *,
    method: str = "GET",
    path: str = "",
    query: str = "",
    headers=(),
    body: bytes = b"",
) -> dict:
    """Return the ``src``, ``n`` and ``mac`` fields of a req from ``key`` to ``dst``."""
    identity = identity_of(key)
    nonce = int(time.time() * 1000).to_bytes(8, "big") + secrets.token_bytes(8)
    pairs = tuple((str(name), str(value)) for name, value in headers)
    mac = e2e.request_mac(
        e2e.pairwise_key(identity, dst_key), identity.node_id, dst, app, method, path, query,
        pairs, body, nonce,
    )  # fmt: skip
    return {"src": identity.node_id, "n": nonce, "mac": mac}


def seal_response(
    key, asker_key: bytes, request: dict, status: int, headers=(), body: bytes = b""
) -> bytes:
    """Return the ``mac`` of an answer from ``key`` to the decoded ``req`` ``request``."""
    pairs = tuple((str(name), str(value)) for name, value in headers)
    shared = e2e.pairwise_key(identity_of(key), asker_key)
    return e2e.response_mac(shared, request["n"], status, pairs, body)
