"""Virtual addresses on the interface (pyroute2 netlink) and gratuitous ARP (AF_PACKET).

The thin I/O side of ``AddAddresses`` / ``RemoveAddresses`` / ``SendGratuitous``. Adding an
address that is already there and removing one that is gone both succeed: the machine's
intent is the state wanted, not the change. ``open`` must run in the interface's namespace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, ip_address

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vrrp.packet import IPAddress

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST_MAC = b"\xff" * 6
ARP_REQUEST = 1
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def gratuitous_arp(mac: bytes, address: IPv4Address) -> bytes:
    """An Ethernet broadcast ARP request with sender = target = ``address`` (RFC 5227 style)."""
    if len(mac) != 6:
        raise ValueError(f"MAC address of {len(mac)} bytes, expected 6")
    header = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = _ARP.pack(
        1, ETH_P_IP, 6, 4, ARP_REQUEST, mac, address.packed, BROADCAST_MAC, address.packed
    )
    return header + arp


class AddressManager:
    """Adds and removes the virtual addresses on ``interface`` and announces them.

    ``prefixlen`` defaults to a host prefix (/32, /128); ``label`` (IPv4 only) names the
    addresses like ``eth0:3``, as keepalived's ``label`` does.
    """

    def __init__(
        self, interface: str, *, prefixlen: int | None = None, label: str | None = None
    ) -> None:
        if label is not None and not label.startswith(interface):
            raise ValueError(f"label {label!r} must start with the interface name {interface!r}")
        self.interface = interface
        self.prefixlen = prefixlen
        self.label = label
        self.garp_sent = 0
        self.errors = 0
        self._ipr: AsyncIPRoute | None = None
        self._index = 0
        self._packet: socket.socket | None = None
        self._mac = b""

    async def open(self) -> None:
        ipr = AsyncIPRoute()
        try:
            await ipr.setup_endpoint()
            found = await ipr.link_lookup(ifname=self.interface)
            if not found:
                raise OSError(errno.ENODEV, f"no interface {self.interface}")
            packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        except BaseException:
            ipr.close()
            raise
        try:
            packet.bind((self.interface, ETH_P_ARP))
            packet.setblocking(False)
            self._mac = bytes(packet.getsockname()[4])
        except BaseException:
            packet.close()
            ipr.close()
            raise
        self._ipr, self._index, self._packet = ipr, found[0], packet

    def close(self) -> None:
        if self._packet is not None:
            self._packet.close()
            self._packet = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def present(self, addresses: Iterable[IPAddress]) -> set[IPAddress]:
        """Which of ``addresses`` are on the interface now."""
        wanted = set(addresses)
        on = set()
        async for message in await self._netlink().addr("dump", index=self._index):
            text = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
            if text is None:
                continue
            with contextlib.suppress(ValueError):
                address = ip_address(text)
                if address in wanted:
                    on.add(address)
        return on

    async def add(self, addresses: Iterable[IPAddress]) -> None:
        for address in addresses:
            await self._change("add", address)

    async def remove(self, addresses: Iterable[IPAddress]) -> None:
        for address in addresses:
            await self._change("del", address)

    async def remove_stale(self, addresses: Iterable[IPAddress]) -> set[IPAddress]:
        """Remove the ones a previous run left behind (call while not master); those removed."""
        left = await self.present(addresses)
        await self.remove(sorted(left, key=lambda a: (a.version, int(a))))
        return left

    def gratuitous(self, addresses: Iterable[IPAddress]) -> None:
        """One round: one gratuitous ARP per IPv4 address (IPv6 NA: not yet)."""
        if self._packet is None:
            raise RuntimeError("address manager is not open")
        for address in addresses:
            if not isinstance(address, IPv4Address):
                continue
            try:
                self._packet.send(gratuitous_arp(self._mac, address))
            except OSError as exc:
                self.errors += 1
                log.warning("gratuitous ARP for %s on %s: %s", address, self.interface, exc)
            else:
                self.garp_sent += 1

    def _netlink(self) -> AsyncIPRoute:
        if self._ipr is None:
            raise RuntimeError("address manager is not open")
        return self._ipr

    async def _change(self, command: str, address: IPAddress) -> None:
        prefixlen = self.prefixlen if self.prefixlen is not None else address.max_prefixlen
        extra = {"label": self.label} if self.label is not None and address.version == 4 else {}
        try:
            await self._netlink().addr(
                command, index=self._index, address=str(address), prefixlen=prefixlen, **extra
            )
        except NetlinkError as exc:
            benign = errno.EEXIST if command == "add" else errno.EADDRNOTAVAIL
            if exc.code == benign:
                return
            self.errors += 1
            verb = "adding" if command == "add" else "removing"
            raise OSError(
                exc.code, f"{verb} {address}/{prefixlen} on {self.interface}: {exc}"
            ) from exc
