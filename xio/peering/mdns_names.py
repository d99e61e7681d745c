"""mDNS discovery's pure half: service names, the TXT record, interface and address choice.

Theory of operation. Everything discovery decides without touching the network lives here, as
plain functions of plain values, so that tests call them on made-up interfaces and TXT maps:

* ``select_interfaces`` picks, from ``NetInterface`` values (``mdns.read_interfaces`` reads the
  machine's), the interfaces to announce and browse on, and says why each other one was left
  out; ``announced_addresses`` the addresses to put in A/AAAA records;
* ``instance_name`` names this node's mDNS instance, unique by its id and within a DNS label;
* ``encode_txt`` / ``decode_txt`` turn an ``Announcement`` into TXT properties and back,
  refusing what is not one with ``RemoteProtocolError``;
* ``websocket_urls`` orders a discovered node's addresses into URLs to dial, best first.

This module imports no socket, thread, clock, zeroconf or ifaddr: ``xio.peering.mdns`` (the
zeroconf adapter, which re-exports every name here) does the IO.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ConfigError, RemoteProtocolError
from .identity import is_node_id

SERVICE_TYPE = "_xio._tcp.local."
PROTOCOL_VERSION = "2"  # the link protocol version (frames.PROTOCOL_VERSION)
DEFAULT_WS_PATH = "/_xio/ws"

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000

#: Interfaces of containers and virtual machines: used only when named by --mdns-interface.
VIRTUAL_PREFIXES = (
    "docker", "veth", "br-", "virbr", "cni", "flannel", "cali", "weave", "vxlan", "lxcbr",
    "lxdbr", "podman", "vmnet", "vboxnet", "kube", "cilium",
)  # fmt: skip

#: The longest TXT value a peer's announcement may make us keep.
MAX_TXT_VALUE = 255


# -- interfaces (pure) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetInterface:
    """One network interface: its flags and addresses (``(address, prefix length)``)."""

    name: str
    index: int
    flags: int
    ipv4: tuple[tuple[str, int], ...] = ()
    ipv6: tuple[tuple[str, int], ...] = ()

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def multicast(self) -> bool:
        return bool(self.flags & IFF_MULTICAST)

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK) or self.name == "lo"

    @property
    def virtual(self) -> bool:
        """Return whether this looks like a container or virtual-machine interface."""
        return self.name.startswith(VIRTUAL_PREFIXES)

    def addresses(self) -> list[str]:
        return [address for address, _ in self.ipv4 + self.ipv6]

    def matches(self, wanted: str) -> bool:
        """Return whether ``wanted`` names this interface or one of its addresses."""
        if wanted == self.name:
            return True
        try:
            wanted_ip = ipaddress.ip_address(wanted.split("%")[0])
        except ValueError:
            return False
        return any(ipaddress.ip_address(address) == wanted_ip for address in self.addresses())

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_interface(f"{a}/{p}").network for a, p in self.ipv4 + self.ipv6]


@dataclass(frozen=True, slots=True)
class InterfaceSelection:
    """The interfaces discovery runs on, and why every other one was left out."""

    chosen: tuple[NetInterface, ...]
    skipped: tuple[tuple[str, str], ...]  # (interface name, why)
    unmatched: tuple[str, ...]  # --mdns-interface values that named nothing

    def describe(self) -> str:
        chosen = ", ".join(f"{i.name} ({', '.join(a for a, _ in i.ipv4)})" for i in self.chosen)
        skipped = ", ".join(f"{name}: {why}" for name, why in self.skipped)
        text = f"interfaces {chosen or 'none'}"
        if skipped:
            text += f"; skipped {skipped}"
        if self.unmatched:
            text += f"; no interface matches {', '.join(self.unmatched)}"
        return text


def select_interfaces(
    interfaces: Iterable[NetInterface], requested: Iterable[str] = ()
) -> InterfaceSelection:
    """Choose the interfaces to announce and browse on.

    With ``requested`` (names or addresses, from ``--mdns-interface``) only those are
    used; otherwise every up, multicast-capable interface with an IPv4 address, except
    loopback and container or virtual bridges. Loopback is never used.
    """
    requested = [r for r in requested if r]
    interfaces = list(interfaces)
    chosen, skipped = [], []
    for interface in interfaces:
        named = any(interface.matches(r) for r in requested)
        if interface.loopback:
            why = "loopback"
        elif requested and not named:
            why = "not named by --mdns-interface"
        elif interface.virtual and not named:
            why = "container or virtual interface (name it with --mdns-interface to use it)"
        elif not interface.up:
            why = "down"
        elif not interface.multicast:
            why = "not multicast-capable"
        elif not interface.ipv4:
            why = "no IPv4 address (mDNS over IPv6 only is not supported yet)"
        else:
            chosen.append(interface)
            continue
        skipped.append((interface.name, why))
    unmatched = tuple(r for r in requested if not any(i.matches(r) for i in interfaces))
    return InterfaceSelection(tuple(chosen), tuple(skipped), unmatched)


def announced_addresses(selection: InterfaceSelection, advertise: Iterable[str] = ()) -> list[str]:
    """Return the addresses to put in A/AAAA records: ``advertise`` if given, else the
    chosen interfaces' IPv4 and global IPv6 addresses (a link-local one needs a scope)."""
    advertise = list(advertise)
    for address in advertise:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise ConfigError(f"--advertise-address {address!r} is not an IP address") from exc
    if advertise:
        return advertise
    result = []
    for interface in selection.chosen:
        result += [address for address, _ in interface.ipv4]
        result += [a for a, _ in interface.ipv6 if not ipaddress.ip_address(a).is_link_local]
    return result


# -- names and TXT (pure) -----------------------------------------------------------------


def instance_name(name: str, node_id: str) -> str:
    """Return the mDNS instance name of a node: its name, made unique by its id.

    Two nodes with the same name differ by ``-<first 8 characters of the id>``; the
    result fits the 63-byte label limit.
    """
    clean = "".join(c if c.isprintable() and c not in "." else "-" for c in name) or "node"
    suffix = f"-{node_id[:8]}"
    room = 63 - len(suffix.encode())
    while len(clean.encode()) > room:
        clean = clean[:-1]
    return clean + suffix


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a node says about itself in its TXT record."""

    node_id: str
    name: str
    version: str = PROTOCOL_VERSION
    ws_path: str = DEFAULT_WS_PATH
    tls: bool = False

    def __post_init__(self) -> None:
        if not is_node_id(self.node_id):
            raise RemoteProtocolError("bad_txt", f"id {self.node_id!r} is not a node id")
        if not self.ws_path.startswith("/"):
            raise RemoteProtocolError("bad_txt", f"ws path {self.ws_path!r} is not a path")


def encode_txt(announcement: Announcement) -> dict[str, str]:
    """Return the TXT properties announcing ``announcement``."""
    txt = {
        "id": announcement.node_id,
        "v": announcement.version,
        "ws": announcement.ws_path,
        "name": announcement.name.encode()[: MAX_TXT_VALUE - 5].decode(errors="ignore"),
    }
    if announcement.tls:
        txt["tls"] = "1"
    return txt


def decode_txt(properties: Mapping) -> Announcement:
    """Read an announcement from TXT properties (bytes or str keys and values).

    Raise ``RemoteProtocolError`` (``bad_txt``, ``bad_version``) for what is not one.
    """
    txt = {}
    for key, value in properties.items():
        key = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        txt[key.lower()] = "" if value is None else str(value)
    if txt.get("v") != PROTOCOL_VERSION:
        raise RemoteProtocolError("bad_version", f"TXT v={txt.get('v')!r}")
    if "id" not in txt:
        raise RemoteProtocolError("bad_txt", "TXT has no id")
    return Announcement(
        txt["id"], txt.get("name", "")[:MAX_TXT_VALUE], txt["v"],
        txt.get("ws", DEFAULT_WS_PATH), txt.get("tls") == "1",
    )  # fmt: skip


def websocket_urls(
    announcement: Announcement, addresses: Iterable[str], port: int, local_networks: Iterable = ()
) -> list[str]:
    """Return the URLs to dial a discovered node at, best first.

    IPv4 addresses on one of our own networks first, then other IPv4, then global IPv6;
    loopback, unspecified and link-local IPv6 addresses (no scope) are left out.
    """
    local_networks = list(local_networks)
    ranked = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            continue
        if address.version == 6 and address.is_link_local:
            continue
        on_link = any(address in network for network in local_networks)
        rank = (0 if on_link else 1) if address.version == 4 else 2
        host = str(address) if address.version == 4 else f"[{address}]"
        ranked.append((rank, host))
    scheme = "wss" if announcement.tls else "ws"
    seen, urls = set(), []
    for _, host in sorted(ranked, key=lambda pair: pair[0]):
        url = f"{scheme}://{host}:{port}{announcement.ws_path}"
        if url not in seen:
            seen.add(url)
            urls.append(url)
    return urls


__all__ = [
    "DEFAULT_WS_PATH", "IFF_LOOPBACK", "IFF_MULTICAST", "IFF_UP", "MAX_TXT_VALUE",
    "PROTOCOL_VERSION", "SERVICE_TYPE", "VIRTUAL_PREFIXES", "Announcement", "InterfaceSelection",
    "NetInterface", "announced_addresses", "decode_txt", "encode_txt", "instance_name",
    "select_interfaces", "websocket_urls",
]  # fmt: skip
