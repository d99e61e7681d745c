"""xio-node as a user meets it: the demo, identity, restarts, app.main() in a mesh."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import xio

from .conftest import NODE, ROOT, wait_until

INVENTORY = str(ROOT / "tests/apps/inventory")


def test_demo_answers_on_loopback(spawn):
    demo = spawn([*NODE, "--demo", "--port", "0"], "demo")
    assert demo.url.startswith("http://127.0.0.1:")
    client = xio.client(demo.url)
    hello = client.get("/demo/")
    assert hello.status == 200 and hello.content["served_by"] == "demo"
    created = client.post("/demo/items", {"name": "mug"})
    assert created.status == 201
    assert client.get(f"/demo/items/{created.content['id']}").content["name"] == "mug"
    assert list(client.get("/").content["apps"]) == ["demo"]
    assert client.get("/_xio/node").content["mdns"] is None  # a demo never announces itself


def test_node_id_is_stable_and_the_key_is_private(tmp_path, start_node):
    state = tmp_path / "state" / "n"
    first = subprocess.run([*NODE, "id", "--state-dir", str(state)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)  # fmt: skip
    node_id = first.stdout.strip()
    assert len(node_id) == 32
    assert stat.S_IMODE((state / "node.key").stat().st_mode) == 0o600
    node = start_node("n")
    assert xio.client(node.url).get("/_xio/node").content["id"] == node_id


def test_seq_survives_a_restart(start_node):
    node = start_node("s")
    before = xio.client(node.url).get("/_xio/node").content["seq"]
    node.stop()
    node.start()
    after = xio.client(node.url).get("/_xio/node").content["seq"]
    assert after > before


def test_app_main_joins_a_mesh_when_given_peers(spawn, start_node, python):
    hub = start_node("hub", "--app", INVENTORY)
    hello = spawn(
        [python, str(ROOT / "examples/hello/app.py"), "--host", "127.0.0.1", "--port", "0",
         "--peers", hub.url],
        "hello",
    )  # fmt: skip
    assert xio.client(hello.url).get("/").content == "Hello World"
    wait_until(lambda: xio.client(hub.url).get("/hello/").content == "Hello World",
               what="the hub to reach the app")  # fmt: skip
    assert xio.client(hello.url).get("/inventory/items/3").content["id"] == "3"


def test_bad_command_lines_say_what_is_wrong(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad_peer = subprocess.run([*NODE, "--peers", "ftp://x", "--no-mdns", "--port", "0"],
                              capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert bad_peer.returncode == 2
    assert "ftp://x" in bad_peer.stderr
    missing_app = subprocess.run([*NODE, "--app", str(tmp_path / "none.py"), "--no-mdns"],
                                 capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert missing_app.returncode == 2
    assert "no such file" in missing_app.stderr


def test_console_script_is_installed():
    # scripts/check pip-installs the project, so the README's `xio-node` exists.
    script = os.path.join(os.path.dirname(sys.executable), "xio-node")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--peers" in done.stdout
