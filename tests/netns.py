"""A throwaway LAN of network namespaces for discovery tests and benchmarks.

``Lan()`` makes a namespace holding a bridge (``br0``); ``lan.add_host()`` makes a
namespace with a veth pair whose one end is on that bridge and whose other end,
``veth0``, has an address in a private test subnet (10.231.N.0/24) and the multicast
route. The machine's own namespace and interfaces are never touched: multicast sent by
the nodes stays on this bridge. Names carry a random suffix so that runs can overlap;
``lan.close()`` deletes every namespace (and with them every veth), even after a failure.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

HOST_INTERFACE = "veth0"


def netns_unavailable() -> str | None:
    """Return why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2 (ip)"
    if shutil.which("curl") is None:
        return "network namespace tests need curl"
    return None


def ip(*args: str) -> None:
    """Run ``ip args...``; raise with its message if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Host:
    """One namespace on the LAN, with ``veth0`` at ``address``."""

    def __init__(self, lan: Lan, index: int) -> None:
        self.lan = lan
        self.index = index
        self.ns = f"xh{index}-{lan.suffix}"
        self.address = f"{lan.subnet}.{10 + index}"
        self.interface = HOST_INTERFACE

    def create(self) -> Host:
        lan, ns, peer = self.lan, self.ns, f"p{self.index}"
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", HOST_INTERFACE, "type", "veth", "peer", "name", peer,
           "netns", lan.bridge_ns)  # fmt: skip
        ip("-n", lan.bridge_ns, "link", "set", peer, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{self.address}/24", "dev", HOST_INTERFACE)
        ip("-n", ns, "link", "set", HOST_INTERFACE, "up")
        ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", HOST_INTERFACE)
        return self

    def set_link(self, state: str) -> None:
        """Bring ``veth0`` ``up`` or ``down``."""
        ip("-n", self.ns, "link", "set", HOST_INTERFACE, state)

    def command(self, *args: str) -> list[str]:
        """Return ``args`` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.ns, *args]

    def run(self, *args: str, timeout: float = 10.0, env: dict | None = None):
        """Run ``args`` inside the namespace; return the ``CompletedProcess``."""
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=timeout, env=env)  # fmt: skip

    def get(self, path: str, port: int = 7700, timeout: float = 2.0):
        """GET ``http://127.0.0.1:port/path`` inside the namespace: ``(status, body)``."""
        done = self.run(
            "curl", "-s", "--max-time", str(timeout), "-o", "-", "-w", "\n%{http_code}",
            f"http://127.0.0.1:{port}{path}", timeout=timeout + 5,
        )  # fmt: skip
        body, _, status = done.stdout.rpartition("\n")
        if done.returncode != 0:
            return 0, done.stderr
        try:
            return int(status), json.loads(body)
        except ValueError:
            return int(status or 0), body


class Lan:
    """A bridge in its own namespace, and hosts added to it; see the module docstring."""

    def __init__(self) -> None:
        self.suffix = f"{random.getrandbits(24):06x}"
        self.subnet = f"10.231.{random.randrange(1, 255)}"
        self.bridge_ns = f"xbr-{self.suffix}"
        self.hosts: list[Host] = []
        try:
            ip("netns", "add", self.bridge_ns)
            ip("-n", self.bridge_ns, "link", "set", "lo", "up")
            # Snooping off: the bridge floods multicast to every port, like a plain switch.
            ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge",
               "mcast_snooping", "0")  # fmt: skip
            ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def add_host(self) -> Host:
        host = Host(self, len(self.hosts) + 1)
        self.hosts.append(host)
        host.create()
        return host

    def close(self) -> None:
        """Delete every namespace of this LAN (their veths go with them)."""
        for ns in [host.ns for host in self.hosts] + [self.bridge_ns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
