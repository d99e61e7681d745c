"""``xio-node status|peers|routes|trace``: ask a running node what it is, and where time goes.

xio-node status   [--via URL] [--admin-token FILE] [--json]   this node: id, urls, counts
xio-node peers    [--via URL] [--admin-token FILE] [--json]   its links, one a line
xio-node routes   [--via URL] [--admin-token FILE] [--json]   every node it can reach
xio-node trace PATH_OR_URL [-X METHOD] [--via URL] [--admin-token FILE] [--json]
                  send one traced request and print each hop, like traceroute

The node is reached as ``xio-node mesh publish`` reaches it: over HTTP at ``--via`` (default
``http://127.0.0.1:<port>``, the port ``XIO_PORT`` or 7700), with ``Authorization: Bearer``
from ``--admin-token FILE`` when the node was started with one. The pages are its admin
resources (``/_xio/node``, ``/_xio/peers``, ``/_xio/routes``), so a node that is not on this
host's loopback needs the token. ``--json`` prints the node's JSON as it came, for scripts.

Exit status: 0; 1 when the node cannot be reached (one line on stderr, ``cannot reach node at
URL: connection refused``) or answers with an error (its status and description); 2 for a bad
command line. The tables are made by pure functions (``format_table`` and the ``*_rows``),
tested apart from the node.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http import HTTPStatus
from urllib.parse import urlsplit

from ..errors import ConfigError, TransportError
from ..peering.trace import TRACE, link_times, parse_header
from ..peering.via import VIA

__all__ = [
    "DEFAULT_PORT",
    "default_via",
    "format_table",
    "main",
    "peer_rows",
    "route_rows",
    "status_rows",
    "trace_rows",
]

DEFAULT_PORT = 7700
COMMANDS = ("status", "peers", "routes", "trace")
_PAGES = {"status": "/_xio/node", "peers": "/_xio/peers", "routes": "/_xio/routes"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class NodeUnreachable(Exception):
    """The node did not answer, or answered with an error: the one line to print."""


# -- formatting: pure ---------------------------------------------------------------------


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Return ``rows`` under ``header`` in columns two spaces apart, as ``consul members``."""
    widths = [len(title) for title in header]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """Return ``seconds`` as ``45s``, ``12m3s``, ``5h2m`` or ``3d4h`` (``-`` if unknown)."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def size(count: int | None) -> str:
    """Return a byte count as ``812B``, ``4.1KiB``, ``3.0MiB`` (``-`` if unknown)."""
    if count is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return f"{count}B"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def status_rows(node: dict, routes: list[dict] | None = None) -> list[list[str]]:
    """Return the ``(field, value)`` rows of ``xio-node status`` for ``/_xio/node``.

    ``routes`` (``/_xio/routes``) gives the count of other nodes reachable.
    """
    budgets = node.get("budgets") or {}
    in_use = []
    for name, budget in budgets.items():
        if budget.get("used"):  # the ones in use: the whole list is in --json
            limit = budget.get("limit", budget.get("limit_per_link"))
            in_use.append(f"{name} {budget['used']}/{limit}")
    mesh = node.get("mesh")
    mode = "open" if mesh is None else f"closed (authority {mesh.get('authority', '?')})"
    own = node.get("id")
    reachable = "-" if routes is None else str(sum(r.get("destination") != own for r in routes))
    return [
        ["name", str(node.get("name", ""))],
        ["id", str(node.get("id", ""))],
        ["url", ", ".join(node.get("urls") or []) or "-"],
        ["version", str(node.get("version", ""))],
        ["uptime", duration(node.get("uptime_s"))],
        ["links", str(node.get("links", 0))],
        ["routes", reachable],
        ["apps", ", ".join(node.get("apps") or []) or "-"],
        ["mode", mode],
        ["budgets", ", ".join(in_use) or "none in use"],
    ]


def peer_rows(peers: list[dict]) -> list[list[str]]:
    """Return the rows of ``xio-node peers`` for ``/_xio/peers``, by name."""
    rows = []
    for peer in sorted(peers, key=lambda p: (p.get("name") or "", p.get("id") or "")):
        queue = f"{peer.get('queued_frames', 0)}/{size(peer.get('queued_bytes', 0))}"
        rows.append([
            peer.get("name") or "-", peer.get("id") or "-", str(peer.get("state", "-")),
            str(peer.get("direction", "-")), peer.get("url") or peer.get("address") or "-",
            _ms(peer.get("rtt_ms")), duration(peer.get("up_s")),
            size(peer.get("bytes_in")), size(peer.get("bytes_out")), queue,
        ])  # fmt: skip
    return rows


PEER_HEADER = ["Name", "Id", "State", "Dir", "URL", "RTT", "Uptime", "In", "Out", "Queue"]
ROUTE_HEADER = ["Node", "Name", "Next hop", "Hops", "Cost", "Apps", "Record age"]
TRACE_HEADER = ["Hop", "Node", "Id", "In node", "Link", "Total"]


def route_rows(routes: list[dict], names: dict[str, str] | None = None) -> list[list[str]]:
    """Return the rows of ``xio-node routes`` for ``/_xio/routes``, nearest first (the node
    itself first, with no next hop).

    ``names`` maps node ids to names, to show the next hop by name (its id when unknown).
    """
    names = names or {route["destination"]: route.get("name") for route in routes}
    rows = []
    ordered = sorted(routes, key=lambda r: (r.get("cost", 0), r.get("name") or ""))
    for route in ordered:
        hop = route.get("next_hop") or "-"
        if not route.get("hops"):  # the node itself: reached by no link
            hop = "-"
        rows.append([
            route.get("destination", "-"), route.get("name") or "-", names.get(hop) or hop,
            str(route.get("hops", "-")), str(route.get("cost", "-")),
            ", ".join(route.get("apps") or []) or "-", duration(route.get("age_s")),
        ])  # fmt: skip
    return rows


def trace_rows(header_value: str, names: dict[str, str], answered_by: str | None):
    """Return the rows of ``xio-node trace`` for an ``X-Xio-Trace`` value, or None if bad.

    ``answered_by`` is the last node of the answer's ``X-Xio-Via`` trail, marked
    ``(answered)`` (None: the answer crossed no link, so the one hop answered); ``names`` maps
    node ids to names.
    """
    hops = parse_header(header_value)
    if hops is None:
        return None
    if answered_by is None and len(hops) == 1:
        answered_by = hops[0][0]
    rows = []
    for index, ((node_id, node_us, total_us), link_us) in enumerate(
        zip(hops, link_times(hops), strict=True)
    ):
        name = names.get(node_id) or "?"
        if node_id == answered_by:
            name += " (answered)"
        link = "-" if link_us is None else _ms(link_us / 1000)
        rows.append([str(index), name, node_id, _ms(node_us / 1000), link, _ms(total_us / 1000)])
    return rows


# -- talking to the node --------------------------------------------------------------------


def default_via(environ=None) -> str:
    """Return the node's URL when --via is not given: loopback, on ``XIO_PORT``, else the
    port of the node's config file (``XIO_CONFIG`` or /etc/xio/node.toml), else 7700."""
    environ = os.environ if environ is None else environ
    port = (environ.get("XIO_PORT") or "").strip() or str(_configured_port(environ))
    return f"http://127.0.0.1:{port}"


def _configured_port(environ) -> int:
    from .settings import _tomllib, config_file

    path = config_file(None, environ)
    try:
        port = _tomllib().loads(path.read_text(encoding="utf-8")).get("port") if path else None
    except (OSError, ValueError):  # check-config says what is wrong with the file
        port = None
    return port if type(port) is int and 0 < port < 65536 else DEFAULT_PORT


def _headers(token_file: str | None) -> dict[str, str]:
    if not token_file:
        return {}
    from .config import read_admin_token

    return {"Authorization": f"Bearer {read_admin_token(token_file)}"}


def _reason(exc: TransportError) -> str:
    """Return why the node was not reached, as a short lowercase phrase."""
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno).lower()
    if isinstance(cause, TimeoutError):
        return "timed out"
    return str(exc)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _ask(via: str, method: str, target: str, headers: dict, timeout: float):
    from ..client import client as http_client

    try:
        client = http_client(via, timeout=timeout)
        return client.request(method, target, headers=headers)
    except ValueError as exc:
        raise NodeUnreachable(f"cannot reach node at {via}: {exc}") from exc
    except TransportError as exc:
        raise NodeUnreachable(f"cannot reach node at {via}: {_reason(exc)}") from exc


def _refused(via: str, response) -> NodeUnreachable:
    content = response.content
    description = content.get("description") if isinstance(content, dict) else None
    text = description or response.text.strip()[:200]
    return NodeUnreachable(f"node at {via} answered {response.status}: {text}")


def _page(via: str, page: str, headers: dict, timeout: float):
    response = _ask(via, "GET", page, headers, timeout)
    if response.status != 200:
        raise _refused(via, response)
    expected = dict if page == "/_xio/node" else list
    if not isinstance(response.content, expected):  # another server on that port
        raise NodeUnreachable(
            f"{via}{page} is not an xio node's page (no JSON {expected.__name__})"
        )
    return response


def _names(via: str, headers: dict, timeout: float) -> dict[str, str]:
    """Return the names of the nodes ``via`` knows of, itself included."""
    routes = _page(via, "/_xio/routes", headers, timeout).content
    node = _page(via, "/_xio/node", headers, timeout).content
    names = {route["destination"]: route.get("name") or "" for route in routes}
    names[node["id"]] = node.get("name") or ""
    return names


def _show(args: argparse.Namespace, headers: dict) -> int:
    response = _page(args.via, _PAGES[args.command], headers, args.timeout)
    if args.json:
        print(response.text.rstrip("\n"))
        return 0
    content = response.content
    if args.command == "status":
        routes = _page(args.via, "/_xio/routes", headers, args.timeout).content
        print(format_table(["Field", "Value"], status_rows(content, routes)).split("\n", 1)[1])
    elif args.command == "peers":
        print(format_table(PEER_HEADER, peer_rows(content)))
    else:
        print(format_table(ROUTE_HEADER, route_rows(content)))
    return 0


def _trace(args: argparse.Namespace, headers: dict) -> int:
    target = args.target
    if "://" in target:
        parts = urlsplit(target)
        if args.via_given is None:
            args.via = f"{parts.scheme}://{parts.netloc}"
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    if not target.startswith("/"):
        target = "/" + target
    response = _ask(args.via, args.method, target, {**headers, TRACE: "1"}, args.timeout)
    value = response.headers.get(TRACE)
    if args.json:
        hops = parse_header(value) if value else None
        print(json.dumps({"status": response.status, "via": response.headers.get(VIA),
                          "trace": [list(hop) for hop in hops or ()]}))  # fmt: skip
        return 0
    print(f"trace of {args.method} {target} via {args.via}")
    if value is None:
        print("no trace in the answer: this client may not read the node's /_xio/ (give "
              "--admin-token), or a node on the way does not trace")  # fmt: skip
    else:
        trail = (response.headers.get(VIA) or "").split(",")
        names = _names(args.via, headers, args.timeout)
        rows = trace_rows(value, names, trail[-1] if trail[-1] else None)
        if rows is None:
            print(f"unreadable {TRACE}: {value[:200]}")
        else:
            print(format_table(TRACE_HEADER, rows))
            if trail[-1] and rows and rows[-1][2] != trail[-1]:
                print(f"(the trace ends before node {trail[-1]}, which answered)")
    print(f"{response.status} {_phrase(response.status)}".rstrip())
    return 0


def _parser(command: str) -> argparse.ArgumentParser:
    what = {
        "status": "Print what a running node is: id, addresses, links, apps, budgets.",
        "peers": "Print the links of a running node, one a line.",
        "routes": "Print every node a running node can reach, nearest first.",
        "trace": "Send one traced request through a running node and print each hop.",
    }[command]
    parser = _Parser(prog=f"xio-node {command}", description=what)
    if command == "trace":
        parser.add_argument("target", metavar="PATH_OR_URL",
                            help="/app/path, or http://HOST:PORT/app/path (then --via is it)")  # fmt: skip
        parser.add_argument("-X", "--method", default="GET", type=str.upper,
                            help="the request's method (default GET)")  # fmt: skip
    parser.add_argument("--via", dest="via_given", metavar="URL",
                        help=f"the node's HTTP address (default {default_via()}; XIO_PORT "
                        "sets the port)")  # fmt: skip
    parser.add_argument("--admin-token", metavar="FILE",
                        help="file holding the node's --admin-token (mode 600)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up on the node after this long (default 10)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the node's JSON as it is")
    return parser


def main(command: str, argv: list[str]) -> int:
    """Run ``xio-node <command>`` (one of ``COMMANDS``); return the exit status."""
    args = _parser(command).parse_args(argv)
    args.command = command
    args.via = (args.via_given or default_via()).rstrip("/")
    try:
        headers = _headers(args.admin_token)
        return _trace(args, headers) if command == "trace" else _show(args, headers)
    except ConfigError as exc:  # the token file
        print(f"xio-node {command}: {exc}", file=sys.stderr)
        return 1
    except NodeUnreachable as exc:
        print(f"xio-node {command}: {exc}", file=sys.stderr)
        return 1
