"""HTTP throughput and latency: the xio hello app against a bare gevent pywsgi hello world.

One run starts, each in its own subprocess on 127.0.0.1 (port 0, never a fixed port):

- ``bare``: gevent ``pywsgi.WSGIServer`` answering "Hello World" (text/plain, with
  Content-Length), ``TCP_NODELAY`` on accepted sockets, ``log=None``;
- ``xio``: ``examples/hello/app.py --host 127.0.0.1 --port 0 --log-level warning``, that is
  ``app.main()`` with the access log off (the bare server logs nothing either);
- ``xio+log`` (with ``--with-access-log``): the same at ``--log-level info`` with stderr
  sent to /dev/null, so the access-log line is formatted and written per request.

Each server gets a 1 s warm-up, then the same loads, one after the other: ``wrk
--latency`` at 1 connection (1 thread) and at 50 connections (2 threads), ``--duration``
seconds each. The loads are interleaved across servers and repeated ``--rounds`` times,
so bare and xio are measured seconds apart and share the machine's drift; the table gives
medians over rounds, and each xio/bare ratio is the median of per-round ratios. Without
wrk a bounded Python load generator (http.client on threads) stands in; it is much slower
than wrk, so its figures compare servers with each other only. With ``taskset`` and two
CPUs, the servers run on CPU 0 and the load on CPU 1 so that they do not fight for a core.

Usage: ``python bench/http_bench.py [--duration 5] [--rounds 3] [--with-access-log] [--json]``
(PYTHONPATH is set for the subprocesses from this file's location). Servers are killed on
the way out, even on error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELLO_APP = ROOT / "examples" / "hello" / "app.py"
HOST = "127.0.0.1"
BODY = b"Hello World"
SERVER_CPU, LOAD_CPU = 0, 1
LOADS = ((1, 1), (50, 2))  # (connections, wrk threads)
TARGET_RPS_RATIO = 0.85  # xio req/s at 50 connections >= 0.85 x bare
TARGET_P50_RATIO = 1.2  # xio p50 at 1 connection <= 1.2 x bare
START_TIMEOUT = 15.0
URL_LINE = re.compile(r"listening on (http://[\w.\[\]:]+)")


# -- the bare server (runs in its own process: ``http_bench.py --serve-bare``) -------------


def serve_bare() -> None:
    """Serve a bare pywsgi hello world on a free loopback port until killed."""
    from gevent.pywsgi import WSGIServer

    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]

    def hello(environ, start_response):
        start_response("200 OK", headers)
        return [BODY]

    class NoDelayServer(WSGIServer):
        def handle(self, sock, address):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)

    server = NoDelayServer((HOST, 0), hello, log=None)
    server.start()
    print(f"bare: listening on http://{HOST}:{server.server_port}", file=sys.stderr, flush=True)
    server.serve_forever()


# -- running servers ----------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    prints_url: bool  # else it is given a free port and its stderr goes to /dev/null


def server_specs(with_access_log: bool) -> list[ServerSpec]:
    """Return the servers to compare, in the order they run."""
    py = sys.executable
    specs = [
        ServerSpec("bare", [py, str(Path(__file__).resolve()), "--serve-bare"], True),
        ServerSpec(
            "xio",
            [py, str(HELLO_APP), "--host", HOST, "--port", "0", "--log-level", "warning"],
            True,
        ),
    ]
    if with_access_log:
        specs.append(
            ServerSpec(
                "xio+log",
                [py, str(HELLO_APP), "--host", HOST, "--port", "{port}", "--log-level", "info"],
                False,
            )
        )
    return specs


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def get_once(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url`` once on a fresh connection; return status and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class RunningServer:
    """A server subprocess; ``url`` once it answers, ``stop()`` always kills it."""

    def __init__(self, spec: ServerSpec, pin: bool) -> None:
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._pin = pin
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def start(self) -> str:
        argv = list(self.spec.argv)
        if not self.spec.prints_url:
            port = free_port()
            argv = [a.replace("{port}", str(port)) for a in argv]
            self.url = f"http://{HOST}:{port}"
        if self._pin:
            argv = ["taskset", "-c", str(SERVER_CPU), *argv]
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr if self.spec.prints_url else subprocess.DEVNULL,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode}: {self._log()}"
                )
            if not self.url:
                found = URL_LINE.search(self._log())
                self.url = found.group(1) if found else ""
            if self.url:
                try:
                    status, body = get_once(self.url)
                except OSError:
                    pass
                else:
                    if status != 200 or body != BODY:
                        raise RuntimeError(f"{self.spec.name} answered {status} {body[:80]!r}")
                    return self.url
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.spec.name} did not answer within {START_TIMEOUT}s: {self._log()}"
        )

    def cpu_seconds(self) -> float | None:
        """Return the CPU time (user + system) the server has used, or None if unknown."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except (OSError, AttributeError):
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _log(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._stderr.close()


# -- load ---------------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    connections: int
    rps: float
    p50_us: float
    p99_us: float
    requests: int = 0
    errors: int = 0  # socket errors, timeouts and non-2xx answers
    cpu_us: float | None = None  # server CPU time per request
    other_cpu_pct: float | None = None  # CPU used by anything but this server and the load
    tool: str = "wrk"
    round: int = 0
    extra: dict = field(default_factory=dict)


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text: str) -> float:
    """Convert a wrk duration such as ``118.00us``, ``1.20ms`` or ``2.00s`` to microseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not found:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(output: str) -> dict:
    """Return req/s, p50, p99 (µs), requests and errors from ``wrk --latency`` output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(n) for n in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return {
        "rps": float(rps.group(1)),
        "p50_us": to_us(p50.group(1)),
        "p99_us": to_us(p99.group(1)),
        "requests": int(total.group(1)),
        "errors": errors,
    }


def run_wrk(url: str, connections: int, threads: int, duration: float, pin: bool) -> dict:
    """Run wrk against ``url`` for ``duration`` seconds and return its parsed figures."""
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s"]
    argv += ["--latency", "--timeout", "2s", url + "/"]
    if pin:
        argv = ["taskset", "-c", str(LOAD_CPU), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def run_python_load(url: str, connections: int, duration: float, pin: bool) -> dict:
    """Keep ``connections`` keep-alive connections busy for ``duration`` seconds."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + duration
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def worker(index: int) -> None:
        conn = None
        mine = latencies[index]
        while time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=2.0)
                start = time.perf_counter()
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                mine.append(time.perf_counter() - start)
                if resp.status != 200 or body != BODY:
                    errors[index] += 1
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    old_affinity = os.sched_getaffinity(0) if pin else None
    if pin:
        os.sched_setaffinity(0, {LOAD_CPU})  # this thread; the workers inherit it
    try:
        started = time.monotonic()
        workers = [
            threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(duration + 10)
        elapsed = time.monotonic() - started
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
    flat = sorted(x for chunk in latencies for x in chunk)
    if not flat:
        raise RuntimeError(f"no request to {url} succeeded")

    def pct(q: float) -> float:
        return flat[min(len(flat) - 1, int(q * len(flat)))] * 1e6

    return {
        "rps": len(flat) / elapsed,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "requests": len(flat),
        "errors": sum(errors),
    }


def system_busy_seconds() -> float | None:
    """Return the CPU time all CPUs have spent busy since boot, or None if unknown."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """Return the CPU time of reaped children (the load generator, once it exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    url: str, connections: int, threads: int, duration: float, pin: bool, use_wrk: bool
) -> dict:
    """Run one load of ``connections`` against ``url``."""
    if use_wrk:
        return run_wrk(url, connections, threads, duration, pin)
    return run_python_load(url, connections, duration, pin)


def measure_with_cpu(
    server: RunningServer, connections: int, threads: int, duration: float, pin: bool, wrk: bool
) -> dict:
    """Run one load and add the server's CPU per request and the CPU others used meanwhile.

    "Others" is all busy CPU time (from /proc/stat, steal included) less the server's and
    the load generator's; other jobs on a shared machine show up there and make the
    figures of that load suspect.
    """
    server_before, busy_before = server.cpu_seconds(), system_busy_seconds()
    load_before, started = children_cpu_seconds(), time.monotonic()
    if not wrk:
        load_before = time.process_time()
    figures = measure(server.url, connections, threads, duration, pin, wrk)
    elapsed = time.monotonic() - started
    load_cpu = (children_cpu_seconds() if wrk else time.process_time()) - load_before
    server_after, busy_after = server.cpu_seconds(), system_busy_seconds()
    if server_before is None or server_after is None:
        return figures
    server_cpu = server_after - server_before
    if figures["requests"]:
        figures["cpu_us"] = server_cpu / figures["requests"] * 1e6
    if busy_before is not None and busy_after is not None:
        other = busy_after - busy_before - server_cpu - load_cpu
        figures["other_cpu_pct"] = max(0.0, other) / (elapsed * (os.cpu_count() or 1)) * 100
    return figures


# -- report -------------------------------------------------------------------------------


def summarize(results: list[Result]) -> list[Result]:
    """Return one result per (server, connections): the median over rounds."""
    keys: dict[tuple[str, int], list[Result]] = {}
    for r in results:
        keys.setdefault((r.server, r.connections), []).append(r)
    rows = []
    for (server, conns), group in keys.items():
        rows.append(
            Result(
                server,
                conns,
                statistics.median(r.rps for r in group),
                statistics.median(r.p50_us for r in group),
                statistics.median(r.p99_us for r in group),
                sum(r.requests for r in group),
                sum(r.errors for r in group),
                _median_or_none([r.cpu_us for r in group]),
                _max_or_none([r.other_cpu_pct for r in group]),
                group[0].tool,
                len(group),
            )
        )
    return rows


def _max_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _meets(value: float, target: float | None, at_least: bool) -> bool | None:
    if target is None:
        return None
    return value >= target if at_least else value <= target


def ratios(results: list[Result]) -> list[dict]:
    """Compare each xio variant with bare against the targets, round by round.

    Within a round the servers are measured seconds apart, so a ratio taken inside one
    round shares most of the machine's drift; the median of those ratios is reported.
    """
    by = {(r.round, r.server, r.connections): r for r in results}
    rounds = sorted({r.round for r in results})
    checks = (
        ("req/s at 50 connections", 50, "rps", TARGET_RPS_RATIO, True),
        ("p50 at 1 connection", 1, "p50_us", TARGET_P50_RATIO, False),
        ("server CPU per request at 50 connections", 50, "cpu_us", None, False),
    )
    out = []
    for name in sorted({r.server for r in results} - {"bare"}):
        for metric, conns, attr, target, at_least in checks:
            values = [
                getattr(by[(n, name, conns)], attr) / getattr(by[(n, "bare", conns)], attr)
                for n in rounds
                if (n, name, conns) in by
                and (n, "bare", conns) in by
                and getattr(by[(n, name, conns)], attr) is not None
                and getattr(by[(n, "bare", conns)], attr)
            ]
            if not values:
                continue
            value = statistics.median(values)
            out.append(
                {
                    "server": name,
                    "metric": metric,
                    "ratio": value,
                    "per_round": values,
                    "target": None if target is None else f"{'>=' if at_least else '<='} {target}",
                    "ok": _meets(value, target, at_least),
                }
            )
    return out


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}%"


def fmt_us(us: float) -> str:
    """Format a latency in µs below a millisecond, else in ms."""
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def table(rows: list[Result], comparisons: list[dict]) -> str:
    """Return the results as a Markdown table followed by the ratios."""
    lines = [
        "| server | connections | req/s | p50 | p99 | server CPU/req | others' CPU (max) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = "?" if r.cpu_us is None else f"{r.cpu_us:.0f} µs"
        lines.append(
            f"| {r.server} | {r.connections} | {r.rps:,.0f} | {fmt_us(r.p50_us)} "
            f"| {fmt_us(r.p99_us)} | {cpu} | {_pct(r.other_cpu_pct)} | {r.errors} |"
        )
    lines.append("")
    for c in comparisons:
        verdict = "information only" if c["ok"] is None else "meets" if c["ok"] else "MISSES"
        goal = f"target {c['target']}: " if c["target"] else ""
        spread = ""
        if len(c["per_round"]) > 1:
            spread = f", rounds {min(c['per_round']):.2f}-{max(c['per_round']):.2f}"
        lines.append(
            f"- {c['server']}/bare {c['metric']}: **{c['ratio']:.2f}x** "
            f"(median of per-round ratios{spread}; {goal}{verdict})"
        )
    return "\n".join(lines)


def machine() -> dict:
    """Describe the machine the figures come from."""
    import gevent

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "gevent": gevent.__version__,
    }


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load (default 5)")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="warm-up seconds per server (default 1)"
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; medians reported (default 3)"
    )
    p.add_argument("--with-access-log", action="store_true", help="also run xio at info level")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and load with taskset")
    p.add_argument(
        "--max-other-cpu",
        type=float,
        default=5.0,
        metavar="PCT",
        help="measure a load again when other processes used more than PCT%% of the CPUs "
        "meanwhile (default 5)",
    )
    p.add_argument(
        "--retries", type=int, default=2, help="how many times to measure again (default 2)"
    )
    p.add_argument("--python-load", action="store_true", help="use the Python load generator")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_bare:
        serve_bare()
        return 0

    use_wrk = shutil.which("wrk") is not None and not args.python_load
    pin = (
        not args.no_pin
        and shutil.which("taskset") is not None
        and {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0)
    )
    duration = max(1.0, args.duration)
    specs = server_specs(args.with_access_log)
    results: list[Result] = []
    servers = [RunningServer(spec, pin) for spec in specs]
    try:
        for server in servers:  # all up at once; only the one under load uses a CPU
            server.start()
            if args.warmup > 0:
                measure(server.url, 10, 1, args.warmup, pin, use_wrk)
        for round_no in range(1, max(1, args.rounds) + 1):
            for connections, threads in LOADS:
                for server in servers:
                    for attempt in range(max(0, args.retries) + 1):
                        figures = measure_with_cpu(
                            server, connections, threads, duration, pin, use_wrk
                        )
                        other = figures.get("other_cpu_pct")
                        if other is None or other <= args.max_other_cpu:
                            break
                        if attempt == args.retries:
                            break
                        if not args.json:
                            print(
                                f"  round {round_no} {server.spec.name} c={connections}: other "
                                f"processes used {other:.0f}% of the CPUs; measuring again",
                                file=sys.stderr,
                                flush=True,
                            )
                        time.sleep(2.0)
                    r = Result(
                        server.spec.name,
                        connections,
                        tool="wrk" if use_wrk else "python",
                        round=round_no,
                        **figures,
                    )
                    results.append(r)
                    if not args.json:
                        print(
                            f"  round {round_no} {r.server:8} c={connections:<3} "
                            f"{r.rps:9,.0f} req/s  p50 {fmt_us(r.p50_us):>9}  "
                            f"p99 {fmt_us(r.p99_us):>9}  cpu/req "
                            f"{'?' if r.cpu_us is None else f'{r.cpu_us:.0f} µs'}  "
                            f"others {_pct(r.other_cpu_pct)}",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        for server in servers:
            server.stop()

    rows = summarize(results)
    comparisons = ratios(results)
    setup = {
        "load": "wrk --latency"
        if use_wrk
        else "python http.client threads" + ("" if shutil.which("wrk") else " (wrk missing)"),
        "pinned": f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU} (taskset)" if pin else "no",
        "duration_s": duration,
        "warmup_s": args.warmup,
        "rounds": max(1, args.rounds),
        "loads": [{"connections": c, "threads": t} for c, t in LOADS],
        "other_cpu_pct_max": _max_or_none([r.other_cpu_pct for r in results]),
    }
    if args.json:
        print(
            json.dumps(
                {"machine": machine(), "setup": setup, "rows": [asdict(r) for r in rows],
                 "ratios": comparisons, "raw": [asdict(r) for r in results]},
                indent=2,
            )
        )  # fmt: skip
        return 0
    info = machine()
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"gevent {info['gevent']}"
    )
    print(
        f"load: {setup['load']}, {duration:g} s per load after a {args.warmup:g} s warm-up, "
        f"{setup['rounds']} round(s) (medians); pinned: {setup['pinned']}"
    )
    others = sorted(r.other_cpu_pct for r in results if r.other_cpu_pct is not None)
    if others:
        print(
            f"other processes' CPU during the loads: median {others[len(others) // 2]:.0f}%, "
            f"max {others[-1]:.0f}% of the machine (a quiet machine shows ~0-3%)"
        )
    print()
    print(table(rows, comparisons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
