"""Requests, responses and their headers: the values a handler sees and returns.

One ``Request`` type serves every way a request arrives (HTTP, in-process, over the
mesh), so a handler never knows or cares which. Parsing is lazy where it is free to be
(query string, headers from a WSGI environ, the profile header) and strict where a
client's mistake must be reported: a malformed body raises ``BadRequest`` as soon as
the resource tree asks for ``req.data``, before the handler runs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from urllib.parse import parse_qsl, urlencode

from . import content as _content
from .errors import BadRequest

#: Methods every handler accepts unless it declares its own list.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
#: Methods the resource tree answers by itself unless a handler declares them.
AUTOMATIC_METHODS = frozenset({"ABOUT", "OPTIONS"})
#: Header whose JSON object becomes ``req.profile``.
PROFILE_HEADER = "X-Xio-Profile"

_UNSET = object()


class Caller:
    """Who sent a request, as far as this node can tell (``req.client``).

    A request that crossed the mesh names its ingress node: ``node_id`` is authenticated (the
    destination checked the request's end-to-end MAC, keyed from both node keys), ``name`` is
    the certificate's name in a closed mesh (else the name the node gave itself) and ``member``
    is true only when the ingress holds a valid certificate of this node's mesh authority. A
    direct HTTP request names its TCP peer in ``address`` and ``port``; an in-process call
    (``app.get(...)``) has neither.
    """

    __slots__ = ("address", "port", "node_id", "name", "member")

    def __init__(
        self,
        *,
        address: str | None = None,
        port: int | None = None,
        node_id: str | None = None,
        name: str | None = None,
        member: bool = False,
    ) -> None:
        self.address = address
        self.port = port
        self.node_id = node_id
        self.name = name
        self.member = member

    @classmethod
    def of_environ(cls, environ: dict) -> Caller:
        """Return the TCP peer of a WSGI request."""
        port = environ.get("REMOTE_PORT")
        try:
            port = int(port) if port is not None else None
        except ValueError:
            port = None
        return cls(address=environ.get("REMOTE_ADDR"), port=port)

    @property
    def via_mesh(self) -> bool:
        """Tell whether the request came over a link from another node."""
        return self.node_id is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Caller):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in self.__slots__))

    def __repr__(self) -> str:
        if self.node_id is not None:
            member = ", member" if self.member else ""
            return f"<Caller node {self.node_id} {self.name!r}{member}>"
        if self.address is not None:
            return f"<Caller {self.address}:{self.port}>"
        return "<Caller in-process>"


class Headers(MutableMapping):
    """A case-insensitive mapping of header names to values that keeps the names' case.

    A name may carry several values (two ``Set-Cookie`` lines): ``add`` appends one,
    ``fields()`` gives every ``(name, value)`` line as it goes on the wire, and
    ``get_all`` a name's values. The mapping view (``headers[name]``, ``items()``)
    shows one entry per name, its values joined with a comma as HTTP allows.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] | None = None):
        # lower-case name -> (name as first given, value, further values...)
        self._items: dict[str, tuple[str, ...]] = {}
        if items:
            kind = type(items)
            if kind is tuple or kind is list:  # frames' and WSGI's pairs: no ABC check
                pairs = items
            elif isinstance(items, Headers):
                pairs = items.fields()
            else:
                pairs = items.items() if isinstance(items, Mapping) else items
            for name, value in pairs:
                self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Add a value to a name, keeping the values it had: each is its own line."""
        key = name.lower()
        old = self._items.get(key)
        self._items[key] = (*old, str(value)) if old else (name, str(value))

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in the order given (``[]`` when absent)."""
        entry = self._items.get(name.lower())
        return list(entry[1:]) if entry else []

    def fields(self) -> list[tuple[str, str]]:
        """Return every ``(name, value)`` line, a repeated name once per value."""
        return [(entry[0], value) for entry in self._items.values() for value in entry[1:]]

    def __getitem__(self, name: str) -> str:
        entry = self._items[name.lower()]
        return entry[1] if len(entry) == 2 else ", ".join(entry[1:])

    def get(self, name: str, default=None):  # the mixin's goes through a KeyError
        entry = self._items.get(name.lower())
        if entry is None:
            return default
        return entry[1] if len(entry) == 2 else ", ".join(entry[1:])

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, str(value))

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (entry[0] for entry in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self.fields()!r})"

    def items(self):  # type: ignore[override]  # cheaper than the mixin's
        return [
            (entry[0], entry[1] if len(entry) == 2 else ", ".join(entry[1:]))
            for entry in self._items.values()
        ]

    @staticmethod
    def fields_of(headers) -> list[tuple[str, str]]:
        """Return the lines of ``headers``: a ``Headers`` (repeats kept), or a plain mapping
        an app put on its response, or None."""
        if isinstance(headers, Headers):
            return headers.fields()
        return list(headers.items()) if headers else []

    def copy(self) -> Headers:
        """Return an independent copy."""
        clone = Headers()
        clone._items = dict(self._items)
        return clone


@functools.lru_cache(maxsize=256)
def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def _environ_headers(environ: dict) -> Headers:
    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = value
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["Content-Length"] = environ["CONTENT_LENGTH"]
    return headers


class Response:
    """What a request gets back: ``status``, ``content``, ``content_type``, ``headers``.

    ``content`` is a Python value (see ``xio.content``); ``content_type`` is ``None``
    until someone sets it, and is then chosen from the content when the response is
    encoded.
    """

    __slots__ = ("status", "content", "content_type", "headers")

    def __init__(
        self, content=None, status: int = 200, content_type: str | None = None, headers=None
    ):
        self.status = status
        self.content = content
        self.content_type = content_type
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)

    @property
    def ok(self) -> bool:
        """Tell whether the status is a success (2xx or 3xx)."""
        return 200 <= self.status < 400

    @property
    def text(self) -> str:
        """Return the content as text."""
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, (bytes, bytearray)):
            return bytes(self.content).decode("utf-8", "replace")
        body, _ = _content.encode(self.content, None)
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else ""

    def json(self):
        """Return the content as a JSON value, decoding it if it arrived as text."""
        if isinstance(self.content, (str, bytes, bytearray)):
            return json.loads(self.content)
        return self.content

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.content_type or ''}>".replace(" >", ">")


class Request:
    """One request as a handler sees it.

    ``method``: upper-case method name; ``path``: the part of the path below the
    resource that answers (``''`` at the resource itself); ``query``: dict of query
    parameters (first value of each; ``query_all`` has every value); ``data``: the
    decoded body (dict for JSON objects and forms, ``{}`` when empty, ``bytes`` for
    other types); ``body``: the raw bytes; ``headers``: case-insensitive;
    ``params``: path parameters; ``profile``: the JSON object sent in the
    ``X-Xio-Profile`` header (``{}`` when absent); ``client``: who sent it (``Caller``);
    ``response``: the ``Response`` being
    built, whose attributes a handler may set. ``req.GET``, ``req.POST``, ... are true
    only for the request's own method.
    """

    __slots__ = (
        "method", "path", "url_path", "route", "params", "inputs", "_response",
        "_query", "_query_string", "_headers", "_environ", "_body", "_data", "_profile",
        "_methods", "_client", "_source",
    )  # fmt: skip

    def __init__(
        self,
        method: str = "GET",
        path: str = "",
        *,
        query: Mapping | str | None = None,
        headers=None,
        body: bytes = b"",
        data=_UNSET,
        environ: dict | None = None,
        client: Caller | None = None,
        source=None,
    ) -> None:
        self.method = method.upper()
        self.url_path = path
        self.path = path
        self.route = ""
        self.params: dict[str, str] = {}
        self.inputs: dict = {}
        self._response: Response | None = None
        self._query = dict(query) if isinstance(query, Mapping) else None
        self._query_string = query if isinstance(query, str) else ""
        self._headers = (
            headers if headers is None or isinstance(headers, Headers) else Headers(headers)
        )
        self._environ = environ
        self._body = body
        self._data = data
        self._profile = None
        self._methods: frozenset = STANDARD_METHODS
        self._client = client
        # A body not read yet (large, or chunked): ``read_all()`` or ``pieces()`` once.
        self._source = source

    # -- query ---------------------------------------------------------------------------

    @property
    def query(self) -> dict:
        """Return the query parameters, first value of each."""
        if self._query is None:
            self._query = {}
            for name, value in parse_qsl(self._query_string, keep_blank_values=True):
                self._query.setdefault(name, value)
        return self._query

    @property
    def query_all(self) -> dict[str, list[str]]:
        """Return every value of every query parameter."""
        if not self._query_string and self._query:
            return {k: v if isinstance(v, list) else [v] for k, v in self._query.items()}
        result: dict[str, list[str]] = {}
        for name, value in parse_qsl(self._query_string, keep_blank_values=True):
            result.setdefault(name, []).append(value)
        return result

    @property
    def query_string(self) -> str:
        """Return the raw query string (rebuilt from ``query`` for in-process requests)."""
        if self._query_string or not self._query:
            return self._query_string
        return urlencode(self._query, doseq=True)

    @property
    def GET(self) -> bool:  # noqa: N802 - the seed README's spelling
        return self.method == "GET"

    @property
    def POST(self) -> bool:  # noqa: N802
        return self.method == "POST"

    @property
    def response(self) -> Response:
        """Return the response being built for this request (created on first use)."""
        if self._response is None:
            self._response = Response()
        return self._response

    # -- headers and body ------------------------------------------------------------------

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return one request header, without building them all from a WSGI environ."""
        if self._headers is None and self._environ is not None:
            return self._environ.get(_environ_key(name), default)
        return self.headers.get(name, default)

    @property
    def headers(self) -> Headers:
        """Return the request headers (case-insensitive)."""
        if self._headers is None:
            self._headers = _environ_headers(self._environ) if self._environ else Headers()
        return self._headers

    @property
    def content_type(self) -> str | None:
        """Return the request's Content-Type header, if any."""
        if self._environ is not None and self._headers is None:
            return self._environ.get("CONTENT_TYPE") or None
        return self.headers.get("Content-Type")

    @property
    def body(self) -> bytes:
        """Return the raw body bytes (in-process data is encoded on demand).

        A body that is not read yet (large, chunked, or streamed over the mesh) is read here,
        whole, within the server's body limit (413 past it).
        """
        if self._source is not None:
            source, self._source = self._source, None
            self._body = source.read_all()
        if not self._body and self._data is not _UNSET and self._data is not None:
            encoded, content_type = _content.encode(self._data, None)
            if isinstance(encoded, bytes):
                self._body = encoded
                self.headers.setdefault("Content-Type", content_type)
        return self._body

    @property
    def stream(self) -> Iterator[bytes]:
        """Return the body as an iterator of byte pieces, read as they are taken: a body of
        any size, held a piece at a time. Once only, and not after ``body``."""
        if self._source is not None:
            source, self._source = self._source, None
            return source.pieces()
        return iter((self.body,) if self.body else ())

    @property
    def body_pending(self) -> bool:
        """Tell whether the body is still to be read (``body`` or ``stream`` reads it)."""
        return self._source is not None

    def detach_body(self):
        """Take the body not read yet (its ``pieces()``, ``consumed``), to pass it on whole:
        the node streams it across the mesh. None when it was read, or is in hand."""
        source, self._source = self._source, None
        return source

    @property
    def data(self):
        """Return the decoded body; raise ``BadRequest`` if it does not parse.

        An empty body reads as a new ``{}`` each time: it is not kept as data, which
        ``body`` would then encode, turning an empty body into ``{}`` with a Content-Type.
        """
        if self._data is _UNSET:
            if not self._body:
                return {}
            self._data = _content.decode(self._body, self.content_type)
        return self._data

    @property
    def profile(self) -> dict:
        """Return the caller's profile, a JSON object from the ``X-Xio-Profile`` header."""
        if self._profile is None:
            raw = self.header(PROFILE_HEADER)
            if not raw:
                self._profile = {}
            else:
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    raise BadRequest(f"malformed {PROFILE_HEADER} header: {exc}") from exc
                if not isinstance(value, dict):
                    raise BadRequest(f"{PROFILE_HEADER} header must be a JSON object")
                self._profile = value
        return self._profile

    @property
    def client(self) -> Caller:
        """Return who sent the request (``Caller``): a mesh node, a TCP peer, or in-process."""
        if self._client is None:
            self._client = Caller.of_environ(self._environ) if self._environ else Caller()
        return self._client

    @property
    def client_address(self) -> str | None:
        """Return the peer address of an HTTP request, if known."""
        return self._environ.get("REMOTE_ADDR") if self._environ else None

    def __getattr__(self, name: str) -> bool:
        # req.PUT, req.ABOUT, req.MYMETHOD...: true only for the request's own method.
        # Unknown upper-case names fail loudly so that a typo is not silently False.
        if name.isupper() and (name in self._methods or name in AUTOMATIC_METHODS):
            return self.method == name
        raise AttributeError(
            f"'Request' has no attribute {name!r}"
            + (f" (method {name} is not declared by this resource)" if name.isupper() else "")
        )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url_path!r}>"


class Verbs:
    """The request verbs shared by a resource tree and the network client.

    A subclass provides ``request(method, path, data, query, headers)``; the same calls
    then work in-process (``app.get('www/items')``) and over HTTP
    (``xio.client(url).get('items')``), returning the same ``Response`` type.
    """

    def request(self, method: str, path: str = "", data=None, query=None, headers=None):
        raise NotImplementedError

    def get(self, path: str = "", query=None, headers=None) -> Response:
        """Send GET ``path``."""
        return self.request("GET", path, query=query, headers=headers)

    def head(self, path: str = "", query=None, headers=None) -> Response:
        """Send HEAD ``path``; the answer has headers and no content."""
        return self.request("HEAD", path, query=query, headers=headers)

    def options(self, path: str = "", query=None, headers=None) -> Response:
        """Send OPTIONS ``path``."""
        return self.request("OPTIONS", path, query=query, headers=headers)

    def about(self, path: str = "") -> Response:
        """Return the description of the resource at ``path`` (the ABOUT method)."""
        return self.request("ABOUT", path)

    def post(self, path: str = "", data=None, query=None, headers=None) -> Response:
        """Send POST ``path`` with ``data`` as the body."""
        return self.request("POST", path, data, query, headers)

    def put(self, path: str = "", data=None, query=None, headers=None) -> Response:
        """Send PUT ``path`` with ``data`` as the body."""
        return self.request("PUT", path, data, query, headers)

    def patch(self, path: str = "", data=None, query=None, headers=None) -> Response:
        """Send PATCH ``path`` with ``data`` as the body."""
        return self.request("PATCH", path, data, query, headers)

    def delete(self, path: str = "", data=None, query=None, headers=None) -> Response:
        """Send DELETE ``path``."""
        return self.request("DELETE", path, data, query, headers)
