"""Bulkheads and circuit breakers with real xio-node processes (README, "Policies")."""

from __future__ import annotations

import threading

import xio

from .conftest import ROOT, wait_until

SLOW = str(ROOT / "tests/apps/slow")


def ws(process) -> str:
    return process.url.replace("http://", "ws://")


def node_status(process) -> dict:
    return xio.client(process.url, timeout=2).get("/_xio/node").content


def metrics_text(process) -> str:
    text = xio.client(process.url, timeout=2).get("/_xio/metrics").content
    return text.decode() if isinstance(text, bytes) else text


def hold(url: str, path: str, seconds: float) -> threading.Thread:
    """Run a request of ``seconds`` in a thread, to hold a place; return the thread."""
    done = threading.Thread(
        target=lambda: xio.client(url, timeout=20).get(path, query={"s": str(seconds)})
    )
    done.start()
    return done


def test_a_full_bulkhead_answers_503_at_once_and_counts(start_node):
    node = start_node("b", "--app", SLOW, "--app-bulkhead", "slow=1")
    holder = hold(node.url, "/slow", 1.5)
    wait_until(lambda: node_status(node)["policy"]["bulkheads"].get("slow", {}).get("in_use") == 1,
               what="the slow request to hold the bulkhead")  # fmt: skip
    refused = xio.client(node.url).get("/slow", query={"s": "0"})
    assert holder.is_alive()  # answered while the place was still held: it did not wait
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-Xio-Refused"] == "bulkhead"
    assert "bulkhead" in refused.content["description"]
    status = node_status(node)
    assert status["policy"]["bulkheads"]["slow"] == {"in_use": 1, "limit": 1, "rejected": 1}
    assert status["policy"]["apps"] == {"slow": {"bulkhead": 1}}
    assert status["refused"]["bulkhead_full"] == 1
    text = metrics_text(node)
    assert 'xio_bulkhead_rejections_total{app="slow"} 1' in text
    assert 'xio_bulkhead_limit{app="slow"} 1' in text
    holder.join(10)
    assert xio.client(node.url).get("/slow", query={"s": "0"}).status == 200


def test_an_ingress_sends_a_request_refused_by_a_full_bulkhead_to_the_other_host(start_node):
    h1 = start_node("h1", "--app", SLOW, "--app-bulkhead", "slow=1")
    h2 = start_node("h2", "--app", SLOW)
    e = start_node("e", "--peers", ws(h1), ws(h2))
    wait_until(lambda: len(xio.client(e.url, timeout=2).get("/").content["apps"].get("slow", []))
               == 2, what="e to learn of both hosts")  # fmt: skip
    holder = hold(e.url, "/~h1/slow", 3)
    wait_until(lambda: node_status(h1)["policy"]["bulkheads"].get("slow", {}).get("in_use") == 1,
               what="h1's bulkhead to be full")  # fmt: skip
    client = xio.client(e.url, timeout=10)
    # POST too: a refusal by the bulkhead proves the app never ran it.
    answers = [client.request("POST" if i % 2 else "GET", "/slow", query={"s": "0"})
               for i in range(12)]  # fmt: skip
    assert [a.status for a in answers] == [200] * 12
    assert {a.content["served_by"] for a in answers} == {"h2"}
    # Half of them chose h1 first, at random: 12 all choosing h2 happens once in 4096.
    assert any(a.headers.get("X-Xio-Attempts") == "2" for a in answers)
    assert node_status(h1)["policy"]["bulkheads"]["slow"]["rejected"] >= 1
    assert node_status(e)["policy"]["retries"]["recovered"] >= 1
    holder.join(10)


def test_a_breaker_opens_on_failures_then_lets_one_probe_close_it(start_node):
    # h1 holds one request at a time: the next ones are refused "too many requests in flight",
    # a claim it cannot sign (it never ran them), which e counts as failures of node h1.
    h1 = start_node("h1", "--app", SLOW, "--max-in-flight", "1")
    e = start_node("e", "--peers", ws(h1), "--breaker-failures", "2", "--breaker-cooloff", "1")
    wait_until(lambda: "slow" in xio.client(e.url, timeout=2).get("/").content["apps"],
               what="e to learn of slow")  # fmt: skip
    h1_id = node_status(h1)["id"]
    holder = hold(e.url, "/slow", 2)
    wait_until(lambda: node_status(h1)["budgets"]["in_flight"]["used"] == 1,
               what="h1's one place to be held")  # fmt: skip
    client = xio.client(e.url, timeout=10)
    no_retry = {"X-Xio-Retries": "0"}
    for _ in range(2):
        failed = client.get("/slow", query={"s": "0"}, headers=no_retry)
        assert failed.status == 503 and "in flight" in failed.content["description"]
    breaker = node_status(e)["policy"]["breakers"][h1_id]
    assert (breaker["name"], breaker["state"], breaker["opens"]) == ("h1", "open", 1)
    refused = client.get("/slow", query={"s": "0"})
    assert refused.status == 503
    assert refused.headers["X-Xio-Refused"] == "breaker"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "circuit" in refused.content["description"] and "h1" in refused.content["description"]
    status = node_status(e)
    assert status["refused"]["breaker_open"] == 1 and status["policy"]["breaker_opens"] == 1
    assert f'xio_breaker_state{{node="{h1_id}",state="open"}} 1' in metrics_text(e)
    holder.join(10)
    # After the cool-off one probe goes; h1 answers it, and the circuit closes.
    wait_until(lambda: node_status(e)["policy"]["breakers"][h1_id]["retry_in_s"] == 0,
               what="the cool-off to pass")  # fmt: skip
    assert client.get("/slow", query={"s": "0"}).status == 200
    assert node_status(e)["policy"]["breakers"][h1_id]["state"] == "closed"


def test_an_apps_own_timeout_and_the_calls_headers(start_node):
    node = start_node("t", "--app", SLOW, "--app-timeout", "slow=0.5", "--app-retries", "slow=0")
    client = xio.client(node.url, timeout=20)
    # The handler would take 10 s: a 504 at all shows the app's 0.5 s was the deadline.
    assert client.get("/slow", query={"s": "10"}).status == 504
    # The call's own X-Xio-Timeout wins over the app's.
    assert client.get("/slow", query={"s": "1"}, headers={"X-Xio-Timeout": "5"}).status == 200
    bad = client.get("/slow", headers={"X-Xio-Retries": "many"})
    assert bad.status == 400
    assert bad.content["description"] == "X-Xio-Retries must be a whole number from 0 to 5"
    apps = node_status(node)["policy"]["apps"]
    assert apps == {"slow": {"timeout_s": 0.5, "retries": 0}}
