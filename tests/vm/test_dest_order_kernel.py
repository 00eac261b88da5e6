"""The kernel's destination list order, on the real kernel: new destinations go to the head
(``list_add_rcu`` in ``__ip_vs_update_dest``), and the planner keeps an mh service's list in
the canonical order whatever the history (see director.reconcile.order). ``ipvsadm -Ln`` does
not show that order: it sorts the destinations it lists."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from director.ipvs.model import Dest, DestKey, Forwarding, Protocol, Service, ServiceKey, Table
from director.ipvs.netlink import NetlinkIPVS
from director.ipvs.ops import AddDest, AddService, DelDest, Op
from director.reconcile.order import canonical_key
from director.reconcile.plan import plan
from tests.helpers.ipvsadm import ipvsadm

pytestmark = pytest.mark.vm

KEY = ServiceKey.inet(Protocol.TCP, ipaddress.ip_address("198.18.0.10"), 80)
ADDRESSES = ["198.18.1.10", "198.18.1.9", "198.18.1.200", "198.18.2.1", "198.18.1.100"]


@pytest.fixture
def kernel() -> Iterator[NetlinkIPVS]:
    ipvsadm("-C")
    k = NetlinkIPVS()
    try:
        yield k
    finally:
        k.close()
        ipvsadm("-C")


def dest(address: str) -> Dest:
    return Dest(DestKey.of(ipaddress.ip_address(address), 80), Forwarding.DR, 1)


def listed(kernel: NetlinkIPVS) -> list[str]:
    return [str(k.address) for k in kernel.dump().dests_of(KEY)]


def ipvsadm_order() -> list[str]:
    out = ipvsadm("-Ln", "-t", "198.18.0.10:80")
    return [line.split()[1].rsplit(":", 1)[0] for line in out.splitlines() if "->" in line][1:]


def by_address(addresses: list[str]) -> list[str]:
    return sorted(addresses, key=lambda a: ipaddress.ip_address(a).packed)


def test_the_kernel_lists_newest_first(kernel: NetlinkIPVS) -> None:
    a, b, c = (dest(x) for x in ("198.18.1.1", "198.18.1.2", "198.18.1.3"))
    ops: list[Op] = [
        AddService(Service(KEY, "mh")),
        AddDest(KEY, a),
        AddDest(KEY, b),
        AddDest(KEY, c),
    ]
    assert kernel.execute(ops) == []
    assert listed(kernel) == ["198.18.1.3", "198.18.1.2", "198.18.1.1"]
    # ipvsadm -Ln sorts what it lists: the kernel's order is seen only in the netlink dump
    assert ipvsadm_order() == by_address(listed(kernel))
    # removed and added again (from the kernel's trash): back at the head
    assert kernel.execute([DelDest(KEY, a.key), AddDest(KEY, a)]) == []
    assert listed(kernel) == ["198.18.1.1", "198.18.1.3", "198.18.1.2"]


def test_the_planner_keeps_the_canonical_order_in_the_kernel(kernel: NetlinkIPVS) -> None:
    canonical = [
        str(k.address) for k in sorted((dest(x).key for x in ADDRESSES), key=canonical_key)
    ]

    def desired(addresses: list[str]) -> Table:
        return Table({KEY: Service(KEY, "mh")}, {KEY: {dest(x).key: dest(x) for x in addresses}})

    # history: two servers missing at first (failed, removed), then back, in config order
    assert kernel.execute(plan(desired(ADDRESSES[2:]), kernel.dump(), [KEY])) == []
    assert kernel.execute(plan(desired(ADDRESSES), kernel.dump(), [KEY])) == []
    assert listed(kernel) == canonical
    assert plan(desired(ADDRESSES), kernel.dump(), [KEY]) == []
    # one server leaves and comes back: still canonical
    assert kernel.execute(plan(desired(ADDRESSES[1:]), kernel.dump(), [KEY])) == []
    assert kernel.execute(plan(desired(ADDRESSES), kernel.dump(), [KEY])) == []
    assert listed(kernel) == canonical


def test_a_drained_mh_destination_is_added_again_at_weight_0_and_back_in_order(
    kernel: NetlinkIPVS,
) -> None:
    """The planner's drain of an mh destination on the real kernel: deleted and added again
    at weight 0 (its last weight then 0: no slots, as on a director that added it at 0), the
    others untouched and in order; its weight back: the list canonical again."""

    def desired(weights: dict[str, int]) -> Table:
        dests = {dest(a).key: Dest(dest(a).key, Forwarding.DR, w) for a, w in weights.items()}
        return Table({KEY: Service(KEY, "mh")}, {KEY: dests})

    full = dict.fromkeys(ADDRESSES, 5)
    canonical = [
        str(k.address) for k in sorted((dest(x).key for x in ADDRESSES), key=canonical_key)
    ]
    assert kernel.execute(plan(desired(full), kernel.dump(), [KEY])) == []
    assert listed(kernel) == canonical
    drained = dict(full, **{canonical[2]: 0})
    ops = plan(desired(drained), kernel.dump(), [KEY])
    assert [type(op).__name__ for op in ops] == ["DelDest", "AddDest"]
    assert kernel.execute(ops) == []
    assert listed(kernel) == [canonical[2], *canonical[:2], *canonical[3:]]
    assert kernel.dump().dests_of(KEY)[dest(canonical[2]).key].weight == 0
    assert plan(desired(drained), kernel.dump(), [KEY]) == []  # settled
    assert kernel.execute(plan(desired(full), kernel.dump(), [KEY])) == []
    assert listed(kernel) == canonical
    assert plan(desired(full), kernel.dump(), [KEY]) == []
