"""Identical Maglev (``mh``) tables on every director whatever its history, weight 0 included.

The kernel builds an mh table from the destinations' last non-zero weights in list order
(``MemoryIPVS.maglev_input`` follows ``ip_vs_mh.c`` / ``__ip_vs_update_dest``): a destination
*added* with weight 0 holds no slots, one *set* to 0 keeps its old ones. Directors that drained a
server and directors that started during the drain must still agree; so must one that added a
server at weight 0 and raised it and one that added it at full weight. Pure, on the in-memory
kernel; the config goes through the real compiler and planner."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from director.config import parse_config
from director.desired import compile_table
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import DestKey, Protocol, ServiceKey, Table
from director.ipvs.ops import AddDest, DelDest
from director.reconcile.owned import MemoryOwnedStore
from director.reconcile.plan import plan
from director.reconcile.reconciler import Reconciler

KEY = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 80)
SERVERS = ["198.18.1.10", "198.18.1.9", "198.18.1.200", "198.18.2.1", "198.18.1.100"]


def dkey(address: str) -> DestKey:
    return DestKey.of(ipaddress.ip_address(address), 80)


def desired(
    weights: dict[str, int],
    scheduler: str = "mh",
    drained: frozenset[str] = frozenset(),
    failed: frozenset[str] = frozenset(),
) -> Table:
    """The table of a config with these servers (in this order) and weights; ``drained``
    servers under ``directorctl drain``, ``failed`` ones failing their check (quiesced)."""
    text = f"""
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 80
scheduler = "{scheduler}"
forwarding = "dr"
on_failure = "quiesce"
"""
    for address, weight in weights.items():
        text += f'[[virtual_server.real_server]]\naddress = "{address}"\nweight = {weight}\n'
    config = parse_config(text)
    health = {(KEY, dkey(a)): False for a in failed}
    overrides = {(KEY, dkey(a)): "drain" for a in drained}
    return compile_table(config, health, overrides)


class Director:
    """One director: its own kernel and reconciler, fed desired tables one after another."""

    def __init__(self) -> None:
        self.kernel = MemoryIPVS()
        self.rec = Reconciler(self.kernel, MemoryOwnedStore())

    def apply(self, table: Table, full: bool = False) -> Director:
        result = self.rec.sync(table, full=full)
        assert result.ok, result.failures
        assert plan(table, self.kernel.dump(), [KEY]) == []  # settled
        return self

    @property
    def maglev(self) -> tuple[tuple[DestKey, int], ...]:
        return self.kernel.maglev_input(KEY)


FULL = dict.fromkeys(SERVERS, 5)


def test_a_drained_server_holds_no_slots_on_the_director_that_drained_it() -> None:
    """Director A drains .9 (weight 5 -> 0); B starts during the drain and adds it at 0."""
    a = Director().apply(desired(FULL))
    drained = desired(FULL, drained=frozenset({"198.18.1.9"}))
    ops = plan(drained, a.kernel.dump(), [KEY])
    # deleted and added again at weight 0: the kernel restores it from its trash with its
    # connections, and its last weight is then 0
    assert ops == [
        DelDest(KEY, dkey("198.18.1.9")),
        AddDest(KEY, drained.dests[KEY][dkey("198.18.1.9")]),
    ]
    a.apply(drained)
    b = Director().apply(drained)
    assert a.maglev == b.maglev
    assert dkey("198.18.1.9") not in dict(a.maglev)
    # the drain ends on both: the same table as a director that never saw it
    a.apply(desired(FULL))
    b.apply(desired(FULL))
    assert a.maglev == b.maglev == Director().apply(desired(FULL)).maglev
    assert [k for k, _ in a.maglev] == sorted(dkey(s) for s in SERVERS)


def test_added_at_weight_0_then_raised_is_the_same_as_added_at_full_weight() -> None:
    late = dict(FULL, **{"198.18.1.200": 0})
    a = Director().apply(desired(late)).apply(desired(FULL))
    b = Director().apply(desired(FULL))
    assert a.maglev == b.maglev


def test_a_quiesced_server_and_one_that_failed_before_the_start_agree() -> None:
    """on_failure = "quiesce": A saw .100 fail (weight 5 -> 0), B started while it was down."""
    down = frozenset({"198.18.1.100"})
    a = Director().apply(desired(FULL)).apply(desired(FULL, failed=down))
    b = Director().apply(desired(FULL, failed=down))
    assert a.maglev == b.maglev
    assert a.kernel.dump().dests[KEY][dkey("198.18.1.100")].weight == 0  # still quiesced


def test_sh_keeps_every_destination_in_order_weight_0_included() -> None:
    """sh deals buckets by the current weight and gives a weight-0 destination one: its list
    (every destination, in order) and weights are what must agree, and a drain is an edit."""
    a = Director().apply(desired(FULL, "sh"))
    drained = desired(FULL, "sh", drained=frozenset({"198.18.1.9"}))
    assert len(plan(drained, a.kernel.dump(), [KEY])) == 1
    a.apply(drained)
    b = Director().apply(drained)
    assert list(a.kernel.dump().dests[KEY].values()) == list(b.kernel.dump().dests[KEY].values())


step = st.fixed_dictionaries(
    {
        "servers": st.lists(st.sampled_from(SERVERS), unique=True, min_size=1),
        "weights": st.lists(st.sampled_from([0, 1, 3, 5]), min_size=5, max_size=5),
        "drained": st.frozensets(st.sampled_from(SERVERS), max_size=2),
        "failed": st.frozensets(st.sampled_from(SERVERS), max_size=2),
        "full": st.booleans(),
    }
)


def table_of(s: dict[str, object], scheduler: str) -> Table:
    servers, weights = s["servers"], s["weights"]
    assert isinstance(servers, list) and isinstance(weights, list)
    drained, failed = s["drained"], s["failed"]
    assert isinstance(drained, frozenset) and isinstance(failed, frozenset)
    return desired(
        dict(zip(servers, weights, strict=False)), scheduler, drained & set(servers), failed
    )


@settings(max_examples=150, deadline=None)
@given(history=st.lists(step, min_size=1, max_size=6), scheduler=st.sampled_from(["mh", "sh"]))
def test_any_history_builds_the_table_of_a_fresh_start(
    history: list[dict[str, object]], scheduler: str
) -> None:
    """Servers added, removed, reordered in the config, reweighted, drained, failed and back,
    in any order and through full or incremental syncs: the table is the one a director that
    started with the last config builds."""
    a = Director()
    for s in history:
        a.apply(table_of(s, scheduler), full=bool(s["full"]))
    b = Director().apply(table_of(history[-1], scheduler))
    if scheduler == "mh":
        assert a.maglev == b.maglev
    else:
        assert list(a.kernel.dump().dests[KEY].values()) == list(
            b.kernel.dump().dests[KEY].values()
        )
