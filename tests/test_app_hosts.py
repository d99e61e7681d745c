"""Who serves an app: a second host is logged and shown, and --pin-app keeps an app's requests
on the nodes an operator names (issue 10, point 3: any node of an open mesh can claim an app)."""

from __future__ import annotations

import logging
import subprocess
import sys

import xio
from xio.node.apphosts import AppHosts
from xio.peering.identity import Identity
from xio.peering.records import Record
from xio.peering.routing import compute_routes

from .conftest import ROOT
from .mesh import call, wait_for


def shop(name: str) -> xio.App:
    app = xio.app("shop")
    app.bind("www", lambda req: {"served_by": name})
    return app


def record(node_id: str, links: dict[str, int], apps=()) -> Record:
    return Record(node_id=node_id, public_key=b"k" * 32, seq=1, issued_ms=0, expires_ms=1,
                  name=node_id[:4], version="", urls=(), links=tuple(sorted(links.items())),
                  apps=tuple((app, "") for app in apps))  # fmt: skip


def ids(count: int) -> list[str]:
    return sorted(Identity.generate().node_id for _ in range(count))


def test_a_pin_leaves_every_other_host_out_of_the_table():
    me, near, far = ids(3)
    records = [record(near, {me: 1, far: 1}, ["shop"]), record(far, {near: 1}, ["shop"])]
    table = compute_routes(me, {near: 1}, records, own_apps=["shop"], pins={"shop": {far}})
    assert table.hosts_of("shop") == [(2, far)]  # not this node's own copy, not the nearer one
    assert [table.pick_host("shop") for _ in range(20)] == [far] * 20
    assert table.excluded_hosts() == {"shop": sorted([(0, me), (1, near)])}
    assert not table.serves("shop", me) and table.serves("shop", far)
    unpinned = compute_routes(me, {near: 1}, records, own_apps=["shop"])
    assert unpinned.serves("shop", me) and unpinned.excluded_hosts() == {}


def test_a_pin_to_nodes_that_are_not_there_leaves_the_app_unroutable():
    me, near = ids(2)
    records = [record(near, {me: 1}, ["shop"])]
    table = compute_routes(me, {near: 1}, records, pins={"shop": {ids(1)[0]}})
    assert table.hosts_of("shop") == [] and table.pick_host("shop") is None


def test_app_hosts_flags_a_host_that_joins_an_app_served_elsewhere():
    me, first, second = ids(3)
    seen = AppHosts()
    alone = compute_routes(me, {first: 1}, [record(first, {me: 1}, ["shop"])])
    assert seen.update(alone, now_ms=100) == []  # the first host of an app is news to no one
    both = compute_routes(me, {first: 1, second: 1}, [
        record(first, {me: 1}, ["shop"]), record(second, {me: 1}, ["shop"])])  # fmt: skip
    (new,) = seen.update(both, now_ms=200)
    assert (new.app, new.node, new.others) == ("shop", second, (first,))
    assert seen.is_second("shop", second) and not seen.is_second("shop", first)
    assert (seen.since_ms("shop", first), seen.since_ms("shop", second)) == (100, 200)
    assert seen.update(alone, now_ms=300) == []  # the second host left: it is forgotten
    assert seen.since_ms("shop", second) is None and not seen.is_second("shop", second)


def test_a_second_host_of_an_app_is_logged_and_shown_under_xio_apps(in_process_mesh, caplog):
    a = in_process_mesh.start("a", apps=[shop("a")])
    b = in_process_mesh.start("b", peers=[a])
    wait_for(lambda: b.table.hosts_of("shop"), "b to learn of shop on a")
    with caplog.at_level(logging.WARNING, logger="xio.node"):
        claimant = in_process_mesh.start("claimant", peers=[b], apps=[shop("claimant")])
        wait_for(lambda: len(b.table.hosts_of("shop")) == 2, "b to learn of the second host")
        wait_for(lambda: any(claimant.id in r.getMessage() for r in caplog.records),
                 "the second host to be logged")  # fmt: skip
    (line,) = [r.getMessage() for r in caplog.records if claimant.id in r.getMessage()]
    assert "'shop' has a second host" in line and a.id in line
    hosts = {host["node"]: host for host in call(b, "GET", "/_xio/apps").content["shop"]}
    assert hosts[claimant.id]["second_host"] is True and hosts[claimant.id]["name"] == "claimant"
    assert "second_host" not in hosts[a.id]
    assert hosts[a.id]["since_ms"] <= hosts[claimant.id]["since_ms"]


def test_pin_app_sends_every_request_to_the_pinned_node(in_process_mesh):
    owner = in_process_mesh.start("owner", apps=[shop("owner")])
    claimant = in_process_mesh.start("claimant", apps=[shop("claimant")])
    entry = in_process_mesh.start("entry", peers=[owner, claimant], apps=[shop("entry")],
                                  pin_apps={"shop": frozenset({owner.id})})  # fmt: skip
    wait_for(lambda: entry.table.excluded_hosts().get("shop", [])
             and len(entry.table.excluded_hosts()["shop"]) == 2, "entry to see both claims")  # fmt: skip
    answers = [call(entry, "GET", "/shop/").content["served_by"] for _ in range(20)]
    assert answers == ["owner"] * 20  # not its own copy, not the claimant at the same cost
    hosts = call(entry, "GET", "/_xio/apps").content["shop"]
    excluded = {host["node"] for host in hosts if host.get("excluded")}
    assert excluded == {entry.id, claimant.id}
    assert [host["node"] for host in hosts if not host.get("excluded")] == [owner.id]
    for pinned_out in (claimant, entry):  # naming a left-out node does not get around the pin
        refused = call(entry, "GET", f"/~{pinned_out.id}/shop/")
        assert refused.status == 404 and "pinned to other nodes" in refused.content["description"]
    assert call(entry, "GET", f"/~{owner.id}/shop/").content == {"served_by": "owner"}


def test_a_malformed_pin_is_refused_at_start():
    node = [sys.executable, "-m", "xio.nodemain", "--no-mdns", "--port", "0"]
    for spec, message in [
        ("shop", "expected APP=NODE_ID"),
        ("shop=nope", "'nope' is not a node id"),
        ("_x=" + "a" * 32, "expected APP=NODE_ID"),
        ("shop=", "at least one"),
    ]:
        done = subprocess.run([*node, "--pin-app", spec], capture_output=True, text=True,
                              timeout=30, cwd=ROOT)  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, (spec, done.stderr)
