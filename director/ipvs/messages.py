"""IPVS generic-netlink messages, built from pyroute2's message classes.

pyroute2 0.9.7 ships an ``ipvsmsg`` class, but it cannot express what the daemon needs: its
netmask is always an IPv4 address (the kernel reads an IPv6 prefix length there), and the daemon
and timeout attributes are opaque. These classes follow ``include/uapi/linux/ip_vs.h`` directly;
the conversion between them and :mod:`director.ipvs.model` lives here too, so that the socket code
deals only in bytes and model objects.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from pyroute2.netlink import genlmsg, nla

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

GENL_NAME = "IPVS"
GENL_VERSION = 1

CMD_NEW_SERVICE = 1
CMD_SET_SERVICE = 2
CMD_DEL_SERVICE = 3
CMD_GET_SERVICE = 4
CMD_NEW_DEST = 5
CMD_SET_DEST = 6
CMD_DEL_DEST = 7
CMD_GET_DEST = 8
CMD_NEW_DAEMON = 9
CMD_DEL_DAEMON = 10
CMD_GET_DAEMON = 11
CMD_SET_CONFIG = 12
CMD_GET_CONFIG = 13
CMD_SET_INFO = 14
CMD_GET_INFO = 15
CMD_ZERO = 16
CMD_FLUSH = 17

FWD_MASK = 0x0007


class _Stats(nla):
    nla_map = (
        ("IPVS_STATS_ATTR_UNSPEC", "none"),
        ("IPVS_STATS_ATTR_CONNS", "uint32"),
        ("IPVS_STATS_ATTR_INPKTS", "uint32"),
        ("IPVS_STATS_ATTR_OUTPKTS", "uint32"),
        ("IPVS_STATS_ATTR_INBYTES", "uint64"),
        ("IPVS_STATS_ATTR_OUTBYTES", "uint64"),
        ("IPVS_STATS_ATTR_CPS", "uint32"),
        ("IPVS_STATS_ATTR_INPPS", "uint32"),
        ("IPVS_STATS_ATTR_OUTPPS", "uint32"),
        ("IPVS_STATS_ATTR_INBPS", "uint32"),
        ("IPVS_STATS_ATTR_OUTBPS", "uint32"),
    )


class _Stats64(nla):
    nla_map = (
        ("IPVS_STATS_ATTR_UNSPEC", "none"),
        ("IPVS_STATS_ATTR_CONNS", "uint64"),
        ("IPVS_STATS_ATTR_INPKTS", "uint64"),
        ("IPVS_STATS_ATTR_OUTPKTS", "uint64"),
        ("IPVS_STATS_ATTR_INBYTES", "uint64"),
        ("IPVS_STATS_ATTR_OUTBYTES", "uint64"),
        ("IPVS_STATS_ATTR_CPS", "uint64"),
        ("IPVS_STATS_ATTR_INPPS", "uint64"),
        ("IPVS_STATS_ATTR_OUTPPS", "uint64"),
        ("IPVS_STATS_ATTR_INBPS", "uint64"),
        ("IPVS_STATS_ATTR_OUTBPS", "uint64"),
    )


class ipvs_service(nla):
    nla_map = (
        ("IPVS_SVC_ATTR_UNSPEC", "none"),
        ("IPVS_SVC_ATTR_AF", "uint16"),
        ("IPVS_SVC_ATTR_PROTOCOL", "uint16"),
        ("IPVS_SVC_ATTR_ADDR", "cdata"),
        ("IPVS_SVC_ATTR_PORT", "be16"),
        ("IPVS_SVC_ATTR_FWMARK", "uint32"),
        ("IPVS_SVC_ATTR_SCHED_NAME", "asciiz"),
        ("IPVS_SVC_ATTR_FLAGS", "svc_flags"),
        ("IPVS_SVC_ATTR_TIMEOUT", "uint32"),
        # be32 on the wire; an IPv4 mask in network order or an IPv6 prefix length in host
        # order (the kernel casts it). Kept as raw bytes and converted below.
        ("IPVS_SVC_ATTR_NETMASK", "cdata"),
        ("IPVS_SVC_ATTR_STATS", "stats"),
        ("IPVS_SVC_ATTR_PE_NAME", "asciiz"),
        ("IPVS_SVC_ATTR_STATS64", "stats64"),
    )

    class svc_flags(nla):
        fields = (("flags", "I"), ("mask", "I"))

    stats = _Stats
    stats64 = _Stats64


class ipvs_dest(nla):
    nla_map = (
        ("IPVS_DEST_ATTR_UNSPEC", "none"),
        ("IPVS_DEST_ATTR_ADDR", "cdata"),
        ("IPVS_DEST_ATTR_PORT", "be16"),
        ("IPVS_DEST_ATTR_FWD_METHOD", "uint32"),
        ("IPVS_DEST_ATTR_WEIGHT", "uint32"),
        ("IPVS_DEST_ATTR_U_THRESH", "uint32"),
        ("IPVS_DEST_ATTR_L_THRESH", "uint32"),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", "uint32"),
        ("IPVS_DEST_ATTR_INACT_CONNS", "uint32"),
        ("IPVS_DEST_ATTR_PERSIST_CONNS", "uint32"),
        ("IPVS_DEST_ATTR_STATS", "stats"),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", "uint16"),
        ("IPVS_DEST_ATTR_STATS64", "stats64"),
        ("IPVS_DEST_ATTR_TUN_TYPE", "uint8"),
        # nla_get_be16 in the kernel; pyroute2 0.9.7's ipvs module says "uint16" (host order),
        # which sends port 6080 as 0xC0 0x17 and the kernel tunnels to port 49175.
        ("IPVS_DEST_ATTR_TUN_PORT", "be16"),
        ("IPVS_DEST_ATTR_TUN_FLAGS", "uint16"),
    )

    stats = _Stats
    stats64 = _Stats64


class ipvs_daemon(nla):
    nla_map = (
        ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
        ("IPVS_DAEMON_ATTR_STATE", "uint32"),
        ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
        ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
        ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
        ("IPVS_DAEMON_ATTR_MCAST_GROUP", "cdata"),
        ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "cdata"),
        ("IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),
        ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
    )


class ipvs_msg(genlmsg):
    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "ipvs_service"),
        ("IPVS_CMD_ATTR_DEST", "ipvs_dest"),
        ("IPVS_CMD_ATTR_DAEMON", "ipvs_daemon"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )

    ipvs_service = ipvs_service
    ipvs_dest = ipvs_dest
    ipvs_daemon = ipvs_daemon


# -- model -> attributes ------------------------------------------------------------------------


def addr_bytes(address: IPAddress) -> bytes:
    """The kernel's ``union nf_inet_addr``: 16 bytes, an IPv4 address in the first four."""
    return address.packed.ljust(16, b"\0")


def netmask_bytes(family: Family, prefix: int) -> bytes:
    if family is Family.INET:
        mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF if prefix else 0
        return struct.pack("!I", mask)
    return struct.pack("=I", prefix)


def service_key_attrs(key: ServiceKey) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = [("IPVS_SVC_ATTR_AF", int(key.family))]
    if key.fwmark:
        attrs.append(("IPVS_SVC_ATTR_FWMARK", key.fwmark))
    else:
        assert key.protocol is not None and key.address is not None
        attrs += [
            ("IPVS_SVC_ATTR_PROTOCOL", int(key.protocol)),
            ("IPVS_SVC_ATTR_ADDR", addr_bytes(key.address)),
            ("IPVS_SVC_ATTR_PORT", key.port),
        ]
    return attrs


def service_attrs(svc: Service) -> list[tuple[str, Any]]:
    """Every field, always: the kernel's SET replaces the whole entry."""
    attrs = service_key_attrs(svc.key)
    attrs += [
        ("IPVS_SVC_ATTR_SCHED_NAME", svc.sched_name),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": svc.flags & OWNED_SVC_FLAGS, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", svc.timeout),
        ("IPVS_SVC_ATTR_NETMASK", netmask_bytes(svc.key.family, svc.netmask)),
    ]
    if svc.pe_name:
        attrs.append(("IPVS_SVC_ATTR_PE_NAME", svc.pe_name))
    return attrs


def dest_key_attrs(key: DestKey) -> list[tuple[str, Any]]:
    return [
        ("IPVS_DEST_ATTR_ADDR", addr_bytes(key.address)),
        ("IPVS_DEST_ATTR_PORT", key.port),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", int(Family.of(key.address))),
    ]


def dest_attrs(dest: Dest) -> list[tuple[str, Any]]:
    """Every field, always: a SET without fwd_method would turn NAT into direct routing (and
    one without the tunnel attributes would turn GUE into IP-in-IP)."""
    attrs: list[tuple[str, Any]] = [
        ("IPVS_DEST_ATTR_ADDR", addr_bytes(dest.key.address)),
        ("IPVS_DEST_ATTR_PORT", dest.key.port),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", int(dest.af)),
        ("IPVS_DEST_ATTR_FWD_METHOD", int(dest.fwd_method)),
        ("IPVS_DEST_ATTR_WEIGHT", dest.weight),
        ("IPVS_DEST_ATTR_U_THRESH", dest.u_threshold),
        ("IPVS_DEST_ATTR_L_THRESH", dest.l_threshold),
    ]
    if dest.fwd_method is Forwarding.TUNNEL:
        attrs += [
            ("IPVS_DEST_ATTR_TUN_TYPE", int(dest.tun_type)),
            ("IPVS_DEST_ATTR_TUN_PORT", dest.tun_port),
            ("IPVS_DEST_ATTR_TUN_FLAGS", dest.tun_flags),
        ]
    return attrs


# -- attributes -> model ------------------------------------------------------------------------


def _address(family: int, raw: bytes) -> IPAddress:
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw[:16])


def _prefix(family: Family, raw: bytes) -> int:
    if family is Family.INET:
        mask = struct.unpack("!I", raw[:4])[0]
        return bin(mask).count("1")
    return int(struct.unpack("=I", raw[:4])[0])


def parse_service(attr: Any) -> Service:
    """A dumped ``IPVS_CMD_ATTR_SERVICE`` as a :class:`Service`, raw attributes only."""
    family = Family(attr.get_attr("IPVS_SVC_ATTR_AF"))
    fwmark = attr.get_attr("IPVS_SVC_ATTR_FWMARK") or 0
    if fwmark:
        key = ServiceKey.mark(fwmark, family)
    else:
        key = ServiceKey(
            family,
            Protocol(attr.get_attr("IPVS_SVC_ATTR_PROTOCOL")),
            _address(family, attr.get_attr("IPVS_SVC_ATTR_ADDR")),
            attr.get_attr("IPVS_SVC_ATTR_PORT"),
        )
    flags = attr.get_attr("IPVS_SVC_ATTR_FLAGS")
    netmask = attr.get_attr("IPVS_SVC_ATTR_NETMASK")
    return Service(
        key=key,
        sched_name=attr.get_attr("IPVS_SVC_ATTR_SCHED_NAME") or "",
        flags=(flags["flags"] if flags is not None else 0) & OWNED_SVC_FLAGS,
        timeout=attr.get_attr("IPVS_SVC_ATTR_TIMEOUT") or 0,
        netmask=_prefix(family, netmask) if netmask is not None else family.max_prefix,
        pe_name=attr.get_attr("IPVS_SVC_ATTR_PE_NAME") or "",
    )


def _tunnel_type(value: int) -> int:
    return TunnelType(value) if value in TunnelType._value2member_map_ else value


def parse_dest(attr: Any, service_family: Family) -> tuple[Dest, tuple[int, int, int]]:
    """A dumped destination and its (active, inactive, persistent) connection counts."""
    af = attr.get_attr("IPVS_DEST_ATTR_ADDR_FAMILY") or int(service_family)
    key = DestKey.of(
        _address(af, attr.get_attr("IPVS_DEST_ATTR_ADDR")), attr.get_attr("IPVS_DEST_ATTR_PORT")
    )
    dest = Dest(
        key=key,
        fwd_method=Forwarding(attr.get_attr("IPVS_DEST_ATTR_FWD_METHOD") & FWD_MASK),
        weight=attr.get_attr("IPVS_DEST_ATTR_WEIGHT"),
        u_threshold=attr.get_attr("IPVS_DEST_ATTR_U_THRESH") or 0,
        l_threshold=attr.get_attr("IPVS_DEST_ATTR_L_THRESH") or 0,
        tun_type=_tunnel_type(attr.get_attr("IPVS_DEST_ATTR_TUN_TYPE") or 0),
        tun_port=attr.get_attr("IPVS_DEST_ATTR_TUN_PORT") or 0,
        tun_flags=attr.get_attr("IPVS_DEST_ATTR_TUN_FLAGS") or 0,
    )
    conns = (
        attr.get_attr("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0,
        attr.get_attr("IPVS_DEST_ATTR_INACT_CONNS") or 0,
        attr.get_attr("IPVS_DEST_ATTR_PERSIST_CONNS") or 0,
    )
    return dest, conns
