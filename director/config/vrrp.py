"""The VRRP part of the config: ``[[vrrp_instance]]``, ``[[vrrp_sync_group]]``, ``[sync_daemon]``.

Each table is a frozen model checked on its own (field types, then the rules within one
instance); :func:`director.config.cross.vrrp_problems` checks across tables (unique names and
VRIDs, groups naming instances, tracked checks naming virtual servers).
:meth:`VrrpInstance.vrrp_config` turns an instance into the pure core's :class:`vrrp.Config`.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, PlainValidator, model_validator

from director.config.fields import (
    Address,
    Bool,
    Finding,
    IPAddress,
    Loc,
    Name,
    fail,
    raise_findings,
    show,
)
from vrrp.config import Config as CoreConfig
from vrrp.config import Gratuitous
from vrrp.packet import V2_AUTH_LEN, V3_MAX_INTERVAL_CS

IFNAMSIZ = 16  # including the terminating NUL


def _interface(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value.encode()) < IFNAMSIZ
        or value in (".", "..")
        or any(c in value for c in "/:")
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        fail(
            "expected an interface name of 1 to 15 characters without spaces, '/' or ':', "
            f"found {show(value)}"
        )
    return value


def _label(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value.encode()) < IFNAMSIZ
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        fail(f'expected a label of 1 to 15 characters like "eth0:1", found {show(value)}')
    return value


def _int_in(lo: int, hi: int) -> PlainValidator:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            fail(f"expected an integer from {lo} to {hi}, found {show(value)}")
        return value

    return PlainValidator(check)


def _seconds_or_zero(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        fail(f"expected a number of seconds, 0 or more, found {show(value)}")
    return float(value)


def _interval(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        fail(f"expected a number of seconds greater than 0, found {show(value)}")
    return float(value)


def _argv(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(arg, str) for arg in value)
    ):
        fail(
            "expected a program and its arguments as an array of strings like "
            f'["/usr/local/bin/notify", "master"], found {show(value)}'
        )
    if not value[0].startswith("/"):
        fail(
            "expected the program as an absolute path (hooks run without a shell or PATH), "
            f"found {show(value[0])}"
        )
    if any("\0" in arg for arg in value):
        fail("expected arguments without NUL characters")
    return tuple(value)


def _password(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value.encode()) <= V2_AUTH_LEN:
        fail(f"expected a password of 1 to {V2_AUTH_LEN} bytes, found {show(value)}")
    return value


Interface = Annotated[str, PlainValidator(_interface)]
Label = Annotated[str, PlainValidator(_label)]
Vrid = Annotated[int, _int_in(1, 255)]
Priority = Annotated[int, _int_in(1, 255)]
TrackWeight = Annotated[int, _int_in(0, 254)]
Quorum = Annotated[int, _int_in(1, 65535)]
SyncId = Annotated[int, _int_in(0, 255)]
GarpCount = Annotated[int, _int_in(0, 100)]
SecondsOrZero = Annotated[float, PlainValidator(_seconds_or_zero)]
Interval = Annotated[float, PlainValidator(_interval)]
Argv = Annotated[tuple[str, ...], PlainValidator(_argv)]
Password = Annotated[str, PlainValidator(_password)]


class _Model(BaseModel):
    model_config = ConfigDict(
        defer_build=True, frozen=True, extra="forbid", validate_by_alias=True, validate_by_name=True
    )


class _Notify(_Model):
    notify_master: Argv | None = None
    notify_backup: Argv | None = None
    notify_fault: Argv | None = None
    notify: Argv | None = None


def _interface_address(value: object) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return value
    if isinstance(value, str) and "%" not in value:
        try:
            found = ipaddress.ip_interface(value)
        except ValueError:
            pass
        else:
            if "/" not in value:  # a bare address: a host prefix, like keepalived
                return ipaddress.ip_interface(f"{found.ip}/{found.max_prefixlen}")
            if found.network.prefixlen == 0:
                # /0 would put a route to everything on the interface (and an lvs.cf
                # netmask 0.0.0.0 means "none given", not this)
                fail(
                    f"expected a prefix length from 1 to {found.max_prefixlen} (a /0 address "
                    f"claims every address as on-link), found {show(value)}"
                )
            return found
    fail(
        'expected an address with an optional prefix like "198.18.0.10/24" or '
        f'"2001:db8::10/64", found {show(value)}'
    )


InterfaceAddress = Annotated[
    ipaddress.IPv4Interface | ipaddress.IPv6Interface, PlainValidator(_interface_address)
]


class VirtualAddress(_Model):
    """One virtual address: ``"198.18.0.10/24"`` or ``{ address = ..., device, label }``."""

    address: InterfaceAddress
    device: Interface | None = None
    label: Label | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"address": data} if isinstance(data, str) else data

    @property
    def ip(self) -> IPAddress:
        return self.address.ip

    @property
    def prefixlen(self) -> int:
        return self.address.network.prefixlen


class TrackInterface(_Model):
    interface: Interface
    weight: TrackWeight = 0


class TrackCheck(_Model):
    virtual_server: Name
    quorum: Quorum = 1
    weight: TrackWeight = 0


class VrrpInstance(_Notify):
    name: Name
    interface: Interface
    vrid: Vrid
    priority: Priority = 100
    version: Literal[2, 3] = 2
    advert_interval: Interval = 1.0
    preempt: Bool = True
    preempt_delay: SecondsOrZero = 0.0
    password: Password | None = None
    primary_address: Address | None = None
    unicast_peers: tuple[Address, ...] = ()
    accept_only_peers: Bool = False  # nftables: VRRP on `interface` only from unicast_peers
    virtual_addresses: tuple[VirtualAddress, ...] = ()
    excluded_addresses: tuple[VirtualAddress, ...] = ()  # held, not advertised
    garp_count: GarpCount = 5
    garp_interval: SecondsOrZero = 0.0
    garp_repeat_after: SecondsOrZero = 5.0
    garp_refresh: SecondsOrZero = 0.0
    track_interfaces: tuple[TrackInterface, ...] = ()
    track_checks: tuple[TrackCheck, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        findings = instance_problems(self)
        if findings:
            raise_findings("VrrpInstance", findings)
        return self

    @property
    def family(self) -> int:
        """4 or 6: the address family of the instance (IPv4 unless its addresses say IPv6)."""
        if self.primary_address is not None:
            return self.primary_address.version
        if self.virtual_addresses:
            return self.virtual_addresses[0].ip.version
        return 4

    @property
    def held_addresses(self) -> tuple[VirtualAddress, ...]:
        """What the master holds: the advertised addresses, then the excluded ones."""
        return self.virtual_addresses + self.excluded_addresses

    def gratuitous(self) -> Gratuitous:
        return Gratuitous(
            count=self.garp_count,
            spacing=self.garp_interval,
            repeat_after=self.garp_repeat_after or None,
            refresh=self.garp_refresh or None,
        )

    def vrrp_config(self, primary_address: IPAddress | None = None) -> CoreConfig:
        """The pure core's config; ``primary_address`` when the file gives none."""
        primary = self.primary_address or primary_address
        if primary is None:
            raise ValueError(f"VRRP instance {self.name}: no primary address")
        return CoreConfig(
            vrid=self.vrid,
            priority=self.priority,
            primary_address=primary,
            virtual_addresses=tuple(va.ip for va in self.virtual_addresses),
            excluded_addresses=tuple(va.ip for va in self.excluded_addresses),
            version=self.version,
            advert_interval=self.advert_interval,
            preempt=self.preempt,
            preempt_delay=self.preempt_delay,
            password=self.password.encode() if self.password is not None else None,
            gratuitous=self.gratuitous(),
        )


class VrrpSyncGroup(_Notify):
    name: Name
    instances: tuple[Name, ...]


class SyncDaemon(_Model):
    interface: Interface
    sync_id: SyncId = 0
    instance: Name | None = None
    # "role": the master daemon on the master, the backup daemon on the backup (VRRP pairs);
    # "both": both daemons on every director whatever its role (active-active over BGP)
    mode: Literal["role", "both"] = "role"

    @model_validator(mode="after")
    def _check_mode(self) -> Self:
        if self.mode == "both" and self.instance is not None:
            raise_findings(
                "SyncDaemon",
                [
                    (
                        ("instance",),
                        'with mode = "both" no role drives the sync daemons: expected no '
                        f"instance, found {show(self.instance)}",
                    )
                ],
            )
        return self


# -- rules ------------------------------------------------------------------------------------


def instance_problems(vi: VrrpInstance) -> list[Finding]:
    """What is wrong within one instance, located relative to it."""
    findings: list[Finding] = []
    cs = vi.advert_interval * 100
    if abs(cs - round(cs)) > 1e-6:
        findings.append(
            (
                ("advert_interval",),
                f"expected whole centiseconds, found {show(vi.advert_interval)}",
            )
        )
    elif vi.version == 2 and (round(cs) % 100 or not 1 <= round(cs) // 100 <= 255):
        findings.append(
            (
                ("advert_interval",),
                "VRRPv2 advertises whole seconds: expected 1 to 255, "
                f"found {show(vi.advert_interval)} (use version = 3 for shorter intervals)",
            )
        )
    elif vi.version == 3 and not 1 <= round(cs) <= V3_MAX_INTERVAL_CS:
        findings.append(
            (
                ("advert_interval",),
                f"expected 0.01 to 40.95 seconds for version 3, found {show(vi.advert_interval)}",
            )
        )
    if vi.password is not None and vi.version != 2:
        findings.append(
            (("password",), "password (PASS authentication) exists only in VRRP version 2")
        )
    family = vi.family
    if family == 6 and vi.version == 2:
        findings.append((("version",), "VRRPv2 is IPv4 only: expected version = 3 for IPv6"))
    for i, va in enumerate(vi.virtual_addresses):
        if va.ip.version != family:
            findings.append(
                (
                    ("virtual_addresses", i),
                    f"expected an IPv{family} address like the instance's others, found {va.ip}",
                )
            )
    # Excluded addresses may be of either family (keepalived: they do not set the version).
    keyed = [("virtual_addresses", i, va) for i, va in enumerate(vi.virtual_addresses)]
    keyed += [("excluded_addresses", i, va) for i, va in enumerate(vi.excluded_addresses)]
    for key, i, va in keyed:
        if va.label is not None:
            if va.ip.version != 4:
                findings.append(((key, i, "label"), "labels exist for IPv4 addresses only"))
            device = va.device or vi.interface
            if not va.label.startswith(device):
                findings.append(
                    (
                        (key, i, "label"),
                        f'expected a label starting with the device name "{device}" '
                        f'(like "{device}:1"), found {show(va.label)}',
                    )
                )
    seen: dict[IPAddress, str] = {}
    for key, i, va in keyed:
        if va.ip in seen:
            findings.append(
                (
                    (key, i),
                    f"expected each address once, found {va.ip} again (also {seen[va.ip]})",
                )
            )
        seen.setdefault(va.ip, f"{key}[{i}]")
    if len(vi.virtual_addresses) > 255:
        findings.append((("virtual_addresses",), "expected at most 255 virtual addresses"))
    for i, peer in enumerate(vi.unicast_peers):
        if peer.version != family:
            findings.append(
                (("unicast_peers", i), f"expected an IPv{family} address, found {peer}")
            )
    if vi.accept_only_peers and not vi.unicast_peers:
        findings.append(
            (
                ("accept_only_peers",),
                "accepting VRRP only from the peers needs unicast_peers: expected a list of "
                "peer addresses next to accept_only_peers = true, found none",
            )
        )
    primary = vi.primary_address
    if primary is not None and primary.version == 6 and not primary.is_link_local:
        findings.append(
            (
                ("primary_address",),
                f"VRRPv3 over IPv6 sends from a link-local address: expected fe80::/10, "
                f"found {primary}",
            )
        )
    if vi.primary_address is not None and vi.primary_address in seen:
        findings.append(
            (
                ("primary_address",),
                f"expected the router's own address, not a virtual one, found {vi.primary_address}",
            )
        )
    findings += _duplicates(
        (t.interface for t in vi.track_interfaces), ("track_interfaces",), "interface"
    )
    findings += _duplicates(
        (t.virtual_server for t in vi.track_checks), ("track_checks",), "virtual_server"
    )
    if vi.priority == 255:
        weights: list[tuple[str, tuple[int, ...]]] = [
            ("track_interfaces", tuple(t.weight for t in vi.track_interfaces)),
            ("track_checks", tuple(t.weight for t in vi.track_checks)),
        ]
        for key, items in weights:
            for i, weight in enumerate(items):
                if weight:
                    findings.append(
                        (
                            (key, i, "weight"),
                            "an address owner (priority 255) keeps its priority: expected "
                            f"weight = 0 (fault while down), found {weight}",
                        )
                    )
    return findings


def _duplicates(values: Iterable[str], at: Loc, key: str) -> list[Finding]:
    first: dict[str, int] = {}
    findings: list[Finding] = []
    for i, value in enumerate(values):
        if value in first:
            findings.append(
                (
                    (*at, i, key),
                    f"expected each {key} once, found {show(value)} again "
                    f"(also {at[-1]}[{first[value]}])",
                )
            )
        first.setdefault(value, i)
    return findings
