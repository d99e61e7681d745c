"""Routing benchmark: table computation time, and what a recompute does to other greenlets.

In one process, no network. Two mesh shapes, seeded so that every run sees the same graphs:

    random  N nodes on a ring plus N random chords (mean degree 4, connected), cost 1;
            we are node 0, one of 20 apps on each node
    sybil   an attacker linked to us, listing us and 255 of N fake nodes (a record holds at
            most 256 links); every fake lists the attacker and on average 64 other fakes,
            all mutual (the attacker holds every key, so it confirms every edge)

For each shape and size the bench reports, as medians over ``--runs`` (old and new
interleaved in each run):

- ``old``: the algorithm before issue 7 (``old_compute_routes`` below, copied from
  xio/peering/routing.py at 3cf2aa9) on the list of records;
- ``compute_routes``: the new one on the same list (it builds a Topology first);
- ``per change``: what one topology change costs the new keeper: ``Topology.set_record`` of
  one changed record, then a whole ``compute_stepwise`` (step 256) from the snapshot;
- ``stepwise busy`` / ``longest slice``: the time spent in slices and the longest one.

Then, with a ``RouteKeeper`` on a 4000-node topology of each shape, a "request loop"
greenlet measures every ``gevent.sleep(0)`` round trip while the keeper recomputes
``--recomputes`` times back to back: p50 / p99 / max of that delay is how long a request
that is ready to run can be held up by a recompute. The same loop is measured idle and next
to the old behaviour (``old_compute_routes`` run on the hub, as the request path did).

    python bench/routing_bench.py [--sizes 100,500,1000,2000,4000] [--runs 7] [--recomputes 8]
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gevent  # noqa: E402

from xio.node.routes import RouteKeeper  # noqa: E402
from xio.node.routes import _drain as drain_slices  # noqa: E402
from xio.peering.records import Record  # noqa: E402
from xio.peering.routing import Route, Topology, compute_routes, compute_stepwise  # noqa: E402

TARGET_MS = 50.0  # per topology change at 1000 nodes (issue 7)
APPS = [f"app{index}" for index in range(20)]


# -- the algorithm before issue 7, for comparison -------------------------------------------


def old_compute_routes(
    own_id: str,
    own_links: Mapping[str, int],
    records: Iterable[Record],
    own_apps: Iterable[str] = (),
    own_name: str = "",
) -> tuple[dict, dict, dict]:
    """Compute routes, hosts and names as xio did before issue 7 (generator per node)."""
    listed: dict[str, dict[str, int]] = {}
    by_id: dict[str, Record] = {}
    for record in records:
        if record.node_id != own_id:
            by_id[record.node_id] = record
            listed[record.node_id] = dict(record.links)
    listed[own_id] = dict(own_links)

    def neighbours(node: str) -> Iterable[tuple[str, int]]:
        for peer, cost in listed.get(node, {}).items():
            if node == own_id or node in listed.get(peer, ()):
                yield peer, cost

    routes = _old_dijkstra(own_id, neighbours)
    names = {own_id: own_name}
    apps: dict[str, list[tuple[int, str]]] = {}
    for app in own_apps:
        apps.setdefault(app, []).append((0, own_id))
    for node, route in routes.items():
        record = by_id.get(node)
        if record is None:
            continue
        names[node] = record.name
        for app, _summary in record.apps:
            apps.setdefault(app, []).append((route.cost, node))
    for hosts in apps.values():
        hosts.sort()
    # The old code wrapped these three dicts in a RoutingTable (four attribute stores).
    return routes, apps, names


def _old_dijkstra(source: str, neighbours) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    heap: list[tuple[int, str, int, str]] = [(0, source, 0, source)]
    while heap:
        cost, first_hop, hops, node = heapq.heappop(heap)
        if node in routes:
            continue
        routes[node] = Route(node, first_hop, cost, hops)
        for peer, link_cost in neighbours(node):
            if peer not in routes:
                hop = peer if node == source else first_hop
                heapq.heappush(heap, (cost + link_cost, hop, hops + 1, peer))
    return routes


# -- meshes ---------------------------------------------------------------------------------


class Mesh:
    """A generated mesh seen from ``own``: its live links and everyone else's records."""

    def __init__(self, own: str, links: dict[str, dict[str, int]], apps: dict[str, list]):
        self.own = own
        self.own_links = dict(links[own])
        self.records = [
            _record(node, node_links, apps.get(node, ()))
            for node, node_links in links.items()
            if node != own
        ]


def _record(node: str, links: Mapping[str, int], apps: Iterable[str], seq: int = 1) -> Record:
    return Record(node, bytes(32), seq, 0, 60_000, node[:8], "0", (),
                  tuple(sorted(links.items())), tuple((app, "") for app in apps))  # fmt: skip


def _ids(rng: random.Random, count: int) -> list[str]:
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def random_mesh(size: int, seed: int = 7) -> Mesh:
    """Return a connected random mesh of mean degree 4: a ring plus ``size`` random chords."""
    rng = random.Random(seed)
    nodes = _ids(rng, size)
    links = {node: {} for node in nodes}
    for index, node in enumerate(nodes):
        peer = nodes[(index + 1) % size]
        links[node][peer] = links[peer][node] = 1
    for _ in range(size):
        a, b = rng.sample(nodes, 2)
        links[a][b] = links[b][a] = 1
    apps = {node: [rng.choice(APPS)] for node in nodes}
    return Mesh(nodes[0], links, apps)


def sybil_mesh(fakes: int, seed: int = 7) -> Mesh:
    """Return us, one attacker linked to us, and ``fakes`` fake nodes behind it."""
    rng = random.Random(seed)
    own, attacker, *fake = _ids(rng, fakes + 2)
    links = {own: {attacker: 1}, attacker: {own: 1}}
    links.update({node: {attacker: 1} for node in fake})
    for node in rng.sample(fake, min(255, fakes)):
        links[attacker][node] = 1
    for node in fake:
        for peer in rng.sample(fake, min(32, fakes - 1)):  # 32 picks each way: 64 on average
            if peer != node:
                links[node][peer] = links[peer][node] = 1
    apps = {node: [rng.choice(APPS)] for node in fake}
    return Mesh(own, links, apps)


SHAPES = {"random": random_mesh, "sybil": sybil_mesh}


# -- measurements ---------------------------------------------------------------------------


def drain(slices) -> tuple[object, float, float]:
    """Run a compute_stepwise generator; return (table, busy seconds, longest slice)."""
    return drain_slices(slices, None, time.perf_counter())  # as the keeper times its slices


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def compute_figures(shape: str, size: int, runs: int) -> dict:
    """Measure one shape and size: old, compute_routes, per change, stepwise slices (ms)."""
    mesh = SHAPES[shape](size)
    topology = Topology(mesh.records)
    # One record that changes back and forth: the first record drops and regains a link.
    changing = mesh.records[1]
    variants = [changing, _record(changing.node_id, dict(changing.links[1:]), (), seq=2)]
    old, new, change, busy, longest = [], [], [], [], []
    for run in range(runs):
        old.append(timed(lambda: old_compute_routes(mesh.own, mesh.own_links, mesh.records)))
        new.append(timed(lambda: compute_routes(mesh.own, mesh.own_links, mesh.records)))
        started = time.perf_counter()
        assert topology.set_record(variants[(run + 1) % 2])
        _table, slices_busy, slice_max = drain(
            compute_stepwise(mesh.own, mesh.own_links, topology, step=256)
        )
        change.append(time.perf_counter() - started)
        busy.append(slices_busy)
        longest.append(slice_max)
    reached = len(compute_routes(mesh.own, mesh.own_links, mesh.records))
    refresh = _record(changing.node_id, dict(changing.links), changing.app_names(), seq=9)
    topology.set_record(changing)
    refresh_s = min(timed(lambda: topology.set_record(refresh)) for _ in range(20))
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    return {
        "shape": shape, "nodes": size, "reachable": reached,
        "links": sum(len(r.links) for r in mesh.records) + len(mesh.own_links),
        "old": ms(old), "new": ms(new), "change": ms(change),
        "busy": ms(busy), "longest": ms(longest), "refresh_us": refresh_s * 1e6,
    }  # fmt: skip


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class FullCollections:
    """Count the garbage collector's full (generation 2) passes and the longest one."""

    def __init__(self) -> None:
        self.count, self.longest, self._started = 0, 0.0, 0.0

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._observe)
        return self

    def __exit__(self, *exc_info) -> None:
        gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def note(self) -> str:
        return f"{self.count} full GC pass(es), longest {self.longest * 1000:.1f} ms"


def loop_delays(busy_while, stop_when) -> list[float]:
    """Measure each gevent.sleep(0) round trip of a request loop while ``busy_while()``."""
    delays: list[float] = []

    def request_loop():
        for _ in range(2_000_000):  # bounded: stops long before in any sane run
            if stop_when():
                return
            started = time.perf_counter()
            gevent.sleep(0)
            if busy_while():
                delays.append(time.perf_counter() - started)

    gevent.spawn(request_loop).join(timeout=300)
    return delays


def latency_figures(shape: str, size: int, recomputes: int) -> list[dict]:
    """Request-loop delays: idle, next to the keeper's recomputes, next to the old way."""
    mesh = SHAPES[shape](size)
    topology = Topology(mesh.records)
    finished = []

    def next_recompute(table):  # chain the recomputes back to back
        finished.append(table)
        if len(finished) < recomputes:
            keeper.invalidate()

    keeper = RouteKeeper(mesh.own, topology, lambda: (mesh.own_links, ["home"], "me"),
                         on_table=next_recompute)  # fmt: skip
    keeper.start()
    idle_rounds = []
    with FullCollections() as idle_gc:
        idle = loop_delays(lambda: True, lambda: idle_rounds.append(1) or len(idle_rounds) > 20_000)
    keeper.invalidate()
    with FullCollections() as during_gc:
        during = loop_delays(lambda: keeper.stats()["computing"],
                             lambda: len(finished) >= recomputes)  # fmt: skip
    stats = keeper.stats()
    keeper.stop()

    blocking_done = []

    def old_on_the_hub():
        for _ in range(min(recomputes, 5)):
            gevent.sleep(0)  # the request loop runs between two computes
            old_compute_routes(mesh.own, mesh.own_links, mesh.records)
        blocking_done.append(True)

    old_worker = gevent.spawn(old_on_the_hub)  # starts once the request loop waits
    with FullCollections() as old_gc:
        old = loop_delays(lambda: True, lambda: bool(blocking_done))
    old_worker.join()
    label = f"{shape} {size}"
    keeper_note = (
        f"{recomputes} recomputes, keeper max slice {stats['max_slice_ms']:.2f} ms, "
        f"last {stats['last_ms']:.1f} ms wall / {stats['last_busy_ms']:.1f} ms busy; "
        f"{during_gc.note()}"
    )
    rows = [
        ("idle", idle, idle_gc.note()),
        ("keeper recomputing", during, keeper_note),
        ("old: compute on the hub", old, f"{min(recomputes, 5)} computes; {old_gc.note()}"),
    ]
    return [
        {"mesh": label, "case": case, "samples": len(values),
         "p50": percentile(values, 0.5) * 1000 if values else float("nan"),
         "p99": percentile(values, 0.99) * 1000 if values else float("nan"),
         "max": max(values) * 1000 if values else float("nan"), "note": note}
        for case, values, note in rows
    ]  # fmt: skip


# -- output ---------------------------------------------------------------------------------


def print_compute_table(rows: list[dict]) -> None:
    print("| shape | nodes | reachable | listed links | old | compute_routes | speed-up |"
          " per change (set_record + stepwise) | stepwise busy | longest slice |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['shape']} | {row['nodes']} | {row['reachable']} | {row['links']:,} "
              f"| {row['old']:.2f} ms | {row['new']:.2f} ms | {row['old'] / row['new']:.2f}x "
              f"| {row['change']:.2f} ms | {row['busy']:.2f} ms | {row['longest']:.2f} ms |")  # fmt: skip


def print_latency_table(rows: list[dict]) -> None:
    print("| mesh | request loop next to | round trips | p50 | p99 | max | notes |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['mesh']} | {row['case']} | {row['samples']:,} | {row['p50']:.3f} ms "
              f"| {row['p99']:.3f} ms | {row['max']:.3f} ms | {row['note']} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000,2000,4000",
                        help="node counts, comma separated")  # fmt: skip
    parser.add_argument("--runs", type=int, default=7, help="runs per size (median)")
    parser.add_argument("--recomputes", type=int, default=8, help="keeper recomputes measured")
    parser.add_argument("--latency-size", type=int, default=4000, help="nodes for the keeper")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = [
        compute_figures(shape, size, args.runs if size <= 1000 else max(3, args.runs // 2))
        for shape in SHAPES
        for size in sizes
    ]
    print(f"Table computation, medians of {args.runs} runs ({max(3, args.runs // 2)} above 1000 "
          f"nodes), step 256\n")  # fmt: skip
    print_compute_table(rows)
    print()
    for row in rows:
        if row["nodes"] == 1000:
            verdict = "meets" if row["change"] <= TARGET_MS else "MISSES"
            print(f"- {row['shape']} 1000: per topology change {row['change']:.2f} ms "
                  f"(target <= {TARGET_MS:.0f} ms: {verdict}); a same-content refresh costs "
                  f"set_record {row['refresh_us']:.1f} µs and no recompute")  # fmt: skip
    print("\nRequest-loop delay (one gevent.sleep(0) round trip) during recomputes\n")
    latency = [row for shape in SHAPES
               for row in latency_figures(shape, args.latency_size, args.recomputes)]  # fmt: skip
    print_latency_table(latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
