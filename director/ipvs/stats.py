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
from collections.abc import Iterator, Mapping
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


class DestReadings(Mapping[DestKey, DestStats]):
    """One service's destinations as read, by key: a :class:`DestStats` is made when asked for.

    A reading of a 100,000-destination table is replaced every ``stats_interval`` and the last
    two are kept (the rates are their difference): as a :class:`DestStats` and a
    :class:`Counters` per destination, that was 400,000 objects the cyclic collector walked at
    every full collection (0.3-0.9 s of a stalled event loop, ``bench.scale --profile gc``).
    Here a service's destinations are three tracked containers (the index, the entries, this)
    and one array of integers, which the collector does not track. Append only, while read."""

    __slots__ = ("_dests", "_index", "_values")

    def __init__(self) -> None:
        self._index: dict[DestKey, int] = {}
        self._dests: list[Dest] = []
        self._values = array("Q")

    def add(
        self,
        dest: Dest,
        active: int = 0,
        inactive: int = 0,
        persistent: int = 0,
        counters: Counters = Counters(),
    ) -> None:
        """``dest``'s reading; a key read twice keeps the last."""
        at = self._index.get(dest.key)
        values = (
            active, inactive, persistent, counters.conns, counters.inpkts, counters.outpkts,
            counters.inbytes, counters.outbytes,
        )  # fmt: skip
        if at is None:
            self._index[dest.key] = len(self._dests)
            self._dests.append(dest)
            self._values.extend(values)
        else:
            self._dests[at] = dest
            self._values[at * _WIDTH : (at + 1) * _WIDTH] = array("Q", values)

    def entry(self, key: DestKey) -> Dest | None:
        """The destination's entry as read (shared with :meth:`reuse`), without its numbers."""
        at = self._index.get(key)
        return None if at is None else self._dests[at]

    def reuse(self, dest: Dest) -> Dest:
        """The entry of this reading equal to ``dest`` if there is one, else ``dest``: the next
        reading of an unchanged table then holds no new entries."""
        old = self.entry(dest.key)
        return old if old is not None and old == dest else dest

    def _stats(self, at: int) -> DestStats:
        v = self._values[at * _WIDTH : (at + 1) * _WIDTH]
        return DestStats(self._dests[at], v[0], v[1], v[2], Counters(v[3], v[4], v[5], v[6], v[7]))

    def __getitem__(self, key: DestKey) -> DestStats:
        return self._stats(self._index[key])

    def get(self, key: DestKey, default: DestStats | None = None) -> DestStats | None:  # type: ignore[override]
        at = self._index.get(key)
        return default if at is None else self._stats(at)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[DestKey]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"DestReadings({dict(self.items())!r})"


@dataclass(frozen=True)
class StatsSnapshot:
    """The whole IPVS table with counters, read at ``at`` (wall-clock seconds). A kernel's
    reading holds :class:`DestReadings`; a plain dict does as well (tests)."""

    at: float
    services: dict[ServiceKey, tuple[Service, Counters]] = field(default_factory=dict)
    dests: dict[ServiceKey, Mapping[DestKey, DestStats]] = field(default_factory=dict)

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
    return Counters(*values)


def counters_of(raw: bytes, stats: int, stats64: int) -> Counters:
    """The counters in a service's or destination's attributes: ``STATS64``, else ``STATS``."""
    where = _find(raw, (stats64, stats))
    return parse_counters(raw, *where) if where is not None else Counters()
