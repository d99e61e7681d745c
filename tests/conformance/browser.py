"""The JavaScript client's conformance runner in headless Chromium, on a page of another origin.

Theory of operation. ``PageServer`` serves this folder (browser.html, runner.mjs) from a
threaded ``http.server`` on 127.0.0.1 and a free port: an origin that is not any node's, so
every call the page makes is a cross-origin one, readable only by the grace of the node's
``--cors`` (the conformance mesh starts its nodes with ``--cors <page origin>``). ``run_plan``
starts Chromium (tests/cdp.py), opens the page and evaluates one script in it: import the
client from the entry node (``<node>/_xio/client.js``, as a user's page does), import
runner.mjs from the page's own origin, run the plan (the contract of tests/test_conformance.py)
and hand back the results as JSON text. ``page_sees`` evaluates any other script there.
Chromium's log is kept beside the profile, in the test's folder.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ..cdp import Chromium, chromium_path
from ..conftest import wait_until

__all__ = ["PageServer", "page_sees", "run_plan"]

HERE = Path(__file__).resolve().parent
#: The whole plan runs in one evaluation: bounded, as every wait here is.
PLAN_TIMEOUT = 240.0


class _Quiet(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass  # the test's output is the page's results, not the static server's lines


class PageServer:
    """This folder, served at ``origin`` (http://127.0.0.1:PORT) until ``close``."""

    def __init__(self) -> None:
        handler = functools.partial(_Quiet, directory=str(HERE))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"{self.origin}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PageServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_chromium(folder: Path) -> Chromium:
    """Start a headless Chromium with its profile in ``folder`` (none: as tests/test_ui.py)."""
    binary = chromium_path()
    if binary is None and os.geteuid() == 0:  # scripts/check installs it where it may
        pytest.fail("no chromium on PATH: run scripts/check, which installs Debian's chromium")
    if binary is None:
        pytest.skip("no chromium on PATH and not root: install Debian's chromium to run this")
    return Chromium.start(folder / "profile", binary,
                          lambda ready, what: wait_until(ready, timeout=30, what=what))  # fmt: skip


def page_sees(page_server: PageServer, folder: Path, script: str):
    """Return the value of ``script`` (an async function's body) evaluated in the page."""
    chromium = start_chromium(folder)
    try:
        chromium.socket.sock.settimeout(PLAN_TIMEOUT + 30)  # one evaluation runs the plan
        page = chromium.open(page_server.url("browser.html"))
        ready = "document.readyState === 'complete' && location.origin"
        wait_until(lambda: page.evaluate(ready) == page_server.origin, timeout=30,
                   what="the conformance page to load")  # fmt: skip
        return page.evaluate(f"(async () => {{ {script} }})()")
    finally:
        chromium.close()


def run_plan(page_server: PageServer, folder: Path, plan: dict, node_url: str) -> dict:
    """Run ``plan`` in the page with the client served by the node at ``node_url``."""
    script = f"""
        const xio = await import({json.dumps(node_url + "/_xio/client.js")});
        const {{ runPlan }} = await import({json.dumps(page_server.url("runner.mjs"))});
        const timer = new Promise((_, fail) => setTimeout(
            () => fail(new Error('the plan took over {PLAN_TIMEOUT:g} s')), {PLAN_TIMEOUT * 1000:.0f}));
        return JSON.stringify(await Promise.race([runPlan({json.dumps(plan)}, xio), timer]));
    """
    return json.loads(page_sees(page_server, folder, script))
