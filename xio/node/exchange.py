"""Records between this node and its links: the initial exchange, flooding, what arrives.

Theory of operation
-------------------
* **The initial exchange** on a new link is summary-first (IS-IS's CSNP/PSNP): a peer that
  announced the ``summary`` capability is sent ``summary`` frames listing ``(origin, seq)`` of
  every record we hold, and asks with ``want`` for what it lacks; we do the same with its
  summary. A peer without the capability is sent every record. Either way the frames are made
  lazily, by a source that the link's writer asks for more only when its queue is empty, so a
  store of tens of MiB is never copied into frames at once and neither end pushes its whole
  store before reading.
* **Budgets per link**: a peer may ask, over the link's life, for about as many records as a
  store holds, and describe about four stores' worth of summaries; past that its wants and
  summaries are ignored and counted. A link cannot make us send our store again and again.
* **Flooding**: a record accepted from one link is queued, byte for byte, on every other
  established link; a link whose queue is full misses it (counted): it is not keeping up and
  its write timeout will close it.
* **Arrivals** go to the record store with the link's peer as their source (for the store's
  per-neighbour quota); accepted records update the routing topology, and a change in what
  routing depends on (links, apps, name), or an eviction, asks for a new routing table.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from ..errors import ConnectionClosed, QueueFull
from ..peering import codec
from ..peering.codec import MAX_SUMMARY_ENTRIES, RecordFrame, Summary, Want
from ..peering.links import Link
from ..peering.reasons import RECORD_NORMAL, RECORD_REFUSALS
from ..peering.records import SignedRecord
from ..peering.routing import Topology
from ..peering.store import RecordStore

__all__ = ["SUMMARY_CAP", "RecordExchange", "paced"]

#: The capability a node announces in its hello when it speaks the summary-first exchange.
SUMMARY_CAP = "summary"
#: Verdicts that refuse a record for lack of room or quota: the node's budgets, not a fault.
_REFUSALS = frozenset(RECORD_REFUSALS)
#: Verdicts that are normal in a healthy mesh and not counted against the link.
_NORMAL = frozenset(RECORD_NORMAL)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Allowance:
    """What one link may still ask of us."""

    __slots__ = ("wants", "summaries")

    def __init__(self, wants: int, summaries: int) -> None:
        self.wants = wants
        self.summaries = summaries


class RecordExchange:
    """Move records between the store and the links."""

    def __init__(
        self,
        store: RecordStore,
        topology: Topology,
        links: dict[str, Link],
        *,
        own_seq_seen: Callable[[int], None],
        reject: Callable[[Link, str], None],
        refused: Counter,
    ) -> None:
        self.store = store
        self.topology = topology
        self.links = links
        self._own_seq_seen = own_seq_seen
        self._reject = reject
        self.refused = refused
        self._allowances: dict[Link, _Allowance] = {}

    # -- links coming and going --------------------------------------------------------------

    def link_up(self, link: Link) -> None:
        """Start the initial exchange on a newly established link."""
        records = self.store.limits.max_records
        self._allowances[link] = _Allowance(records + 64, 4 * records + 4096)
        if SUMMARY_CAP in link.session.peer_caps:
            link.add_source(_summary_source(self.store.summary(_now_ms())))
        else:
            origins = [origin for origin, _ in self.store.summary(_now_ms())]
            own = self.store.own_id
            origins = [origin for origin in origins if origin != own] + [own]  # ours last
            link.add_source(self._record_source(origins))

    def link_down(self, link: Link) -> None:
        self._allowances.pop(link, None)

    # -- flooding ------------------------------------------------------------------------------

    def flood(self, frame: bytes, source: Link | None) -> None:
        """Queue an encoded record frame on every established link but ``source``."""
        for link in list(self.links.values()):
            if link is source:
                continue
            try:
                link.send_encoded(frame)
            except QueueFull:
                self.refused["flood_queue_full"] += 1
            except ConnectionClosed:
                pass

    def flood_own(self, signed: SignedRecord) -> None:
        """Flood this node's freshly originated record to every link."""
        self.flood(codec.encode(RecordFrame(signed.body, signed.signature)), None)

    # -- what arrives --------------------------------------------------------------------------

    def receive(self, link: Link, message) -> None:
        """Take a record, summary or want from ``link``."""
        kind = type(message)
        if kind is RecordFrame:
            self._receive_record(link, message)
        elif kind is Summary:
            self._receive_summary(link, message)
        elif kind is Want:
            self._receive_want(link, message)

    def _receive_record(self, link: Link, frame: RecordFrame) -> None:
        verdict = self.store.offer(frame.body, frame.signature, _now_ms(), source=link.peer_id)
        if verdict.accepted:
            self.flood(codec.encode(frame), link)
            self.topology.set_record(verdict.record)  # bumps its version if routing changes
            for origin in verdict.evicted:
                self.topology.remove(origin)
        elif verdict.next_own_seq is not None:
            self._own_seq_seen(verdict.next_own_seq)
        elif verdict.membership:
            pass  # a closed mesh's refusal: counted by the store under "membership"
        elif verdict.reason in _REFUSALS:
            self.refused[verdict.reason] += 1
        elif verdict.reason not in _NORMAL:
            self._reject(link, verdict.reason)

    def _receive_summary(self, link: Link, summary: Summary) -> None:
        allowance = self._allowances.get(link)
        if allowance is None or allowance.summaries < len(summary.entries):
            self.refused["summary_budget"] += 1
            return
        allowance.summaries -= len(summary.entries)
        wanted = self.store.wanted(summary.entries, _now_ms())
        for start in range(0, len(wanted), MAX_SUMMARY_ENTRIES):
            try:
                link.send(Want(tuple(wanted[start : start + MAX_SUMMARY_ENTRIES])))
            except (QueueFull, ConnectionClosed):
                self.refused["want_queue_full"] += 1
                return

    def _receive_want(self, link: Link, want: Want) -> None:
        allowance = self._allowances.get(link)
        if allowance is None or allowance.wants < len(want.origins):
            self.refused["want_budget"] += 1
            return
        allowance.wants -= len(want.origins)
        link.add_source(self._record_source(list(want.origins)))

    def _record_source(self, origins: list[str]) -> Callable[[int], list[bytes]]:
        """Return a source of record frames for ``origins``, encoded when the writer asks."""
        store = self.store

        def frames():
            for origin in origins:
                signed = store.signed(origin)
                if signed is not None and signed.record.expires_ms > _now_ms():
                    yield codec.encode(RecordFrame(signed.body, signed.signature))
                # else: gone since it was asked for

        return paced(frames())


def _summary_source(entries: list[tuple[str, int]]) -> Callable[[int], list[bytes]]:
    """Return a source of summary frames listing ``entries``, at most 1024 to a frame."""
    step = MAX_SUMMARY_ENTRIES
    return paced(
        codec.encode(Summary(tuple(entries[start : start + step])))
        for start in range(0, len(entries), step)
    )


def paced(frames: Iterator[bytes]) -> Callable[[int], list[bytes]]:
    """Return a link source that takes frames from ``frames`` only as the writer asks: about
    ``max_bytes`` at a time, nothing once they are all sent."""

    def source(max_bytes: int) -> list[bytes]:
        taken, size = [], 0
        for frame in frames:
            taken.append(frame)
            size += len(frame)
            if size >= max_bytes:
                break
        return taken

    return source
