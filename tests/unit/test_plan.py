"""The planner against the in-memory kernel: convergence, ordering, ownership."""

from __future__ import annotations

import copy
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Dest, DestKey, Protocol, Service, ServiceKey, Table
from director.ipvs.ops import AddDest, AddService, DelDest, DelService, EditDest, EditService
from director.reconcile.plan import plan
from tests.helpers.tables import service_keys, tables

VIP = ipaddress.IPv4Address("198.18.0.10")
KEY = ServiceKey.inet(Protocol.TCP, VIP, 80)


def kernel_with(table: Table) -> MemoryIPVS:
    kernel = MemoryIPVS()
    kernel.table = copy.deepcopy(table)
    return kernel


def dest(last: int, weight: int = 1) -> Dest:
    return Dest(key=DestKey(ipaddress.IPv4Address(f"198.18.1.{last}"), 80), weight=weight)


def one_service(*ds: Dest, sched: str = "wlc") -> Table:
    return Table({KEY: Service(KEY, sched)}, {KEY: {d.key: d for d in ds}})


@settings(max_examples=300, deadline=None)
@given(
    observed=tables(),
    desired=tables(),
    previously_owned=st.lists(service_keys, max_size=4),
)
def test_plan_converges_and_leaves_foreign_services_alone(
    observed: Table, desired: Table, previously_owned: list[ServiceKey]
) -> None:
    kernel = kernel_with(observed)
    ops = plan(desired, kernel.dump(), previously_owned)
    assert kernel.execute(ops) == []
    after = kernel.dump()
    owned = set(desired.services) | set(previously_owned)
    for key, svc in desired.services.items():
        assert after.services[key] == svc
        assert after.dests[key] == desired.dests[key]
    for key in previously_owned:
        if key not in desired.services:
            assert key not in after.services
    for key, svc in observed.services.items():
        if key not in owned:
            assert after.services[key] == svc
            assert after.dests[key] == observed.dests[key]
    assert plan(desired, after, owned) == []


def test_add_orders_service_before_its_destinations() -> None:
    ops = plan(one_service(dest(1), dest(2)), Table())
    assert ops == [AddService(Service(KEY, "wlc")), AddDest(KEY, dest(1)), AddDest(KEY, dest(2))]


def test_removal_drops_destinations_before_the_service() -> None:
    ops = plan(Table(), one_service(dest(1), dest(2)), [KEY])
    assert ops == [DelDest(KEY, dest(1).key), DelDest(KEY, dest(2).key), DelService(KEY)]


def test_one_weight_change_is_one_edit() -> None:
    ops = plan(one_service(dest(1, 5), dest(2)), one_service(dest(1, 1), dest(2)))
    assert ops == [EditDest(KEY, dest(1, 5))]


def test_new_destinations_come_before_removed_ones() -> None:
    ops = plan(one_service(dest(2)), one_service(dest(1)))
    assert ops == [AddDest(KEY, dest(2)), DelDest(KEY, dest(1).key)]


def test_scheduler_change_edits_the_service_in_place() -> None:
    ops = plan(one_service(dest(1), sched="rr"), one_service(dest(1)))
    assert ops == [EditService(Service(KEY, "rr"))]


def test_unowned_service_in_kernel_is_never_touched() -> None:
    foreign = ServiceKey.inet(Protocol.UDP, VIP, 53)
    observed = one_service(dest(1))
    observed.services[foreign] = Service(foreign, "rr")
    observed.dests[foreign] = {dest(9).key: dest(9)}
    ops = plan(one_service(dest(1)), observed, [KEY])
    assert ops == []
