"""Busy handlers with real xio-node processes: apps on threads, and the hub's watch."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import pytest

import xio

from .conftest import NODE, ROOT, wait_until

BUSY = str(ROOT / "tests/apps/busy")  # xio.app(__name__, threads=2)


def ws(process) -> str:
    return process.url.replace("http://", "ws://")


def get(process, path: str, **options) -> xio.Response:
    return xio.client(process.url, timeout=2).get(path, **options)


def link_to(process, name: str) -> dict | None:
    return next((p for p in get(process, "/_xio/peers").content if p["name"] == name), None)


def in_flight(process) -> int:
    return get(process, "/_xio/node").content["budgets"]["in_flight"]["used"]


def in_background(call) -> tuple[threading.Thread, dict]:
    done: dict = {}
    thread = threading.Thread(target=lambda: done.setdefault("response", call()), daemon=True)
    thread.start()
    return thread, done


def test_a_handler_spinning_on_threads_leaves_the_node_serving_the_mesh(start_node):
    a = start_node("a", "--app", BUSY)
    b = start_node("b", "--peers", ws(a))
    wait_until(lambda: "busy" in get(b, "/_xio/apps").content, what="b to learn of busy on a")
    link = wait_until(lambda: link_to(b, "a"), what="the link b - a")
    assert link["state"] == "established"

    spinning, spun = in_background(
        lambda: xio.client(a.url, timeout=30).get("/busy/spin", query={"s": "5"})
    )
    wait_until(lambda: in_flight(a) == 1, what="the spin to start on a")
    looks = 0
    while spinning.is_alive():  # each look would time out (2 s) if the spin held a's hub
        now = link_to(b, "a")
        assert now is not None and now["state"] == "established"
        assert abs(now["since"] - link["since"]) < 0.05  # the same link, never re-made
        assert get(a, "/busy/ping").content == "pong"  # a's other resources answer
        assert get(b, "/busy/ping").content == "pong"  # and across the link
        assert "busy" in get(b, "/_xio/apps").content  # its app stays in the mesh
        looks += 1
        time.sleep(0.3)
    spinning.join()
    assert spun["response"].status == 200
    assert spun["response"].content["spun"] == 5.0
    assert looks >= 3
    assert "link down" not in a.output() + b.output()


def test_threads_answer_504_at_the_deadline_and_503_when_the_queue_is_full(start_node):
    a = start_node("a", "--app", BUSY, "--threads", "busy=1")  # 1 runs, 4 wait
    overrun = xio.client(a.url, timeout=10).get(
        "/busy/spin", query={"s": "4"}, headers={"X-Xio-Timeout": "0.5"}
    )
    assert overrun.status == 504  # at its deadline; its thread spins on for 4 s
    assert overrun.content["description"] == "the app did not answer before the deadline"
    queued = [
        in_background(lambda: xio.client(a.url, timeout=30).get("/busy/spin", query={"s": "0.2"}))
        for _ in range(4)
    ]
    wait_until(lambda: in_flight(a) == 4, what="four requests to wait for the thread")
    refused = get(a, "/busy/ping")
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert "every thread of this app is busy" in refused.content["description"]
    assert get(a, "/_xio/node").content["refused"]["threads_full"] == 1
    for thread, done in queued:
        thread.join(30)
        assert done["response"].status == 200  # the queue drains once the overrun ends


def test_a_handler_holding_the_hub_is_named_in_a_warning(start_node):
    a = start_node("a", "--app", BUSY, "--threads", "busy=0")  # on the hub
    assert get(a, "/busy/spin", query={"s": "0.5"}).status == 200
    wait_until(lambda: "released the hub" in a.output(), what="the end of the warning")
    log = a.output()
    assert "WARNING xio.threads handler spin (" in log
    assert "apps/busy/app.py:" in log  # where the handler is
    assert re.search(r"for GET 'www/spin' has held the hub for \d+\.\d\d s: links and", log)
    assert "xio-node --threads busy=N" in log
    assert "handler spin" not in log.split("released the hub")[1]  # said once, then done


def test_bad_thread_counts_are_refused_at_start():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for flag, says in (("nosuch=2", "no app 'nosuch' is hosted"),
                       ("busy", "invalid APP=N value: 'busy'"),
                       ("busy=999", "invalid APP=N value: 'busy=999'")):  # fmt: skip
        done = subprocess.run([*NODE, "--app", BUSY, "--threads", flag, "--no-mdns", "--port",
                               "0"], capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
        assert done.returncode == 2, flag
        assert says in done.stderr
    with pytest.raises(ValueError, match="threads must be a whole number from 0 to 256"):
        xio.app("x", threads=-1)
