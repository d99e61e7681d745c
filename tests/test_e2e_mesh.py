"""End-to-end MACs across a tampering relay: A - R - B, A and B real xio-node processes.

R is an in-process node (tests/mesh.py) whose forwarder is wrapped, so a test can change the
frames it relays as a hostile relay would: once links are encrypted, only a node on the path
sees them. Whatever R changes of a request (body, a header, method, path, query), B refuses it
unserved and counts ``bad_e2e_mac``; whatever it changes of an answer (status, body, a
``Set-Cookie``), A answers 502 and counts it. R may still answer with an error of its own,
which reaches the client marked as unauthenticated, and it cannot replay a request it saw.
Every test runs twice: in an open mesh, and in a closed one where R is an admitted member
(membership decides who may link, not what a member may do to what it relays).
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from gevent.event import AsyncResult

import xio
from xio.peering.forwarding import Relay
from xio.peering.integrity import KEY_CACHE, REPLAY_PAIRS
from xio.peering.link_events import error_frame

from .conftest import NODE, ROOT, Process
from .http_wire import in_thread
from .mesh import InProcessMesh, call, wait_for, ws_url

WHOAMI = str(ROOT / "tests/apps/whoami")


class Tamper:
    """R's forwarder, wrapped: ``request`` / ``response`` change what it relays (None: honest)."""

    def __init__(self, node) -> None:
        self.request = None
        self.response = None
        self.data = None  # changes a piece of a streamed answer
        self.relayed: list = []  # every req frame R passed on, as it arrived
        forwarder = node.forwarder
        on_request, on_response = forwarder.on_request, forwarder.on_response
        on_data = forwarder.on_data

        def tampered_data(link, request_id, body, token):
            if self.data is not None and type(token) is Relay:
                body = self.data(body)
            on_data(link, request_id, body, token)

        forwarder.on_data = tampered_data

        def tampered_request(link, frame, deadline):
            self.relayed.append(frame)
            on_request(link, self.request(frame) if self.request else frame, deadline)

        def tampered_response(link, frame, token):
            if self.response is not None and type(token) is Relay:
                frame = self.response(frame)
            on_response(link, frame, token)

        forwarder.on_request = tampered_request
        forwarder.on_response = tampered_response


@dataclasses.dataclass
class Line:
    a: Process
    r: object  # the in-process xio.node.Node
    b: Process
    a_id: str
    b_id: str
    tamper: Tamper
    closed: bool  # a closed mesh: A, R and B all admitted by one authority


def start_process(tmp, name: str, *args: str) -> Process:
    command = [*NODE, "--name", name, "--host", "127.0.0.1", "--port", "0",
               "--state-dir", str(tmp / name), "--no-mdns", *args]  # fmt: skip
    return Process(command, tmp / f"{name}.log", env={"XIO_TEST_NODE": name}).start()


def http(process: Process, method: str, path: str, **options) -> xio.Response:
    """Call a node process from a real thread: the hub keeps serving R meanwhile."""
    return in_thread(xio.client(process.url, timeout=10).request, method, path, **options)


def forwarding(process: Process) -> dict:
    return http(process, "GET", "/_xio/node").content["forwarding"]


def orders(line: Line) -> int:
    return http(line.a, "GET", "/whoami/orders").content["orders"]


@pytest.fixture(scope="module", params=["open", "closed"])
def line(request, tmp_path_factory):
    """The line A - R - B, in an open mesh and in a closed one (R admitted like the others)."""
    tmp = tmp_path_factory.mktemp("e2e")
    closed = request.param == "closed"
    args: dict[str, list[str]] = {name: [] for name in "abr"}
    if closed:  # a member may still tamper with what it relays: the MACs hold it to account
        from .test_closed_mesh import Authority

        authority = Authority(tmp / "authority")
        for name in "abr":
            authority.admit(tmp / name, tmp / f"{name}.cert", name=name)
            args[name] = ["--mesh-pub", str(authority.pub), "--cert", str(tmp / f"{name}.cert")]
    mesh, processes = InProcessMesh(), []
    try:
        b = start_process(tmp, "b", "--app", WHOAMI, *args["b"])
        processes.append(b)
        admitted = (
            {"state_dir": tmp / "r", "mesh_pub": args["r"][1], "cert": args["r"][3]}
            if closed
            else {}
        )
        r = mesh.start("r", peers=[b.url.replace("http://", "ws://") + "/_xio/ws"],
                       **admitted)  # fmt: skip
        tamper = Tamper(r)
        a = start_process(tmp, "a", "--peers", ws_url(r), *args["a"])
        processes.append(a)
        wait_for(lambda: "whoami" in http(a, "GET", "/_xio/apps").content, "a to see whoami")
        ids = [http(p, "GET", "/_xio/node").content["id"] for p in (a, b)]
        yield Line(a, r, b, ids[0], ids[1], tamper, closed)
    finally:
        mesh.close()
        for process in processes:
            process.stop()


@pytest.fixture
def honest_after(line):
    """Leave R honest after each test, whatever it did in the test."""
    yield line
    line.tamper.request = line.tamper.response = line.tamper.data = None


def test_an_honest_relay_passes_requests_and_the_app_sees_the_ingress(honest_after):
    line = honest_after
    response = http(line.a, "GET", "/whoami/")
    assert response.status == 200
    assert response.content == {"node_id": line.a_id, "name": "a", "member": line.closed,
                                "via_mesh": True}  # fmt: skip
    assert response.headers["Set-Cookie"] == "session=genuine"
    assert response.headers["X-Xio-Via"] == f"{line.a_id},{line.r.id},{line.b_id}"
    before = orders(line)
    posted = http(line.a, "POST", "/whoami/orders", data=b"one pizza")
    assert posted.content == {"orders": before + 1, "last": "one pizza"}
    assert "bad_e2e_mac" not in forwarding(line.a) and "bad_e2e_mac" not in forwarding(line.b)
    budgets = http(line.b, "GET", "/_xio/node").content["budgets"]  # bounded, and shown
    assert budgets["e2e_replay_pairs"]["used"] >= 2
    assert budgets["e2e_replay_pairs"]["limit"] == REPLAY_PAIRS
    assert budgets["e2e_keys"] == {"used": 1, "limit": KEY_CACHE}  # A's key (R sent nothing)


def headers_with(frame, name: str, value: str) -> tuple:
    kept = tuple(pair for pair in frame.headers if pair[0].lower() != name.lower())
    return (*kept, (name, value))


REQUEST_CHANGES = {
    "body": lambda f: dataclasses.replace(f, body=b"ten pizzas"),
    "header": lambda f: dataclasses.replace(f, headers=headers_with(f, "X-Order", "9")),
    "added header": lambda f: dataclasses.replace(f, headers=headers_with(f, "Cookie", "a=1")),
    "method": lambda f: dataclasses.replace(f, method="PUT"),
    "query": lambda f: dataclasses.replace(f, query="express=1"),
    "app": lambda f: dataclasses.replace(f, app="whoami2"),
}


@pytest.mark.parametrize("change", REQUEST_CHANGES, ids=str)
def test_a_request_changed_by_the_relay_is_refused_by_the_destination(honest_after, change):
    line = honest_after
    before, counted = orders(line), forwarding(line.b).get("bad_e2e_mac", 0)
    line.tamper.request = REQUEST_CHANGES[change]
    response = http(line.a, "POST", "/whoami/orders", data=b"one pizza",
                    headers={"X-Order": "1"})  # fmt: skip
    assert response.status == 502
    assert "bad_e2e_mac" in response.content["description"]
    assert "altered" in response.content["description"]
    assert forwarding(line.b)["bad_e2e_mac"] == counted + 1  # B noticed
    line.tamper.request = None
    assert orders(line) == before  # the app never ran


def set_cookie(frame, value: str):
    headers = tuple(
        (name, value if name.lower() == "set-cookie" else text) for name, text in frame.headers
    )
    return dataclasses.replace(frame, headers=headers)


RESPONSE_CHANGES = {
    "status": lambda f: dataclasses.replace(f, status=203),
    "body": lambda f: dataclasses.replace(f, body=f.body.replace(b'"a"', b'"z"')),
    "set-cookie": lambda f: set_cookie(f, "session=stolen"),
    "added header": lambda f: dataclasses.replace(f, headers=(*f.headers, ("Location", "/x"))),
    "mac stripped": lambda f: dataclasses.replace(f, mac=None),
}


@pytest.mark.parametrize("change", RESPONSE_CHANGES, ids=str)
def test_an_answer_changed_by_the_relay_is_a_502_at_the_ingress(honest_after, change):
    line = honest_after
    counted = forwarding(line.a).get("bad_e2e_mac", 0)
    line.tamper.response = RESPONSE_CHANGES[change]
    response = http(line.a, "GET", "/whoami/")
    assert response.status == 502
    assert "bad_e2e_mac" in response.content["description"]
    assert "the response was altered on the way" in response.content["description"]
    assert "Set-Cookie" not in response.headers
    assert forwarding(line.a)["bad_e2e_mac"] == counted + 1  # A noticed


@pytest.mark.parametrize(
    "change",
    [lambda piece: piece.replace(b"line 1", b"line 9"), lambda piece: piece + b"extra\n",
     lambda piece: piece[:-1]],
    ids=["changed", "added", "dropped"],
)  # fmt: skip
def test_a_streamed_answer_changed_by_the_relay_never_arrives_whole(honest_after, change):
    line = honest_after
    assert http(line.a, "GET", "/whoami/lines", query={"n": "4"}).content == (
        b"line 0\nline 1\nline 2\nline 3\n"  # honest: whole, and checked at its end
    )
    counted = forwarding(line.a).get("bad_e2e_mac", 0)
    line.tamper.data = change
    with pytest.raises(xio.TransportError):  # the transfer is aborted: never a whole answer
        http(line.a, "GET", "/whoami/lines", query={"n": "4"})
    assert forwarding(line.a)["bad_e2e_mac"] == counted + 1


def test_an_error_made_up_by_the_relay_reaches_the_client_marked_unauthenticated(honest_after):
    line = honest_after
    counted = forwarding(line.a).get("e2e_unsigned_error", 0)
    line.tamper.response = lambda f: error_frame(503, "come back later", via=line.r.id)
    response = http(line.a, "GET", "/whoami/")
    assert response.status == 503  # as good as dropping the answer, which a relay can do
    assert response.content["description"] == (
        "come back later (said by a node on the way, unauthenticated)"
    )
    assert "Set-Cookie" not in response.headers
    # A GET the mesh failed goes again (README, Policies); each refusal is counted.
    attempts = int(response.headers["X-Xio-Attempts"])
    assert attempts == 3  # the first, then the default --retries 2
    assert forwarding(line.a)["e2e_unsigned_error"] == counted + attempts


def test_a_request_replayed_by_the_relay_is_refused_and_the_app_runs_once(honest_after):
    line = honest_after
    before, counted = orders(line), forwarding(line.b).get("e2e_replay", 0)
    line.tamper.relayed.clear()
    assert http(line.a, "POST", "/whoami/orders", data=b"one pizza").status == 200
    (seen,) = line.tamper.relayed
    link = line.r.links[line.b_id]
    answer = AsyncResult()  # R's forwarder sets a token that is not a Relay with the res
    request_id = link.session.open_request(answer, time.monotonic() + 10)
    link.send(dataclasses.replace(seen, request_id=request_id))  # as R received it from A
    replayed = answer.get(timeout=10)
    assert replayed.status == 502
    assert b"a replay" in replayed.body
    assert forwarding(line.b)["e2e_replay"] == counted + 1
    assert orders(line) == before + 1  # served once, not twice


def test_the_ingress_own_502_for_an_answer_over_its_body_budget_is_not_marked(in_process_mesh):
    big = xio.app("big")
    big.bind("www", lambda req: b"x" * (2 * 1024 * 1024))
    a, _ = in_process_mesh.line("a", "b", apps_at_end=[big])
    a.body_bytes.limit = 64 * 1024  # a's budget for bodies: the answer cannot be read
    response = call(a, "GET", "/big/")
    assert response.status == 502
    assert response.content["description"] == (
        "the response is too large for this node's body budget"
    )  # a's own verdict: not passed off as a relay's, nor as an altered answer
    assert "bad_e2e_mac" not in a.forwarding_counts()
