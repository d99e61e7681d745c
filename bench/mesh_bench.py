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
    python bench/mesh_bench.py --baseline ../xio-old     # this code and a checkout, one run

With ``--baseline DIR`` a second line of three nodes runs the code in DIR (a checkout or a
``git worktree`` of an older commit) beside this one, and every load is run on both lines in
turn (the order alternating by round), so that both see the same machine. The table then also
gives each node's CPU time per request: steadier than req/s on a busy machine.
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
PATHS = {"local": "c", "1 hop": "b", "2 hops": "a"}
NODE_CPU = "0"


def start_node(
    name: str, port: int, state: Path, *args: str, pin: bool, root: Path = ROOT
) -> subprocess.Popen:
    """Start one node of the code in ``root``; its output goes to a log file beside its state."""
    # xio-node's module; checkouts before issue 9 had no xio/nodemain.py
    main = "xio.nodemain" if (root / "xio" / "nodemain.py").exists() else "xio.node.cli"
    command = [sys.executable, "-m", main, "--name", name, "--host", "127.0.0.1",
               "--port", str(port), "--state-dir", str(state / name), "--no-mdns",
               "--log-level", "warning", *args]  # fmt: skip
    if (root / "xio" / "node" / "logs.py").exists():  # since issue 11 the access log is apart
        command += ["--access-log", os.environ.get("XIO_BENCH_ACCESS_LOG", "off")]
    if pin and shutil.which("taskset"):
        command = ["taskset", "-c", NODE_CPU, *command]
    log = (state / f"{name}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(root)}
    # cwd too: ``-m`` puts the working directory first on the path
    return subprocess.Popen(
        command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=root
    )


def cpu_seconds(process: subprocess.Popen) -> float:
    """Return the CPU time a process has used (user and system)."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_line(root: Path, state: Path, pin: bool) -> tuple[dict, list]:
    """Start A - B - C from the code in ``root``; return their URLs and processes."""
    ports = {name: free_port() for name in "abc"}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    ws = {n: u.replace("http://", "ws://") for n, u in url.items()}
    hello = str(root / "examples" / "hello")
    processes = {}
    try:
        processes["c"] = start_node("c", ports["c"], state, "--app", hello, pin=pin, root=root)
        wait_for(url["c"] + "/_xio/node")
        processes["b"] = start_node("b", ports["b"], state, "--peers", ws["c"], pin=pin, root=root)
        processes["a"] = start_node("a", ports["a"], state, "--peers", ws["b"], pin=pin, root=root)
        wait_for(url["a"] + "/hello/")
    except BaseException:
        for process in processes.values():
            process.kill()
        raise
    return url, processes


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
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with, in one run")
    args = parser.parse_args(argv)
    pin = not args.no_pin and shutil.which("taskset") is not None
    roots = {"this": ROOT}
    if args.baseline is not None:
        if not (args.baseline / "xio" / "node" / "__init__.py").exists():
            parser.error(f"--baseline {args.baseline}: not an xio checkout")
        roots["baseline"] = args.baseline.resolve()
    lines: dict = {}
    with tempfile.TemporaryDirectory(prefix="xio-mesh-bench-") as state_dir:
        try:
            for label, root in roots.items():
                state = Path(state_dir) / label
                state.mkdir()
                lines[label] = start_line(root, state, pin)
            results = measure(lines, args.duration, args.rounds, pin)
        finally:
            for _, processes in lines.values():
                for process in processes.values():
                    process.kill()
                    process.wait(5)
    summary = summarize(results)
    if args.json:
        print(json.dumps({"machine": machine(), "results": summary}, indent=2))
    else:
        print(render(summary, args, pin, list(roots)))
    return 0


def measure(lines: dict, duration: float, rounds: int, pin: bool) -> dict:
    """Return ``{(line, path, connections): [figures of each round]}``."""
    results: dict = {}
    for index in range(rounds):
        order = list(lines) if index % 2 == 0 else list(reversed(lines))
        for connections, threads in ((1, 1), (50, 2)):
            for path, node in PATHS.items():
                for label in order:
                    url, processes = lines[label]
                    run_wrk(url[node] + "/hello", connections, threads, 1, pin)  # warm-up
                    before = {name: cpu_seconds(p) for name, p in processes.items()}
                    figures = run_wrk(url[node] + "/hello", connections, threads, duration, pin)
                    done = max(figures["rps"] * max(1, round(duration)), 1)
                    figures["cpu_us"] = {
                        name: (cpu_seconds(p) - before[name]) / done * 1e6
                        for name, p in processes.items()
                    }
                    results.setdefault((label, path, connections), []).append(figures)
                    print(f"  round {index + 1} {label:8s} {path:7s} c={connections:<3d} "
                          f"{figures['rps']:8,.0f} req/s  p50 {figures['p50_us']:7.0f} us  "
                          f"p99 {figures['p99_us']:8.0f} us  errors {figures['errors']}",
                          file=sys.stderr)  # fmt: skip
    return results


def summarize(results: dict) -> list[dict]:
    """Return one row per (line, path, connections): medians over the rounds."""
    rows = []
    for (label, path, connections), runs in results.items():
        cpu = {n: statistics.median(r["cpu_us"][n] for r in runs) for n in runs[0]["cpu_us"]}
        rows.append(
            {
                "line": label,
                "path": path,
                "connections": connections,
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_us": statistics.median(r["p50_us"] for r in runs),
                "p99_us": statistics.median(r["p99_us"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                # CPU per request of the nodes the path crosses, ingress first
                "cpu_us": [round(cpu[n]) for n in "abc"[2 - list(PATHS).index(path) :]],
            }
        )
    return rows


def render(rows: list[dict], args, pin: bool, labels: list[str]) -> str:
    """Return the table and the figures compared with the targets."""
    by = {(r["line"], r["path"], r["connections"]): r for r in rows}
    lines = [
        f"3 nodes A-B-C{' per line' if len(labels) > 1 else ''} on "
        f"{'CPU 0, wrk on CPU 1' if pin else 'any CPU'}; {args.duration:g} s per load, "
        f"{args.rounds} round(s), medians; CPU/req: each node on the path, ingress first",
        "",
        "| code | path | connections | req/s | p50 | p99 | CPU/req | errors |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["connections"], list(PATHS).index(r["path"]))):
        lines.append(f"| {r['line']} | {r['path']} | {r['connections']} | {r['rps']:,.0f} | "
                     f"{r['p50_us']:.0f} µs | {r['p99_us']:.0f} µs | "
                     f"{' / '.join(f'{c} µs' for c in r['cpu_us'])} | {r['errors']} |")  # fmt: skip
    for label in labels:
        local, one, two = (by[(label, p, 1)]["p50_us"] for p in PATHS)
        per_hop = (two - local) / 2
        share = by[(label, "2 hops", 50)]["rps"] / by[(label, "local", 50)]["rps"]
        lines += [
            "",
            f"- {label}: added p50 per hop at 1 connection: first hop {one - local:.0f} µs, "
            f"second hop {two - one:.0f} µs, mean **{per_hop:.0f} µs** (target <= 200 µs: "
            f"{'meets' if per_hop <= 200 else 'MISSES'})",
            f"- {label}: 2-hop req/s at 50 connections: **{share:.0%}** of local "
            f"(target >= 40 %: {'meets' if share >= 0.4 else 'MISSES'})",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
