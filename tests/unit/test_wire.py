"""The fast codec against pyroute2's message classes (the reference), byte for byte."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from director.ipvs import messages as m
from director.ipvs import wire
from director.ipvs.model import Dest, DestKey, Family, Protocol, Service, ServiceKey
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
    """A destination as the kernel dumps it (connection counts, STATS and STATS64 nests, tunnel
    attributes the daemon does not own), encoded by pyroute2: the one-pass parser reads the
    same entry and counts as the reference parser."""
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
            ("IPVS_DEST_ATTR_TUN_TYPE", 1),
            ("IPVS_DEST_ATTR_TUN_PORT", 6081),
            ("IPVS_DEST_ATTR_TUN_FLAGS", 3),
            *m.dest_attrs(d)[5:],
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
