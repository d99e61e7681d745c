"""The pure policies (xio.node.policy): what an answer proves, retries, breakers, bulkheads.

A fake clock: every ``now`` is a number the test chooses.
"""

from __future__ import annotations

import json

import pytest

from xio.errors import BadRequest, ConfigError
from xio.node.policy import (
    Admission,
    Breakers,
    BreakerState,
    Bulkhead,
    CircuitBreaker,
    Outcome,
    Policies,
    PolicySettings,
    RetryPolicy,
    classify,
    parse_methods,
    parse_retries,
)
from xio.peering.integrity import EndToEnd
from xio.peering.link_events import error_frame

INGRESS = "i" * 52
DST = "d" * 52
RELAY = "r" * 52


def mesh_error(status: int, description: str, via: str) -> Outcome:
    frame = error_frame(status, description, via=via)
    return classify(frame.status, frame.headers, frame.body, INGRESS, DST)


@pytest.mark.parametrize(
    ("status", "description", "outcome"),
    [
        (502, f"no route to node {DST}", Outcome.UNSENT),
        (502, f"hop limit reached before node {DST}", Outcome.UNSENT),
        (502, f"no record of node {DST}'s key here: cannot authenticate", Outcome.UNSENT),
        (503, "link to h1 is congested", Outcome.UNSENT),
        (502, "link to h1 closed, request lost", Outcome.LOST),
        (504, f"no answer from node {DST} before the deadline", Outcome.TIMED_OUT),
        (502, "bad_e2e_mac: the response was altered on the way (x)", Outcome.FINAL),
    ],
)
def test_what_the_ingress_own_errors_prove(status, description, outcome):
    assert mesh_error(status, description, INGRESS) is outcome


def test_an_apps_own_5xx_is_an_answer_never_retried():
    body = json.dumps({"status": 502, "description": "no route to node x"}).encode()
    headers = (("Content-Type", "application/json"), ("X-Xio-Via", f"{INGRESS},{DST}"))
    # The app's words mimic the mesh's: the trail says the destination made it, so it ran.
    assert classify(502, headers, body, INGRESS, DST) is Outcome.ANSWERED
    assert classify(503, headers, body, INGRESS, DST) is Outcome.ANSWERED
    assert classify(500, headers, b"boom", INGRESS, DST) is Outcome.ANSWERED
    assert classify(200, (), b"", INGRESS, DST) is Outcome.ANSWERED


def test_a_full_bulkhead_at_the_destination_is_busy_unrun():
    headers = (("Content-Type", "application/json"), ("X-Xio-Via", f"{INGRESS},{DST}"),
               ("X-Xio-Refused", "bulkhead"))  # fmt: skip
    body = json.dumps({"status": 503, "description": "app 'a' runs 2 requests"}).encode()
    assert classify(503, headers, body, INGRESS, DST) is Outcome.BUSY


def test_an_unauthenticated_claim_of_a_node_on_the_way_proves_nothing():
    # What the ingress makes of a relay's unsigned error (xio.peering.integrity).
    e2e = EndToEnd.__new__(EndToEnd)
    e2e.counts = {"e2e_unsigned_error": 0}
    unsigned = error_frame(502, f"no route to node {DST}", via=f"{INGRESS},{RELAY}")
    passed = EndToEnd._unsigned(e2e, unsigned)
    outcome = classify(passed.status, passed.headers, passed.body, INGRESS, DST)
    assert outcome is Outcome.LOST  # a GET goes again, a POST does not


def test_retries_by_outcome_and_method():
    policy = RetryPolicy(attempts=3, methods=frozenset({"GET", "PUT"}))
    assert policy.should_retry(Outcome.LOST, "GET", 1)
    assert not policy.should_retry(Outcome.LOST, "POST", 1)
    assert policy.refusal(Outcome.LOST, "POST", 1) == "unsafe"
    # Not sent, or refused unrun: no app saw it, any method goes again.
    assert policy.should_retry(Outcome.UNSENT, "POST", 1)
    assert policy.should_retry(Outcome.BUSY, "POST", 2)
    assert policy.refusal(Outcome.UNSENT, "GET", 3) == "attempts"
    for outcome in (Outcome.ANSWERED, Outcome.TIMED_OUT, Outcome.FINAL):
        assert policy.refusal(outcome, "GET", 1) == "done"
    # A body streamed once cannot be sent again.
    assert policy.refusal(Outcome.UNSENT, "GET", 1, replayable=False) == "streamed"


def test_breaker_opens_after_n_failures_within_the_window():
    breaker = CircuitBreaker(failures=3, window=10.0, cooloff=5.0)
    breaker.record(Admission.PASS, False, 0.0)
    breaker.record(Admission.PASS, False, 5.0)
    breaker.record(Admission.PASS, False, 11.0)  # the first one is out of the window now
    assert breaker.state is BreakerState.CLOSED
    breaker.record(Admission.PASS, True, 11.5)  # a success does not wipe the window
    breaker.record(Admission.PASS, False, 12.0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit(12.0) is Admission.REFUSE
    assert breaker.retry_after(13.0) == pytest.approx(4.0)


def test_breaker_half_opens_with_exactly_one_probe_then_closes_on_success():
    breaker = CircuitBreaker(failures=1, window=10.0, cooloff=5.0)
    breaker.record(Admission.PASS, False, 0.0)
    assert breaker.admit(4.9) is Admission.REFUSE
    assert breaker.admit(5.0) is Admission.PROBE
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit(5.1) is Admission.REFUSE  # one probe at a time
    breaker.record(Admission.PROBE, True, 5.2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit(5.3) is Admission.PASS


def test_a_failed_probe_opens_again_and_a_neutral_one_frees_the_slot():
    breaker = CircuitBreaker(failures=1, window=10.0, cooloff=5.0)
    breaker.record(Admission.PASS, False, 0.0)
    assert breaker.admit(5.0) is Admission.PROBE
    breaker.record(Admission.PROBE, None, 5.5)  # e.g. the client went away
    assert breaker.admit(5.6) is Admission.PROBE
    breaker.record(Admission.PROBE, False, 6.0)
    assert breaker.state is BreakerState.OPEN and breaker.opens == 2
    assert breaker.admit(10.9) is Admission.REFUSE
    assert breaker.admit(11.0) is Admission.PROBE


def test_outcomes_of_requests_let_through_before_the_breaker_opened_are_ignored():
    breaker = CircuitBreaker(failures=1, window=10.0, cooloff=5.0)
    breaker.record(Admission.PASS, False, 0.0)
    breaker.record(Admission.PASS, True, 0.1)  # an old request's success does not close it
    breaker.record(Admission.PASS, False, 0.2)  # nor does an old failure extend the cool-off
    assert breaker.state is BreakerState.OPEN and breaker.opens == 1
    assert breaker.admit(5.0) is Admission.PROBE


def test_breakers_are_made_by_failures_and_bounded():
    breakers = Breakers(failures=1, window=1.0, cooloff=5.0, capacity=2)
    breakers.record("a", Admission.PASS, True, 0.0)
    assert breakers.by_node == {}  # successes of a healthy node cost nothing
    breakers.record("a", Admission.PASS, False, 0.0)
    breakers.record("b", Admission.PASS, False, 0.0)
    breakers.record("c", Admission.PASS, False, 0.0)  # full of open breakers: unwatched
    assert set(breakers.by_node) == {"a", "b"} and breakers.opens == 2
    assert breakers.admit("c", 0.0) is Admission.PASS
    for node in ("a", "b"):  # probes succeed: both closed, and idle once the window passed
        assert breakers.admit(node, 5.0) is Admission.PROBE
        breakers.record(node, Admission.PROBE, True, 5.0)
    breakers.record("c", Admission.PASS, False, 7.0)
    assert "c" in breakers.by_node and breakers.admit("c", 7.0) is Admission.REFUSE


def test_bulkhead_refuses_past_its_limit_and_counts():
    bulkhead = Bulkhead(2)
    assert bulkhead.enter() and bulkhead.enter()
    assert not bulkhead.enter()
    bulkhead.leave()
    assert bulkhead.enter()
    assert bulkhead.describe() == {"in_use": 2, "limit": 2, "rejected": 1}


def test_settings_per_app_and_per_call():
    settings = PolicySettings(retries=2, app_retries={"shop": 0}, app_bulkheads={"shop": 3},
                              app_timeouts={"shop": 4.0})  # fmt: skip
    policies = Policies(settings)
    assert policies.retry_policy("shop").attempts == 1
    assert policies.retry_policy("other").attempts == 3
    assert policies.retry_policy("shop", retries=4).attempts == 5  # the call's own wins
    assert policies.timeout("shop") == 4.0 and policies.timeout("other") is None
    assert policies.bulkhead("shop").limit == 3
    policies.configure(PolicySettings(app_bulkheads={"shop": 5}))  # a reload
    assert policies.bulkhead("shop").limit == 5
    shown = policies.describe(0.0, lambda node: None)
    assert shown["apps"] == {"shop": {"bulkhead": 5}}
    assert shown["defaults"]["retry_methods"] == ["ABOUT", "DELETE", "GET", "HEAD", "OPTIONS",
                                                  "PUT"]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [{"retries": 6}, {"retries": -1}, {"bulkhead": 0}, {"breaker_window": 0.0},
     {"app_timeouts": {"a": float("nan")}}, {"app_retries": {"a": 9}}],
)  # fmt: skip
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ConfigError):
        PolicySettings(**bad)


def test_the_retries_header_and_the_methods_list():
    assert parse_retries(" 0") == 0 and parse_retries("5") == 5
    for bad in ("6", "-1", "one", "", "1.5", "\u0663"):
        with pytest.raises(BadRequest, match="X-Xio-Retries must be a whole number"):
            parse_retries(bad)
    assert parse_methods("get, Put,GET") == ("GET", "PUT")
    for bad in ("", ",", "GET POST", "G/T"):
        with pytest.raises(ValueError):
            parse_methods(bad)
