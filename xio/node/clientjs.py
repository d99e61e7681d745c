"""The JavaScript client served by every node at ``/_xio/client.js``, for pages to import.

Theory of operation. The one source of the client is ``clients/js/xio.js`` (and its types,
``xio.d.ts``, served at ``/_xio/client.d.ts``); the package holds them as
``xio/node/ui/client.js`` and ``client.d.ts`` (symbolic links in a checkout, whose content a
built wheel copies: setup.cfg ``package_data``), read through ``importlib.resources`` once.
The script's answer names its types in ``X-TypeScript-Types``, which Deno reads. A page of any
origin may import it (``Access-Control-Allow-Origin: *``: a module script is fetched in CORS
mode, and the file holds no data), so it is public (``admin.PUBLIC_PAGES``). Browsers keep it
five minutes, then revalidate with ``If-None-Match`` against its ``ETag`` (a hash of the bytes),
which costs a 304 and no body until the node is upgraded.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

from ..errors import NotFound
from ..request import Response

__all__ = ["CONTENT_TYPE", "client_script", "client_script_response", "etag_matches"]

#: The files served under /_xio/, by the name each has in the package (xio/node/ui): its type.
SCRIPTS = {
    "client.js": "text/javascript; charset=utf-8",
    "client.d.ts": "application/typescript; charset=utf-8",
}
CONTENT_TYPE = SCRIPTS["client.js"]
CACHE_CONTROL = "public, max-age=300"


@cache
def client_script(name: str = "client.js") -> tuple[bytes, str]:
    """Return the bytes of the served script ``name`` and their ETag; raise NotFound."""
    if name not in SCRIPTS:
        raise NotFound(f"no script {name[:64]!r} under /_xio/")
    try:
        body = files("xio.node.ui").joinpath(name).read_bytes()
    except OSError:  # a checkout whose clients/js/xio.js is gone: the link points nowhere
        raise NotFound(f"this node was installed without {name} (clients/js)") from None
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Tell whether an ``If-None-Match`` value names ``etag`` (weak comparison, RFC 9110)."""
    if not if_none_match:
        return False
    for item in if_none_match.split(",")[:64]:
        item = item.strip()
        if item == "*" or item.removeprefix("W/") == etag:
            return True
    return False


def client_script_response(name: str, if_none_match: str | None) -> Response:
    """Return the answer to a GET of ``/_xio/<name>``: the script, or a 304."""
    body, etag = client_script(name)
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag, "Access-Control-Allow-Origin": "*",
               "X-Content-Type-Options": "nosniff"}  # fmt: skip
    if name == "client.js":
        headers["X-TypeScript-Types"] = "/_xio/client.d.ts"
    if etag_matches(if_none_match, etag):
        return Response(None, 304, headers=headers)
    return Response(body, content_type=SCRIPTS[name], headers=headers)
