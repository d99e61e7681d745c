"""The pure parts of mDNS discovery: interface choice, TXT records, instance names, URLs.

No network and no zeroconf: these call the functions of ``xio.peering.mdns_names`` on made-up
interfaces, and check that the module stays pure.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from xio.errors import ConfigError, RemoteProtocolError
from xio.peering.mdns_names import (
    IFF_LOOPBACK,
    IFF_MULTICAST,
    IFF_UP,
    Announcement,
    NetInterface,
    announced_addresses,
    decode_txt,
    encode_txt,
    instance_name,
    select_interfaces,
    websocket_urls,
)  # fmt: skip

UP = IFF_UP | IFF_MULTICAST
NODE_A = "a" * 32
NODE_B = "b" * 32


def interface(name, flags=UP, ipv4=(), ipv6=(), index=2):
    return NetInterface(name, index, flags, tuple(ipv4), tuple(ipv6))


MACHINE = [
    interface("lo", IFF_UP | IFF_LOOPBACK | IFF_MULTICAST, [("127.0.0.1", 8)], index=1),
    interface("eth0", ipv4=[("192.168.1.10", 24)], ipv6=[("fe80::1", 64), ("2001:db8::10", 64)]),
    interface("wlan0", ipv4=[("10.0.0.5", 24)]),
    interface("docker0", ipv4=[("172.17.0.1", 16)]),
    interface("veth12ab", ipv4=[("169.254.3.3", 16)]),
    interface("br-5f1c", ipv4=[("172.18.0.1", 16)]),
    interface("virbr0", ipv4=[("192.168.122.1", 24)]),
    interface("eth1", IFF_MULTICAST, [("192.168.2.10", 24)]),  # not up
    interface("tun0", IFF_UP, [("10.8.0.2", 24)]),  # up, no multicast
    interface("eth2", ipv6=[("fe80::2", 64)]),  # no IPv4
]


def names(selection):
    return [i.name for i in selection.chosen]


def test_default_choice_skips_loopback_bridges_down_and_non_multicast():
    selection = select_interfaces(MACHINE)
    assert names(selection) == ["eth0", "wlan0"]
    why = dict(selection.skipped)
    assert why["lo"] == "loopback"
    for bridge in ("docker0", "veth12ab", "br-5f1c", "virbr0"):
        assert why[bridge].startswith("container or virtual")
    assert why["eth1"] == "down"
    assert why["tun0"] == "not multicast-capable"
    assert why["eth2"].startswith("no IPv4")
    assert selection.unmatched == ()


@pytest.mark.parametrize("wanted", ["docker0", "172.17.0.1"])
def test_a_bridge_is_used_when_named_by_name_or_address(wanted):
    selection = select_interfaces(MACHINE, [wanted])
    assert names(selection) == ["docker0"]
    assert dict(selection.skipped)["eth0"] == "not named by --mdns-interface"


def test_named_interfaces_by_address_including_ipv6_spelling():
    assert names(select_interfaces(MACHINE, ["2001:db8:0::10"])) == ["eth0"]
    assert names(select_interfaces(MACHINE, ["wlan0", "veth12ab"])) == ["wlan0", "veth12ab"]


def test_loopback_never_and_down_or_unknown_named_interfaces_are_reported():
    selection = select_interfaces(MACHINE, ["lo", "127.0.0.1", "eth1", "tun0", "nope"])
    assert names(selection) == []
    why = dict(selection.skipped)
    assert (why["lo"], why["eth1"], why["tun0"]) == ("loopback", "down", "not multicast-capable")
    assert selection.unmatched == ("nope",)
    assert "no interface matches nope" in selection.describe()


def test_announced_addresses_are_the_chosen_ones_or_the_override():
    selection = select_interfaces(MACHINE)
    assert announced_addresses(selection) == ["192.168.1.10", "2001:db8::10", "10.0.0.5"]
    assert announced_addresses(selection, ["203.0.113.7"]) == ["203.0.113.7"]
    with pytest.raises(ConfigError):
        announced_addresses(selection, ["not-an-address"])


def test_txt_round_trip_with_bytes_as_zeroconf_gives_them():
    announcement = Announcement(NODE_A, "kitchen", tls=True)
    txt = encode_txt(announcement)
    assert txt == {"id": NODE_A, "v": "2", "ws": "/_xio/ws", "name": "kitchen", "tls": "1"}
    as_received = {k.encode(): v.encode() for k, v in txt.items()}
    assert decode_txt(as_received) == announcement
    assert decode_txt(encode_txt(Announcement(NODE_B, "x"))) == Announcement(NODE_B, "x")


@pytest.mark.parametrize(
    ("txt", "reason"),
    [
        ({b"v": b"2"}, "bad_txt"),
        ({b"id": NODE_A.encode()}, "bad_version"),
        ({b"id": NODE_A.encode(), b"v": b"1"}, "bad_version"),
        ({b"id": b"short", b"v": b"2"}, "bad_txt"),
        ({b"id": NODE_A.encode(), b"v": b"2", b"ws": b"nopath"}, "bad_txt"),
        ({b"id": None, b"v": b"2"}, "bad_txt"),
    ],
)
def test_garbage_txt_is_a_remote_protocol_error(txt, reason):
    with pytest.raises(RemoteProtocolError) as caught:
        decode_txt(txt)
    assert caught.value.reason == reason


def test_instance_names_are_unique_for_one_name_and_fit_a_label():
    assert instance_name("kitchen", NODE_A) == "kitchen-aaaaaaaa"
    assert instance_name("kitchen", NODE_A) != instance_name("kitchen", NODE_B)
    assert instance_name("a.b", NODE_A) == "a-b-aaaaaaaa"
    long = instance_name("é" * 100, NODE_A)
    assert len(long.encode()) <= 63 and long.endswith("-aaaaaaaa")
    assert instance_name("", NODE_A) == "node-aaaaaaaa"


def test_urls_prefer_addresses_on_our_own_networks():
    import ipaddress

    announcement = Announcement(NODE_A, "n")
    local = [ipaddress.ip_network("10.0.0.0/24")]
    addresses = ["fe80::1", "2001:db8::1", "192.0.2.9", "10.0.0.7", "127.0.0.1", "junk"]
    assert websocket_urls(announcement, addresses, 7700, local) == [
        "ws://10.0.0.7:7700/_xio/ws",
        "ws://192.0.2.9:7700/_xio/ws",
        "ws://[2001:db8::1]:7700/_xio/ws",
    ]
    tls = Announcement(NODE_A, "n", tls=True, ws_path="/mesh")
    assert websocket_urls(tls, ["10.0.0.7"], 443) == ["wss://10.0.0.7:443/mesh"]


# -- the split: the pure half imports no IO, the adapter keeps every name ----------------------

PURE = Path(__file__).resolve().parent.parent / "xio/peering/mdns_names.py"
IO_MODULES = {"socket", "zeroconf", "gevent", "ifaddr", "time", "os", "threading", "asyncio"}


def test_the_pure_half_imports_no_network_clock_or_file_io():
    imported = set()
    for node in ast.walk(ast.parse(PURE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported, "the test reads no imports"
    assert not imported & IO_MODULES, f"mdns_names.py imports {sorted(imported & IO_MODULES)}"


def test_the_pure_half_loads_without_zeroconf():
    code = "import sys, xio.peering.mdns_names; print('zeroconf' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=PURE.parent.parent.parent)  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr


def test_the_adapter_still_offers_every_name_of_the_pure_half():
    from xio.peering import mdns, mdns_names

    for name in mdns_names.__all__:
        assert getattr(mdns, name) is getattr(mdns_names, name), name
    assert {"Discovery", "query_once", "read_interfaces", "MDNS_PORT"} <= set(mdns.__all__)
