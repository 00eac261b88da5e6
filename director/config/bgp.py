"""The BGP part of the config: ``[bgp]``, ``[[bgp.neighbor]]`` and ``[[bgp.announce]]``.

Route health injection: each ``[[bgp.announce]]`` is one host route (the VIP, /32 or /128) that
the director announces while every virtual server it names has a quorum of healthy real servers,
and withdraws when one of them does not (with hysteresis: ``quorum_up`` healthy servers are needed
to announce again once withdrawn). The speaker is ExaBGP run by the daemon (``backend =
"exabgp"``, the neighbours are here) or the site's own BIRD/FRR (``backend = "kernel"``: the
route is installed into ``route_table`` with protocol ``route_protocol`` for that daemon to export).

Per-table checks are model validators here; :func:`announce_problems` checks the announcements
against the virtual servers (the names exist, the prefix is their address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator

from director.config.fields import (
    Address,
    DirPath,
    Finding,
    IPAddress,
    Name,
    Seconds,
    fail,
    raise_findings,
    show,
)
from director.config.network import Interface

HostPrefix = ipaddress.IPv4Network | ipaddress.IPv6Network
TCP_MD5_MAXKEYLEN = 80  # the kernel's limit on a TCP MD5 signature key
# rtnetlink route protocols 0-4 are the kernel's own (unspec, redirect, kernel, boot, static).
KERNEL_PROTOCOLS = 4


def _int_in(lo: int, hi: int, what: str) -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(f"expected {what} from {lo} to {hi}, found {show(value)}")
        return value

    return PlainValidator(check)


def _host_prefix(value: object) -> HostPrefix:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        value = str(value)  # Python code may give a network; TOML gives text
    if isinstance(value, str) and "%" not in value:
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            if net.prefixlen == net.max_prefixlen:
                return net
            fail(
                "expected a host route (/32 for IPv4, /128 for IPv6) like "
                f'"198.18.0.10/32", found {show(value)}'
            )
    fail(f'expected an address or host route like "198.18.0.10/32", found {show(value)}')


def _hold_time(value: object) -> int:
    # RFC 4271 4.2: zero (no keepalives) or at least three seconds.
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value == 0 or 3 <= value <= 65535)
    ):
        fail(f"expected 0 or a number of seconds from 3 to 65535, found {show(value)}")
    return value


def _community(value: object) -> str:
    if isinstance(value, str):
        parts = value.split(":")
        if (
            len(parts) == 2
            and all(p.isdigit() and p.isascii() for p in parts)
            and all(int(p) <= 65535 for p in parts)
        ):
            return f"{int(parts[0])}:{int(parts[1])}"
    fail(
        f'expected a community "ASN:VALUE" (each 0 to 65535) like "65000:100", found {show(value)}'
    )


def _password(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value.encode()) <= TCP_MD5_MAXKEYLEN:
        fail(f"expected a TCP MD5 password of 1 to {TCP_MD5_MAXKEYLEN} bytes, found {show(value)}")
    if not value.isprintable() or value != value.strip() or '"' in value or "\\" in value:
        fail("expected printable characters without surrounding spaces, quotes or backslashes")
    return value


def _next_hop(value: object) -> IPAddress | Literal["self"]:
    if value == "self":
        return "self"
    if isinstance(value, str) and "%" not in value:
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            pass
    fail(f'expected an address like "198.18.0.1" or "self", found {show(value)}')


def _route_table(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**32 - 1:
        fail(f"expected a routing table number from 1 to 4294967295, found {show(value)}")
    if value == 255:
        fail("expected a table other than 255 (the kernel's local table), found 255")
    return value


def _route_protocol(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 5 <= value <= 255:
        fail(
            "expected a route protocol number from 5 to 255 (0 to 4 are the kernel's own), "
            f"found {show(value)}"
        )
    return value


def _router_id(value: object) -> ipaddress.IPv4Address:
    if isinstance(value, str):
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            pass
    fail(f'expected a router id in IPv4 address form like "198.18.0.1", found {show(value)}')


ASN = Annotated[int, _int_in(1, 2**32 - 1, "an AS number")]
HoldTime = Annotated[int, PlainValidator(_hold_time)]
Community = Annotated[str, PlainValidator(_community)]
Password = Annotated[str, PlainValidator(_password)]
NextHop = Annotated[IPAddress | Literal["self"], PlainValidator(_next_hop)]
Prefix = Annotated[HostPrefix, PlainValidator(_host_prefix)]
Med = Annotated[int, _int_in(0, 2**32 - 1, "a MED")]
Quorum = Annotated[int, _int_in(1, 65535, "a number of real servers")]
RouteTable = Annotated[int, PlainValidator(_route_table)]
RouteProtocol = Annotated[int, PlainValidator(_route_protocol)]
RouterId = Annotated[ipaddress.IPv4Address, PlainValidator(_router_id)]


class _Model(BaseModel):
    model_config = ConfigDict(
        defer_build=True, frozen=True, extra="forbid", validate_by_alias=True, validate_by_name=True
    )


class Neighbor(_Model):
    """``[[bgp.neighbor]]``: one BGP peer of ExaBGP (the upstream router)."""

    address: Address
    peer_as: ASN
    hold_time: HoldTime = 9
    password: Password | None = None
    local_address: Address | None = None

    @model_validator(mode="after")
    def _check_family(self) -> Self:
        if self.local_address is not None and self.local_address.version != self.address.version:
            raise_findings(
                "Neighbor",
                [
                    (
                        ("local_address",),
                        f"expected an IPv{self.address.version} address like the neighbour's, "
                        f"found {show(str(self.local_address))}",
                    )
                ],
            )
        return self


class Announce(_Model):
    """``[[bgp.announce]]``: a host route announced while its virtual servers are healthy."""

    prefix: Prefix
    virtual_servers: tuple[Name, ...] = Field(min_length=1)
    quorum: Quorum = 1
    quorum_up: Quorum | None = None  # default: quorum (no hysteresis)
    communities: tuple[Community, ...] = ()
    med: Med | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        findings: list[Finding] = []
        if self.quorum_up is not None and self.quorum_up < self.quorum:
            findings.append(
                (
                    ("quorum_up",),
                    f"expected at least quorum ({self.quorum}), found {self.quorum_up}",
                )
            )
        seen: set[str] = set()
        for k, name in enumerate(self.virtual_servers):
            if name in seen:
                findings.append(
                    (("virtual_servers", k), f"expected each name once, found {show(name)} twice")
                )
            seen.add(name)
        if findings:
            raise_findings("Announce", findings)
        return self

    @property
    def up_quorum(self) -> int:
        return self.quorum if self.quorum_up is None else self.quorum_up

    @property
    def address(self) -> IPAddress:
        return self.prefix.network_address


class BgpSettings(_Model):
    """``[bgp]``: who speaks BGP for this director and what it announces."""

    backend: Literal["exabgp", "kernel"] = "exabgp"
    local_as: ASN | None = None
    router_id: RouterId | None = None
    next_hop: NextHop = "self"
    next_hop_ipv6: NextHop = "self"
    drain_timeout: Seconds = 300.0
    exabgp: DirPath | None = None  # the exabgp program; default: the one beside directord
    route_table: RouteTable = 254
    route_protocol: RouteProtocol = 250
    vip_device: Interface | None = None  # put the announced VIPs on this device (e.g. "lo")
    neighbors: tuple[Neighbor, ...] = Field(default=(), alias="neighbor")
    announcements: tuple[Announce, ...] = Field(default=(), alias="announce")

    @model_validator(mode="after")
    def _check(self) -> Self:
        findings: list[Finding] = []
        if self.backend == "exabgp":
            for key in ("local_as", "router_id"):
                if getattr(self, key) is None:
                    findings.append(((key,), 'required with backend = "exabgp"'))
            if not self.neighbors:
                findings.append(
                    (
                        ("neighbor",),
                        'expected at least one [[bgp.neighbor]] with backend = "exabgp"',
                    )
                )
        elif self.neighbors:
            findings.append(
                (
                    ("neighbor",),
                    'with backend = "kernel" the neighbours are configured in BIRD or FRR, '
                    "found [[bgp.neighbor]] tables",
                )
            )
        addresses: dict[IPAddress, int] = {}
        for i, n in enumerate(self.neighbors):
            if n.address in addresses:
                findings.append(
                    (
                        ("neighbor", i, "address"),
                        f"expected each neighbour once, found {n.address} again "
                        f"(also bgp.neighbor[{addresses[n.address]}])",
                    )
                )
            addresses.setdefault(n.address, i)
        prefixes: dict[HostPrefix, int] = {}
        for i, a in enumerate(self.announcements):
            if a.prefix in prefixes:
                findings.append(
                    (
                        ("announce", i, "prefix"),
                        f"expected each prefix once, found {a.prefix} again "
                        f"(also bgp.announce[{prefixes[a.prefix]}])",
                    )
                )
            prefixes.setdefault(a.prefix, i)
        if findings:
            raise_findings("BgpSettings", findings)
        return self

    def next_hop_for(self, prefix: HostPrefix) -> IPAddress | Literal["self"]:
        return self.next_hop if prefix.version == 4 else self.next_hop_ipv6


def announce_problems(
    bgp: BgpSettings,
    services: Sequence[tuple[str, IPAddress | None]],
    vrrp_addresses: Mapping[IPAddress, str] | None = None,
) -> list[Finding]:
    """Announcements against the virtual servers (``(name, address or None for fwmark)``):
    each named service exists, and an address service's address is the announced prefix; and
    against VRRP (``address -> instance``): a VIP is either VRRP's (one director holds it) or
    BGP's (every director serves it), not both."""
    findings: list[Finding] = []
    for i, a in enumerate(bgp.announcements):
        instance = (vrrp_addresses or {}).get(a.address)
        if instance is not None:
            findings.append(
                (
                    ("bgp", "announce", i, "prefix"),
                    f"expected a VIP that VRRP does not hold, found {a.address}, a virtual "
                    f"address of vrrp_instance {show(instance)}",
                )
            )
    known = {name: address for name, address in services}
    names = ", ".join(f'"{n}"' for n in sorted(known)) or "none"
    for i, a in enumerate(bgp.announcements):
        for k, name in enumerate(a.virtual_servers):
            loc = ("bgp", "announce", i, "virtual_servers", k)
            if name not in known:
                findings.append(
                    (loc, f"expected the name of a virtual server ({names}), found {show(name)}")
                )
                continue
            address = known[name]
            if address is not None and address != a.address:
                findings.append(
                    (
                        loc,
                        f"expected a virtual server on {a.address}, found {show(name)} "
                        f"on {address}",
                    )
                )
        if (
            bgp.backend == "exabgp"
            and a.prefix.version == 6
            and bgp.next_hop_ipv6 == "self"
            and not any(n.address.version == 6 for n in bgp.neighbors)
        ):
            findings.append(
                (
                    ("bgp", "announce", i, "prefix"),
                    "an IPv6 prefix over IPv4 sessions needs bgp.next_hop_ipv6 (an address), "
                    'found "self"',
                )
            )
    return findings
