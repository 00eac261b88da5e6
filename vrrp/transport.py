"""VRRP adverts on a raw IP protocol 112 socket: the thin I/O shell around ``vrrp.packet``.

IPv4 only for now. The socket is bound to one interface (``SO_BINDTODEVICE``), joins 224.0.0.18
there and sends with TTL 255, multicast loop off, the kernel building the IP header. Adverts go
to the group, or to each of ``peers`` (unicast) when given. Every received datagram goes through
``receive_ipv4`` (pure): IP header -> ``check_ttl`` -> ``parse``; what fails is counted by
``DropReason`` and never raised out of the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from vrrp.packet import (
    IPPROTO_VRRP,
    REQUIRED_TTL,
    VRRP_GROUP_V4,
    Advertisement,
    Dropped,
    DropReason,
    Expected,
    IPAddress,
    check_ttl,
    encode,
    parse,
)

log = logging.getLogger(__name__)

Deliver = Callable[[Advertisement, IPAddress], None]
_RECV_SIZE = 65535
_MIN_IPV4_HEADER = 20
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


class Transport:
    """A raw VRRP socket on one interface, read with ``loop.add_reader``.

    ``deliver(advert, source)`` gets each advert that passed the checks; ``drops`` counts the
    rest by reason. ``open`` must run in the network namespace the interface lives in.
    """

    def __init__(
        self,
        interface: str,
        primary: IPv4Address,
        expected: Expected,
        deliver: Deliver,
        *,
        peers: Sequence[IPv4Address] = (),
    ) -> None:
        if primary.version != 4 or any(p.version != 4 for p in peers):
            raise ValueError("vrrp.transport supports IPv4 only")
        self.interface = interface
        self.primary = primary
        self.expected = expected
        self.peers = tuple(peers)
        self.drops: Counter[DropReason] = Counter()
        self.received = 0  # adverts delivered
        self.sent = 0
        self.send_errors = 0
        self._deliver = deliver
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pktinfo = b""  # struct in_pktinfo: our interface and source address

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        index = socket.if_nametoindex(self.interface)
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            mreqn = struct.pack("4s4si", VRRP_GROUP_V4.packed, self.primary.packed, index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            ifreq = struct.pack("4s4si", b"\0" * 4, self.primary.packed, index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ifreq)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, REQUIRED_TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, REQUIRED_TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        self._pktinfo = struct.pack("i4s4s", index, self.primary.packed, b"\0" * 4)

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def send(self, advert: Advertisement) -> None:
        """Send to the group (or each unicast peer); errors are logged and counted."""
        if self._sock is None:
            raise RuntimeError("transport is not open")
        for dst in self.peers or (VRRP_GROUP_V4,):
            data = encode(advert, self.primary, dst)
            ancillary = [(socket.IPPROTO_IP, IP_PKTINFO, self._pktinfo)]
            try:
                self._sock.sendmsg([data], ancillary, 0, (str(dst), 0))
            except OSError as exc:
                self.send_errors += 1
                log.warning("sending VRRP advert to %s on %s: %s", dst, self.interface, exc)
            else:
                self.sent += 1

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                datagram = sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("receiving VRRP on %s: %s", self.interface, exc)
                return
            self._handle(datagram)

    def _handle(self, datagram: bytes) -> None:
        result = receive_ipv4(datagram, self.expected, self.primary)
        if isinstance(result, Own):
            return
        if isinstance(result, Dropped):
            self.drops[result.reason] += 1
            log.debug("dropped VRRP on %s: %s (%s)", self.interface, result.reason, result.detail)
            return
        self.received += 1
        try:
            self._deliver(*result)
        except Exception:
            log.exception("handling a VRRP advert on %s", self.interface)
