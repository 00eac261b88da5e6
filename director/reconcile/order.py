"""The canonical destination order of hashing schedulers, and the operations that restore it.

Active-active directors must pick the same real server for a flow, whichever of them the router
hands it to. With ``mh`` (Maglev) and ``sh`` the kernel builds the lookup table from the
service's destination list *in list order*: ``ip_vs_mh_populate`` walks the list round by round
and the first destination to claim a slot keeps it, ``ip_vs_sh_reassign`` deals the buckets
round-robin along the list. The offsets and skips are hashes of each destination's address and
port with fixed keys, so the table is a function of (the list in order, each destination's last
non-zero weight) and nothing else - the same on every director *if the lists are in the same
order*.

The kernel's list is not in config order: ``__ip_vs_update_dest`` inserts a new destination at
the head (``list_add_rcu``), so the list (and a netlink dump, which walks it) is newest first,
and a destination removed and added again (a failed server coming back with ``on_failure =
"remove"``, a config reload) moves to the head. Two directors with different histories would
then build different tables.

So for these schedulers the list is kept in one canonical order - by address family, address
bytes, port (:func:`canonical_key`) - independent of config order and reload history:

* a new service's destinations are added last-first, so the head is the smallest key;
* when the observed list is not canonical, the longest canonical *tail* already in order is
  kept and every destination before it is deleted and added again (smallest key last). A
  removed destination waits in the kernel's trash and is restored by the add, with its
  connections; only the scheduling of new connections during those few netlink requests sees
  an intermediate table.

Weight 0 and ``mh`` (``ip_vs_mh_permutate``): a destination's slots come from its
``last_weight``, which ``__ip_vs_update_dest`` sets on every add and on every edit to a weight
above 0 - so one *added* with weight 0 has no slots, while one *set* to 0 after it had weight
keeps its slots (and a flow that hashes there finds no server unless ``mh-fallback``). Two
directors whose histories differ (one drained a server, the other started during the drain)
would build different tables. So for ``mh`` a weight-0 destination never holds slots: one
whose weight goes to 0 is deleted and added again with weight 0 (restored from the trash with
its connections, last weight 0). A destination with last weight 0 has no effect on the table,
wherever it is in the list, so weight-0 destinations are left out of the canonical order and
put back in it when their weight rises. ``sh`` deals its buckets by the current weight, where a
weight-0 destination still gets one: every destination stays in the canonical order.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

from director.ipvs.model import Dest, DestKey, ServiceKey
from director.ipvs.ops import AddDest, DelDest, EditDest, Op

# Schedulers whose lookup table depends on the order of the destination list.
ORDERED_SCHEDULERS = frozenset({"mh", "sh"})
# Schedulers that build it from each destination's last non-zero weight (see above).
LAST_WEIGHT_SCHEDULERS = frozenset({"mh"})
K = TypeVar("K", bound=Hashable)


def canonical_key(key: DestKey) -> tuple[int, bytes, int]:
    """Sort key of a destination: address family, address bytes, port."""
    return key.address.version, key.address.packed, key.port


def canonical(dests: Mapping[DestKey, Dest]) -> dict[DestKey, Dest]:
    """``dests`` in canonical order (the order the kernel's list should have, head first)."""
    return {k: dests[k] for k in sorted(dests, key=canonical_key)}


def add_in_order(service: ServiceKey, dests: Mapping[DestKey, Dest]) -> list[Op]:
    """Adds that leave the kernel's list in canonical order: last key first."""
    return [AddDest(service, dests[k]) for k in sorted(dests, key=canonical_key, reverse=True)]


def kept_tail(want: Sequence[K], have: Sequence[K]) -> int:
    """Index ``j`` such that ``want[j:]`` is the longest tail of ``want`` found in ``have`` in
    the same relative order (the destinations that can stay where they are)."""
    position = {k: i for i, k in enumerate(have)}
    j = len(want)
    last = len(have)
    while j > 0:
        p = position.get(want[j - 1])
        if p is None or p >= last:
            break
        last = p
        j -= 1
    return j


def reorder_dests(
    service: ServiceKey,
    want: Mapping[DestKey, Dest],
    have: Mapping[DestKey, Dest],
    sched_name: str = "sh",
) -> tuple[list[Op], list[Op]]:
    """(changes, removals) that make ``have`` (kernel list order) equal to ``want`` in canonical
    order: unwanted destinations go (removals), the kept tail is edited where it differs, the rest
    is (re-)added before it, last key first. Empty when the list is already canonical.

    For ``mh`` (:data:`LAST_WEIGHT_SCHEDULERS`) weight-0 destinations are outside the order:
    added anywhere with weight 0, and one that has weight in the kernel is deleted and added
    again with weight 0, so that it holds no slots whatever the history."""
    zero: set[DestKey] = set()
    if sched_name in LAST_WEIGHT_SCHEDULERS:
        zero = {k for k, d in want.items() if d.weight == 0}
    order = sorted((k for k in want if k not in zero), key=canonical_key)
    listed = [k for k in have if k in want and k not in zero]
    j = kept_tail(order, listed)
    changes: list[Op] = []
    for k in reversed(order[:j]):
        if k in have:
            changes.append(DelDest(service, k))
        changes.append(AddDest(service, want[k]))
    for k in order[j:]:
        if have[k] != want[k]:
            changes.append(EditDest(service, want[k]))
    for k in sorted(zero, key=canonical_key):
        current = have.get(k)
        if current is None:
            changes.append(AddDest(service, want[k]))
        elif current.weight:  # its last weight would keep its slots: re-add it at 0
            changes += [DelDest(service, k), AddDest(service, want[k])]
        elif current != want[k]:
            changes.append(EditDest(service, want[k]))
    removals: list[Op] = [DelDest(service, k) for k in have if k not in want]
    return changes, removals
