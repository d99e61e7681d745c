"""Streamed answers in the sans-IO link session (docs/PROTOCOL.md 4.1): credit, order, rules.

Pairs of sessions with a fake clock, as in tests/test_link_session.py: A asks, B answers.
"""

from __future__ import annotations

import dataclasses

import pytest

from xio.errors import LocalProtocolError, QueueFull
from xio.peering.codec import CreditFrame, DataFrame, EndFrame, ResponseFrame
from xio.peering.session import (
    CreditArrived,
    DataArrived,
    EndArrived,
    Expired,
    LinkLimits,
    Rejected,
    RequestArrived,
    ResponseArrived,
)

from .test_link_session import Pair, of, request

HEAD = ResponseFrame(0, 200, (("Content-Type", "text/plain"),), more=True)


@pytest.fixture
def pair():
    return Pair().start()


def ask(pair: Pair, window: int = 1000, token="t") -> int:
    """A sends a req taking a streamed answer of ``window`` bytes at first; B registers it."""
    request_id = pair.a.open_request(token, pair.now + 30, window)
    pair.a.send(dataclasses.replace(request(request_id), win=window or None))
    pair.pump()
    assert of(RequestArrived, pair.take("b"))
    pair.take("a")
    return request_id


def head(pair: Pair, request_id: int) -> None:
    assert pair.b.respond(request_id, HEAD.under(request_id))
    pair.pump()


def test_a_stream_is_a_head_pieces_and_an_end_in_order(pair):
    request_id = ask(pair)
    head(pair, request_id)
    assert pair.b.send_data(request_id, b"one ")
    assert pair.b.send_data(request_id, b"two")
    assert pair.b.end_stream(request_id, mac=b"m" * 16)
    pair.pump()
    events = pair.take("a")
    assert [type(event) for event in events] == [ResponseArrived, DataArrived, DataArrived,
                                                 EndArrived]  # fmt: skip
    assert events[0].frame.more and events[0].token == "t"
    assert b"".join(event.body for event in of(DataArrived, events)) == b"one two"
    assert events[-1].mac == b"m" * 16 and events[-1].error is None
    assert pair.a.outgoing == {} and pair.b.incoming == {}  # the end ends the request


def test_the_answerer_may_send_only_the_credit_granted(pair):
    request_id = ask(pair, window=10)
    head(pair, request_id)
    assert pair.b.credit_of(request_id) == 10
    assert pair.b.send_data(request_id, b"x" * 10)
    assert pair.b.credit_of(request_id) == 0
    with pytest.raises(LocalProtocolError):
        pair.b.send_data(request_id, b"y")  # our own bug, never sent
    assert pair.a.grant(request_id, 5)
    pair.pump()
    [credit] = of(CreditArrived, pair.take("b"))
    assert (credit.request_id, credit.n) == (request_id, 5)
    assert pair.b.credit_of(request_id) == 5


def test_a_peer_sending_past_its_credit_loses_that_stream_not_the_link(pair):
    request_id = ask(pair, window=4)
    head(pair, request_id)
    pair.take("a")
    events = pair.inject("a", DataFrame(request_id, b"12345"))
    [rejected] = of(Rejected, events)
    assert (rejected.reason, rejected.fatal) == ("credit_exceeded", False)
    [end] = of(EndArrived, events)
    assert end.error.startswith("credit_exceeded") and end.mac is None
    assert pair.a.established and request_id not in pair.a.outgoing
    assert "cancel" in pair.kinds("a")  # the answerer is told to stop


def test_a_head_nobody_asked_for_is_refused_and_the_asker_gets_a_502(pair):
    request_id = ask(pair, window=0)  # a req without win
    with pytest.raises(LocalProtocolError):
        pair.b.respond(request_id, HEAD.under(request_id))  # never sent by us
    events = pair.inject("a", HEAD.under(request_id))
    assert [e.reason for e in of(Rejected, events)] == ["unexpected_stream"]
    [answer] = of(ResponseArrived, events)
    assert answer.frame.status == 502 and b"unexpected_stream" in answer.frame.body
    assert pair.a.established and pair.a.rejected["unexpected_stream"] == 1


def test_data_before_a_head_or_a_res_after_one_break_the_stream(pair):
    first = ask(pair)
    events = pair.inject("a", DataFrame(first, b"early"))
    assert of(ResponseArrived, events)[0].frame.status == 502
    second = ask(pair)
    head(pair, second)
    pair.take("a")
    events = pair.inject("a", ResponseFrame(second, 200, (), b"whole"))
    assert of(EndArrived, events)[0].error.startswith("unexpected_stream")
    assert pair.a.rejected["unexpected_stream"] == 2 and pair.a.established


def test_frames_racing_a_cancel_are_ignored_and_counted(pair):
    request_id = ask(pair)
    head(pair, request_id)
    pair.a.cancel_request(request_id)
    assert pair.inject("a", DataFrame(request_id, b"late")) == []
    assert pair.inject("a", EndFrame(request_id)) == []
    pair.pump()
    assert pair.b.credit_of(request_id) is None  # the cancel reached the answerer
    assert not pair.b.send_data(request_id, b"more")  # nothing more is sent
    assert pair.inject("b", CreditFrame(request_id, 9)) == []
    assert (pair.a.counts["late_data"], pair.a.counts["late_end"]) == (1, 1)
    assert pair.b.counts["late_credit"] == 1


def test_a_stream_outlives_its_deadline_while_it_moves_and_expires_when_quiet():
    limits = LinkLimits(link_timeout=1000, write_timeout=1000, max_ttl_ms=60_000)
    pair = Pair(limits_a=limits, limits_b=limits).start()
    request_id = ask(pair, window=10**6)
    head(pair, request_id)
    for _ in range(5):  # 5 x 40 s: well past the 30 s deadline, and moving
        pair.now += 40
        assert pair.b.send_data(request_id, b"tick")
        pair.pump()
        assert not of(Expired, pair.tick("a") + pair.tick("b"))
    pair.now += 62  # quiet for longer than max_ttl: forgotten at both ends
    assert of(Expired, pair.tick("a")) and of(Expired, pair.tick("b"))


def test_an_end_is_queued_even_when_the_queue_is_full():
    pair = Pair(limits_b=LinkLimits(queue_bytes=1000)).start()
    request_id = ask(pair, window=10**6)
    head(pair, request_id)
    assert pair.b.send_data(request_id, b"x" * 1000)
    with pytest.raises(QueueFull):
        pair.b.send_data(request_id, b"y")
    assert pair.b.end_stream(request_id, error="the app failed")
    pair.pump()
    assert of(EndArrived, pair.take("a"))[0].error == "the app failed"


# -- streamed request bodies (docs/PROTOCOL.md 4.2): the asker sends, the answerer grants ------


def upload(pair: Pair, token="t") -> int:
    """A sends a req whose body is streamed; B registers it and grants nothing yet."""
    request_id = pair.a.open_request(token, pair.now + 30, upload=True)
    pair.a.send(dataclasses.replace(request(request_id), more=True))
    pair.pump()
    [arrived] = of(RequestArrived, pair.take("b"))
    assert arrived.frame.more
    pair.b.attach(request_id, "task")
    pair.take("a")
    return request_id


def test_a_streamed_body_goes_only_within_the_credit_its_answerer_grants(pair):
    request_id = upload(pair)
    assert pair.a.body_credit_of(request_id) == 0  # nothing before the answerer asks
    assert pair.b.grant_body(request_id, 6)
    pair.pump()
    [credit] = of(CreditArrived, pair.take("a"))
    assert (credit.n, credit.up, credit.token) == (6, True, "t")
    assert pair.a.send_body_data(request_id, b"hello ")
    with pytest.raises(LocalProtocolError):
        pair.a.send_body_data(request_id, b"w")  # over the credit: our own bug, never sent
    assert pair.a.end_body(request_id, mac=b"m" * 16)
    pair.pump()
    events = pair.take("b")
    assert [(type(e), e.up) for e in events] == [(DataArrived, True), (EndArrived, True)]
    assert events[0].body == b"hello " and events[0].token == "task"
    assert events[1].mac == b"m" * 16 and events[1].error is None
    # The request is still in flight both ways: its answer is to come.
    assert request_id in pair.a.outgoing and request_id in pair.b.incoming
    assert pair.a.body_credit_of(request_id) is None  # the body ended: nothing more to send


def test_a_body_sent_past_its_credit_is_broken_and_the_link_stays(pair):
    request_id = upload(pair)
    pair.b.grant_body(request_id, 4)
    events = pair.inject("b", DataFrame(request_id, b"12345", True))
    assert [(e.reason, e.fatal) for e in of(Rejected, events)] == [("credit_exceeded", False)]
    [end] = of(EndArrived, events)
    assert end.up and end.error.startswith("credit_exceeded")
    assert pair.b.established and request_id in pair.b.incoming  # answered by its owner
    # Whatever the asker sends of that body now is refused, counted, and harms nothing.
    events = pair.inject("b", DataFrame(request_id, b"more", True))
    assert [e.reason for e in of(Rejected, events)] == ["unexpected_stream"]


def test_body_frames_of_a_request_that_streams_none_are_refused(pair):
    request_id = ask(pair, window=0)
    events = pair.inject("b", DataFrame(request_id, b"x", True))
    assert [e.reason for e in of(Rejected, events)] == ["unexpected_stream"]
    assert pair.inject("b", EndFrame(request_id, up=True)) == []
    assert not pair.b.grant_body(request_id, 5)  # never granted: it streams no body
    assert pair.b.counts["late_end"] == 1 and pair.b.established


def test_an_answer_ends_the_upload_and_late_body_frames_are_counted(pair):
    request_id = upload(pair)
    pair.b.grant_body(request_id, 100)
    pair.pump()
    pair.take("a")
    assert pair.b.respond(request_id, ResponseFrame(request_id, 413, (), b"too large"))
    pair.pump()
    assert of(ResponseArrived, pair.take("a"))
    assert pair.a.body_credit_of(request_id) is None  # the pump stops
    assert not pair.a.send_body_data(request_id, b"late")
    assert pair.inject("b", DataFrame(request_id, b"late", True)) == []
    assert pair.inject("a", CreditFrame(request_id, 9, True)) == []
    assert (pair.b.counts["late_data"], pair.a.counts["late_credit"]) == (1, 1)


def test_up_flags_must_be_bools_and_a_streamed_req_has_no_body_of_its_own():
    from xio.errors import LocalProtocolError as Bad

    with pytest.raises(Bad, match="up"):
        DataFrame(1, b"x", 1)
    with pytest.raises(Bad, match="body"):
        dataclasses.replace(request(1, body=b"inline"), more=True)
