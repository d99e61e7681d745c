"""Membership of a closed mesh: certificates and revocations signed by a mesh authority.

Theory of operation
-------------------
A mesh authority is an Ed25519 key kept offline. It admits a node by signing a *certificate*
(who the node is, its name, the apps it may host, until when) and cuts one off by signing a
*revocation*. Both are canonical, domain-separated msgpack arrays, like records (PROTOCOL.md
section 8.6): the signed bytes are ``CERT_DOMAIN + body`` or ``REVOKE_DOMAIN + body``, so a
signature can never be read under another layout, and a body must re-encode to itself, so one
certificate has one encoding. The body names its authority by node id (the digest of the
authority's key): a certificate of another authority is told apart from a forgery.

``judge_certificate`` gives the verdict a node in closed mode acts on, in this order:
``no_certificate``, ``bad_certificate`` (malformed), ``wrong_authority``, ``bad_certificate``
(signature), ``wrong_node``, ``expired``, ``not_yet_valid``, ``revoked``. A revocation revokes
every certificate of its node issued at or before it, so a node can be admitted again later.

Certificates travel packed as msgpack ``[body, signature]``, and in files as a text armor
(``-----BEGIN XIO MESH CERTIFICATE-----``, base64 of the packed form). Times are passed in
(``now_ms``); nothing here reads a clock or a file. Remote garbage raises RemoteProtocolError
with a reason of ``reasons.MEMBERSHIP``, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import msgpack

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.identity import (
    PUBLIC_KEY_LENGTH,
    SIGNATURE_LENGTH,
    Identity,
    is_node_id,
    node_id_of,
    verify,
)
from xio.peering.names import MAX_NAME, is_app_name

__all__ = [
    "ANY_APP",
    "CERT_DOMAIN",
    "REVOKE_DOMAIN",
    "Certificate",
    "Revocation",
    "SignedCertificate",
    "SignedRevocation",
    "app_allowed",
    "armor",
    "check_app",
    "is_revoked",
    "issue_certificate",
    "issue_revocation",
    "judge_certificate",
    "judge_validity",
    "judge_revocation",
    "newer",
    "note_revocation",
    "pack",
    "read_armor",
    "unpack_certificate",
    "unpack_revocation",
]

MEMBERSHIP_VERSION = 1
CERT_DOMAIN = b"xio-cert-v1\x00"
REVOKE_DOMAIN = b"xio-revoke-v1\x00"
MAX_CERT_BODY = 2048
MAX_REVOCATION_BODY = 256
MAX_CERT_APPS = 32
ANY_APP = "*"
MAX_UINT64 = 2**64 - 1
MAX_FUTURE_MS = 60_000  # clock skew tolerated on issued_ms, as for records
CERT_FIELDS = 9
REVOCATION_FIELDS = 4
#: The packed form adds at most 3 + 2 + 2 bytes of headers to the body and signature.
_PACK_OVERHEAD = 8
CERT_LABEL = "XIO MESH CERTIFICATE"
REVOCATION_LABEL = "XIO MESH REVOCATION"


@dataclass(frozen=True, slots=True)
class Certificate:
    """What an authority says about one admitted node (times in ms since the epoch)."""

    authority: str  # node_id_of(the authority's public key)
    node_id: str
    public_key: bytes  # the node's key, or b"" when the authority was given only its id
    name: str
    apps: tuple[str, ...]  # strictly ascending app names, or exactly ("*",)
    issued_ms: int
    expires_ms: int
    serial: int


@dataclass(frozen=True, slots=True)
class Revocation:
    """An authority's word that certificates of ``node_id`` issued until ``issued_ms`` are void."""

    authority: str
    node_id: str
    issued_ms: int


@dataclass(frozen=True, slots=True)
class SignedCertificate:
    """A certificate with the exact body bytes and signature that travel."""

    body: bytes
    signature: bytes
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class SignedRevocation:
    """A revocation with the exact body bytes and signature that travel."""

    body: bytes
    signature: bytes
    revocation: Revocation


# -- building (by the authority) ---------------------------------------------------------------


def issue_certificate(
    authority: Identity,
    node_id: str,
    *,
    public_key: bytes = b"",
    name: str = "",
    apps: Iterable[str] = (ANY_APP,),
    issued_ms: int,
    expires_ms: int,
    serial: int,
) -> SignedCertificate:
    """Sign a certificate admitting ``node_id``; raise LocalProtocolError if it breaks a rule."""
    try:
        apps = tuple(sorted(set(apps)))
    except TypeError as exc:
        raise LocalProtocolError(f"cannot issue certificate: {exc}") from None
    cert = Certificate(
        authority.node_id, node_id, public_key, name, apps, issued_ms, expires_ms, serial
    )
    try:
        _check_certificate(cert)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"cannot issue certificate: {exc}") from None
    body = _encode_certificate(cert)
    if len(body) > MAX_CERT_BODY:
        raise LocalProtocolError(f"certificate body is {len(body)} bytes > {MAX_CERT_BODY}")
    return SignedCertificate(body, authority.sign(CERT_DOMAIN + body), cert)


def issue_revocation(authority: Identity, node_id: str, *, issued_ms: int) -> SignedRevocation:
    """Sign a revocation of every certificate of ``node_id`` issued until ``issued_ms``."""
    revocation = Revocation(authority.node_id, node_id, issued_ms)
    try:
        _check_revocation(revocation)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"cannot issue revocation: {exc}") from None
    body = _encode_revocation(revocation)
    return SignedRevocation(body, authority.sign(REVOKE_DOMAIN + body), revocation)


def _encode_certificate(cert: Certificate) -> bytes:
    return msgpack.packb(
        [
            MEMBERSHIP_VERSION,
            cert.authority,
            cert.node_id,
            cert.public_key,
            cert.name,
            list(cert.apps),
            cert.issued_ms,
            cert.expires_ms,
            cert.serial,
        ],
        use_bin_type=True,
    )


def _encode_revocation(revocation: Revocation) -> bytes:
    return msgpack.packb(
        [MEMBERSHIP_VERSION, revocation.authority, revocation.node_id, revocation.issued_ms],
        use_bin_type=True,
    )


# -- field rules -------------------------------------------------------------------------------


def _is_uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_UINT64


def _bad(why: str) -> RemoteProtocolError:
    return RemoteProtocolError("bad_certificate", why)


def _check_certificate(cert: Certificate) -> None:
    """Check every field rule of PROTOCOL.md 8.6.1 (raise bad_certificate)."""
    if not is_node_id(cert.authority) or not is_node_id(cert.node_id):
        raise _bad("authority or node is not a node id")
    key = cert.public_key
    if type(key) is not bytes or len(key) not in (0, PUBLIC_KEY_LENGTH):
        raise _bad("key is neither empty nor 32 bytes")
    if key and node_id_of(key) != cert.node_id:
        raise _bad(f"key does not hash to {cert.node_id}")
    if type(cert.name) is not str or len(cert.name) > MAX_NAME:
        raise _bad(f"name is not a str of at most {MAX_NAME} chars")
    apps = cert.apps
    if type(apps) is not tuple or len(apps) > MAX_CERT_APPS:
        raise _bad(f"apps is not an array of at most {MAX_CERT_APPS}")
    if apps != (ANY_APP,):
        if not all(is_app_name(app) for app in apps):
            raise _bad("apps must be app names, or exactly ['*']")
        if any(a >= b for a, b in pairwise(apps)):
            raise _bad("apps must be strictly ascending")
    if not (_is_uint(cert.issued_ms) and _is_uint(cert.expires_ms) and _is_uint(cert.serial)):
        raise _bad("issued_ms, expires_ms and serial must be uint64")
    if cert.expires_ms <= cert.issued_ms:
        raise _bad("expires_ms must be after issued_ms")


def _check_revocation(revocation: Revocation) -> None:
    if not is_node_id(revocation.authority) or not is_node_id(revocation.node_id):
        raise RemoteProtocolError("bad_revocation", "authority or node is not a node id")
    if not _is_uint(revocation.issued_ms):
        raise RemoteProtocolError("bad_revocation", "issued_ms must be uint64")


# -- parsing (no signature: that needs the authority's key) -----------------------------------


def _unpack(data: Any, limit: int, reason: str) -> Any:
    if type(data) is not bytes:
        raise RemoteProtocolError(reason, "not bytes")
    if len(data) > limit:
        raise RemoteProtocolError(reason, f"{len(data)} bytes > {limit}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=MAX_CERT_APPS + CERT_FIELDS,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many kinds (ValueError, StackError, ...)
        raise RemoteProtocolError(reason, f"not msgpack: {exc}"[:200]) from exc


def _split_packed(data: Any, limit: int, reason: str) -> tuple[bytes, bytes]:
    """Return ``(body, signature)`` of a packed ``[body, signature]``, checked canonical."""
    items = _unpack(data, limit + SIGNATURE_LENGTH + _PACK_OVERHEAD, reason)
    if type(items) is not list or len(items) != 2 or not all(type(i) is bytes for i in items):
        raise RemoteProtocolError(reason, "not an array [body: bin, signature: bin]")
    body, signature = items
    if len(signature) != SIGNATURE_LENGTH:
        raise RemoteProtocolError(reason, "signature is not 64 bytes")
    if msgpack.packb(items, use_bin_type=True) != data:
        raise RemoteProtocolError(reason, "not in canonical form")
    return body, signature


def _fields(body: bytes, limit: int, count: int, reason: str) -> list:
    items = _unpack(body, limit, reason)
    if type(items) is not list or len(items) != count:
        raise RemoteProtocolError(reason, f"body is not an array of {count}")
    if type(items[0]) is not int or items[0] != MEMBERSHIP_VERSION:
        raise RemoteProtocolError(reason, f"version {items[0]!r:.20} is not 1")
    return items


def decode_certificate(body: bytes) -> Certificate:
    """Parse certificate body bytes without checking the signature (raise bad_certificate)."""
    items = _fields(body, MAX_CERT_BODY, CERT_FIELDS, "bad_certificate")
    _, authority, node, key, name, apps, issued, expires, serial = items
    if type(apps) is not list:
        raise _bad("apps is not an array")
    cert = Certificate(authority, node, key, name, tuple(apps), issued, expires, serial)
    _check_certificate(cert)
    if _encode_certificate(cert) != body:
        raise _bad("body is not in canonical form")
    return cert


def decode_revocation(body: bytes) -> Revocation:
    """Parse revocation body bytes without checking the signature (raise bad_revocation)."""
    items = _fields(body, MAX_REVOCATION_BODY, REVOCATION_FIELDS, "bad_revocation")
    revocation = Revocation(*items[1:])
    _check_revocation(revocation)
    if _encode_revocation(revocation) != body:
        raise RemoteProtocolError("bad_revocation", "body is not in canonical form")
    return revocation


def pack(signed: SignedCertificate | SignedRevocation) -> bytes:
    """Return the packed form ``msgpack([body, signature])`` that travels and is armored."""
    return msgpack.packb([signed.body, signed.signature], use_bin_type=True)


def unpack_certificate(data: bytes) -> SignedCertificate:
    """Parse a packed certificate; the signature is checked by ``judge_certificate``."""
    body, signature = _split_packed(data, MAX_CERT_BODY, "bad_certificate")
    return SignedCertificate(body, signature, decode_certificate(body))


def unpack_revocation(data: bytes) -> SignedRevocation:
    """Parse a packed revocation; the signature is checked by ``judge_revocation``."""
    body, signature = _split_packed(data, MAX_REVOCATION_BODY, "bad_revocation")
    return SignedRevocation(body, signature, decode_revocation(body))


# -- verdicts ------------------------------------------------------------------------------------


def judge_certificate(
    cert: SignedCertificate | bytes | None,
    authority_key: bytes,
    now_ms: int,
    revoked: Mapping[str, int] | Container[str] = (),
    *,
    node_id: str | None = None,
) -> Certificate:
    """Return the certificate if it admits its node now, or raise RemoteProtocolError.

    ``cert`` is a parsed certificate or the packed bytes; ``revoked`` maps node ids to the
    ``issued_ms`` of their newest revocation (or is a set of node ids revoked for good);
    ``node_id``, when given, is the node that presented it. Reasons, in the order checked:
    no_certificate, bad_certificate, wrong_authority, bad_certificate (signature),
    wrong_node, expired, not_yet_valid, revoked.
    """
    if cert is None or cert == b"":
        raise RemoteProtocolError("no_certificate", "no certificate presented")
    if not isinstance(cert, SignedCertificate):
        cert = unpack_certificate(cert)
    content = cert.certificate
    authority = node_id_of(authority_key)  # our own key: a bad one is LocalProtocolError
    if content.authority != authority:
        raise RemoteProtocolError(
            "wrong_authority", f"certificate of authority {content.authority}, not {authority}"
        )
    if not verify(authority_key, cert.signature, CERT_DOMAIN + cert.body):
        raise _bad(f"signature of the certificate of {content.node_id} does not verify")
    return judge_validity(content, now_ms, revoked, node_id=node_id)


def judge_validity(
    content: Certificate,
    now_ms: int,
    revoked: Mapping[str, int] | Container[str] = (),
    *,
    node_id: str | None = None,
) -> Certificate:
    """Return a certificate whose signature verified if it admits its node now.

    The checks of ``judge_certificate`` after the signature, in its order: wrong_node,
    expired, not_yet_valid, revoked. A cache of verified certificates runs these alone.
    """
    if node_id is not None and content.node_id != node_id:
        raise RemoteProtocolError("wrong_node", f"certificate of {content.node_id}, not {node_id}")
    if content.expires_ms <= now_ms:
        raise RemoteProtocolError("expired", f"certificate of {content.node_id} expired")
    if content.issued_ms > now_ms + MAX_FUTURE_MS:
        raise RemoteProtocolError("not_yet_valid", f"certificate of {content.node_id}")
    if is_revoked(content, revoked):
        raise RemoteProtocolError("revoked", f"{content.node_id} is revoked")
    return content


def judge_revocation(
    revocation: SignedRevocation | bytes, authority_key: bytes, now_ms: int
) -> Revocation:
    """Return the revocation if our authority signed it, or raise RemoteProtocolError.

    Reasons, in the order checked: bad_revocation, wrong_authority, bad_revocation
    (signature), not_yet_valid.
    """
    if not isinstance(revocation, SignedRevocation):
        revocation = unpack_revocation(revocation)
    content = revocation.revocation
    authority = node_id_of(authority_key)
    if content.authority != authority:
        raise RemoteProtocolError(
            "wrong_authority", f"revocation of authority {content.authority}, not {authority}"
        )
    if not verify(authority_key, revocation.signature, REVOKE_DOMAIN + revocation.body):
        raise RemoteProtocolError("bad_revocation", f"revocation of {content.node_id}: signature")
    if content.issued_ms > now_ms + MAX_FUTURE_MS:
        raise RemoteProtocolError("not_yet_valid", f"revocation of {content.node_id}")
    return content


def is_revoked(cert: Certificate, revoked: Mapping[str, int] | Container[str]) -> bool:
    """Tell whether a revocation in ``revoked`` voids ``cert`` (issued at or before it)."""
    if isinstance(revoked, Mapping):
        until = revoked.get(cert.node_id)
        return until is not None and cert.issued_ms <= until
    return cert.node_id in revoked


def note_revocation(revoked: dict[str, int], revocation: Revocation) -> bool:
    """Record a judged revocation in ``revoked``; return whether it changed anything."""
    if revoked.get(revocation.node_id, -1) >= revocation.issued_ms:
        return False
    revoked[revocation.node_id] = revocation.issued_ms
    return True


def newer(a: Certificate, b: Certificate) -> bool:
    """Tell whether ``a`` supersedes ``b``: the newest wins, by issued_ms, then serial."""
    return (a.issued_ms, a.serial) > (b.issued_ms, b.serial)


def app_allowed(cert: Certificate, app: str) -> bool:
    """Tell whether ``cert`` lets its node host (and be routed to for) ``app``."""
    return cert.apps == (ANY_APP,) or app in cert.apps


def check_app(cert: Certificate, app: str) -> None:
    """Raise RemoteProtocolError ``app_not_allowed`` unless ``cert`` allows ``app``."""
    if not app_allowed(cert, app):
        raise RemoteProtocolError("app_not_allowed", f"{cert.node_id} may not host {app!r:.70}")


# -- text armor for files ----------------------------------------------------------------------

_ARMOR = re.compile(
    r"-----BEGIN (XIO MESH CERTIFICATE|XIO MESH REVOCATION)-----[ \t]*\r?\n"
    r"([A-Za-z0-9+/=\s]*?)"
    r"-----END \1-----"
)
_ARMOR_LINE = 64
_MAX_ARMOR = 4 * (MAX_CERT_BODY + _PACK_OVERHEAD + SIGNATURE_LENGTH) // 3 + 4096


def armor(signed: SignedCertificate | SignedRevocation) -> str:
    """Return the text armor of a certificate or revocation, as written to files."""
    label = CERT_LABEL if isinstance(signed, SignedCertificate) else REVOCATION_LABEL
    text = base64.b64encode(pack(signed)).decode("ascii")
    lines = [text[i : i + _ARMOR_LINE] for i in range(0, len(text), _ARMOR_LINE)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n"


def read_armor(text: str) -> SignedCertificate | SignedRevocation:
    """Parse the first armored certificate or revocation in ``text`` (signature unchecked).

    Text around the block is ignored, as PEM allows. Raise RemoteProtocolError
    bad_certificate (bad_revocation for a block labelled so).
    """
    if type(text) is not str or len(text) > _MAX_ARMOR:
        raise _bad("armor is not a str of a few KiB")
    match = _ARMOR.search(text)
    if match is None:
        raise _bad(f"no -----BEGIN {CERT_LABEL}----- or {REVOCATION_LABEL} block")
    is_cert = match[1] == CERT_LABEL
    reason = "bad_certificate" if is_cert else "bad_revocation"
    try:
        data = base64.b64decode("".join(match[2].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(reason, f"armor is not base64: {exc}") from exc
    return unpack_certificate(data) if is_cert else unpack_revocation(data)
