"""Who may be part of a closed mesh: the policy a node in closed mode applies, pure.

Theory of operation
-------------------
A closed mesh has one authority (``membership``): a node is a member while it holds a
certificate of that authority that admits its own id, has not expired and is not revoked.
(While the authority key is rotated, nodes trust two: see ``MeshPolicy``.)
``MeshPolicy`` applies that rule in the three places a node meets other nodes:

* **links**: the peer's hello carries its packed certificate (``cert``); ``judge_peer`` gives the
  verdict, and a link whose peer is not a member is refused with the reason as its bye;
* **records**: a record carries its origin's certificate in ``ext["cert"]``; ``check_record``
  refuses a record whose origin is not a member, whoever relayed it, and a record that claims an
  app its certificate does not list (``app_not_allowed``). The record store calls it (its
  ``policy``) before it spends anything on a record;
* **revocations**: ``accept_revocation`` judges one (``judge_revocation``) and keeps it, at most
  ``max_revocations`` of them (the oldest by ``issued_ms`` goes first: its node's certificates
  have most likely expired by then); ``revocations`` lists them, packed, for a new link.

Verifying a certificate is an Ed25519 verification; a record is refreshed every third of its
lifetime and arrives once per neighbour, so the certificates whose authority and signature
verified are cached by their packed bytes (``cache_size`` of them, least recently used out),
and only the cheap checks (node, time, revocation) run again. Reasons are those of
``reasons.MEMBERSHIP``, in the order of ``membership.judge_certificate``. Times are passed in
(``now_ms``); nothing here reads a clock, a file or a socket.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.identity import PUBLIC_KEY_LENGTH, node_id_of, verify
from xio.peering.membership import (
    CERT_DOMAIN,
    Certificate,
    Revocation,
    SignedCertificate,
    SignedRevocation,
    app_allowed,
    judge_revocation,
    judge_validity,
    note_revocation,
    pack,
    unpack_certificate,
    unpack_revocation,
)
from xio.peering.reasons import MEMBERSHIP_REASONS

__all__ = ["CERT_EXT", "MEMBERSHIP_REASONS", "MeshPolicy", "certificate_of"]

#: The key of a record's ``ext`` map that holds its origin's packed certificate.
CERT_EXT = "cert"
MAX_REVOCATIONS = 4096
CACHE_SIZE = 4096


def certificate_of(ext: Iterable[tuple[str, object]] | Mapping[str, object]) -> bytes | None:
    """Return the packed certificate in a record's ``ext``, or None (absent or not bytes)."""
    items = ext.items() if isinstance(ext, Mapping) else ext
    for key, value in items:
        if key == CERT_EXT:
            return value if type(value) is bytes else None
    return None


class MeshPolicy:
    """Judge certificates, records and revocations against the authority keys we trust.

    Usually one key. While the authority key is being rotated a node trusts the old and the new
    one (``authority_key`` may be a sequence of keys, the first being this node's own
    authority): a certificate or revocation of either is judged by its own authority's key.
    """

    def __init__(
        self,
        authority_key: bytes | Iterable[bytes],
        *,
        max_revocations: int = MAX_REVOCATIONS,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        keys = [authority_key] if type(authority_key) is bytes else list(authority_key)
        if not keys or any(type(k) is not bytes or len(k) != PUBLIC_KEY_LENGTH for k in keys):
            raise LocalProtocolError("an authority key is 32 raw bytes")
        if max_revocations < 1 or cache_size < 1:
            raise LocalProtocolError("max_revocations and cache_size must be positive")
        self.authority_key = keys[0]
        self.authority = node_id_of(keys[0])
        #: Every authority trusted, by id: the first is ours, the others are being rotated.
        self.authorities = {node_id_of(key): key for key in keys}
        self.max_revocations = max_revocations
        self.cache_size = cache_size
        self.revoked: dict[str, int] = {}  # node id -> issued_ms of its newest revocation
        self._revocations: dict[str, bytes] = {}  # node id -> that revocation, packed
        self._verified: OrderedDict[bytes, Certificate] = OrderedDict()
        self.verifications = 0  # signatures checked (the cache's misses), for tests and status

    # -- certificates --------------------------------------------------------------------

    def judge_certificate(
        self, packed: bytes | SignedCertificate | None, node_id: str | None, now_ms: int
    ) -> Certificate:
        """Return the certificate if it admits ``node_id`` now, or raise RemoteProtocolError.

        The reasons and their order are those of ``membership.judge_certificate``.
        """
        if packed is None or packed == b"":
            raise RemoteProtocolError("no_certificate", "no certificate presented")
        if isinstance(packed, SignedCertificate):
            packed = pack(packed)
        cert = self._verified.get(packed)
        if cert is None:
            cert = self._verify(packed)
        else:
            self._verified.move_to_end(packed)
        return judge_validity(cert, now_ms, self.revoked, node_id=node_id)

    def _verify(self, packed: bytes) -> Certificate:
        signed = unpack_certificate(packed)  # bad_certificate
        cert = signed.certificate
        key = self.authorities.get(cert.authority)
        if key is None:
            raise RemoteProtocolError(
                "wrong_authority",
                f"certificate of authority {cert.authority}, not {' or '.join(self.authorities)}",
            )
        self.verifications += 1
        if not verify(key, signed.signature, CERT_DOMAIN + signed.body):
            raise RemoteProtocolError(
                "bad_certificate", f"signature of the certificate of {cert.node_id} does not verify"
            )
        self._verified[packed] = cert
        if len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)
        return cert

    def judge_peer(self, packed: bytes | None, node_id: str, now_ms: int) -> Certificate:
        """Return the certificate a peer presented in its hello if it admits that peer now."""
        return self.judge_certificate(packed, node_id, now_ms)

    def check_record(self, record, now_ms: int) -> Certificate:
        """Return the certificate of a record's origin, or raise RemoteProtocolError.

        ``record`` is a ``records.Record``: its origin must be a member, and every app it
        claims must be listed in its certificate (``app_not_allowed``).
        """
        cert = self.judge_certificate(certificate_of(record.ext), record.node_id, now_ms)
        for app, _ in record.apps:
            if not app_allowed(cert, app):
                raise RemoteProtocolError(
                    "app_not_allowed", f"{record.node_id} may not host {app!r:.70}"
                )
        return cert

    def member(self, packed: bytes | None, node_id: str, now_ms: int) -> Certificate | None:
        """Return the certificate that makes ``node_id`` a member now, or None."""
        try:
            return self.judge_certificate(packed, node_id, now_ms)
        except RemoteProtocolError:
            return None

    # -- revocations ---------------------------------------------------------------------

    def accept_revocation(self, packed: bytes | SignedRevocation, now_ms: int) -> Revocation | None:
        """Judge a revocation and keep it; return it if it is news, None if known already.

        Raise RemoteProtocolError (bad_revocation, wrong_authority, not_yet_valid) for one
        that our authority did not sign.
        """
        signed = packed if isinstance(packed, SignedRevocation) else unpack_revocation(packed)
        if self._revocations.get(signed.revocation.node_id) == pack(signed):
            return None  # the one we hold, again: known before its signature costs anything
        key = self.authorities.get(signed.revocation.authority, self.authority_key)
        revocation = judge_revocation(signed, key, now_ms)  # another authority: wrong_authority
        if not note_revocation(self.revoked, revocation):
            return None
        self._revocations[revocation.node_id] = pack(signed)
        while len(self.revoked) > self.max_revocations:
            oldest = min(self.revoked, key=self.revoked.__getitem__)
            del self.revoked[oldest], self._revocations[oldest]
        return revocation

    def revocations(self) -> list[bytes]:
        """Return every revocation held, packed, oldest first (as sent to a new link)."""
        order = sorted(self.revoked, key=lambda node: (self.revoked[node], node))
        return [self._revocations[node] for node in order]

    def is_revoked(self, node_id: str) -> bool:
        """Tell whether a revocation of ``node_id`` is held (of some certificate, at least)."""
        return node_id in self.revoked
