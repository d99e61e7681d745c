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

# Last, and so on purpose: these names replace the submodules of the same name as
# attributes of the package, so that xio.client(...) and xio.node(...) are calls.
from .client import Client, client  # noqa: E402
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
    StreamBroken,
    Timeout,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    XioError,
)
from .node import node  # noqa: E402
from .request import Caller, Headers, Request, Response
from .resource import Input, Resource
from .sse import Event
from .version import __version__

__all__ = [
    "App", "BadGateway", "BadRequest", "Caller", "Client", "ConfigError", "Conflict", "ConnectError",
    "Event", "Forbidden", "GatewayTimeout", "HTTPError", "Headers", "Input", "InternalServerError",
    "LocalProtocolError", "MethodNotAllowed", "NotAcceptable", "NotFound", "PayloadTooLarge",
    "ProtocolError", "ReadTimeout", "RemoteProtocolError", "Request", "RequestTimeout",
    "Resource", "Response", "ResponseError", "ServiceUnavailable", "StreamBroken", "Timeout",
    "TooManyRequests",
    "TransportError", "Unauthorized", "UnsupportedMediaType", "XioError", "__version__",
    "app", "client", "node", "resource",
]  # fmt: skip
