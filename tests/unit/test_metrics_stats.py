"""The IPVS counters codec: STATS64 preferred, the 32-bit STATS nest as a fallback."""

from __future__ import annotations

import ipaddress
import struct

from director.ipvs import wire
from director.ipvs.kernel import DestConns
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Dest, DestKey, Family, Protocol, Service, ServiceKey
from director.ipvs.ops import AddDest, AddService
from director.ipvs.stats import DEST_STATS, DEST_STATS64, Counters, counters_of


def nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


STATS32 = b"".join(
    (
        nla(1, struct.pack("=I", 7)),  # conns, inpkts, outpkts: u32 in the old nest
        nla(2, struct.pack("=I", 8)),
        nla(3, struct.pack("=I", 9)),
        nla(4, struct.pack("=Q", 10)),  # bytes: u64 in both
        nla(5, struct.pack("=Q", 11)),
        nla(6, struct.pack("=I", 99)),  # rates: not counters
    )
)
STATS64 = nla(11, b"") + b"".join(nla(i, struct.pack("=Q", 2**40 + i)) for i in range(1, 11))
DEST = wire.dest(Dest(DestKey.of(ipaddress.IPv4Address("198.18.1.11"), 80)))


def test_stats64_is_preferred_whatever_the_order() -> None:
    want = Counters(2**40 + 1, 2**40 + 2, 2**40 + 3, 2**40 + 4, 2**40 + 5)
    assert counters_of(DEST + nla(10, STATS32) + nla(12, STATS64), DEST_STATS, DEST_STATS64) == want
    assert counters_of(DEST + nla(12, STATS64) + nla(10, STATS32), DEST_STATS, DEST_STATS64) == want


def test_old_kernels_32_bit_nest_and_none() -> None:
    assert counters_of(DEST + nla(10, STATS32), DEST_STATS, DEST_STATS64) == Counters(
        7, 8, 9, 10, 11
    )
    assert counters_of(DEST, DEST_STATS, DEST_STATS64) == Counters()
    assert counters_of(DEST + nla(12, b"\x01\x00"), DEST_STATS, DEST_STATS64) == Counters()


def test_memory_kernel_reading_has_the_table_and_the_given_connections() -> None:
    key = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 80)
    dest = Dest(DestKey.of(ipaddress.IPv4Address("198.18.1.11"), 80), weight=3)
    kernel = MemoryIPVS()
    assert not kernel.execute([AddService(Service(key)), AddDest(key, dest)])
    kernel.conns[(key, dest.key)] = DestConns(2, 5, 1)
    snap = kernel.read_stats(42.0)
    assert snap.at == 42.0
    assert snap.services[key][0] == Service(key)
    got = snap.dest(key, dest.key)
    assert got is not None
    assert (got.dest, got.active, got.inactive, got.persistent) == (dest, 2, 5, 1)
    assert snap.dest(key, DestKey.of(ipaddress.IPv4Address("198.18.1.12"), 80)) is None
    assert key.family is Family.INET
