"""The fast codec against pyroute2's message classes (the reference), byte for byte."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink.generic.ipvs import ipvsmsg

from director.ipvs import messages as m
from director.ipvs import wire
from director.ipvs.model import (
    TUN_F_CSUM,
    TUN_F_NOCSUM,
    TUN_F_REMCSUM,
    Dest,
    DestKey,
    Family,
    Forwarding,
    Protocol,
    Service,
    ServiceKey,
    TunnelType,
)
from director.ipvs.netlink import op_request, reference_payload
from director.ipvs.ops import AddDest, AddService, DelDest, DelService, EditDest, EditService
from tests.helpers.tables import dests, service_keys, services


def decode(payload: bytes) -> Any:
    data = struct.pack("=I", 20 + len(payload)) + bytes(16) + payload
    msg = m.ipvs_msg(data)
    msg.decode()
    return msg


@st.composite
def service_and_dests(draw: st.DrawFn) -> tuple[Service, dict[DestKey, Dest]]:
    key = draw(service_keys)
    return draw(services(key)), draw(dests(key))


@settings(max_examples=200, deadline=None)
@given(entry=service_and_dests())
def test_fast_encoding_matches_pyroute2(entry: tuple[Service, dict[DestKey, Dest]]) -> None:
    svc, ds = entry
    svc_attrs = ("IPVS_CMD_ATTR_SERVICE", {"attrs": m.service_attrs(svc)})
    key_attrs = ("IPVS_CMD_ATTR_SERVICE", {"attrs": m.service_key_attrs(svc.key)})
    assert op_request(AddService(svc)) == (m.CMD_NEW_SERVICE, reference_payload(1, [svc_attrs]))
    assert op_request(EditService(svc))[1] == reference_payload(2, [svc_attrs])
    assert op_request(DelService(svc.key))[1] == reference_payload(3, [key_attrs])
    for d in ds.values():
        full = ("IPVS_CMD_ATTR_DEST", {"attrs": m.dest_attrs(d)})
        only_key = ("IPVS_CMD_ATTR_DEST", {"attrs": m.dest_key_attrs(d.key)})
        assert op_request(AddDest(svc.key, d)) == (
            m.CMD_NEW_DEST,
            reference_payload(5, [key_attrs, full]),
        )
        assert op_request(EditDest(svc.key, d))[1] == reference_payload(6, [key_attrs, full])
        assert op_request(DelDest(svc.key, d.key))[1] == reference_payload(7, [key_attrs, only_key])


@settings(max_examples=200, deadline=None)
@given(entry=service_and_dests())
def test_fast_decoding_matches_pyroute2(entry: tuple[Service, dict[DestKey, Dest]]) -> None:
    svc, ds = entry
    payload = op_request(AddService(svc))[1]
    raw = wire.attrs(payload)[wire.CMD_ATTR_SERVICE]
    assert wire.parse_service(raw) == svc
    assert m.parse_service(decode(payload).get_attr("IPVS_CMD_ATTR_SERVICE")) == svc
    for d in ds.values():
        payload = op_request(AddDest(svc.key, d))[1]
        raw = wire.attrs(payload)[wire.CMD_ATTR_DEST]
        assert wire.parse_dest(raw, svc.key.family) == (d, (0, 0, 0))
        ref = m.parse_dest(decode(payload).get_attr("IPVS_CMD_ATTR_DEST"), svc.key.family)
        assert ref == (d, (0, 0, 0))


def test_ipv6_netmask_is_a_host_order_prefix_and_ipv4_a_network_order_mask() -> None:
    v6 = ServiceKey.inet(Protocol.TCP, ipaddress.IPv6Address("2001:db8::1"), 80)
    v4 = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.1"), 80)
    raw6 = wire.attrs(wire.service(Service(v6, "rr", netmask=64)))[wire.SVC_NETMASK]
    raw4 = wire.attrs(wire.service(Service(v4, "rr", netmask=24)))[wire.SVC_NETMASK]
    assert int.from_bytes(raw6, "little") == 64
    assert raw4 == bytes([255, 255, 255, 0])


def test_ipv4_address_fills_the_first_four_of_sixteen_bytes() -> None:
    key = ServiceKey.inet(Protocol.UDP, ipaddress.IPv4Address("198.18.0.7"), 53)
    raw = wire.attrs(wire.service_key(key))[wire.SVC_ADDR]
    assert raw == bytes([198, 18, 0, 7]) + bytes(12)
    assert ServiceKey.mark(5, Family.INET6).family is Family.INET6


@settings(max_examples=200, deadline=None)
@given(
    entry=service_and_dests(),
    conns=st.tuples(*[st.integers(0, 2**32 - 1)] * 3),
    counters=st.lists(st.integers(0, 2**63), min_size=5, max_size=5),
)
def test_dump_replies_parse_like_pyroute2(
    entry: tuple[Service, dict[DestKey, Dest]], conns: tuple[int, int, int], counters: list[int]
) -> None:
    """A destination as the kernel dumps it (connection counts, STATS and STATS64 nests, the
    tunnel attributes in the kernel's order, zero for a destination that is not a tunnel),
    encoded by pyroute2: the one-pass parser reads the same entry and counts as the reference
    parser."""
    svc, ds = entry
    names = ["CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES"]
    stats64 = {"attrs": [(f"IPVS_STATS_ATTR_{n}", v) for n, v in zip(names, counters, strict=True)]}
    stats32 = {
        "attrs": [
            (f"IPVS_STATS_ATTR_{n}", v & 0xFFFFFFFF) for n, v in zip(names, counters, strict=True)
        ]
    }
    for d in ds.values():
        attrs = [
            *m.dest_attrs(d)[:5],
            ("IPVS_DEST_ATTR_TUN_TYPE", int(d.tun_type)),
            ("IPVS_DEST_ATTR_TUN_PORT", d.tun_port),
            ("IPVS_DEST_ATTR_TUN_FLAGS", d.tun_flags),
            *m.dest_attrs(d)[5:7],
            ("IPVS_DEST_ATTR_ACTIVE_CONNS", conns[0]),
            ("IPVS_DEST_ATTR_INACT_CONNS", conns[1]),
            ("IPVS_DEST_ATTR_PERSIST_CONNS", conns[2]),
            ("IPVS_DEST_ATTR_STATS", stats32),
            ("IPVS_DEST_ATTR_STATS64", stats64),
        ]
        reply = reference_payload(m.CMD_GET_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": attrs})])
        where = wire.find(reply, wire.CMD_ATTR_DEST)
        assert where is not None
        ref = m.parse_dest(decode(reply).get_attr("IPVS_CMD_ATTR_DEST"), svc.key.family)
        assert wire.parse_dest(reply, svc.key.family, *where) == ref == (d, conns)


# -- tunnel attributes (IPVS_DEST_ATTR_TUN_TYPE / TUN_PORT / TUN_FLAGS) --------------------------

RS = DestKey.of(ipaddress.IPv4Address("198.18.1.11"), 80)
VIP = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 80)


def gue(port: int, flags: int = TUN_F_NOCSUM) -> Dest:
    return Dest(RS, Forwarding.TUNNEL, 1, tun_type=TunnelType.GUE, tun_port=port, tun_flags=flags)


def test_tunnel_port_6080_is_sent_big_endian() -> None:
    """The kernel reads TUN_PORT with nla_get_be16: port 6080 (0x17C0) must be 0x17 0xC0."""
    nest = op_request(AddDest(VIP, gue(6080, TUN_F_CSUM)))[1]
    where = wire.find(nest, wire.CMD_ATTR_DEST)
    assert where is not None
    inner = wire.attrs(nest[where[0] : where[1]])
    assert inner[wire.DEST_TUN_PORT] == bytes([0x17, 0xC0])
    assert inner[wire.DEST_TUN_TYPE] == bytes([1])  # IP_VS_CONN_F_TUNNEL_TYPE_GUE
    assert inner[wire.DEST_TUN_FLAGS] == struct.pack("=H", 1)  # IP_VS_TUNNEL_ENCAP_FLAG_CSUM
    # The whole tail of the nest, attribute headers and padding included.
    assert nest[where[1] - 24 : where[1]] == bytes.fromhex(
        "05000d00"
        "01000000"  # TUN_TYPE, u8 + 3 bytes of padding
        "06000e00"
        "17c00000"  # TUN_PORT, be16 + 2 bytes of padding
        "06000f00"
        "01000000"  # TUN_FLAGS, u16 (host order) + padding
    )
    assert wire.parse_dest(nest, Family.INET, *where)[0] == gue(6080, TUN_F_CSUM)


@pytest.mark.parametrize(
    ("tun_type", "port", "flags"),
    [(TunnelType.IPIP, 0, 0), (TunnelType.GRE, 0, TUN_F_CSUM), (TunnelType.GUE, 1, TUN_F_REMCSUM)],
)
def test_every_tunnel_destination_carries_all_three_attributes(
    tun_type: TunnelType, port: int, flags: int
) -> None:
    """A SET replaces the whole entry: without TUN_TYPE the kernel would store IP-in-IP."""
    d = Dest(RS, Forwarding.TUNNEL, 3, tun_type=tun_type, tun_port=port, tun_flags=flags)
    inner = wire.attrs(wire.dest(d))
    assert inner[wire.DEST_TUN_TYPE] == bytes([tun_type])
    assert inner[wire.DEST_TUN_PORT] == port.to_bytes(2, "big")
    assert inner[wire.DEST_TUN_FLAGS] == flags.to_bytes(2, "little")


@pytest.mark.parametrize("fwd", [Forwarding.NAT, Forwarding.DR])
def test_no_tunnel_attributes_for_other_forwarding(fwd: Forwarding) -> None:
    """What ipvsadm sends too; the kernel stores 0 for each, which is what the model holds."""
    inner = wire.attrs(wire.dest(Dest(RS, fwd, 1)))
    assert not {wire.DEST_TUN_TYPE, wire.DEST_TUN_PORT, wire.DEST_TUN_FLAGS} & set(inner)


def _pyroute2_tunnel_bytes(d: Dest) -> bytes:
    """pyroute2 0.9.7's own IPVS encoder (``ipvsmsg``), for the attributes it can express."""
    msg = ipvsmsg()
    msg["cmd"] = m.CMD_NEW_DEST
    msg["version"] = m.GENL_VERSION
    msg["attrs"] = [("IPVS_CMD_ATTR_DEST", {"attrs": _tunnel_attrs(d)})]
    msg.encode()
    return bytes(msg.data[20:])


def _tunnel_attrs(d: Dest) -> list[tuple[str, int]]:
    return [
        ("IPVS_DEST_ATTR_FWD_METHOD", int(d.fwd_method)),
        ("IPVS_DEST_ATTR_WEIGHT", d.weight),
        ("IPVS_DEST_ATTR_TUN_TYPE", int(d.tun_type)),
        ("IPVS_DEST_ATTR_TUN_PORT", d.tun_port),
        ("IPVS_DEST_ATTR_TUN_FLAGS", d.tun_flags),
    ]


@settings(max_examples=100, deadline=None)
@given(
    tun_type=st.sampled_from(list(TunnelType)),
    port=st.integers(0, 255).map(lambda b: b * 0x101),  # the same byte twice: 0x1717 ...
    flags=st.sampled_from([TUN_F_NOCSUM, TUN_F_CSUM, TUN_F_REMCSUM]),
)
def test_pyroute2_encoder_agrees_where_the_port_reads_the_same_both_ways(
    tun_type: TunnelType, port: int, flags: int
) -> None:
    d = Dest(RS, Forwarding.TUNNEL, 7, tun_type=tun_type, tun_port=port, tun_flags=flags)
    ours = reference_payload(m.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": _tunnel_attrs(d)})])
    assert _pyroute2_tunnel_bytes(d) == ours
    assert ours.endswith(wire.tunnel(d))


def test_pyroute2_encoder_sends_the_tunnel_port_byte_swapped() -> None:
    """Where pyroute2 0.9.7 is wrong: its ``IPVS_DEST_ATTR_TUN_PORT`` is a host-order
    ``uint16``, so on x86 port 6080 leaves as 0xC0 0x17 and the kernel (nla_get_be16) tunnels
    to port 49175. Everything else of the message is the same as ours."""
    d = gue(6080)
    theirs, ours = (
        _pyroute2_tunnel_bytes(d),
        reference_payload(m.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": _tunnel_attrs(d)})]),
    )
    assert len(theirs) == len(ours)
    diff = [i for i in range(len(ours)) if theirs[i] != ours[i]]
    assert len(diff) == 2 and diff[1] == diff[0] + 1
    assert ours[diff[0] : diff[0] + 2] == bytes([0x17, 0xC0])
    assert theirs[diff[0] : diff[0] + 2] == bytes([0xC0, 0x17])
    assert int.from_bytes(theirs[diff[0] : diff[0] + 2], "big") == 49175
