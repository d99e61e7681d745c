"""``xio-node doctor``: say why nodes on this LAN do or do not find each other.

For every interface discovery would use (the same choice as ``xio-node``, or the ones
named by ``--mdns-interface``) it checks: up? multicast-capable? can UDP 5353 be joined?
do other xio nodes answer a ``_xio._tcp.local.`` query within 2 s, and what do they
announce? is the node's own port reachable on the announced address? Every finding is
printed with the fix to try. Exit status 0 when discovery should work, 1 otherwise.

It sends exactly one mDNS query per chosen interface (``--no-query``: none).
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

from ..constants import DEFAULT_PORT
from ..errors import ConfigError
from ..peering.mdns import (
    MDNS_GROUP,
    MDNS_PORT,
    SERVICE_TYPE,
    InterfaceSelection,
    NetInterface,
    announced_addresses,
    query_once,
    read_interfaces,
    select_interfaces,
)  # fmt: skip


class Report:
    """Findings, printed as they come; ``failed`` once any is a problem."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stdout
        self.failed = False

    def ok(self, text: str) -> None:
        print(f"  ok    {text}", file=self.out)

    def note(self, text: str, fix: str = "") -> None:
        print(f"  note  {text}", file=self.out)
        if fix:
            print(f"        fix: {fix}", file=self.out)

    def problem(self, text: str, fix: str) -> None:
        self.failed = True
        print(f"  FAIL  {text}", file=self.out)
        print(f"        fix: {fix}", file=self.out)

    def detail(self, text: str) -> None:
        print(f"          {text}", file=self.out)


def join_group(address: str) -> None:
    """Bind UDP 5353 as an mDNS responder does and join 224.0.0.251 on ``address``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(("", MDNS_PORT))
        membership = struct.pack("4s4s", socket.inet_aton(MDNS_GROUP), socket.inet_aton(address))
        probe.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)


def port_reachable(address: str, port: int, timeout: float = 1.0) -> str | None:
    """Return None if a TCP connection to ``address:port`` opens, else why not."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def check_selection(selection: InterfaceSelection, report: Report, named: bool) -> None:
    """Report interfaces left out; a named one that cannot be used is a problem."""
    for wanted in selection.unmatched:
        report.problem(f"no interface has the name or address {wanted!r}",
                       "list interfaces with `ip -br addr` and name one of them")  # fmt: skip
    for name, why in selection.skipped:
        if named and why == "down":
            report.problem(f"{name} is down", f"ip link set {name} up")
        elif named and why == "not multicast-capable":
            report.problem(f"{name} is not multicast-capable", f"ip link set {name} multicast on")
        elif named and why.startswith("no IPv4"):
            report.problem(f"{name} has no IPv4 address",
                           f"give it one (ip addr add ADDRESS/PREFIX dev {name})")  # fmt: skip
        else:
            print(f"  skip  {name}: {why}", file=report.out)
    if not selection.chosen:
        report.problem("no interface to run discovery on",
                       "name one with --mdns-interface NAME_OR_ADDRESS (container bridges "
                       "such as docker0 are used only when named)")  # fmt: skip


def check_interface(
    interface: NetInterface, report: Report, *, port: int, advertise: list[str], query: bool,
    wait: float, local: set[str],
) -> None:  # fmt: skip
    """Check one chosen interface and print what was found."""
    address = interface.ipv4[0][0]
    print(f"interface {interface.name} ({address})", file=report.out)
    report.ok("up")
    report.ok("multicast-capable")
    try:
        join_group(address)
        report.ok(f"UDP {MDNS_PORT} bound and {MDNS_GROUP} joined on {address}")
    except OSError as exc:
        report.problem(f"cannot join {MDNS_GROUP} on UDP {MDNS_PORT}: {exc}",
                       "another program may hold UDP 5353 without SO_REUSEPORT "
                       "(`ss -ulpn 'sport = :5353'`); stop it or share the port")  # fmt: skip
        return
    if query:
        try:
            found = query_once(address, wait)
        except OSError as exc:
            report.problem(f"cannot send an mDNS query on {address}: {exc}",
                           f"check the multicast route: ip route add 224.0.0.0/4 dev "
                           f"{interface.name}")  # fmt: skip
            found = None
        if found is not None:
            others = [n for n in found if not set(n.get("addresses", ())) & local]
            if found:
                report.ok(f"{len(found)} xio node(s) answered within {wait:g} s "
                          f"({len(others)} on other hosts):")  # fmt: skip
            else:
                report.note(f"no xio node answered within {wait:g} s",
                            "start xio-node on another host; if one runs, multicast does not "
                            "cross this network: Wi-Fi client isolation, IGMP snooping "
                            "without a querier, or a firewall dropping UDP 5353")  # fmt: skip
            for node in found:
                where = "peer" if node in others else "this host"
                urls = ", ".join(f"{a}:{node['port']}" for a in node.get("addresses", ()))
                report.detail(f"{node.get('name', '?')} id={node.get('id', '?')} at "
                              f"{urls or 'no address yet'} ({where})")  # fmt: skip
                if "problem" in node:
                    report.detail(f"  not an xio v1 announcement: {node['problem']}")
    targets = advertise or [a for a, _ in interface.ipv4]
    for target in targets:
        why = port_reachable(target, port)
        if why is None:
            report.ok(f"port {port} reachable on {target}")
        else:
            report.problem(f"port {port} not reachable on {target}: {why}",
                           f"start xio-node (--port {port}) or allow TCP {port} and UDP "
                           f"{MDNS_PORT} in the firewall")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run ``xio-node doctor``; return 0 when discovery should work, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="xio-node doctor",
        description="Check mDNS discovery on this host. Sends one mDNS query per chosen interface.",
    )
    parser.add_argument("--mdns-interface", action="append", default=[],
                        metavar="NAME_OR_ADDRESS",
                        help="check this interface only (repeatable; default: those "
                        "xio-node would use)")  # fmt: skip
    parser.add_argument("--advertise-address", action="append", default=[], metavar="ADDRESS",
                        help="the address the node announces instead")  # fmt: skip
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the node's port ({DEFAULT_PORT})"
    )
    parser.add_argument("--wait", type=float, default=2.0, help="seconds to wait for answers")
    parser.add_argument("--no-query", dest="query", action="store_false",
                        help="send no mDNS query, check only interfaces and ports")  # fmt: skip
    args = parser.parse_args(argv)
    report = Report()
    interfaces = read_interfaces()
    selection = select_interfaces(interfaces, args.mdns_interface)
    print(f"xio-node doctor: discovery of {SERVICE_TYPE}", file=report.out)
    check_selection(selection, report, named=bool(args.mdns_interface))
    local = {address for interface in interfaces for address in interface.addresses()}
    try:
        advertise = announced_addresses(selection, args.advertise_address)
    except ConfigError as exc:
        print(f"xio-node doctor: {exc}", file=sys.stderr)
        return 2
    for interface in selection.chosen:
        check_interface(interface, report, port=args.port, query=args.query, wait=args.wait,
                        advertise=args.advertise_address, local=local)  # fmt: skip
    if advertise:
        print(f"announced addresses: {', '.join(advertise)}", file=report.out)
    verdict = (
        "discovery should NOT work (see FAIL above)" if report.failed else "discovery should work"
    )
    print(f"result: {verdict}", file=report.out)
    return 1 if report.failed else 0


__all__ = ["main"]
