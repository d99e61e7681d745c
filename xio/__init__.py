"""xio: everything is a resource, and a mesh of nodes serves them as one tree.

    import xio
    app = xio.app(__name__)

    @app.bind('www')
    def _(req):
        return 'Hello World'

    if __name__ == '__main__':
        app.main()
"""

from __future__ import annotations

from .app import App, app, resource
from .errors import (
    BadGateway,
    BadRequest,
    ConfigError,
    Conflict,
    ConnectError,
    Forbidden,
    GatewayTimeout,
    HTTPError,
    InternalServerError,
    LocalProtocolError,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    RequestTimeout,
    ResponseError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    XioError,
)
from .request import Headers, Request, Response
from .resource import Input, Resource

__version__ = "0.1.0"

__all__ = [
    "App", "BadGateway", "BadRequest", "Client", "ConfigError", "Conflict", "ConnectError",
    "Forbidden", "GatewayTimeout", "HTTPError", "Headers", "Input", "InternalServerError",
    "LocalProtocolError", "MethodNotAllowed", "NotAcceptable", "NotFound", "PayloadTooLarge",
    "ProtocolError", "ReadTimeout", "RemoteProtocolError", "Request", "RequestTimeout",
    "Resource", "Response", "ResponseError", "ServiceUnavailable", "TooManyRequests",
    "TransportError", "Unauthorized", "UnsupportedMediaType", "XioError", "__version__",
    "app", "client", "node", "resource",
]  # fmt: skip


def __getattr__(name: str):
    # The client and the node are loaded on first use: a script that only calls other
    # services does not pay for the daemon, and the daemon's imports stay out of apps
    # that are hosted by someone else's WSGI server.
    if name in ("client", "Client"):
        from . import client as _client_module

        return getattr(_client_module, name)
    if name == "node":
        from .node import node

        return node
    raise AttributeError(f"module 'xio' has no attribute {name!r}")
