"""Pure timing decisions with a fake clock: dial backoff, origination hold-down, rate limits."""

from __future__ import annotations

import pytest

from xio.errors import LocalProtocolError
from xio.peering.schedule import Backoff, OriginationSchedule, RateLimiter


def test_backoff_doubles_up_to_its_cap_while_dials_fail():
    backoff = Backoff(first=0.25, maximum=30.0)
    delays = [backoff.next_delay(float(now)) for now in range(12)]
    assert delays[:8] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert set(delays[7:]) == {30.0}


def test_backoff_starts_over_after_a_healthy_link():
    backoff = Backoff(first=0.25, maximum=30.0, healthy_after=10.0)
    for now in range(6):
        backoff.next_delay(float(now))  # the delay has grown to 16 s
    backoff.established(100.0)
    assert backoff.next_delay(115.0) == 0.25  # up for 15 s: healthy


def test_backoff_keeps_growing_after_a_link_that_died_young():
    backoff = Backoff(first=0.25, maximum=30.0, healthy_after=10.0)
    assert [backoff.next_delay(0.0) for _ in range(3)] == [0.25, 0.5, 1.0]
    backoff.established(10.0)
    assert backoff.next_delay(12.0) == 2.0  # a flapping peer is not redialled at once


def test_backoff_refuses_nonsense():
    with pytest.raises(LocalProtocolError):
        Backoff(first=0, maximum=1)


def test_the_first_record_is_due_at_once_and_then_every_refresh():
    schedule = OriginationSchedule(refresh=20.0, min_interval=1.0)
    assert schedule.due(0.0) and schedule.next_at() is None
    schedule.originated(0.0)
    assert not schedule.due(19.9) and schedule.due(20.0)


def test_a_change_is_originated_after_a_short_coalescing_wait():
    schedule = OriginationSchedule(refresh=20.0, min_interval=1.0, coalesce=0.05)
    schedule.originated(0.0)
    schedule.changed(5.0)
    schedule.changed(5.01)  # rides along with the first
    assert schedule.next_at() == pytest.approx(5.05)
    schedule.originated(5.05)
    assert schedule.next_at() == pytest.approx(25.05)  # the refresh counts from the last one


def test_churn_is_held_down_to_one_record_per_interval_after_a_burst():
    schedule = OriginationSchedule(refresh=20.0, min_interval=1.0, burst=3, coalesce=0.0)
    schedule.originated(0.0)
    now, made = 0.0, []
    while now < 10.0:  # a change every 10 ms for 10 s: 1000 changes
        schedule.changed(now)
        if schedule.due(now):
            schedule.originated(now)
            made.append(now)
        now = round(now + 0.01, 2)
    assert 3 + 9 <= len(made) <= 3 + 10  # the burst, then one per second
    gaps = [b - a for a, b in zip(made[3:], made[4:], strict=False)]
    assert all(gap >= 0.99 for gap in gaps)


def test_a_quiet_node_gets_its_burst_back():
    schedule = OriginationSchedule(refresh=20.0, min_interval=1.0, burst=3, coalesce=0.0)
    schedule.originated(0.0)
    for now in (1.0, 1.1, 1.2, 1.3):
        schedule.changed(now)
        if schedule.due(now):
            schedule.originated(now)
    schedule.changed(50.0)  # long after: at once again
    assert schedule.due(50.0)


def test_rate_limiter_allows_a_burst_then_the_rate_per_key():
    limiter = RateLimiter(rate=10.0, burst=20.0)
    allowed = sum(limiter.allow("10.0.0.1", 0.0) for _ in range(100))
    assert allowed == 20
    assert limiter.allow("10.0.0.2", 0.0)  # another address has its own bucket
    assert not limiter.allow("10.0.0.1", 0.05)
    assert limiter.allow("10.0.0.1", 0.1)  # a tenth of a second buys one more


def test_rate_limiter_forgets_the_least_recent_keys_beyond_its_bound():
    limiter = RateLimiter(rate=1.0, burst=1.0, max_keys=100)
    for number in range(1000):
        limiter.allow(f"10.0.{number // 256}.{number % 256}", 0.0)
    assert len(limiter) == 100
