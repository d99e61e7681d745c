"""A streamed download through the mesh against the same download straight from its node.

Starts three xio-node processes on loopback (discovery off), a line A - B - C with the
streaming test app on C, and downloads ``--mib`` MiB from it twice per round: straight from C
(the app local to the node the client asks) and through A (two hops). Each body is hashed and
compared with what the app makes; each node's resident memory is sampled during the downloads.
Every loop is bounded: ``--rounds`` rounds, each download at most ``--timeout`` seconds.

    python bench/stream_bench.py               # 1 GiB, 2 rounds
    python bench/stream_bench.py --mib 256 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests/apps/stream"
PIECE = 64 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, state: Path, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "xio.nodemain", "--name", name, "--host", "127.0.0.1",
               "--port", str(port), "--state-dir", str(state / name), "--no-mdns",
               "--log-level", "warning", *args]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_xio/health/live", timeout=1)
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"node {name} did not start")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def expected_digest(pieces: int) -> str:
    digest = hashlib.sha256()
    for index in range(pieces):
        digest.update(bytes([index % 256]) * PIECE)
    return digest.hexdigest()


def download(port: int, path: str, timeout: float) -> tuple[str, int, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    connection.request("GET", path, headers={"X-Xio-Timeout": str(timeout)})
    response = connection.getresponse()
    digest, size = hashlib.sha256(), 0
    while piece := response.read(1 << 20):
        digest.update(piece)
        size += len(piece)
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"download of {path} passed {timeout} s")
    connection.close()
    return digest.hexdigest(), size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    options = parser.parse_args()
    pieces = options.mib * 1024 * 1024 // PIECE
    path = f"/stream/bytes?n={pieces}&size={PIECE}"
    want = expected_digest(pieces)
    with tempfile.TemporaryDirectory() as state:
        state = Path(state)
        c, c_port = start("c", state, "--app", str(APP))
        b, b_port = start("b", state, "--peers", f"ws://127.0.0.1:{c_port}/_xio/ws")
        a, a_port = start("a", state, "--peers", f"ws://127.0.0.1:{b_port}/_xio/ws")
        nodes = {"a": a, "b": b, "c": c}
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with urllib.request.urlopen(f"http://127.0.0.1:{a_port}/", timeout=2) as answer:
                    if "stream" in json.load(answer)["apps"]:
                        break
                time.sleep(0.2)
            baseline = {name: rss_kib(p.pid) for name, p in nodes.items()}
            peaks = dict(baseline)
            sampling = True

            def sample() -> None:
                while sampling:
                    for name, process in nodes.items():
                        peaks[name] = max(peaks[name], rss_kib(process.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            results = {"direct (C)": [], "2 hops (A-B-C)": []}
            for _ in range(options.rounds):  # interleaved: noise hits both alike
                for label, port in (("direct (C)", c_port), ("2 hops (A-B-C)", a_port)):
                    digest, size, seconds = download(port, path, options.timeout)
                    if digest != want or size != pieces * PIECE:
                        raise SystemExit(f"{label}: body differs ({size} bytes, {digest})")
                    results[label].append(size / seconds / 1e6)
            sampling = False
            sampler.join()
        finally:
            for process in nodes.values():
                process.terminate()
            for process in nodes.values():
                process.wait(15)
    print(f"{options.mib} MiB per download, {options.rounds} rounds, every body hash-checked")
    print("| path | MB/s per round | median |")
    print("|---|---|---:|")
    for label, rates in results.items():
        median = sorted(rates)[len(rates) // 2]
        print(f"| {label} | {', '.join(f'{r:.0f}' for r in rates)} | {median:.0f} |")
    print("| node | RSS before | peak RSS | growth |")
    print("|---|---:|---:|---:|")
    for name in nodes:
        growth = (peaks[name] - baseline[name]) / 1024
        print(f"| {name} | {baseline[name] / 1024:.1f} MiB | {peaks[name] / 1024:.1f} MiB "
              f"| {growth:.1f} MiB |")  # fmt: skip


if __name__ == "__main__":
    main()
