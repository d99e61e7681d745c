"""A headless Chromium driven over the DevTools protocol (CDP), with only the standard library.

Theory of operation. ``Chromium.start(folder)`` runs ``chromium --headless`` with
``--remote-debugging-port=0`` and its own profile in ``folder``; Chromium writes the port it
took and the browser's WebSocket path to ``folder/DevToolsActivePort``. ``CDPSocket`` is a
small synchronous WebSocket client (RFC 6455: masked text frames out; text, continuation and
close frames in), enough for CDP's JSON messages. ``open(url)`` creates a tab and attaches to
it in flat mode, so one socket carries the browser's and the tab's commands (``sessionId``).
Every call blocks on a plain socket: a gevent test runs them on a real thread (``in_thread``)
so that the nodes on its hub keep serving while Chromium loads the page.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

__all__ = ["CDPError", "Chromium", "Page", "chromium_path"]

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--no-default-browser-check", "--disable-extensions", "--mute-audio",
    "--remote-debugging-port=0", "--window-size=1280,860", "--hide-scrollbars",
)  # fmt: skip


class CDPError(Exception):
    """Chromium answered a command with an error, or the protocol broke."""


def chromium_path() -> str | None:
    """Return the Chromium binary to drive ($XIO_CHROMIUM, else ``chromium`` on PATH)."""
    return os.environ.get("XIO_CHROMIUM") or shutil.which("chromium")


class CDPSocket:
    """One WebSocket to Chromium's DevTools endpoint, used synchronously."""

    def __init__(self, port: int, path: str, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CDPError("DevTools closed the connection during the upgrade")
            head += chunk
        head, _, self._buffer = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise CDPError(f"DevTools refused the upgrade: {head[:200]!r}")

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x81, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self) -> str:
        """Return the next text message (fragments joined)."""
        parts = []
        while True:
            first, second = self._read(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._read(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(size)
            if mask:
                payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            if opcode == 0x8:
                raise CDPError("DevTools closed the WebSocket")
            if opcode in (0x1, 0x0):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts).decode()
            # ping (0x9) and pong (0xA): Chromium sends none unasked; skipped

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                raise CDPError("DevTools closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def close(self) -> None:
        self.sock.close()


class Chromium:
    """A headless Chromium of one test: ``open`` tabs, ``close`` it at the end."""

    def __init__(self, process: subprocess.Popen, socket_: CDPSocket) -> None:
        self.process = process
        self.socket = socket_
        self._next_id = 0

    @classmethod
    def start(cls, profile: Path, binary: str, wait) -> Chromium:
        """Start Chromium with its profile in ``profile``; ``wait(predicate, what)`` polls."""
        profile = Path(profile)
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        with (profile.parent / "chromium.log").open("wb") as log:  # the child keeps its copy
            process = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

        def ready() -> bool:
            if process.poll() is not None:
                raise CDPError(f"chromium exited with {process.returncode}: {profile.parent}")
            text = port_file.read_text() if port_file.exists() else ""
            return len(text.splitlines()) >= 2  # written whole: port, then path

        try:
            wait(ready, "chromium to write DevToolsActivePort")
            port, path = port_file.read_text().splitlines()[:2]
            return cls(process, CDPSocket(int(port), path))
        except BaseException:
            process.kill()
            process.wait()
            raise

    def command(self, method: str, params: dict | None = None, session: str | None = None):
        """Send one CDP command and return its result (events in between are skipped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            answer = json.loads(self.socket.receive())
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise CDPError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> Page:
        """Open ``url`` in a new tab and return it."""
        target = self.command("Target.createTarget", {"url": url})["targetId"]
        session = self.command("Target.attachToTarget", {"targetId": target, "flatten": True})
        return Page(self, session["sessionId"])

    def close(self) -> None:
        try:
            self.command("Browser.close")
        except (CDPError, OSError):
            pass
        self.socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Page:
    """One tab: evaluate JavaScript in it, take a screenshot of it."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str):
        """Return the value of ``expression`` in the page (promises awaited)."""
        result = self.browser.command(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page at ``path`` and return it."""
        data = self.browser.command("Page.captureScreenshot", {"format": "png"}, self.session)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path
