"""Logs (xio.node.logs): text for a terminal, none of its own timestamps under systemd, JSON lines
with --log-format json, and an access log sampled or off whatever --log-level says."""

from __future__ import annotations

import io
import json
import logging
import random
import re

import pytest

import xio
from xio import server
from xio.node import logs
from xio.node.cli import ArgumentParser, node_arguments

from .conftest import NODE

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def restore_logging():
    """Put back the root level, the access logger's and the sampling hook after a test."""
    root, access = logging.getLogger(), logging.getLogger("xio.access")
    saved = root.level, access.level, server.access_sample, dict(logs._state)
    yield
    if logs._state["handler"] is not None:
        root.removeHandler(logs._state["handler"])
    root.setLevel(saved[0])
    access.setLevel(saved[1])
    server.access_sample = saved[2]
    logs._state.clear()
    logs._state.update(saved[3], handler=None)


def test_json_lines_carry_time_level_event_node_message_and_fields(restore_logging):
    stream = io.StringIO()
    logs.setup("info", "json", stream=stream)
    logs.set_node("alpha")
    logging.getLogger("xio.node").info("link up: %s (%s)", "beta", "id-b")
    logging.getLogger("xio.node").warning("budget spent", extra={"event": "budget", "used": 7})
    logging.getLogger("xio.access").info("%s %s %s %s %.2fms", "127.0.0.1", "GET", "/a/", 200,
                                         1.23456)  # fmt: skip
    first, second, access = (json.loads(line) for line in stream.getvalue().splitlines())
    assert RFC3339_MS.fullmatch(first["time"])
    assert first["level"] == "info" and first["node"] == "alpha"
    assert first["event"] == "xio.node: link up: %s (%s)"  # equal events group
    assert first["msg"] == "link up: beta (id-b)"
    assert first["fields"] == {"args": ["beta", "id-b"]}
    assert (second["event"], second["level"], second["fields"]) == ("budget", "warning",
                                                                     {"used": 7})  # fmt: skip
    assert access["fields"] == {"client": "127.0.0.1", "method": "GET", "path": "/a/",
                                "status": 200, "duration_ms": 1.235}  # fmt: skip


def test_text_has_its_own_time_on_a_terminal_and_none_under_systemd(restore_logging):
    for environ, stamped in (({}, True), ({"JOURNAL_STREAM": "8:1234"}, False),
                             ({"INVOCATION_ID": "abc"}, False)):  # fmt: skip
        stream = io.StringIO()
        logs.setup("info", "text", stream=stream, environ=environ)
        logging.getLogger("xio.node").info("hello")
        line = stream.getvalue().strip()
        assert line.endswith("INFO xio.node hello")
        assert bool(re.match(r"\d{4}-\d\d-\d\d ", line)) is stamped, (environ, line)


def test_json_keeps_its_time_under_systemd(restore_logging):
    stream = io.StringIO()
    logs.setup("info", "json", stream=stream, environ={"JOURNAL_STREAM": "8:1"})
    logging.getLogger("xio").info("x")
    assert RFC3339_MS.fullmatch(json.loads(stream.getvalue())["time"])


def test_the_access_log_ignores_log_level_and_can_be_off(restore_logging):
    stream = io.StringIO()
    logs.setup("warning", "text", "on", stream=stream)
    logging.getLogger("xio.node").info("not shown")
    logging.getLogger("xio.access").info("shown")
    assert "not shown" not in stream.getvalue() and "shown" in stream.getvalue()
    logs.setup("debug", "text", "off", stream=stream)
    assert not logging.getLogger("xio.access").isEnabledFor(logging.CRITICAL)


def test_a_sampled_access_log_keeps_about_its_share_and_every_5xx():
    sample = logs.access_sampler(0.1, random.Random(11))
    kept = sum(sample(200) for _ in range(10_000))
    assert 800 < kept < 1200
    assert all(sample(503) for _ in range(100))
    assert all(sample(-500) for _ in range(100))  # a 500 the socket failed to send


@pytest.mark.parametrize("text, parsed", [("on", "on"), ("OFF", "off"), ("0.1", "0.1"),
                                          ("1", "on")])  # fmt: skip
def test_access_log_values(text, parsed):
    assert logs.parse_access_log(text) == parsed


@pytest.mark.parametrize("bad", ["0", "-1", "2", "sometimes", "nan"])
def test_bad_access_log_values_are_a_bad_command_line(bad, capsys):
    parser = ArgumentParser(prog="xio-node")
    node_arguments(parser)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--access-log", bad])
    assert exit_.value.code == 2
    assert "--access-log" in capsys.readouterr().err


def test_both_flags_are_plain_dests_with_defaults():
    parser = ArgumentParser(prog="xio-node")
    node_arguments(parser)
    args = parser.parse_args([])
    assert (args.log_format, args.access_log) == ("text", "on")


def test_a_node_started_with_json_logs_writes_only_json_lines(spawn):
    node = spawn([*NODE, "--demo", "--port", "0", "--log-format", "json", "--access-log",
                  "on"], "demo")  # fmt: skip
    url = re.search(r"listening on (http://[0-9.:]+)", node.output())[1]
    client = xio.client(url)
    assert client.get("/demo/").status == 200
    assert client.get("/nosuch/").status == 404
    node.stop()
    lines = [json.loads(line) for line in node.output().splitlines()]
    events = [line["event"] for line in lines]
    assert "listening" in events and "open_mesh" in events
    access = [line["fields"] for line in lines if line["event"].startswith("xio.access")]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [
        ("GET", "/demo/", 200), ("GET", "/nosuch/", 404)]  # fmt: skip
    assert {line["node"] for line in lines if line["event"] != "open_mesh"} <= {"demo"}
