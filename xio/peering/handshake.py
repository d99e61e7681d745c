"""The link handshake as a pure state machine: frames in, frames out, no IO.

Theory of operation
-------------------
Both ends send ``hello`` as soon as the WebSocket is open (neither waits for the other). A hello
carries the protocol version, node id, public key, a fresh 32-byte nonce, a display name, the
sender's role on this link (``initiator`` opened the WebSocket, ``responder`` accepted it), the
public half of a fresh X25519 key made for this link alone (``eph``, version 2) and,
optionally, the id the sender expects the other end to have, the optional features it speaks
(``caps``) and its link timeout (``timeout_ms``), which the link session uses.

On the peer's hello each side checks, in order: version (``bad_version``: only version 2, every
link is encrypted), that the roles differ (``role_conflict``), ``node_id_of(key) == id``
(``id_mismatch``), that the peer is not itself (``self_link``), the pins
(``pinned_id_mismatch``: the peer is not the node we expected, or the peer expected a node that
is not us), that it brought an ``eph`` (``bad_key_exchange``). Then the caller's ``peer_check``,
if given, judges the hello (a closed mesh judges the ``cert`` it carries) and raises
RemoteProtocolError(reason) to refuse the peer. It derives the link keys from both ephemeral
keys and the transcript (``cipher.derive_link_keys``; an ``eph`` of small order is
``bad_key_exchange``), then signs the version 2 transcript

    b"xio-link-v2\\x00" + msgpack([signer_role, initiator_id, initiator_nonce, initiator_eph,
                                   responder_id, responder_nonce, responder_eph])

and sends it in ``auth``. Both nonces make the signature fresh for this link only, so an auth
recorded on another link never verifies here (``bad_signature``); the signer's role inside the
signed bytes stops a peer from reflecting our own signature back at us; both ephemeral keys in
it stop a relay from swapping one. When the peer's auth verifies against the key of its hello
(``bad_signature`` otherwise) the link is ESTABLISHED. Any other frame before that is
``unexpected_frame``; a ``bye`` is reported as ``peer_bye`` with the peer's reason.

``ciphers`` (``cipher.LinkCiphers``) is set once our auth is made: the session seals what it
sends after our auth with ``ciphers.send`` and opens what the peer sends after *its* auth (so
only once ESTABLISHED) with ``ciphers.receive``. Hello and auth are never sealed.

States::

    IDLE --start()--> AWAIT_HELLO --peer hello / send auth--> AWAIT_AUTH --peer auth--> ESTABLISHED
                  any RemoteProtocolError -----------------------------------------> FAILED

Misuse by the caller (``receive`` before ``start``, ``start`` twice, anything after FAILED)
raises ``LocalProtocolError`` naming the event and the state. After a ``RemoteProtocolError``
the caller should send ``Bye(exc.reason)`` and close the link. Timeouts belong to the caller.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable

import msgpack

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.cipher import (
    EphemeralKey,
    LinkCiphers,
    derive_link_keys,
    transcript_hash,
    transcript_v2,
)
from xio.peering.codec import NONCE_LENGTH, PROTOCOL_VERSION, Auth, Bye, Hello, Message
from xio.peering.identity import Identity, is_node_id, node_id_of, verify
from xio.peering.reasons import HANDSHAKE_REASONS

__all__ = [
    "HANDSHAKE_REASONS",
    "LINK_DOMAIN",
    "SUPPORTED_VERSIONS",
    "Handshake",
    "HandshakeState",
    "Role",
    "transcript",
    "transcript_v2",
]

LINK_DOMAIN = b"xio-link-v1\x00"
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})


class Role(str, enum.Enum):
    """Which end of the link this side is."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


class HandshakeState(enum.Enum):
    """Where a handshake stands."""

    IDLE = "idle"
    AWAIT_HELLO = "await_hello"
    AWAIT_AUTH = "await_auth"
    ESTABLISHED = "established"
    FAILED = "failed"


def transcript(
    signer_role: Role | str,
    initiator_id: str,
    initiator_nonce: bytes,
    responder_id: str,
    responder_nonce: bytes,
) -> bytes:
    """Return the bytes a version 1 ``auth`` signed (no longer accepted; see ``transcript_v2``)."""
    role = signer_role.value if isinstance(signer_role, Role) else signer_role
    fields = [role, initiator_id, initiator_nonce, responder_id, responder_nonce]
    return LINK_DOMAIN + msgpack.packb(fields, use_bin_type=True)


class Handshake:
    """Authenticate one link end, sans IO: feed it frames, send what it returns."""

    def __init__(
        self,
        identity: Identity,
        role: Role | str,
        name: str = "",
        expected_peer_id: str | None = None,
        nonce: bytes | None = None,
        *,
        caps: tuple[str, ...] | None = None,
        timeout_ms: int | None = None,
        ephemeral: EphemeralKey | None = None,
        cert: bytes | None = None,
        peer_check: Callable[[Hello], None] | None = None,
    ) -> None:
        self.identity = identity
        self.caps = caps
        self.timeout_ms = timeout_ms
        self.cert = cert  # our packed membership certificate, sent in our hello
        self.peer_check = peer_check  # raises RemoteProtocolError(reason) to refuse the peer
        try:
            self.role = Role(role)
        except ValueError:
            raise LocalProtocolError(f"role must be one of {[r.value for r in Role]}") from None
        self.name = name
        if expected_peer_id is not None and not is_node_id(expected_peer_id):
            raise LocalProtocolError(f"expected_peer_id {expected_peer_id!r} is not a node id")
        self.expected_peer_id = expected_peer_id
        self.nonce = secrets.token_bytes(NONCE_LENGTH) if nonce is None else nonce
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_LENGTH:
            raise LocalProtocolError(f"a handshake nonce is {NONCE_LENGTH} bytes")
        # ``ephemeral`` is given by test vectors only: a link always makes a fresh key.
        self.ephemeral = EphemeralKey() if ephemeral is None else ephemeral
        self.eph = self.ephemeral.public
        self.state = HandshakeState.IDLE
        self.peer_hello: Hello | None = None
        self.ciphers: LinkCiphers | None = None  # set with our auth: see the module docstring

    def __repr__(self) -> str:
        return f"Handshake({self.role.value}, {self.state.name}, peer={self.peer_id})"

    @property
    def established(self) -> bool:
        """Tell whether the peer has proved its key."""
        return self.state is HandshakeState.ESTABLISHED

    @property
    def peer_id(self) -> str | None:
        """Return the peer's node id, once its hello has been accepted."""
        return self.peer_hello.node_id if self.peer_hello else None

    @property
    def peer_key(self) -> bytes | None:
        """Return the peer's raw public key, once its hello has been accepted."""
        return self.peer_hello.public_key if self.peer_hello else None

    @property
    def peer_name(self) -> str | None:
        """Return the name the peer gave itself, once its hello has been accepted."""
        return self.peer_hello.name if self.peer_hello else None

    @property
    def link_key(self) -> tuple[str, bytes]:
        """Return ``(initiator_id, initiator_nonce)``, which names this link for ``keep_link``."""
        if self.peer_hello is None:
            raise LocalProtocolError(f"link_key asked in state {self.state.name}")
        if self.role is Role.INITIATOR:
            return self.identity.node_id, self.nonce
        return self.peer_hello.node_id, self.peer_hello.nonce

    def start(self) -> list[Message]:
        """Return the frames to send as soon as the link opens (our hello)."""
        if self.state is not HandshakeState.IDLE:
            raise LocalProtocolError(f"cannot start a handshake in state {self.state.name}")
        self.state = HandshakeState.AWAIT_HELLO
        hello = Hello(
            version=PROTOCOL_VERSION,
            node_id=self.identity.node_id,
            public_key=self.identity.public_key,
            nonce=self.nonce,
            name=self.name,
            role=self.role.value,
            expect=self.expected_peer_id,
            caps=self.caps,
            timeout_ms=self.timeout_ms,
            eph=self.eph,
            cert=self.cert,
        )
        return [hello]

    def receive(self, message: Message) -> list[Message]:
        """Take one frame from the peer and return the frames to send in answer."""
        state = self.state
        kind = getattr(message, "TYPE", type(message).__name__)
        if state in (HandshakeState.IDLE, HandshakeState.FAILED):
            raise LocalProtocolError(f"cannot receive {kind} in state {state.name}")
        if state is HandshakeState.ESTABLISHED and not isinstance(message, (Hello, Auth)):
            raise LocalProtocolError(f"handshake is done; {kind} belongs to the link")
        try:
            if isinstance(message, Bye):
                raise RemoteProtocolError(
                    "peer_bye", f"peer closed in {state.name}: {message.reason}"
                )
            if isinstance(message, Hello) and state is HandshakeState.AWAIT_HELLO:
                return self._on_hello(message)
            if isinstance(message, Auth) and state is HandshakeState.AWAIT_AUTH:
                return self._on_auth(message)
            raise RemoteProtocolError("unexpected_frame", f"{kind} in state {state.name}")
        except RemoteProtocolError:
            self.state = HandshakeState.FAILED
            raise

    def _on_hello(self, hello: Hello) -> list[Message]:
        own_id = self.identity.node_id
        if hello.version not in SUPPORTED_VERSIONS:
            raise RemoteProtocolError(
                "bad_version",
                f"peer speaks v{hello.version}, we speak {sorted(SUPPORTED_VERSIONS)}",
            )
        if hello.role == self.role.value:
            raise RemoteProtocolError("role_conflict", f"both ends say they are {hello.role}")
        if node_id_of(hello.public_key) != hello.node_id:
            raise RemoteProtocolError("id_mismatch", f"key does not hash to {hello.node_id}")
        if hello.node_id == own_id:
            raise RemoteProtocolError("self_link", "the peer is this node")
        if self.expected_peer_id is not None and hello.node_id != self.expected_peer_id:
            raise RemoteProtocolError(
                "pinned_id_mismatch", f"expected {self.expected_peer_id}, got {hello.node_id}"
            )
        if hello.expect is not None and hello.expect != own_id:
            raise RemoteProtocolError(
                "pinned_id_mismatch", f"peer expected {hello.expect}, we are {own_id}"
            )
        if hello.eph is None:
            raise RemoteProtocolError("bad_key_exchange", "a version 2 hello needs an eph")
        if self.peer_check is not None:
            self.peer_check(hello)
        self.peer_hello = hello
        initiator, responder = self._ends()
        salt = transcript_hash(*initiator, *responder)
        self.ciphers = derive_link_keys(self.ephemeral, hello.eph, salt, self.role)
        self.state = HandshakeState.AWAIT_AUTH
        return [Auth(self.identity.sign(self._transcript(self.role)))]

    def _on_auth(self, auth: Auth) -> list[Message]:
        peer_role = Role.RESPONDER if self.role is Role.INITIATOR else Role.INITIATOR
        if not verify(self.peer_key, auth.signature, self._transcript(peer_role)):
            raise RemoteProtocolError("bad_signature", f"auth of {self.peer_id} does not verify")
        self.state = HandshakeState.ESTABLISHED
        return []

    def _ends(self) -> tuple[tuple[str, bytes, bytes], tuple[str, bytes, bytes]]:
        """Return ``(id, nonce, eph)`` of the initiator and of the responder."""
        own = (self.identity.node_id, self.nonce, self.eph)
        peer = (self.peer_hello.node_id, self.peer_hello.nonce, self.peer_hello.eph)
        return (own, peer) if self.role is Role.INITIATOR else (peer, own)

    def _transcript(self, signer: Role) -> bytes:
        initiator, responder = self._ends()
        return transcript_v2(signer.value, *initiator, *responder)
