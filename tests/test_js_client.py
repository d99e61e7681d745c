"""The JavaScript client (clients/js/xio.js) beyond the conformance cases, run by real Node.

Each test runs a short ES module under ``node`` that imports xio.js and prints what it saw as
JSON: the channel codec against xio.channel's bytes, many calls in flight on one WebSocket,
``stream()`` as an async iterator, a timeout that cancels and leaves the channel usable, a
reconnect after the node restarts, fetch's failures translated to xio's errors (against small
misbehaving servers the script starts itself), and local misuse refused before any IO.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xio import channel
from xio.version import __version__

from .conftest import NODE, ROOT
from .test_conformance import node_command

JS = ROOT / "clients" / "js"
APP = ROOT / "tests" / "conformance" / "app.py"

pytestmark = pytest.mark.skipif(not shutil.which("node"), reason="scripts/check installs nodejs")

#: Put before every script: the client, and a WebSocket that counts the connections it opens.
PRELUDE = f"""
import * as xio from {json.dumps((JS / "xio.js").as_uri())};
let sockets = 0;
class CountingWebSocket extends globalThis.WebSocket {{
  constructor(...args) {{ super(...args); sockets += 1; }}
}}
const out = (value) => process.stdout.write(JSON.stringify(value) + '\\n');
const failure = (error) => ({{ error: error.name, message: error.message, nothingSent: error.nothingSent }});
"""


def run_js(code: str, *args: str, timeout: float = 60) -> dict:
    """Run ``code`` (after PRELUDE) as an ES module; return the JSON it printed last."""
    done = subprocess.run([*node_command(), "--input-type=module", "-e", PRELUDE + code, *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def node(spawn, tmp_path):
    """One node with the conformance app: its base URL over ws:// and http://."""
    process = spawn([*NODE, "--host", "127.0.0.1", "--port", "0", "--no-mdns",
                     "--state-dir", str(tmp_path / "state"), "--app", str(APP)], "node")  # fmt: skip
    return process


def test_codec_makes_and_reads_the_bytes_of_xio_channel():
    fields = {"method": "POST", "path": "/conf/echo/caf%C3%A9", "query": "k=1&k=2",
              "headers": [["Accept", "application/json"], ["X-Ü", "é"]]}  # fmt: skip
    head = channel.encode(channel.HEAD, 9, {"status": 200, "headers": [["Set-Cookie", "a=1"]]},
                          b"\x00\xffhi", channel.END)  # fmt: skip
    data = channel.encode(channel.DATA, 2**32 - 1, None, b"more")
    seen = run_js(
        """
const { encode, decode, REQ, CANCEL, END } = xio._channel;
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const read = (text) => { const m = decode(new Uint8Array(Buffer.from(text, 'hex')).buffer);
  return { ...m, body: hex(m.body) }; };
const bad = (text) => { try { decode(Buffer.from(text, 'hex')); return 'decoded'; }
  catch (error) { return error.name; } };
out({
  req: hex(encode(REQ, 7, JSON.parse(process.argv[1]), new Uint8Array([1, 2, 3]), END)),
  cancel: hex(encode(CANCEL, 7)),
  head: read(process.argv[2]), data: read(process.argv[3]),
  bad: ['0300', '090000000001000000000000', '030000000000000000', '030000000001000000057b7d',
        '0300000000010000000231', '030000000001000000025b5d'].map(bad),
});
""",
        json.dumps(fields),
        head.hex(),
        data.hex(),
    )
    assert seen["req"] == channel.encode(channel.REQ, 7, fields, b"\x01\x02\x03", channel.END).hex()
    assert seen["cancel"] == channel.encode(channel.CANCEL, 7).hex()
    assert seen["head"] == {"kind": channel.HEAD, "flags": channel.END, "id": 9, "body": "00ff6869",
                            "fields": {"status": 200, "headers": [["Set-Cookie", "a=1"]]}}  # fmt: skip
    assert seen["data"] == {"kind": channel.DATA, "flags": 0, "id": 2**32 - 1, "fields": {},
                            "body": b"more".hex()}  # fmt: skip
    # too short, unknown kind, id 0, JSON cut short, JSON that does not parse, not an object
    assert seen["bad"] == ["ResponseError"] * 6


def test_many_calls_in_flight_share_one_websocket_and_get_their_own_answers(node):
    seen = run_js(
        """
const c = xio.client(process.argv[1], { WebSocket: CountingWebSocket });
const calls = [];
for (let i = 0; i < 20; i++) {
  calls.push(c.get(`echo/${i}`, { query: { i } }));
  calls.push(c.get('slow', { query: { s: '0.2' } }));
}
const answers = await Promise.all(calls);
c.close();
out({ sockets, answers: answers.map((r) => [r.status, r.content.path ?? r.content.slept,
                                            r.content.query?.i?.[0] ?? null]) });
""",
        "ws" + node.url[len("http") :] + "/conf",
    )
    assert seen["sockets"] == 1
    expected = []
    for i in range(20):
        expected += [[200, str(i), str(i)], [200, "0.2", None]]
    assert seen["answers"] == expected


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_stream_is_an_async_iterator_of_bytes_and_leaving_it_early_drops_the_rest(node, scheme):
    seen = run_js(
        """
const c = xio.client(process.argv[1], { WebSocket: CountingWebSocket });
const r = await c.stream('stream');
let text = '';
let kinds = new Set();
for await (const chunk of r.body) { kinds.add(chunk.constructor.name); text += new TextDecoder().decode(chunk); }
const early = await c.stream('bytes');
for await (const chunk of early.body) break;
const after = await c.get('text');
c.close();
out({ status: r.status, contentType: r.contentType, text, kinds: [...kinds], after: after.content });
""",
        scheme + node.url[len("http") :] + "/conf",
    )
    assert seen == {"status": 200, "contentType": "text/plain; charset=utf-8",
                    "text": "".join(f"chunk-{i}\n" for i in range(5)), "kinds": ["Uint8Array"],
                    "after": "héllo wörld ✓ 日本"}  # fmt: skip


def test_a_timeout_on_the_channel_cancels_and_the_channel_stays_usable(node):
    seen = run_js(
        """
const c = xio.client(process.argv[1], { WebSocket: CountingWebSocket, timeout: 10 });
let late;
try { late = await c.get('slow', { query: { s: '2' }, timeout: 0.3 }); } catch (error) { late = failure(error); }
const next = await c.get('json');
c.close();
out({ late, next: next.status, sockets });
""",
        "ws" + node.url[len("http") :] + "/conf",
    )
    assert seen["late"]["error"] == "Timeout"
    assert seen["next"] == 200
    assert seen["sockets"] == 1


def test_the_channel_reconnects_after_the_node_restarts(node, tmp_path):
    """In flight or not, a lost channel fails with ConnectError; a later call reconnects."""
    url = node.url
    script = """
import { createInterface } from 'node:readline';
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
const c = xio.client(process.argv[1], { WebSocket: CountingWebSocket, timeout: 10 });
const seen = {};
seen.before = (await c.get('json')).status;
const inFlight = c.get('slow', { query: { s: '5' } }).then((r) => r.status, failure);
out('restart');
await lines.next();                                       // the node is down
seen.inFlight = await inFlight;
try { seen.down = (await c.get('json')).status; } catch (error) { seen.down = failure(error); }
out('start');
await lines.next();                                       // the node is up again
seen.after = (await c.get('json')).status;
seen.sockets = sockets;
c.close();
input.close();
out(seen);
"""
    command = [*node_command(), "--input-type=module", "-e", PRELUDE + script]
    js = subprocess.Popen([*command, "ws" + url[len("http") :] + "/conf"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert json.loads(js.stdout.readline()) == "restart"
        node.proc.kill()  # at once: a drain would let the call in flight finish
        node.proc.wait(10)
        js.stdin.write("down\n")
        js.stdin.flush()
        assert json.loads(js.stdout.readline()) == "start"
        port = url.rsplit(":", 1)[1]
        node.args[node.args.index("--port") + 1] = port  # the same port: the client's URL
        node.start()
        js.stdin.write("up\n")
        js.stdin.flush()
        seen = json.loads(js.stdout.readline())
        assert js.wait(30) == 0
    finally:
        js.kill()
    assert seen["before"] == 200
    assert seen["inFlight"]["error"] == "ConnectError"
    assert seen["inFlight"]["nothingSent"] is False  # it had been sent: never sent again
    assert seen["down"] == {"error": "ConnectError", "nothingSent": True,
                            "message": seen["down"]["message"]}  # fmt: skip
    assert seen["after"] == 200
    assert seen["sockets"] >= 2


def test_http_failures_become_xio_errors_and_a_sent_request_is_never_resent():
    """Against servers of the script's own: garbage, a body cut short, a hang-up, bad JSON."""
    seen = run_js(
        """
import net from 'node:net';
const serve = (onConnection) => new Promise((resolve) => {
  const server = net.createServer(onConnection).listen(0, '127.0.0.1', () => resolve(server));
});
const ask = async (url, call = (c) => c.get('x')) => {
  const c = xio.client(url, { timeout: 10 });
  try { const r = await call(c); return { status: r.status }; } catch (error) { return failure(error); }
};
const answer = (text) => (socket) => socket.once('data', () => socket.end(text));
const garbage = await serve(answer('NOT HTTP AT ALL\\r\\n\\r\\n'));
const short = await serve(answer('HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\nabc'));
const badJson = await serve(answer('HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n' +
                                   'Content-Length: 5\\r\\nConnection: close\\r\\n\\r\\n{"a":'));
const hangUp = await serve((socket) => socket.once('data', () => socket.destroy()));
let goodCalls = 0;
const good = await serve((socket) => socket.once('data', () => { goodCalls += 1;
  socket.end('HTTP/1.1 204 No Content\\r\\nConnection: close\\r\\n\\r\\n'); }));
const refused = await serve(() => {});
const refusedUrl = `http://127.0.0.1:${refused.address().port}`;
refused.close();
const at = (server) => `http://127.0.0.1:${server.address().port}`;
out({
  garbage: await ask(at(garbage)),
  short: await ask(at(short)),
  badJson: await ask(at(badJson)),
  hangUp: await ask(at(hangUp)),
  refused: await ask(refusedUrl),
  failoverAfterRefused: await ask([refusedUrl, at(good)]),
  failoverAfterHangUp: await ask([at(hangUp), at(good)], (c) => c.post('x', { once: true })),
  goodCalls,
  allDown: await ask([refusedUrl, refusedUrl]),
});
for (const server of [garbage, short, badJson, hangUp, good]) server.close();
""",
    )
    assert seen["garbage"]["error"] == "ResponseError"
    assert seen["short"]["error"] == "ResponseError"
    assert seen["badJson"]["error"] == "ResponseError"
    assert seen["hangUp"]["error"] == "ConnectError" and seen["hangUp"]["nothingSent"] is False
    assert seen["refused"]["error"] == "ConnectError" and seen["refused"]["nothingSent"] is True
    assert seen["failoverAfterRefused"] == {"status": 204}
    # The hang-up came after the request was written: the next entry must not get it too.
    assert seen["failoverAfterHangUp"]["error"] == "ConnectError"
    assert seen["goodCalls"] == 1
    assert seen["allDown"]["error"] == "ConnectError"
    assert seen["allDown"]["message"].count("cannot reach GET http://127.0.0.1:") == 2  # each


def test_local_misuse_is_a_type_error_before_any_io():
    seen = run_js(
        """
const tries = {
  method: () => xio.client('http://127.0.0.1:9/a').request('GE T', 'x'),
  header: () => xio.client('http://127.0.0.1:9/a').get('x', { headers: { 'X-A': 'a\\r\\nB: c' } }),
  headerName: () => xio.client('http://127.0.0.1:9/a').get('x', { headers: { 'X A': '1' } }),
  timeout: () => xio.client('http://127.0.0.1:9/a', { timeout: -1 }),
  scheme: () => xio.client('ftp://127.0.0.1/a'),
  noUrls: () => xio.client([]),
  getBody: () => xio.client('http://127.0.0.1:9/a').request('GET', 'x', { data: 'body' }),
  noWebSocket: () => {  // as on Node 18, which has none
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
    delete globalThis.WebSocket;
    try { return xio.client('ws://127.0.0.1:9/a'); } finally { Object.defineProperty(globalThis, 'WebSocket', saved); }
  },
};
const seen = {};
for (const [name, attempt] of Object.entries(tries)) {
  try { await attempt(); seen[name] = 'no error'; } catch (error) { seen[name] = error.name; }
}
out(seen);
""",
    )
    assert seen == {name: "TypeError" for name in seen}
    assert len(seen) == 8


def test_the_types_and_the_package_describe_the_module():
    source = (JS / "xio.js").read_text(encoding="utf-8")
    exported = set(re.findall(r"^export (?:class|function|const) (\w+)", source, re.M))
    assert {"client", "Client", "TransportError", "ConnectError", "Timeout", "ResponseError",
            "version"} <= exported  # fmt: skip
    types = (JS / "xio.d.ts").read_text(encoding="utf-8")
    declared = set(re.findall(r"^export (?:declare )?(?:class|function|const) (\w+)", types, re.M))
    assert exported - {"_channel"} == declared
    package = json.loads((JS / "package.json").read_text(encoding="utf-8"))
    assert package["version"] == __version__
    assert f"export const version = '{__version__}';" in source
    shape = (package["type"], package["exports"], package["types"])
    assert shape == ("module", "./xio.js", "./xio.d.ts")
    subprocess.run(["node", "--check", str(JS / "xio.js")], check=True, timeout=30)
    assert Path(JS / "xio.js").stat().st_size < 64 * 1024
