"""``xio-node status|peers|routes``: the tables, and a real three-node mesh asked through them."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import pytest

import xio
from xio.node import status_cli
from xio.node.status_cli import format_table, peer_rows, route_rows, status_rows

from .conftest import ROOT, wait_until
from .mesh import unused_port

EDGE = str(ROOT / "tests/apps/edge")
ID_A, ID_B, ID_C = "a" * 32, "b" * 32, "c" * 32


# -- the tables: pure ------------------------------------------------------------------------


def test_a_table_is_aligned_in_columns_two_spaces_apart():
    text = format_table(["Name", "Id"], [["a", "x" * 5], ["longer", "y"]])
    assert text.splitlines() == ["Name    Id", "a       xxxxx", "longer  y"]


def test_status_rows_say_mode_budgets_and_counts():
    node = {
        "name": "a", "id": ID_A, "version": "1.2", "urls": ["ws://h:1/_xio/ws"], "uptime_s": 3725,
        "links": 2, "apps": ["edge", "shop"], "mesh": None,
        "budgets": {"in_flight": {"used": 1, "limit": 4096},
                    "link_queue_bytes": {"used": 5, "limit_per_link": 1024},
                    "body_bytes": {"used": 0, "limit": 9}},
    }  # fmt: skip
    routes = [{"destination": ID_A}, {"destination": ID_B}, {"destination": ID_C}]
    rows = dict(status_rows(node, routes))
    assert rows["id"] == ID_A and rows["uptime"] == "1h2m" and rows["routes"] == "2"
    assert rows["mode"] == "open" and rows["apps"] == "edge, shop"
    assert rows["budgets"] == "in_flight 1/4096, link_queue_bytes 5/1024"  # the ones in use
    closed = dict(status_rows({**node, "mesh": {"authority": ID_C}}))
    assert closed["mode"] == f"closed (authority {ID_C})"


def test_peer_rows_show_full_ids_and_human_sizes():
    peer = {"id": ID_B, "name": "b", "state": "established", "direction": "out",
            "url": "ws://127.0.0.1:1/_xio/ws", "rtt_ms": 0.25, "up_s": 75, "bytes_in": 2048,
            "bytes_out": 10, "queued_frames": 0, "queued_bytes": 0}  # fmt: skip
    assert peer_rows([peer]) == [[
        "b", ID_B, "established", "out", "ws://127.0.0.1:1/_xio/ws", "0.25 ms", "1m15s",
        "2.0KiB", "10B", "0/0B",
    ]]  # fmt: skip


def test_route_rows_are_nearest_first_with_the_next_hop_by_name():
    routes = [
        {"destination": ID_C, "name": "c", "next_hop": ID_B, "cost": 20, "hops": 2,
         "apps": ["edge"], "age_s": 4.0},
        {"destination": ID_B, "name": "b", "next_hop": ID_B, "cost": 10, "hops": 1,
         "apps": [], "age_s": 12},
    ]  # fmt: skip
    assert route_rows(routes) == [
        [ID_B, "b", "b", "1", "10", "-", "12s"],
        [ID_C, "c", "b", "2", "20", "edge", "4.0s"],
    ]


def test_the_default_node_is_loopback_on_xio_port_or_the_configured_port_or_7700(tmp_path):
    assert status_cli.default_via({"XIO_CONFIG": ""}) == "http://127.0.0.1:7700"
    assert status_cli.default_via({"XIO_PORT": "7811"}) == "http://127.0.0.1:7811"
    config = tmp_path / "node.toml"
    config.write_text("name = 'a'\nport = 7812\n")
    assert status_cli.default_via({"XIO_CONFIG": str(config)}) == "http://127.0.0.1:7812"
    both = {"XIO_CONFIG": str(config), "XIO_PORT": "7811"}
    assert status_cli.default_via(both) == "http://127.0.0.1:7811"  # as for the node itself


# -- a real mesh --------------------------------------------------------------------------------


def ws(process) -> str:
    return process.url.replace("http://", "ws://")


def node_id(process) -> str:
    return xio.client(process.url, timeout=5).get("/_xio/node").content["id"]


@pytest.fixture
def line(start_node):
    """A - B - C, the edge app on C, A knowing a route to C."""
    c = start_node("c", "--app", EDGE)
    b = start_node("b", "--peers", ws(c))
    a = start_node("a", "--peers", ws(b))
    wait_until(lambda: len(xio.client(a.url, timeout=5).get("/_xio/routes").content) == 3,
               what="a to have routes to itself, b and c")  # fmt: skip
    return a, b, c


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = status_cli.main(argv[0], list(argv[1:]))
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[1:]]


def test_status_peers_and_routes_show_the_nodes_of_the_mesh(line, capsys):
    a, b, c = line
    ids = {name: node_id(p) for name, p in (("a", a), ("b", b), ("c", c))}
    code, out, _ = run(capsys, "status", "--via", a.url)
    fields = {row.split(None, 1)[0]: row.split(None, 1)[1] for row in out.splitlines()}
    assert code == 0
    assert fields["name"] == "a" and fields["id"] == ids["a"]
    assert fields["links"] == "1" and fields["mode"] == "open" and fields["routes"] == "2"

    code, out, _ = run(capsys, "peers", "--via", b.url)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["Name", "Id", "State"]
    peers = rows_of(out)
    assert [(row[0], row[1], row[2]) for row in peers] == [
        ("a", ids["a"], "established"), ("c", ids["c"], "established"),
    ]  # fmt: skip
    assert {row[0]: row[3] for row in peers} == {"a": "in", "c": "out"}

    code, out, _ = run(capsys, "routes", "--via", a.url)
    assert code == 0
    routes = rows_of(out)
    assert [(row[0], row[1], row[2]) for row in routes] == [
        (ids["a"], "a", "-"), (ids["b"], "b", "b"), (ids["c"], "c", "b"),  # nearest first
    ]  # fmt: skip
    assert routes[2][5] == "edge"  # the apps column: c hosts edge


def test_json_prints_the_nodes_own_pages(line, capsys):
    a, _, _ = line
    for command, page in (("status", "node"), ("peers", "peers"), ("routes", "routes")):
        code, out, _ = run(capsys, command, "--via", a.url, "--json")
        assert code == 0
        assert json.loads(out).__class__ is type(
            xio.client(a.url, timeout=5).get(f"/_xio/{page}").content
        )
    _, out, _ = run(capsys, "status", "--via", a.url, "--json")
    assert json.loads(out)["name"] == "a"


def test_an_unreachable_node_is_one_line_and_exit_1(capsys):
    url = f"http://127.0.0.1:{unused_port()}"
    for command in ("status", "peers", "routes"):
        code, out, err = run(capsys, command, "--via", url)
        assert code == 1 and out == ""
        assert err == f"xio-node {command}: cannot reach node at {url}: connection refused\n"


def test_trace_of_an_unreachable_node_is_one_line_and_exit_1(capsys):
    url = f"http://127.0.0.1:{unused_port()}"
    code, out, err = run(capsys, "trace", f"{url}/edge/echo/1")
    assert (code, out) == (1, "")
    assert err == f"xio-node trace: cannot reach node at {url}: connection refused\n"


def test_a_server_that_is_no_node_is_said_so(capsys):
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = run(capsys, "peers", "--via", url)
    finally:
        server.shutdown()
        server.server_close()
    assert (code, out) == (1, "")
    assert err == f"xio-node peers: {url}/_xio/peers is not an xio node's page (no JSON list)\n"


def test_the_default_node_comes_from_xio_port(capsys, monkeypatch):
    port = unused_port()
    monkeypatch.setenv("XIO_PORT", str(port))
    code, _, err = run(capsys, "status")
    assert code == 1 and f"cannot reach node at http://127.0.0.1:{port}:" in err


def test_a_token_protected_node_refuses_without_the_token_and_answers_with_it(
    start_node, tmp_path, capsys
):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    os.chmod(token, 0o600)
    node = start_node("t", "--admin-token", str(token))
    code, out, err = run(capsys, "status", "--via", node.url)
    assert code == 1 and out == ""
    assert err.startswith(f"xio-node status: node at {node.url} answered 401: ")
    assert "admin token" in err
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it\n")
    os.chmod(wrong, 0o600)
    code, _, err = run(capsys, "peers", "--via", node.url, "--admin-token", str(wrong))
    assert code == 1 and "answered 401" in err
    code, out, _ = run(capsys, "status", "--via", node.url, "--admin-token", str(token))
    assert code == 0 and "name     t" in out.splitlines()


def test_xio_node_dispatches_the_commands_and_lists_them(line):
    a, _, _ = line
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "xio.nodemain", "routes", "--via", a.url],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [row[1] for row in rows_of(done.stdout)] == ["a", "b", "c"]
    helped = subprocess.run([sys.executable, "-m", "xio.nodemain", "--help"],
                            capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert "xio-node status|peers|routes" in helped.stdout and "xio-node trace" in helped.stdout
