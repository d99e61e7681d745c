"""The one error tree of xio.

    XioError
    ├── HTTPError                 an HTTP status with a title and a description
    │   ├── BadRequest (400)      ├── Conflict (409)
    │   ├── Unauthorized (401)    ├── PayloadTooLarge (413)
    │   ├── Forbidden (403)       ├── UnsupportedMediaType (415)
    │   ├── NotFound (404)        ├── TooManyRequests (429)
    │   ├── MethodNotAllowed (405)├── InternalServerError (500)
    │   ├── NotAcceptable (406)   ├── BadGateway (502)
    │   └── RequestTimeout (408)  ├── ServiceUnavailable (503)
    │                             └── GatewayTimeout (504)
    ├── TransportError            the Python client could not complete an exchange
    │   ├── ConnectError          no connection to the server
    │   ├── Timeout               no answer in time
    │   │   └── ReadTimeout       the server did not answer in time (the Python client's)
    │   ├── ResponseError         the server's answer was not valid HTTP
    │   ├── ConnectionClosed      a link's connection is closed; nothing more can be sent
    │   └── QueueFull             a link's send queue is full: the frame was not queued
    ├── ProtocolError             the peering protocol was broken
    │   ├── LocalProtocolError    by this process (a bug or a misuse of the API)
    │   └── RemoteProtocolError   by the peer; ``reason`` is a short code that is counted
    └── ConfigError               bad command line, configuration or app spec
        └── StateError            the state directory is locked by another node, or a
                                  file in it cannot be read or written (names the file)

Handlers raise an ``HTTPError`` to answer with that status; anything else raised by a
handler becomes a 500. Library exceptions (msgpack, cryptography, ws4py, zeroconf) are
translated where they enter, with ``raise ... from exc``.
"""

from __future__ import annotations

from http import HTTPStatus


class XioError(Exception):
    """Base of every error raised by xio."""


class HTTPError(XioError):
    """Answer the current request with ``status`` and a JSON error body.

    ``title`` defaults to the standard reason phrase; ``description`` says what went
    wrong in words a client developer can act on; ``headers`` are added to the response.
    """

    status = 500

    def __init__(
        self,
        status: int | None = None,
        description: str | None = None,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if status is not None:
            self.status = int(status)
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        self.title = title or phrase
        self.description = description
        self.headers = dict(headers or {})
        super().__init__(
            f"{self.status} {self.title}" + (f": {description}" if description else "")
        )

    def to_dict(self) -> dict:
        """Return the JSON error body."""
        body = {"status": self.status, "title": self.title}
        if self.description:
            body["description"] = self.description
        return body


class _FixedStatus(HTTPError):
    """An HTTPError whose class names the status: ``NotFound("no such item")``."""

    def __init__(self, description=None, *, title=None, headers=None):
        super().__init__(self.status, description, title=title, headers=headers)


class BadRequest(_FixedStatus):
    status = 400


class Unauthorized(_FixedStatus):
    status = 401


class Forbidden(_FixedStatus):
    status = 403


class NotFound(_FixedStatus):
    status = 404


class NotAcceptable(_FixedStatus):
    status = 406


class RequestTimeout(_FixedStatus):
    status = 408


class Conflict(_FixedStatus):
    status = 409


class PayloadTooLarge(_FixedStatus):
    status = 413


class UnsupportedMediaType(_FixedStatus):
    status = 415


class TooManyRequests(_FixedStatus):
    status = 429


class InternalServerError(_FixedStatus):
    status = 500


class BadGateway(_FixedStatus):
    status = 502


class ServiceUnavailable(_FixedStatus):
    status = 503


class GatewayTimeout(_FixedStatus):
    status = 504


class MethodNotAllowed(HTTPError):
    """HTTP 405; ``allowed`` becomes the ``Allow`` header."""

    status = 405

    def __init__(self, allowed, description=None, *, title=None, headers=None):
        self.allowed = sorted(allowed)
        headers = {**(headers or {}), "Allow": ", ".join(self.allowed)}
        super().__init__(405, description, title=title, headers=headers)


def error_for(status: int, description: str | None = None) -> HTTPError:
    """Return the error of ``status``: its class here (``NotFound`` for 404), else HTTPError."""
    for cls in _FixedStatus.__subclasses__():
        if cls.status == status:
            return cls(description)
    return HTTPError(status, description)


class TransportError(XioError):
    """The Python client could not complete an exchange with the server."""


class ConnectError(TransportError):
    """No connection could be made to the server."""


class Timeout(TransportError):
    """No answer came within the timeout (every client names this failure so)."""


class ReadTimeout(Timeout):
    """The server did not answer within the timeout (the Python client's ``Timeout``)."""


class ResponseError(TransportError):
    """The server's answer was not valid HTTP."""


class ConnectionClosed(TransportError):
    """The connection is closed; nothing more can be sent on it."""


class StreamBroken(TransportError):
    """A streamed answer broke after its head (a link lost, a bad MAC, no piece in time):
    the node aborts the client's transfer, and a client sees an incomplete body."""


class QueueFull(TransportError):
    """A link's send queue holds its limit already: the frame was not queued.

    The peer reads more slowly than we send; the link is closed if it stays so.
    """


class ProtocolError(XioError):
    """The peering protocol was broken."""


class LocalProtocolError(ProtocolError):
    """This process broke the protocol: a bug or a misuse of the API."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. ``reason`` is a short code, counted per link."""

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}" if message else reason)


class ConfigError(XioError):
    """A bad command line, configuration file or app spec."""


class StateError(ConfigError):
    """The state directory is in use by another node, or a file in it cannot be used."""
