"""Fast codec for the bulk IPVS messages (services and destinations).

pyroute2's message classes (:mod:`director.ipvs.messages`) are the reference: they build the rare
messages and the tests check that this codec produces the same bytes and reads the same values.
This codec exists because a cold apply of 10,000 destinations through the generic classes spends
most of its time in Python (about 180 us per message), where ``struct`` needs a few.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from director.ipvs.model import (
    OWNED_SVC_FLAGS,
    Dest,
    DestKey,
    Family,
    Forwarding,
    IPAddress,
    Protocol,
    Service,
    ServiceKey,
    TunnelType,
)

_NLA = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_BE16 = struct.Struct("!H")
_U32 = struct.Struct("=I")
_BE32 = struct.Struct("!I")
_NLMSG = struct.Struct("=IHHIIBBH")  # nlmsghdr + genlmsghdr
GENL_HEADER = _NLMSG
NLA_F_NESTED = 0x8000

# Attribute numbers (include/uapi/linux/ip_vs.h).
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK, SVC_PE_NAME = 6, 7, 8, 9, 11
DEST_ADDR, DEST_PORT, DEST_FWD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ACTIVE, DEST_INACT, DEST_PERSIST, DEST_ADDR_FAMILY = 7, 8, 9, 11
# Linux 5.2 (TUN_TYPE, TUN_PORT) and 5.3 (TUN_FLAGS). TUN_PORT is big-endian on the wire: the
# kernel reads it with nla_get_be16 (pyroute2 0.9.7 declares it a host-order uint16).
DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 13, 14, 15


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def _addr(address: IPAddress) -> bytes:
    return address.packed.ljust(16, b"\0")


def _netmask(family: Family, prefix: int) -> bytes:
    if family is Family.INET:
        return _BE32.pack((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF if prefix else 0)
    return _U32.pack(prefix)


def service_key(key: ServiceKey) -> bytes:
    out = _attr(SVC_AF, _U16.pack(key.family))
    if key.fwmark:
        return out + _attr(SVC_FWMARK, _U32.pack(key.fwmark))
    assert key.protocol is not None and key.address is not None
    return (
        out
        + _attr(SVC_PROTOCOL, _U16.pack(key.protocol))
        + _attr(SVC_ADDR, _addr(key.address))
        + _attr(SVC_PORT, _BE16.pack(key.port))
    )


def service(svc: Service) -> bytes:
    out = (
        service_key(svc.key)
        + _attr(SVC_SCHED_NAME, svc.sched_name.encode() + b"\0")
        + _attr(SVC_FLAGS, struct.pack("=II", svc.flags & OWNED_SVC_FLAGS, 0xFFFFFFFF))
        + _attr(SVC_TIMEOUT, _U32.pack(svc.timeout))
        + _attr(SVC_NETMASK, _netmask(svc.key.family, svc.netmask))
    )
    if svc.pe_name:
        out += _attr(SVC_PE_NAME, svc.pe_name.encode() + b"\0")
    return out


def dest_key(key: DestKey) -> bytes:
    return (
        _attr(DEST_ADDR, _addr(key.address))
        + _attr(DEST_PORT, _BE16.pack(key.port))
        + _attr(DEST_ADDR_FAMILY, _U16.pack(Family.of(key.address)))
    )


def dest(d: Dest) -> bytes:
    out = (
        dest_key(d.key)
        + _attr(DEST_FWD, _U32.pack(d.fwd_method))
        + _attr(DEST_WEIGHT, _U32.pack(d.weight))
        + _attr(DEST_U_THRESH, _U32.pack(d.u_threshold))
        + _attr(DEST_L_THRESH, _U32.pack(d.l_threshold))
    )
    if d.fwd_method is Forwarding.TUNNEL:
        out += tunnel(d)
    return out


def tunnel(d: Dest) -> bytes:
    """TUN_TYPE (u8), TUN_PORT (be16), TUN_FLAGS (u16): sent for every tunnel destination,
    so that a SET replaces the whole encapsulation (absent, the kernel stores 0)."""
    return (
        _attr(DEST_TUN_TYPE, bytes([d.tun_type]))
        + _attr(DEST_TUN_PORT, _BE16.pack(d.tun_port))
        + _attr(DEST_TUN_FLAGS, _U16.pack(d.tun_flags))
    )


# -- the bulk path: whole nests from one pack, keys encoded once ---------------------------------

# ADDR (16 bytes for both families), PORT (be16 + pad), ADDR_FAMILY (u16 + pad): 36 bytes.
_DEST_KEY = struct.Struct("=HH16sHHHxxHHHxx")
# The CMD_ATTR_DEST nest header and FWD_METHOD, WEIGHT, U_THRESH, L_THRESH (u32 each).
_DEST_HEAD = _NLA.pack(4 + _DEST_KEY.size + 32, CMD_ATTR_DEST)
_DEST_FIELDS = struct.Struct("=HHIHHIHHIHHI")
# A tunnel destination's nest adds TUN_TYPE (u8 + 3 pad), TUN_PORT (be16 + pad), TUN_FLAGS.
_DEST_TUN = struct.Struct("=HHBxxxHHHxxHHHxx")
_DEST_HEAD_TUN = _NLA.pack(4 + _DEST_KEY.size + 32 + _DEST_TUN.size, CMD_ATTR_DEST)
_CACHE_MAX = 1_000_000
_dest_keys: dict[DestKey, bytes] = {}
_service_keys: dict[ServiceKey, bytes] = {}


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def dest_key_bytes(key: DestKey) -> bytes:
    """:func:`dest_key`, remembered per key (keys are shared objects, see ``DestKey.of``)."""
    out = _dest_keys.get(key)
    if out is None:
        if len(_dest_keys) > _CACHE_MAX:
            _dest_keys.clear()
        out = _dest_keys[key] = _DEST_KEY.pack(
            20,
            DEST_ADDR,
            key.address.packed,
            6,
            DEST_PORT,
            _swap16(key.port),
            6,
            DEST_ADDR_FAMILY,
            Family.of(key.address),
        )
    return out


def dest_nest(d: Dest) -> bytes:
    """``nested(CMD_ATTR_DEST, dest(d))``, the same bytes at a fraction of the cost."""
    tunnel = d.fwd_method is Forwarding.TUNNEL
    out = (
        (_DEST_HEAD_TUN if tunnel else _DEST_HEAD)
        + dest_key_bytes(d.key)
        + _DEST_FIELDS.pack(
            8,
            DEST_FWD,
            d.fwd_method,
            8,
            DEST_WEIGHT,
            d.weight,
            8,
            DEST_U_THRESH,
            d.u_threshold,
            8,
            DEST_L_THRESH,
            d.l_threshold,
        )
    )
    if not tunnel:
        return out
    return out + _DEST_TUN.pack(
        5,
        DEST_TUN_TYPE,
        d.tun_type,
        6,
        DEST_TUN_PORT,
        _swap16(d.tun_port),
        6,
        DEST_TUN_FLAGS,
        d.tun_flags,
    )


def service_key_nest(key: ServiceKey) -> bytes:
    """``nested(CMD_ATTR_SERVICE, service_key(key))``, remembered per key."""
    out = _service_keys.get(key)
    if out is None:
        if len(_service_keys) > _CACHE_MAX:
            _service_keys.clear()
        out = _service_keys[key] = nested(CMD_ATTR_SERVICE, service_key(key))
    return out


def nested(kind: int, payload: bytes) -> bytes:
    # pyroute2 does not set NLA_F_NESTED on nested attributes, and neither does ipvsadm.
    return _attr(kind, payload)


def message(family_id: int, flags: int, seq: int, cmd: int, payload: bytes) -> bytes:
    return _NLMSG.pack(20 + len(payload), family_id, flags, seq, 0, cmd, 1, 0) + payload


# -- decoding -----------------------------------------------------------------------------------


def attrs(data: bytes | memoryview, offset: int = 0, end: int | None = None) -> dict[int, bytes]:
    """The top-level attributes in ``data[offset:end]``, by number (flag bits cleared)."""
    out: dict[int, bytes] = {}
    end = len(data) if end is None else end
    while offset + 4 <= end:
        size, kind = _NLA.unpack_from(data, offset)
        if size < 4:
            break
        out[kind & 0x3FFF] = bytes(data[offset + 4 : offset + size])
        offset += (size + 3) & ~3
    return out


def _address(family: int, raw: bytes) -> IPAddress:
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw[:16])


def _u32(raw: bytes | None) -> int:
    return int(_U32.unpack_from(raw)[0]) if raw else 0


def parse_service(raw: bytes) -> Service:
    a = attrs(raw)
    family = Family(_U16.unpack(a[SVC_AF][:2])[0])
    fwmark = _u32(a.get(SVC_FWMARK))
    if fwmark:
        key = ServiceKey.mark(fwmark, family)
    else:
        key = ServiceKey(
            family,
            Protocol(_U16.unpack(a[SVC_PROTOCOL][:2])[0]),
            _address(family, a[SVC_ADDR]),
            _BE16.unpack(a[SVC_PORT][:2])[0],
        )
    flags = _u32(a.get(SVC_FLAGS))
    mask = a.get(SVC_NETMASK)
    if mask is None:
        prefix = family.max_prefix
    elif family is Family.INET:
        prefix = bin(_BE32.unpack(mask[:4])[0]).count("1")
    else:
        prefix = _u32(mask)
    return Service(
        key=key,
        sched_name=a.get(SVC_SCHED_NAME, b"").rstrip(b"\0").decode(),
        flags=flags & OWNED_SVC_FLAGS,
        timeout=_u32(a.get(SVC_TIMEOUT)),
        netmask=prefix,
        pe_name=a.get(SVC_PE_NAME, b"").rstrip(b"\0").decode(),
    )


_FORWARDING = {int(f): f for f in Forwarding}
_parsed_dest_keys: dict[tuple[bytes, bytes, bytes], DestKey] = {}


def parse_dest(
    raw: bytes, service_family: Family, start: int = 0, end: int | None = None
) -> tuple[Dest, tuple[int, int, int]]:
    """A destination's attributes in ``raw[start:end]``: the entry and its connection counts.

    One pass, no intermediate dict: a read-back decodes this for every destination."""
    values = [0] * 10  # by attribute number: FWD 3 .. PERSIST 9
    addr = port = af = b""
    tun_type = tun_port = tun_flags = 0
    offset, end = start, len(raw) if end is None else end
    unpack = _NLA.unpack_from
    while offset + 4 <= end:
        size, kind = unpack(raw, offset)
        if size < 4:
            break
        kind &= 0x3FFF
        if DEST_FWD <= kind <= DEST_PERSIST:
            values[kind] = _U32.unpack_from(raw, offset + 4)[0]
        elif kind == DEST_ADDR:
            addr = raw[offset + 4 : offset + 20]
        elif kind == DEST_PORT:
            port = raw[offset + 4 : offset + 6]
        elif kind == DEST_ADDR_FAMILY:
            af = raw[offset + 4 : offset + 6]
        elif kind == DEST_TUN_TYPE:
            tun_type = raw[offset + 4]
        elif kind == DEST_TUN_PORT:
            tun_port = _BE16.unpack_from(raw, offset + 4)[0]
        elif kind == DEST_TUN_FLAGS:
            tun_flags = _U16.unpack_from(raw, offset + 4)[0]
        offset += (size + 3) & ~3
    seen = (af, addr, port)
    key = _parsed_dest_keys.get(seen)
    if key is None:
        family = _U16.unpack(af)[0] if af else int(service_family)
        key = DestKey.of(_address(family, addr), _BE16.unpack(port)[0])
        if len(_parsed_dest_keys) > _CACHE_MAX:
            _parsed_dest_keys.clear()
        _parsed_dest_keys[seen] = key
    fwd = values[DEST_FWD] & 0x7
    d = Dest(
        key,
        _FORWARDING[fwd] if fwd in _FORWARDING else Forwarding(fwd),
        values[DEST_WEIGHT],
        values[DEST_U_THRESH],
        values[DEST_L_THRESH],
        *_tunnel_fields(tun_type, tun_port, tun_flags),
    )
    return d, (values[DEST_ACTIVE], values[DEST_INACT], values[DEST_PERSIST])


def _tunnel_fields(tun_type: int, tun_port: int, tun_flags: int) -> tuple[int, int, int]:
    """The tunnel fields as the model holds them: known types as :class:`TunnelType`."""
    return _TUNNEL_TYPES.get(tun_type, tun_type), tun_port, tun_flags


_TUNNEL_TYPES: dict[int, int] = {int(t): t for t in TunnelType}


def find(raw: bytes, kind: int) -> tuple[int, int] | None:
    """(start, end) of the payload of the top-level attribute ``kind`` in ``raw``."""
    offset, end = 0, len(raw)
    while offset + 4 <= end:
        size, found = _NLA.unpack_from(raw, offset)
        if size < 4:
            break
        if found & 0x3FFF == kind:
            return offset + 4, offset + size
        offset += (size + 3) & ~3
    return None
