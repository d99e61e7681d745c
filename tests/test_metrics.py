"""``GET /_xio/metrics``: the Prometheus text a running mesh writes, parsed by prometheus_client,
holds every metric README documents, and its values move as a user would see them move."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import xio
from xio.node import metrics
from xio.node.metrics import CONTENT_TYPE, Family, Histogram, render

from .mesh import call, ws_url

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_metrics() -> list[str]:
    """Return the metric names in the table of README's "Metrics" section."""
    text = README.read_text()
    section = text.split("\n### Metrics\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"^\| `(xio_\w+)`", section, re.MULTILINE)


def scrape(node) -> dict:
    response = call(node, "GET", "/_xio/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    text = response.content
    text = text.decode() if isinstance(text, bytes) else text
    found = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = family
    return found


def value(family, **labels) -> float:
    """Return the sample of ``family`` with ``labels`` (0 if there is none)."""
    for sample in family.samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return 0.0


def hello_app() -> xio.App:
    app = xio.app("hello")
    app.bind("www", lambda req: "hello", methods=["GET"])
    return app


def test_a_three_node_mesh_reports_every_documented_metric_and_counts_what_it_answers(
    in_process_mesh,
):
    a, b, c = in_process_mesh.line("a", "b", "c", apps_at_end=[hello_app()])
    documented = documented_metrics()
    assert len(documented) >= 20  # the table was found and read
    before = scrape(a)
    assert set(documented) <= set(before), set(documented) - set(before)
    assert set(before) <= set(documented), "an undocumented metric"

    assert call(a, "GET", "/hello/").status == 200  # forwarded a -> b -> c
    assert call(a, "GET", "/nosuch/").status == 404
    assert call(a, "POST", "/hello/").status == 405  # answered at c, forwarded here
    after, at_c = scrape(a), scrape(c)

    requests = after["xio_requests_total"]
    forwarded = {"app": "hello", "method": "GET", "status": "200", "where": "forwarded"}
    assert value(requests, **forwarded) == value(before["xio_requests_total"], **forwarded) + 1
    assert value(requests, app="hello", method="POST", status="405", where="forwarded") == 1
    assert value(requests, app="_unknown", method="GET", status="404", where="local") == 1
    assert value(at_c["xio_requests_total"], app="hello", status="200", where="link") == 1
    latency = after["xio_request_duration_seconds"]
    assert value(latency, app="hello", where="forwarded", le="+Inf") == 2
    assert value(after["xio_forwarding_total"], reason="forwarded") >= 2

    assert value(after["xio_links"], state="established") == 1  # a's one link, to b
    assert value(at_c["xio_routes"]) == 3  # c reaches a, b and itself
    assert value(after["xio_link_sent_bytes_total"], name="b") > 0
    assert value(after["xio_link_rtt_seconds"], name="b") >= 0
    assert value(after["xio_budget_limit"], budget="in_flight") == a.config.max_in_flight
    assert value(after["xio_build_info"], node=a.id, name="a") == 1
    assert value(after["xio_route_compute_seconds"], le="+Inf") >= 1


def test_the_metrics_page_is_an_admin_page(in_process_mesh, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-admin-token-0123456789abcdef\n")
    token.chmod(0o600)
    node = in_process_mesh.start("a", admin_token_file=str(token))
    assert call(node, "GET", "/_xio/metrics").status == 401
    authorized = {"Authorization": "Bearer s3cret-admin-token-0123456789abcdef"}
    assert call(node, "GET", "/_xio/metrics", headers=authorized).status == 200


def test_methods_and_apps_are_bounded_labels(in_process_mesh):
    node = in_process_mesh.start("a")
    call(node, "BREW", "/pot/")
    requests = scrape(node)["xio_requests_total"]
    assert value(requests, app="_unknown", method="OTHER") == 1
    assert not any(s.labels.get("method") == "BREW" for s in requests.samples)


def test_label_values_and_help_are_escaped_as_the_format_says():
    family = Family("xio_x", "gauge", "a \\ help\nline").add(1, name='a"b\\c\nd')
    parsed = list(text_string_to_metric_families(render([family]).decode()))
    assert parsed[0].documentation == "a \\ help\nline"
    assert parsed[0].samples[0].labels == {"name": 'a"b\\c\nd'}


def test_a_histogram_counts_each_observation_in_the_first_bucket_at_or_above_it():
    histogram = Histogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.005, 3.0):
        histogram.observe(seconds)
    family = Family("xio_h_seconds", "histogram", "h")
    histogram.write(family)
    (parsed,) = text_string_to_metric_families(render([family]).decode())
    buckets = {s.labels["le"]: s.value for s in parsed.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.001": 2, "0.01": 3, "+Inf": 4}
    assert [s.value for s in parsed.samples if s.name.endswith("_count")] == [4]


def test_method_label_keeps_known_verbs():
    assert metrics.method_label("GET") == "GET"
    assert metrics.method_label("PROPFIND") == "OTHER"


def test_discovery_events_are_counted_as_mdns_reports_them(in_process_mesh):
    a = in_process_mesh.start("a")
    b = in_process_mesh.start("b")
    a.discovery.discovered(b.id, [ws_url(b)])  # as mDNS calls it
    a.discovery.vanished(b.id)
    events = scrape(a)["xio_discovery_events_total"]
    assert (value(events, event="found"), value(events, event="lost")) == (1, 1)
    assert value(events, event="unreachable") == 0


def test_request_series_are_bounded_by_our_budget_not_by_what_peers_claim():
    """Apps come from peers' records and statuses from their answers: a flood of either does
    not grow the page without end; past the budget they are counted together."""
    from xio.node.metrics import OVERFLOW, RequestMetrics

    requests = RequestMetrics(max_series=10)
    for n in range(100):
        requests.observe(f"app{n}", "GET", 200 + n, "forwarded", 0.001)
    assert len(requests.counts) == 11  # ten apart, one for the rest
    assert requests.counts[(OVERFLOW, "GET", 0, "forwarded")] == 90
    assert len(requests.latency) == 11
    assert sum(requests.latency[(OVERFLOW, "forwarded")].counts) == 90
    requests.observe("app3", "GET", 203, "forwarded", 0.001)  # a series kept goes on counting
    assert requests.counts[("app3", "GET", 203, "forwarded")] == 2
