"""The IPVS counters codec: STATS64 preferred, the 32-bit STATS nest as a fallback."""

from __future__ import annotations

import gc
import ipaddress
import struct
import time

import pytest

from director.heap import Pacer
from director.ipvs import wire
from director.ipvs.kernel import DestConns
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Dest, DestKey, Family, Protocol, Service, ServiceKey
from director.ipvs.ops import AddDest, AddService
from director.ipvs.stats import (
    DEST_STATS,
    DEST_STATS64,
    Counters,
    DestReadings,
    DestsRead,
    DestStats,
    ReadingStore,
    ServicesRead,
    StatsSnapshot,
    counters_of,
)


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


def _dest(n: int, weight: int = 1) -> Dest:
    return Dest(
        DestKey.of(ipaddress.IPv4Address(f"198.18.{n // 250}.{n % 250 + 1}"), 80), weight=weight
    )


def test_dest_readings_read_as_a_dict_of_dest_stats() -> None:
    readings = DestReadings()
    big = Counters(2**64 - 1, 2**63, 3, 4, 5)  # u64 counters keep every bit
    readings.add(_dest(1), 1, 2, 3, big)
    readings.add(_dest(2, weight=0))
    readings.add(_dest(1, weight=7), 4, 5, 6)  # read twice: the last one
    want = {
        _dest(1).key: DestStats(_dest(1, weight=7), 4, 5, 6),
        _dest(2).key: DestStats(_dest(2, weight=0)),
    }
    assert dict(readings) == want
    assert readings == want
    assert list(readings) == [_dest(1).key, _dest(2).key]  # in reading order
    assert len(readings) == 2 and _dest(2).key in readings and _dest(3).key not in readings
    assert readings.get(_dest(3).key) is None
    readings.add(_dest(3), 0, 0, 0, big)
    assert readings[_dest(3).key].counters == big


def test_dest_readings_reuse_an_unchanged_entry() -> None:
    readings = DestReadings()
    readings.add(_dest(1, weight=3))
    old = readings.entry(_dest(1).key)
    assert old is not None
    assert readings.reuse(_dest(1, weight=3)) is old
    changed = _dest(1, weight=4)
    assert readings.reuse(changed) is changed
    new = _dest(2)
    assert readings.reuse(new) is new


def test_a_reading_leaves_few_objects_to_the_cyclic_collector() -> None:
    """A full collection walks every tracked object: a reading of 1,000 destinations adds a
    few, not one or two per destination (0.3-0.9 s pauses at 100,000, bench.scale)."""
    kernel = MemoryIPVS()
    ops: list[AddService | AddDest] = []
    for s in range(2):
        key = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 80 + s)
        ops.append(AddService(Service(key)))
        ops += [AddDest(key, _dest(n)) for n in range(500)]
    assert not kernel.execute(ops)
    kernel.conns[(key, _dest(7).key)] = DestConns(2, 5, 1)
    was = gc.isenabled()
    gc.disable()
    try:
        before = len(gc.get_objects())
        snap = kernel.read_stats(1.0)
        added = len(gc.get_objects()) - before
    finally:
        if was:
            gc.enable()
    assert sum(len(d) for d in snap.dests.values()) == 1000
    assert added < 30, f"{added} tracked objects for 2 services of 500 destinations"
    assert snap.dest(key, _dest(7).key) == DestStats(_dest(7), 2, 5, 1)


def test_a_reading_pauses_after_each_service() -> None:
    kernel = MemoryIPVS()
    keys = [
        ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 80 + s)
        for s in range(3)
    ]
    assert not kernel.execute([AddService(Service(k)) for k in keys])
    paused: list[int] = []
    snap = kernel.read_stats(1.0, lambda: paused.append(1))
    assert len(paused) == 3 and len(snap.services) == 3


def test_the_pacer_rests_between_slices_of_work() -> None:
    """Busy work paced 5 ms on / 10 ms off takes about three times as long, in rests the
    event loop's thread has the GIL to itself."""
    pace = Pacer(work=0.005, rest=0.010)
    slept = []
    started = time.perf_counter()
    while time.perf_counter() - started < 0.3:
        before = time.perf_counter()
        pace()
        if time.perf_counter() - before >= 0.009:
            slept.append(1)
    assert 15 <= len(slept) <= 25  # 0.3 s as 5 ms slices and 10 ms rests: ~20 rests


def test_a_reading_of_many_small_services_leaves_no_object_per_service() -> None:
    """10,000 services of 10 destinations (bench.scale): the reading's destinations share one
    list and one array, the services' entries and counters two lists, services without
    traffic share one Counters, and a service's readings are a view made when asked for: a
    few tracked objects for the whole reading, not six per service (index, list, array,
    readings, tuple, counters) as before."""
    kernel = MemoryIPVS()
    ops: list[AddService | AddDest] = []
    keys = []
    for s in range(200):
        key = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address(f"198.18.1.{s}"), 80)
        keys.append(key)
        ops.append(AddService(Service(key)))
        ops += [AddDest(key, _dest(n)) for n in range(10)]
    assert not kernel.execute(ops)
    kernel.conns[(keys[3], _dest(7).key)] = DestConns(2, 5, 1)
    was = gc.isenabled()
    gc.disable()
    try:
        before = len(gc.get_objects())
        snap = kernel.read_stats(1.0)
        added = len(gc.get_objects()) - before
    finally:
        if was:
            gc.enable()
    assert added <= 20, f"{added} tracked objects for 200 services of 10"
    assert snap.dest(keys[3], _dest(7).key) == DestStats(_dest(7), 2, 5, 1)
    assert snap.dest(keys[4], _dest(7).key) == DestStats(_dest(7))
    assert [list(snap.dests[k]) for k in keys] == [[_dest(n).key for n in range(10)]] * 200


def test_dest_readings_of_one_store_are_read_one_service_at_a_time() -> None:
    """Services share a store as consecutive ranges: adding to one read before is refused
    (its range would overlap the next one's), a key read again is replaced in place."""
    store = ReadingStore()
    first, second = DestReadings(store), None
    first.add(_dest(1))
    first.add(_dest(2))
    first.seal()
    second = DestReadings(store)
    second.add(_dest(3), 1)
    first.add(_dest(2, weight=5), 9)  # in its range: allowed
    with pytest.raises(ValueError, match="another service"):
        first.add(_dest(4))
    assert dict(first) == {
        _dest(1).key: DestStats(_dest(1)),
        _dest(2).key: DestStats(_dest(2, weight=5), 9),
    }
    assert dict(second) == {_dest(3).key: DestStats(_dest(3), 1)}
    assert len(first) == 2 and len(second) == 1 and _dest(3).key not in first


def test_a_readings_services_and_destinations_read_as_dicts() -> None:
    """ServicesRead and DestsRead behave as the dicts they replace: set, replace, delete, in
    order; a plain mapping may be set for a service (tests do); the view of a service's
    range equals its DestReadings."""
    keys = [
        ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.2.1"), p) for p in (1, 2, 3)
    ]
    services = ServicesRead()
    for n, key in enumerate(keys):
        services[key] = (Service(key), Counters(n))
    services[keys[1]] = (Service(keys[1]), Counters(7))
    del services[keys[0]]
    assert dict(services) == {
        keys[1]: (Service(keys[1]), Counters(7)),
        keys[2]: (Service(keys[2]), Counters(2)),
    }
    assert list(services) == keys[1:] and keys[0] not in services and len(services) == 2
    dests = DestsRead()
    for n, key in enumerate(keys[:2]):
        readings = dests.begin()
        readings.add(_dest(n), n + 1)
        readings.add(_dest(10 + n))
        dests.end(key, readings)
    dests[keys[2]] = {_dest(5).key: DestStats(_dest(5), 9)}
    assert dict(dests[keys[0]]) == {
        _dest(0).key: DestStats(_dest(0), 1),
        _dest(10).key: DestStats(_dest(10)),
    }
    assert dests[keys[1]].get(_dest(1).key) == DestStats(_dest(1), 2)
    assert list(dests) == keys and len(dests) == 3
    del dests[keys[0]]
    assert keys[0] not in dests and dests.get(keys[0]) is None
    with pytest.raises(ValueError, match="another store"):
        dests.end(keys[0], DestReadings())
    snap = StatsSnapshot(at=1.0, services=services, dests=dests)
    assert snap.dest(keys[2], _dest(5).key) == DestStats(_dest(5), 9)
    assert snap.dest(keys[0], _dest(0).key) is None
