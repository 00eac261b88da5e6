"""``directorctl vrrp-scan``: every VRRP router heard on a segment, and what is wrong there.

A pure core and a thin capture shell. ``decode_frame`` turns one Ethernet frame into a
``Heard`` advert (our own :mod:`vrrp.packet` codec), an ``Unreadable`` one or ``None`` (not
VRRP), never raising; ``fold`` turns the adverts into a ``Report``: one row per (VRID, source)
and the findings - a VRID collision (a lower-priority source that kept advertising while it
could hear a higher one), routers that disagree on the address list, versions 2 and 3 both
heard, differing intervals or auth types, address owners (priority 255). ``capture`` is the
only part that opens a socket (AF_PACKET, root); the daemon never imports this module.
"""

from __future__ import annotations

import bisect
import errno
import select
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from vrrp.packet import IPPROTO_VRRP, PRIORITY_OWNER, AuthType, Dropped, IPAddress, decode

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
IPV6_EXTENSIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
# A backup that heard the master within its Master_Down interval (about this many of the
# master's intervals) stays silent; an advert sent less than CROSSING_DELAY seconds after the
# master's may have crossed it on the wire (preemption) and is no sign of a collision.
DOWN_ADVERTS = 3
CROSSING_DELAY = 0.2
EXIT_KINDS = frozenset({"collision", "disagreement"})  # findings that make the exit status 1


@dataclass(frozen=True, slots=True)
class Heard:
    """One advert as seen on the wire; ``at`` in seconds (any clock, one clock per scan)."""

    src_ip: IPAddress
    src_mac: bytes
    version: int
    vrid: int
    priority: int
    interval_cs: int
    addresses: tuple[IPAddress, ...]
    auth_type: int
    at: float


@dataclass(frozen=True, slots=True)
class Unreadable:
    reason: str


@dataclass(slots=True)
class Router:
    """One (VRID, source) row; the fields are the last advert's, ``adverts`` counts them all."""

    vrid: int
    family: int
    src_ip: IPAddress
    src_mac: bytes
    version: int
    priority: int
    interval_cs: int
    addresses: tuple[IPAddress, ...]
    auth_type: int
    adverts: int
    first_at: float
    last_at: float
    sending: list[float] = field(default_factory=list)  # times of its non-zero-priority adverts

    def as_dict(self, ended: float) -> dict[str, Any]:
        return {
            "vrid": self.vrid,
            "family": self.family,
            "source": str(self.src_ip),
            "mac": mac_text(self.src_mac),
            "version": self.version,
            "priority": self.priority,
            "interval": self.interval_cs / 100,
            "addresses": [str(a) for a in self.addresses],
            "auth_type": auth_name(self.auth_type),
            "adverts": self.adverts,
            "last_seen_ago": round(max(0.0, ended - self.last_at), 3),
        }


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # collision | disagreement | version_mix | interval_mismatch | auth_mismatch | owner
    vrid: int
    family: int
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    seconds: float
    routers: tuple[Router, ...]
    findings: tuple[Finding, ...]
    unreadable: dict[str, int]
    ended: float

    @property
    def exit_status(self) -> int:
        return 1 if any(f.kind in EXIT_KINDS for f in self.findings) else 0

    def free_vrids(self, family: int = 4) -> list[int]:
        used = {r.vrid for r in self.routers if r.family == family}
        return [v for v in range(1, 256) if v not in used]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "routers": [r.as_dict(self.ended) for r in self.routers],
            "findings": [
                {"kind": f.kind, "vrid": f.vrid, "family": f.family, "message": f.message}
                for f in self.findings
            ],
            "unreadable": dict(sorted(self.unreadable.items())),
            "free_vrids": {"4": self.free_vrids(4), "6": self.free_vrids(6)},
        }


# -- decoding ----------------------------------------------------------------------------------


def decode_frame(frame: bytes, at: float) -> Heard | Unreadable | None:
    """One Ethernet frame: a VRRP advert, an unreadable one, or None (not VRRP). Never raises."""
    try:
        return _decode_frame(frame, at)
    except (ValueError, IndexError, struct.error):  # belt and braces: nothing escapes
        return Unreadable("malformed")


def _decode_frame(frame: bytes, at: float) -> Heard | Unreadable | None:
    if len(frame) < 14:
        return None
    src_mac = bytes(frame[6:12])
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    packet = frame[14:]
    src: IPAddress
    dst: IPAddress
    if ethertype == ETH_P_IP:
        if len(packet) < 20 or packet[9] != IPPROTO_VRRP:
            return None
        ihl = (packet[0] & 0x0F) * 4
        (total,) = struct.unpack_from("!H", packet, 2)
        (fragment,) = struct.unpack_from("!H", packet, 6)
        if packet[0] >> 4 != 4 or ihl < 20 or total < ihl or total > len(packet):
            return Unreadable("truncated")
        if fragment & 0x3FFF:  # more fragments, or an offset: adverts are never fragmented
            return Unreadable("fragment")
        src, dst = IPv4Address(packet[12:16]), IPv4Address(packet[16:20])
        payload = packet[ihl:total]
    elif ethertype == ETH_P_IPV6:
        if len(packet) < 40:
            return None
        length, next_header = struct.unpack_from("!HB", packet, 4)
        offset = 40
        while next_header in IPV6_EXTENSIONS and offset + 8 <= len(packet):
            next_header = packet[offset]
            offset += (packet[offset + 1] + 1) * 8
        if next_header != IPPROTO_VRRP:
            return None
        if 40 + length > len(packet) or offset > 40 + length:
            return Unreadable("truncated")
        src, dst = IPv6Address(packet[8:24]), IPv6Address(packet[24:40])
        payload = packet[offset : 40 + length]
    else:
        return None
    advert = decode(bytes(payload), src, dst)
    if isinstance(advert, Dropped):
        return Unreadable(str(advert.reason))
    return Heard(
        src,
        src_mac,
        advert.version,
        advert.vrid,
        advert.priority,
        advert.interval_cs,
        advert.addresses,
        int(advert.auth_type),
        at,
    )


# -- the report --------------------------------------------------------------------------------


def fold(
    heard: Iterable[Heard], unreadable: dict[str, int], seconds: float, ended: float
) -> Report:
    """The report on what was heard; ``ended`` is when listening stopped (``at``'s clock)."""
    rows: dict[tuple[int, IPAddress], Router] = {}
    for h in sorted(heard, key=lambda h: h.at):
        row = rows.get((h.vrid, h.src_ip))
        if row is None:
            row = rows[(h.vrid, h.src_ip)] = Router(
                h.vrid, h.src_ip.version, h.src_ip, h.src_mac, h.version, h.priority,
                h.interval_cs, h.addresses, h.auth_type, 0, h.at, h.at,
            )  # fmt: skip
        row.src_mac, row.version, row.priority = h.src_mac, h.version, h.priority
        row.interval_cs, row.addresses, row.auth_type = h.interval_cs, h.addresses, h.auth_type
        row.adverts += 1
        row.last_at = h.at
        if h.priority > 0:
            row.sending.append(h.at)
    routers = tuple(sorted(rows.values(), key=lambda r: (r.family, r.vrid, r.src_ip.packed)))
    findings: list[Finding] = []
    groups: dict[tuple[int, int], list[Router]] = {}
    for r in routers:
        groups.setdefault((r.family, r.vrid), []).append(r)
    for (family, vrid), group in groups.items():
        findings += _findings(family, vrid, group)
    return Report(seconds, routers, tuple(findings), dict(unreadable), ended)


def _findings(family: int, vrid: int, group: list[Router]) -> list[Finding]:
    where = f"VRID {vrid}" + (" (IPv6)" if family == 6 else "")
    found: list[Finding] = []

    def add(kind: str, message: str) -> None:
        found.append(Finding(kind, vrid, family, f"{where}: {message}"))

    for r in group:
        if r.priority == PRIORITY_OWNER:
            add("owner", f"{r.src_ip} is the address owner (priority 255)")
    if len(group) < 2:
        return found
    for lower, higher in _kept_advertising(group):
        add(
            "collision",
            f"{lower.src_ip} (priority {lower.priority}) kept advertising while"
            f" {higher.src_ip} (priority {higher.priority}) was master: two routers that do not"
            " accept each other's adverts (another cluster on this VRID, or a misconfigured pair)",
        )
    lists = {frozenset(r.addresses) for r in group}
    if len(lists) > 1:
        add(
            "disagreement",
            f"{len(group)} routers advertise different address lists: "
            + "; ".join(
                f"{r.src_ip} [{', '.join(map(str, r.addresses)) or 'none'}]" for r in group
            ),
        )
    versions = sorted({r.version for r in group})
    if len(versions) > 1:
        add("version_mix", f"versions {' and '.join(map(str, versions))} both heard")
    intervals = sorted({r.interval_cs for r in group})
    if len(intervals) > 1:
        add("interval_mismatch", "intervals " + ", ".join(f"{i / 100:g}s" for i in intervals))
    auths = sorted({r.auth_type for r in group if r.version == 2})
    if len(auths) > 1:
        add("auth_mismatch", "auth types " + ", ".join(auth_name(a) for a in auths))
    return found


def _kept_advertising(group: list[Router]) -> list[tuple[Router, Router]]:
    """(lower, higher) pairs where the lower-priority source advertised although it had heard
    the higher one: an advert of the higher one within its Master_Down window (3 intervals)
    before, but more than CROSSING_DELAY before (so not one that crossed it on the wire).

    A well-behaved backup is silent then; a preempted master stops at once; one that takes over
    has not heard the master for 3 intervals. The RFC's tie-break: the higher address wins.
    """
    ranked = sorted(group, key=lambda r: (r.priority, int(r.src_ip)))
    pairs: list[tuple[Router, Router]] = []
    for n, lower in enumerate(ranked):
        for higher in ranked[n + 1 :]:
            window = DOWN_ADVERTS * higher.interval_cs / 100
            for t in lower.sending:
                i = bisect.bisect_right(higher.sending, t - CROSSING_DELAY)
                if i and higher.sending[i - 1] >= t - window:
                    pairs.append((lower, higher))
                    break
    return pairs


# -- rendering ---------------------------------------------------------------------------------


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def auth_name(auth_type: int) -> str:
    try:
        return AuthType(auth_type).name.lower()
    except ValueError:
        return str(auth_type)


def _ranges(values: list[int]) -> str:
    parts: list[str] = []
    for v in values:
        if parts and parts[-1].split("-")[-1] == str(v - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts) or "none"


def render(report: Report, device: str) -> str:
    adverts = sum(r.adverts for r in report.routers)
    bad = sum(report.unreadable.values())
    lines = [
        f"VRRP heard on {device} in {report.seconds:g} s: {len(report.routers)} router(s), "
        f"{adverts} advert(s), {bad} unreadable",
        "",
        f"{'VRID':>4} {'Ver':>3} {'Prio':>4} {'Int':>5}  {'Auth':6} {'Source':25} "
        f"{'MAC':17} {'Adverts':>7} {'Last':>6}  Addresses",
    ]
    for r in report.routers:
        last = f"{max(0.0, report.ended - r.last_at):.1f}s"
        lines.append(
            f"{r.vrid:>4} {'v' + str(r.version):>3} {r.priority:>4} {r.interval_cs / 100:>4g}s"
            f"  {auth_name(r.auth_type):6} {r.src_ip!s:25} {mac_text(r.src_mac):17}"
            f" {r.adverts:>7} {last:>6}  {', '.join(map(str, r.addresses)) or '-'}"
        )
    if not report.routers:
        lines.append("(no VRRP advertisement heard)")
    if report.unreadable:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(report.unreadable.items()))
        lines.append(f"unreadable: {counts}")
    lines.append("")
    for f in report.findings:
        lines.append(f"{f.kind.upper()}: {f.message}")
    if not report.findings:
        lines.append("no findings")
    lines.append(f"free VRIDs (IPv4): {_ranges(report.free_vrids(4))}")
    return "\n".join(lines)


# -- the capture shell -------------------------------------------------------------------------


class ScanError(Exception):
    """A sentence for the operator: no such interface, not root."""


def capture(device: str, seconds: float) -> tuple[list[Heard], dict[str, int], float]:
    """Listen on ``device`` for ``seconds``: the adverts, unreadable counts, and the end time."""
    try:
        socket.if_nametoindex(device)
    except OSError:
        raise ScanError(f"no interface {device!r} here (see ip link)") from None
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError as exc:
        raise ScanError(
            f"cannot open a packet socket ({exc.strerror}): vrrp-scan needs root (CAP_NET_RAW)"
        ) from None
    heard: list[Heard] = []
    unreadable: dict[str, int] = {}
    with sock:
        try:
            sock.bind((device, ETH_P_ALL))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise ScanError(f"no interface {device!r} here (see ip link)") from None
            raise ScanError(f"cannot listen on {device}: {exc.strerror}") from None
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                continue
            frame = sock.recv(65535)
            event = decode_frame(frame, time.monotonic())
            if isinstance(event, Heard):
                heard.append(event)
            elif isinstance(event, Unreadable):
                unreadable[event.reason] = unreadable.get(event.reason, 0) + 1
    return heard, unreadable, time.monotonic()


def scan(device: str, seconds: float) -> Report:
    heard, unreadable, ended = capture(device, seconds)
    return fold(heard, unreadable, seconds, ended)
