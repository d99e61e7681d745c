"""Issue 7's attacks against a real victim node, by hand: its memory and honest latency.

    python bench/attack_bench.py                        # every attack; a markdown table
    python bench/attack_bench.py --attack sybil-flood   # one (repeatable)
    python bench/attack_bench.py --today                # for code without issue 7's flags

For each attack: start V (apps inventory and slow) and H (app slow, dials V) on 127.0.0.1
port 0 with discovery off, note V's VmRSS, run the attack of tests/hostile.py against V for a
bounded time while a loop of honest requests runs (H to V's app, V's own app, V to H's app,
each with ``X-Xio-Timeout: 3`` and a client timeout of 4.5 s) and H's /_xio/apps is watched,
then close the attacker and note V's VmRSS again. The table gives memory before / peak
(VmHWM: since the process started) / after, the honest requests' p50, p99 and max and how
many were not answered 200, and whether V's app stayed in H's mesh the whole time.

``--today`` drops the flags the fixed node has and the old code lacks, and sizes the attacks
for the old defaults (4100 sybils for a 4096-record store, a 60 s record lifetime), as
``XIO_ATTACK_TODAY=1`` does for tests/test_attacks.py. Every process is killed on the way
out, even on error; every attack is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import xio  # noqa: E402
from tests.hostile import (  # noqa: E402
    HostilePeer,
    Key,
    PeerError,
    Refused,
    padded_ping,
    record_frame,
    ws_header,
)  # fmt: skip

INVENTORY = str(ROOT / "tests/apps/inventory")
SLOW = str(ROOT / "tests/apps/slow")
MiB = 1024 * 1024
DEADLINE = 3.0
NEW_FLAGS = frozenset({
    "--max-inbound-links", "--handshake-rate", "--store-max-records", "--store-max-bytes",
    "--record-max-size", "--origin-quota", "--max-in-flight", "--body-budget",
    "--link-queue-bytes", "--write-timeout", "--max-ttl", "--min-originate-interval",
    "--record-lifetime",
})  # fmt: skip
LIMIT_NOFILE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execvp(sys.argv[2], sys.argv[2:])"
)


class Node:
    """One xio-node process on a free loopback port, its log in ``folder``."""

    def __init__(self, name: str, folder: Path, args: list[str], prefix: list[str]) -> None:
        self.name = name
        log_path = folder / f"{name}.log"
        command = [*prefix, sys.executable, "-m", "xio.nodemain", "--name", name,
                   "--host", "127.0.0.1", "--port", "0", "--state-dir", str(folder / name),
                   "--no-mdns", "--log-level", "warning", *args]  # fmt: skip
        # Allocations of 1 MiB and more are unmapped when freed (glibc's threshold is pinned):
        # the RSS after an attack is then what the node still holds.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XIO_TEST_NODE": name,
               "MALLOC_MMAP_THRESHOLD_": str(MiB)}  # fmt: skip
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=env)  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"listening on (\S+)", log_path.read_text(errors="replace"))
            if found:
                self.url = found[1]
                self.port = int(self.url.rsplit(":", 1)[1])
                self.ws = self.url.replace("http://", "ws://")
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start: {log_path.read_text(errors='replace')}")

    def get(self, path: str):
        return xio.client(self.url, timeout=10).get(path).content

    def memory(self, field: str) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            line = next(line for line in status if line.startswith(field + ":"))
        return int(line.split()[1]) / 1024

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case an attack left it stopped
            self.proc.kill()
        self.proc.wait(5)


class Honest(threading.Thread):
    """Honest requests one after another until stopped; at most 5000 and 600 s."""

    def __init__(self, targets: list) -> None:
        super().__init__(daemon=True)
        self.targets = targets
        self.results: list[tuple[float, float, object]] = []  # (start, seconds, status)
        self.stopped = threading.Event()

    def run(self) -> None:
        clients = {}
        until = time.monotonic() + 600
        while not self.stopped.is_set() and time.monotonic() < until and len(self.results) < 5000:
            for node, path in list(self.targets):
                client = clients.setdefault(node.url, xio.client(node.url, timeout=DEADLINE + 1.5))
                started = time.monotonic()
                try:
                    status = client.get(path, headers={"X-Xio-Timeout": str(DEADLINE)}).status
                except Exception as exc:
                    status = type(exc).__name__
                self.results.append((started, time.monotonic() - started, status))
            self.stopped.wait(0.1)


class Bench:
    """What an attack gets: the victim V, the honest H, and ways to add nodes and mark time."""

    def __init__(self, folder: Path, today: bool) -> None:
        self.folder = folder
        self.today = today
        self.nodes: list[Node] = []
        self.peers: list[HostilePeer] = []
        self.measured_from = 0.0
        self.lifetime = 60.0 if today else 6.0

    def flags(self, args) -> list[str]:
        kept, skip = [], False
        for arg in args:
            if self.today and (skip or arg in NEW_FLAGS):
                skip = not skip
                continue
            kept.append(arg)
        return kept

    def start(self, name: str, *args: str, nofile: int | None = None) -> Node:
        prefix = [sys.executable, "-c", LIMIT_NOFILE, str(nofile)] if nofile else []
        node = Node(name, self.folder, self.flags(args), prefix)
        self.nodes.append(node)
        return node

    def peer(self, port: int, **options) -> HostilePeer:
        peer = HostilePeer(port, **options)
        self.peers.append(peer)
        return peer

    def hostile(self, port: int, **options) -> HostilePeer:
        peer = self.peer(port, **options)
        peer.handshake()
        return peer.start_reader()

    def mark(self) -> None:
        """Measure honest latency from now on (the attack's setup is over)."""
        self.measured_from = time.monotonic()

    def wait(self, predicate, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        return False


def quietly(action, *args, **options) -> None:
    """One step of an attack; the victim may stop reading us or close us."""
    try:
        action(*args, **options)
    except (OSError, PeerError):
        pass


def hosts(node: Node, app: str) -> set[str]:
    return {host["node"] for host in node.get("/_xio/apps").get(app, [])}


def linked(node: Node, peer_id: str) -> bool:
    return any(p["id"] == peer_id and p["state"] == "established" for p in node.get("/_xio/peers"))


# -- the attacks: each gets the bench, V and H, and returns when it is over ------------------


def stop_reading(bench, v, h, v_id):
    attacker = bench.peer(v.port, receive_buffer=4096)
    attacker.handshake()
    attacker.keep_pinging(0.1, duration=30)
    for request_id in range(1, 49):
        quietly(attacker.request, request_id, v_id, "inventory", "/items/" + "x" * 60_000)
    j = bench.start("j", "--peers", h.ws)
    bench.wait(lambda: v_id in hosts(j, "inventory"), 10)
    bench.honest.targets.append((j, "/inventory/items/3"))
    time.sleep(10)
    return f"attacker's link still up at V: {linked(v, attacker.key.node_id)}"


def relink(bench, v, h, v_id):
    h_id = h.get("/_xio/node")["id"]
    summaries = {f"app{i:02d}": "s" * 1000 for i in range(14)}
    injector = bench.hostile(v.port)
    for _ in range(1500):
        quietly(injector.send_message, record_frame(Key(), 1, apps=summaries))
    bench.wait(lambda: h.get("/_xio/node")["records"] >= 1500, 90)
    injector.close("done")
    h.proc.send_signal(signal.SIGSTOP)  # one flap: V drops the frozen H, which then redials
    time.sleep(4)
    h.proc.send_signal(signal.SIGCONT)
    relinked = bench.wait(lambda: linked(h, v_id) and linked(v, h_id), 20)
    bench.mark()
    time.sleep(10)
    return f"re-linked (shown established): {relinked}"


def fd_exhaustion(bench, v, h, v_id):
    admin = xio.client(v.url, timeout=5)  # its kept-alive connection outlives the exhaustion
    admin.get("/_xio/node")
    refresh = bench.lifetime / 3
    idle = []
    try:
        for _ in range(192):
            try:
                idle.append(socket.create_connection(("127.0.0.1", v.port), 1))
            except OSError:
                break
        time.sleep(1)
        exhausted = len(os.listdir(f"/proc/{v.proc.pid}/fd"))
        # Hold until a refresh has failed (at most two refresh periods), then let go.
        stop_at = time.monotonic() + 2 * refresh + 1
        while time.monotonic() < stop_at:
            loops = admin.get("/_xio/node").content.get("loops") or {}
            if loops.get("refresh", {}).get("errors"):
                break
            time.sleep(0.1)
    finally:
        for sock in idle:
            sock.close()
    time.sleep(2.2 * bench.lifetime)
    return f"V's descriptors in use: {exhausted} of 128"


def inbound_links(bench, v, h, v_id):
    refused = Counter()
    for index in range(260):
        try:
            bench.hostile(v.port, source=f"127.0.0.{10 + index % 26}", timeout=5)
        except Refused as exc:
            refused[exc.status] += 1
        except (PeerError, OSError) as exc:
            refused[type(exc).__name__] += 1
    time.sleep(2.2 * bench.lifetime)
    return f"{260 - sum(refused.values())} of 260 accepted; refused {dict(refused)}"


def fake_topology(bench, v, h, v_id):
    attacker = bench.hostile(v.port)
    count = 4000
    keys = [Key() for _ in range(count)]

    def links(index):
        peers = [keys[(index + step) % count].node_id for step in range(-64, 65) if step]
        return peers + [attacker.key.node_id] if index % 20 == 0 else peers

    h_id = h.get("/_xio/node")["id"]
    since = [p["since"] for p in v.get("/_xio/peers") if p["id"] == h_id]
    mine = [v_id] + [keys[i].node_id for i in range(0, count, 20)][:255]
    quietly(attacker.send_message, record_frame(attacker.key, 1, links=mine))
    for index, key in enumerate(keys):  # about a thousand a second
        quietly(attacker.send_message, record_frame(key, 1, links=links(index)))
        if index % 50 == 49:
            time.sleep(0.05)
    rng = random.Random(7)
    for seq in range(2, 42):  # then one small change twice a second for 20 s
        index = rng.randrange(count)
        quietly(attacker.send_message, record_frame(keys[index], seq, links=links(index)))
        time.sleep(0.5)
    now = [p["since"] for p in v.get("/_xio/peers") if p["id"] == h_id]
    return f"the V-H link stayed the same link: {now == since}"


def sybil_flood(bench, v, h, v_id):
    attacker = bench.hostile(v.port)
    for _ in range(4100 if bench.today else 310):
        quietly(attacker.send_message, record_frame(Key(), 1, name="sybil"))
    time.sleep(3)
    attacker.close("done")
    j = bench.start("j", "--app", SLOW, "--peers", h.ws, "--store-max-records", "300")
    j_id = j.get("/_xio/node")["id"]
    joined = bench.wait(lambda: j_id in hosts(v, "slow") and v_id in hosts(j, "inventory"), 15)
    bench.honest.targets += [(j, "/inventory/items/1"), (v, f"/~{j_id}/slow")]
    bench.mark()
    time.sleep(5)
    return f"late joiner and V see each other's apps: {joined}"


def big_headers(bench, v, h, v_id):
    for index in range(30):
        quietly(lambda i=index: bench.peer(v.port, source=f"127.0.0.{50 + i % 6}").handshake())
    for peer in bench.peers:
        quietly(peer.send_raw, ws_header(17 * MiB - 64, os.urandom(4)) + b"\x85")
    time.sleep(5)
    return "30 links, each a header declaring 17 MiB and 1 byte"


def padded_pings(bench, v, h, v_id):
    closed = 0
    for index in range(3):
        attacker = bench.hostile(v.port, source=f"127.0.0.{80 + index}")
        quietly(attacker.send_message, padded_ping(16 * MiB))
        closed += attacker.wait_closed(3)
    return f"links closed by V: {closed} of 3"


def bodies(bench, v, h, v_id):
    attacker = bench.hostile(v.port)
    body = bytes(16 * MiB)
    for request_id in range(1, 31):
        quietly(attacker.request, request_id, v_id, "slow", method="POST", query="s=8",
                body=body, ttl_ms=20_000)  # fmt: skip
    time.sleep(4)
    busy = sum(1 for r in attacker.responses.values() if r["status"] == 503)
    attacker.close()
    time.sleep(6)
    return f"refused 503: {busy} of 30 bodies of 16 MiB"


def long_ttl(bench, v, h, v_id):
    attacker = bench.hostile(v.port)
    h_id = h.get("/_xio/node")["id"]
    for request_id in range(1, 201):
        quietly(attacker.request, request_id, h_id, "slow", query="s=30", ttl_ms=2**32 - 1)
    bench.wait(lambda: len(attacker.responses) >= 200, 8)
    return f"answered within 8 s: {len(attacker.responses)} of 200"


def in_flight(bench, v, h, v_id):
    attackers = [bench.hostile(v.port, source=f"127.0.0.{60 + i}") for i in range(4)]
    for attacker in attackers:
        for request_id in range(1, 1025):
            quietly(attacker.request, request_id, v_id, "slow", query="s=6", ttl_ms=20_000)
    time.sleep(6)
    busy = sum(1 for a in attackers for r in list(a.responses.values()) if r["status"] == 503)
    return f"refused 503: {busy} of 4096 held 6 s each"


def churn(bench, v, h, v_id):
    started, seq = time.monotonic(), v.get("/_xio/node")["seq"]
    count = 0
    refused = 0
    while time.monotonic() - started < 10 and count < 2000:
        count += 1
        try:
            peer = HostilePeer(v.port, source=f"127.0.0.{70 + count % 4}", timeout=5)
        except (PeerError, OSError):
            refused += 1
            continue
        quietly(peer.handshake)
        peer.close(reset=True)
    originated = v.get("/_xio/node")["seq"] - seq
    return f"{count} handshakes ({refused} refused) in 10 s: V originated {originated} records"


#: name -> (attack, V's flags, H's flags, V dials H, V's RLIMIT_NOFILE)
ATTACKS = {
    "stop-reading": (stop_reading, [], [], False, None),
    "relink": (relink, ["--store-max-bytes", str(64 * MiB), "--origin-quota", "100000"],
               ["--store-max-bytes", str(64 * MiB), "--origin-quota", "100000"], False, None),
    "fd-exhaustion": (fd_exhaustion, ["--record-lifetime", "6"], [], True, 128),
    "inbound-links": (inbound_links, ["--record-lifetime", "6"], [], True, None),
    "fake-topology": (fake_topology, ["--origin-quota", "100000"], ["--origin-quota", "100000"],
                      False, None),
    "sybil-flood": (sybil_flood, ["--store-max-records", "300"], ["--store-max-records", "300"],
                    False, None),
    "17mib-headers": (big_headers, [], [], False, None),
    "padded-ping": (padded_pings, [], [], False, None),
    "request-bodies": (bodies, ["--body-budget", str(64 * MiB)], [], False, None),
    "long-ttl": (long_ttl, ["--max-ttl", "2"], [], False, None),
    "in-flight": (in_flight, ["--max-in-flight", "64"], [], False, None),
    "handshake-churn": (churn, [], [], False, None),
}  # fmt: skip


def run(name: str, today: bool) -> dict:
    """Run one attack on a fresh pair of nodes; return its row of figures."""
    attack, victim_args, honest_args, victim_dials, nofile = ATTACKS[name]
    with tempfile.TemporaryDirectory(prefix="xio-attack-bench-") as folder:
        bench = Bench(Path(folder), today)
        victim = ["--app", INVENTORY, "--app", SLOW, *victim_args]
        try:
            if victim_dials:
                h = bench.start("h", "--app", SLOW, *honest_args)
                v = bench.start("v", *victim, "--peers", h.ws, nofile=nofile)
            else:
                v = bench.start("v", *victim, nofile=nofile)
                h = bench.start("h", "--app", SLOW, *honest_args, "--peers", v.ws)
            v_id = v.get("/_xio/node")["id"]
            if not bench.wait(lambda: v_id in hosts(h, "inventory") and len(hosts(v, "slow")) == 2,
                              20):  # fmt: skip
                raise RuntimeError("V and H did not link")
            return measure(bench, name, attack, v, h, v_id)
        finally:
            for peer in bench.peers:
                quietly(peer.close)
            for node in bench.nodes:
                node.kill()


def measure(bench: Bench, name: str, attack, v: Node, h: Node, v_id: str) -> dict:
    """Run ``attack`` under honest traffic and a watch on H's mesh; return the figures."""
    before = v.memory("VmRSS")
    bench.honest = Honest([(h, "/inventory/items/1"), (v, "/inventory/items/2"),
                           (v, "/~h/slow")])  # fmt: skip
    polls: list[tuple[float, bool]] = []  # (when, V's app in H's mesh)
    stop = threading.Event()

    def watch_mesh() -> None:
        while not stop.wait(0.5):
            started = time.monotonic()
            try:
                polls.append((started, v_id in hosts(h, "inventory")))
            except Exception:
                polls.append((started, False))  # H too busy to answer counts as absent

    watcher = threading.Thread(target=watch_mesh, daemon=True)
    started = time.monotonic()
    bench.measured_from = started
    bench.honest.start()
    watcher.start()
    try:
        note = attack(bench, v, h, v_id)
    finally:
        bench.honest.stopped.set()
        stop.set()
        bench.honest.join(DEADLINE + 5)
        watcher.join(15)
    peak = v.memory("VmHWM")
    for peer in bench.peers:
        quietly(peer.close)
    time.sleep(2)
    results = [r for r in bench.honest.results if r[0] >= bench.measured_from]
    seconds = sorted(r[1] for r in results) or [0.0]
    return {
        "attack": name, "before": before, "peak": peak, "after": v.memory("VmRSS"),
        "p50": statistics.median(seconds), "p99": seconds[int(0.99 * (len(seconds) - 1))],
        "max": seconds[-1], "failed": sum(1 for r in results if r[2] != 200),
        "worst": Counter(str(r[2]) for r in results if r[2] != 200).most_common(2),
        "requests": len(results),
        "stayed": all(present for when, present in polls if when >= bench.measured_from),
        "duration": time.monotonic() - started, "note": note,
    }  # fmt: skip


def render(rows: list[dict], today: bool) -> str:
    """Return the markdown table."""
    lines = [
        f"victim {'without' if today else 'with'} issue 7's flags; honest requests with "
        f"X-Xio-Timeout {DEADLINE:g} s; memory in MiB (peak = VmHWM since start)",
        "",
        "| attack | RSS before | peak | RSS after | honest p50 | p99 | max | not 200 | "
        "V's app stayed | s | what else |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['attack']} | error: {r['error']} |||||||||")
            continue
        lines.append(
            f"| {r['attack']} | {r['before']:.0f} | {r['peak']:.0f} | {r['after']:.0f} | "
            f"{r['p50'] * 1000:.0f} ms | {r['p99'] * 1000:.0f} ms | {r['max'] * 1000:.0f} ms | "
            f"{r['failed']}/{r['requests']}{' (' if r['worst'] else ''}"
            f"{', '.join(f'{kind} x{n}' for kind, n in r['worst'])}{')' if r['worst'] else ''} | "
            f"{'yes' if r['stayed'] else 'no'} | "
            f"{r['duration']:.0f} | {r['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--attack", action="append", choices=sorted(ATTACKS),
                        help="run this attack only (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--today", action="store_true",
                        help="drop the flags old code lacks; size for its defaults")  # fmt: skip
    args = parser.parse_args(argv)
    rows = []
    for name in args.attack or list(ATTACKS):
        print(f"{name} ...", file=sys.stderr, flush=True)
        try:
            rows.append(run(name, args.today))
        except Exception as exc:  # one broken attack must not lose the others' figures
            rows.append({"attack": name, "error": f"{type(exc).__name__}: {exc}"[:120]})
        print(render(rows[-1:], args.today).splitlines()[-1], file=sys.stderr, flush=True)
    print(render(rows, args.today))
    return 0


if __name__ == "__main__":
    sys.exit(main())
