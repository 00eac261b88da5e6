"""The reconciler on the in-memory kernel: adopt, drift repair, cheap incremental changes."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from collections.abc import Callable
from pathlib import Path

from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Protocol, Service, ServiceKey, Table
from director.reconcile.owned import FileOwnedStore, MemoryOwnedStore, decode_key, encode_key
from director.reconcile.reconciler import Reconciler
from tests.helpers.tables import web_table


def bump_one_weight(table: Table, weight: int) -> Table:
    changed = copy.deepcopy(table)
    key = next(iter(changed.services))
    dkey = next(iter(changed.dests[key]))
    changed.dests[key][dkey] = dataclasses.replace(changed.dests[key][dkey], weight=weight)
    return changed


def test_cold_apply_then_one_weight_costs_one_request_and_one_readback() -> None:
    kernel = MemoryIPVS()
    rec = Reconciler(kernel, MemoryOwnedStore())
    desired = web_table(100, 10)
    first = rec.sync(desired, full=True)
    assert first.ok
    assert len(first.ops) == 1100
    assert kernel.table.count() == (100, 1000)

    kernel.requests = 0
    dumps = kernel.full_dumps
    second = rec.sync(bump_one_weight(desired, 7))
    assert len(second.ops) == 1
    assert kernel.full_dumps == dumps
    assert kernel.requests == 1 + 2  # the edit, then a read-back of that one service
    assert rec.sync(bump_one_weight(desired, 7)).ops == []


def test_adopts_an_identical_table_without_changing_it() -> None:
    kernel = MemoryIPVS()
    desired = web_table(5, 3)
    kernel.table = copy.deepcopy(desired)
    result = Reconciler(kernel, MemoryOwnedStore()).sync(desired, full=True)
    assert result.ops == []
    assert kernel.table == desired


def test_full_resync_repairs_a_flushed_table() -> None:
    kernel = MemoryIPVS()
    rec = Reconciler(kernel, MemoryOwnedStore())
    desired = web_table(3, 2)
    rec.sync(desired, full=True)
    kernel.table = Table()  # someone ran ipvsadm -C
    assert rec.sync(desired).ops == []  # the cached view cannot see it ...
    repaired = rec.sync(desired, full=True)  # ... the periodic full resync does
    assert len(repaired.ops) == 9
    assert kernel.table == desired


def test_a_refused_operation_forces_the_next_sync_to_be_full() -> None:
    kernel = MemoryIPVS(schedulers=frozenset({"wlc"}))
    rec = Reconciler(kernel, MemoryOwnedStore())
    key = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.1"), 80)
    bad = Table({key: Service(key, "nosuch")}, {key: {}})
    result = rec.sync(bad, full=True)
    assert [f.errno for f in result.failures] == [2]
    assert "adding service TCP 198.18.0.1:80" in str(result.failures[0])
    assert rec.observed is None
    good = Table({key: Service(key, "wlc")}, {key: {}})
    assert rec.sync(good).full


def test_services_dropped_from_config_are_removed_after_a_restart(tmp_path: Path) -> None:
    kernel = MemoryIPVS()
    desired = web_table(3, 1)
    Reconciler(kernel, FileOwnedStore(tmp_path)).sync(desired, full=True)
    smaller = copy.deepcopy(desired)
    gone = next(iter(smaller.services))
    del smaller.services[gone], smaller.dests[gone]
    # a new process: only the file says which services were ours
    result = Reconciler(kernel, FileOwnedStore(tmp_path)).sync(smaller, full=True)
    assert [type(op).__name__ for op in result.ops] == ["DelDest", "DelService"]
    assert gone not in kernel.table.services
    assert FileOwnedStore(tmp_path).load() == frozenset(smaller.services)


def test_owned_keys_round_trip_through_text() -> None:
    for key in [
        ServiceKey.inet(Protocol.SCTP, ipaddress.IPv6Address("2001:db8::5"), 5060),
        ServiceKey.mark(80),
    ]:
        assert decode_key(encode_key(key)) == key


def test_remove_owned_leaves_foreign_services(tmp_path: Path) -> None:
    kernel = MemoryIPVS()
    foreign = ServiceKey.inet(Protocol.UDP, ipaddress.IPv4Address("198.18.9.9"), 53)
    kernel.table.services[foreign] = Service(foreign, "rr")
    kernel.table.dests[foreign] = {}
    rec = Reconciler(kernel, FileOwnedStore(tmp_path))
    rec.sync(web_table(2, 2), full=True)
    rec.remove_owned()
    assert list(kernel.table.services) == [foreign]
    assert kernel.table.dests[foreign] == {}


def test_the_cached_view_shares_the_wanted_entries_but_not_their_dicts() -> None:
    kernel = MemoryIPVS()
    rec = Reconciler(kernel, MemoryOwnedStore())
    desired = web_table(40, 5)
    assert rec.sync(desired, full=True).ok
    assert rec.observed is not None
    key = next(iter(desired.services))
    dkey = next(iter(desired.dests[key]))
    assert rec.observed.services[key] is desired.services[key]
    assert rec.observed.dests[key][dkey] is desired.dests[key][dkey]
    assert rec.observed.dests[key] is not desired.dests[key]
    # The caller changing its own table afterwards changes nothing in the cached view.
    desired.dests[key][dkey] = dataclasses.replace(desired.dests[key][dkey], weight=9)
    result = rec.sync(desired)
    assert [type(op).__name__ for op in result.ops] == ["EditDest"]
    assert kernel.table.dests[key][dkey].weight == 9
    assert rec.sync(desired).ops == []


def test_a_mh_list_out_of_order_is_not_hidden_by_the_cached_view() -> None:
    """The cached view shares the wanted entries where the read-back equals them; for mh the
    kernel list's order is part of the state (it builds the Maglev table from it), and dict
    equality ignores order. A list put out of order by hand and read back after an unrelated
    weight change must stay out of order in the view, so the next plan restores it."""
    kernel = MemoryIPVS()
    rec = Reconciler(kernel, MemoryOwnedStore())
    desired = web_table(1, 4)
    key = next(iter(desired.services))
    desired.services[key] = dataclasses.replace(desired.services[key], sched_name="mh")
    assert rec.sync(desired, full=True).ok
    good = list(kernel.dump().dests[key])
    # someone reorders the kernel's list (ipvsadm -d / -a of the first one)
    dests = kernel.table.dests[key]
    first = next(iter(dests))
    kernel.table.dests[key] = {
        **{k: v for k, v in dests.items() if k != first},
        first: dests[first],
    }
    assert list(kernel.dump().dests[key]) != good
    # an unrelated weight change is applied and its service read back, out of order
    last = good[-1]
    desired.dests[key][last] = dataclasses.replace(desired.dests[key][last], weight=5)
    assert [type(op).__name__ for op in rec.sync(desired).ops] == ["EditDest"]
    # the next plan sees the order and restores it
    assert rec.sync(desired).ops != []
    assert list(kernel.dump().dests[key]) == good
    assert rec.sync(desired).ops == []


class CopyingIPVS(MemoryIPVS):
    """Dumps new entry objects, as the netlink kernel's parser does."""

    def dump(self, pause: Callable[[], None] = lambda: None) -> Table:
        table = super().dump(pause)
        for key, dests in table.dests.items():
            table.dests[key] = {k: dataclasses.replace(d) for k, d in dests.items()}
        table.services.update({k: dataclasses.replace(s) for k, s in table.services.items()})
        return table


def test_a_full_resync_keeps_no_second_copy_of_an_equal_table() -> None:
    kernel = CopyingIPVS()
    rec = Reconciler(kernel, MemoryOwnedStore())
    desired = web_table(40, 5)
    assert rec.sync(desired, full=True).ok
    assert rec.sync(desired, full=True).ops == []  # the periodic resync: nothing to do
    assert rec.observed is not None
    for key, dests in desired.dests.items():
        assert rec.observed.services[key] is desired.services[key]
        assert all(rec.observed.dests[key][k] is d for k, d in dests.items())
