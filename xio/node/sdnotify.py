"""The systemd notification protocol (sd_notify(3)): no dependency, a datagram per notice.

Theory of operation. When ``NOTIFY_SOCKET`` is set (a path, or ``@name`` for an abstract
socket), ``Notifier`` sends each notice as one datagram of ``KEY=value`` lines: ``READY=1``
once the node listens and its first record is out, ``STATUS=`` when what it says changes
("serving, 3 links, 12 routes"), ``STOPPING=1`` when a drain begins, ``RELOADING=1`` then
``READY=1`` around a reload (``reloading``/``reloaded``, for SIGHUP). With ``WATCHDOG_USEC``
set (and ``WATCHDOG_PID`` unset or ours), ``start_watchdog`` spawns a greenlet that sends
``WATCHDOG=1`` every half period: it runs on the hub, so a handler that holds the hub stops
it and systemd restarts the node, which is the point. A failed send is logged once and never
raised: systemd's absence must not stop a node. Without ``NOTIFY_SOCKET`` nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable

import gevent

__all__ = ["Notifier"]

log = logging.getLogger("xio.node")

#: How many of the last notices ``Notifier.sent`` keeps.
SENT_KEPT = 32
#: Seconds between looks at the STATUS line (sent only when it changed).
STATUS_EVERY = 5.0


class Notifier:
    """Send sd_notify notices to ``address`` (None: send nothing)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        # The last notices sent, for the curious (tests, a debugger): bounded, since the
        # watchdog alone sends one every few seconds for as long as the node runs.
        self.sent: deque[str] = deque(maxlen=SENT_KEPT)
        self._status = ""
        self._failed = False
        self._greenlets: list = []

    @classmethod
    def from_environ(cls, environ=os.environ) -> Notifier:
        """Return a notifier for systemd's variables (one that sends nothing without them)."""
        address = environ.get("NOTIFY_SOCKET") or None
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        watchdog = int(usec) if usec and usec.isdigit() and int(usec) > 0 else None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            watchdog = None  # the watchdog is another process's
        return cls(address, watchdog)

    def notify(self, **fields: object) -> None:
        """Send one notice: ``notify(READY=1, STATUS="serving")``."""
        if self.address is None:
            return
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(text.encode(), target)
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %s failed: %s", self.address, exc)
            self._failed = True
            return
        self.sent.append(text)

    def ready(self, status: str) -> None:
        """Tell systemd the node serves (``READY=1`` with a STATUS line)."""
        self._status = status
        self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        """Send a STATUS line if it says something new."""
        if status != self._status:
            self._status = status
            self.notify(STATUS=status)

    def stopping(self, status: str = "draining") -> None:
        """Tell systemd the node is stopping (``STOPPING=1``)."""
        self._status = status
        self.notify(STOPPING=1, STATUS=status)

    def reloading(self) -> None:
        """Tell systemd a reload began (call ``reloaded`` when it is done)."""
        self.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def reloaded(self, status: str) -> None:
        """Tell systemd the reload is done: ready again."""
        self.ready(status)

    def start(self, describe: Callable[[], str]) -> None:
        """Spawn the watchdog (if asked for) and the STATUS refresher (``describe()``)."""
        if self.address is None:
            return
        if self.watchdog_usec:
            self._greenlets.append(gevent.spawn(self._watchdog, self.watchdog_usec / 2e6))
        self._greenlets.append(gevent.spawn(self._refresh, describe))

    def stop(self) -> None:
        for greenlet in self._greenlets:
            greenlet.kill(block=False)

    def _watchdog(self, every: float) -> None:
        while True:
            try:
                self.notify(WATCHDOG=1)
            except Exception:  # survives its own errors: only a stalled hub must stop it
                log.exception("the sd_notify watchdog failed")
            gevent.sleep(every)

    def _refresh(self, describe: Callable[[], str]) -> None:
        while True:
            gevent.sleep(STATUS_EVERY)
            try:
                self.status(describe())
            except Exception:
                log.exception("the sd_notify status failed")
