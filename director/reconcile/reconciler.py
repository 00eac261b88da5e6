"""Apply a desired table to the kernel: plan, execute in order, read back.

Reconciling is level-triggered. ``sync(desired, full=True)`` dumps the whole kernel table first
(start-up and the periodic resync that repairs drift, e.g. after ``ipvsadm -C``).
``sync(desired)`` plans against the table as last read back, so a one-weight change costs one
request and a read-back of that one service, not a dump of the whole table. When most services
changed (a cold apply), the read-back is one dump of the whole table instead of one per service.
A refused operation makes the next sync a full one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from director.ipvs.kernel import IPVSKernel
from director.ipvs.model import ServiceKey, Table
from director.ipvs.ops import Op, OpFailure, touched_services
from director.pause import Pause, no_pause
from director.reconcile.order import ORDERED_SCHEDULERS
from director.reconcile.owned import OwnedStore
from director.reconcile.plan import plan


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    ops: list[Op]
    failures: list[OpFailure]
    full: bool
    seconds: float
    counts: tuple[int, int] = field(default=(0, 0))  # services, destinations now in the kernel

    @property
    def ok(self) -> bool:
        return not self.failures


def full_read_back(touched: int, known: int) -> bool:
    """Whether reading the whole table back is cheaper than reading the touched services.

    One service costs two requests (its entry, its destinations); the whole table one dump of
    the services and one request per service. With most services changed (a cold apply, a
    restore after ``ipvsadm -C``) the whole table wins."""
    return touched > 16 and 2 * touched >= known + 1


def _share_entries(
    observed: Table, desired: Table, keys: set[ServiceKey], *, frozen: bool = False
) -> None:
    """Where the read-back equals what was wanted, keep the wanted entries (equal, immutable)
    in the cached view: the next plan then compares them by identity, in C, so a one-weight
    change on a large table costs next to nothing for the services it does not touch."""
    for key in keys:
        want, have = desired.services.get(key), observed.services.get(key)
        if want is None or have is None or want != have:
            continue
        observed.services[key] = want
        wanted, read = desired.dests.get(key), observed.dests.get(key)
        if wanted is None or read is None or wanted != read:
            continue
        # mh/sh: the kernel list's order is part of the state (dict equality ignores it); keep
        # the order read back, so a list out of order is seen and repaired by the next plan
        # (for mh a weight-0 destination may sit anywhere, but where it sits matters once its
        # weight rises, so the view keeps the order read back for it too)
        if want.sched_name in ORDERED_SCHEDULERS and list(wanted) != list(read):
            continue
        # a copy unless the caller never changes a table it handed over (``frozen``): then the
        # view keeps the wanted dict itself (~36 bytes a destination, 3.5 MB at 100,000)
        observed.dests[key] = wanted if frozen else dict(wanted)


class Reconciler:
    """Owns the cached view of the kernel table between syncs. One caller at a time."""

    def __init__(self, kernel: IPVSKernel, owned: OwnedStore, *, frozen: bool = False) -> None:
        """``frozen``: the caller never changes a table after handing it to :meth:`sync` (the
        engine's compiled tables), so the cached view may share its destinations' dicts."""
        self.kernel = kernel
        self.owned = owned
        self.frozen = frozen
        self.observed: Table | None = None

    def sync(self, desired: Table, *, full: bool = False, pause: Pause = no_pause) -> SyncResult:
        """Bring the kernel to ``desired`` (``full``: read the whole table first, not the cached
        view). ``pause``: called before each service is read and planned
        (:class:`director.heap.Pacer`: a periodic resync beside the event loop)."""
        start = time.monotonic()
        full = full or self.observed is None
        observed = self.kernel.dump(pause) if full else self.observed
        assert observed is not None
        owned = self.owned.load()
        ops = plan(desired, observed, owned, pause)
        failures = self.kernel.execute(ops) if ops else []
        touched = touched_services(ops)
        if full_read_back(len(touched), len(observed.services)):
            observed = self.kernel.dump(pause)
        else:
            for key in touched:
                entry = self.kernel.dump_service(key)
                if entry is None:
                    observed.services.pop(key, None)
                    observed.dests.pop(key, None)
                else:
                    observed.services[key], observed.dests[key] = entry
        if not failures:
            # after a whole dump, every service: the read-back's equal entries are replaced
            # by the wanted ones, so the kernel's view holds no second copy of the table
            keys = set(observed.services) if full else touched
            _share_entries(observed, desired, keys, frozen=self.frozen)
        self.observed = None if failures else observed
        wanted = frozenset(desired.services)  # set operations reuse the keys' stored hashes
        still_there = {k for k in owned - wanted if k in observed.services}
        self.owned.save(wanted | still_there)
        return SyncResult(
            ops=ops,
            failures=failures,
            full=full,
            seconds=time.monotonic() - start,
            counts=observed.count(),
        )

    def remove_owned(self) -> SyncResult:
        """Delete every service the daemon owns (for a stop that must not leave the table)."""
        return self.sync(Table(), full=True)
