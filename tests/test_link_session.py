"""The sans-IO link session as in-memory pairs with a fake clock: no sockets, no sleeps.

Links are encrypted (protocol version 2): ``Pair`` knows the ephemeral keys of both ends, so an
eavesdropper holding them (``Pair.sent``) reads what an end sent, and ``Pair.seal`` makes a
frame as an end would send it, advancing that end's counter as sending does.
"""

from __future__ import annotations

import msgpack
import pytest

from xio.budget import Budget
from xio.errors import QueueFull
from xio.peering import codec
from xio.peering.cipher import EphemeralKey, derive_link_keys, transcript_hash
from xio.peering.codec import Ping, RecordFrame, RequestFrame, ResponseFrame, Summary
from xio.peering.handshake import Handshake
from xio.peering.identity import Identity
from xio.peering.session import (
    EXPIRY_GRACE,
    CancelArrived,
    Closed,
    Established,
    Expired,
    LinkLimits,
    LinkSession,
    LinkState,
    MessageArrived,
    Rejected,
    RequestArrived,
    ResponseArrived,
)

ALICE, BOB = Identity.generate(), Identity.generate()
BIG = 1 << 30
NONCES = {"a": b"\x11" * 32, "b": b"\x22" * 32}
EPHEMERAL = {"a": bytes(range(1, 33)), "b": bytes(range(33, 65))}  # X25519 private keys


class Pair:
    """Two link ends wired back to back; ``now`` is the one clock both see."""

    def __init__(self, limits_a=None, limits_b=None, budget_b=None, timeout_b=None) -> None:
        self.now = 100.0
        shake_a = Handshake(ALICE, "initiator", "alice", caps=("summary",), timeout_ms=2500,
                            nonce=NONCES["a"], ephemeral=EphemeralKey(EPHEMERAL["a"]))  # fmt: skip
        shake_b = Handshake(BOB, "responder", "bob", timeout_ms=timeout_b, nonce=NONCES["b"],
                            ephemeral=EphemeralKey(EPHEMERAL["b"]))  # fmt: skip
        self.a = LinkSession(shake_a, limits=limits_a)
        self.b = LinkSession(shake_b, limits=limits_b, body_budget=budget_b)
        self.events = {"a": [], "b": []}
        self.wire = {"a": 0, "b": 0}  # bytes each end has received
        self.taps = {end: _Tap(end) for end in "ab"}

    def end(self, end: str) -> LinkSession:
        return self.a if end == "a" else self.b

    def pull(self, end: str, max_bytes: int = BIG) -> list[bytes]:
        """Take what ``end``'s writer would write now, as it goes on the wire."""
        messages = self.end(end).pull(max_bytes, self.now)
        self.taps[end].read(messages)
        return messages

    def sent(self, end: str) -> list[bytes]:
        """Return (and forget) the frames ``end`` sent so far, opened by the eavesdropper."""
        frames, self.taps[end].frames = self.taps[end].frames, []
        return frames

    def kinds(self, end: str) -> list[str]:
        """Pull from ``end`` and return the types of the frames it sends, in wire order."""
        self.pull(end)
        return [msgpack.unpackb(frame)["t"] for frame in self.sent(end)]

    def seal(self, end: str, frame: bytes) -> bytes:
        """Seal ``frame`` as ``end`` sends it (its counter moves on, as if it had)."""
        message = self.end(end).handshake.ciphers.send.seal(frame)
        self.taps[end].read([message])  # the eavesdropper stays in step
        return message

    def inject(self, end: str, message) -> list:
        """Deliver ``message`` to ``end`` as its peer would send it, sealed."""
        other = "b" if end == "a" else "a"
        return self.end(end).receive(self.seal(other, codec.encode(message)), self.now)

    def start(self) -> Pair:
        self.a.start(self.now)
        self.b.start(self.now)
        self.pump()
        return self

    def pump(self, *, to_a: bool = True, to_b: bool = True) -> None:
        """Carry frames both ways until both ends are quiet (or only one way)."""
        moved = True
        while moved:
            moved = False
            for source, target, key, allowed in (
                (self.a, self.b, "b", to_b), (self.b, self.a, "a", to_a)
            ):  # fmt: skip
                if not allowed:
                    continue
                for frame in self.pull("a" if source is self.a else "b"):
                    moved = True
                    self.wire[key] += len(frame)
                    self.events[key] += target.receive(frame, self.now)

    def take(self, end: str) -> list:
        events, self.events[end] = self.events[end], []
        return events

    def tick(self, end: str, seconds: float = 0.0, **counters) -> list:
        self.now += seconds
        session = self.a if end == "a" else self.b
        return session.tick(self.now, **counters)


class _Tap:
    """An eavesdropper that holds both ephemeral private keys: it reads what one end sends."""

    def __init__(self, end: str) -> None:
        self.end, self.frames, self.count, self.cipher = end, [], 0, None

    def read(self, messages: list[bytes]) -> None:
        for message in messages:
            self.count += 1
            if self.count <= 2:  # hello and auth go in the clear
                self.frames.append(message)
                continue
            if self.cipher is None:
                self.cipher = self._keys().receive
            self.frames.append(self.cipher.open(message))

    def _keys(self):
        # The receiving end's view of this end's direction, derived from the keys alone.
        keys = {end: EphemeralKey(EPHEMERAL[end]).public for end in "ab"}
        salt = transcript_hash(ALICE.node_id, NONCES["a"], keys["a"],
                               BOB.node_id, NONCES["b"], keys["b"])  # fmt: skip
        other, role = ("b", "responder") if self.end == "a" else ("a", "initiator")
        return derive_link_keys(EphemeralKey(EPHEMERAL[other]), keys[self.end], salt, role)


def request(request_id=0, dst=None, hops=16, ttl=30_000, body=b"") -> RequestFrame:
    return RequestFrame(
        request_id, dst or BOB.node_id, "app", "GET", "/x", "", (), body, hops=hops, ttl_ms=ttl
    )


def of(kind, events):
    return [event for event in events if type(event) is kind]


@pytest.fixture
def pair():
    return Pair().start()


# -- handshake -------------------------------------------------------------------------------


def test_the_handshake_establishes_both_ends_and_shares_caps_and_timeouts(pair):
    assert of(Established, pair.take("a")) and of(Established, pair.take("b"))
    assert pair.a.state is pair.b.state is LinkState.ESTABLISHED
    assert pair.b.peer_caps == ("summary",) and pair.a.peer_caps == ()
    assert pair.b.peer_id == ALICE.node_id and pair.a.peer_name == "bob"
    assert pair.a.max_message == codec.MAX_FRAME + 16  # the largest frame, sealed
    assert Pair().a.max_message == codec.MAX_HANDSHAKE_FRAME


def test_pings_go_out_at_a_fifth_of_the_shorter_timeout():
    pair = Pair(limits_b=LinkLimits(link_timeout=1.0), timeout_b=1000).start()
    assert pair.a.tick_interval == pytest.approx(0.2)  # bob's 1 s, not our 2.5 s
    assert pair.b.tick_interval == pytest.approx(0.2)  # its own 1 s is the shorter
    assert Pair().start().a.tick_interval == pytest.approx(0.5)


def test_before_the_handshake_only_small_frames_are_read():
    pair = Pair()
    pair.a.start(pair.now)
    events = pair.a.receive(b"\x00" * 5000, pair.now)
    assert of(Rejected, events)[0].reason == "frame_too_large"
    assert of(Closed, events)[0].reason == "frame_too_large"
    assert pair.a.final_frames()[-1] == codec.encode(codec.Bye("frame_too_large"))


def test_a_handshake_that_does_not_finish_in_time_closes_the_link():
    pair = Pair()
    pair.a.start(pair.now)  # bob never answers
    assert pair.tick("a", 9.9) == []
    events = pair.tick("a", 0.2)
    assert [e.reason for e in of(Rejected, events)] == ["handshake_timeout"]
    assert of(Closed, events)[0].was_established is False


# -- keepalive -------------------------------------------------------------------------------


def test_a_silent_link_is_dead_after_the_link_timeout(pair):
    pair.tick("a", 1.0, bytes_in=1)
    assert pair.tick("a", 2.4, bytes_in=1) == []  # nothing new for 2.4 s
    events = pair.tick("a", 0.2, bytes_in=1)
    assert of(Closed, events)[0].reason == "keepalive_timeout"


def test_bytes_arriving_keep_a_link_alive_even_inside_one_large_frame(pair):
    for step in range(1, 20):
        # bob pongs (its frames are pumped to alice) and bytes keep arriving
        assert not of(Closed, pair.tick("a", 0.5, bytes_in=step))
        pair.pump()
    assert pair.a.established


def test_a_peer_that_sends_but_never_pongs_is_dead(pair):
    pair.tick("a", 0.5, bytes_in=1)  # queues a ping
    pair.pull("a")  # the writer takes it: it is on the wire
    closed = []
    for step in range(2, 9):  # bob's bytes arrive (it sends pings), but no pong comes back
        closed += of(Closed, pair.tick("a", 0.5, bytes_in=step))
        pair.pull("a")
    assert [event.reason for event in closed] == ["keepalive_timeout"]
    assert pair.now - 0.5 > 100.5 + 2.5  # the first unanswered ping had waited a link timeout


def test_pongs_measure_the_round_trip(pair):
    pair.tick("a", 0.5, bytes_in=1)
    frames = pair.pull("a")
    pair.now += 0.003
    for frame in frames:
        pair.b.receive(frame, pair.now)
    for frame in pair.pull("b"):
        pair.a.receive(frame, pair.now)
    assert pair.a.rtt == pytest.approx(0.003)


def test_pings_and_pongs_never_pile_up(pair):
    for _ in range(50):
        pair.tick("a", 0.01, bytes_in=pair.now)  # ticks while the writer takes nothing
        pair.inject("b", Ping(7))
        pair.inject("a", Ping(8))
    pair.sent("a")
    assert sorted(pair.kinds("a")) == ["ping", "pong"]


# -- the send queue --------------------------------------------------------------------------


def test_urgent_frames_leave_before_bulk_data(pair):
    pair.a.send(RecordFrame(b"r" * 1000, b"s" * 64))
    pair.tick("a", 0.5, bytes_in=1)  # a ping
    pair.inject("a", Ping(3))  # a pong to send
    pair.sent("a")
    assert pair.kinds("a") == ["ping", "pong", "record"]


def test_requests_and_answers_leave_before_queued_records(pair):
    for _ in range(3):
        pair.a.send(RecordFrame(b"r" * 1000, b"s" * 64))
    request_id = pair.a.open_request("t", pair.now + 30)
    pair.a.send(request(request_id))
    pair.sent("a")
    assert pair.kinds("a") == ["req", "record", "record", "record"]


def test_a_flood_of_records_leaves_room_for_requests():
    pair = Pair(limits_a=LinkLimits(queue_bytes=10_000)).start()
    with pytest.raises(QueueFull):
        for _ in range(10):
            pair.a.send(RecordFrame(b"r" * 3000, b"s" * 64))
    pair.a.send(request(pair.a.open_request("t", pair.now + 30)))  # still queued


def test_a_full_queue_refuses_frames_and_counts_its_bytes():
    pair = Pair(limits_a=LinkLimits(queue_bytes=10_000)).start()
    frame = RecordFrame(b"r" * 3000, b"s" * 64)
    with pytest.raises(QueueFull):
        for _ in range(10):
            pair.a.send(frame)
    assert 10_000 <= pair.a.queued_bytes < 14_000
    pair.pump()
    assert pair.a.queued_bytes == 0
    pair.a.send(frame)  # room again once the writer took them


def test_a_link_whose_socket_takes_nothing_is_closed_after_the_write_timeout(pair):
    pair.a.send(RecordFrame(b"r" * 100, b"s" * 64))
    pair.pull("a")  # the writer holds it, and is stuck writing
    for step in range(1, 16):  # bob's pings arrive; nothing of ours leaves
        events = pair.tick("a", 0.5, bytes_in=step, bytes_out=0, writing=True)
        pair.pump(to_b=False)
        if of(Closed, events):
            break
    assert of(Closed, events)[0].reason in ("write_timeout", "keepalive_timeout")


def test_write_timeout_closes_a_stuck_writer_even_when_pings_are_answered():
    limits = LinkLimits(link_timeout=100.0, write_timeout=2.0)
    pair = Pair(limits_a=limits).start()
    pair.a.send(RecordFrame(b"r" * 100, b"s" * 64))
    for step in range(1, 8):
        events = pair.tick("a", 0.5, bytes_in=step, bytes_out=5, writing=True)
        if of(Closed, events):
            break
    assert of(Closed, events)[0].reason == "write_timeout"
    assert pair.a.final_frames() == []  # a link that cannot drain gets no bye either


def test_a_slow_but_progressing_writer_is_not_closed():
    pair = Pair(limits_a=LinkLimits(link_timeout=100.0, write_timeout=2.0)).start()
    pair.a.send(RecordFrame(b"r" * 100, b"s" * 64))
    for step in range(1, 20):
        assert not of(Closed, pair.tick("a", 0.5, bytes_in=step, bytes_out=step, writing=True))


def test_sources_are_asked_only_when_the_queue_is_empty(pair):
    asked = []

    def source(max_bytes):
        asked.append(max_bytes)
        return [b"x" * 10] if len(asked) < 3 else []

    record = RecordFrame(b"r" * 10, b"s" * 64)
    pair.a.send(record)
    pair.a.add_source(source)
    pair.sent("a")
    pair.pull("a", 50)
    assert pair.sent("a") == [codec.encode(record)] and asked == []  # queue first
    pair.pull("a", 1000)
    assert pair.sent("a") == [b"x" * 10] * 2  # then the source, until it is dry
    assert pair.pull("a", 1000) == [] and not pair.a.has_output


# -- requests --------------------------------------------------------------------------------


def send_request(pair: Pair, token="t", **fields) -> int:
    request_id = pair.a.open_request(token, pair.now + 30)
    pair.a.send(request(request_id, **fields))
    pair.pump()
    return request_id


def test_a_request_and_its_response_carry_the_callers_token(pair):
    request_id = send_request(pair, token="waiter", ttl=2000)
    [arrived] = of(RequestArrived, pair.take("b"))
    assert arrived.frame.request_id == request_id
    assert arrived.deadline == pytest.approx(pair.now + 2.0)
    assert pair.b.respond(request_id, ResponseFrame(request_id, 200, (), b"ok"))
    pair.pump()
    [answer] = of(ResponseArrived, pair.take("a"))
    assert (answer.token, answer.frame.body) == ("waiter", b"ok")
    assert not pair.b.respond(request_id, ResponseFrame(request_id, 200))  # answered once
    assert pair.a.outgoing == {} and pair.b.incoming == {}


def test_request_ids_are_unique_among_those_in_flight(pair):
    ids = [pair.a.open_request(i, pair.now + 1) for i in range(100)]
    assert len(set(ids)) == 100
    pair.a._next_id = 0xFFFFFFFF  # wrapping round skips ids still in flight
    assert pair.a.open_request("x", pair.now + 1) not in ids


def test_a_reused_request_id_is_refused_and_counted_but_the_link_stays(pair):
    pair.inject("b", request(5))
    events = pair.inject("b", request(5))
    assert [(e.reason, e.fatal) for e in of(Rejected, events)] == [("duplicate_request_id", False)]
    assert pair.b.established and pair.b.rejected["duplicate_request_id"] == 1


def test_requests_over_the_in_flight_limit_get_503_at_once():
    pair = Pair(limits_b=LinkLimits(max_in_flight=2)).start()
    for token in ("one", "two", "three"):
        send_request(pair, token)
    assert len(of(RequestArrived, pair.take("b"))) == 2
    [busy] = of(ResponseArrived, pair.take("a"))
    assert (busy.token, busy.frame.status) == ("three", 503)
    assert pair.b.counts["overloaded"] == 1


def test_a_request_with_no_hops_left_for_another_node_gets_502(pair):
    send_request(pair, dst=Identity.generate().node_id, hops=0)
    [answer] = of(ResponseArrived, pair.take("a"))
    assert answer.frame.status == 502 and b"hop limit" in answer.frame.body
    assert not of(RequestArrived, pair.take("b"))


def test_no_hops_left_is_fine_at_the_destination_itself(pair):
    send_request(pair, hops=0)
    assert of(RequestArrived, pair.take("b"))


def test_a_request_with_no_time_left_gets_504(pair):
    send_request(pair, ttl=0)
    [answer] = of(ResponseArrived, pair.take("a"))
    assert answer.frame.status == 504


def test_a_ttl_longer_than_ours_is_clamped():
    pair = Pair(limits_b=LinkLimits(max_ttl_ms=2000)).start()
    send_request(pair, ttl=0xFFFFFFFF)  # 49.7 days
    [arrived] = of(RequestArrived, pair.take("b"))
    assert arrived.deadline == pytest.approx(pair.now + 2.0)
    assert pair.b.counts["ttl_clamped"] == 1


def test_cancel_reaches_the_answering_side_with_its_token(pair):
    request_id = send_request(pair)
    pair.b.attach(request_id, "job")
    pair.a.cancel_request(request_id)
    pair.pump()
    assert of(CancelArrived, pair.take("b")) == [CancelArrived(request_id, "job")]
    assert not pair.b.respond(request_id, ResponseFrame(request_id, 200))
    pair.pump()
    assert not of(ResponseArrived, pair.take("a"))


def test_late_responses_and_cancels_are_ignored_and_counted(pair):
    pair.inject("a", ResponseFrame(77, 200))
    pair.inject("a", codec.Cancel(77))
    assert pair.a.counts["late_response"] == pair.a.counts["late_cancel"] == 1
    assert pair.a.established


def run_healthy(pair: Pair, seconds: float) -> dict:
    """Tick both ends every half second for ``seconds``, frames flowing; return their events."""
    events = {"a": [], "b": []}
    for _ in range(int(seconds / 0.5)):
        pair.now += 0.5
        for end, other in (("a", "b"), ("b", "a")):
            events[end] += pair.tick(end, bytes_in=pair.wire[end], bytes_out=pair.wire[other])
        pair.pump()
    return events


def test_requests_are_forgotten_after_their_deadline_whatever_the_peer_does(pair):
    request_id = send_request(pair, token="mine", ttl=1000)  # bob's deadline: 1 s; ours: 30 s
    pair.b.attach(request_id, "job")
    events = run_healthy(pair, 1.0 + EXPIRY_GRACE + 0.5)
    assert of(Expired, events["b"]) == [Expired(request_id, "job", True)]
    assert not of(Expired, events["a"]) and request_id in pair.a.outgoing
    events = run_healthy(pair, 30)
    assert of(Expired, events["a"]) == [Expired(request_id, "mine", False)]
    assert pair.a.outgoing == {} and pair.b.incoming == {}
    assert not of(Closed, events["a"] + events["b"])  # a healthy link all along


# -- closing ---------------------------------------------------------------------------------


def test_close_reports_what_was_in_flight_and_says_bye(pair):
    mine = send_request(pair, token="mine")
    theirs = pair.b.open_request("theirs", pair.now + 30)
    pair.b.send(request(theirs, dst=ALICE.node_id))
    pair.pump()
    pair.a.attach(theirs, "job")
    [closed] = pair.a.close("shutting_down")
    assert closed.reason == "shutting_down" and closed.was_established
    assert closed.outgoing == ((mine, "mine"),) and closed.incoming == ((theirs, "job"),)
    assert pair.a.close("again") == []  # reported once
    [bye] = pair.a.final_frames()
    [closed_b] = of(Closed, pair.b.receive(bye, pair.now))
    assert closed_b.reason == "peer_bye: shutting_down"
    assert pair.b.final_frames() == []  # a bye is not answered


def test_a_bye_during_the_handshake_is_not_answered():
    pair = Pair()
    pair.a.start(pair.now)
    events = pair.a.receive(codec.encode(codec.Bye("go away")), pair.now)
    assert of(Closed, events) and pair.a.final_frames() == []


def test_unknown_or_handshake_frames_after_the_handshake_close_the_link(pair):
    events = pair.inject("a", Handshake(BOB, "responder").start()[0])
    assert of(Rejected, events)[0].reason == "unexpected_frame" and of(Closed, events)


def test_records_summaries_and_wants_are_the_nodes_business(pair):
    summary = Summary(((ALICE.node_id, 3),))
    assert pair.inject("b", summary) == [MessageArrived(summary)]


# -- large frames ----------------------------------------------------------------------------


def sealed_by_a(pair: Pair, message) -> bytes:
    return pair.seal("a", message if isinstance(message, bytes) else codec.encode(message))


def test_a_large_frame_of_a_small_type_is_refused_before_it_is_read(pair):
    events = pair.b.admit(16 * 1024 * 1024, sealed_by_a(pair, Ping(1))[:64])
    assert of(Rejected, events)[0].reason == "frame_too_large" and of(Closed, events)


def test_large_frames_take_from_the_body_budget_until_they_are_read():
    budget = Budget("body_bytes", 3_000_000)
    pair = Pair(budget_b=budget).start()
    frame = sealed_by_a(pair, request(1, body=b"x" * 2_000_000))
    assert pair.b.admit(len(frame), frame[:64]) is True
    assert budget.used == len(frame)
    assert of(RequestArrived, pair.b.receive(frame, pair.now))
    assert budget.used == 0  # handed over to whoever holds the request from here


def test_a_request_over_the_body_budget_is_dropped_unread_and_answered_503():
    budget = Budget("body_bytes", 1_000_000)
    pair = Pair(budget_b=budget).start()
    request_id = pair.a.open_request("caller", pair.now + 30)
    frame = sealed_by_a(pair, request(request_id, body=b"x" * 2_000_000))
    assert pair.b.admit(len(frame), frame[:64]) is False
    assert pair.b.discarded() == []
    pair.pump()
    [answer] = of(ResponseArrived, pair.take("a"))
    assert (answer.token, answer.frame.status) == ("caller", 503)
    assert budget.used == 0 and pair.b.established


def test_a_response_over_the_body_budget_fails_our_own_request_with_502():
    budget = Budget("body_bytes", 1_000_000)
    pair = Pair(budget_b=budget).start()
    request_id = pair.b.open_request("waiter", pair.now + 30)
    frame = sealed_by_a(pair, ResponseFrame(request_id, 200, (), b"x" * 2_000_000))
    assert pair.b.admit(len(frame), frame[:64]) is False
    [lost] = of(ResponseArrived, pair.b.discarded())
    assert (lost.token, lost.frame.status) == ("waiter", 502)


def test_an_unanswerable_large_frame_over_budget_closes_the_link():
    pair = Pair(budget_b=Budget("body_bytes", 10)).start()
    prefix = sealed_by_a(pair, b"\x81\xa1x" + bytes(100))[:3]  # no "t" where xio puts it
    assert pair.b.admit(100_000, prefix) is False
    assert of(Closed, pair.b.discarded())[0].reason == "body_budget"


def test_a_closed_link_gives_back_what_a_half_read_frame_took():
    budget = Budget("body_bytes", 10_000_000)
    pair = Pair(budget_b=budget).start()
    frame = sealed_by_a(pair, request(1, body=b"x" * 2_000_000))
    pair.b.admit(len(frame), frame[:64])
    pair.b.transport_closed("connection_lost")
    assert budget.used == 0
