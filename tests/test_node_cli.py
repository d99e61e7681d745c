"""xio-node as a user meets it: the demo, identity, restarts, app.main() in a mesh."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

import xio
from xio.errors import StateError
from xio.statedir import write_atomic

from .conftest import NODE, ROOT, wait_until

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run_node(*args: str, timeout: float = 30, env: dict | None = None):
    """Run ``xio-node args`` to its end (discovery off, any port) and return what it did."""
    return subprocess.run([*NODE, *args], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=timeout)  # fmt: skip


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
    first = subprocess.run([*NODE, "id", "--state-dir", str(state), "--create"],
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)  # fmt: skip
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


# -- the state directory (issue 8, point 11) -------------------------------------------------


def test_a_second_node_on_the_same_state_dir_exits_naming_the_holder(start_node):
    first = start_node("n")
    second = run_node("--state-dir", str(first.state_dir), "--host", "127.0.0.1", "--port", "0",
                      "--no-mdns")  # fmt: skip
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1  # one line, no traceback, no "listening on"
    assert f"in use by pid {first.proc.pid}" in second.stderr
    assert str(first.state_dir) in second.stderr
    assert xio.client(first.url).get("/_xio/node").status == 200  # the first one is unharmed


def test_the_state_lock_ends_with_the_node(start_node, spawn):
    first = start_node("n")
    first_id = xio.client(first.url).get("/_xio/node").content["id"]
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    # The same state dir once the first is gone: it starts, with the same identity.
    again = spawn([*NODE, "--name", "n", "--host", "127.0.0.1", "--port", "0", "--state-dir",
                   str(first.state_dir), "--no-mdns"], "again")  # fmt: skip
    assert xio.client(again.url).get("/_xio/node").content["id"] == first_id


def test_a_seq_file_that_cannot_be_read_is_named_at_start(start_node, tmp_path):
    node = start_node("s")
    node.stop()
    (node.state_dir / "seq").unlink()
    (node.state_dir / "seq").mkdir()  # unreadable and unwritable as a file, even for root
    again = run_node("--state-dir", str(node.state_dir), "--host", "127.0.0.1", "--port", "0",
                     "--no-mdns")  # fmt: skip
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"xio-node: cannot read seq file {node.state_dir / 'seq'}: Is a directory"
    )


def test_a_state_dir_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    done = run_node("--state-dir", str(tmp_path / "file" / "n"), "--port", "0", "--no-mdns")
    assert done.returncode == 1
    assert done.stderr.strip().endswith(f"{tmp_path / 'file' / 'n' / 'lock'}: Not a directory")


def test_write_atomic_replaces_whole_files_or_names_the_one_it_could_not_write(tmp_path):
    target = tmp_path / "seq"
    write_atomic(target, b"41\n", what="seq file")
    write_atomic(target, b"42\n", what="seq file")
    assert target.read_bytes() == b"42\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    (tmp_path / "dir").mkdir()
    with pytest.raises(StateError, match=f"cannot write seq file {tmp_path / 'dir'}: Is a"):
        write_atomic(tmp_path / "dir", b"1", what="seq file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "seq"]  # no temporary left


def test_id_of_a_mistyped_name_creates_no_identity(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path)}
    typo = run_node("id", "--name", "typo", env=env)
    assert typo.returncode == 1 and typo.stdout == ""
    assert "no identity for node 'typo'" in typo.stderr
    assert str(tmp_path / "xio" / "typo" / "node.key") in typo.stderr  # where it looked
    assert not (tmp_path / "xio").exists()
    created = run_node("id", "--name", "typo", "--create", env=env)
    assert created.returncode == 0
    assert run_node("id", "--name", "typo", env=env).stdout == created.stdout
