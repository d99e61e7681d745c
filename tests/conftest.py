"""Shared fixtures: real server processes on free loopback ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (\S+)")


class Process:
    """A child process whose stderr goes to a file, started and stopped by a test."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.args = args
        self.log = log
        self._env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 15.0) -> Process:
        """Start the process and wait for its 'listening on URL' line."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle, env=self._env
        )
        handle.close()
        offset = self.log.stat().st_size if self.url else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log.read_text(errors="replace")[offset:])
            if match:
                self.url = match[1]
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.args} did not start:\n{self.output()}")

    def output(self) -> str:
        """Return everything the process wrote."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit and return its status."""
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def spawn(tmp_path):
    """Start processes that are stopped when the test ends: ``spawn(args, name)``."""
    started: list[Process] = []

    def start(args: list[str], name: str = "proc", env: dict | None = None) -> Process:
        process = Process(args, tmp_path / f"{name}.log", env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(autouse=True)
def _close_hostile_peers():
    """Close the hostile peers (tests/hostile.py) a test registered in ``OPENED``."""
    yield
    from .hostile import OPENED

    while OPENED:
        OPENED.pop().close()


@pytest.fixture
def python():
    """Return the interpreter running the tests."""
    return sys.executable


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a true value; return it, or fail the test."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # a node still starting refuses connections
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


NODE = [sys.executable, "-m", "xio.nodemain"]


@pytest.fixture
def start_node(spawn, tmp_path):
    """Start a real xio-node process: ``start_node(name, *args)``; discovery always off.

    Each name gets its own state folder under the test's tmp_path, kept across restarts.
    """

    def start(name: str, *args: str) -> Process:
        state = tmp_path / "state" / name
        command = [
            *NODE,
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--state-dir",
            str(state),
            "--no-mdns",
            "--log-level",
            "info",
            *args,
        ]
        process = spawn(command, name, env={"XIO_TEST_NODE": name})
        process.name = name
        process.state_dir = state
        return process

    return start


@pytest.fixture
def in_process_mesh():
    """Nodes on this test's hub, linked over loopback, mDNS off (tests/mesh.py)."""
    from .mesh import InProcessMesh

    mesh = InProcessMesh()
    yield mesh
    mesh.close()
