"""One suite for every client: the cases of tests/conformance/cases.json, run by each runner.

A three-node mesh of real ``xio-node`` processes, A - B - C in a line, app ``conf``
(tests/conformance/app.py) on C only, so that a call through A crosses two hops. Each runner
gets a plan (the entries and the cases, the contract below) once, makes every call with its
client and reports what it saw; each case is then one test per runner, judged by
tests/conformance/check.py, so a failure names the client and the case.

The runner contract: a plan ``{"transport": "http" | "ws", "entries": {"a": URL, "b": ...,
"c": ..., "down": ...}, "cases": [...]}`` in (a dict, or a JSON file for runners in other
languages), ``{"results": [observation, ...]}`` out, one per case in order: ``{"id",
"status", "contentType", "headers": [[lower-case name, value], ...], "content"}`` (binary
content as ``{"$bytes": base64}``), or ``{"id", "error": "ConnectError" | "Timeout" |
"ResponseError" | "TransportError", "message"}``. URLs are the app's base URL on each node;
``down`` is a port where nothing listens.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conformance import browser, runners
from .conformance.check import problems
from .conftest import NODE, Process, wait_until
from .mesh import unused_port

HERE = Path(__file__).resolve().parent / "conformance"
CASES = json.loads((HERE / "cases.json").read_text(encoding="utf-8"))
APP = CASES["app"]
#: Every node of the mesh runs with these: a small body limit, for the 413 case.
NODE_ARGS = ["--max-body", "262144"]


class Mesh:
    """The nodes and the base URL of the app on each."""

    def __init__(self, tmp: Path, page: browser.PageServer) -> None:
        self.tmp = tmp
        self.page = page  # the browser runners' page, of its own origin: --cors lets it read
        self.processes: list[Process] = []
        self.urls: dict[str, str] = {}

    def start(self) -> Mesh:
        extra = [*NODE_ARGS, "--cors", self.page.origin]
        previous = None
        for name in ("c", "b", "a"):
            args = [*NODE, "--name", name, "--host", "127.0.0.1", "--port", "0",
                    "--state-dir", str(self.tmp / name), "--no-mdns", *extra]  # fmt: skip
            if name == "c":
                args += ["--app", str(HERE / "app.py")]
            if previous is not None:
                args += ["--peers", previous.url]
            process = Process(args, self.tmp / f"{name}.log").start()
            self.processes.append(process)
            self.urls[name] = process.url
            previous = process
        import xio

        def knows_app(url: str) -> bool:
            try:
                return APP in xio.client(url, timeout=2).get("/").content["apps"]
            except xio.TransportError:
                return False

        for url in self.urls.values():
            wait_until(lambda url=url: knows_app(url), timeout=20, what=f"{url} to route {APP}")
        self.urls["down"] = f"http://127.0.0.1:{unused_port()}"
        return self

    def entries(self, scheme: str = "http") -> dict[str, str]:
        """Return the app's base URL at each entry (``ws``: the same with the ws:// scheme)."""
        base = {name: f"{url}/{APP}" for name, url in self.urls.items()}
        if scheme == "ws":
            base = {name: "ws" + url[len("http") :] for name, url in base.items()}
        return base

    def plan(self, transport: str) -> dict:
        return {"transport": transport, "entries": self.entries(transport),
                "cases": CASES["cases"]}  # fmt: skip

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def python_runner(transport: str):
    def run(mesh: Mesh) -> dict:
        return runners.run_plan(mesh.plan(transport))

    return run


def external_runner(command: list[str], transport: str):
    """A runner in another language: ``command PLAN.json`` prints the results as JSON."""

    def run(mesh: Mesh) -> dict:
        plan = mesh.tmp / f"plan-{Path(command[-1]).stem}-{transport}.json"
        plan.write_text(json.dumps(mesh.plan(transport)), encoding="utf-8")
        done = subprocess.run([*command, str(plan)], capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
        assert done.returncode == 0, f"{command} failed:\n{done.stderr[-4000:]}"
        return json.loads(done.stdout)

    return run


def chromium_runner(transport: str):
    """The JavaScript client in headless Chromium, imported from entry a's /_xio/client.js."""

    def run(mesh: Mesh) -> dict:
        folder = mesh.tmp / f"chromium-{transport}"
        return browser.run_plan(mesh.page, folder, mesh.plan(transport), mesh.urls["a"])

    return run


def node_command() -> list[str]:
    """Return ``node`` with what it needs for a global WebSocket: a flag on Node 20 and 21.

    Node 18 has none; its js-node-ws run fails saying so (xio.js asks for a WebSocket).
    """
    try:
        version = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                 timeout=30).stdout  # fmt: skip
    except OSError:
        return ["node"]  # no node at all: the runner fails and says so
    major = int(version.lstrip("v").split(".", 1)[0] or 0)
    return ["node", "--experimental-websocket"] if major in (20, 21) else ["node"]


NODE_RUNNER = str(HERE / "run_node.mjs")

#: name -> (run(mesh) -> results, whether it runs in a browser). One entry per client runner.
RUNNERS = {
    "python-http": (python_runner("http"), False),
    "python-ws": (python_runner("ws"), False),
    "js-node-http": (external_runner(["node", NODE_RUNNER], "http"), False),
    "js-node-ws": (external_runner([*node_command(), NODE_RUNNER], "ws"), False),
    "js-chromium-http": (chromium_runner("http"), True),
    "js-chromium-ws": (chromium_runner("ws"), True),
    "php-http": (external_runner(["php", str(HERE / "run.php")], "http"), False),
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with browser.PageServer() as page:  # first: the nodes allow its origin (--cors)
        mesh = Mesh(tmp_path_factory.mktemp("conformance"), page).start()
        yield mesh
        mesh.close()


@pytest.fixture(scope="module")
def results(mesh):
    """Each runner's observations, made once per module and read by every case's test."""
    done: dict[str, dict[str, dict]] = {}

    def of(runner: str) -> dict[str, dict]:
        if runner not in done:
            run, _ = RUNNERS[runner]
            report = run(mesh)["results"]
            done[runner] = {seen["id"]: seen for seen in report}
        return done[runner]

    return of


@pytest.mark.parametrize("case", CASES["cases"], ids=[case["id"] for case in CASES["cases"]])
@pytest.mark.parametrize("runner", list(RUNNERS))
def test_case(runner, case, results):
    seen = results(runner).get(case["id"])
    assert seen is not None, f"{runner} reported nothing for {case['id']}"
    found = problems(case, seen, browser=RUNNERS[runner][1])
    assert not found, f"{runner}, {case['id']}: " + "; ".join(found)


def test_cases_are_unique_and_cover_the_issue():
    """The suite has what issue 12 lists: every verb, a custom method, ABOUT, the statuses."""
    ids = [case["id"] for case in CASES["cases"]]
    assert len(ids) == len(set(ids))
    calls = {case["call"] for case in CASES["cases"]}
    assert {"get", "post", "put", "patch", "delete", "about", "request"} <= calls
    statuses = {case["expect"].get("status") for case in CASES["cases"]}
    assert {400, 404, 405, 413, 500, 502, 504} <= statuses
    errors = {case["expect"].get("error") for case in CASES["cases"]}
    assert {"Timeout", "ConnectError"} <= errors
    assert any(isinstance(case.get("entry"), list) for case in CASES["cases"])
