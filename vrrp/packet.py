"""VRRP advertisements on the wire: RFC 3768 (v2, IPv4) and RFC 5798 (v3, IPv4 and IPv6). Pure.

``decode`` never raises on what the network sends: a malformed or foreign packet comes back as
``Dropped(reason, detail)``, for a counter and a log line. ``encode`` raises ``ValueError`` only on
impossible local data (an unvalidated config), never on anything received.

Layouts (network byte order)::

    v2: 2|1 | VRID | Priority | Count | Auth Type | Adver Int (s) | Checksum | IPv4 * Count | Auth 8
    v3: 3|1 | VRID | Priority | Count | rsvd(4) Max Adver Int (cs, 12 bit) | Checksum | IPvX * Count

The v2 checksum covers the VRRP message; the v3 one also covers the IPv4 or IPv6 pseudo-header
(source, destination, protocol 112, VRRP length), so decoding and encoding v3 need both addresses.
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

IPPROTO_VRRP = 112
VRRP_GROUP_V4 = IPv4Address("224.0.0.18")
VRRP_GROUP_V6 = IPv6Address("ff02::12")
REQUIRED_TTL = 255  # TTL (IPv4) / hop limit (IPv6) of every advertisement, sent and accepted
TYPE_ADVERTISEMENT = 1
PRIORITY_RELEASE = 0  # "stop participating": the backups take over after Skew_Time
PRIORITY_OWNER = 255  # the router that owns the virtual addresses
V2_AUTH_LEN = 8
V3_MAX_INTERVAL_CS = 0x0FFF

_HEADER = struct.Struct("!BBBBBBH")  # version|type, vrid, priority, count, b4, b5, checksum


class AuthType(enum.IntEnum):
    """v2 Auth Type (RFC 2338 5.3.6; RFC 3768 keeps the field for compatibility)."""

    NONE = 0
    SIMPLE = 1  # 8-byte clear-text password: old keepalived `auth_type PASS`
    AH = 2  # IPsec AH: not supported, dropped as bad_auth


_AUTH_TYPES = frozenset(AuthType)


class DropReason(enum.StrEnum):
    """Why a received packet was discarded; the values are metric label values."""

    BAD_TTL = "bad_ttl"
    TOO_SHORT = "too_short"
    BAD_VERSION = "bad_version"
    BAD_TYPE = "bad_type"
    BAD_LENGTH = "bad_length"
    BAD_CHECKSUM = "bad_checksum"
    BAD_INTERVAL = "bad_interval"
    BAD_AUTH = "bad_auth"
    VRID_MISMATCH = "vrid_mismatch"
    AUTH_MISMATCH = "auth_mismatch"
    INTERVAL_MISMATCH = "interval_mismatch"
    ADDRESS_LIST_MISMATCH = "address_list_mismatch"
    # not a packet we saw: the kernel dropped it because our socket's receive buffer was full
    # (SO_RXQ_OVFL); counted by the transport
    SOCKET_OVERFLOW = "socket_overflow"


@dataclass(frozen=True, slots=True)
class Dropped:
    """A received packet dropped, and why."""

    reason: DropReason
    detail: str


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One VRRP advertisement. ``interval_cs`` is in centiseconds for both versions.

    ``auth_data`` is v2's: kept zero-padded to its 8 wire bytes, so an advert built with a short
    password equals its decoded self; v3 has none.
    """

    version: int
    vrid: int
    priority: int
    interval_cs: int
    addresses: tuple[IPAddress, ...]
    auth_type: AuthType = AuthType.NONE
    auth_data: bytes = b""

    def __post_init__(self) -> None:
        padded = self.auth_data.ljust(V2_AUTH_LEN, b"\0") if self.version == 2 else b""
        object.__setattr__(self, "auth_data", padded)

    @property
    def interval(self) -> float:
        """(Max) Adver Int in seconds."""
        return self.interval_cs / 100


@dataclass(frozen=True, slots=True)
class Expected:
    """What a virtual router accepts (RFC 3768 7.1 / RFC 5798 7.1 receiver checks)."""

    version: int
    vrid: int
    interval_cs: int  # checked for v2 only; v3 learns the master's interval instead
    addresses: frozenset[IPAddress] | None = None  # None: do not compare the address list
    auth_type: AuthType = AuthType.NONE
    password: bytes = b""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: 0 when ``data`` carries a correct one."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """The IPv4 (RFC 768 style) or IPv6 (RFC 8200 8.1) pseudo-header that v3 checksums cover."""
    if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
        return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)
    raise ValueError(f"source {src} and destination {dst} are not of one address family")


def check_ttl(ttl: int) -> Dropped | None:
    """The IPv4 TTL / IPv6 hop limit check, for the caller that sees the IP header."""
    if ttl != REQUIRED_TTL:
        return Dropped(DropReason.BAD_TTL, f"TTL/hop limit {ttl}, expected {REQUIRED_TTL}")
    return None


def encode(advert: Advertisement, src: IPAddress, dst: IPAddress) -> bytes:
    """The advertisement's bytes with its checksum; ``src``/``dst`` are the IP header's."""
    _check_encodable(advert, src, dst)
    count = len(advert.addresses)
    addresses = b"".join(a.packed for a in advert.addresses)
    if advert.version == 2:
        seconds = advert.interval_cs // 100
        head = _HEADER.pack(0x21, advert.vrid, advert.priority, count, advert.auth_type, seconds, 0)
        message = head + addresses + advert.auth_data
        value = checksum(message)
    else:
        interval_hi, interval_lo = divmod(advert.interval_cs, 256)
        head = _HEADER.pack(0x31, advert.vrid, advert.priority, count, interval_hi, interval_lo, 0)
        message = head + addresses
        value = checksum(pseudo_header(src, dst, len(message)) + message)
    return message[:6] + struct.pack("!H", value) + message[8:]


def decode(data: bytes, src: IPAddress, dst: IPAddress) -> Advertisement | Dropped:
    """Parse and check one VRRP message (the IP payload). Never raises on any ``data``."""
    family = _family(src, dst)
    if len(data) < _HEADER.size:
        return Dropped(DropReason.TOO_SHORT, f"{len(data)} bytes, a header is {_HEADER.size}")
    version_type, vrid, priority, count, b4, b5, _ = _HEADER.unpack_from(data)
    version, kind = version_type >> 4, version_type & 0x0F
    if version not in (2, 3) or (version == 2 and family == 6):
        return Dropped(DropReason.BAD_VERSION, f"version {version} over IPv{family}")
    if kind != TYPE_ADVERTISEMENT:
        return Dropped(DropReason.BAD_TYPE, f"type {kind}")
    size = 4 if family == 4 else 16
    want = _HEADER.size + count * size + (V2_AUTH_LEN if version == 2 else 0)
    if len(data) != want:
        return Dropped(DropReason.BAD_LENGTH, f"{len(data)} bytes, {count} addresses need {want}")
    covered = data if version == 2 else pseudo_header(src, dst, len(data)) + data
    if checksum(covered) != 0:
        return Dropped(DropReason.BAD_CHECKSUM, f"checksum {data[6:8].hex()} does not verify")
    if vrid == 0:  # RFC 5798 5.2.3: 1..255; nothing can be configured to match it
        return Dropped(DropReason.VRID_MISMATCH, "VRID 0")
    interval_cs = b5 * 100 if version == 2 else ((b4 << 8) | b5) & V3_MAX_INTERVAL_CS
    if interval_cs == 0:
        return Dropped(DropReason.BAD_INTERVAL, "advertisement interval 0")
    auth_type, auth_data = AuthType.NONE, b""
    if version == 2:
        if b4 not in _AUTH_TYPES:
            return Dropped(DropReason.BAD_AUTH, f"unknown auth type {b4}")
        auth_type, auth_data = AuthType(b4), bytes(data[want - V2_AUTH_LEN :])
    start = _HEADER.size
    packed = [data[start + i * size : start + (i + 1) * size] for i in range(count)]
    addresses: tuple[IPAddress, ...] = (
        tuple(IPv4Address(p) for p in packed)
        if family == 4
        else tuple(IPv6Address(p) for p in packed)
    )
    return Advertisement(version, vrid, priority, interval_cs, addresses, auth_type, auth_data)


def validate(advert: Advertisement, expected: Expected) -> Dropped | None:
    """The receiver checks that need the virtual router's configuration, in RFC order."""
    if advert.version != expected.version:
        return Dropped(
            DropReason.BAD_VERSION, f"VRRPv{advert.version}, configured v{expected.version}"
        )
    if advert.vrid != expected.vrid:
        return Dropped(DropReason.VRID_MISMATCH, f"VRID {advert.vrid}, expected {expected.vrid}")
    if advert.version == 2:
        if advert.auth_type != expected.auth_type:
            return Dropped(
                DropReason.BAD_AUTH,
                f"auth type {advert.auth_type.name}, configured {expected.auth_type.name}",
            )
        password = expected.password.ljust(V2_AUTH_LEN, b"\0")
        if advert.auth_type == AuthType.SIMPLE and not hmac.compare_digest(
            advert.auth_data, password
        ):
            return Dropped(DropReason.AUTH_MISMATCH, "password differs")
        if advert.interval_cs != expected.interval_cs:
            return Dropped(
                DropReason.INTERVAL_MISMATCH,
                f"interval {advert.interval:g}s, configured {expected.interval_cs / 100:g}s",
            )
    if (
        expected.addresses is not None
        and advert.priority != PRIORITY_OWNER  # RFC: the owner's list wins; keep processing
        and frozenset(advert.addresses) != expected.addresses
    ):
        theirs = ", ".join(map(str, advert.addresses)) or "none"
        return Dropped(DropReason.ADDRESS_LIST_MISMATCH, f"advertised {theirs}")
    return None


def parse(
    data: bytes, src: IPAddress, dst: IPAddress, expected: Expected
) -> Advertisement | Dropped:
    """``decode`` then ``validate``: what a receive path calls per packet."""
    advert = decode(data, src, dst)
    if isinstance(advert, Dropped):
        return advert
    return validate(advert, expected) or advert


def _family(src: IPAddress, dst: IPAddress) -> int:
    if src.version != dst.version:
        raise ValueError(f"source {src} and destination {dst} are not of one address family")
    return src.version


def _check_encodable(advert: Advertisement, src: IPAddress, dst: IPAddress) -> None:
    family = _family(src, dst)
    problems: list[str] = []
    if advert.version not in (2, 3) or (advert.version == 2 and family == 6):
        problems.append(f"VRRPv{advert.version} over IPv{family}")
    if not 1 <= advert.vrid <= 255:
        problems.append(f"VRID {advert.vrid} not in 1..255")
    if not 0 <= advert.priority <= 255:
        problems.append(f"priority {advert.priority} not in 0..255")
    if len(advert.addresses) > 255:
        problems.append(f"{len(advert.addresses)} addresses, at most 255")
    if any(a.version != family for a in advert.addresses):
        problems.append(f"an address is not IPv{family}")
    if advert.version == 2:
        if advert.interval_cs % 100 or not 1 <= advert.interval_cs // 100 <= 255:
            problems.append(f"v2 interval {advert.interval:g}s not whole seconds in 1..255")
        if len(advert.auth_data) > V2_AUTH_LEN:
            problems.append(f"auth data longer than {V2_AUTH_LEN} bytes")
    elif not 1 <= advert.interval_cs <= V3_MAX_INTERVAL_CS:
        problems.append(f"v3 interval {advert.interval_cs}cs not in 1..{V3_MAX_INTERVAL_CS}")
    if problems:
        raise ValueError("cannot encode advertisement: " + "; ".join(problems))
