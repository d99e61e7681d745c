"""A node's metrics in the Prometheus text exposition format, version 0.0.4.

Theory of operation. Almost everything a node measures is counted already, for ``/_xio/node``
and ``/_xio/peers``; ``families(...)`` turns those snapshots into metric families when
``GET /_xio/metrics`` is read, so scraping costs the node nothing between scrapes. Only what
no snapshot holds is counted here, as it happens: requests by app, method, status and where
they were answered, with their latency (``RequestMetrics.observe``: one dict update and one
histogram bucket per request, no lock: the node runs on one gevent hub), and the time of each
routing table computation. ``render`` writes the families as text (``# HELP``, ``# TYPE``,
escaped label values); ``prometheus_client`` is used by the tests only, to parse it.

Label values are bounded: methods outside ``METHODS`` are ``OTHER``, and the router and the
node name only apps they host or route to (else ``_unknown``, ``_xio`` for the node's own
pages, ``_main`` for an ``app.main()`` app), so a client cannot make series without end.
Pure: no clock (the caller measures), no IO.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "Family",
    "Histogram",
    "Metrics",
    "RequestMetrics",
    "families",
    "method_label",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Request latency buckets, seconds: 0.5 ms to 30 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)  # fmt: skip
#: Routing table computation buckets, seconds: 0.1 ms to 10 s.
ROUTE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

Labels = tuple[tuple[str, str], ...]


def method_label(method: str) -> str:
    """Return ``method`` if it is a known verb, else ``OTHER`` (bounded cardinality)."""
    return method if method in METHODS else "OTHER"


@dataclass(slots=True)
class Family:
    """One metric family: name, type (counter, gauge, histogram), help, samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: object) -> Family:
        self.samples.append((self.name + suffix, tuple((k, str(v)) for k, v in labels.items()),
                             float(value)))  # fmt: skip
        return self


class Histogram:
    """Observations counted in fixed buckets, with their sum (cumulative only when written)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation: in the first bucket whose bound is >= ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def write(self, family: Family, **labels: object) -> None:
        """Add the ``_bucket``, ``_sum`` and ``_count`` samples to ``family``."""
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            family.add(total, "_bucket", **labels, le=_number(bound))
        family.add(self.sum, "_sum", **labels)
        family.add(total, "_count", **labels)


#: Distinct request series (app, method, status, where) kept apart; the rest count as OVERFLOW.
MAX_SERIES = 4096
OVERFLOW = "_other"


class RequestMetrics:
    """Requests answered, by app, method, status and where, and their latency by app, where."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.counts: dict[tuple[str, str, int, str], int] = {}
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.max_series = max_series

    def observe(self, app: str, method: str, status: int, where: str, seconds: float) -> None:
        """Count one request (labels already bounded by the caller) taking ``seconds``."""
        key = (app, method, status, where)
        counts = self.counts
        if key not in counts and len(counts) >= self.max_series:
            # Apps come from peers' records and statuses from their answers: past our budget
            # of series, new ones are counted together, so memory and scrapes stay bounded.
            key = (OVERFLOW, method, 0, where)
            app = OVERFLOW
        counts[key] = counts.get(key, 0) + 1
        histogram = self.latency.get((app, where))
        if histogram is None:
            if len(self.latency) >= self.max_series:
                app = OVERFLOW
                histogram = self.latency.get((app, where))
            if histogram is None:
                histogram = self.latency[(app, where)] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)


class Metrics:
    """What a node counts for metrics alone: requests, and routing table computations."""

    def __init__(self) -> None:
        self.requests = RequestMetrics()
        self.route_compute = Histogram(ROUTE_BUCKETS)


def families(
    metrics: Metrics,
    status: Mapping,
    peers: Iterable[Mapping],
    discovery: Mapping[str, int],
) -> list[Family]:
    """Return every family, from ``metrics`` and a node's snapshots.

    ``status`` is ``Node.status()``, ``peers`` ``Node.peer_status()``, ``discovery`` the
    counts of ``DiscoveryDialing``.
    """
    out: list[Family] = []

    def family(name: str, kind: str, text: str) -> Family:
        out.append(Family(name, kind, text))
        return out[-1]

    requests = family("xio_requests_total", "counter", "Requests answered, by app, method, "
                      "status and where: local, forwarded (HTTP here) or link (from a peer)")  # fmt: skip
    for (app, method, code, where), count in sorted(metrics.requests.counts.items()):
        requests.add(count, app=app, method=method, status=code, where=where)
    latency = family("xio_request_duration_seconds", "histogram",
                     "Time to answer a request, by app and where")  # fmt: skip
    for (app, where), histogram in sorted(metrics.requests.latency.items()):
        histogram.write(latency, app=app, where=where)

    _links(family, list(peers))

    routing = status.get("routing", {})
    family("xio_routes", "gauge", "Nodes reachable in the routing table").add(
        routing.get("reachable", 0)
    )
    family("xio_records", "gauge", "Records of other nodes held").add(status.get("records", 0))
    budgets = status.get("budgets", {})
    store_bytes = budgets.get("store_bytes", {}).get("used", 0)
    family("xio_record_store_bytes", "gauge", "Bytes of records held").add(store_bytes)
    family("xio_route_computations_total", "counter", "Routing tables computed").add(
        routing.get("computations", 0)
    )
    route_time = family("xio_route_compute_seconds", "histogram",
                        "Wall time of each routing table computation")  # fmt: skip
    metrics.route_compute.write(route_time)

    for name, key, text in (
        ("xio_refusals_total", "refused", "Requests, links and records our budgets and caps "
         "refused, by reason"),
        ("xio_rejections_total", "rejected", "Frames and records refused as a peer's fault, "
         "by reason"),
        ("xio_forwarding_total", "forwarding", "What became of requests crossing links, by "
         "event (forwarded, served, relayed, and their failures)"),
        ("xio_membership_total", "membership", "Closed mode verdicts on peers, records and "
         "revocations, by reason"),
        ("xio_records_judged_total", "records_judged", "Records judged by the store, by verdict"),
        ("xio_link_closes_total", "closed_links", "Links closed, by reason"),
    ):  # fmt: skip
        counter = family(name, "counter", text)
        for reason, count in sorted(status.get(key, {}).items()):
            counter.add(count, reason=reason)
    events = family("xio_discovery_events_total", "counter",
                    "mDNS discovery: nodes found, lost, and forgotten as unreachable")  # fmt: skip
    for event in sorted({"found", "lost", "unreachable", *discovery}):
        events.add(discovery.get(event, 0), event=event)

    used = family("xio_budget_used", "gauge", "What each budget holds now")
    limit = family("xio_budget_limit", "gauge", "Each budget's limit (link_queue_bytes: per link)")
    for budget, entry in sorted(budgets.items()):
        used.add(entry.get("used", 0), budget=budget)
        limit.add(entry.get("limit", entry.get("limit_per_link", 0)), budget=budget)

    errors = family("xio_loop_errors_total", "counter",
                    "Errors the long-lived loops survived, by loop")  # fmt: skip
    for loop, entry in sorted(status.get("loops", {}).items()):
        extra = routing.get("errors", 0) if loop == "routes" else 0  # the route keeper's own
        errors.add(entry.get("errors", 0) + extra, loop=loop)
    _policies(family, status.get("policy") or {})
    family("xio_uptime_seconds", "gauge", "Seconds since the node started").add(
        status.get("uptime_s", 0)
    )
    family("xio_build_info", "gauge", "Always 1: the xio version and this node's id and name").add(
        1, version=status.get("version", ""), node=status.get("id", ""),
        name=status.get("name", ""),
    )  # fmt: skip
    return out


def _policies(family, policy: Mapping) -> None:
    """Add the families of the retries, breakers and bulkheads (xio.node.policy)."""
    retries = family("xio_retries_total", "counter", "Retries at the ingress, by event: retried "
                     "(attempts after the first), recovered, exhausted, unsafe (lost, its method "
                     "not retried), streamed (its body could not be sent twice)")  # fmt: skip
    for event, count in sorted(policy.get("retries", {}).items()):
        retries.add(count, event=event)
    family("xio_breaker_opens_total", "counter", "Times a destination's circuit breaker "
           "opened, failed half-open probes included").add(policy.get("breaker_opens", 0))  # fmt: skip
    state = family("xio_breaker_state", "gauge",
                   "Each destination node's circuit breaker: 1 for the state it is in")  # fmt: skip
    for node, entry in sorted(policy.get("breakers", {}).items()):
        for name in ("closed", "open", "half_open"):
            state.add(1 if entry.get("state") == name else 0, node=node, state=name)
    in_use = family("xio_bulkhead_in_use", "gauge", "Requests each app hosted here runs now")
    limit = family("xio_bulkhead_limit", "gauge", "Each app's bulkhead: requests it may run")
    rejected = family("xio_bulkhead_rejections_total", "counter",
                      "Requests refused 503 because their app's bulkhead was full")  # fmt: skip
    for app, entry in sorted(policy.get("bulkheads", {}).items()):
        in_use.add(entry.get("in_use", 0), app=app)
        limit.add(entry.get("limit", 0), app=app)
        rejected.add(entry.get("rejected", 0), app=app)


def _links(family, peers: list[Mapping]) -> None:
    by_state = family("xio_links", "gauge", "Links, by state")
    for state in ("handshaking", "established"):
        by_state.add(sum(1 for p in peers if p.get("state") == state), state=state)
    rtt = family("xio_link_rtt_seconds", "gauge", "Round-trip time of each established link")
    received = family("xio_link_received_bytes_total", "counter",
                      "Bytes received on each established link")  # fmt: skip
    sent = family("xio_link_sent_bytes_total", "counter", "Bytes sent on each established link")
    queued = family("xio_link_queue_bytes", "gauge", "Bytes waiting to be sent on each link")
    seen = set()
    for peer in peers:
        peer_id = peer.get("id")
        if peer.get("state") != "established" or peer_id in seen:
            continue  # one series per peer: a duplicate link being collapsed is not shown
        seen.add(peer_id)
        labels = {"peer": peer_id, "name": peer.get("name") or ""}
        if peer.get("rtt_ms") is not None:
            rtt.add(peer["rtt_ms"] / 1000, **labels)
        received.add(peer.get("bytes_in", 0), **labels)
        sent.add(peer.get("bytes_out", 0), **labels)
        queued.add(peer.get("queued_bytes", 0), **labels)


def render(all_families: Iterable[Family]) -> bytes:
    """Write ``all_families`` in the text exposition format 0.0.4."""
    lines = []
    for fam in all_families:
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for name, labels, value in fam.samples:
            if labels:
                text = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
                lines.append(f"{name}{{{text}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))
