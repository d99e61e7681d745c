"""Discovery benchmark: from a node's start to its first request answered through the mesh.

In a throwaway LAN of network namespaces (``tests/netns.py``; needs root and iproute2):
node 1 hosts ``tests/apps/inventory``; then, ``--runs`` times, node 2 starts in another
namespace with no ``--peers`` and a fresh identity, and a poller inside that namespace
asks node 2 for ``/inventory/`` every 20 ms. The figure is the time from node 2's start
(just before its process is spawned) to the first 200. Node 2 is stopped (SIGTERM, so it
says goodbye) between runs. Multicast never leaves the namespaces.

    python bench/discovery_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netns import Lan, netns_unavailable  # noqa: E402

PORT = 7700  # each node is alone in its namespace
NODE = [sys.executable, "-m", "xio.nodemain", "--host", "0.0.0.0", "--port", str(PORT)]


def node_command(name: str, state: Path, interface: str, *extra: str) -> list[str]:
    return [*NODE, "--name", name, "--state-dir", str(state), "--mdns",
            "--mdns-interface", interface, "--log-level", "warning", *extra]  # fmt: skip


def poll(url: str, timeout: float, started: float) -> float | None:
    """Return seconds from ``started`` until ``url`` answers 200 (polled every 20 ms)."""
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.02)
    return None


def run_inside(args: argparse.Namespace) -> int:
    """In node 2's namespace: start node 2, time its first answered request, stop it."""
    started = time.monotonic()
    log = open(args.log, "ab")  # noqa: SIM115
    node = subprocess.Popen(node_command("n2", Path(args.state), args.interface),
                            stdout=log, stderr=log, env=os.environ)  # fmt: skip
    try:
        elapsed = poll(f"http://127.0.0.1:{PORT}/inventory/", args.timeout, started)
        print("timeout" if elapsed is None else f"{elapsed:.4f}")
        return 0 if elapsed is not None else 1
    finally:
        node.terminate()
        node.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--interface", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return run_inside(args)
    why = netns_unavailable()
    if why:
        print(f"discovery_bench: {why}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XIO_TEST_NODE": "n1"}
    work = Path(tempfile.mkdtemp(prefix="xio-discovery-bench-"))
    lan = Lan()
    first = None
    times: list[float] = []
    try:
        host1, host2 = lan.add_host(), lan.add_host()
        log1 = open(work / "n1.log", "wb")  # noqa: SIM115
        inventory = str(ROOT / "tests/apps/inventory")
        first = subprocess.Popen(
            host1.command(*node_command("n1", work / "n1", host1.interface, "--app", inventory)),
            stdout=log1, stderr=log1, env=env,
        )  # fmt: skip
        time.sleep(3.0)  # node 1 is up and its name registered (probing takes ~1.7 s)
        for run in range(args.runs):
            done = subprocess.run(
                host2.command(sys.executable, __file__, "--inside", "--state",
                              str(work / f"n2-{run}"), "--interface", host2.interface,
                              "--log", str(work / "n2.log"), "--timeout", str(args.timeout)),
                capture_output=True, text=True, env=env, timeout=args.timeout + 20,
            )  # fmt: skip
            answer = done.stdout.strip()
            try:
                times.append(float(answer))
                print(f"run {run + 1}: {float(answer):.3f} s")
            except ValueError:
                print(f"run {run + 1}: failed ({answer or done.stderr.strip()[-300:]})")
            time.sleep(1.0)  # node 2's goodbye reaches node 1
    finally:
        if first is not None:
            first.terminate()
            first.wait(10)
        lan.close()
    if times:
        print(f"median {statistics.median(times):.3f} s over {len(times)} runs: "
              + ", ".join(f"{t:.3f}" for t in times))  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return 0 if len(times) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
