"""What a host on the LAN sees: an ``AF_PACKET`` capture decoded into ARP, VRRP and ND events.

The socket is opened inside a namespace (on a ``NamespaceLoop``'s thread) and bound to one
device; every frame carries the kernel's receive timestamp (``SO_TIMESTAMPNS``, wall clock), so
intervals between packets do not depend on when the test gets round to reading them. Used by
the interop tests and by ``bench/failover``.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from tests.helpers.servers import NamespaceLoop
from vrrp.packet import IPPROTO_VRRP, Advertisement, IPAddress, decode

ETH_P_ALL = 0x0003
ETH_P_ARP, ETH_P_IP, ETH_P_IPV6 = 0x0806, 0x0800, 0x86DD
SO_TIMESTAMPNS, SO_RCVBUFFORCE = 35, 33  # asm-generic/socket.h
SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23  # linux/socket.h, linux/if_packet.h (4.20)
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"


@dataclass(frozen=True)
class Arp:
    at: float
    source_mac: bytes  # Ethernet source
    op: int
    sender_mac: bytes
    sender_ip: IPv4Address
    target_ip: IPv4Address

    @property
    def gratuitous(self) -> bool:
        return self.sender_ip == self.target_ip


@dataclass(frozen=True)
class Vrrp:
    at: float
    source_mac: bytes
    src: IPAddress
    dst: IPAddress
    ttl: int  # IPv4 TTL or IPv6 hop limit
    advert: Advertisement | None  # None: it did not decode (checksum, length ...)


@dataclass(frozen=True)
class NeighbourAdvert:
    at: float
    source_mac: bytes
    dst_mac: bytes
    src: IPv6Address
    dst: IPv6Address
    hop_limit: int
    flags: int  # the first 32 bits after the checksum: R 0x80000000, S 0x40..., O 0x20...
    target: IPv6Address
    target_mac: bytes | None  # the target link-layer address option


Event = Arp | Vrrp | NeighbourAdvert


def decode_frame(frame: bytes, at: float) -> Event | None:
    """One Ethernet frame as an event, or None for anything else. Never raises."""
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    source_mac = frame[6:12]
    if ethertype == ETH_P_ARP and len(frame) >= 42:
        op, sha, spa, _tha, tpa = struct.unpack_from("!6xH6s4s6s4s", frame, 14)
        return Arp(at, source_mac, op, sha, IPv4Address(spa), IPv4Address(tpa))
    if ethertype == ETH_P_IP and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        ttl, proto = frame[22], frame[23]
        if proto != IPPROTO_VRRP:
            return None
        src4, dst4 = IPv4Address(frame[26:30]), IPv4Address(frame[30:34])
        total = struct.unpack_from("!H", frame, 16)[0]
        payload = frame[14 + ihl : 14 + total]
        advert = decode(payload, src4, dst4)
        return Vrrp(
            at,
            source_mac,
            src4,
            dst4,
            ttl,
            None if not isinstance(advert, Advertisement) else advert,
        )
    if ethertype == ETH_P_IPV6 and len(frame) >= 54:
        length, nxt, hops = struct.unpack_from("!HBB", frame, 18)
        src6, dst6 = IPv6Address(frame[22:38]), IPv6Address(frame[38:54])
        payload = frame[54 : 54 + length]
        if nxt == IPPROTO_VRRP:
            advert = decode(payload, src6, dst6)
            ok = advert if isinstance(advert, Advertisement) else None
            return Vrrp(at, source_mac, src6, dst6, hops, ok)
        if nxt == IPPROTO_ICMPV6 and len(payload) >= 24 and payload[0] == ND_NEIGHBOR_ADVERT:
            (flags,) = struct.unpack_from("!I", payload, 4)
            target = IPv6Address(payload[8:24])
            target_mac = None
            if len(payload) >= 32 and payload[24] == 2 and payload[25] == 1:
                target_mac = payload[26:32]
            return NeighbourAdvert(
                at, source_mac, frame[0:6], src6, dst6, hops, flags, target, target_mac
            )
    return None


def interval_deviations(times: Sequence[float], interval: float) -> list[float]:
    """How far each gap between consecutive ``times`` is from ``interval`` (absolute, s),
    sorted: an advert jitter. Fewer than two times: none."""
    return sorted(abs(b - a - interval) for a, b in itertools.pairwise(times))


class Capture:
    """Every frame on ``device`` inside the loop's namespace; ``take()`` drains what is queued."""

    def __init__(self, inside: NamespaceLoop, device: str = "eth0") -> None:
        async def opened() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # root: past rmem_max
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                sock.bind((device, ETH_P_ALL))
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            return sock

        self.sock = inside.run(opened())
        self.events: list[Event] = []  # everything taken so far

    def take(self) -> list[Event]:
        """The events received since the last call (also appended to ``events``)."""
        seen: list[Event] = []
        while True:
            try:
                frame, ancillary, _flags, address = self.sock.recvmsg(65535, 64)
            except BlockingIOError:
                break
            if address[2] == socket.PACKET_OUTGOING:
                continue
            at = 0.0
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    seconds, nanoseconds = struct.unpack_from("qq", data)
                    at = seconds + nanoseconds / 1e9
            event = decode_frame(frame, at)
            if event is not None:
                seen.append(event)
        self.events.extend(seen)
        return seen

    def arps(self) -> list[Arp]:
        self.take()
        return [e for e in self.events if isinstance(e, Arp)]

    def adverts(self) -> list[Vrrp]:
        self.take()
        return [e for e in self.events if isinstance(e, Vrrp)]

    def advert_times(self, src: str) -> list[float]:
        """When the well-formed adverts from ``src`` were received (kernel timestamps)."""
        return [v.at for v in self.adverts() if str(v.src) == src and v.advert is not None]

    def neighbour_adverts(self) -> list[NeighbourAdvert]:
        self.take()
        return [e for e in self.events if isinstance(e, NeighbourAdvert)]

    def clear(self) -> None:
        self.take()
        self.events.clear()

    def close(self) -> None:
        self.sock.close()
