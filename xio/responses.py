"""What an answer becomes: the JSON error body, and a ``Response`` as status, headers and bytes.

Theory of operation. Every error xio answers with, wherever it is written (a resource's
``HTTPError``, the HTTP server refusing a request before it has one, a router's 404, a relay's
502 in a ``res`` frame, an app on threads missing its deadline), carries the same JSON body:
``{"status": ..., "title": ..., "description": ...}`` from ``HTTPError.to_dict``. It is built
here, by ``error_response`` (a ``Response``, encoded like any other: JSON, or msgpack when the
client asks) and ``error_json`` (compact JSON bytes, for the places that write bytes before
there is a ``Response``).

This module sits below the HTTP server and the resource tree and above ``request``: the
server needs error bodies without importing the resource tree, and the resource tree needs
them without importing the server.
"""

from __future__ import annotations

from .content import dump_json
from .errors import HTTPError
from .request import Response

__all__ = ["error_json", "error_response"]


def error_response(exc: HTTPError) -> Response:
    """Return the JSON response for an ``HTTPError``, with the headers it names."""
    return Response(exc.to_dict(), exc.status, headers=exc.headers)


def error_json(exc: HTTPError) -> bytes:
    """Return the JSON error body of ``exc`` as compact UTF-8 bytes."""
    return dump_json(exc.to_dict())
