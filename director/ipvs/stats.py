"""IPVS counters: what a dump says about traffic, apart from the table the daemon owns.

The kernel reports each service's and destination's counters in a nested ``STATS64`` attribute
(all 64-bit; kernels before 4.0 send only ``STATS``, with 32-bit connection and packet counts).
A :class:`StatsSnapshot` is one reading of the whole table, taken in the engine's worker thread;
the metrics endpoint and ``directorctl status`` only ever read the last snapshot, so neither
waits for the kernel.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field

from director.ipvs.model import Dest, DestKey, Service, ServiceKey

SVC_STATS, SVC_STATS64 = 10, 12
DEST_STATS, DEST_STATS64 = 10, 12
STATS_CONNS, STATS_INPKTS, STATS_OUTPKTS, STATS_INBYTES, STATS_OUTBYTES = 1, 2, 3, 4, 5
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


@dataclass(frozen=True)
class Counters:
    """Totals since the service or destination was added (``ipvsadm -Ln --stats``)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0


@dataclass(frozen=True)
class DestStats:
    """One destination as last read: its entry, connection counts and counters."""

    dest: Dest
    active: int = 0
    inactive: int = 0
    persistent: int = 0
    counters: Counters = Counters()


_WIDTH = 8  # numbers per destination: active, inactive, persistent, then the 5 counters
ZERO = Counters()  # shared: a service or destination without traffic needs no object of its own


class ReadingStore:
    """The destinations of one whole reading, every service's one after another: one list of
    entries and one array of numbers (``_WIDTH`` per destination) for the whole table."""

    __slots__ = ("dests", "values")

    def __init__(self) -> None:
        self.dests: list[Dest] = []
        self.values = array("Q")


class DestReadings(Mapping[DestKey, DestStats]):
    """One service's destinations as read, by key: a :class:`DestStats` is made when asked for.

    A reading of a 100,000-destination table is replaced every ``stats_interval`` and the last
    two are kept (the rates are their difference): as a :class:`DestStats` and a
    :class:`Counters` per destination, that was 400,000 objects the cyclic collector walked at
    every full collection (0.3-0.9 s of a stalled event loop, ``bench.scale --profile gc``).
    Here a service's destinations are a range of a :class:`ReadingStore` that the whole
    reading shares (one list, and one array of integers, which the collector does not track):
    one tracked object per service. The index by key is kept while the service is read and
    dropped by :meth:`seal`; a lookup after that makes it again (in a rendering child, as a
    rule: the daemon itself only iterates). Append only, one service of a store at a time."""

    __slots__ = ("_index", "_start", "_stop", "_store")

    def __init__(self, store: ReadingStore | None = None) -> None:
        self._store = ReadingStore() if store is None else store
        self._start = self._stop = len(self._store.dests)
        self._index: dict[DestKey, int] | None = {}

    @classmethod
    def view(cls, store: ReadingStore, start: int, stop: int) -> DestReadings:
        """The (read) range ``start:stop`` of ``store``, without an index until a lookup."""
        readings = cls.__new__(cls)
        readings._store, readings._start, readings._stop = store, start, stop
        readings._index = None
        return readings

    def add(
        self,
        dest: Dest,
        active: int = 0,
        inactive: int = 0,
        persistent: int = 0,
        counters: Counters = ZERO,
    ) -> None:
        """``dest``'s reading; a key read twice keeps the last."""
        store = self._store
        index = self._keys()
        at = index.get(dest.key)
        values = (
            active, inactive, persistent, counters.conns, counters.inpkts, counters.outpkts,
            counters.inbytes, counters.outbytes,
        )  # fmt: skip
        if at is None:
            if self._stop != len(store.dests):
                raise ValueError("another service was read into this store since this one")
            index[dest.key] = self._stop - self._start
            store.dests.append(dest)
            store.values.extend(values)
            self._stop += 1
        else:
            at += self._start
            store.dests[at] = dest
            store.values[at * _WIDTH : (at + 1) * _WIDTH] = array("Q", values)

    def seal(self) -> None:
        """The service is read: its index goes (made again by the first lookup)."""
        self._index = None

    def _keys(self) -> dict[DestKey, int]:
        index = self._index
        if index is None:
            dests = self._store.dests
            index = self._index = {
                dests[at].key: at - self._start for at in range(self._start, self._stop)
            }
        return index

    def entries(self) -> list[Dest]:
        """The destinations' entries as read, in reading order."""
        return self._store.dests[self._start : self._stop]

    def entry(self, key: DestKey) -> Dest | None:
        """The destination's entry as read (shared with :meth:`reuse`), without its numbers."""
        at = self._keys().get(key)
        return None if at is None else self._store.dests[self._start + at]

    def reuse(self, dest: Dest) -> Dest:
        """The entry of this reading equal to ``dest`` if there is one, else ``dest``: the next
        reading of an unchanged table then holds no new entries."""
        old = self.entry(dest.key)
        return old if old is not None and old == dest else dest

    def _stats(self, at: int) -> DestStats:
        at += self._start
        v = self._store.values[at * _WIDTH : (at + 1) * _WIDTH]
        counters = ZERO if not any(v[3:]) else Counters(v[3], v[4], v[5], v[6], v[7])
        return DestStats(self._store.dests[at], v[0], v[1], v[2], counters)

    def __getitem__(self, key: DestKey) -> DestStats:
        return self._stats(self._keys()[key])

    def get(self, key: DestKey, default: DestStats | None = None) -> DestStats | None:  # type: ignore[override]
        at = self._keys().get(key)
        return default if at is None else self._stats(at)

    def items(self) -> Iterator[tuple[DestKey, DestStats]]:  # type: ignore[override]
        """In reading order, without the index."""
        for at in range(self._stop - self._start):
            stats = self._stats(at)
            yield stats.dest.key, stats

    def __contains__(self, key: object) -> bool:
        return key in self._keys()

    def __iter__(self) -> Iterator[DestKey]:
        return (d.key for d in self.entries())

    def __len__(self) -> int:
        return self._stop - self._start

    def __repr__(self) -> str:
        return f"DestReadings({dict(self.items())!r})"


class ServicesRead(MutableMapping[ServiceKey, tuple[Service, Counters]]):
    """A reading's services, by key, as ``(entry, counters)``: the pair is made when asked
    for. Two lists and an index for the whole table instead of a tracked tuple per service
    (10,000 of them per reading at 10,000 services, walked by every full collection)."""

    __slots__ = ("_counters", "_index", "_services")

    def __init__(self) -> None:
        self._index: dict[ServiceKey, int] = {}
        self._services: list[Service] = []
        self._counters: list[Counters] = []

    def __setitem__(self, key: ServiceKey, value: tuple[Service, Counters]) -> None:
        at = self._index.get(key)
        if at is None:
            self._index[key] = len(self._services)
            self._services.append(value[0])
            self._counters.append(value[1])
        else:
            self._services[at], self._counters[at] = value

    def __getitem__(self, key: ServiceKey) -> tuple[Service, Counters]:
        at = self._index[key]
        return self._services[at], self._counters[at]

    def __delitem__(self, key: ServiceKey) -> None:
        at = self._index.pop(key)
        del self._services[at], self._counters[at]
        for other, where in self._index.items():
            if where > at:
                self._index[other] = where - 1

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[ServiceKey]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"ServicesRead({dict(self.items())!r})"


class DestsRead(MutableMapping[ServiceKey, Mapping[DestKey, DestStats]]):
    """A reading's destinations by service: each service's a range of one
    :class:`ReadingStore`, read with :meth:`begin` and :meth:`end`; ``[key]`` makes a
    :class:`DestReadings` view of it when asked for (no tracked object per service is kept).
    Any other mapping may be set as well (tests)."""

    __slots__ = ("_other", "_starts", "_stops", "store")

    def __init__(self) -> None:
        self.store = ReadingStore()
        # a service's range: two ints, never a tuple (tracked by the collector until it runs)
        self._starts: dict[ServiceKey, int] = {}
        self._stops: dict[ServiceKey, int] = {}
        self._other: dict[ServiceKey, Mapping[DestKey, DestStats]] = {}

    def begin(self) -> DestReadings:
        """A service's readings to :meth:`DestReadings.add` to, then :meth:`end`."""
        return DestReadings(self.store)

    def end(self, key: ServiceKey, readings: DestReadings) -> None:
        """``readings`` (from :meth:`begin`, complete) as ``key``'s."""
        if readings._store is not self.store:
            raise ValueError("readings of another store")
        self._other.pop(key, None)
        self._starts[key], self._stops[key] = readings._start, readings._stop

    def __setitem__(self, key: ServiceKey, value: Mapping[DestKey, DestStats]) -> None:
        self._starts.pop(key, None)
        self._stops.pop(key, None)
        self._other[key] = value

    def __getitem__(self, key: ServiceKey) -> Mapping[DestKey, DestStats]:
        start = self._starts.get(key)
        if start is None:
            return self._other[key]
        return DestReadings.view(self.store, start, self._stops[key])

    def __delitem__(self, key: ServiceKey) -> None:
        if self._starts.pop(key, None) is None:
            del self._other[key]
        else:
            del self._stops[key]

    def __contains__(self, key: object) -> bool:
        return key in self._starts or key in self._other

    def __iter__(self) -> Iterator[ServiceKey]:
        yield from self._starts
        yield from self._other

    def __len__(self) -> int:
        return len(self._starts) + len(self._other)

    def __repr__(self) -> str:
        return f"DestsRead({ {k: dict(v) for k, v in self.items()}!r})"


@dataclass(frozen=True)
class StatsSnapshot:
    """The whole IPVS table with counters, read at ``at`` (wall-clock seconds). A kernel's
    reading holds a :class:`ServicesRead` and a :class:`DestsRead`; plain dicts do as well
    (tests)."""

    at: float
    services: MutableMapping[ServiceKey, tuple[Service, Counters]] = field(default_factory=dict)
    dests: MutableMapping[ServiceKey, Mapping[DestKey, DestStats]] = field(default_factory=dict)

    def dest(self, service: ServiceKey, dest: DestKey) -> DestStats | None:
        return self.dests.get(service, {}).get(dest)


_NLA = struct.Struct("=HH")
_FIELDS = {STATS_CONNS: 0, STATS_INPKTS: 1, STATS_OUTPKTS: 2, STATS_INBYTES: 3, STATS_OUTBYTES: 4}


def _find(data: bytes, wanted: tuple[int, ...]) -> tuple[int, int] | None:
    """(start, end) of the payload of the first attribute in ``wanted`` order that is present."""
    found: dict[int, tuple[int, int]] = {}
    offset, end = 0, len(data)
    while offset + 4 <= end:
        size, kind = _NLA.unpack_from(data, offset)
        if size < 4:
            break
        kind &= 0x3FFF
        if kind in wanted:
            found[kind] = (offset + 4, offset + size)
        offset += (size + 3) & ~3
    for kind in wanted:
        if kind in found:
            return found[kind]
    return None


def parse_counters(data: bytes, start: int = 0, end: int | None = None) -> Counters:
    """Counters from a ``STATS``/``STATS64`` nest in ``data[start:end]`` (sizes taken as sent).

    One pass with ``unpack_from`` and no intermediate dict: a full reading decodes this for
    every destination, so it is kept cheap."""
    values = [0, 0, 0, 0, 0]
    offset, end = start, len(data) if end is None else end
    while offset + 4 <= end:
        size, kind = _NLA.unpack_from(data, offset)
        if size < 4:
            break
        index = _FIELDS.get(kind & 0x3FFF)
        if index is not None:
            if size >= 12:
                values[index] = _U64.unpack_from(data, offset + 4)[0]
            elif size >= 8:
                values[index] = _U32.unpack_from(data, offset + 4)[0]
        offset += (size + 3) & ~3
    return Counters(*values) if any(values) else ZERO


def counters_of(raw: bytes, stats: int, stats64: int) -> Counters:
    """The counters in a service's or destination's attributes: ``STATS64``, else ``STATS``."""
    where = _find(raw, (stats64, stats))
    return parse_counters(raw, *where) if where is not None else ZERO
