"""VRRP adverts on a raw IP protocol 112 socket: the thin I/O shell around ``vrrp.packet``.

The socket is bound to one interface (``SO_BINDTODEVICE``), joins the VRRP group there
(224.0.0.18, or ff02::12 for IPv6) and sends with TTL / hop limit 255, multicast loop off, the
kernel building the IP header from our primary address (for IPv6: the interface's link-local
address, RFC 5798 5.1.2.1). Adverts go to the group, or to each of ``peers`` (unicast) when
given. Every received datagram goes through ``receive_ipv4`` or ``receive_ipv6`` (pure): TTL /
hop limit (IPv6: from ``IPV6_RECVHOPLIMIT`` ancillary data, as a raw IPv6 socket never shows the
header) -> ``parse`` (v3 checksum over the pseudo-header); what fails is counted by
``DropReason`` and never raised out of the event loop. Datagrams the kernel could not queue
(receive buffer full: a flood, or a reader held up) are counted too, as
``DropReason.SOCKET_OVERFLOW``: the socket has ``SO_RXQ_OVFL`` on, so each datagram comes with
the socket's cumulative drop count, and the increase since the last one is added.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import structlog

from vrrp.packet import (
    IPPROTO_VRRP,
    REQUIRED_TTL,
    VRRP_GROUP_V4,
    VRRP_GROUP_V6,
    Advertisement,
    Dropped,
    DropReason,
    Expected,
    IPAddress,
    check_ttl,
    encode,
    parse,
)
from vrrp.reader import close_reader

log = structlog.get_logger("vrrp")

Deliver = Callable[[Advertisement, IPAddress, float], None]  # advert, source, age (s)
_RECV_SIZE = 65535
_CMSG_SIZE = socket.CMSG_SPACE(4) * 2 + socket.CMSG_SPACE(20) + socket.CMSG_SPACE(16) + 64
SO_TIMESTAMPNS = 35  # asm-generic/socket.h (also SCM_TIMESTAMPNS)
SO_RXQ_OVFL = 40  # asm-generic/socket.h: a uint32 count of datagrams dropped on receive
_U32 = 1 << 32
MAX_AGE = 0.05  # seconds: an older receive time (a clock step) is not believed
_MIN_IPV4_HEADER = 20
_WIRE_CACHE = 8  # encoded adverts kept (priorities: own, 0, tracked changes)
IP_PKTINFO = 8  # linux/in.h; not in the socket module on every Python


@dataclass(frozen=True, slots=True)
class Own:
    """Our own advert seen again (source is our primary address): ignored, not a drop."""


def receive_ipv4(
    datagram: bytes, expected: Expected, primary: IPv4Address
) -> tuple[Advertisement, IPv4Address] | Dropped | Own:
    """One datagram as a raw IPv4 socket returns it (IP header first). Never raises."""
    if len(datagram) < _MIN_IPV4_HEADER:
        return Dropped(DropReason.TOO_SHORT, f"{len(datagram)} bytes, no IPv4 header")
    ihl = (datagram[0] & 0x0F) * 4
    if datagram[0] >> 4 != 4 or ihl < _MIN_IPV4_HEADER or len(datagram) < ihl:
        return Dropped(DropReason.TOO_SHORT, f"bad IPv4 header (first byte {datagram[0]:#04x})")
    src, dst = IPv4Address(datagram[12:16]), IPv4Address(datagram[16:20])
    if src == primary:
        return Own()
    dropped = check_ttl(datagram[8])
    if dropped is not None:
        return dropped
    advert = parse(datagram[ihl:], src, dst, expected)
    if isinstance(advert, Dropped):
        return advert
    return advert, src


def receive_ipv6(
    payload: bytes,
    src: IPv6Address,
    dst: IPv6Address,
    hop_limit: int | None,
    expected: Expected,
    primary: IPv6Address,
) -> tuple[Advertisement, IPv6Address] | Dropped | Own:
    """One datagram as a raw IPv6 socket returns it (the VRRP message only), with the source,
    destination and hop limit the kernel reported beside it. Never raises."""
    if src == primary:
        return Own()
    if hop_limit is None:
        return Dropped(DropReason.BAD_TTL, "no hop limit reported")
    dropped = check_ttl(hop_limit)
    if dropped is not None:
        return dropped
    advert = parse(payload, src, dst, expected)
    if isinstance(advert, Dropped):
        return advert
    return advert, src


class Transport:
    """A raw VRRP socket on one interface, read with ``loop.add_reader``.

    ``deliver(advert, source)`` gets each advert that passed the checks; ``drops`` counts the
    rest by reason. ``open`` must run in the network namespace the interface lives in.
    """

    def __init__(
        self,
        interface: str,
        primary: IPAddress,
        expected: Expected,
        deliver: Deliver,
        *,
        peers: Sequence[IPAddress] = (),
    ) -> None:
        if any(p.version != primary.version for p in peers):
            raise ValueError(f"unicast peers must be IPv{primary.version} like {primary}")
        if isinstance(primary, IPv6Address) and not primary.is_link_local:
            raise ValueError(f"the IPv6 primary address {primary} must be link-local (fe80::/10)")
        self.interface = interface
        self.primary = primary
        self.expected = expected
        self.peers = tuple(peers)
        self.drops: Counter[DropReason] = Counter()
        self.received = 0  # adverts delivered
        self.sent = 0
        self.send_errors = 0
        self.kernel_drops = 0  # the socket's cumulative drop count, as last reported
        self._deliver = deliver
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pktinfo = b""  # struct in_pktinfo / in6_pktinfo: our interface and source
        self._index = 0
        self._wire: dict[Advertisement, list[tuple[IPAddress, bytes, tuple[object, ...]]]] = {}
        self.group: IPAddress = VRRP_GROUP_V4 if primary.version == 4 else VRRP_GROUP_V6

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        index = socket.if_nametoindex(self.interface)
        v6 = self.primary.version == 6
        sock = socket.socket(
            socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP
        )
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            if v6:
                self._setup_ipv6(sock, index)
            else:
                self._setup_ipv4(sock, index)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop, self._index = sock, loop, index
        self.kernel_drops = 0  # a new socket counts from 0
        self._wire.clear()
        if v6:
            self._pktinfo = struct.pack("16sI", self.primary.packed, index)
        else:
            self._pktinfo = struct.pack("i4s4s", index, self.primary.packed, b"\0" * 4)

    def _setup_ipv4(self, sock: socket.socket, index: int) -> None:
        mreqn = struct.pack("4s4si", VRRP_GROUP_V4.packed, self.primary.packed, index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        ifreq = struct.pack("4s4si", b"\0" * 4, self.primary.packed, index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ifreq)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)

    def _setup_ipv6(self, sock: socket.socket, index: int) -> None:
        mreq = struct.pack("16sI", VRRP_GROUP_V6.packed, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, REQUIRED_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)

    def close(self) -> None:
        close_reader(self._sock, self._loop)
        self._sock = None

    def prepare(self, advert: Advertisement) -> list[tuple[IPAddress, bytes, tuple[object, ...]]]:
        """Encode ``advert`` (checksum included) for each destination and keep the bytes: the
        instance prepares the advert it will send on taking over, so that the takeover's hot
        path has no encoding in it. Cached per advert (in practice: per priority)."""
        if self._sock is None:
            raise RuntimeError("transport is not open")
        cached = self._wire.get(advert)
        if cached is not None:
            return cached
        v6 = self.primary.version == 6
        wire: list[tuple[IPAddress, bytes, tuple[object, ...]]] = []
        address: tuple[object, ...]
        for dst in self.peers or (self.group,):
            scope = self._index if v6 and (dst.is_link_local or dst.is_multicast) else 0
            address = (str(dst), 0, 0, scope) if v6 else (str(dst), 0)
            wire.append((dst, encode(advert, self.primary, dst), address))
        if len(self._wire) >= _WIRE_CACHE:
            self._wire.clear()
        self._wire[advert] = wire
        return wire

    def send(self, advert: Advertisement) -> None:
        """Send to the group (or each unicast peer); errors are logged and counted."""
        if self._sock is None:
            raise RuntimeError("transport is not open")
        v6 = self.primary.version == 6
        level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
        ancillary = [(level, socket.IPV6_PKTINFO if v6 else IP_PKTINFO, self._pktinfo)]
        wire = self._wire.get(advert) or self.prepare(advert)
        for dst, data, to in wire:
            try:
                self._sock.sendmsg([data], ancillary, 0, to)
            except OSError as exc:
                self.send_errors += 1
                log.warning(
                    "vrrp_send_failed", interface=self.interface, to=str(dst), error=str(exc)
                )
            else:
                self.sent += 1

    def receive_pending(self) -> None:
        """Read and deliver every datagram queued on the socket now (the loop's reader does
        this when the socket is readable; the instance calls it before a deadline it waited
        for without the loop, so that an advert that arrived in time still counts)."""
        self._readable()

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                datagram, ancillary, _flags, address = sock.recvmsg(_RECV_SIZE, _CMSG_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("vrrp_receive_failed", interface=self.interface, error=str(exc))
                return
            self._count_overflow(ancillary)
            stamp = _stamp(ancillary)
            if isinstance(self.primary, IPv6Address):
                self._handle(
                    self._receive_ipv6(datagram, ancillary, address[0], self.primary), stamp
                )
            else:
                self._handle(receive_ipv4(datagram, self.expected, self.primary), stamp)

    def _count_overflow(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        dropped = overflow(ancillary)
        if dropped is None:
            return
        more = (dropped - self.kernel_drops) % _U32
        self.kernel_drops = dropped
        if more:
            self.drops[DropReason.SOCKET_OVERFLOW] += more
            log.debug("vrrp_socket_overflow", interface=self.interface, dropped=more)

    def _receive_ipv6(
        self,
        payload: bytes,
        ancillary: list[tuple[int, int, bytes]],
        source: str,
        primary: IPv6Address,
    ) -> tuple[Advertisement, IPAddress] | Dropped | Own:
        hop_limit: int | None = None
        dst: IPv6Address = VRRP_GROUP_V6
        for level, kind, data in ancillary:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_HOPLIMIT and len(data) >= 4:
                (hop_limit,) = struct.unpack_from("i", data)
            elif kind == socket.IPV6_PKTINFO and len(data) >= 16:
                dst = IPv6Address(data[:16])
        src = IPv6Address(source.split("%", 1)[0])
        return receive_ipv6(payload, src, dst, hop_limit, self.expected, primary)

    def _handle(
        self, result: tuple[Advertisement, IPAddress] | Dropped | Own, stamp: float | None
    ) -> None:
        if isinstance(result, Own):
            return
        if isinstance(result, Dropped):
            self.drops[result.reason] += 1
            log.debug(
                "vrrp_dropped",
                interface=self.interface,
                reason=str(result.reason),
                detail=result.detail,
            )
            return
        self.received += 1
        try:
            self._deliver(*result, _age(stamp))
        except Exception:
            log.exception("vrrp_advert_handler_failed", interface=self.interface)


def overflow(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The socket's cumulative count of datagrams dropped on receive, as ``SO_RXQ_OVFL``
    reports it beside a datagram (the kernel leaves it out while the count is 0)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
            count: int = struct.unpack_from("=I", data)[0]
            return count
    return None


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel received the datagram (its SO_TIMESTAMPNS, wall clock), if given."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            stamp: float = seconds + nanoseconds / 1e9
            return stamp
    return None


def _age(stamp: float | None) -> float:
    """How long ago the kernel received the datagram, 0 if unknown: a backup's
    Master_Down_Timer runs from the advert's arrival, not from when Python saw it. Read just
    before the delivery, whose receiver reads its own clock at once (the parsing in between
    would otherwise count as transit)."""
    if stamp is None:
        return 0.0
    age = time.time() - stamp
    return age if 0.0 <= age <= MAX_AGE else 0.0
