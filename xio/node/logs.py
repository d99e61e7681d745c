"""Where a node's log goes and how it looks: text for people, JSON lines for machines.

Theory of operation. ``setup`` puts one handler on the root logger, on stderr:

* ``text`` (the default): ``time level logger message``, as a terminal shows it; under
  systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` set) without the time, since journald
  stamps every line itself.
* ``json``: one object per line per event: ``time`` (RFC 3339, UTC, milliseconds), ``level``,
  ``event`` (a short name given as ``extra={"event": ...}``, else the logger's name and the
  message template, so equal events group whatever their values), ``node`` (once known,
  ``set_node``), ``msg`` (the formatted message), and ``fields``: the record's ``extra``
  values, or its arguments (named ones for the access log).

The access log (``xio.access``, one line per HTTP request, written by ``xio.server``) has a
level of its own, whatever ``--log-level`` says of the rest: ``on``, ``off``, or a share of
requests to log (``0.1``: one in ten, drawn at random; a 5xx is always logged). The draw is
the hook ``xio.server.access_sample``, called before the line is built, so a sampled-out
request costs one random number.

The few lines ``xio-node`` prints at start (the open-mesh warning, "listening on") go through
``announce``: as they always were in text, as one JSON event in json.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Mapping

__all__ = ["FORMATS", "JsonFormatter", "access_sampler", "announce", "parse_access_log", "setup"]

FORMATS = ("text", "json")
#: The arguments of an access line (xio.server), by name.
ACCESS_FIELDS = ("client", "method", "path", "status", "duration_ms")
#: What every LogRecord has: the rest of its attributes came in ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "event", "taskName",
}  # fmt: skip

_state: dict = {"node": None, "format": "text", "handler": None}


def parse_access_log(text: str) -> str:
    """Check an ``--access-log`` value: ``on``, ``off`` or a share in (0, 1]; return it."""
    value = str(text).strip().lower()
    if value in ("on", "off"):
        return value
    share = float(value)  # ValueError: argparse says "invalid access-log value"
    if not 0 < share <= 1:
        raise ValueError(text)
    return "on" if share == 1 else repr(share)


parse_access_log.__name__ = "access-log"


def access_sampler(share: float, rng: random.Random | None = None) -> Callable[[object], bool]:
    """Return ``sample(status)``: True for one request in ``1/share`` and for every 5xx."""
    draw = (rng or random.Random()).random

    def sample(status: object) -> bool:
        # A negative code is a response the socket failed to send: an error too.
        return (type(status) is int and abs(status) >= 500) or draw() < share

    return sample


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        entry = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or f"{record.name}: {template}",
            "node": _state["node"],
            "msg": message,
        }
        fields = {k: _plain(v) for k, v in record.__dict__.items() if k not in _STANDARD}
        args = record.args
        if record.name == "xio.access" and isinstance(args, tuple) and len(args) == 5:
            fields.update(zip(ACCESS_FIELDS, map(_plain, args), strict=True))
            fields["duration_ms"] = round(args[4], 3)
        elif isinstance(args, Mapping):
            fields.update({str(k): _plain(v) for k, v in args.items()})
        elif args:
            fields["args"] = [_plain(arg) for arg in args]
        if fields:
            entry["fields"] = fields
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _rfc3339(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


def _plain(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def under_systemd(environ: Mapping[str, str]) -> bool:
    """Tell whether stderr goes to journald, which stamps every line with its own time."""
    return bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))


def setup(
    level: str = "info",
    log_format: str = "text",
    access_log: str = "on",
    *,
    stream=None,
    environ: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
) -> logging.Handler:
    """Log to ``stream`` (stderr) in ``log_format``; the access log as ``access_log`` says."""
    from .. import server  # the access-log hook (imports gevent: the node has it already)

    environ = os.environ if environ is None else environ
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif under_systemd(environ):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    if _state.get("handler") is not None:  # set up again (tests): replace ours, only ours
        root.removeHandler(_state["handler"])
    root.addHandler(handler)
    _state["handler"] = handler
    root.setLevel(getattr(logging, level.upper()))
    _state["format"] = log_format
    access = logging.getLogger("xio.access")
    if access_log == "off":
        access.setLevel(logging.CRITICAL + 1)
        server.access_sample = None
    else:  # independent of the root level: --log-level warning keeps the access lines
        access.setLevel(logging.INFO)
        share = 1.0 if access_log == "on" else float(access_log)
        server.access_sample = None if share >= 1 else access_sampler(share, rng)
    return handler


def set_node(name: str) -> None:
    """Name the node in every JSON line from now on."""
    _state["node"] = name


def announce(line: str, event: str, level: str = "info", stream=None) -> None:
    """Print one of the lines ``xio-node`` says at start: as it is, or as a JSON event."""
    stream = sys.stderr if stream is None else stream
    if _state["format"] == "json":
        now = time.time()
        line = json.dumps({"time": _rfc3339(now), "level": level, "event": event,
                           "node": _state["node"], "msg": line}, ensure_ascii=False)  # fmt: skip
    print(line, file=stream, flush=True)
