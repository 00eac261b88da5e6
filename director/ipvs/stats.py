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
from director.ipvs.wire import attrs

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


def _int(raw: bytes) -> int:
    if len(raw) >= 8:
        return int(_U64.unpack(raw[:8])[0])
    if len(raw) >= 4:
        return int(_U32.unpack(raw[:4])[0])
    return 0


def parse_counters(nested: dict[int, bytes]) -> Counters:
    """Counters from the attributes of a ``STATS``/``STATS64`` nest (sizes taken as sent)."""
    return Counters(
        conns=_int(nested.get(STATS_CONNS, b"")),
        inpkts=_int(nested.get(STATS_INPKTS, b"")),
        outpkts=_int(nested.get(STATS_OUTPKTS, b"")),
        inbytes=_int(nested.get(STATS_INBYTES, b"")),
        outbytes=_int(nested.get(STATS_OUTBYTES, b"")),
    )


def counters_of(entry: dict[int, bytes], stats: int, stats64: int) -> Counters:
    """The counters of a service or destination's attributes: ``STATS64``, else ``STATS``."""
    raw = entry.get(stats64)
    if raw is None:
        raw = entry.get(stats)
    return parse_counters(attrs(raw)) if raw is not None else Counters()
