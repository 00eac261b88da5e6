"""IPVS counters: what a dump says about traffic, apart from the table the daemon owns.

The kernel reports each service's and destination's counters in a nested ``STATS64`` attribute
(all 64-bit; kernels before 4.0 send only ``STATS``, with 32-bit connection and packet counts).
A :class:`StatsSnapshot` is one reading of the whole table, taken in the engine's worker thread;
the metrics endpoint and ``directorctl status`` only ever read the last snapshot, so neither
waits for the kernel.
"""

from __future__ import annotations

import struct
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


@dataclass(frozen=True)
class StatsSnapshot:
    """The whole IPVS table with counters, read at ``at`` (wall-clock seconds)."""

    at: float
    services: dict[ServiceKey, tuple[Service, Counters]] = field(default_factory=dict)
    dests: dict[ServiceKey, dict[DestKey, DestStats]] = field(default_factory=dict)

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
