"""mDNS discovery: announce this node as ``_xio._tcp.local.`` and report the nodes found.

Theory of operation. This is the one module that imports zeroconf. Its pure half lives in
``mdns_names`` (choosing interfaces from a list of ``NetInterface`` s, encoding and decoding the
TXT record, naming the instance, ordering a discovered node's URLs; unit tests call these
directly) and is re-exported here; this module reads the machine's interfaces and runs zeroconf.

The adapter, ``Discovery``, runs python-zeroconf in a real thread with its own asyncio loop
(zeroconf cannot run on gevent's hub: with ``thread`` monkey-patched its browser fails with
``Use AsyncServiceInfo.async_request from the event loop``, then ``LoopExit``). Nothing in
that thread touches the node: it appends events to a ``deque`` and wakes the hub through a
``hub.loop.async_()`` watcher, whose ``send()`` is safe from any thread. The hub drains the
deque and calls ``on_discovered(node_id, urls)`` / ``on_vanished(node_id)``. The hub talks
to the thread only through ``loop.call_soon_threadsafe``.

Speed: browsing starts before registration, so a new node finds (and links to) the nodes
already there while its own name is still being probed (RFC 6762 probing takes ~1.7 s with
zeroconf's defaults and is kept). Goodbyes go out in ``stop()``, before the node closes its
links.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

import ifaddr
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ..errors import ConfigError, RemoteProtocolError
from .mdns_names import (
    DEFAULT_WS_PATH,
    IFF_LOOPBACK,
    IFF_MULTICAST,
    IFF_UP,
    MAX_TXT_VALUE,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    VIRTUAL_PREFIXES,
    Announcement,
    InterfaceSelection,
    NetInterface,
    announced_addresses,
    decode_txt,
    encode_txt,
    instance_name,
    select_interfaces,
    websocket_urls,
)

log = logging.getLogger("xio.mdns")

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353

#: Bounds on what a peer's announcement may make us keep.
MAX_PEERS_SEEN = 1024
RESOLVE_TIMEOUT_MS = 3000


# -- reading the machine's interfaces (IO) ------------------------------------------------


def read_interfaces() -> list[NetInterface]:
    """Return this machine's interfaces with their flags and addresses."""
    result = []
    for adapter in ifaddr.get_adapters():
        name = adapter.nice_name or adapter.name
        ipv4, ipv6 = [], []
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):
                ipv6.append((ip.ip[0], ip.network_prefix))
            else:
                ipv4.append((ip.ip, ip.network_prefix))
        result.append(
            NetInterface(name, adapter.index or 0, interface_flags(name), tuple(ipv4), tuple(ipv6))
        )
    known = {interface.name for interface in result}
    for index, name in socket.if_nameindex():  # interfaces with no address at all
        if name not in known:
            result.append(NetInterface(name, index, interface_flags(name)))
    return result


def interface_flags(name: str) -> int:
    """Return the kernel's flags of interface ``name`` (IFF_UP, IFF_MULTICAST...), or 0."""
    try:
        with open(f"/sys/class/net/{os.path.basename(name)}/flags") as handle:
            return int(handle.read().strip(), 16)
    except (OSError, ValueError):
        pass
    try:  # no /sys: ask the kernel directly (SIOCGIFFLAGS)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            request = struct.pack("16sH14x", name.encode()[:15], 0)
            answer = fcntl.ioctl(probe.fileno(), 0x8913, request)
            return struct.unpack("16sH14x", answer)[1]
    except (OSError, struct.error):
        return 0


# -- the adapter --------------------------------------------------------------------------


class Discovery:
    """Announce this node and browse for others with zeroconf in its own thread."""

    def __init__(
        self,
        *,
        node_id: str,
        name: str,
        port: int,
        on_discovered: Callable[[str, list[str]], None],
        on_vanished: Callable[[str], None],
        interfaces: Iterable[str] = (),
        advertise_addresses: Iterable[str] = (),
        tls: bool = False,
        ws_path: str = DEFAULT_WS_PATH,
        available: Iterable[NetInterface] | None = None,
    ) -> None:
        self.node_id = node_id
        self.port = port
        self.announcement = Announcement(node_id, name, PROTOCOL_VERSION, ws_path, tls)
        self.instance = instance_name(name, node_id)
        self.on_discovered = on_discovered
        self.on_vanished = on_vanished
        available = read_interfaces() if available is None else list(available)
        self.selection = select_interfaces(available, interfaces)
        self.addresses = announced_addresses(self.selection, advertise_addresses)
        self.peers: dict[str, dict] = {}  # instance name -> what it announced
        self.registered_name: str | None = None
        self.error: str | None = None
        self.started_at = 0.0
        self._events: collections.deque = collections.deque()
        self._watcher = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # -- hub side -----------------------------------------------------------------------

    def start(self) -> Discovery:
        """Start announcing and browsing in a zeroconf thread; return at once."""
        import gevent
        from gevent.monkey import is_module_patched

        if is_module_patched("threading"):
            raise ConfigError(
                "mDNS needs real threads: monkey-patch with thread=False, queue=False"
            )
        self.started_at = time.monotonic()
        log.info("mdns: %s", self.selection.describe())
        if not self.selection.chosen:
            self.error = "no interface to run discovery on"
            log.warning("mdns: no usable interface: discovery is off (see xio-node doctor)")
            return self
        log.info("mdns: announcing %s on %s as %s", self.instance, self.addresses, SERVICE_TYPE)
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._drain)
        # Made here, not in the thread, so that a stop() right after start() is not lost.
        self._loop = asyncio.SelectorEventLoop(_real_selector())
        self._stopping = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="xio-mdns", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Send goodbyes and stop the zeroconf thread (waits up to ``timeout``)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        self._thread = None
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # the loop has already ended
                pass
        # Block the hub (a few hundred ms, once): the goodbyes must be out before the node
        # closes its links or the process exits, and a waiting greenlet would let it exit.
        thread.join(timeout)
        self._drain()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def describe(self) -> dict:
        """Return what discovery is doing, for ``/_xio/node``."""
        now = time.monotonic()
        return {
            "service": SERVICE_TYPE,
            "instance": self.registered_name or self.instance,
            "registered": self.registered_name is not None,
            "interfaces": [
                {"name": i.name, "addresses": [a for a, _ in i.ipv4]} for i in self.selection.chosen
            ],
            "skipped": dict(self.selection.skipped),
            "announced": list(self.addresses),
            "error": self.error,
            "peers": [
                {
                    **{k: v for k, v in peer.items() if k != "seen"},
                    "seen_s_ago": round(now - peer["seen"], 3),
                }
                for peer in self.peers.values()
            ],  # fmt: skip
        }

    def _post(self, *event) -> None:
        """Hand an event to the hub (called in the zeroconf thread)."""
        self._events.append(event)
        watcher = self._watcher
        if watcher is not None:
            watcher.send()

    def _drain(self) -> None:
        """Handle the zeroconf thread's events (called in the hub)."""
        while self._events:
            kind, *args = self._events.popleft()
            try:
                getattr(self, f"_hub_{kind}")(*args)
            except Exception:
                log.exception("mdns: handling %s failed", kind)

    def _hub_seen(self, instance: str, announcement: Announcement, addresses, port) -> None:
        if announcement.node_id == self.node_id:
            return
        local = [n for i in self.selection.chosen for n in i.networks()]
        urls = websocket_urls(announcement, addresses, port, local)
        if instance not in self.peers and len(self.peers) >= MAX_PEERS_SEEN:
            return
        first = instance not in self.peers
        self.peers[instance] = {
            "instance": instance, "id": announcement.node_id, "name": announcement.name,
            "urls": urls, "seen": time.monotonic(),
        }  # fmt: skip
        if first:
            log.info("mdns: found %s (%s) at %s", announcement.name, announcement.node_id, urls)
        if urls:
            self.on_discovered(announcement.node_id, urls)

    def _hub_gone(self, instance: str) -> None:
        peer = self.peers.pop(instance, None)
        if peer is not None:
            log.info("mdns: %s (%s) said goodbye", peer["name"], peer["id"])
            self.on_vanished(peer["id"])

    def _hub_registered(self, name: str) -> None:
        self.registered_name = name
        log.info("mdns: registered %s after %.2fs", name, time.monotonic() - self.started_at)

    def _hub_error(self, message: str) -> None:
        self.error = message
        log.warning("mdns: %s", message)

    def _hub_stopped(self) -> None:
        log.info("mdns: stopped")

    # -- zeroconf thread ----------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:  # never let the thread die silently
            self._post("error", f"zeroconf thread failed: {exc!r}")
        finally:
            loop.close()
            self._post("stopped")

    async def _main(self) -> None:
        addresses = [address for i in self.selection.chosen for address, _ in i.ipv4]
        try:
            aiozc = AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
        except OSError as exc:
            self._post("error", f"cannot open the mDNS socket on {addresses}: {exc}")
            return
        zc = aiozc.zeroconf
        resolving: set[asyncio.Task] = set()

        def changed(zeroconf, service_type, name, state_change) -> None:
            if state_change is ServiceStateChange.Removed:
                self._post("gone", name)
                return
            task = asyncio.ensure_future(self._resolve(zc, name))
            resolving.add(task)
            task.add_done_callback(resolving.discard)

        # Browse first: the nodes already there are found while our name is probed.
        browser = AsyncServiceBrowser(zc, SERVICE_TYPE, handlers=[changed])
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{self.instance}.{SERVICE_TYPE}",
            port=self.port,
            properties=encode_txt(self.announcement),
            server=f"{self.instance}.local.",
            addresses=[socket.inet_pton(_family(a), a) for a in self.addresses],
        )
        try:
            registering = asyncio.ensure_future(self._register(aiozc, info))
            await self._stopping.wait()
            registering.cancel()
        finally:
            # Announced (probing over) even if the announcements are still going out: say
            # goodbye. Stopped while probing: nobody has cached us, nothing to withdraw.
            registered = zc.registry.async_get_info_name(info.name) is not None
            await browser.async_cancel()
            for task in list(resolving):
                task.cancel()
            try:
                if registered:
                    await (await aiozc.async_unregister_service(info))  # goodbye packets
                await aiozc.async_close()
            except Exception as exc:
                self._post("error", f"closing zeroconf: {exc!r}")

    async def _register(self, aiozc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
        try:
            # allow_name_change: a clash (same name and id prefix) renames instead of failing.
            await (await aiozc.async_register_service(info, allow_name_change=True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._post("error", f"cannot register {info.name}: {exc!r}")
            raise
        self._post("registered", info.name)

    async def _resolve(self, zc, name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            if not await info.async_request(zc, RESOLVE_TIMEOUT_MS):
                return
            announcement = decode_txt(info.properties or {})
        except RemoteProtocolError as exc:
            log.debug("mdns: ignoring %s: %s", name, exc)
            return
        except Exception as exc:  # zeroconf's own errors: the service is not usable
            log.debug("mdns: cannot resolve %s: %r", name, exc)
            return
        addresses = info.parsed_addresses()
        self._post("seen", name, announcement, addresses, info.port)


def query_once(address: str, wait: float = 2.0) -> list[dict]:
    """Ask once, on the interface holding ``address``, which xio nodes are there.

    Sends one multicast PTR query for ``_xio._tcp.local.``, collects the answers for
    ``wait`` seconds and returns what each node announced. For ``xio-node doctor``: a
    plain blocking call, not for gevent's hub. Raises ``OSError`` if the socket fails.
    """
    from zeroconf import DNSOutgoing, DNSQuestion, ServiceInfo, Zeroconf
    from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR

    zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    try:
        out = DNSOutgoing(_FLAGS_QR_QUERY)
        out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        zc.send(out)
        time.sleep(wait)
        found = []
        for pointer in zc.cache.get_all_by_details(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN):
            info = ServiceInfo(SERVICE_TYPE, pointer.alias)
            complete = info.load_from_cache(zc)
            entry = {"instance": pointer.alias, "complete": complete, "port": info.port,
                     "addresses": info.parsed_addresses() if complete else []}  # fmt: skip
            try:
                announcement = decode_txt(info.properties or {})
                entry.update(id=announcement.node_id, name=announcement.name,
                             ws=announcement.ws_path, tls=announcement.tls)  # fmt: skip
            except RemoteProtocolError as exc:
                entry["problem"] = str(exc)
            found.append(entry)
        return found
    finally:
        zc.close()


def _real_selector() -> selectors.BaseSelector:
    """Return a selector that blocks the zeroconf thread itself, never a gevent hub.

    Monkey-patching replaces ``selectors.DefaultSelector`` with gevent's, which would run
    a second hub in that thread (seen: a segfault).
    """
    from gevent import monkey

    return monkey.get_original("selectors", "DefaultSelector")()


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


__all__ = [
    # the pure half, from mdns_names
    "DEFAULT_WS_PATH", "IFF_LOOPBACK", "IFF_MULTICAST", "IFF_UP", "MAX_TXT_VALUE",
    "PROTOCOL_VERSION", "SERVICE_TYPE", "VIRTUAL_PREFIXES", "Announcement", "InterfaceSelection",
    "NetInterface", "announced_addresses", "decode_txt", "encode_txt", "instance_name",
    "select_interfaces", "websocket_urls",
    # the adapter
    "MAX_PEERS_SEEN", "MDNS_GROUP", "MDNS_PORT", "RESOLVE_TIMEOUT_MS", "Discovery",
    "interface_flags", "query_once", "read_interfaces",
]  # fmt: skip
