"""``xio``: call a resource from the shell, as ``xio.client`` does from Python.

    xio get http://127.0.0.1:7700/inventory/items/42 -q full=1
    xio post 127.0.0.1:7700/inventory/items '{"name": "kettle"}'
    xio call PURGE xio://inventory/cache --via http://127.0.0.1:7700
    python -m xio.clientmain ...         (the same, without the console script)

Theory of operation
-------------------
The command line is read into one ``Call`` (method, base URL, query string, headers, body
and its type) by pure functions, so that each rule (how DATA becomes a body, how an
``xio://`` URL is resolved) is tested without a process. One ``xio.client`` (HTTP, or
the WebSocket channel for ``ws://``) then makes the single request with ``stream``, the
URL's own query and the ``-q`` pairs appended as one query string. A body that decodes to a
value (JSON, msgpack, a form) is read whole and ``render`` prints it again as JSON; any
other (text, octets) is written to stdout piece by piece as it arrives. The status becomes
the exit code: 0 below 400, 4 for 4xx, 5 for 5xx. The body is written whatever the
status, as ``curl --fail-with-body`` does, so a script sees xio's problem description.

Failures the request could not get past map to the other codes: argparse's own usage
errors and ours (``xio://`` without a node, a bad ``-q`` or ``-H``, an unreadable
``@file``) exit 2; a ``TransportError`` (no connection, no answer in time, an answer that
is not HTTP) exits 1 with ``xio: <Error>: <message>`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode

from .client import client as make_client
from .content import FORM, JSON, MSGPACK, decode_answer, media_type
from .errors import BadRequest, ConnectError, ResponseError, Timeout, TransportError
from .request import Headers, Response
from .version import __version__

__all__ = [
    "Call", "UsageError", "body_of", "call_of", "exit_code", "head_of", "is_structured", "main",
    "parse", "render", "resolve_url",
]  # fmt: skip

VERBS = ("get", "post", "put", "patch", "delete", "about")
#: Media types whose body is decoded whole and printed as JSON (xio.content.decode's).
_STRUCTURED = frozenset({JSON, MSGPACK, "application/x-msgpack", FORM})
BINARY = "application/octet-stream"
#: The names stderr gives a failure: the spec's three, else their base (as every client).
_ERROR_NAMES = (
    ("ConnectError", ConnectError),
    ("Timeout", Timeout),
    ("ResponseError", ResponseError),
    ("TransportError", TransportError),
)

DATA_HELP = """\
DATA, the request body (none when absent):
  '{"a": 1}'  text that parses as JSON is sent as it is, as application/json
  hello       any other text is sent as text/plain; charset=utf-8
  @FILE       the file's bytes as they are, Content-Type guessed from its name
              (.json application/json, .txt text/plain, ...; else, and for a
              compressed file such as .gz, application/octet-stream)
  -           standard input's bytes as they are: application/json when they parse
              as JSON, else application/octet-stream
  -H 'Content-Type: ...' overrides the type in every case. To send text starting
  with '@' or '-', give it as a JSON string: '"@home"'.

URL: http(s)://host:port/app/path, host:port/app/path (plain HTTP), ws://... (the
WebSocket client), or xio://app/path, resolved against --via or $XIO_NODE (a node's URL
or host:port).

Output: JSON pretty-printed on a terminal, compact on one line when piped; text as
it is; other types as raw bytes. The body is printed whatever the status.
Exit status: 0 for 1xx-3xx, 4 for 4xx, 5 for 5xx, 1 when no answer came (no
connection, timeout, not HTTP; the error on stderr), 2 for a usage error."""


class UsageError(ValueError):
    """The command line asks for something that cannot be sent (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the command line describes it."""

    method: str
    url: str  # the base URL, without query or fragment
    query: str  # the raw query string, no leading '?'
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    timeout: float


# -- reading the command line: pure ---------------------------------------------------------


def resolve_url(url: str, via: str | None) -> str:
    """Return the URL to call: ``xio://app/path`` becomes ``<via>/app/path``."""
    if not url.startswith("xio://"):
        return url
    rest = url[len("xio://") :]
    if not rest or rest.startswith("/"):
        raise UsageError(f"{url!r} names no app: xio://APP/PATH")
    if not via:
        raise UsageError(
            f"{url!r} needs a node to resolve it: give --via http://HOST:PORT or set XIO_NODE"
        )
    return f"{via.rstrip('/')}/{rest}"


def split_query(url: str) -> tuple[str, str]:
    """Return ``(url without query and fragment, query string)``."""
    url = url.split("#", 1)[0]
    base, _, query = url.partition("?")
    return base, query


def query_of(url_query: str, pairs: list[str]) -> str:
    """Join the URL's own query and the ``-q name=value`` pairs (repeats kept, in order)."""
    fields = []
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise UsageError(f"-q {pair!r}: give name=value")
        fields.append((name, value))
    parts = [part for part in (url_query, urlencode(fields)) if part]
    return "&".join(parts)


def headers_of(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """Read ``-H 'Name: value'`` lines into pairs."""
    pairs = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise UsageError(f"-H {line!r}: give 'Name: value'")
        pairs.append((name, value.strip()))
    return tuple(pairs)


def _is_json(text: str) -> bool:
    def refuse(constant: str):  # NaN and Infinity are not JSON, whatever json.loads allows
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


def body_of(
    data: str | None, read_stdin: Callable[[], bytes], read_file: Callable[[str], bytes]
) -> tuple[bytes | None, str | None]:
    """Return ``(body, content type)`` for the DATA argument (see ``DATA_HELP``).

    ``read_stdin()`` and ``read_file(name)`` return bytes; they are parameters so that the
    rules are tested without files or a terminal.
    """
    if data is None:
        return None, None
    if data == "-":
        raw = read_stdin()
        try:
            looks_json = _is_json(raw.decode("utf-8"))
        except UnicodeDecodeError:
            looks_json = False
        return raw, JSON if looks_json else BINARY
    if data.startswith("@"):
        name = data[1:]
        if not name:
            raise UsageError("@FILE: give a file name after '@'")
        try:
            raw = read_file(name)
        except OSError as exc:
            raise UsageError(f"cannot read {data}: {exc.strerror or exc}") from exc
        kind, encoding = mimetypes.guess_type(name)
        # x.tar.gz guesses (tar, gzip): the bytes are gzip, not tar, so name no type for them.
        return raw, (None if encoding else kind) or BINARY
    if _is_json(data):
        return data.encode(), JSON
    return data.encode(), "text/plain; charset=utf-8"


def call_of(
    args: argparse.Namespace,
    read_stdin: Callable[[], bytes],
    read_file: Callable[[str], bytes],
    environ: Mapping[str, str],
) -> Call:
    """Build the ``Call`` that parsed arguments describe."""
    via = args.via or environ.get("XIO_NODE") or None
    base, url_query = split_query(resolve_url(args.url, via))
    headers = headers_of(args.header)
    body, content_type = body_of(args.data, read_stdin, read_file)
    if content_type and not any(name.lower() == "content-type" for name, _ in headers):
        headers += (("Content-Type", content_type),)
    method = args.method.upper()
    return Call(method, base, query_of(url_query, args.query), headers, body, args.timeout)


# -- writing the answer: pure ---------------------------------------------------------------


def _printable(value):
    if isinstance(value, (bytes, bytearray)):  # inside msgpack: JSON has no octets
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def head_of(status: int, headers: Headers) -> bytes:
    """Return what ``-i`` prints first: ``HTTP 200 OK``, each header line, a blank line."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP {status} {reason}".rstrip()]
    lines += [f"{name}: {value}" for name, value in headers.fields()]
    return ("\n".join(lines) + "\n\n").encode("utf-8", "replace")


def render(response: Response, method: str, *, pretty: bool, include_head: bool) -> bytes:
    """Return what stdout shows for ``response``: head (with ``-i``), then the content."""
    out = head_of(response.status, response.headers) if include_head else b""
    content = response.content
    if isinstance(content, str):
        return out + content.encode()
    if isinstance(content, (bytes, bytearray)):
        return out + bytes(content)
    if content is None and not _carries_json(response, method):
        return out  # no body (a HEAD, 204 or 304, or an empty one): nothing to print
    if pretty:
        text = json.dumps(content, indent=2, ensure_ascii=False, default=_printable)
    else:
        text = json.dumps(content, separators=(",", ":"), ensure_ascii=False,
                          default=_printable)  # fmt: skip
    return out + text.encode() + b"\n"


def is_structured(content_type: str | None) -> bool:
    """Tell whether a body decodes to a value printed as JSON (else it is passed through)."""
    kind = media_type(content_type)
    return kind in _STRUCTURED or kind.endswith("+json")


def _carries_json(response, method: str) -> bool:
    # A JSON answer's empty body decodes as null (xio.content.decode_answer), as does `null`.
    if method == "HEAD" or response.status in (204, 304):
        return False
    kind = media_type(response.content_type)
    return kind == JSON or kind.endswith("+json")


def exit_code(status: int) -> int:
    """Return the exit status for an HTTP status: 0 below 400, 4 for 4xx, 5 above."""
    if status < 400:
        return 0
    return 4 if status < 500 else 5


def error_name(exc: TransportError) -> str:
    """Return the name stderr gives a transport failure (``ReadTimeout`` is a ``Timeout``)."""
    return next(name for name, kind in _ERROR_NAMES if isinstance(exc, kind))


# -- the command ----------------------------------------------------------------------------


COMMANDS = {
    **{verb: f"send {verb.upper()} to URL" for verb in VERBS},
    "call": "send any METHOD to URL: xio call PURGE URL",
}


def parser() -> argparse.ArgumentParser:
    """Return the top parser: a command, then that command's own arguments."""
    listing = "\n".join(f"  {name:<8}{what}" for name, what in COMMANDS.items())
    top = argparse.ArgumentParser(
        prog="xio",
        usage="xio [-h] [--version] COMMAND [options] URL [DATA]",
        description="Call a resource on an xio node and print its answer.\n\ncommands:\n"
        + listing
        + "\n\n`xio COMMAND -h` lists a command's options.",
        epilog=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"xio {__version__}")
    top.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help=argparse.SUPPRESS)
    top.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return top


def command_parser(command: str) -> argparse.ArgumentParser:
    """Return the parser of one command's arguments (options may come anywhere)."""
    sub = argparse.ArgumentParser(
        prog=f"xio {command}",
        description=COMMANDS[command] + ".",
        epilog=DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if command == "call":
        sub.add_argument("method", metavar="METHOD", help="the HTTP method, e.g. PURGE or HEAD")
    else:
        sub.set_defaults(method=command.upper())
    sub.add_argument("url", metavar="URL", help="what to call (see below)")
    sub.add_argument("data", metavar="DATA", nargs="?", help="the request body (see below)")
    sub.add_argument("-q", "--query", action="append", default=[], metavar="NAME=VALUE",
                     help="add a query parameter (repeatable; a repeated name is kept)")  # fmt: skip
    sub.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                     help="add a request header (repeatable)")  # fmt: skip
    sub.add_argument("-i", "--include", action="store_true",
                     help="print the status line and the headers before the body")  # fmt: skip
    sub.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                     help="seconds to wait to connect and for the answer (default 30)")  # fmt: skip
    sub.add_argument("--via", metavar="NODE",
                     help="the node that resolves xio://APP/PATH (default: $XIO_NODE)")  # fmt: skip
    return sub


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Return the command's parser and its arguments (argparse exits 2 on a usage error)."""
    argv = sys.argv[1:] if argv is None else argv
    top_parser = parser()
    if not argv:
        top_parser.error("give a COMMAND: get, post, put, patch, delete, about or call")
    top = top_parser.parse_args(argv)
    sub = command_parser(top.command)
    # Intermixed, so that DATA may follow options: `xio post URL -q a=1 DATA`.
    return sub, sub.parse_intermixed_args(top.arguments)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"give a positive number of seconds, not {text!r}")
    return value


def _read_file(name: str) -> bytes:
    with open(name, "rb") as handle:
        return handle.read()


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run ``xio``; return the exit status."""
    usage, args = parse(argv)
    environ = os.environ if environ is None else environ
    try:
        call = call_of(args, sys.stdin.buffer.read, _read_file, environ)
    except UsageError as exc:
        usage.error(str(exc))

    try:
        client = make_client(call.url, timeout=call.timeout)
    except ValueError as exc:  # a URL the client cannot call
        usage.error(str(exc))
    try:
        status = _exchange(client, call, include_head=args.include, pretty=sys.stdout.isatty())
    except ValueError as exc:  # a method or a header the client refuses to send
        usage.error(str(exc))
    except TransportError as exc:
        print(f"xio: {error_name(exc)}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # as a shell reports a command ended by SIGINT
    finally:
        client.close()
    return exit_code(status)


def _exchange(client, call: Call, *, include_head: bool, pretty: bool) -> int:
    """Make the call and write the answer; return its status.

    A structured body (JSON...) is decoded whole, to be printed again; any other is written
    piece by piece as it arrives, so that a slow stream shows as it goes.
    """
    # Headers joins a name given twice into one line, "a, b", as HTTP allows.
    headers = Headers(list(call.headers))
    with client.stream(call.method, "", data=call.body, query=call.query or None,
                       headers=headers) as answer:  # fmt: skip
        if not is_structured(answer.content_type):
            if include_head and not _write(head_of(answer.status, answer.headers)):
                return answer.status
            for piece in answer:
                if not _write(piece):
                    break
            return answer.status
        raw = answer.read()
        try:
            content = decode_answer(raw, answer.content_type, call.method, answer.status)
        except BadRequest as exc:
            raise ResponseError(f"{call.url}: {exc.description}") from exc
    response = Response(content, answer.status, answer.content_type, answer.headers)
    _write(render(response, call.method, pretty=pretty, include_head=include_head))
    return answer.status


def _write(out: bytes) -> bool:
    """Write to stdout now; return False once the reader has gone."""
    try:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader went away (`xio get ... | head -1`): not an error of the call. Point
        # stdout at /dev/null so that the interpreter's final flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
