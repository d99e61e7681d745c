"""The record store: the newest valid record of every known node, bounded by our budgets.

Theory of operation
-------------------
``RecordStore.offer`` judges a record that arrived from a neighbour: the checks of
``records.parse_record`` (the signature last), the store's own (duplicate, stale, a record of
this very node), and its budgets. Every verdict is counted by reason.

The store is bounded (``StoreLimits``) so that throwaway keys cannot fill it first and lock out
the nodes that come later. In acceptance order:

- a body over ``max_record_size`` (16 KiB, far below the 64 KiB of the wire) is ``too_large``
  before it is decoded;
- a *new* origin arriving from neighbour ``source`` takes a token from that source's bucket
  (``origin_quota`` per minute, as a burst too) unless it is the source itself or a live
  neighbour; an empty bucket is ``origin_quota``. The token is spent only on acceptance;
- the record must fit ``max_records`` and ``max_bytes``. If it does not, records are evicted:
  first those whose origin is neither reachable nor a live neighbour (unconfirmed, oldest
  ``issued_ms`` first); then, only for a live neighbour's record or for a source under its fair
  share (``max_records`` / number of sources holding records), records of the source holding
  the most. A live neighbour's record is never evicted; failing all that, ``store_full``;
- the signature is checked last, and evictions happen only once it verified.

A store may be given a ``policy`` (a closed mesh: ``admission.MeshPolicy.check_record``), a
callable that raises RemoteProtocolError(reason) for a record this node must not hold, whoever
relayed it. It runs once a record is known to be news (not a duplicate, not stale, within
quota), before any eviction and before the record's signature; its refusals are counted apart,
in ``membership``, and the verdict says so. ``forget`` drops the record of a node cut off;
``recheck`` drops the records the policy refuses now (a certificate that expired since).

``set_context`` tells the store its live neighbours and what the routing table reaches; before
it is first called no origin counts as unreachable. ``summary`` and ``wanted`` let a new link
exchange (origin, seq) lists first and then ask only for the records one side lacks. A verdict
says whether routing must run again (``changed``: new origin, other name, links or apps, or
evictions): a plain refresh does not.

The store also keeps this node's own current record (``set_own``), and tombstones of expired
records for an hour, so that an older record of an expired origin cannot be replayed. Times are
integer milliseconds since the Unix epoch, always passed in (``now_ms``); nothing here reads a
clock.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from heapq import heapify, heappop, heappush
from itertools import count

from xio.errors import LocalProtocolError, RemoteProtocolError
from xio.peering.identity import SIGNATURE_LENGTH, is_node_id
from xio.peering.reasons import RECORD_REFUSALS, RECORD_REJECTIONS, STORE_REASONS
from xio.peering.records import (
    MAX_LIFETIME_MS,
    MAX_RECORD_SIZE,
    MAX_UINT64,
    Record,
    SignedRecord,
    check_signature,
    check_time,
    decode_body,
)

__all__ = ["REJECTION_REASONS", "STORE_REASONS", "RecordStore", "StoreLimits", "Verdict"]

# Verdicts that are a peer's misbehaviour or a refusal of ours (the rest are normal traffic).
REJECTION_REASONS = (*RECORD_REJECTIONS, *RECORD_REFUSALS)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bound what a store holds of other nodes' records and how fast a neighbour fills it.

    ``max_bytes`` counts ``len(body) + len(signature)`` of every held record. ``max_record_size``
    is local policy, far below the 64 KiB the wire allows. ``origin_quota`` is how many new
    origins one neighbour may introduce per minute (a token bucket, burst ``origin_quota``).
    """

    max_records: int = 4096
    max_bytes: int = 32 * 1024 * 1024
    max_record_size: int = 16 * 1024
    origin_quota: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_records", "max_bytes", "max_record_size", "origin_quota"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise LocalProtocolError(f"StoreLimits.{name} must be a positive int: {value!r}")
        if self.max_record_size > MAX_RECORD_SIZE:
            raise LocalProtocolError(
                f"StoreLimits.max_record_size {self.max_record_size} > {MAX_RECORD_SIZE}"
            )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``RecordStore.offer`` decided.

    ``accepted``: store it and flood the same (body, signature) to every established link except
    the one it came from; recompute routes only when ``changed`` (a new origin, other name, links
    or apps, or ``evicted`` records). Otherwise ``reason`` says why not. ``next_own_seq`` is set
    when the record was an older incarnation of this very node with a seq at least as high as
    ours: originate a fresh record with ``seq >= next_own_seq`` at once.
    """

    accepted: bool
    reason: str
    node_id: str | None = None
    seq: int | None = None
    record: Record | None = None
    next_own_seq: int | None = None
    changed: bool = False
    evicted: tuple[str, ...] = ()
    membership: bool = False  # refused by the store's policy (counted under "membership")


_QUOTA_WINDOW_MS = 60_000  # origin_quota tokens refill over this long
_MAX_BUCKETS = 4096  # sources whose quota bucket is remembered (least recently used dropped)

_Evicted = tuple[str, SignedRecord, str | None, bool]  # (origin, record, source, fresh)
_ANY_SOURCE = object()


class RecordStore:
    """Hold the newest valid record of every known node, within ``limits``."""

    def __init__(
        self,
        own_id: str,
        *,
        limits: StoreLimits | None = None,
        max_records: int | None = None,
        policy: Callable[[Record, int], object] | None = None,
    ) -> None:
        limits = limits or StoreLimits()
        if max_records is not None:
            limits = replace(limits, max_records=max_records)
        self.own_id = own_id
        self.limits = limits
        self.policy = policy
        self.counters: dict[str, int] = dict.fromkeys((*STORE_REASONS, "evicted"), 0)
        self.membership: Counter[str] = Counter()  # the policy's refusals, by reason
        self._records: dict[str, SignedRecord] = {}
        self._source_of: dict[str, str | None] = {}  # origin -> who introduced it
        self._group_size: dict[str | None, int] = {}  # source -> records held, never 0
        self._bytes = 0
        self._tombstones: dict[str, tuple[int, int]] = {}  # id -> (seq, until_ms)
        self._own: SignedRecord | None = None
        self._neighbours: frozenset[str] = frozenset()
        self._reachable: frozenset[str] | None = None  # None: no routing table yet
        self._buckets: OrderedDict[str, list[int]] = OrderedDict()  # source -> [level, at_ms]
        # Lazy heaps of eviction candidates; see _rebuild_heaps.
        self._unreachable: list[tuple[int, str, int]] = []
        self._by_group: dict[str | None, list[tuple[int, str, int]]] = {}
        self._largest: list[tuple[int, int, str | None]] = []
        self._tie = count()
        self._pushes = 0
        self._fresh: set[str] = set()  # origins stored since the last set_context

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._records

    @property
    def max_records(self) -> int:
        """Return ``limits.max_records`` (kept for callers of the old constructor)."""
        return self.limits.max_records

    @property
    def own(self) -> SignedRecord | None:
        """Return this node's current signed record, if one was set."""
        return self._own

    @property
    def own_seq(self) -> int:
        """Return the seq of this node's current record (0 before the first)."""
        return self._own.record.seq if self._own else 0

    def set_own(self, signed: SignedRecord) -> None:
        """Install this node's freshly originated record (its seq must grow)."""
        if signed.record.node_id != self.own_id:
            raise LocalProtocolError("set_own got a record of another node")
        if self._own is not None and signed.record.seq <= self._own.record.seq:
            raise LocalProtocolError(
                f"own seq must grow: {signed.record.seq} <= {self._own.record.seq}"
            )
        self._own = signed

    def set_context(self, *, neighbours: Iterable[str], reachable: Iterable[str]) -> None:
        """Tell which origins are live neighbours and which the routing table reaches."""
        neighbours, reachable = frozenset(neighbours), frozenset(reachable)
        unchanged = neighbours == self._neighbours and reachable == self._reachable
        if unchanged and not self._fresh:
            return
        self._neighbours, self._reachable = neighbours, reachable
        self._fresh = set()
        self._rebuild_heaps()

    # -- judging offers --------------------------------------------------------------------

    def offer(
        self, body: bytes, signature: bytes, now_ms: int, *, source: str | None = None
    ) -> Verdict:
        """Judge a record that arrived from ``source`` (a neighbour's id); store it if it fits."""
        try:
            if isinstance(body, bytes) and len(body) > self.limits.max_record_size:
                raise RemoteProtocolError(
                    "too_large", f"record body {len(body)} > {self.limits.max_record_size} bytes"
                )
            record = decode_body(body)
            check_time(record, now_ms)
            verdict = self._judge(record, body, signature, now_ms, source)
        except RemoteProtocolError as exc:
            verdict = Verdict(False, exc.reason)
        if verdict.membership:
            self.membership[verdict.reason] += 1
        else:
            self.counters[verdict.reason] = self.counters.get(verdict.reason, 0) + 1
        self.counters["evicted"] += len(verdict.evicted)
        return verdict

    def _judge(
        self, record: Record, body: bytes, signature: bytes, now_ms: int, source: str | None
    ) -> Verdict:
        origin, seq = record.node_id, record.seq
        if origin == self.own_id:
            return self._judge_own(record, body, signature)
        stored = self._records.get(origin)
        needs_token = False
        if stored is not None:
            if seq < stored.record.seq:
                return Verdict(False, "stale", origin, seq)
            if seq == stored.record.seq and not _wins_tie(record, body, stored):
                return Verdict(False, "duplicate", origin, seq)
        else:
            tombstone = self._tombstones.get(origin)
            if tombstone is not None and seq <= tombstone[0] and now_ms < tombstone[1]:
                return Verdict(False, "stale", origin, seq)
            # A neighbour's own record, and any live neighbour's, costs no token.
            needs_token = source is not None and origin != source and origin not in self._neighbours
            if needs_token and self._bucket(source, now_ms)[0] < _QUOTA_WINDOW_MS:
                return Verdict(False, "origin_quota", origin, seq)
        if self.policy is not None:
            try:
                self.policy(record, now_ms)
            except RemoteProtocolError as exc:
                return Verdict(False, exc.reason, origin, seq, membership=True)
        evicted = self._make_room(origin, len(body) + SIGNATURE_LENGTH, source)
        if evicted is None:
            return Verdict(False, "store_full", origin, seq)
        try:
            check_signature(record, body, signature)
        except RemoteProtocolError:
            self._restore(evicted)  # never evict for a forged record
            raise
        if needs_token:
            self._bucket(source, now_ms)[0] -= _QUOTA_WINDOW_MS
        self._store(origin, SignedRecord(body, signature, record), source)
        self._tombstones.pop(origin, None)
        changed = stored is None or bool(evicted) or _routed(stored.record) != _routed(record)
        names = tuple(entry[0] for entry in evicted)
        return Verdict(True, "accepted", origin, seq, record, changed=changed, evicted=names)

    def _judge_own(self, record: Record, body: bytes, signature: bytes) -> Verdict:
        if self._own is not None and body == self._own.body:
            return Verdict(False, "duplicate", record.node_id, record.seq)
        if record.seq < self.own_seq:
            return Verdict(False, "own_record", record.node_id, record.seq)
        # A record of ours we did not make in this life: verify it before obeying it.
        check_signature(record, body, signature)
        return Verdict(False, "own_record", record.node_id, record.seq, record, record.seq + 1)

    def _bucket(self, source: str, now_ms: int) -> list[int]:
        # Levels count tokens * _QUOTA_WINDOW_MS, so refilling stays in integers.
        quota = self.limits.origin_quota
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = [quota * _QUOTA_WINDOW_MS, now_ms]
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            elapsed = max(0, now_ms - bucket[1])
            bucket[0] = min(quota * _QUOTA_WINDOW_MS, bucket[0] + elapsed * quota)
            bucket[1] = max(bucket[1], now_ms)
        return bucket

    # -- room and eviction -----------------------------------------------------------------

    def _make_room(self, origin: str, size: int, source: str | None) -> list[_Evicted] | None:
        """Evict (tentatively) until a record of ``size`` bytes fits; None: it cannot fit.

        The caller restores the evicted records if the signature then fails.
        """
        held = self._records.get(origin)
        held_size = _stored_size(held) if held is not None else 0
        limits = self.limits

        def fits() -> bool:
            return (
                len(self._records) + (held is None) <= limits.max_records
                and self._bytes - held_size + size <= limits.max_bytes
            )

        if size > limits.max_bytes:
            return None
        evicted: list[_Evicted] = []
        while not fits() and (victim := self._pop_unreachable(keep=origin)) is not None:
            evicted.append(self._drop(victim))
        group = self._source_of[origin] if held is not None else source
        if not fits() and (origin in self._neighbours or self._under_fair_share(group)):
            while not fits() and (victim := self._pop_from_largest(keep=origin)) is not None:
                evicted.append(self._drop(victim))
        if fits():
            return evicted
        self._restore(evicted)
        return None

    def _under_fair_share(self, group: str | None) -> bool:
        groups = len(self._group_size) + (group not in self._group_size)
        return self._group_size.get(group, 0) * groups < self.limits.max_records

    def _is_current(self, origin: str, issued_ms: int, seq: int) -> bool:
        held = self._records.get(origin)
        return held is not None and held.record.seq == seq and held.record.issued_ms == issued_ms

    def _pop_unreachable(self, keep: str) -> str | None:
        """Take the oldest held record no route reaches and no live link carries."""
        return self._pop_oldest(self._unreachable, keep)

    def _pop_from_largest(self, keep: str) -> str | None:
        """Take the oldest record of the source holding the most (never a neighbour's).

        The unreachable records of that source went first, in ``_pop_unreachable``.
        """
        aside, victim = [], None
        while self._largest and victim is None:
            negative_size, _, group = self._largest[0]
            if self._group_size.get(group, 0) != -negative_size:
                heappop(self._largest)  # an old size of this group
                continue
            victim = self._pop_oldest(self._by_group.get(group, []), keep, group)
            if victim is None:  # nothing evictable here (neighbours' records only)
                aside.append(heappop(self._largest))
        for entry in aside:
            heappush(self._largest, entry)
        return victim

    def _pop_oldest(
        self, heap: list[tuple[int, str, int]], keep: str, group: object = _ANY_SOURCE
    ) -> str | None:
        kept, victim = None, None
        while heap:
            entry = heappop(heap)
            issued_ms, origin, seq = entry
            if not self._is_current(origin, issued_ms, seq):
                continue  # replaced or dropped since it was pushed
            if group is not _ANY_SOURCE and self._source_of[origin] != group:
                continue  # dropped, then brought again by another source
            if origin == keep:
                kept = entry  # the record being replaced stays a candidate for later
                continue
            victim = origin
            break
        if kept is not None:
            heappush(heap, kept)
        return victim

    def _store(
        self, origin: str, signed: SignedRecord, source: str | None, fresh: bool = True
    ) -> None:
        held = self._records.get(origin)
        if held is None:
            self._source_of[origin] = source
            self._resize(source, +1)
        else:
            self._bytes -= _stored_size(held)  # a replacement keeps the original source
        self._records[origin] = signed
        self._bytes += _stored_size(signed)
        self._index(origin, signed.record, self._source_of[origin], fresh)
        if self._pushes > 2 * len(self._records) + 64:
            self._rebuild_heaps()  # stale entries outnumber live ones: O(n), amortised O(1)

    def _drop(self, origin: str) -> _Evicted:
        # Eviction leaves no tombstone, so the evicted origin's record is accepted again when
        # it comes back. A relay may then replay an older record of that origin: it is still
        # validly signed by the origin, and the origin floods its newest seq at every refresh
        # (lifetime / 3), which replaces it everywhere; only expiry needs the tombstone.
        signed = self._records.pop(origin)
        source = self._source_of.pop(origin)
        fresh = origin in self._fresh
        self._fresh.discard(origin)
        self._bytes -= _stored_size(signed)
        self._resize(source, -1)
        return origin, signed, source, fresh

    def _restore(self, evicted: list[_Evicted]) -> None:
        for origin, signed, source, fresh in reversed(evicted):
            self._store(origin, signed, source, fresh)

    def _resize(self, group: str | None, delta: int) -> None:
        size = self._group_size.get(group, 0) + delta
        if size:
            self._group_size[group] = size
            heappush(self._largest, (-size, next(self._tie), group))
            self._pushes += 1
        else:
            del self._group_size[group]
            self._by_group.pop(group, None)

    def _index(self, origin: str, record: Record, group: str | None, fresh: bool) -> None:
        if origin in self._neighbours:
            return  # a live neighbour's record is never evicted
        # A record stored since the last routing table is not judged unreachable until the
        # next one (set_context): to the table it is unknown, and counting it unreachable would
        # let any flooder evict honest records faster than routing can confirm them. Until
        # then only a neighbour or a source under its fair share can evict it (by group).
        key = (record.issued_ms, origin, record.seq)
        heappush(self._by_group.setdefault(group, []), key)
        self._pushes += 1
        if fresh:
            self._fresh.add(origin)
        elif self._reachable is not None and origin not in self._reachable:
            heappush(self._unreachable, key)  # put back as it was (a restore)
            self._pushes += 1

    def _rebuild_heaps(self) -> None:
        """Rebuild the eviction heaps from the held records and the current context.

        ``_unreachable``: (issued_ms, origin, seq) of records neither reachable nor a neighbour's.
        ``_by_group[source]``: the same for every record of that source but the neighbours'.
        ``_largest``: (-records held, tie, source). Entries go stale when a record is replaced or
        dropped, or a group shrinks, and are skipped when they surface.
        """
        unreachable: list[tuple[int, str, int]] = []
        by_group: dict[str | None, list[tuple[int, str, int]]] = {}
        neighbours, reachable = self._neighbours, self._reachable
        for origin, signed in self._records.items():
            if origin in neighbours:
                continue
            key = (signed.record.issued_ms, origin, signed.record.seq)
            if reachable is not None and origin not in reachable and origin not in self._fresh:
                unreachable.append(key)
            by_group.setdefault(self._source_of[origin], []).append(key)
        for heap in (unreachable, *by_group.values()):
            heapify(heap)
        self._unreachable, self._by_group = unreachable, by_group
        self._largest = [(-size, next(self._tie), g) for g, size in self._group_size.items()]
        heapify(self._largest)
        self._pushes = 0

    # -- reading and maintenance -----------------------------------------------------------

    def summary(self, now_ms: int) -> list[tuple[str, int]]:
        """Return (origin, seq) of every unexpired record and of our own, sorted by origin."""
        entries = [
            (origin, signed.record.seq)
            for origin, signed in self._records.items()
            if signed.record.expires_ms > now_ms
        ]
        if self._own is not None:
            entries.append((self.own_id, self._own.record.seq))
        entries.sort()
        return entries

    def wanted(self, entries: Iterable[tuple[str, int]], now_ms: int) -> list[str]:
        """Return the origins of a peer's summary whose record we lack or hold older.

        Garbage entries are skipped. An equal seq is never wanted, even though two lives of an
        origin may have signed different bodies with it: flooding settles that tie.
        """
        wanted: list[str] = []
        seen: set[str] = set()
        for entry in entries:
            if type(entry) not in (tuple, list) or len(entry) != 2:
                continue
            origin, seq = entry
            if (
                not is_node_id(origin)
                or not (type(seq) is int and 0 <= seq <= MAX_UINT64)
                or origin == self.own_id
            ):
                continue
            held = self._records.get(origin)
            if held is not None:
                lacking = held.record.seq < seq
            else:
                tombstone = self._tombstones.get(origin)
                lacking = tombstone is None or now_ms >= tombstone[1] or tombstone[0] < seq
            if lacking and origin not in seen:
                seen.add(origin)
                wanted.append(origin)
        return wanted

    def usage(self) -> dict:
        """Return what the store holds against its budgets, and who introduced it."""
        return {
            "records": len(self._records),
            "bytes": self._bytes,
            "max_records": self.limits.max_records,
            "max_bytes": self.limits.max_bytes,
            "sources": {s: n for s, n in self._group_size.items() if s is not None},
            "unsourced": self._group_size.get(None, 0),
        }

    def expire(self, now_ms: int) -> list[str]:
        """Remove records whose ``expires_ms <= now_ms``; return their node ids."""
        removed = [i for i, s in self._records.items() if s.record.expires_ms <= now_ms]
        for node_id in removed:
            seq = self._drop(node_id)[1].record.seq
            self._tombstones[node_id] = (seq, now_ms + MAX_LIFETIME_MS)
        for node_id in [i for i, (_, until) in self._tombstones.items() if until <= now_ms]:
            del self._tombstones[node_id]
        while len(self._tombstones) > self.limits.max_records:
            del self._tombstones[next(iter(self._tombstones))]  # the oldest goes first
        return removed

    def forget(self, node_id: str) -> bool:
        """Drop the record of ``node_id`` (a node cut off); return whether one was held.

        No tombstone: the policy refuses its records from now on, whatever their seq.
        """
        if node_id not in self._records:
            return False
        self._drop(node_id)
        return True

    def recheck(self, now_ms: int) -> list[str]:
        """Drop every held record the policy refuses at ``now_ms``; return their origins.

        A certificate expires on its own clock, not its record's: without this a record
        accepted a minute before its origin's certificate expired would be routed to until
        the record itself expires. Counted under ``membership`` by reason.
        """
        if self.policy is None:
            return []
        dropped = []
        for origin, signed in list(self._records.items()):
            try:
                self.policy(signed.record, now_ms)
            except RemoteProtocolError as exc:
                self._drop(origin)
                self.membership[exc.reason] += 1
                dropped.append(origin)
        return dropped

    def get(self, node_id: str) -> Record | None:
        """Return the stored record of ``node_id`` (this node's own included)."""
        signed = self.signed(node_id)
        return signed.record if signed else None

    def signed(self, node_id: str) -> SignedRecord | None:
        """Return the stored signed record of ``node_id`` (this node's own included)."""
        if node_id == self.own_id:
            return self._own
        return self._records.get(node_id)

    def records(self) -> list[Record]:
        """Return the records of the other nodes, sorted by node id."""
        return [self._records[i].record for i in sorted(self._records)]

    def snapshot(self, now_ms: int | None = None) -> list[tuple[bytes, bytes]]:
        """Return every (body, signature) to send to a new link, this node's own last.

        With ``now_ms``, records already expired are left out.
        """
        signed = [self._records[i] for i in sorted(self._records)]
        if self._own is not None:
            signed.append(self._own)
        return [
            (s.body, s.signature) for s in signed if now_ms is None or s.record.expires_ms > now_ms
        ]


def _stored_size(signed: SignedRecord) -> int:
    return len(signed.body) + len(signed.signature)


def _routed(record: Record) -> tuple:
    # What routing and app lookup read of a record: a refresh that keeps these changes nothing.
    return record.name, record.links, record.apps


def _wins_tie(record: Record, body: bytes, stored: SignedRecord) -> bool:
    # Two different bodies with one (origin, seq) mean the origin restarted and reused a seq.
    # Every node must keep the same one: the later issued_ms wins, then the greater body bytes.
    if body == stored.body:
        return False
    return (record.issued_ms, body) > (stored.record.issued_ms, stored.body)
