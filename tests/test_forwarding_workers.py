"""The forwarder's reusable worker greenlets: each call in a greenlet of its own, reused
one call after another, and a cancel that reaches its own call and no later one."""

from __future__ import annotations

import gevent
import pytest
from gevent.event import Event

from xio.peering.forwarding import Workers

from .http_wire import wait_for


@pytest.fixture(autouse=True)
def hub_errors(monkeypatch):
    """Fail a test in which an exception escaped into the hub from any greenlet."""
    errors = []
    hub = gevent.get_hub()
    monkeypatch.setattr(hub, "handle_error", lambda context, kind, value, tb: errors.append(value))
    yield errors
    assert errors == []


def test_calls_run_in_worker_greenlets_that_are_reused():
    workers = Workers()
    seen = []
    for index in range(5):
        workers.run(lambda i: seen.append((i, gevent.getcurrent())), index)
        gevent.sleep(0)
    assert [i for i, _ in seen] == list(range(5))
    assert gevent.getcurrent() not in {greenlet for _, greenlet in seen}
    assert len({greenlet for _, greenlet in seen}) == 1 and workers.started == 1


def test_calls_that_block_run_side_by_side_in_greenlets_of_their_own():
    workers = Workers()
    release = Event()
    running = []

    def call(index):
        running.append(gevent.getcurrent())
        release.wait()

    jobs = [workers.run(call, index) for index in range(10)]
    gevent.sleep(0)
    assert len(set(running)) == 10 and workers.started == 10
    release.set()
    gevent.sleep(0)
    assert all(job.worker is None for job in jobs)


def test_cancel_stops_its_own_call_with_greenlet_exit():
    workers = Workers()
    outcome = []

    def call():
        try:
            gevent.sleep(10)
            outcome.append("finished")
        except gevent.GreenletExit:
            outcome.append("cancelled")
            raise

    job = workers.run(call)
    gevent.sleep(0)
    job.kill(block=False)
    gevent.sleep(0.01)
    assert outcome == ["cancelled"]
    assert job.worker is None
    workers.run(outcome.append, "worker still usable")
    gevent.sleep(0)
    assert outcome[-1] == "worker still usable" and workers.started == 1


def test_a_blocking_kill_returns_once_the_call_has_ended():
    workers = Workers()
    outcome = []

    def call():
        try:
            gevent.sleep(10)
        finally:
            gevent.sleep(0.01)  # a call may take a while to wind down
            outcome.append("ended")

    job = workers.run(call)
    gevent.sleep(0)
    job.kill(block=True)
    assert outcome == ["ended"] and job.worker is None
    unblocked = workers.run(gevent.sleep, 10)
    gevent.sleep(0)
    unblocked.kill()  # block=False: back at once, the call ends soon after
    assert unblocked.worker is not None
    wait_for(lambda: unblocked.worker is None, "the killed call to end")


def test_a_late_cancel_does_not_hit_the_next_call_on_the_same_worker():
    workers = Workers(max_idle=1)
    first_done, outcome = Event(), []

    def second():
        try:
            gevent.sleep(0.05)
            outcome.append("second finished")
        except gevent.GreenletExit:
            outcome.append("second cancelled")

    first = workers.run(first_done.set)
    first_done.wait()
    later = workers.run(second)  # the same worker, parked since the first call returned
    first.kill(block=False)  # the asker gave up on the first request too late
    gevent.sleep(0.1)
    assert outcome == ["second finished"]
    assert later.worker is None and workers.started == 1


def test_a_call_cancelled_before_it_starts_does_not_run():
    workers = Workers()
    outcome = []
    job = workers.run(outcome.append, "ran")
    job.kill()
    gevent.sleep(0.01)
    assert outcome == [] and job.worker is None
    workers.run(outcome.append, "the next call runs")
    gevent.sleep(0)
    assert outcome == ["the next call runs"] and workers.started == 1


def test_a_call_cancelled_before_a_parked_worker_takes_it_does_not_run():
    workers = Workers()
    workers.run(lambda: None)
    gevent.sleep(0)  # the worker is parked now
    outcome = []
    job = workers.run(outcome.append, "ran")
    job.kill()
    wait_for(lambda: job.worker is None, "the worker to be done with the job")
    assert outcome == [] and job.worker is None and workers.started == 1


def test_a_failing_call_is_logged_and_the_worker_goes_on(caplog):
    workers = Workers()
    workers.run(lambda: 1 / 0)
    gevent.sleep(0)
    done = []
    workers.run(done.append, True)
    gevent.sleep(0)
    assert done == [True] and workers.started == 1
    assert "a worker's call failed" in caplog.text


def test_at_most_max_idle_workers_are_kept():
    workers = Workers(max_idle=3)
    release = Event()
    for _ in range(8):
        workers.run(release.wait)
    gevent.sleep(0)
    release.set()
    gevent.sleep(0.01)
    assert len(workers._idle) == 3
    assert all(not worker.dead for worker in workers._idle)


def test_an_idle_worker_keeps_nothing_of_its_last_call_alive():
    # An idle worker once kept its last request, 16 MiB body and all, until its next call.
    import gc
    import weakref

    class Body:
        """Stands for a request body: something that can be weakly referred to."""

    workers = Workers()
    body = Body()
    alive = weakref.ref(body)
    job = workers.run(lambda held: None, body)
    del body
    gevent.sleep(0.01)
    gc.collect()
    assert job.worker is None and len(workers._idle) == 1  # parked, ready for the next call
    assert alive() is None
