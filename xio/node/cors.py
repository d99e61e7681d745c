"""Cross-origin reads by browser pages: ``xio-node --cors ORIGIN`` (the Fetch standard's CORS).

Theory of operation. A browser sends ``Origin`` with every cross-origin request a page makes
and hides the answer from the page unless the answer names that origin in
``Access-Control-Allow-Origin``. ``CorsPolicy`` is the list of origins the operator allows
(``*``: any), pure: ``allows(origin)``, ``answer_headers(origin)`` for an ordinary answer and
``preflight(origin, method, headers)`` for the ``OPTIONS`` a browser sends first before a
request that is not "simple" (a JSON body, a custom header, PUT...). ``CorsMiddleware`` puts
the policy in front of the node's WSGI app, so every answer the node writes gets the headers,
its own refusals too (a 413 for a body over ``--max-body`` is readable by the page); a preflight
is answered 204 by the node itself, never routed: an app cannot answer it wrongly, and one on
another node is not asked. The node's admin pages (``/_xio/`` but its public ones) are never
readable by a page: they answer loopback clients, and a browser on the node's host is one.

Never ``Access-Control-Allow-Credentials``: a page's cookies for the node are not sent and
its answers cannot be read with them, so no page can act with what a user's browser holds for
the mesh. The origin is echoed rather than ``*`` even when ``*`` is allowed, with
``Vary: Origin``, so a shared cache keeps the answers of different origins apart. Without
``--cors`` the middleware is not there at all: no CORS header is ever written.

``/_xio/client-ws`` takes a WebSocket from a page, which no CORS rule guards: the upgrade is
accepted when ``upgrade_allowed`` says so (the node's own origin, or one ``--cors`` allows).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = ["ANY", "CorsMiddleware", "CorsPolicy", "parse_origin", "same_origin"]

#: The origin that allows every page.
ANY = "*"
#: How long a browser may reuse a preflight's answer (seconds).
MAX_AGE = 600
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")  # RFC 9110 token, bounded
_MAX_REQUESTED_HEADERS = 64
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(text: str) -> str:
    """Return the origin ``text`` names, normalised (``https://app.example:8443``), or ``*``.

    An origin is a scheme (http or https), a host and maybe a port, nothing else: a path, a
    query or a user name is a ``ConfigError``, since the browser would never send it.
    """
    text = text.strip()
    if text == ANY:
        return ANY
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--cors {text!r}: {exc}") from None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"--cors {text!r}: expected http(s)://host[:port], or '*'")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"--cors {text!r}: an origin has no path, query or user name")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:  # IPv6: bracketed, as the browser writes it
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def same_origin(origin: str, host: str | None, tls: bool) -> bool:
    """Tell whether ``origin`` is the node's own: a page the node served (``Host`` is its name)."""
    if not host:
        return False
    scheme = "https" if tls else "http"
    try:
        return parse_origin(origin) == parse_origin(f"{scheme}://{host}")
    except ConfigError:
        return False


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """The origins whose pages may read the node's answers (``--cors``)."""

    origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, specs: Iterable[str]) -> CorsPolicy:
        """Build the policy of ``--cors`` values (each checked by ``parse_origin``)."""
        return cls(frozenset(parse_origin(spec) for spec in specs))

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        """Tell whether a page of ``origin`` (an ``Origin`` header) may read answers."""
        if not origin or not self.origins:
            return False
        if ANY in self.origins:
            return True  # sandboxed pages ("null") too: "*" means any page
        try:
            return parse_origin(origin) in self.origins
        except ConfigError:
            return False  # "null" (a sandboxed page, a file) or garbage: never listed

    def answer_headers(self, origin: str) -> list[tuple[str, str]]:
        """Return the headers an answer to an allowed ``origin`` carries."""
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Expose-Headers", "*"),  # every header: no credentials, so "*" works
        ]

    def preflight(self, origin: str, method: str, requested: str | None) -> list[tuple[str, str]]:
        """Return the headers of the 204 that answers an allowed ``origin``'s preflight.

        The method and headers asked for are granted as asked (each one a token; others are
        left out, and the browser then refuses the request itself): the node does not know
        what an app takes, the app answers the request itself.
        """
        headers = self.answer_headers(origin)
        if _TOKEN.fullmatch(method):
            headers.append(("Access-Control-Allow-Methods", method))
        names = [name.strip() for name in (requested or "").split(",")[:_MAX_REQUESTED_HEADERS]]
        names = [name for name in names if _TOKEN.fullmatch(name)]
        if names:
            headers.append(("Access-Control-Allow-Headers", ", ".join(names)))
        headers.append(("Access-Control-Max-Age", str(MAX_AGE)))
        return headers


class CorsMiddleware:
    """Put ``policy`` in front of a WSGI app (the node wraps its app only when it has one).

    ``private(path)`` names the paths no page may read whatever its origin: the node's admin
    pages, which answer loopback clients, so a page in a browser on the node's own host would
    otherwise read them with the browser's address.
    """

    def __init__(
        self, app: Callable, policy: CorsPolicy, private: Callable[[str], bool] = lambda _: False
    ) -> None:
        self.app = app
        self.policy = policy
        self.private = private

    def __call__(self, environ: dict, start_response):
        policy = self.policy
        origin = environ.get("HTTP_ORIGIN")
        allowed = policy.allows(origin) and not self.private(environ.get("PATH_INFO", ""))
        asked = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        if allowed and environ.get("REQUEST_METHOD") == "OPTIONS" and asked is not None:
            headers = policy.preflight(origin, asked,
                                       environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"))  # fmt: skip
            start_response("204 No Content", [*headers, ("Vary", "Origin")])
            return [b""]
        extra = policy.answer_headers(origin) if allowed else []

        def start(status, headers, exc_info=None):
            if allowed:  # ours replace an app's own, which would make two and fail the check
                headers = [(name, value) for name, value in headers
                           if not name.lower().startswith("access-control-")]  # fmt: skip
            return start_response(status, [*headers, *extra, *_vary(headers)], exc_info)

        return self.app(environ, start)


def _vary(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return a ``Vary: Origin`` to add unless the answer already varies on it (or on all)."""
    for name, value in headers:
        if name.lower() == "vary":
            tokens = {token.strip().lower() for token in value.split(",")}
            if "origin" in tokens or "*" in tokens:
                return []
    return [("Vary", "Origin")]
