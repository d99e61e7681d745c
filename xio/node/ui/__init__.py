"""The mesh map page (``/_xio/ui``): one HTML page, its script and its style, as package data.

The files sit beside this module and are read through ``importlib.resources``, so an installed
wheel serves them as a checkout does (setup.cfg ``package_data``). They are static: no data of
the mesh is in them, the page fetches it (``/_xio/map``, ``/_xio/apps``) with the operator's
credentials, which is why the page itself may answer any client (``admin.PUBLIC_PAGES``).
No build step, no framework, nothing fetched from elsewhere.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from ...errors import NotFound
from ...request import Response

__all__ = ["ASSETS", "CACHE_CONTROL", "asset", "asset_response", "prefers_html"]

#: The files served, and their content types.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
#: Revalidated on every load: a node upgraded in place serves its new page at once.
CACHE_CONTROL = "no-cache"
#: The page runs only its own script and style and talks only to this node: a peer's name
#: that slipped into markup could still run nothing (the page writes data as text anyway).
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def asset(name: str) -> bytes:
    """Return the bytes of asset ``name`` (one of ``ASSETS``); raise KeyError for others."""
    if name not in ASSETS:
        raise KeyError(name)
    return files(__name__).joinpath(name).read_bytes()


def asset_response(name: str) -> Response:
    """Return the HTTP answer for asset ``name``, or raise NotFound."""
    if name not in ASSETS:
        raise NotFound(f"no file {name[:64]!r} in the mesh map page")
    headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if name == "index.html":
        headers["Content-Security-Policy"] = _POLICY
    return Response(asset(name), content_type=ASSETS[name], headers=headers)


def prefers_html(accept: str | None) -> bool:
    """Tell whether an ``Accept`` value puts ``text/html`` above JSON (a browser, not curl).

    Only an explicit ``text/html`` counts, so ``*/*`` (curl) and no header keep the JSON;
    its quality must beat JSON's (``application/json``, ``application/*`` or ``*/*``).
    """
    html, json = 0.0, 0.0
    for item in (accept or "").split(",")[:64]:
        kind, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        kind = kind.lower()
        if kind == "text/html":
            html = max(html, quality)
        elif kind in ("application/json", "application/*", "*/*"):
            json = max(json, quality)
    return html > 0 and html > json
