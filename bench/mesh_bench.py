"""Mesh forwarding cost: one request served locally, through one hop and through two hops.

Three real xio-node processes in a line, A - B - C, with the hello app on C only:

    local   client -> C                (C answers from its own app)
    1 hop   client -> B -> C
    2 hops  client -> A -> B -> C

Each is loaded with wrk at 1 connection and at 50, interleaved over several rounds, and
the table gives req/s, p50 and p99 (medians over rounds), the per-hop added p50 and the
2-hop req/s as a share of local. Targets (issue 3): per-hop added p50 <= 200 us; 2-hop
req/s at 50 connections >= 40 % of local. Nodes run on CPU 0 and wrk on CPU 1 (taskset),
all on loopback with free ports and discovery off; every load is bounded in time.

    python bench/mesh_bench.py [--duration 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_bench import free_port, machine, run_wrk  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello"
PATHS = {"local": "c", "1 hop": "b", "2 hops": "a"}
NODE_CPU = "0"


def start_node(name: str, port: int, state: Path, *args: str, pin: bool) -> subprocess.Popen:
    """Start one node in the background; its output goes to a log file beside its state."""
    command = [sys.executable, "-m", "xio.node.cli", "--name", name, "--host", "127.0.0.1",
               "--port", str(port), "--state-dir", str(state / name), "--no-mdns",
               "--log-level", "warning", *args]  # fmt: skip
    if pin and shutil.which("taskset"):
        command = ["taskset", "-c", NODE_CPU, *command]
    log = (state / f"{name}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)


def wait_for(url: str, seconds: float = 20.0) -> None:
    """Wait until ``url`` answers 200."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {seconds}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    pin = not args.no_pin and shutil.which("taskset") is not None
    ports = {name: free_port() for name in "abc"}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes = []
    with tempfile.TemporaryDirectory(prefix="xio-mesh-bench-") as state_dir:
        state = Path(state_dir)
        try:
            processes.append(start_node("c", ports["c"], state, "--app", str(HELLO), pin=pin))
            wait_for(url["c"] + "/_xio/node")
            ws = {n: u.replace("http://", "ws://") for n, u in url.items()}
            processes.append(start_node("b", ports["b"], state, "--peers", ws["c"], pin=pin))
            processes.append(start_node("a", ports["a"], state, "--peers", ws["b"], pin=pin))
            wait_for(url["a"] + "/hello/")
            results = measure(url, args.duration, args.rounds, pin)
        finally:
            for process in processes:
                process.kill()
                process.wait(5)
    summary = summarize(results)
    if args.json:
        print(json.dumps({"machine": machine(), "results": summary}, indent=2))
    else:
        print(render(summary, args, pin))
    return 0


def measure(url: dict, duration: float, rounds: int, pin: bool) -> dict:
    """Return ``{(path, connections): [figures of each round]}``."""
    results: dict = {}
    for index in range(rounds):
        for connections, threads in ((1, 1), (50, 2)):
            for path, node in PATHS.items():
                run_wrk(url[node] + "/hello", connections, threads, 1, pin)  # warm-up
                figures = run_wrk(url[node] + "/hello", connections, threads, duration, pin)
                results.setdefault((path, connections), []).append(figures)
                print(f"  round {index + 1} {path:7s} c={connections:<3d} "
                      f"{figures['rps']:8,.0f} req/s  p50 {figures['p50_us']:7.0f} us  "
                      f"p99 {figures['p99_us']:8.0f} us  errors {figures['errors']}",
                      file=sys.stderr)  # fmt: skip
    return results


def summarize(results: dict) -> list[dict]:
    """Return one row per (path, connections): medians over the rounds."""
    rows = []
    for (path, connections), runs in results.items():
        rows.append(
            {
                "path": path,
                "connections": connections,
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_us": statistics.median(r["p50_us"] for r in runs),
                "p99_us": statistics.median(r["p99_us"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
            }
        )
    return rows


def render(rows: list[dict], args, pin: bool) -> str:
    """Return the table and the figures compared with the targets."""
    by = {(r["path"], r["connections"]): r for r in rows}
    lines = [
        f"3 nodes A-B-C on {'CPU 0, wrk on CPU 1' if pin else 'any CPU'}; "
        f"{args.duration:g} s per load, {args.rounds} round(s), medians",
        "",
        "| path | connections | req/s | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['path']} | {r['connections']} | {r['rps']:,.0f} | "
                     f"{r['p50_us']:.0f} µs | {r['p99_us']:.0f} µs | {r['errors']} |")  # fmt: skip
    local, one, two = (by[(p, 1)]["p50_us"] for p in PATHS)
    per_hop = (two - local) / 2
    share = by[("2 hops", 50)]["rps"] / by[("local", 50)]["rps"]
    lines += [
        "",
        f"- added p50 per hop at 1 connection: first hop {one - local:.0f} µs, second hop "
        f"{two - one:.0f} µs, mean **{per_hop:.0f} µs** (target <= 200 µs: "
        f"{'meets' if per_hop <= 200 else 'MISSES'})",
        f"- 2-hop req/s at 50 connections: **{share:.0%}** of local (target >= 40 %: "
        f"{'meets' if share >= 0.4 else 'MISSES'})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
