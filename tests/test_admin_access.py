"""Who may read /_xio/ (xio/node/access.py): loopback by default, else the --admin-token bearer.

The rule is tested four ways: the pure decision over addresses no test can connect from
(10.0.0.5, ::ffff:127.0.0.1...); a node's router answering a request whose TCP peer is such
an address (its WSGI environ, as the HTTP server fills it in); real xio-node processes
reached over loopback, with and without --admin-token, linked to each other; and, where
network namespaces can be made (root, iproute2), a node asked from another host of a
throwaway LAN (tests/netns.py), over a real non-loopback address.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

import xio
from xio.demo import demo_app
from xio.errors import ConfigError
from xio.node import Node, NodeConfig
from xio.node.access import admin_refusal, bearer_token, is_loopback
from xio.node.config import read_admin_token
from xio.server import WSGIApp
from xio.testing import TestClient

from .conftest import NODE, ROOT, wait_until
from .netns import Lan, netns_unavailable

TOKEN = "s3cret-Token_0123456789abcdef"


# -- the rule, pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1", "::ffff:127.9.9.9"]
)
def test_loopback_clients_are_admitted_without_a_token(address):
    assert is_loopback(address)
    assert admin_refusal(address, None, None) is None


@pytest.mark.parametrize(
    "address",
    ["10.0.0.5", "192.168.1.2", "::ffff:10.0.0.5", "fe80::1%eth0", "2001:db8::1", "0.0.0.0",
     "", None, "localhost", "not an address"],
)  # fmt: skip
def test_other_clients_are_forbidden_without_a_token(address):
    assert not is_loopback(address)
    refusal = admin_refusal(address, f"Bearer {TOKEN}", None)  # a token nobody configured
    assert (refusal.status, refusal.reason) == (403, "admin_forbidden")
    assert "--admin-token" in refusal.description
    assert "WWW-Authenticate" not in refusal.headers  # no token would help: not a 401


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.5", "192.168.1.2"])
def test_with_a_token_every_client_needs_it_loopback_included(address):
    assert admin_refusal(address, f"Bearer {TOKEN}", TOKEN) is None
    assert admin_refusal(address, f"bearer  {TOKEN} ", TOKEN) is None  # scheme: any case
    missing = admin_refusal(address, None, TOKEN)
    assert (missing.status, missing.reason) == (401, "admin_unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "invalid_token" not in missing.headers["WWW-Authenticate"]
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer é", f"Basic {TOKEN}"):
        refusal = admin_refusal(address, wrong, TOKEN)
        assert (refusal.status, refusal.reason) == (401, "admin_unauthorized"), wrong


def test_bearer_token_is_read_from_the_authorization_value():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("BEARER   abc  ") == "abc"
    assert bearer_token("Bearer") is None
    assert bearer_token("Bearer   ") is None
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None


# -- the token file ---------------------------------------------------------------------------


def token_file(tmp_path, text: str = f"  {TOKEN}\n", mode: int = 0o600):
    path = tmp_path / "admin.token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_token_file_is_read_stripped(tmp_path):
    assert read_admin_token(token_file(tmp_path)) == TOKEN


@pytest.mark.parametrize(
    ("text", "mode", "said"),
    [
        (TOKEN, 0o644, "open to group or others (mode 0644)"),
        (TOKEN, 0o640, "chmod 600"),
        ("  \n", 0o600, "empty"),
        ("two words", 0o600, "a token is letters"),
    ],
)
def test_a_token_file_that_protects_nothing_is_refused(tmp_path, text, mode, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        read_admin_token(token_file(tmp_path, text, mode))


def test_a_missing_token_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="--admin-token .*none: No such file"):
        read_admin_token(tmp_path / "none")


@pytest.mark.parametrize("problem", ["missing", "empty", "readable"])
def test_xio_node_will_not_start_with_a_bad_token_file(tmp_path, problem):
    path = {
        "missing": tmp_path / "none",
        "empty": token_file(tmp_path, ""),
        "readable": token_file(tmp_path, TOKEN, 0o604),
    }[problem]
    done = subprocess.run(
        [*NODE, "--no-mdns", "--port", "0", "--state-dir", str(tmp_path / "s"),
         "--admin-token", str(path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"--admin-token {path}" in done.stderr
    assert "listening" not in done.stderr


def test_app_main_will_not_start_with_a_token_file_open_to_others(tmp_path, python):
    path = token_file(tmp_path, TOKEN, 0o644)
    done = subprocess.run(
        [python, str(ROOT / "examples/hello/app.py"), "--port", "0", "--admin-token", str(path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"--admin-token {path}: open to group or others" in done.stderr


# -- a node's router, asked from an address no test can connect from --------------------------


def client_at(node: Node, address: str) -> TestClient:
    """Ask ``node``'s HTTP front as if the TCP peer were ``address`` (its REMOTE_ADDR)."""
    wsgi = WSGIApp(node.router.handle)
    return TestClient(lambda environ, start: wsgi({**environ, "REMOTE_ADDR": address}, start))


@pytest.fixture
def demo_node(tmp_path):
    """Build (not start) a node hosting the demo app: its router is all these tests need."""

    def build(**options) -> Node:
        config = NodeConfig(name="n", host="127.0.0.1", port=0, mdns=False, **options)
        return Node(config, {"demo": demo_app("n")})

    return build


@pytest.mark.parametrize(
    "path", ["/_xio/node", "/_xio/peers", "/_xio/routes", "/_xio/apps", "/_xio/", "/_xio",
             "/_xio//peers", "/_xio/node/../peers", "/_xio/nothing-here"],
)  # fmt: skip
def test_a_remote_client_is_forbidden_every_admin_page_and_it_is_counted(demo_node, path):
    node = demo_node()
    remote = client_at(node, "10.0.0.5")
    refused = remote.get(path)
    assert refused.status == 403
    assert refused.content["status"] == 403 and "loopback" in refused.content["description"]
    assert "10.0.0.5" in refused.content["description"]
    assert "urls" not in str(refused.content)
    local = client_at(node, "127.0.0.1").get("/_xio/node")
    assert local.status == 200 and local.content["refused"]["admin_forbidden"] == 1
    assert client_at(node, "::ffff:127.0.0.1").get("/_xio/peers").status == 200


def test_the_link_endpoint_and_the_apps_stay_public(demo_node):
    node = demo_node()
    remote = client_at(node, "192.168.1.2")
    ws = remote.get("/_xio/ws")  # a plain GET: the upgrade itself is the server's
    assert ws.status == 426 and ws.headers["Upgrade"] == "websocket"
    hello = remote.get("/demo/")
    assert hello.status == 200 and hello.content["served_by"] == "n"
    assert node.refusals() == {}


def test_with_a_token_a_remote_client_is_admitted_by_it(demo_node, tmp_path):
    node = demo_node(admin_token_file=token_file(tmp_path))
    remote = client_at(node, "10.0.0.5")
    assert remote.get("/_xio/node").status == 401
    answer = remote.get("/_xio/routes", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 200 and isinstance(answer.content, list)
    assert node.refusals() == {"admin_unauthorized": 1}


# -- real nodes over loopback -----------------------------------------------------------------


def test_a_node_without_a_token_answers_its_loopback_clients(start_node):
    node = start_node("plain", "--demo")
    answer = xio.client(node.url).get("/_xio/node")
    assert answer.status == 200 and answer.content["name"] == "plain"
    assert answer.content["refused"].get("admin_forbidden", 0) == 0


def test_with_admin_token_loopback_needs_it_too_and_peers_still_link(start_node, tmp_path):
    path = str(token_file(tmp_path))
    a = start_node("a", "--demo", "--admin-token", path)
    anonymous = xio.client(a.url, timeout=10)
    missing = anonymous.get("/_xio/node")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    assert missing.content["status"] == 401 and "urls" not in missing.content
    wrong = anonymous.get("/_xio/peers", headers={"Authorization": "Bearer guess"})
    assert wrong.status == 401 and "invalid_token" in wrong.headers["WWW-Authenticate"]
    assert anonymous.get("/demo/").status == 200  # the apps stay public
    assert anonymous.get("/_xio/ws").status == 426  # and so does the link endpoint

    admin = xio.client(a.url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})
    status = admin.get("/_xio/node")
    assert status.status == 200 and status.content["refused"]["admin_unauthorized"] == 2

    b = start_node("b", "--peers", a.url, "--admin-token", path)  # dials a's /_xio/ws
    at_b = xio.client(b.url, timeout=10)
    served = wait_until(lambda: at_b.get("/demo/").status == 200 and at_b.get("/demo/"),
                        what="b to route /demo/ to a over the link")  # fmt: skip
    assert served.content["served_by"] == "a"
    assert at_b.get("/_xio/routes").status == 401
    b_admin = xio.client(b.url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})
    assert [peer["id"] for peer in b_admin.get("/_xio/peers").content] == [status.content["id"]]
    assert b_admin.get("/_xio/node").content["refused"] == {"admin_unauthorized": 1}
    # Which nodes serve what is topology too: the trail of node ids, the hosts of each app.
    assert "X-Xio-Via" not in served.headers
    assert at_b.get("/").content == {"node": {"name": "b"}, "apps": ["demo"]}
    assert b_admin.get("/demo/").headers["X-Xio-Via"].split(",")[-1] == status.content["id"]
    assert b_admin.get("/").content["apps"]["demo"][0]["name"] == "a"


def curl_from(host, url: str, *headers: str) -> tuple[int, dict]:
    """GET ``url`` from inside namespace ``host``: ``(status, JSON body)``."""
    args = [item for header in headers for item in ("-H", header)]
    done = host.run("curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", *args, url,
                    timeout=15)  # fmt: skip
    body, _, status = done.stdout.rpartition("\n")
    assert done.returncode == 0, done.stderr
    return int(status), json.loads(body)


@pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))
def test_a_client_on_another_host_is_refused_and_a_peer_there_still_links(spawn, tmp_path):
    with Lan() as lan:
        server, other = lan.add_host(), lan.add_host()
        node = [sys.executable, "-m", "xio.nodemain", "--host", "0.0.0.0", "--port", "7700",
                "--no-mdns"]  # fmt: skip
        spawn(server.command(*node, "--name", "s", "--demo"), "s")
        url = f"http://{server.address}:7700"
        status, body = curl_from(other, f"{url}/_xio/peers")
        assert (status, body["status"]) == (403, 403) and other.address in body["description"]
        assert curl_from(other, f"{url}/demo/")[0] == 200  # the app stays public
        spawn(other.command(*node, "--name", "o", "--state-dir", str(tmp_path / "o"),
                            "--peers", url), "o")  # fmt: skip
        wait_until(lambda: curl_from(other, "http://127.0.0.1:7700/demo/")[0] == 200,
                   what="o to route /demo/ to s over a link from another host")  # fmt: skip
        status, local = curl_from(server, "http://127.0.0.1:7700/_xio/node")
        assert status == 200 and local["refused"] == {"admin_forbidden": 1}
        assert local["links"] == 1


@pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))
def test_with_a_token_a_client_on_another_host_is_admitted_by_it(spawn, tmp_path):
    path = str(token_file(tmp_path))
    with Lan() as lan:
        server, other = lan.add_host(), lan.add_host()
        spawn(server.command(sys.executable, "-m", "xio.nodemain", "--host", "0.0.0.0",
                             "--port", "7700", "--no-mdns", "--name", "s", "--demo",
                             "--admin-token", path), "s")  # fmt: skip
        url = f"http://{server.address}:7700/_xio/node"
        assert curl_from(other, url)[0] == 401
        status, body = curl_from(other, url, f"Authorization: Bearer {TOKEN}")
        assert status == 200 and body["refused"] == {"admin_unauthorized": 1}


# -- req.client for direct HTTP (issue 10, point 6) -------------------------------------------

WHO_APP = """\
import xio

app = xio.app("who")


@app.bind("www")
def who(req):
    client = req.client
    return {"address": client.address, "port": client.port, "via_mesh": client.via_mesh}


if __name__ == "__main__":
    app.main()
"""


def ask_raw(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` over a socket of our own; return its local port and the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return sock.getsockname()[1], b"".join(chunks)


def test_caller_is_exported():
    assert "Caller" in xio.__all__ and xio.Caller is xio.request.Caller


@pytest.mark.parametrize("served_by", ["app.main()", "xio-node --app"])
def test_req_client_names_the_tcp_peer_of_a_direct_request(spawn, start_node, tmp_path, python,
                                                           served_by):  # fmt: skip
    app_file = tmp_path / "who" / "app.py"
    app_file.parent.mkdir()
    app_file.write_text(WHO_APP)
    if served_by == "app.main()":
        server = spawn([python, str(app_file), "--host", "127.0.0.1", "--port", "0",
                        "--no-mdns"], "who")  # fmt: skip
        path = "/"
    else:
        server = start_node("host", "--app", str(app_file))
        path = "/who/"
    local_port, answer = ask_raw(server.url, path)
    assert answer.startswith(b"HTTP/1.1 200 ")
    who = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert who == {"address": "127.0.0.1", "port": local_port, "via_mesh": False}
