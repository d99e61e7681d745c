"""The originator: this node's own record, signed with a growing seq, refreshed, flooded.

Theory of operation. One greenlet originates the record when the ``OriginationSchedule``
says so: at start, when links or apps change (coalesced, and held down after a short burst, so
churn costs every peer a bounded number of records per second), and every third of the
record's lifetime. It never dies: an error is counted and logged and the next attempt comes a
second later.

* **Seq.** Each record's seq is one above the highest this node has used, persisted in
  ``<state_dir>/seq`` (read once at start; written by ``statedir.write_atomic`` before the
  flood; a seq file that exists and cannot be read stops the start). A write that
  fails (a full disk, no file descriptor left) is counted and does not stop the flood: a record
  that does not go out lets the node vanish from the mesh, while a seq reused after a restart
  is repaired by the store's rule for records of an older life (``next_own_seq``).
* **Size.** The record must fit what peers accept (``max_size``, 16 KiB by default): when the
  full record does not, it is built again without app summaries, then with fewer links and
  apps (lowest ids first); each trimmed record is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.event import Event

from ..errors import LocalProtocolError, StateError
from ..peering.identity import Identity
from ..peering.records import MAX_APPS, MAX_LINKS, Record, SignedRecord
from ..peering.schedule import OriginationSchedule
from ..peering.store import RecordStore
from ..statedir import read_text, write_atomic

__all__ = ["Originator", "RecordContent"]

log = logging.getLogger("xio.node")

SEQ_FILE = "seq"
_RETRY = 1.0  # seconds after a failed origination


@dataclass(frozen=True, slots=True)
class RecordContent:
    """What goes in this node's next record."""

    name: str
    version: str
    urls: list[str]
    links: dict[str, int]
    apps: dict[str, str]  # app name -> summary
    ext: dict[str, object] = field(default_factory=dict)  # a closed mesh: {"cert": packed}


class Originator:
    """Originate and refresh this node's record in the background."""

    def __init__(
        self,
        identity: Identity,
        store: RecordStore,
        content: Callable[[], RecordContent],
        flood: Callable[[SignedRecord], None],
        *,
        state_dir: Path | None,
        lifetime: float,
        min_interval: float,
        max_size: int,
        on_error: Callable[[str, Exception], None],
    ) -> None:
        self.identity = identity
        self.store = store
        self.lifetime = lifetime
        self.max_size = max_size
        self.schedule = OriginationSchedule(lifetime / 3, min_interval)
        self.originated = 0
        self.trimmed = 0
        self._content = content
        self._flood = flood
        self._state_dir = state_dir
        self._on_error = on_error
        self._seq_floor = self._read_seq()
        self._wake = Event()
        self._greenlet = None

    def start(self) -> None:
        """Originate the first record now, then keep it fresh in the background."""
        self.originate()
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def changed(self) -> None:
        """Links or apps changed: originate soon (held down under churn)."""
        self.schedule.changed(time.monotonic())
        self._wake.set()

    def raise_seq(self, at_least: int) -> None:
        """An older life of this node left a higher seq in the mesh: jump past it."""
        self._seq_floor = max(self._seq_floor, at_least - 1)
        self.changed()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                if self.schedule.due(time.monotonic()):
                    self.originate()
                wait = max(0.01, self.schedule.next_at() - time.monotonic())
            except Exception as exc:
                log.exception("originating this node's record failed")
                self._on_error("refresh", exc)
                wait = _RETRY
            self._wake.wait(wait)

    def originate(self) -> SignedRecord:
        """Sign a fresh record of this node, persist its seq and flood it."""
        seq = max(self.store.own_seq, self._seq_floor) + 1
        signed = self._build(seq, self._content())
        self.store.set_own(signed)
        self._seq_floor = seq
        try:
            self._write_seq(seq)
        except StateError as exc:  # names the file and the reason
            log.warning("%s (seq %d); the record floods anyway", exc, seq)
            self._on_error("refresh", exc)  # survived: the record still floods
        self.schedule.originated(time.monotonic())
        self.originated += 1
        self._flood(signed)
        return signed

    def _build(self, seq: int, content: RecordContent) -> SignedRecord:
        links = sorted(content.links.items())
        apps = sorted(content.apps.items())
        shapes = [
            (links[:MAX_LINKS], apps[:MAX_APPS]),
            (links[:MAX_LINKS], [(app, "") for app, _ in apps[:MAX_APPS]]),
            (links[:64], [(app, "") for app, _ in apps[:64]]),
            (links[:8], [(app, "") for app, _ in apps[:8]]),
        ]
        now_ms = int(time.time() * 1000)
        last_error: Exception | None = None
        for number, (some_links, some_apps) in enumerate(shapes):
            if number == 0 and (len(links) > MAX_LINKS or len(apps) > MAX_APPS):
                continue  # over the record's caps: trimmed for sure
            try:
                signed = Record.build(
                    self.identity, seq, now_ms, int(self.lifetime * 1000), content.name,
                    content.version, content.urls, some_links, some_apps, content.ext,
                )  # fmt: skip
            except LocalProtocolError as exc:
                last_error = exc
                continue
            if len(signed.body) <= self.max_size:
                if number:
                    self.trimmed += 1
                    log.warning("record trimmed to fit %d bytes (shape %d)", self.max_size, number)
                return signed
        raise LocalProtocolError(f"no record of this node fits {self.max_size} bytes: {last_error}")

    def _read_seq(self) -> int:
        # A missing file is a first start; one that cannot be read is a StateError at start.
        if self._state_dir is None:
            return 0
        path = Path(self._state_dir) / SEQ_FILE
        text = read_text(path, what="seq file")
        try:
            return int(text.strip() or 0) if text is not None else 0
        except ValueError:
            log.warning("seq file %s holds %r, not a number: starting from 0", path, text[:40])
            return 0

    def _write_seq(self, seq: int) -> None:
        if self._state_dir is None:
            return
        write_atomic(Path(self._state_dir) / SEQ_FILE, f"{seq}\n".encode(), what="seq file")
