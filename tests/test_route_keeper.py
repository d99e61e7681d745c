"""The route keeper: tables computed in the background between other greenlets, swapped in
whole, invalidations coalesced, and a keeper that outlives faults in its inputs and listener."""

from __future__ import annotations

import logging

import gevent
import pytest

from xio.node.routes import RouteKeeper
from xio.peering.records import Record
from xio.peering.routing import Route, Topology, compute_routes

OWN = f"{0:032x}"


@pytest.fixture(autouse=True)
def hub_errors(monkeypatch):
    """Fail a test in which an exception escaped into the hub from any greenlet."""
    errors = []
    hub = gevent.get_hub()
    monkeypatch.setattr(hub, "handle_error", lambda context, kind, value, tb: errors.append(value))
    yield errors
    assert errors == []


def route_to(table, dst: str) -> Route | None:
    """Return the route ``table`` lists for ``dst`` (what /_xio/routes shows), or None."""
    return next((route for route in table.routes() if route.dst == dst), None)


def reachable(table) -> list[str]:
    """Return the ids ``table`` reaches, sorted (the node hands them to its record store)."""
    return sorted(table.reachable_set())


def node(index: int) -> str:
    return f"{index:032x}"


def record(index: int, links: dict[str, int], apps=()) -> Record:
    return Record(node(index), bytes(32), 1, 0, 60_000, f"n{index}", "0", (),
                  tuple(sorted(links.items())), tuple((app, "") for app in apps))  # fmt: skip


def chain(size: int) -> list[Record]:
    """Return the records of nodes 1..size-1 in a line 0 - 1 - 2 - ... (node 0 is us)."""
    return [
        record(index, {node(j): 1 for j in (index - 1, index + 1) if 0 <= j < size})
        for index in range(1, size)
    ]


class Inputs:
    """This node's side: live links, apps and name; can be made to fail; counts its calls."""

    def __init__(self, links: dict[str, int]) -> None:
        self.links, self.apps, self.name = links, ["home"], "me"
        self.calls = 0
        self.failing = False

    def __call__(self):
        self.calls += 1
        if self.failing:
            raise RuntimeError("inputs unavailable")
        return dict(self.links), list(self.apps), self.name


def wait_until(predicate, what: str, rounds: int = 5000) -> None:
    """Let other greenlets run until ``predicate()`` holds (bounded: ~5 s at most)."""
    for _ in range(rounds):
        if predicate():
            return
        gevent.sleep(0.001)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture
def keepers():
    started = []
    yield started
    for keeper in started:
        keeper.stop()


def test_table_before_start_is_computed_from_the_inputs(keepers):
    topology = Topology(chain(5))
    keeper = RouteKeeper(OWN, topology, Inputs({node(1): 1}))
    assert reachable(keeper.table) == [node(i) for i in range(5)]
    assert keeper.table.hosts_of("home") == [(0, OWN)] and keeper.table.name_of(OWN) == "me"
    assert not keeper.stats()["pending"] and keeper.stats()["nodes"] == 4


def test_invalidate_gives_a_new_table_after_yielding_and_reports_it(keepers):
    topology = Topology(chain(3))
    tables = []
    keeper = RouteKeeper(OWN, topology, Inputs({node(1): 1}), on_table=tables.append)
    keepers.append(keeper)
    keeper.start()
    first = keeper.table
    topology.set_record(record(2, {node(1): 1, node(3): 1}, apps=["shop"]))
    topology.set_record(record(3, {node(2): 1}))
    keeper.invalidate()
    assert keeper.table is first  # nothing is computed on the caller's path
    wait_until(lambda: tables, "a new table")
    assert keeper.table is tables[0] and keeper.table is not first
    assert route_to(keeper.table, node(3)).next_hop == node(1)
    assert keeper.table.hosts_of("shop") == [(2, node(2))]
    assert route_to(first, node(3)) is None  # the old table did not change under its readers
    assert keeper.stats()["computations"] == 2


def test_a_topology_change_alone_gives_a_new_table_and_a_refresh_none(keepers):
    topology = Topology(chain(3))
    keeper = RouteKeeper(OWN, topology, Inputs({node(1): 1}))
    keepers.append(keeper)
    keeper.start()
    assert keeper.table_version == topology.version.value
    topology.set_record(record(2, {node(1): 1, node(3): 1}))
    topology.set_record(record(3, {node(2): 1}))  # no invalidate: the version says it
    wait_until(lambda: node(3) in keeper.table.reachable_set(), "node 3 routed")
    wait_until(lambda: not keeper.stats()["pending"], "the keeper idle")
    assert keeper.table_version == topology.version.value
    before = topology.version.value
    topology.set_record(record(3, {node(2): 1}))  # a refresh: nothing routing reads changed
    assert topology.version.value == before and not keeper.stats()["pending"]
    topology.remove(node(3))
    assert topology.version.value == before + 1 and keeper.stats()["pending"]
    wait_until(lambda: node(3) not in keeper.table.reachable_set(), "node 3 forgotten")


def test_invalidations_during_a_computation_cause_exactly_one_more(keepers):
    topology = Topology(chain(3000))
    inputs = Inputs({node(1): 1})
    tables = []
    keeper = RouteKeeper(OWN, topology, inputs, on_table=tables.append, step=64)
    keepers.append(keeper)
    keeper.start()
    assert inputs.calls == 1
    keeper.invalidate()
    wait_until(lambda: inputs.calls == 2, "the computation to start")
    for _ in range(10):
        assert not tables  # it yields between slices: we run in the middle of it
        for _ in range(5):
            keeper.invalidate()
        gevent.sleep(0)
    wait_until(lambda: len(tables) == 2, "two tables")
    assert inputs.calls == 3 and not keeper.stats()["pending"]
    gevent.sleep(0.05)
    assert inputs.calls == 3 and len(tables) == 2


def test_a_failing_listener_is_counted_and_the_keeper_goes_on(keepers, caplog):
    topology = Topology(chain(3))
    seen = []

    def on_table(table):
        seen.append(table)
        if len(seen) == 1:
            raise ValueError("listener broke")

    keeper = RouteKeeper(OWN, topology, Inputs({node(1): 1}), on_table=on_table)
    keepers.append(keeper)
    keeper.start()
    with caplog.at_level(logging.ERROR, logger="xio.routes"):
        keeper.invalidate()
        wait_until(lambda: len(seen) == 1, "the first table")
    assert keeper.table is seen[0]  # swapped in although the listener failed
    assert not keeper.stats()["pending"]  # and not computed again for nothing
    assert keeper.stats()["errors"] == 1 and "listener broke" in keeper.stats()["last_error"]
    assert "listener broke" in caplog.text
    topology.set_record(record(3, {node(2): 1}))
    topology.set_record(record(2, {node(1): 1, node(3): 1}))
    keeper.invalidate()
    wait_until(lambda: len(seen) == 2, "the second table")
    assert keeper.running and route_to(keeper.table, node(3)) is not None


def test_failing_inputs_do_not_kill_the_keeper_it_retries_after_the_fault_clears(keepers):
    topology = Topology(chain(3))
    inputs = Inputs({node(1): 1})
    tables = []
    keeper = RouteKeeper(OWN, topology, inputs, on_table=tables.append, retry_pause=0.01)
    keepers.append(keeper)
    keeper.start()
    before = keeper.table
    inputs.failing = True
    inputs.links = {node(1): 1, node(9): 1}  # a new live neighbour
    keeper.invalidate()
    wait_until(lambda: keeper.stats()["errors"] >= 2, "retries that fail")
    assert keeper.running and keeper.table is before and keeper.stats()["pending"]
    assert "inputs unavailable" in keeper.stats()["last_error"]
    inputs.failing = False  # no new invalidate: the retry alone must catch up
    wait_until(lambda: tables, "a table once the fault cleared")
    assert route_to(keeper.table, node(9)).next_hop == node(9)
    keeper.invalidate()
    wait_until(lambda: len(tables) == 2, "the keeper to go on computing")


def test_other_greenlets_run_many_times_during_a_large_computation(keepers):
    topology = Topology(chain(4000))
    tables = []
    keeper = RouteKeeper(OWN, topology, Inputs({node(1): 1}), on_table=tables.append)
    keepers.append(keeper)
    keeper.start()
    ticks = []

    def request_loop():
        while not tables and len(ticks) < 100_000:
            ticks.append(len(tables))
            gevent.sleep(0)

    loop = gevent.spawn(request_loop)
    keeper.invalidate()
    loop.join(timeout=30)
    assert tables, "the computation did not finish"
    # 4000 nodes in slices of 256: the other greenlet ran between every two slices.
    assert len(ticks) >= 10
    assert route_to(keeper.table, node(3999)).hops == 3999
    assert keeper.stats()["max_slice_ms"] > 0


def test_compute_now_wins_over_an_older_background_computation(keepers):
    topology = Topology(chain(3000))
    inputs = Inputs({node(1): 1})
    tables = []
    keeper = RouteKeeper(OWN, topology, inputs, on_table=tables.append, step=64)
    keepers.append(keeper)
    keeper.start()
    keeper.invalidate()
    wait_until(lambda: inputs.calls == 2, "the background computation to start")
    topology.set_record(record(1, {node(2): 1}))  # cut us off: 1 no longer lists us
    inputs.links = {}
    table = keeper.compute_now()
    assert reachable(table) == [OWN] and keeper.table is table
    assert keeper.stats()["computing"]
    wait_until(lambda: not keeper.stats()["computing"], "the background computation to end")
    # It finished from an older snapshot: dropped, neither installed nor reported.
    assert keeper.table is table and tables == [table]
    assert inputs.calls == 3 and keeper.stats()["computations"] == 2


def test_stop_ends_the_greenlet_and_start_resumes(keepers):
    topology = Topology(chain(3))
    tables = []
    keeper = RouteKeeper(OWN, topology, Inputs({node(1): 1}), on_table=tables.append)
    keepers.append(keeper)
    keeper.start()
    keeper.stop()
    assert not keeper.running
    topology.set_record(record(3, {node(2): 1}))
    topology.set_record(record(2, {node(1): 1, node(3): 1}))
    keeper.invalidate()
    gevent.sleep(0.05)
    assert not tables and keeper.stats()["pending"]
    keeper.start()
    wait_until(lambda: tables, "a table after the restart")
    expected = compute_routes(OWN, {node(1): 1}, [record(1, {OWN: 1, node(2): 1}),
                                                  record(2, {node(1): 1, node(3): 1}),
                                                  record(3, {node(2): 1})])  # fmt: skip
    assert keeper.table.routes() == expected.routes()


def test_compute_now_raises_a_fault_and_leaves_the_work_to_the_background(keepers):
    topology = Topology(chain(3))
    inputs = Inputs({node(1): 1})
    tables = []
    keeper = RouteKeeper(OWN, topology, inputs, on_table=tables.append, retry_pause=0.01)
    keepers.append(keeper)
    keeper.invalidate()
    inputs.failing = True
    with pytest.raises(RuntimeError):
        keeper.compute_now()
    assert keeper.stats()["pending"]
    inputs.failing = False
    keeper.start()
    wait_until(lambda: tables, "the background greenlet to take over")
