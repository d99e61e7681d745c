"""The node's HTTP front: which part of the mesh answers a path.

    /                        the mesh's apps and where they run (or the main app, if any);
                             the mesh map page (/_xio/ui) for an admin's browser
    /_xio/...                this node's admin resources: loopback clients only, or every
                             client with the admin token (xio.node.access); /_xio/ws and
                             /_xio/client-ws (WebSocket upgrades only): anyone
    /~<node>/<app>/<path>    app ``<app>`` on that node only (node id or unique name)
    /<app>/<path>            app ``<app>``'s ``www/<path>``: here if hosted here, else on
                             the nearest node that hosts it (ties spread at random)
    anything else            the main app (``app.main()``), or 404 unknown app

``X-Xio-Timeout: <seconds>`` sets the request's deadline (default 30 s, or the app's
``--app-timeout``); past it the answer is 504, wherever the request is. ``X-Xio-Retries: N``
sets how often a request the mesh failed goes again (xio.node.policy; README, "Policies").
``X-Xio-Trace`` from a client that may read ``/_xio/`` asks every node on the way to time the request (``xio.peering.trace``): the answer carries the
times in its own ``X-Xio-Trace``; from other clients the header is ignored.
``GET /_xio/ws`` or ``/_xio/client-ws`` without a WebSocket upgrade is 426.

Theory of operation (docs/PROTOCOL.md, section 11). The first segments (app, ``~node``) are
decoded to route; the rest of the path stays exactly as the client sent it (percent-encoded)
and is decoded once, segment by segment, by the app's resource tree, here or at the far end:
``/app/a%2Fb/c`` gives the app the segments ``a/b`` and ``c`` either way. A request that
leaves as a ``req`` carries the client's end-to-end headers as received (case, order,
repeats, ``Host``), never a client's ``X-Xio-Via``; values that no frame may carry are the
client's 4xx here (400, 414, 431). A ``res`` becomes HTTP without its hop-by-hop and framing
headers (the HTTP writer frames the body itself), repeats kept; what HTTP cannot carry is a
502. Answers of apps hosted here go through the same header rules.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from typing import Protocol
from urllib.parse import quote, unquote

import gevent

from ..budget import Budget
from ..errors import (
    BadRequest,
    Conflict,
    GatewayTimeout,
    HTTPError,
    LocalProtocolError,
    NotFound,
    PayloadTooLarge,
)  # fmt: skip
from ..peering import codec
from ..peering.codec import DEFAULT_HOPS, MAX_BODY, RequestFrame, ResponseFrame
from ..peering.names import MAX_NAME, is_app_name
from ..peering.streams import Streamed
from ..peering.trace import TRACE, append_entry, header_value
from ..peering.via import VIA
from ..request import Headers, Request, Response
from ..resource import Resource
from ..responses import error_response, header_fields
from ..server import RAW_FIELDS, RAW_TARGET
from .access import admin_refusal
from .admin import PUBLIC_PAGES, AdminNode, admin_resource
from .config import NodeConfig
from .headers import end_to_end, first_bad_header
from .metrics import Metrics, method_label
from .policy import (
    ATTEMPTS_HEADER,
    REFUSED,
    RETRIES_HEADER,
    RETRY_PAUSE,
    Admission,
    Outcome,
    Policies,
    classify,
    parse_retries,
    retry_after_header,
    verdict_of,
)
from .ui import asset_response, prefers_html

log = logging.getLogger("xio.node")

TIMEOUT_HEADER = "X-Xio-Timeout"
MAX_TIMEOUT = 3600.0
#: Room kept in a req's headers for the trail relays append (255 hops of 33 bytes).
_TRAIL_ROOM = 16 * 1024
#: What a raw path keeps as it is: RFC 3986 pchar, "/" and "%" (escapes are checked apart).
_PATH_SAFE = "/%!$&'()*+,;=:@"
#: The answer at "/" depends on both: the page for an admin's browser, else the JSON listing.
_VARY = {"Vary": "Accept, Authorization"}
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class RouterForwarder(Protocol):
    """What the router hands a request for another node to (``forwarding.Forwarder``)."""

    counts: Counter[str]

    def route(self, frame: RequestFrame, deadline: float) -> ResponseFrame: ...


class RouterNode(AdminNode, Protocol):
    """What the router reads of its node (``xio.node.node.Node``)."""

    id: str
    name: str
    apps: dict[str, Resource]
    main_app: Resource | None
    in_flight: Budget
    refused: Counter[str]
    forwarder: RouterForwarder
    metrics: Metrics
    policy: Policies

    @property
    def config(self) -> NodeConfig: ...
    def answer_locally(
        self, app: Resource, req: Request, deadline: float, trail: str = ""
    ) -> Response: ...


class Router:
    """Answer HTTP requests for one node."""

    def __init__(self, node: RouterNode, *, admin_token: str | None = None) -> None:
        self.node = node
        self.admin = admin_resource(node)
        self._admin_token = admin_token  # None: /_xio/ answers loopback clients only

    def handle(self, req: Request) -> Response:
        """Answer ``req``; never raise; count it for /_xio/metrics (xio.node.metrics)."""
        started = time.perf_counter()
        app = self._app_label(req.url_path)  # before routing rewrites url_path
        response, forwarded = self._handle(req)
        where = "forwarded" if forwarded else "local"
        self.node.metrics.requests.observe(app, method_label(req.method), response.status,
                                           where, time.perf_counter() - started)  # fmt: skip
        return response

    def _app_label(self, path: str) -> str:
        """Return the app a path names if it is hosted here or routed to, else a bucket."""
        first, _, rest = path.lstrip("/").partition("/")
        if first.startswith("~"):
            first = rest.partition("/")[0]
        node = self.node
        if first in node.apps or node.table.hosts_of(first):
            return first
        if first == "_xio" or (not first and node.main_app is None):
            return "_xio"
        return "_main" if node.main_app is not None else "_unknown"

    def _handle(self, req: Request) -> tuple[Response, bool]:
        """Answer ``req``; say whether the answer came over a link (it carries X-Xio-Via)."""
        if req.url_path.startswith("/_xio/"):
            # The admin resources answer at once and hold nothing: an operator must be able to
            # look at a node whose budget is spent.
            return self._answer(req), False
        in_flight = self.node.in_flight
        if not in_flight.take():  # the node-wide budget, shared with every link
            self.node.refused["in_flight_budget"] += 1
            busy = "too many requests in flight at this node"
            return error_response(HTTPError(503, busy, headers={"Retry-After": "1"})), False
        try:
            response = self._answer(req)
        finally:
            in_flight.give()
        forwarded = VIA in response.headers
        if forwarded and not self._may_see_topology(req):
            del response.headers[VIA]  # the ids of the nodes on the way: topology
        return response, forwarded

    def _may_see_topology(self, req: Request) -> bool:
        """Tell whether ``req``'s client may learn which nodes serve what: an admin client.

        Node ids on the way (``X-Xio-Via``) and the hosts of each app are the mesh's topology,
        shown to the clients that may read ``/_xio/`` (loopback, or the admin token) only.
        """
        return admin_refusal(req.client.address, req.header("Authorization"),
                             self._admin_token) is None  # fmt: skip

    def _answer(self, req: Request) -> Response:
        try:
            return self._route(req)
        except HTTPError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug of ours: a 500 that says so, the traceback in the log
            log.exception("routing %s %s failed", req.method, req.url_path)
            return error_response(HTTPError(500, f"{type(exc).__name__}: {exc}"))

    def _route(self, req: Request) -> Response:
        path = req.url_path
        first, _, rest = path.lstrip("/").partition("/")
        if first == "_xio":
            if rest in ("ws", "client-ws"):  # only upgrades, served by the server itself
                raise HTTPError(426, f"{path} takes a WebSocket upgrade: send Upgrade: websocket",
                                headers={"Upgrade": "websocket"})  # fmt: skip
            if rest.partition("/")[0] not in PUBLIC_PAGES:
                self._check_admin_access(req)
            req.url_path = rest
            return self.admin.handle(req)
        node = self.node
        if not first and node.main_app is None:
            if (req.method in ("GET", "HEAD") and prefers_html(req.header("Accept"))
                    and self._may_see_topology(req)):  # fmt: skip
                page = asset_response("index.html")  # a browser of an admin: the mesh map
                page.headers.update(_VARY)
                return page
            return (
                Response(self.listing(hosts=self._may_see_topology(req)), headers=_VARY)
                if req.method in ("GET", "HEAD")
                else error_response(
                    HTTPError(405, "the mesh listing answers GET", headers={"Allow": "GET, HEAD"})
                )
            )
        if req.header(VIA) is not None:  # only nodes write the trail, never a client
            req.headers.pop(VIA, None)
        # Routing reads the decoded first segments; the rest stays as the client sent it, so
        # that "%2F" is still not "/" when the app splits it (docs/PROTOCOL.md, 11).
        raw = raw_path(req)
        raw_first, slash, raw_rest = raw.lstrip("/").partition("/")
        first, below = unquote(raw_first), slash + raw_rest
        app = unquote(raw_rest.partition("/")[0]) if first.startswith("~") else first
        deadline = time.monotonic() + self._timeout(req, app)
        if req.header(RETRIES_HEADER) is not None:  # checked here too: a local app's call
            parse_retries(req.header(RETRIES_HEADER))
        if first.startswith("~"):
            return self._pinned(req, first[1:], below, deadline)
        if first in node.apps and node.table.serves(first, node.id):
            req.url_path = below
            return self._local(node.apps[first], req, deadline)
        if is_app_name(first) and node.table.hosts_of(first):
            return self._forward(req, None, first, below, deadline)  # a host chosen there
        if node.main_app is not None:
            req.url_path = raw
            return self._local(node.main_app, req, deadline)
        if not is_app_name(first):
            raise BadRequest(f"malformed mesh path {path!r}: {first!r} cannot be an app name")
        raise NotFound(f"no app {first!r} in the mesh")

    def _check_admin_access(self, req: Request) -> None:
        """Refuse, counted, a client that may not read the admin pages (xio.node.access)."""
        address = req.client.address  # the TCP peer: never a header the client wrote
        refusal = admin_refusal(address, req.header("Authorization"), self._admin_token)
        if refusal is not None:
            self.node.refused[refusal.reason] += 1
            # debug: a scanner must not fill the log; the counter is what an operator reads.
            log.debug("refused %s %s from %s: %s", req.method, req.url_path, address,
                      refusal.reason)  # fmt: skip
            raise HTTPError(refusal.status, refusal.description, headers=refusal.headers)

    def _local(self, app, req: Request, deadline: float) -> Response:
        """Answer ``req`` with an app hosted here, under the rules of a forwarded answer."""
        # The HTTP writer frames the answer and drops the app's connection fields.
        started = time.monotonic()
        response = self.node.answer_locally(app, req, deadline)
        if req.header(TRACE) is not None and self._may_see_topology(req):  # one hop: this one
            spent = time.monotonic() - started
            response.headers[TRACE] = header_value(append_entry((), self.node.id, spent, spent))
        return response

    def _timeout(self, req: Request, app: str = "") -> float:
        raw = req.header(TIMEOUT_HEADER)
        if raw is None:
            own = self.node.policy.timeout(app)  # --app-timeout, else --request-timeout
            return min(own, self.node.config.max_ttl) if own else self.node.config.request_timeout
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:  # also refuses NaN
            raise BadRequest(f"{TIMEOUT_HEADER} must be a positive number of seconds")
        return min(seconds, MAX_TIMEOUT, self.node.config.max_ttl)

    def _pinned(self, req: Request, token: str, raw_rest: str, deadline: float) -> Response:
        raw_app, slash, raw_below = raw_rest.lstrip("/").partition("/")
        app, below = unquote(raw_app), slash + raw_below
        if not token or not app or not is_app_name(app):
            raise BadRequest("malformed mesh path: expected /~<node id or name>/<app>/<path>")
        node = self.node
        if token in (node.id, node.name) and app in node.apps and node.table.serves(app, node.id):
            req.url_path = below
            return self._local(node.apps[app], req, deadline)
        matches = node.table.find_nodes(token)
        if not matches:
            raise NotFound(f"no node {token!r} in the mesh")
        if len(matches) > 1:
            raise Conflict(f"{len(matches)} nodes are named {token!r}: use a node id")
        target = matches[0]
        if not node.table.serves(app, target):
            raise NotFound(f"app {app!r} is pinned to other nodes here (--pin-app)")
        if target == node.id:
            raise NotFound(f"no app {app!r} on node {node.name}")
        if not any(host == target for _, host in node.table.hosts_of(app)):
            raise NotFound(f"no app {app!r} on node {token}")
        return self._forward(req, target, app, below, deadline)

    def _forward(
        self, req: Request, dst: str | None, app: str, path: str, deadline: float
    ) -> Response:
        """Carry ``req`` to node ``dst`` (None: a host of ``app``) as ``req`` frames.

        A failed attempt goes again under the app's retry policy (xio.node.policy): to
        another host when ``dst`` is None and one is left, else to the same node; every
        attempt within the one deadline. ``path`` is raw, below the app.
        """
        if time.monotonic() >= deadline:
            raise GatewayTimeout("deadline passed")
        # A large or chunked body not read yet is streamed (docs/PROTOCOL.md 4.2), if the
        # next hop takes it, else read whole here; a body read already crosses whole.
        source = req.detach_body()
        body = b"" if source is not None else _whole(req.body)
        headers = request_headers(req)
        check_request_fits(req.method, path, req.query_string, headers)
        # A trace shows the nodes on the way, as X-Xio-Via does: admin clients only.
        traced = req.header(TRACE) is not None and self._may_see_topology(req)
        node = self.node
        policy = node.policy
        asked = req.header(RETRIES_HEADER)
        retry = policy.retry_policy(app, None if asked is None else parse_retries(asked))
        tried: list[str] = []
        attempt, answer, outcome = 0, None, Outcome.FINAL
        while True:
            chosen = self._choose_host(app, dst, tried, time.monotonic())
            if chosen is None:
                if answer is None:  # every host's breaker is open: none was asked
                    return self._circuit_open(app, dst)
                break
            target, admission = chosen
            verdict = None
            try:
                if target in tried:  # the same node again: give the table time to re-route
                    pause = RETRY_PAUSE * attempt
                    if time.monotonic() + pause >= deadline:
                        break
                    gevent.sleep(pause)
                attempt += 1
                if source is not None and not node.forwarder.can_stream_body(target):
                    body, source = _whole(source.read_all()), None  # within --max-body
                answer, outcome = self._send(req, target, app, path, headers, traced, deadline,
                                             body, source)  # fmt: skip
                verdict = verdict_of(outcome)
            finally:  # a probe always reports, even when the client went away meanwhile
                policy.breakers.record(target, admission, verdict, time.monotonic())
            tried.append(target)
            # A body streamed even in part is gone: that request is never sent twice.
            replayable = source is None or not source.consumed
            unretried = retry.refusal(outcome, req.method, attempt, replayable)
            if unretried is not None:
                if unretried in policy.retries:
                    policy.retries[unretried] += 1
                break
            policy.retries["retried"] += 1
            if type(answer) is Streamed:  # a failed answer we drop: cancel the rest of it
                answer.body.close()
        if attempt > 1:
            policy.retries["recovered" if outcome is Outcome.ANSWERED else "exhausted"] += 1
        response = frame_to_response(answer, node.forwarder.counts)
        if attempt > 1:
            response.headers[ATTEMPTS_HEADER] = str(attempt)
        if traced:  # entries checked by the forwarder, in place of any the app set
            head = answer.head if type(answer) is Streamed else answer
            response.headers.pop(TRACE, None)
            if head.trace:
                response.headers[TRACE] = header_value(head.trace)
        return response

    def _send(
        self, req: Request, dst: str, app: str, path: str, headers: tuple, traced: bool,
        deadline: float, body: bytes, source,
    ):  # fmt: skip
        """Send one attempt of ``req`` to ``dst``, with ``body`` or the stream ``source``;
        return its answer and what it proves."""
        try:
            frame = RequestFrame(
                0, dst, app, req.method, path, req.query_string, headers, body,
                hops=DEFAULT_HOPS + 1, ttl_ms=0, trace=True if traced else None,
                more=True if source is not None else None,
            )  # fmt: skip
            answer = self.node.forwarder.route(frame, deadline, source)
        except LocalProtocolError as exc:  # a client's value the frame rules refuse: its fault
            raise BadRequest(f"the request cannot cross the mesh: {exc}") from None
        head = answer.head if type(answer) is Streamed else answer  # judged by its head
        return answer, classify(head.status, head.headers, head.body, self.node.id, dst)

    def _choose_host(
        self, app: str, pinned: str | None, tried: list[str], now: float
    ) -> tuple[str, Admission] | None:
        """Return the node to ask next, and its breaker's admission; None if none may be.

        Nearest first, at random among equals; hosts not yet tried before those tried.
        """
        if pinned is not None:
            candidates = [pinned]
        else:
            node = self.node
            table = node.table
            hosts = [(cost, host) for cost, host in table.hosts_of(app)
                     if host != node.id and table.serves(app, host)]  # fmt: skip
            pool = [pair for pair in hosts if pair[1] not in tried] or hosts
            random.shuffle(pool)
            pool.sort(key=lambda pair: pair[0])  # stable: equals stay shuffled
            candidates = [host for _, host in pool]
        breakers = self.node.policy.breakers
        for host in candidates:
            admission = breakers.admit(host, now)
            if admission is not Admission.REFUSE:
                return host, admission
        return None

    def _circuit_open(self, app: str, pinned: str | None) -> Response:
        """Answer 503 for a request none of whose hosts may be asked now (open breakers)."""
        node = self.node
        table = node.table
        hosts = [pinned] if pinned else [h for _, h in table.hosts_of(app) if h != node.id]
        wait = node.policy.breakers.retry_after(hosts, time.monotonic())
        names = ", ".join(table.name_of(host) or host for host in hosts[:4])
        settings = node.policy.settings
        node.refused["breaker_open"] += 1
        raise HTTPError(503, f"the circuit to every host of app {app!r} is open ({names}): "
                        f"they failed too often (a breaker opens at {settings.breaker_failures} "
                        f"failures within {settings.breaker_window:g} s); retry in "
                        f"{retry_after_header(wait)} s",
                        headers={"Retry-After": retry_after_header(wait),
                                 REFUSED: "breaker"})  # fmt: skip

    def listing(self, hosts: bool = True) -> dict:
        """Return every app in the mesh with the nodes that host it (``hosts``), or its name."""
        table = self.node.table
        if not hosts:  # an anonymous client: the resource tree, not who serves it
            return {"node": {"name": self.node.name}, "apps": sorted(table.apps())}
        return {
            "node": {"id": self.node.id, "name": self.node.name},
            "apps": {
                app: [
                    {"node": node, "name": table.name_of(node), "cost": cost}
                    for cost, node in hosts
                ]
                for app, hosts in table.apps().items()
            },
        }


def frame_to_response(answer: ResponseFrame | Streamed, counts: Counter | None = None) -> Response:
    """Turn a ``res`` frame, or a streamed answer, into the HTTP response sent to the client.

    A streamed answer's body is the iterator of its pieces, which the HTTP writer sends as
    they come and closes when it is done (the request is cancelled if that is early).

    The HTTP writer frames the body itself: the frame's headers go through the rule of a local
    answer (``xio.responses.header_fields``: framing, hop-by-hop and ``Proxy-*`` fields
    dropped, a 426 keeps ``Upgrade``), repeated ones stay repeated. What HTTP cannot carry
    (a status outside 200..599, a control character in a header) becomes a 502 naming it,
    counted as ``bad_response``.
    """
    body = None
    if type(answer) is Streamed:
        frame, body = answer.head, answer.body
    else:
        frame = answer
    problem = None
    if not 200 <= frame.status <= 599:  # 1xx would be read as an interim answer
        problem = f"status {frame.status} from the mesh cannot be sent over HTTP/1.1"
    else:
        try:  # the rule of an answer written here (xio.responses): the same either way
            headers = header_fields(frame.headers, frame.status)
        except HTTPError:
            bad = first_bad_header(end_to_end(frame.headers))
            problem = f"header {str(bad)[:64]!r} from the mesh is not valid HTTP"
    if problem is not None:
        if counts is not None:
            counts["bad_response"] += 1
        log.warning("refused a response from the mesh: %s", problem)
        if body is not None:
            body.close()
        return error_response(HTTPError(502, problem))
    content_type = None
    for index, (name, value) in enumerate(headers):
        if name.lower() == "content-type":
            content_type = value
            del headers[index]
            break
    content = frame.body if body is None else body
    return Response(content, frame.status, content_type, Headers(headers))


def raw_path(req: Request) -> str:
    """Return the path of ``req`` as the client sent it, in the raw form a ``req`` carries.

    Bytes outside RFC 3986's pchar set are percent-encoded, escapes already there are kept:
    decoding the result once gives the path the client meant. A request that did not come
    over HTTP (in-process) has only its decoded path, which is encoded here.
    """
    environ = req._environ  # noqa: SLF001 - where the HTTP adapter keeps the raw request
    target = environ.get(RAW_TARGET) if environ else None
    if target is None:
        return quote(req.url_path, safe=_PATH_SAFE.replace("%", ""))
    path = target.partition("?")[0]
    if not path.startswith("/"):  # absolute-form (RFC 9112 3.2.2), e.g. "http://host/a"
        _, sep, rest = path.partition("://")
        path = "/" + rest.partition("/")[2] if sep else "/"
    if _BAD_ESCAPE.search(path):
        raise BadRequest(
            "malformed percent-encoding in the path: '%' must be followed by 2 hex digits"
        )
    return quote(path.encode("latin-1", "replace"), safe=_PATH_SAFE)


def request_headers(req: Request) -> tuple[tuple[str, str], ...]:
    """Return the headers a ``req`` carries for ``req``: end-to-end ones, as received.

    Names keep their case, repeats stay repeated and in order; ``Host`` is kept. Hop-by-hop
    and framing headers are dropped, and so is any ``X-Xio-Via`` (only nodes write it).
    """
    environ = req._environ  # noqa: SLF001
    pairs = environ.get(RAW_FIELDS) if environ else None
    if pairs is None:  # not from xio's HTTP server (a test client, another WSGI server)
        pairs = req.headers.items()
    return tuple(pair for pair in end_to_end(pairs) if pair[0].lower() != "x-xio-via")


def check_request_fits(method: str, path: str, query: str, headers) -> None:
    """Refuse, with the precise 4xx, a client's request that a ``req`` frame cannot carry."""
    if len(method) > MAX_NAME:
        raise BadRequest(f"a method is at most {MAX_NAME} characters")
    if len(path) > codec.MAX_STRING:
        raise HTTPError(414, f"a path crossing the mesh is at most {codec.MAX_STRING} bytes")
    if len(query.encode("utf-8", "surrogatepass")) > codec.MAX_STRING:
        raise HTTPError(414, f"a query crossing the mesh is at most {codec.MAX_STRING} bytes")
    if len(headers) > codec.MAX_HEADERS:
        raise HTTPError(431, f"a request crossing the mesh has at most {codec.MAX_HEADERS} headers")
    total = 0
    for name, value in headers:
        size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        if size > codec.MAX_STRING:
            raise HTTPError(431, f"header {name[:64]!r} is over {codec.MAX_STRING} bytes")
        total += len(name.encode("utf-8", "surrogatepass")) + size
    if total > codec.MAX_HEADER_BYTES - _TRAIL_ROOM:
        limit = codec.MAX_HEADER_BYTES - _TRAIL_ROOM
        raise HTTPError(431, f"the headers hold {total} bytes; at most {limit} cross the mesh")


def _whole(body: bytes) -> bytes:
    """Return a body that crosses the mesh whole, or refuse one no ``req`` frame carries."""
    if len(body) > MAX_BODY:
        raise PayloadTooLarge(f"a body crossing the mesh whole is at most {MAX_BODY} bytes")
    return body
