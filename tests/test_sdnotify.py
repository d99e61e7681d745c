"""sd_notify (xio.node.sdnotify): a real xio-node under a fake systemd socket.

The test binds the unix datagram socket systemd would (``NOTIFY_SOCKET``), sets a short
watchdog period, and reads what the node sends: READY=1 once it listens, WATCHDOG=1 again and
again, STOPPING=1 after SIGTERM. Units check the abstract ``@name`` form, the watchdog of
another process (``WATCHDOG_PID``) and a node without systemd.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from contextlib import contextmanager

import pytest

from xio.node.sdnotify import Notifier

from .conftest import NODE, Process


@pytest.fixture
def notify_socket():
    """A datagram socket bound where systemd would be (a short path: sun_path is 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="xio-sd-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)  # a bound on a node that sends nothing, not a timing assertion
    yield path, sock
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


def read_until(sock, line: str, seen: list[str]) -> None:
    while not any(line in notice.split("\n") for notice in seen):
        seen.append(sock.recv(4096).decode())


def test_a_node_under_systemd_says_ready_keeps_the_watchdog_and_says_stopping(
    notify_socket, tmp_path
):
    path, sock = notify_socket
    command = [*NODE, "--name", "n", "--host", "127.0.0.1", "--port", "0", "--no-mdns",
               "--state-dir", str(tmp_path / "n")]  # fmt: skip
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": ""}  # ours
    node = Process(command, tmp_path / "n.log", env=env).start()
    try:
        seen: list[str] = []
        read_until(sock, "READY=1", seen)
        ready = next(notice for notice in seen if "READY=1" in notice.split("\n"))
        assert "STATUS=serving, 0 links, 1 routes" in ready.split("\n")
        while sum(notice == "WATCHDOG=1" for notice in seen) < 2:
            seen.append(sock.recv(4096).decode())
        node.signal(signal.SIGTERM)
        read_until(sock, "STOPPING=1", seen)
        assert node.wait(15) == 0
    finally:
        node.stop()


@contextmanager
def abstract_listener(name: str):
    """Yield a datagram socket bound to the abstract address ``@name`` (as systemd's is)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield sock


def test_the_abstract_socket_form_is_understood():
    name = f"xio-test-{os.getpid()}"
    with abstract_listener(name) as sock:
        notifier = Notifier(f"@{name}")
        notifier.ready("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
        notifier.status("serving")  # said already: nothing sent
        notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining"


def test_the_watchdog_is_kept_only_for_this_process():
    mine = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000",
                                  "WATCHDOG_PID": str(os.getpid())})  # fmt: skip
    assert mine.watchdog_usec == 30_000_000
    other = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000",
                                   "WATCHDOG_PID": "1"})  # fmt: skip
    assert other.watchdog_usec is None


def test_without_systemd_nothing_is_sent_and_a_dead_socket_raises_nothing(tmp_path):
    silent = Notifier.from_environ({})
    assert silent.address is None
    silent.ready("serving")
    assert list(silent.sent) == []
    gone = Notifier(str(tmp_path / "nobody-listens"))
    gone.ready("serving")  # logged once, never raised: systemd's absence must not stop a node
    assert list(gone.sent) == []


def test_a_reload_says_reloading_then_ready():
    name = f"xio-test-reload-{os.getpid()}"
    with abstract_listener(name) as sock:
        notifier = Notifier(f"@{name}")
        notifier.reloading()
        first = sock.recv(4096).decode().split("\n")
        assert first[0] == "RELOADING=1" and first[1].startswith("MONOTONIC_USEC=")
        notifier.reloaded("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_the_notices_kept_are_bounded_however_long_the_watchdog_runs(tmp_path):
    """A node runs for months and the watchdog sends every few seconds: keep only the last."""
    from xio.node.sdnotify import SENT_KEPT

    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = Notifier(path)
        for _ in range(SENT_KEPT * 3):
            notifier.notify(WATCHDOG=1)
            sock.recv(64)
        notifier.notify(STATUS="last")
    assert len(notifier.sent) == SENT_KEPT
    assert notifier.sent[-1] == "STATUS=last"
