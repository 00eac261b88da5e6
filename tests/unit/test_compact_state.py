"""Compact forms of what the daemon keeps for a large table (issue 18, 10,000 x 10 under
300 MB): equal values shared between services, and only what is not the default kept. Each
test holds the compact form to what the plain form gave (differential), and to the sharing
itself (without it the test fails)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import BaseModel

from checks.model import HealthChanged
from director.config import model, parse_config
from director.config.model import Config, VirtualServer
from director.desired import compile_dests, compile_table
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Dest, DestKey, ServiceKey, Table
from director.metrics import ChangedAt
from director.reconcile.order import ORDERED_SCHEDULERS, canonical
from director.reconcile.owned import FileOwnedStore, MemoryOwnedStore
from director.reconcile.reconciler import Reconciler
from tests.unit.test_desired_incremental import engine_for, keys, render, same


def plain_compile(config: Config, health: dict[tuple[ServiceKey, DestKey], bool]) -> Table:
    """The table as compiled before entries were shared: each service's own new entries."""
    table = Table()
    for vs in config.virtual_servers:
        key = vs.service_key()
        dests = compile_dests(vs, key, health)
        table.services[key] = compile_table(Config(virtual_servers=(vs,))).services[key]
        table.dests[key] = canonical(dests) if vs.scheduler in ORDERED_SCHEDULERS else dests
    return table


def test_equal_destination_entries_are_one_object_and_the_table_is_the_same() -> None:
    config = parse_config(render(services=24, dests=4))
    every = keys(config)
    rng = random.Random(11)
    health: dict[tuple[ServiceKey, DestKey], bool] = {}
    table = compile_table(config, health)
    for _ in range(40):
        for pair in rng.sample(every, rng.randint(1, 5)):
            health[pair] = rng.random() < 0.5
        services = sorted({s for s, _ in every})
        new = compile_table(config, health, previous=table, changed=set(rng.sample(services, 3)))
        whole = compile_table(config, health)
        assert same(whole, plain_compile(config, health))
        assert same(compile_table(config, health, previous=table), whole)
        # one object per distinct entry in a whole compile
        entries = [d for dests in whole.dests.values() for d in dests.values()]
        distinct: dict[Dest, Dest] = {}
        for d in entries:
            assert distinct.setdefault(d, d) is d
        table = compile_table(config, health, previous=new)
    assert len({id(d) for d in entries}) < len(entries)


def test_a_service_compiled_again_keeps_its_other_entries_shared() -> None:
    """A health change in one service compiles it again; its unchanged destinations stay the
    objects the other services share (the sharing does not wear away with time)."""
    config = parse_config(render(services=24, dests=4))
    table = compile_table(config)
    key = next(iter(table.services))
    first, second = list(table.dests[key])[:2]
    health = {(key, first): False}
    new = compile_table(config, health, previous=table, changed={key})
    assert new.dests[key] != table.dests[key]
    assert new.dests[key][second] is table.dests[key][second]


def test_the_frozen_view_shares_the_wanted_dicts_and_plans_alike() -> None:
    """Reconciler(frozen=True) (the engine's) keeps the wanted dicts in its view rather than
    copies; a random walk of tables plans the same operations as the copying reconciler."""
    config = parse_config(render(services=24, dests=4))
    every = keys(config)
    rng = random.Random(5)
    shared_k, copied_k = MemoryIPVS(), MemoryIPVS()
    shared = Reconciler(shared_k, MemoryOwnedStore(), frozen=True)
    copied = Reconciler(copied_k, MemoryOwnedStore())
    health: dict[tuple[ServiceKey, DestKey], bool] = {}
    table = compile_table(config, health)
    for step in range(40):
        a, b = shared.sync(table, full=step % 7 == 0), copied.sync(table, full=step % 7 == 0)
        assert a.ops == b.ops and a.ok and b.ok
        assert shared_k.table == copied_k.table
        assert shared.observed is not None and copied.observed is not None
        assert same(shared.observed, copied.observed)
        for pair in rng.sample(every, rng.randint(1, 5)):
            health[pair] = rng.random() < 0.5
        table = compile_table(config, health, previous=table)
    assert shared.sync(table).ok
    assert shared.sync(table).ops == []  # planning again right after applying: nothing
    view = shared.observed
    assert view is not None
    for key, dests in table.dests.items():
        # mh/sh: the view keeps the order read back where it differs (a weight-0 entry)
        if list(view.dests[key]) == list(dests) or table.services[key].sched_name == "wlc":
            assert view.dests[key] is dests


SERVICES = """
[[virtual_server]]
name = "web{i}"
protocol = "tcp"
address = "198.18.0.{i}"
port = 443
scheduler = "wlc"
  [virtual_server.check]
  type = "http"
  path = "/health"
  interval = {interval}
  [[virtual_server.real_server]]
  address = "198.19.0.1"
  [[virtual_server.real_server]]
  address = "198.19.0.2"
  weight = {weight}
"""


def services_text() -> str:
    return "".join(
        SERVICES.format(i=i, interval=("2", "2.0", "3")[i % 3], weight=(1, 2)[i % 2])
        for i in range(9)
    )


def dumped(vs: VirtualServer) -> object:
    """Everything a service says, with the types of its values and the fields given."""

    def walk(value: object) -> object:
        if isinstance(value, BaseModel):
            return (
                type(value).__name__,
                sorted(value.model_fields_set),
                [(k, walk(v)) for k, v in value.__dict__.items()],
            )
        if isinstance(value, tuple):
            return [walk(v) for v in value]
        return (type(value).__name__, value)

    return walk(vs)


def test_equal_config_values_are_shared_and_every_service_says_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = services_text()
    config = parse_config(text)
    with monkeypatch.context() as m:
        m.setattr(model, "_share_real_servers", lambda virtual_servers: None)
        plain = parse_config(text)
    assert [dumped(vs) for vs in config.virtual_servers] == [
        dumped(vs) for vs in plain.virtual_servers
    ]
    assert config == plain
    vss = config.virtual_servers
    # the same check table is one object (interval 2 and 2.0: both read as 2.0), 3 another
    assert vss[0].check is vss[3].check and vss[0].check is vss[1].check
    assert vss[0].check is not vss[2].check
    assert vss[0].real_servers is vss[2].real_servers  # weight 1 both: one tuple
    assert vss[0].real_servers is not vss[1].real_servers
    assert vss[0].protocol is vss[1].protocol and vss[0].scheduler is vss[5].scheduler
    assert vss[0].model_fields_set is vss[1].model_fields_set
    # what the daemon derives from the config is the same
    for vs, pv in zip(vss, plain.virtual_servers, strict=True):
        for rs, prs in zip(vs.real_servers, pv.real_servers, strict=True):
            assert rs.health_check(vs) == prs.health_check(pv)
            assert rs.dest_key(vs) == prs.dest_key(pv)
    # a merge (model_copy with update) copies the shared fields-set first
    before = set(vss[0].model_fields_set)
    assert vss[0].check is not None
    vss[0].check.merged(vss[1].check)
    assert vss[0].model_fields_set == before
    assert vss[0].check.model_fields_set == plain.virtual_servers[0].check.model_fields_set  # type: ignore[union-attr]


def test_the_engine_keeps_only_the_down_verdicts(tmp_path: Path) -> None:
    engine, _ = engine_for(tmp_path, render(services=6, dests=3))
    every = keys(engine.config)
    rng = random.Random(2)
    verdicts: dict[tuple[ServiceKey, DestKey], bool] = {}
    for _ in range(50):
        changes = []
        for pair in rng.sample(every, 4):
            up = rng.random() < 0.6
            verdicts[pair] = up
            changes.append(HealthChanged(check_id=pair, up=up, reason="test", at=0.0))
        engine.record_health(changes)
        assert engine.health == {p: False for p, up in verdicts.items() if not up}
        assert same(
            compile_table(engine.config, engine.health), compile_table(engine.config, verdicts)
        )


def test_the_owned_store_keeps_the_callers_keys_after_a_restart(tmp_path: Path) -> None:
    table = compile_table(parse_config(render(services=6, dests=2)))
    wanted = frozenset(table.services)
    FileOwnedStore(tmp_path).save(wanted)
    store = FileOwnedStore(tmp_path)
    loaded = store.load()
    assert loaded == wanted and not any(k in {id(w) for w in wanted} for k in map(id, loaded))
    store.save(wanted)  # equal: nothing written, but the parsed copies are let go
    assert store.load() is wanted


def test_the_health_change_times_by_service_behave_as_the_flat_dict() -> None:
    """metrics.ChangedAt (kept by service, then destination) against the dict it replaces."""
    rng = random.Random(9)
    compact, flat = ChangedAt(), dict[tuple[str, str], float]()
    names = [(f"TCP 198.18.0.{i}:80", f"198.19.0.{j}:80") for i in range(6) for j in range(4)]
    for step in range(2000):
        key = rng.choice(names)
        op = rng.random()
        if op < 0.5:
            compact[key] = flat[key] = float(step)
        elif op < 0.7 and key in flat:
            del compact[key], flat[key]
        assert compact.get(key) == flat.get(key) and compact.get(key, 0.0) == flat.get(key, 0.0)
        assert (key in compact) == (key in flat) and len(compact) == len(flat)
        if step % 97 == 0:
            copied = compact.copy()
            assert copied == flat and dict(copied.items()) == flat
            assert sorted(copied) == sorted(flat)
            copied[names[0]] = -1.0  # a copy is its own
            assert compact.get(names[0]) == flat.get(names[0])
    assert ChangedAt(flat) == flat
