"""Who may read this node's admin resources under ``/_xio/``: the access rule, pure.

Theory of operation. The admin pages show what an outsider must not learn: the addresses of
this node's peers, its links, routes and counters. The rule, as Consul's and NATS's monitoring
endpoints have it, is one of two modes, chosen by the operator at start:

* **No token** (the default): only clients on loopback (``127.0.0.0/8``, ``::1``, and
  ``::ffff:127.x.y.z``, an IPv4 loopback client seen by a dual-stack socket) are answered;
  any other address is **403** (``admin_forbidden``), whatever it sends.
* **A token** (``--admin-token FILE``): every client must send ``Authorization: Bearer
  <token>``, loopback included, since a token is configured precisely when loopback is not
  a boundary (a reverse proxy or another user's process on this host); a missing or wrong
  token is **401** with ``WWW-Authenticate: Bearer`` (``admin_unauthorized``).

The address is the TCP peer (``REMOTE_ADDR``), never a header a client writes
(``X-Forwarded-For``): behind a reverse proxy on this host every client is on loopback, which
is why such a setup needs the token. Pages that must answer anyone (the link endpoint
``/_xio/ws``) are listed in ``xio.node.admin.PUBLIC_PAGES`` and never reach this rule.
The token is compared with ``hmac.compare_digest``, so the time taken says nothing of it.

Pure: takes the address, the header and the token, returns a verdict; imports no IO.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass, field

#: RFC 6750 ``b64token``: what a bearer token may hold, so it fits in one header as it is.
TOKEN_RULE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
REALM = 'Bearer realm="xio admin"'
_COMMON_LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


@dataclass(frozen=True, slots=True)
class AdminRefusal:
    """Why a client may not read an admin page: the HTTP answer and the counted reason."""

    status: int
    reason: str  # counted under "refused" (xio/peering/reasons.py)
    description: str
    headers: dict[str, str] = field(default_factory=dict)


def is_loopback(address: str | None) -> bool:
    """Tell whether ``address`` (a ``REMOTE_ADDR``) is this host's loopback."""
    if not address:
        return False
    if address in _COMMON_LOOPBACK:  # asked for every forwarded answer: skip the parse
        return True
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # a scope id is not part of it
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or ip).is_loopback


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:  # the scheme is case-insensitive (RFC 9110)
        return None
    return token


def admin_refusal(
    address: str | None, authorization: str | None, token: str | None
) -> AdminRefusal | None:
    """Return why this client may not read an admin page, or None if it may.

    ``address`` is the client's TCP address, ``authorization`` its ``Authorization`` header,
    ``token`` the node's admin token (None: none configured, loopback only).
    """
    if token is None:
        if is_loopback(address):
            return None
        return AdminRefusal(
            403, "admin_forbidden",
            f"/_xio/ answers clients on this host's loopback only, not {address or 'unknown'}; "
            "start the node with --admin-token FILE to allow others with a bearer token",
        )  # fmt: skip
    presented = bearer_token(authorization)
    if presented is not None and hmac.compare_digest(
        presented.encode("utf-8", "replace"), token.encode("ascii")
    ):
        return None
    if presented is None:
        challenge = REALM
        description = "/_xio/ needs the node's admin token: send Authorization: Bearer <token>"
    else:
        challenge = f'{REALM}, error="invalid_token"'
        description = "the bearer token is not this node's admin token"
    return AdminRefusal(401, "admin_unauthorized", description, {"WWW-Authenticate": challenge})
