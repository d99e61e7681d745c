"""Server-sent events, pure (xio.sse): what a handler yields, written and read back."""

from __future__ import annotations

import pytest

import xio
from xio import sse
from xio.testing import TestClient


def test_values_and_events_are_written_as_the_format_says():
    assert sse.encode("hi") == b"data: hi\n\n"
    assert sse.encode({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse.encode(xio.Event("two\nlines", event="up", id="7", retry=500)) == (
        b"event: up\nid: 7\nretry: 500\ndata: two\ndata: lines\n\n"
    )
    assert sse.encode(xio.Event(comment="keep-alive")) == b": keep-alive\n\n"
    assert sse.encode(b"data: x\n\n") == b"data: x\n\n"  # already in the format: as it is
    with pytest.raises(ValueError):
        sse.encode(xio.Event("x", event="a\nb"))  # one field cannot become two


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 64])
def test_the_parser_reads_events_however_the_bytes_are_cut(cut):
    stream = (b"event: up\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\n: a comment\n\n"
              b"data: {\"n\":1}\n\nretry: 9\ndata:no space\r\rdata: end\n\n")  # fmt: skip
    parser = sse.Parser()
    events = []
    for start in range(0, len(stream), cut):
        events += parser.feed(stream[start : start + cut])
    assert [(e.event, e.data, e.id) for e in events] == [
        ("up", "a\nb", "7"), ("message", '{"n":1}', "7"), ("message", "no space", "7"),
        ("message", "end", "7"),
    ]  # fmt: skip
    assert events[1].json() == {"n": 1} and events[2].retry == 9


def test_a_line_without_end_is_bounded():
    parser = sse.Parser()
    with pytest.raises(ValueError, match="over"):
        for _ in range(20):
            parser.feed(b"x" * (64 * 1024))


def test_a_generator_is_a_live_resource_for_a_client_asking_for_events():
    app = xio.app("events")

    @app.bind("www/live")
    def live(req):
        yield "first"
        yield xio.Event('{"n": 2}', event="count")

    client = TestClient(app)
    answer = client.get("/live", headers={"Accept": "text/event-stream"})
    assert answer.content_type == "text/event-stream"
    assert answer.headers["Cache-Control"] == "no-cache"
    events = sse.Parser().feed(answer.content.encode())
    assert [(e.event, e.data) for e in events] == [("message", "first"), ("count", '{"n": 2}')]


def test_without_asking_for_events_values_are_lines_of_json():
    app = xio.app("lines")

    @app.bind("www/live")
    def live(req):
        yield "text "
        yield {"n": 2}

    assert TestClient(app).get("/live").content == b'text {"n":2}\n'
