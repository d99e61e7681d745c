"""Signed link-state records: their canonical body, their signature, and how one is checked.

Theory of operation
-------------------
Every node originates one record: who it is (id, key), a sequence number, when the record was
issued and when it expires, its name, software version, URLs, its live links with their cost and
the apps it hosts. The record body is a msgpack array in a fixed order (``_encode_body``) and the
node signs ``RECORD_DOMAIN + body``. The wire carries the body bytes themselves, so a receiver
verifies exactly the bytes that were signed; a body must also be *canonical* (decode + re-encode
gives the same bytes), so one record has exactly one encoding and ``(origin, seq)`` names it.

``parse_record`` checks, in this order and cheapest first: size, msgpack, version, shape and
caps, canonical form, ``id == node_id_of(key)``, time window, signature. The record store
(``store.RecordStore``) does the same checks but looks at its stored copy *before* the
signature, because every record arrives once per neighbour and a duplicate must not cost a
100 µs verification.

Times are integer milliseconds since the Unix epoch and always passed in (``now_ms``); nothing
here reads a clock. A relay can forward a record but cannot alter one (signature) or forge one for
another node (id is the key's digest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
from xio.peering.reasons import RECORD_REASONS

__all__ = [
    "DEFAULT_LIFETIME_MS",
    "MAX_FUTURE_MS",
    "MAX_LIFETIME_MS",
    "MAX_RECORD_SIZE",
    "RECORD_DOMAIN",
    "RECORD_REASONS",
    "RECORD_VERSION",
    "Record",
    "SignedRecord",
    "parse_record",
]

RECORD_VERSION = 1
RECORD_DOMAIN = b"xio-record-v1\x00"
MAX_RECORD_SIZE = 64 * 1024
MAX_LINKS = 256
MAX_APPS = 256
MAX_URLS = 16
MAX_EXT = 16
MAX_VERSION = 64
MAX_URL = 1024
MAX_SUMMARY = 1024
MAX_COST = 65535
MAX_UINT64 = 2**64 - 1
MAX_FUTURE_MS = 60_000  # clock skew tolerated on issued_ms
MAX_LIFETIME_MS = 3_600_000  # expires_ms - issued_ms
DEFAULT_LIFETIME_MS = 60_000
RECORD_FIELDS = 12


@dataclass(frozen=True, slots=True)
class Record:
    """The content of one signed record (all times in ms since the epoch)."""

    node_id: str
    public_key: bytes
    seq: int
    issued_ms: int
    expires_ms: int
    name: str
    version: str
    urls: tuple[str, ...]
    links: tuple[tuple[str, int], ...]  # (neighbour id, cost), sorted by id
    apps: tuple[tuple[str, str], ...]  # (app name, summary), sorted by name
    ext: tuple[tuple[str, Any], ...] = ()  # reserved (membership certificates), sorted by key

    @staticmethod
    def build(
        identity: Identity,
        seq: int,
        now_ms: int,
        lifetime_ms: int,
        name: str,
        version: str,
        urls: Iterable[str],
        links: Mapping[str, int] | Iterable[tuple[str, int]],
        apps: Mapping[str, str] | Iterable[tuple[str, str]],
        ext: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    ) -> SignedRecord:
        """Originate and sign this node's record; raise LocalProtocolError if it breaks a cap.

        ``ext`` holds the extensions (a closed mesh: ``{"cert": packed certificate}``).
        """
        links = links.items() if isinstance(links, Mapping) else links
        apps = apps.items() if isinstance(apps, Mapping) else apps
        ext = ext.items() if isinstance(ext, Mapping) else ext
        try:
            links, apps = sorted(tuple(pair) for pair in links), sorted(tuple(p) for p in apps)
            ext = sorted(tuple(pair) for pair in ext)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"cannot build record: {exc}") from None
        record = Record(
            node_id=identity.node_id,
            public_key=identity.public_key,
            seq=seq,
            issued_ms=now_ms,
            expires_ms=now_ms + lifetime_ms,
            name=name,
            version=version,
            urls=tuple(urls),
            links=tuple(links),
            apps=tuple(apps),
            ext=tuple(ext),
        )
        try:
            _check_record(record)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot build record: {exc}") from None
        body = encode_body(record)
        if len(body) > MAX_RECORD_SIZE:
            raise LocalProtocolError(f"record body is {len(body)} bytes > {MAX_RECORD_SIZE}")
        return SignedRecord(body, identity.sign(RECORD_DOMAIN + body), record)

    def app_names(self) -> list[str]:
        """Return the names of the apps this node hosts."""
        return [app for app, _ in self.apps]


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A record with the exact body bytes and signature that travel on the wire."""

    body: bytes
    signature: bytes
    record: Record


def encode_body(record: Record) -> bytes:
    """Return the canonical body bytes of ``record`` (the part after RECORD_DOMAIN)."""
    return msgpack.packb(
        [
            RECORD_VERSION,
            record.node_id,
            record.public_key,
            record.seq,
            record.issued_ms,
            record.expires_ms,
            record.name,
            record.version,
            list(record.urls),
            [list(link) for link in record.links],
            [list(app) for app in record.apps],
            dict(record.ext),
        ],
        use_bin_type=True,
    )


# -- parsing ---------------------------------------------------------------------------------


def _malformed(why: str) -> RemoteProtocolError:
    return RemoteProtocolError("malformed_record", why)


def _is_uint(value: Any, maximum: int = MAX_UINT64) -> bool:
    return type(value) is int and 0 <= value <= maximum


def _is_str(value: Any, maximum: int, minimum: int = 0) -> bool:
    return type(value) is str and minimum <= len(value) <= maximum


def _check_count(what: str, items: Any, maximum: int) -> None:
    if type(items) not in (list, tuple):
        raise _malformed(f"{what} is not an array")
    if len(items) > maximum:
        raise RemoteProtocolError("too_large", f"{len(items)} {what} > {maximum}")


def _check_pairs(what: str, items: Any, maximum: int) -> None:
    _check_count(what, items, maximum)
    for pair in items:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise _malformed(f"{what} must hold pairs")


def _check_record(record: Record) -> None:
    """Check the shape and caps of a record (raise malformed_record / too_large)."""
    if not is_node_id(record.node_id):
        raise _malformed("id is not a node id")
    if type(record.public_key) is not bytes or len(record.public_key) != PUBLIC_KEY_LENGTH:
        raise _malformed("key is not 32 bytes")
    if not (_is_uint(record.seq) and _is_uint(record.issued_ms) and _is_uint(record.expires_ms)):
        raise _malformed("seq, issued_ms and expires_ms must be uint64")
    if not 0 < record.expires_ms - record.issued_ms <= MAX_LIFETIME_MS:
        raise _malformed(f"lifetime must be in 1..{MAX_LIFETIME_MS} ms")
    if not _is_str(record.name, MAX_NAME) or not _is_str(record.version, MAX_VERSION):
        raise _malformed("name or version is not a short str")
    _check_count("urls", record.urls, MAX_URLS)
    if not all(_is_str(url, MAX_URL) for url in record.urls):
        raise _malformed(f"urls must be str of at most {MAX_URL} chars")
    _check_pairs("links", record.links, MAX_LINKS)
    for peer, cost in record.links:
        if not is_node_id(peer) or peer == record.node_id or not 1 <= _cost(cost) <= MAX_COST:
            raise _malformed(f"bad link {peer!r:.40} cost {cost!r:.20}")
    if any(a[0] >= b[0] for a, b in pairwise(record.links)):
        raise _malformed("links must be sorted by id, without repeats")
    _check_pairs("apps", record.apps, MAX_APPS)
    for app, summary in record.apps:
        if not is_app_name(app) or not _is_str(summary, MAX_SUMMARY):
            raise _malformed(f"bad app {app!r:.40}")
    if any(a[0] >= b[0] for a, b in pairwise(record.apps)):
        raise _malformed("apps must be sorted by name, without repeats")
    _check_pairs("ext", record.ext, MAX_EXT)
    keys = [key for key, _ in record.ext]
    if not all(_is_str(key, MAX_NAME, 1) for key in keys) or keys != sorted(set(keys)):
        raise _malformed("ext keys must be unique str, sorted")


def _cost(value: Any) -> int:
    return value if type(value) is int else -1


def decode_body(body: bytes) -> Record:
    """Parse record body bytes without checking time or signature."""
    if not isinstance(body, bytes):
        raise _malformed("body is not bytes")
    if len(body) > MAX_RECORD_SIZE:
        raise RemoteProtocolError("too_large", f"record body {len(body)} bytes")
    try:
        items = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_RECORD_SIZE,
            max_bin_len=MAX_RECORD_SIZE,
            max_array_len=4096,  # a guard only: the caps below say too_large
            max_map_len=MAX_EXT,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many kinds (ValueError, StackError, ...)
        raise _malformed(f"not msgpack: {exc}"[:200]) from exc
    if type(items) is not list or not items:
        raise _malformed("body is not a non-empty array")
    if items[0] != RECORD_VERSION or type(items[0]) is not int:
        raise RemoteProtocolError("bad_version", f"record version {items[0]!r:.20}")
    if len(items) != RECORD_FIELDS:
        raise _malformed(f"body has {len(items)} fields, not {RECORD_FIELDS}")
    _, node_id, key, seq, issued, expires, name, version, urls, links, apps, ext = items
    if type(ext) is not dict:
        raise _malformed("ext is not a map")
    for what, value in (("urls", urls), ("links", links), ("apps", apps)):
        if type(value) is not list:
            raise _malformed(f"{what} is not an array")
    record = Record(
        node_id,
        key,
        seq,
        issued,
        expires,
        name,
        version,
        tuple(urls),
        tuple(tuple(pair) if type(pair) is list else pair for pair in links),
        tuple(tuple(pair) if type(pair) is list else pair for pair in apps),
        tuple(ext.items()),
    )
    _check_record(record)
    try:
        canonical = encode_body(record)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. ext nested too deep to pack
        raise _malformed(f"cannot re-encode: {exc}"[:200]) from exc
    if canonical != body:
        raise _malformed("body is not in canonical form")
    if node_id_of(record.public_key) != record.node_id:
        raise RemoteProtocolError("id_mismatch", f"key does not hash to {record.node_id}")
    return record


def check_time(record: Record, now_ms: int) -> None:
    if record.expires_ms <= now_ms:
        raise RemoteProtocolError("expired", f"{record.node_id} seq {record.seq}")
    if record.issued_ms > now_ms + MAX_FUTURE_MS:
        raise RemoteProtocolError(
            "from_future", f"{record.node_id} issued {record.issued_ms - now_ms} ms ahead"
        )


def check_signature(record: Record, body: bytes, signature: bytes) -> None:
    if type(signature) is not bytes or len(signature) != SIGNATURE_LENGTH:
        raise RemoteProtocolError("bad_signature", "signature is not 64 bytes")
    if not verify(record.public_key, signature, RECORD_DOMAIN + body):
        raise RemoteProtocolError("bad_signature", f"{record.node_id} seq {record.seq}")


def parse_record(body: bytes, signature: bytes, now_ms: int) -> Record:
    """Verify a record from the wire and return it, or raise RemoteProtocolError.

    Reasons, in the order checked: too_large, malformed_record, bad_version, id_mismatch,
    expired, from_future, bad_signature.
    """
    record = decode_body(body)
    check_time(record, now_ms)
    check_signature(record, body, signature)
    return record
