"""The same app answers the same over HTTP here and through a two-node mesh.

An app's ``Response`` is turned into status, headers and body by one function
(``xio.responses.serialize``) for the HTTP writer and for ``res`` frames alike. Before, the
node's frame writer had rules of its own: a Content-Type set in the response's headers was
replaced by the default one (text/plain, JSON) and a 426 lost its ``Upgrade`` on the way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from xio.request import Response
from xio.responses import serialize

from .conftest import ROOT

SCRIPT = """
from gevent import monkey; monkey.patch_all(thread=False, queue=False)
import http.client, json, sys, time
import xio
from xio.request import Response

app = xio.app("shop")
answers = {
    "html": lambda req: Response("<p>hi</p>", headers={"Content-Type": "text/html"}),
    "packed": lambda req: Response({"a": 1}, headers={"Content-Type": "application/msgpack"}),
    "no_content": lambda req: Response("dropped", 204, content_type="text/plain"),
    "not_modified": lambda req: Response(b"", 304, headers={"ETag": '"v1"'}),
    "stream": lambda req: Response(iter([b"ab", "cd"]), content_type="text/plain"),
    "upgrade": lambda req: Response("use h2c", 426, headers={"Upgrade": "h2c"}),
    "proxy": lambda req: Response("who?", 407, headers={"Proxy-Authenticate": "Basic"}),
    "json": lambda req: {"price": 3},
}
for name, answer in answers.items():
    app.bind(f"www/{name}", answer)
first = xio.node("first", apps=[app])
second = xio.node("second", peers=[first.url])
deadline = time.monotonic() + 20
while not second.table.hosts_of("shop") and time.monotonic() < deadline:
    time.sleep(0.05)  # patched: the nodes run meanwhile

def get(url, path):
    host, port = url.split("//")[1].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path)
    got = connection.getresponse()
    body = got.read()
    headers = {k.lower(): v for k, v in got.getheaders()
               if k.lower() not in ("date", "x-xio-via", "content-length", "transfer-encoding")}
    return [got.status, headers, body.hex()]

print(json.dumps({name: {"here": get(first.url, f"/shop/{name}"),
                         "mesh": get(second.url, f"/shop/{name}")} for name in answers}))
second.stop()
first.stop()
"""


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("responses")
    script = folder / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(folder)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=90, cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_content_type_set_in_the_headers_survives_the_mesh(answers):
    here, mesh = answers["html"]["here"], answers["html"]["mesh"]
    assert here == mesh
    assert here[0] == 200 and here[1]["content-type"] == "text/html"
    assert bytes.fromhex(here[2]) == b"<p>hi</p>"


def test_a_body_is_encoded_as_the_headers_content_type_says_either_way(answers):
    here, mesh = answers["packed"]["here"], answers["packed"]["mesh"]
    assert here == mesh
    assert here[1]["content-type"] == "application/msgpack"
    assert bytes.fromhex(here[2]) == b"\x81\xa1a\x01"  # {"a": 1} in msgpack, not JSON


def test_a_426_keeps_its_upgrade_through_the_mesh(answers):
    here, mesh = answers["upgrade"]["here"], answers["upgrade"]["mesh"]
    assert here == mesh
    assert here[0] == 426 and here[1]["upgrade"] == "h2c"


@pytest.mark.parametrize("name", ["no_content", "not_modified", "stream", "proxy", "json"])
def test_other_answers_are_the_same_here_and_through_the_mesh(answers, name):
    assert answers[name]["here"] == answers[name]["mesh"]


def test_204_and_304_have_no_body_and_no_content_type(answers):
    for name in ("no_content", "not_modified"):
        status, headers, body = answers[name]["here"]
        assert status in (204, 304) and "content-type" not in headers and body == ""
    assert answers["not_modified"]["here"][1]["etag"] == '"v1"'


def test_a_stream_is_sent_whole_either_way(answers):
    assert bytes.fromhex(answers["stream"]["here"][2]) == b"abcd"


# -- the function itself, without sockets ----------------------------------------------------


def test_serialize_takes_the_content_type_from_the_headers_once():
    wire = serialize(Response("x", headers={"content-type": "text/html", "X-A": "1"}))
    assert [name.lower() for name, _ in wire.headers] == ["content-type", "x-a"]
    assert wire.headers[0] == ("Content-Type", "text/html")
    assert (wire.status, wire.body, wire.length) == (200, b"x", 1)


def test_serialize_drops_framing_and_hop_by_hop_fields_but_not_a_426_upgrade():
    sent = {"Content-Length": "1", "Connection": "close", "Upgrade": "h2c", "X-A": "1"}
    assert [n for n, _ in serialize(Response("x", 200, headers=sent)).headers] == [
        "Content-Type", "X-A"]  # fmt: skip
    assert [n for n, _ in serialize(Response("x", 426, headers=sent)).headers] == [
        "Content-Type", "Upgrade", "X-A"]  # fmt: skip
