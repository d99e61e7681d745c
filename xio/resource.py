"""The resource tree: everything in xio is a resource at a path that answers methods.

Theory of operation. A ``Resource`` is a node with static children (by segment name),
at most one parameter child (``:id``), and optionally a handler, a stored value, or a
folder of static files. ``handle(req)`` walks ``req.url_path`` segment by segment, a
static segment winning over a parameter, and picks what answers:

1. the resource the path names exactly, if it has a handler or a stored value;
2. otherwise a static file below the deepest resource with a folder;
3. otherwise the deepest handler on the way, which receives the rest of the path in
   ``req.path`` (a handler answers its path and everything below that no deeper
   resource claims);
4. otherwise 404.

ABOUT on a resource of the tree that has no handler (``www/items`` above ``www/items/:id``)
describes that resource, its children first of all, rather than an ancestor's handler.

Methods: a handler with no declared methods accepts the standard ones (GET, HEAD,
POST, PUT, PATCH, DELETE); a declared list (``bind(..., methods=[...])`` or a
``methods:`` line in its docstring) is exact, custom names included. ABOUT and OPTIONS
are answered by the tree unless the handler declares them. HEAD runs a GET handler.

Declared inputs (``inputs=`` or ``input NAME: int, required, pattern=...`` docstring
lines) are looked up in the body (when it is an object) and then the query, coerced to
their type and put in ``req.inputs``; a missing or invalid one is a 400 naming it.
"""

from __future__ import annotations

import inspect
import logging
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from .errors import BadRequest, HTTPError, MethodNotAllowed, NotFound
from .request import AUTOMATIC_METHODS, STANDARD_METHODS, Request, Response, Verbs
from .responses import error_response

log = logging.getLogger("xio")

Handler = Callable[[Request], object]

_METHOD_NAME = re.compile(r"^[A-Z][A-Z0-9_-]*$")
_METHODS_LINE = re.compile(r"^\s*methods?\s*:\s*(.+?)\s*$", re.IGNORECASE)
_INPUT_LINE = re.compile(r"^\s*(?:input|param)\s+([A-Za-z_][\w-]*)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "any": object}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_NO_VALUE = object()
_VALUE_METHODS = frozenset({"GET", "HEAD"})  # what a stored value answers


@dataclass(frozen=True, slots=True)
class Input:
    """A declared input of a handler: its name, type, whether required, a pattern."""

    name: str
    type: str = "str"
    required: bool = False
    pattern: str | None = None
    default: object = None

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"input {self.name!r}: unknown type {self.type!r}")
        if self.pattern is not None:
            re.compile(self.pattern)

    @classmethod
    def parse(cls, name: str, spec) -> Input:
        """Build an input from a dict or a ``"int, required, pattern=^x$"`` string."""
        if isinstance(spec, Input):
            return spec
        if isinstance(spec, dict):
            return cls(name, **spec)
        fields: dict = {}
        for part in (p.strip() for p in str(spec).split(",")):
            if part in _TYPES:
                fields["type"] = part
            elif part == "required":
                fields["required"] = True
            elif part.startswith("pattern="):
                fields["pattern"] = part[len("pattern=") :]
            elif part.startswith("default="):
                fields["default"] = part[len("default=") :]
            elif part:
                raise ValueError(f"input {name!r}: cannot read {part!r}")
        return cls(name, **fields)

    def describe(self) -> dict:
        """Return the JSON description shown by ABOUT."""
        about = {"type": self.type, "required": self.required}
        if self.pattern:
            about["pattern"] = self.pattern
        return about

    def check(self, value):
        """Return ``value`` coerced to the declared type; raise ``BadRequest`` if it is not."""
        expected = self.type
        try:
            if expected == "int" and not isinstance(value, bool):
                value = int(value)
            elif expected == "float" and not isinstance(value, bool):
                value = float(value)
            elif expected == "bool" and not isinstance(value, bool):
                text = str(value).lower()
                if text not in _TRUE | _FALSE:
                    raise ValueError(value)
                value = text in _TRUE
            elif expected == "str" and not isinstance(value, str):
                raise ValueError(value)
            elif expected in ("int", "float"):
                raise ValueError(value)
        except (TypeError, ValueError):
            raise BadRequest(f"parameter {self.name!r} must be of type {expected}") from None
        if self.pattern and not re.fullmatch(self.pattern, str(value)):
            raise BadRequest(f"parameter {self.name!r} does not match pattern {self.pattern!r}")
        return value


def _parse_docstring(doc: str | None) -> tuple[str, list[str] | None, dict[str, Input]]:
    """Split a handler docstring into its prose, declared methods and inputs."""
    prose, methods, inputs = [], None, {}
    for line in (doc or "").splitlines():
        if match := _METHODS_LINE.match(line):
            methods = [m.strip().upper() for m in re.split(r"[,\s]+", match[1]) if m.strip()]
        elif match := _INPUT_LINE.match(line):
            inputs[match[1]] = Input.parse(match[1], match[2])
        else:
            prose.append(line)
    text = "\n".join(prose).strip()
    return inspect.cleandoc(text) if text else "", methods, inputs


class RawPath(str):
    """A ``url_path`` still percent-encoded, as it crossed the mesh: split, then decoded.

    Splitting comes first, so an encoded slash (``a%2Fb``) stays inside one segment.
    """

    __slots__ = ()


def _split(path: str) -> list[str]:
    if type(path) is RawPath:
        return [unquote(segment) for segment in path.split("/") if segment]
    return [segment for segment in path.split("/") if segment]


class Resource(Verbs):
    """A node of the resource tree; see the module docstring for how it dispatches."""

    #: Hosted by a node, a tree with ``threads > 0`` has its handlers run on that many
    #: threads of its own instead of the node's hub (``xio.threads``).
    threads = 0

    def __init__(self, name: str = "", parent: Resource | None = None) -> None:
        self.name = name
        self.parent = parent
        #: This resource's path from the root of its tree (a resource never moves).
        self.path = f"{parent.path}/{name}" if parent is not None and parent.path else name
        self.children: dict[str, Resource] = {}
        self.param_child: Resource | None = None
        self.handler: Handler | None = None
        self.methods: frozenset[str] = STANDARD_METHODS
        self.head_runs_get = True
        self.inputs: dict[str, Input] = {}
        self.doc = ""
        self.value = _NO_VALUE
        self.static_dir: Path | None = None

    # -- building the tree -----------------------------------------------------------

    def resource(self, path: str) -> Resource:
        """Return the resource at ``path`` below this one, creating it if needed."""
        node = self
        for segment in _split(path):
            if segment.startswith(":"):
                child = node.param_child
                if child is None:
                    child = node.param_child = Resource(segment, node)
                elif child.name != segment:
                    raise ValueError(f"{node.path or '/'} already has parameter {child.name}")
            else:
                child = node.children.get(segment)
                if child is None:
                    child = node.children[segment] = Resource(segment, node)
            node = child
        return node

    def bind(self, path: str, handler: Handler | None = None, *, methods=None, inputs=None):
        """Bind ``handler`` at ``path``; without a handler, return a decorator.

        ``methods`` lists the methods it answers (else the docstring's ``methods:`` line,
        else the standard ones); ``inputs`` maps names to ``Input`` specs.
        """
        if handler is None:
            return lambda func: self.bind(path, func, methods=methods, inputs=inputs)
        if not callable(handler):
            raise TypeError(f"cannot bind {handler!r}: not callable")
        node = self.resource(path)
        doc, doc_methods, doc_inputs = _parse_docstring(getattr(handler, "__doc__", None))
        declared = methods if methods is not None else doc_methods
        node.handler = handler
        node.doc = doc
        node.head_runs_get = True
        if declared is not None:
            names = {m.upper() for m in declared}
            node.head_runs_get = "HEAD" not in names
            bad = [m for m in names if not _METHOD_NAME.match(m)]
            if bad:
                raise ValueError(f"invalid method name(s) {bad} for {path!r}")
            if "GET" in names:
                names.add("HEAD")
            node.methods = frozenset(names)
        else:
            node.methods = STANDARD_METHODS
        node.inputs = {**doc_inputs, **{n: Input.parse(n, s) for n, s in (inputs or {}).items()}}
        return handler

    def serve_folder(self, path: str, folder: str | Path) -> None:
        """Serve the files below ``folder`` at ``path`` (index.html for folders)."""
        self.resource(path).static_dir = Path(folder).resolve()

    # -- in-process requests ---------------------------------------------------------

    def request(self, method: str, path: str = "", data=None, query=None, headers=None) -> Response:
        """Send a request to this tree in-process and return its response."""
        if isinstance(data, (bytes, bytearray)):
            req = Request(method, path, query=query, headers=headers, body=bytes(data))
        elif data is not None:
            req = Request(method, path, query=query, headers=headers, data=data)
        else:
            req = Request(method, path, query=query, headers=headers)
        return self.handle(req)

    def put(self, path: str = "", data=None, query=None, headers=None) -> Response:
        """Send PUT ``path`` in-process; on a path with no handler, store ``data`` there.

        A stored value is static content: GET returns it as a handler's return value
        would be returned. Storing works in-process only, never over HTTP.
        """
        node = self.resource(path) if path.strip("/") else self
        if node.handler is None:
            created = node.value is _NO_VALUE
            node.value = data
            node.methods = _VALUE_METHODS
            return Response({"stored": node.path}, 201 if created else 200)
        return self.request("PUT", path, data, query, headers)

    # -- dispatch -------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        """Answer ``req`` (its ``url_path`` is relative to this resource); never raise."""
        try:
            return self._dispatch(req)
        except HTTPError as exc:
            return error_response(exc)
        except Exception as exc:
            log.error("%s %s failed", req.method, req.url_path, exc_info=True)
            return error_response(HTTPError(500, f"{type(exc).__name__}: {exc}"))

    def _dispatch(self, req: Request) -> Response:
        segments = _split(req.url_path)
        node, depth, params = self, 0, {}
        handler_node, handler_depth, handler_params = None, 0, {}
        folder_node, folder_depth = None, 0
        while True:
            if node.handler is not None:
                handler_node, handler_depth = node, depth
                handler_params = dict(params) if params else {}
            if node.static_dir is not None:
                folder_node, folder_depth = node, depth
            if depth == len(segments):
                break
            segment = segments[depth]
            child = node.children.get(segment)
            if child is None and node.param_child is not None:
                child = node.param_child
                params[child.name[1:]] = segment
            if child is None:
                break
            node, depth = child, depth + 1

        if depth == len(segments) and (node.handler is not None or node.value is not _NO_VALUE):
            handler_node, handler_depth, handler_params = node, depth, params
        elif folder_node is not None and folder_depth >= handler_depth:
            found = _find_file(folder_node.static_dir, segments[folder_depth:])
            if found is not None:
                return _file_response(req, folder_node, found)
        if (
            depth == len(segments)
            and req.method == "ABOUT"
            and node is not handler_node
            and (handler_node is None or "ABOUT" not in handler_node.methods)
        ):
            return Response(node.describe())  # a path with no handler: say what is below it
        if handler_node is None:
            if folder_node is not None:
                found = _find_file(folder_node.static_dir, segments[folder_depth:])
                if found is not None:
                    return _file_response(req, folder_node, found)
            raise NotFound(f"no resource at {'/' + '/'.join(segments)!r}")
        req.path = "/".join(segments[handler_depth:])
        req.params = handler_params
        req.route = handler_node.path
        return handler_node._answer(req)

    def _answer(self, req: Request) -> Response:
        method = req.method
        if method not in self.methods:
            if method == "ABOUT":
                return Response(self.describe())
            allowed = self._allowed()
            if method == "OPTIONS":
                return Response(None, 204, headers={"Allow": ", ".join(sorted(allowed))})
            raise MethodNotAllowed(allowed, f"{method} is not allowed on {'/' + req.route!r}")
        if self.handler is None:  # a stored value
            return Response(self.value, content_type=None)
        if method == "HEAD" and self.head_runs_get:
            req.method = "GET"
        req._methods = self.methods
        if req._body:
            req.data  # noqa: B018 - parse now, so a malformed body is a 400 before the handler
        if self.inputs:
            req.inputs = self._check_inputs(req)
        result = self.handler(req)
        if isinstance(result, Response):
            return result
        response = req._response
        if response is None:  # the handler did not touch req.response
            return Response(result)
        if result is not None or response.content is None:
            response.content = result
        return response

    def _allowed(self) -> set[str]:
        return set(self.methods) | AUTOMATIC_METHODS

    def _check_inputs(self, req: Request) -> dict:
        body = req.data if isinstance(req.data, dict) else {}
        query = req.query
        values = {}
        for name, spec in self.inputs.items():
            value = body.get(name, query.get(name, _NO_VALUE))
            if value is _NO_VALUE or value is None:
                if spec.required:
                    raise BadRequest(f"missing required parameter {name!r}")
                values[name] = spec.default
            else:
                values[name] = spec.check(value)
        return values

    def describe(self) -> dict:
        """Return this resource's description: name, methods, doc, children, inputs."""
        children = sorted(self.children)
        if self.param_child is not None:
            children.append(self.param_child.name)
        answers = self.handler is not None or self.value is not _NO_VALUE
        return {
            "name": self.name,
            "path": self.path,
            "methods": sorted(self._allowed()) if answers else ["ABOUT"],
            "doc": self.doc,
            "children": children,
            "inputs": {name: spec.describe() for name, spec in self.inputs.items()},
        }


def _find_file(root: Path | None, segments: list[str]) -> Path | None:
    """Return the file ``segments`` names below ``root``, never anything outside it."""
    if root is None or any(
        s in ("..", ".") or "\\" in s or "\0" in s or "/" in s for s in segments
    ):
        return None
    candidate = root.joinpath(*segments)
    try:
        candidate = candidate.resolve()
    except (OSError, RuntimeError):
        return None
    if candidate != root and root not in candidate.parents:
        return None
    if candidate.is_dir():
        candidate = candidate / "index.html"
    return candidate if candidate.is_file() else None


def _file_response(req: Request, node: Resource, path: Path) -> Response:
    if req.method not in ("GET", "HEAD", "ABOUT", "OPTIONS"):
        raise MethodNotAllowed({"GET", "HEAD", "OPTIONS"}, f"{req.method} is not allowed on a file")
    if req.method == "OPTIONS":
        return Response(None, 204, headers={"Allow": "GET, HEAD, OPTIONS"})
    if req.method == "ABOUT":
        return Response({"name": path.name, "path": node.path, "methods": ["GET", "HEAD"]})
    content_type, encoding = mimetypes.guess_type(path.name)
    if (
        content_type
        and content_type.startswith("text/")
        or content_type
        in (
            "application/javascript",
            "application/json",
        )
    ):
        content_type += "; charset=utf-8"
    headers = {"Content-Length": str(path.stat().st_size)}
    if encoding:
        headers["Content-Encoding"] = encoding
    return Response(
        path.open("rb"), content_type=content_type or "application/octet-stream", headers=headers
    )
