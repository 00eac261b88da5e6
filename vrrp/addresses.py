"""Virtual addresses on their devices (rtnetlink), gratuitous ARP and unsolicited NA.

The thin I/O side of ``AddAddresses`` / ``RemoveAddresses`` / ``SendGratuitous``. Changes go
through ``vrrp.rtnl`` (one acknowledged request each, ~0.1 ms), and so do the dumps that tell
which addresses are on their devices (one request for every device). Each virtual
address may live on its own device with its own prefix and label (keepalived's ``dev`` and
``label``); by default it goes on the instance's interface as a host address. Adding an address
that is already there and removing one that is gone both succeed: the machine's intent is the
state wanted, not the change. IPv6 addresses are added with ``nodad`` (a virtual address must
answer at once, and the backup that had it has just dropped it). Announcements go out on an
``AF_PACKET`` socket per device: a gratuitous ARP request per IPv4 address, an unsolicited
neighbour advertisement (RFC 4861 7.2.6, Override and Router flags as RFC 5798 6.4.2 asks) per
IPv6 address. ``open`` must run in the devices' namespace. The start-up cleanup of every
instance at once is ``vrrp.rtnl.remove_leftovers``: one rtnetlink socket, one dump, one delete
per leftover.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

import structlog

from vrrp.packet import REQUIRED_TTL, IPAddress, checksum
from vrrp.rtnl import AddressSocket, request

log = structlog.get_logger("vrrp")

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
BROADCAST_MAC = b"\xff" * 6
ARP_REQUEST = 1
ALL_NODES = IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000
ND_OPT_TARGET_LL_ADDR = 2
IFA_F_NODAD = 0x02
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV6 = struct.Struct("!IHBB16s16s")


@dataclass(frozen=True, slots=True)
class VirtualAddress:
    """One virtual address and where it goes: ``device`` None = the instance's interface,
    ``prefixlen`` None = a host prefix (/32, /128), ``label`` (IPv4 only) like ``eth0:3``."""

    address: IPAddress
    prefixlen: int | None = None
    device: str | None = None
    label: str | None = None

    def problems(self, interface: str) -> list[str]:
        found = []
        device = self.device or interface
        if self.prefixlen is not None and not 0 <= self.prefixlen <= self.address.max_prefixlen:
            found.append(f"{self.address}: prefix length {self.prefixlen} out of range")
        if self.label is not None:
            if self.address.version != 4:
                found.append(f"{self.address}: a label needs an IPv4 address")
            elif not self.label.startswith(device) or len(self.label.encode()) > 15:
                found.append(
                    f"{self.address}: label {self.label!r} must start with the device name "
                    f"{device!r} and have at most 15 characters"
                )
        return found


def gratuitous_arp(mac: bytes, address: IPv4Address) -> bytes:
    """An Ethernet broadcast ARP request with sender = target = ``address`` (RFC 5227 style)."""
    if len(mac) != 6:
        raise ValueError(f"MAC address of {len(mac)} bytes, expected 6")
    header = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = _ARP.pack(
        1, ETH_P_IP, 6, 4, ARP_REQUEST, mac, address.packed, BROADCAST_MAC, address.packed
    )
    return header + arp


def unsolicited_na(mac: bytes, address: IPv6Address) -> bytes:
    """An Ethernet frame: IPv6 ``address`` -> ff02::1, hop limit 255, ICMPv6 neighbour
    advertisement for target ``address`` (Router + Override, not Solicited) with its MAC."""
    if len(mac) != 6:
        raise ValueError(f"MAC address of {len(mac)} bytes, expected 6")
    option = struct.pack("!BB6s", ND_OPT_TARGET_LL_ADDR, 1, mac)
    body = struct.pack("!I16s", NA_ROUTER | NA_OVERRIDE, address.packed) + option
    length = 4 + len(body)
    pseudo = address.packed + ALL_NODES.packed + struct.pack("!I3xB", length, IPPROTO_ICMPV6)
    value = checksum(pseudo + struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, 0) + body)
    icmp = struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, value) + body
    ipv6 = _IPV6.pack(
        6 << 28, length, IPPROTO_ICMPV6, REQUIRED_TTL, address.packed, ALL_NODES.packed
    )
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


@dataclass
class _Device:
    """An interface the VIPs are placed on, and its gratuitous ARP frames."""

    index: int
    mac: bytes
    packet: socket.socket  # AF_PACKET, protocol 0: sends only, never queues a frame
    frames: dict[IPAddress, bytes] = field(default_factory=dict)  # built once per address


class AddressManager:
    """Adds and removes the virtual addresses and announces them on their devices.

    ``virtual`` says where each address goes; an address not listed there goes on
    ``interface`` with ``prefixlen`` (default: host prefix) and ``label`` (IPv4 only).
    """

    def __init__(
        self,
        interface: str,
        *,
        prefixlen: int | None = None,
        label: str | None = None,
        virtual: Sequence[VirtualAddress] = (),
    ) -> None:
        if label is not None and not label.startswith(interface):
            raise ValueError(f"label {label!r} must start with the interface name {interface!r}")
        problems = [p for v in virtual for p in v.problems(interface)]
        if len({v.address for v in virtual}) != len(virtual):
            problems.append("a virtual address is listed twice")
        if problems:
            raise ValueError("virtual addresses: " + "; ".join(problems))
        self.interface = interface
        self.prefixlen = prefixlen
        self.label = label
        self.virtual = {v.address: v for v in virtual}
        self.garp_sent = 0  # gratuitous ARPs and unsolicited NAs
        self.errors = 0
        self._rtnl: AddressSocket | None = None
        self._pending: list[tuple[int, str, IPAddress, int, str]] = []  # sent by add_now
        self._devices: dict[str, _Device] = {}

    def placement(self, address: IPAddress) -> VirtualAddress:
        """Where ``address`` goes: device, prefix length and label all filled in."""
        spec = self.virtual.get(address)
        device = (spec.device if spec else None) or self.interface
        prefixlen = spec.prefixlen if spec and spec.prefixlen is not None else self.prefixlen
        if prefixlen is None:
            prefixlen = address.max_prefixlen
        label = spec.label if spec else (self.label if device == self.interface else None)
        return VirtualAddress(address, prefixlen, device, label if address.version == 4 else None)

    @property
    def devices(self) -> list[str]:
        named = {v.device for v in self.virtual.values() if v.device}
        return [self.interface, *sorted(named - {self.interface})]

    async def open(self) -> None:
        try:
            self._rtnl = AddressSocket()
            for name in self.devices:
                try:
                    index = socket.if_nametoindex(name)
                except OSError:
                    raise OSError(
                        errno.ENODEV, f"no interface {name} for virtual addresses"
                    ) from None
                packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                try:
                    packet.bind((name, 0))
                    packet.setblocking(False)
                    mac = bytes(packet.getsockname()[4])
                except BaseException:
                    packet.close()
                    raise
                self._devices[name] = _Device(index, mac, packet)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for device in self._devices.values():
            device.packet.close()
        self._devices.clear()
        self._pending.clear()
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None

    async def present(self, addresses: Iterable[IPAddress]) -> set[IPAddress]:
        """Which of ``addresses`` are on their devices now."""
        return set(await self._found(addresses))

    async def _found(self, addresses: Iterable[IPAddress]) -> dict[IPAddress, int]:
        """Those of ``addresses`` on their devices now, with the prefix length they have."""
        wanted = set(addresses)
        on: dict[IPAddress, int] = {}
        if not wanted:
            return on
        where = {a: self._device(self.placement(a).device or self.interface).index for a in wanted}
        for message in self._netlink().dump():
            if where.get(message.address) == message.index:
                on[message.address] = message.prefixlen
        return on

    async def add(self, addresses: Iterable[IPAddress]) -> None:
        self.add_now(addresses)
        self.confirm()

    async def remove(self, addresses: Iterable[IPAddress]) -> None:
        self.remove_now(addresses)

    def add_now(self, addresses: Iterable[IPAddress]) -> None:
        """``add`` without a loop turn: one rtnetlink request per address, done by the kernel
        when its send returns, so a takeover's GARPs leave right behind its advert. The
        answers are read by ``confirm`` (call it after the GARPs): that is where a refusal
        raises."""
        for address in addresses:
            self._send("add", address)

    def confirm(self) -> None:
        """Read the answers to ``add_now``'s requests; ``OSError`` naming the first refused."""
        pending, self._pending = self._pending, []
        failed: OSError | None = None
        for seq, command, address, prefixlen, name in pending:
            try:
                self._confirm(seq, command, address, prefixlen, name)
            except OSError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def remove_now(self, addresses: Iterable[IPAddress]) -> None:
        for address in addresses:
            self._change("del", address)

    def restore(self, addresses: Iterable[IPAddress]) -> list[IPAddress]:
        """Add ``addresses`` again (someone deleted them); those that really were missing
        (one already there is not restored). ``OSError`` naming the first refused."""
        sent = [(address, self._request("add", address)) for address in addresses]
        restored: list[IPAddress] = []
        failed: OSError | None = None
        for address, (seq, _, _, prefixlen, name) in sent:
            assert self._rtnl is not None  # _request checked
            try:
                self._rtnl.confirm(seq)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    continue
                self.errors += 1
                text = f"restoring {address}/{prefixlen} on {name}: {exc.strerror}"
                failed = failed or OSError(exc.errno, text)
            else:
                restored.append(address)
        if failed is not None:
            raise failed
        return restored

    def index_of(self, address: IPAddress) -> int:
        """The interface index of the device ``address`` goes on (the manager is open)."""
        return self._device(self.placement(address).device or self.interface).index

    async def remove_stale(self, addresses: Iterable[IPAddress]) -> set[IPAddress]:
        """Remove the ones a previous run left behind (call while not master); those removed."""
        left = await self._found(addresses)
        for address in sorted(left, key=lambda a: (a.version, int(a))):
            self._change("del", address, left[address])
        return set(left)

    def gratuitous(self, addresses: Iterable[IPAddress]) -> None:
        """One round: a gratuitous ARP (IPv4) or unsolicited NA (IPv6) per address."""
        for address in addresses:
            name, device, frame = self._frame(address)
            try:
                device.packet.send(frame)
            except OSError as exc:
                self.errors += 1
                log.warning(
                    "vrrp_announce_failed", address=str(address), device=name, error=str(exc)
                )
            else:
                self.garp_sent += 1

    def _frame(self, address: IPAddress) -> tuple[str, _Device, bytes]:
        """The device ``address`` is announced on, and its frame (built once)."""
        name = self.placement(address).device or self.interface
        device = self._device(name)
        frame = device.frames.get(address)
        if frame is None:
            if isinstance(address, IPv4Address):
                frame = gratuitous_arp(device.mac, address)
            else:
                frame = unsolicited_na(device.mac, address)
            device.frames[address] = frame
        return name, device, frame

    def _netlink(self) -> AddressSocket:
        if self._rtnl is None:
            raise RuntimeError("address manager is not open")
        return self._rtnl

    def _device(self, name: str) -> _Device:
        if name not in self._devices:
            raise RuntimeError(f"address manager is not open (device {name})")
        return self._devices[name]

    def _change(self, command: str, address: IPAddress, prefixlen: int | None = None) -> None:
        self._confirm(*self._request(command, address, prefixlen))

    def _send(self, command: str, address: IPAddress) -> None:
        self._pending.append(self._request(command, address))

    def prepare(self, addresses: Iterable[IPAddress]) -> None:
        """Build the add requests and the GARP / NA frames of ``addresses`` now (nothing is
        sent): a backup does this before its takeover, which then only sends them."""
        for address in addresses:
            command, index, _, prefixlen, label, flags, _ = self._placed("add", address)
            request(command, index, address, prefixlen, label=label, flags=flags)
            self._frame(address)

    def _placed(
        self, command: str, address: IPAddress, prefixlen: int | None = None
    ) -> tuple[str, int, IPAddress, int, str | None, int, str]:
        """(command, device index, address, prefix length, label, flags, device name)."""
        where = self.placement(address)
        name = where.device or self.interface
        if prefixlen is None:
            prefixlen = where.prefixlen if where.prefixlen is not None else address.max_prefixlen
        label = where.label if command == "add" else None
        flags = IFA_F_NODAD if command == "add" and address.version == 6 else 0
        return command, self._device(name).index, address, prefixlen, label, flags, name

    def _request(
        self, command: str, address: IPAddress, prefixlen: int | None = None
    ) -> tuple[int, str, IPAddress, int, str]:
        """Send one add or delete: (seq, command, address, prefix length, device)."""
        if self._rtnl is None:
            raise RuntimeError("address manager is not open")
        _, index, _, prefixlen, label, flags, name = self._placed(command, address, prefixlen)
        seq = self._rtnl.send(command, index, address, prefixlen, label=label, flags=flags)
        return seq, command, address, prefixlen, name

    def _confirm(
        self, seq: int, command: str, address: IPAddress, prefixlen: int, name: str
    ) -> None:
        if self._rtnl is None:
            raise RuntimeError("address manager is not open")
        try:
            self._rtnl.confirm(seq)
        except OSError as exc:
            benign = errno.EEXIST if command == "add" else errno.EADDRNOTAVAIL
            if exc.errno == benign:
                return
            self.errors += 1
            verb = "adding" if command == "add" else "removing"
            raise OSError(
                exc.errno, f"{verb} {address}/{prefixlen} on {name}: {exc.strerror}"
            ) from exc
