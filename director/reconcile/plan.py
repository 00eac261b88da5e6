"""The reconcile planner: desired table + observed table -> ordered operations. Pure.

Order matters to the kernel and to the connections going through it:

1. new services, and edits of existing ones (a destination needs its service);
2. new and changed destinations (capacity arrives before any leaves);
3. destinations that are no longer wanted, in services that stay;
4. services that are no longer wanted: their destinations first, then the service.

Only services the daemon owns are touched: those it wants now, and those it wanted before
(``owned``, remembered across restarts) that the config dropped. Anything else in the kernel -
added by hand or by another tool - is left exactly as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from director.ipvs.model import Dest, DestKey, ServiceKey, Table
from director.ipvs.ops import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    EditDest,
    EditService,
    Op,
)


def plan(desired: Table, observed: Table, owned: Iterable[ServiceKey] = ()) -> list[Op]:
    """The operations that make the daemon's part of ``observed`` equal to ``desired``."""
    services: list[Op] = []
    dest_changes: list[Op] = []
    dest_removals: list[Op] = []
    removals: list[Op] = []

    for key, want in desired.services.items():
        have = observed.services.get(key)
        if have is None:
            services.append(AddService(want))
            dest_changes.extend(AddDest(key, d) for d in desired.dests_of(key).values())
            continue
        if have is not want and have != want:
            services.append(EditService(want))
        changes, drops = _plan_dests(key, desired.dests_of(key), observed.dests_of(key))
        dest_changes.extend(changes)
        dest_removals.extend(drops)

    for key in dict.fromkeys(owned):  # once each, in a stable order
        if key in desired.services or key not in observed.services:
            continue
        removals.extend(DelDest(key, dkey) for dkey in observed.dests_of(key))
        removals.append(DelService(key))

    return services + dest_changes + dest_removals + removals


def _plan_dests(
    key: ServiceKey, want: dict[DestKey, Dest], have: dict[DestKey, Dest]
) -> tuple[list[Op], list[Op]]:
    # The common case, compared by dict itself: no hashing and no loop in Python, and entries
    # that are the same objects (see Reconciler.sync) compare by identity, in C.
    if want == have:
        return [], []
    changes: list[Op] = []
    found = 0
    for dkey, dest in want.items():
        current = have.get(dkey)
        if current is None:
            changes.append(AddDest(key, dest))
            continue
        found += 1
        if current != dest:
            changes.append(EditDest(key, dest))
    if found == len(have):  # every destination the kernel has is still wanted
        return changes, []
    return changes, [DelDest(key, dkey) for dkey in have if dkey not in want]
