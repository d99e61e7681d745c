"""The dialling side of a link: open a WebSocket on gevent sockets, under one deadline.

Theory of operation. ``connect`` resolves and connects, wraps the socket in TLS for ``wss://``
(gevent's SSLSocket: the stdlib's would block the hub), sends the upgrade request and checks
the 101 answer (both built and checked by the pure ``websocket`` module), all within one
``gevent.Timeout``; any failure is one ``ConnectError`` naming the URL. Bytes the server sent
behind its answer are handed to the connection, so its first frames are not lost. The
accepting side, and ws4py, are in ``xio.peering.transport``.

Whom a ``wss://`` peer must prove to be is the dialler's trust: ``peer_tls_context`` builds the
one context a node dials with, from the system's authorities or from ``--peer-ca`` (a private
CA), hostname checking on and TLS 1.2 at least. The certificate says only that the host dialled
is the one named; which node answers is still proven by the handshake (``handshake.py``).
"""

from __future__ import annotations

import os
import ssl
from base64 import b64encode
from urllib.parse import urlsplit

import gevent
import gevent.socket
import gevent.ssl

from ..errors import ConfigError, ConnectError
from . import websocket
from .transport import Transport, _Connection, no_delay, peer_address

__all__ = ["connect", "peer_tls_context"]


def connect(
    url: str,
    *,
    timeout: float = 5.0,
    max_message: int,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> Transport:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and return its transport.

    Block the calling greenlet until the upgrade is done, at most ``timeout`` seconds. For
    ``wss://`` verify the server with ``ssl_context`` (``peer_tls_context``), by default
    against the system's authorities. Raise ``ConnectError`` on any failure, a malformed URL included. Call
    ``start()`` on the transport once its callbacks are set.
    """
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        sock, leftover = _dial(url, timeout, ssl_context, headers or {})
    except gevent.Timeout as exc:
        if exc is not timer:
            raise  # someone else's deadline
        raise ConnectError(f"{url}: no WebSocket within {timeout:g}s") from exc
    except ssl.SSLCertVerificationError as exc:  # the operator's to fix: say what was wrong
        raise ConnectError(f"{url}: certificate verify failed: {exc.verify_message}") from exc
    except Exception as exc:  # socket, DNS, TLS, URL or upgrade failure
        raise ConnectError(f"{url}: {str(exc) or repr(exc)}") from exc
    finally:
        timer.close()
    # The server's first frames may come in the same read as its answer.
    connection = _Connection(sock, client=True, leftover=leftover)
    return Transport(connection, peer_address(sock), True, max_message)


def peer_tls_context(cafile: str | None = None, *, option: str = "--peer-ca") -> ssl.SSLContext:
    """Return the context that verifies ``wss://`` peers: against ``cafile``, or the system's.

    With ``cafile`` (PEM, one or more CA certificates) only those authorities are trusted.
    Hostnames are checked, TLS 1.2 at least. Raise ``ConfigError`` naming ``option`` and the
    file if it cannot be read or holds no usable certificate.
    """
    if cafile is None:
        context = ssl.create_default_context()  # honours SSL_CERT_FILE, as it always did
    else:
        try:
            with open(cafile, "rb") as handle:
                text = handle.read(4 * 1024 * 1024)
        except OSError as exc:
            raise ConfigError(f"{option} {cafile}: {exc.strerror or exc}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in text:
            raise ConfigError(f"{option} {cafile}: no PEM certificate in it")
        try:  # cafile: these authorities only, not the system's too
            context = ssl.create_default_context(cafile=cafile)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            reason = reason.replace("_", " ").lower() if reason.isupper() else reason
            raise ConfigError(f"{option} {cafile}: not a usable CA certificate: {reason}") from exc
    context.check_hostname = True  # a peer's certificate must name the host dialled
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
    return context


def _dial(url: str, timeout: float, ssl_context: ssl.SSLContext | None, headers: dict):
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConnectError("not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    address = (parts.hostname, parts.port or (443 if secure else 80))
    sock = gevent.socket.create_connection(address, timeout=timeout)
    try:
        no_delay(sock)
        if secure:  # gevent's SSLSocket takes any context; the stdlib's would block the hub
            context = ssl_context or peer_tls_context()
            sock = gevent.ssl.SSLSocket(sock=sock, server_hostname=parts.hostname, _context=context)
        key = b64encode(os.urandom(16))
        target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
        host = parts.netloc.rpartition("@")[2]
        sock.sendall(websocket.upgrade_request(target, host, key, headers))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk or len(received) > 16384:
                raise ConnectError("no complete answer to the upgrade request")
            received += chunk
        head, _, leftover = received.partition(b"\r\n\r\n")
        websocket.check_upgrade_answer(head, key)
        sock.settimeout(None)
        return sock, leftover
    except BaseException:
        sock.close()
        raise
