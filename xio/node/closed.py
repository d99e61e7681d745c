"""Closed mode: a node that links to, stores and routes to members of its mesh only.

Theory of operation. A node started with ``--mesh-pub FILE --cert FILE`` is in closed mode
(docs/SECURITY.md, PROTOCOL.md 8.6). ``ClosedMesh`` is the node's side of it; the verdicts are
``admission.MeshPolicy``'s (pure), and this module adds the files, the wall clock, the links
and the counts around them:

* **At start** (``load``) the authority key and our certificate are read and our certificate
  is judged as a peer would judge it: one that is not for this node id, of another authority,
  expired (or revoked) stops the start with a ``ConfigError`` naming the file (exit 2).
* **Links**: our hello carries our certificate; ``check_peer`` is the handshake's peer check.
  A refused peer is counted by reason (``counts``, shown under ``membership``) and the link
  closes with the reason as its bye.
* **Our record** carries our certificate in ``ext["cert"]`` and lists only the apps it allows
  (``advertised_apps``: one left out is logged once). The record store runs
  ``policy.check_record`` on every record that is news.
* **Revocations** come in ``revoke`` frames (sent only to peers that announced the ``revoke``
  capability) or from ``POST /_xio/mesh``. One that is news is kept, flooded on every other
  link, the revoked node's links are closed and its record dropped (routes follow); a new link
  is sent every revocation held. A forged or malformed one is counted and its link closed:
  honest members flood only what they verified, so it is the sender's doing, and a link per
  forgery is what it costs, not a signature check per frame it sends. One that is known (the
  same bytes as the one held) is not verified again.
  With a state directory the revocations held are written to ``<state_dir>/revocations``
  (armored, one after another) and read again at start: a restart forgets none.
* **A renewed certificate** for this node (``publish``) replaces ours; the record is
  re-originated at once and new links present it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from ..errors import (
    ConfigError,
    ConnectionClosed,
    HTTPError,
    QueueFull,
    RemoteProtocolError,
    StateError,
)
from ..peering import codec, membership
from ..peering.admission import CERT_EXT, MeshPolicy, certificate_of
from ..peering.codec import Hello, Revoke
from ..peering.membership import Certificate, SignedCertificate, SignedRevocation
from ..statedir import read_text, write_atomic
from .mesh_cli import load_mesh_pub, read_armor_file

__all__ = ["REVOKE_CAP", "ClosedMesh", "load_certificate"]

log = logging.getLogger("xio.node")

#: The capability a node announces in its hello when it understands ``revoke`` frames.
REVOKE_CAP = "revoke"
REVOCATIONS_FILE = "revocations"
_END_REVOCATION = f"-----END {membership.REVOCATION_LABEL}-----"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def load_certificate(path: str | Path) -> SignedCertificate:
    """Read an armored certificate file (``xio-node mesh admit --out``); ConfigError if not."""
    signed = read_armor_file(path, f"--cert {path}")
    if not isinstance(signed, SignedCertificate):
        raise ConfigError(f"--cert {path}: a revocation, not a certificate")
    return signed


class ClosedMesh:
    """This node's membership of a closed mesh; see the module docstring."""

    def __init__(
        self,
        policy: MeshPolicy,
        own: SignedCertificate,
        node_id: str,
        state_dir: str | Path | None = None,
    ) -> None:
        self.policy = policy
        self.node_id = node_id
        self._file = Path(state_dir) / REVOCATIONS_FILE if state_dir is not None else None
        self.counts: Counter[str] = Counter()  # refusals of peers and revocations, by reason
        self._own = own
        self._own_packed = membership.pack(own)
        self._left_out: set[str] = set()  # hosted apps our certificate does not allow (logged)

    @classmethod
    def load(
        cls,
        mesh_pub: str | Path | Iterable[str | Path],
        cert: str | Path | None,
        node_id: str,
        state_dir: str | Path | None = None,
    ) -> ClosedMesh:
        """Read the authority key and our certificate; refuse one that does not admit us."""
        if cert is None:
            raise ConfigError("--mesh-pub needs --cert: the certificate admitting this node")
        paths = [mesh_pub] if isinstance(mesh_pub, (str, Path)) else list(mesh_pub)
        policy = MeshPolicy([load_mesh_pub(Path(path)) for path in paths])
        signed = load_certificate(cert)
        own = signed.certificate
        try:
            policy.judge_certificate(signed, node_id, _now_ms())
        except RemoteProtocolError as exc:
            why = {
                "wrong_authority": f"it is of authority {own.authority}, not of --mesh-pub "
                f"{', '.join(map(str, paths))} ({', '.join(policy.authorities)})",
                "wrong_node": f"it admits node {own.node_id}, and this node is {node_id} "
                "(xio-node id prints it)",
                "expired": f"it expired at {_when(own.expires_ms)}: ask for a new one",
            }.get(exc.reason, str(exc))
            raise ConfigError(f"--cert {cert}: {exc.reason}: {why}") from exc
        closed = cls(policy, signed, node_id, state_dir)
        closed._read_revocations()
        return closed

    def _read_revocations(self) -> None:
        text = read_text(self._file, what="revocations file") if self._file else None
        for block in (text or "").split(_END_REVOCATION)[:-1]:
            try:
                signed = membership.read_armor(block + _END_REVOCATION)
                if isinstance(signed, SignedRevocation):
                    self.policy.accept_revocation(signed, _now_ms())
            except RemoteProtocolError as exc:  # a file edited by hand: say so, go on
                log.warning("%s: a revocation skipped: %s", self._file, exc)

    def _write_revocations(self) -> None:
        if self._file is None:
            return
        blocks = [membership.armor(membership.unpack_revocation(packed))
                  for packed in self.policy.revocations()]  # fmt: skip
        try:
            write_atomic(self._file, "".join(blocks).encode(), what="revocations file",
                         mode=0o644)  # fmt: skip
        except StateError as exc:  # held in memory and applied all the same
            log.warning("%s; the revocation is applied anyway", exc)

    # -- what this node presents ---------------------------------------------------------

    @property
    def certificate(self) -> Certificate:
        """Return the certificate this node presents."""
        return self._own.certificate

    @property
    def hello_cert(self) -> bytes:
        """Return our packed certificate, as our hello carries it."""
        return self._own_packed

    def record_ext(self) -> dict[str, bytes]:
        """Return the ``ext`` of our record: our certificate."""
        return {CERT_EXT: self._own_packed}

    def advertised_apps(self, apps: dict[str, str]) -> dict[str, str]:
        """Return the apps of ``apps`` our certificate allows; log once each one left out."""
        cert = self.certificate
        allowed = {app: doc for app, doc in apps.items() if membership.app_allowed(cert, app)}
        for app in sorted(set(apps) - set(allowed) - self._left_out):
            log.warning("app %r is hosted here but our certificate does not allow it: it is "
                        "left out of this node's record", app)  # fmt: skip
            self._left_out.add(app)
        return allowed

    def describe(self) -> dict:
        """Return what /_xio/node shows of closed mode."""
        cert = self.certificate
        return {
            "authority": self.policy.authority, "authorities": list(self.policy.authorities),
            "name": cert.name, "apps": list(cert.apps),
            "expires_ms": cert.expires_ms, "serial": cert.serial,
            "revocations": len(self.policy.revoked),
            "verified_certificates": self.policy.verifications,
        }  # fmt: skip

    # -- judging others ------------------------------------------------------------------

    def check_peer(self, hello: Hello) -> None:
        """The handshake's peer check: raise RemoteProtocolError unless the peer is a member."""
        try:
            self.policy.judge_peer(hello.cert, hello.node_id, _now_ms())
        except RemoteProtocolError as exc:
            self.counts[exc.reason] += 1
            log.info("refused a link from %s (%r): %s", hello.node_id, hello.name, exc)
            raise

    def lapsed(self, hello: Hello) -> str | None:
        """Return why an established peer is no longer a member (counted), or None."""
        try:
            self.policy.judge_peer(hello.cert, hello.node_id, _now_ms())
        except RemoteProtocolError as exc:
            self.counts[exc.reason] += 1
            log.warning("closing the link to %s (%r): %s", hello.node_id, hello.name, exc)
            return exc.reason
        return None

    def check_record(self, record, now_ms: int) -> None:
        """The record store's policy: refuse the records of non-members and unlisted apps."""
        self.policy.check_record(record, now_ms)

    def member(self, node_id: str, record) -> tuple[bool, str | None]:
        """Return ``(True, name)`` if ``node_id`` (whose record is ``record``) is a member now."""
        if node_id == self.node_id:
            packed = self._own_packed
        else:
            packed = certificate_of(record.ext) if record is not None else None
        cert = self.policy.member(packed, node_id, _now_ms())
        return (True, cert.name) if cert is not None else (False, None)

    # -- revocations ---------------------------------------------------------------------

    def revocation_frames(self) -> list[bytes]:
        """Return a ``revoke`` frame of every revocation held (for a new link)."""
        return [codec.encode(Revoke(packed)) for packed in self.policy.revocations()]

    def receive(self, data: bytes) -> SignedRevocation | None:
        """Judge a revocation that came on a link; return it if it is news.

        A bad one is counted (bad_revocation, wrong_authority, not_yet_valid) and dropped. A
        malformed or forged one (``bad_revocation``) is raised as well: no honest node sends
        one (each floods only what verified), so the link that brought it is closed, and each
        forgery costs its sender a link, not us a signature check per frame.
        """
        try:
            signed = membership.unpack_revocation(data)
            news = self.policy.accept_revocation(signed, _now_ms())
        except RemoteProtocolError as exc:
            self.counts[exc.reason] += 1
            log.info("dropped a revocation: %s", exc)
            if exc.reason == "bad_revocation":
                raise
            return None
        if news is None:
            return None
        self._write_revocations()
        return signed

    def flood(self, signed: SignedRevocation, links: Iterable, skip=None) -> int:
        """Send ``signed`` on every link of ``links`` but ``skip`` that speaks ``revoke``."""
        frame, sent = codec.encode(Revoke(membership.pack(signed))), 0
        for link in links:
            if link is skip or REVOKE_CAP not in link.session.peer_caps:
                continue
            try:
                link.send_encoded(frame)
                sent += 1
            except (QueueFull, ConnectionClosed):
                pass  # it will be sent every revocation again when it links anew
        return sent

    # -- POST /_xio/mesh -----------------------------------------------------------------

    def publish(
        self,
        text: str,
        *,
        revoke: Callable[[SignedRevocation], dict],
        renew: Callable[[], None],
    ) -> dict:
        """Apply an armored revocation or renewed certificate; raise HTTPError 400 / 422.

        ``revoke(signed)`` floods and applies a revocation that is news; ``renew()``
        re-originates our record once our certificate is replaced.
        """
        try:
            signed = membership.read_armor(text)
        except RemoteProtocolError as exc:
            raise HTTPError(400, f"not an armored certificate or revocation: {exc}") from exc
        if isinstance(signed, SignedRevocation):
            return self._publish_revocation(signed, revoke)
        return self._publish_certificate(signed, renew)

    def _publish_revocation(self, signed: SignedRevocation, revoke) -> dict:
        node = signed.revocation.node_id
        try:
            news = self.policy.accept_revocation(signed, _now_ms())
        except RemoteProtocolError as exc:
            self.counts[exc.reason] += 1
            raise HTTPError(422, f"revocation refused: {exc.reason}: {exc}") from exc
        answer = {"applied": "revocation", "node": node, "news": news is not None}
        if news is not None:
            self._write_revocations()
            answer.update(revoke(signed))
        return answer

    def _publish_certificate(self, signed: SignedCertificate, renew) -> dict:
        cert = signed.certificate
        try:
            self.policy.judge_certificate(signed, self.node_id, _now_ms())
        except RemoteProtocolError as exc:
            raise HTTPError(422, f"certificate refused: {exc.reason}: {exc}") from exc
        if not membership.newer(cert, self.certificate):
            raise HTTPError(422, f"certificate refused: serial {cert.serial} issued "
                            f"{_when(cert.issued_ms)} is not newer than the one in use "
                            f"(serial {self.certificate.serial})")  # fmt: skip
        self._own, self._own_packed = signed, membership.pack(signed)
        self._left_out.clear()
        renew()
        return {"applied": "certificate", "node": self.node_id, "name": cert.name,
                "apps": list(cert.apps), "expires_ms": cert.expires_ms}  # fmt: skip
