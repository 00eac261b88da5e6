"""The IPVS table as data: frozen keys and entries, named as the kernel names them.

These types are shared by the desired state (what the daemon wants), the observed state (what a
kernel dump returned) and the planner that diffs the two. They carry only the fields the daemon
owns; counters live in :mod:`director.ipvs.stats`.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Family(enum.IntEnum):
    """Address family, as the kernel's ``IPVS_SVC_ATTR_AF`` carries it."""

    INET = socket.AF_INET
    INET6 = socket.AF_INET6

    @classmethod
    def of(cls, address: IPAddress) -> Family:
        return cls.INET if address.version == 4 else cls.INET6

    @property
    def label(self) -> str:
        return "ipv4" if self is Family.INET else "ipv6"

    @property
    def max_prefix(self) -> int:
        return 32 if self is Family.INET else 128


class Protocol(enum.IntEnum):
    """Transport protocol of an address:port service (``IPVS_SVC_ATTR_PROTOCOL``)."""

    TCP = socket.IPPROTO_TCP
    UDP = socket.IPPROTO_UDP
    SCTP = 132

    @property
    def label(self) -> str:
        return self.name.lower()


class Forwarding(enum.IntEnum):
    """Packet-forwarding method of a destination (``IP_VS_CONN_F_FWD_MASK`` values)."""

    NAT = 0  # IP_VS_CONN_F_MASQ
    TUNNEL = 2  # IP_VS_CONN_F_TUNNEL
    DR = 3  # IP_VS_CONN_F_DROUTE

    @property
    def label(self) -> str:
        return {Forwarding.NAT: "nat", Forwarding.TUNNEL: "tun", Forwarding.DR: "dr"}[self]


class TunnelType(enum.IntEnum):
    """Encapsulation of a tunnel destination (``IPVS_DEST_ATTR_TUN_TYPE``, u8).

    The kernel reads the attribute from Linux 5.2 (GUE) and 5.3 (GRE); an older kernel ignores
    it and tunnels in IP-in-IP."""

    IPIP = 0  # IP_VS_CONN_F_TUNNEL_TYPE_IPIP
    GUE = 1  # IP_VS_CONN_F_TUNNEL_TYPE_GUE: UDP to tun_port, a GUE header, then the packet
    GRE = 2  # IP_VS_CONN_F_TUNNEL_TYPE_GRE

    @property
    def label(self) -> str:
        return self.name.lower()


# Tunnel encapsulation flags (IPVS_DEST_ATTR_TUN_FLAGS, u16; Linux 5.3).
TUN_F_NOCSUM = 0  # IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM
TUN_F_CSUM = 1 << 0  # IP_VS_TUNNEL_ENCAP_FLAG_CSUM: GUE's UDP checksum, GRE's checksum
TUN_F_REMCSUM = 1 << 1  # IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM: GUE remote checksum offload


# Service flags (include/uapi/linux/ip_vs.h).
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002  # kernel-internal, reported on dump, never sent
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020
# The flags the daemon owns and compares; HASHED is the kernel's business.
OWNED_SVC_FLAGS = SVC_F_PERSISTENT | SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3

SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}
)
# Scheduler flags by name, valid only for the scheduler named first in the key.
SCHED_FLAGS: dict[str, tuple[str, int]] = {
    "sh-fallback": ("sh", SVC_F_SCHED1),
    "sh-port": ("sh", SVC_F_SCHED2),
    "mh-fallback": ("mh", SVC_F_SCHED1),
    "mh-port": ("mh", SVC_F_SCHED2),
}


@dataclass(frozen=True, order=True, slots=True)
class ServiceKey:
    """What identifies a virtual service: protocol+address+port, or fwmark+family."""

    family: Family
    protocol: Protocol | None = None
    address: IPAddress | None = None
    port: int = 0
    fwmark: int = 0
    _hash: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:  # computed once: keys are hashed on every table lookup
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, ServiceKey):
            return NotImplemented
        return (
            self._hash == other._hash
            and self.fwmark == other.fwmark
            and self.port == other.port
            and self.family == other.family
            and self.protocol == other.protocol
            and self.address == other.address
        )

    def __copy__(self) -> ServiceKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ServiceKey:
        return self

    def __post_init__(self) -> None:
        fields = (self.family, self.protocol, self.address, self.port, self.fwmark)
        object.__setattr__(self, "_hash", hash(fields))
        if self.fwmark:
            if self.protocol is not None or self.address is not None or self.port:
                raise ValueError("an fwmark service has no protocol, address or port")
        else:
            if self.protocol is None or self.address is None:
                raise ValueError("an address service needs a protocol and an address")
            if Family.of(self.address) is not self.family:
                raise ValueError(f"address {self.address} is not {self.family.label}")

    @classmethod
    def inet(cls, protocol: Protocol, address: IPAddress, port: int) -> ServiceKey:
        return cls(Family.of(address), protocol, address, port)

    @classmethod
    def mark(cls, fwmark: int, family: Family = Family.INET) -> ServiceKey:
        return cls(family, fwmark=fwmark)

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark} {self.family.label}"
        assert self.protocol is not None and self.address is not None
        return f"{self.protocol.name} {_hostport(self.address, self.port)}"


@dataclass(frozen=True, order=True, slots=True)
class DestKey:
    """What identifies a destination (real server) within one service."""

    address: IPAddress
    port: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.address, self.port)))

    def __hash__(self) -> int:  # computed once: keys are hashed on every table lookup
        return self._hash

    @classmethod
    def of(cls, address: IPAddress, port: int) -> DestKey:
        """The one shared key for address:port. Tables built from config and from kernel dumps
        then hold identical key objects, and comparing a 10,000-destination table is identity
        checks instead of 30,000 calls to ``ipaddress.__eq__``."""
        key = _DEST_KEYS.get((address, port))
        if key is None:
            if len(_DEST_KEYS) > 1_000_000:
                _DEST_KEYS.clear()
            key = _DEST_KEYS[(address, port)] = cls(address, port)
        return key

    def __copy__(self) -> DestKey:
        return self  # immutable and shared: a copy would lose the identity fast path

    def __deepcopy__(self, memo: dict[int, object]) -> DestKey:
        return self

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, DestKey):
            return NotImplemented
        return (
            self._hash == other._hash and self.port == other.port and self.address == other.address
        )

    def __str__(self) -> str:
        return _hostport(self.address, self.port)


_DEST_KEYS: dict[tuple[IPAddress, int], DestKey] = {}


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service with every field the daemon owns.

    ``netmask`` is the persistence granularity as a prefix length (the kernel stores an IPv4
    netmask as a dotted mask and an IPv6 one as a prefix length; the netlink layer converts).
    ``timeout`` is the persistence timeout in seconds (0 when not persistent).
    ``flags`` holds only :data:`OWNED_SVC_FLAGS`.
    """

    key: ServiceKey
    sched_name: str = "wlc"
    flags: int = 0
    timeout: int = 0
    netmask: int = 32
    pe_name: str = ""

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Service):
            return NotImplemented
        return (
            (self.key is other.key or self.key == other.key)
            and self.sched_name == other.sched_name
            and self.flags == other.flags
            and self.timeout == other.timeout
            and self.netmask == other.netmask
            and self.pe_name == other.pe_name
        )

    def __hash__(self) -> int:
        return hash((self.key, self.sched_name, self.flags, self.timeout, self.netmask))

    def __copy__(self) -> Service:
        return self  # immutable: a copy shares it, and compares by identity (see plan)

    def __deepcopy__(self, memo: dict[int, object]) -> Service:
        return self

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SVC_F_PERSISTENT)


@dataclass(frozen=True, slots=True)
class Dest:
    """A destination (real server) of a service, with every field the daemon owns.

    ``tun_type``, ``tun_port`` and ``tun_flags`` are the encapsulation of a
    :attr:`Forwarding.TUNNEL` destination (:class:`TunnelType`, the UDP port of GUE, ``TUN_F_*``);
    0 for any other forwarding method (what the kernel stores when they are not sent).
    """

    key: DestKey
    fwd_method: Forwarding = Forwarding.NAT
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = TunnelType.IPIP  # an int: a newer kernel may dump a type not named here
    tun_port: int = 0
    tun_flags: int = 0

    def __eq__(self, other: object) -> bool:
        # Written out: the planner compares every destination of every service on a reload.
        if self is other:
            return True
        if not isinstance(other, Dest):
            return NotImplemented
        return (
            self.weight == other.weight
            and (self.key is other.key or self.key == other.key)
            and self.fwd_method == other.fwd_method
            and self.u_threshold == other.u_threshold
            and self.l_threshold == other.l_threshold
            and self.tun_type == other.tun_type
            and self.tun_port == other.tun_port
            and self.tun_flags == other.tun_flags
        )

    def __hash__(self) -> int:
        return hash((self.key, self.fwd_method, self.weight, self.u_threshold, self.l_threshold))

    @property
    def tunnel_label(self) -> str:
        """The encapsulation as text (``gue:6080 csum``); empty when not a tunnel."""
        if self.fwd_method is not Forwarding.TUNNEL:
            return ""
        known = self.tun_type in TunnelType._value2member_map_
        text = TunnelType(self.tun_type).label if known else f"type {self.tun_type}"
        if self.tun_port:
            text += f":{self.tun_port}"
        if self.tun_flags & TUN_F_REMCSUM:
            text += " remcsum"
        elif self.tun_flags & TUN_F_CSUM:
            text += " csum"
        return text

    def __copy__(self) -> Dest:
        return self  # immutable: a copy shares it, and compares by identity (see plan)

    def __deepcopy__(self, memo: dict[int, object]) -> Dest:
        return self

    @property
    def af(self) -> Family:
        """The destination's own family; it differs from the service's only for tunnels."""
        return Family.of(self.key.address)


@dataclass(frozen=True)
class Table:
    """A whole IPVS table (desired or observed): services and their destinations by key."""

    services: dict[ServiceKey, Service] = field(default_factory=dict)
    dests: dict[ServiceKey, dict[DestKey, Dest]] = field(default_factory=dict)

    def dests_of(self, key: ServiceKey) -> dict[DestKey, Dest]:
        return self.dests.get(key, {})

    def count(self) -> tuple[int, int]:
        return len(self.services), sum(len(d) for d in self.dests.values())


def _hostport(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
