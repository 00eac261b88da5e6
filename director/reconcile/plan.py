"""The reconcile planner: desired table + observed table -> ordered operations. Pure.

Order matters to the kernel and to the connections going through it:

1. new services, and edits of existing ones (a destination needs its service);
2. new and changed destinations (capacity arrives before any leaves);
3. destinations that are no longer wanted, in services that stay;
4. services that are no longer wanted: their destinations first, then the service.

For ``mh`` and ``sh`` the kernel's destination list is also kept in one canonical order, so every
director builds the same hash table (:mod:`director.reconcile.order`).

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
from director.pause import Pause, no_pause
from director.reconcile.order import ORDERED_SCHEDULERS, add_in_order, reorder_dests

_NONE: dict[DestKey, Dest] = {}


def plan(
    desired: Table,
    observed: Table,
    owned: Iterable[ServiceKey] = (),
    pause: Pause = no_pause,
) -> list[Op]:
    """The operations that make the daemon's part of ``observed`` equal to ``desired``;
    ``pause`` is called before each service (:class:`director.heap.Pacer`)."""
    services: list[Op] = []
    dest_changes: list[Op] = []
    dest_removals: list[Op] = []
    removals: list[Op] = []

    # Every lookup below hashes a key in Python (ServiceKey.__hash__): a large table's
    # unchanged services cost three each and nothing more.
    have_services, wanted_dests, have_dests = observed.services, desired.dests, observed.dests
    for key, want in desired.services.items():
        pause()
        have = have_services.get(key)
        ordered = want.sched_name in ORDERED_SCHEDULERS
        if have is None:
            services.append(AddService(want))
            wanted = wanted_dests.get(key, _NONE)
            if ordered:
                dest_changes.extend(add_in_order(key, wanted))
            else:
                dest_changes.extend(AddDest(key, d) for d in wanted.values())
            continue
        if have is not want and have != want:
            services.append(EditService(want))
        wanted, present = wanted_dests.get(key, _NONE), have_dests.get(key, _NONE)
        if ordered:  # mh/sh: the kernel list's order matters, which dict equality ignores
            changes, drops = reorder_dests(key, wanted, present, want.sched_name)
        else:
            if wanted == present:  # by dict, in C; shared entries by identity (Reconciler.sync)
                continue
            changes, drops = _plan_dests(key, wanted, present)
        dest_changes.extend(changes)
        dest_removals.extend(drops)

    # Set difference hashes nothing (sets keep their hashes): usually nothing is left over.
    if not isinstance(owned, frozenset | set):
        owned = tuple(owned)  # any iterable, once
    if frozenset(owned) - frozenset(desired.services):
        for key in dict.fromkeys(owned):  # once each, in a stable order
            if key in desired.services or key not in observed.services:
                continue
            removals.extend(DelDest(key, dkey) for dkey in observed.dests_of(key))
            removals.append(DelService(key))

    return services + dest_changes + dest_removals + removals


def _plan_dests(
    key: ServiceKey, want: dict[DestKey, Dest], have: dict[DestKey, Dest]
) -> tuple[list[Op], list[Op]]:
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
