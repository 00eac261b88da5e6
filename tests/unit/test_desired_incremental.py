"""The desired table compiled again only for the services that changed (director.desired,
director.engine): always equal to a whole compile, and a health change costs its service."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from checks.model import HealthChanged
from director.config import load_config, parse_config
from director.config.model import Config
from director.desired import compile_table
from director.engine import Engine
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import DestKey, ServiceKey, Table
from director.reconcile.owned import MemoryOwnedStore

SCHEDULERS = ("wlc", "mh", "rr", "sh")


def render(services: int = 24, dests: int = 4) -> str:
    out = []
    for i in range(services):
        failure = ("remove", "quiesce")[i % 2]
        out.append(
            f"""
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.{i // 10 + 1}"
port = {1000 + i}
scheduler = "{SCHEDULERS[i % len(SCHEDULERS)]}"
on_failure = "{failure}"
"""
        )
        for j in range(dests):
            out.append(
                f'  [[virtual_server.real_server]]\n  address = "198.19.0.{(j * 7 + i) % 50 + 1}"'
                f"\n  port = 80\n  weight = {1 + j}\n"
            )
        if i % 3 == 0:
            out.append('  [virtual_server.sorry_server]\n  address = "198.19.1.1"\n  port = 80\n')
    return "".join(out)


def keys(config: Config) -> list[tuple[ServiceKey, DestKey]]:
    return [
        (vs.service_key(), rs.dest_key(vs))
        for vs in config.virtual_servers
        for rs in vs.real_servers
    ]


def same(a: Table, b: Table) -> bool:
    """Equal, and in the same order per service (mh/sh: the kernel list's order matters)."""
    return a == b and all(list(a.dests[k]) == list(b.dests[k]) for k in a.dests)


def test_an_incremental_compile_equals_a_whole_one_and_keeps_what_did_not_change() -> None:
    config = parse_config(render())
    every = keys(config)
    rng = random.Random(7)
    health: dict[tuple[ServiceKey, DestKey], bool] = {}
    table = compile_table(config, health)
    for _ in range(60):
        before = dict(health)
        for pair in rng.sample(every, rng.randint(1, 6)):
            health[pair] = rng.random() < 0.5
        changed = {s for (s, d), up in health.items() if before.get((s, d), True) != up}
        new = compile_table(config, health, previous=table, changed=changed)
        assert same(new, compile_table(config, health))
        for service in table.services:
            if service not in changed:
                assert new.dests[service] is table.dests[service]
                assert new.services[service] is table.services[service]
        table = new


def test_a_whole_compile_reuses_the_previous_entries_that_are_equal() -> None:
    """A resync or a new config compiles every service again; what is equal to the previous
    table is the previous objects (keys too), so what lives on stays one copy."""
    config = parse_config(render())
    health: dict[tuple[ServiceKey, DestKey], bool] = {}
    table = compile_table(config, health)
    again = compile_table(parse_config(render()), health, previous=table)
    assert same(again, table)
    for key in table.services:
        assert again.dests[key] is table.dests[key] and again.services[key] is table.services[key]
    assert all(a is b for a, b in zip(again.services, table.services, strict=True))
    changed = parse_config(render().replace("weight = 4\n", "weight = 40\n", 1))
    moved = compile_table(changed, health, previous=table)
    assert same(moved, compile_table(changed, health))
    differ = [key for key in table.dests if moved.dests[key] is not table.dests[key]]
    assert len(differ) == 1 and moved.dests[differ[0]] != table.dests[differ[0]]


def test_a_service_not_in_the_previous_table_is_compiled() -> None:
    config = parse_config(render(4))
    whole = compile_table(config)
    gone = next(iter(whole.services))
    partial = Table(
        {k: v for k, v in whole.services.items() if k != gone},
        {k: v for k, v in whole.dests.items() if k != gone},
    )
    assert same(compile_table(config, previous=partial), whole)


CONFIG_HEAD = """
[kernel]
ip_forward = true
"""


def engine_for(tmp_path: Path, text: str) -> tuple[Engine, MemoryIPVS]:
    path = tmp_path / "director.toml"
    path.write_text(CONFIG_HEAD + text)
    sysroot = tmp_path / "sys"
    (sysroot / "net/ipv4").mkdir(parents=True, exist_ok=True)
    (sysroot / "net/ipv4/ip_forward").write_text("0\n")
    kernel = MemoryIPVS()
    engine = Engine(
        load_config(path), kernel, MemoryOwnedStore(), config_path=path, sysctl_root=sysroot
    )
    return engine, kernel


def test_the_engine_compiles_again_only_the_services_whose_health_changed(tmp_path: Path) -> None:
    """Health changes, a drain and its end, a resync and a new config: the kernel's table is
    always the whole compile's, and after a health change the other services' entries are
    the ones compiled before (the same objects)."""
    engine, kernel = engine_for(tmp_path, render())
    every = keys(engine.config)
    rng = random.Random(3)

    async def scenario() -> None:
        await engine.start()
        for step in range(40):
            assert engine._desired is not None
            before = engine._desired[1]
            picked = rng.sample(every, rng.randint(1, 4))
            engine.record_health(
                [HealthChanged(k, rng.random() < 0.5, float(step), "test") for k in picked]
            )
            await engine.sync_health()
            whole = compile_table(
                engine.config, engine.health, engine.maintenance.overrides(engine.config)
            )
            assert kernel.table == whole
            after = engine._desired[1]
            touched = {s for s, _ in picked} | {
                s for s, _ in engine.maintenance.overrides(engine.config)
            }
            assert same(after, whole)
            for key in after.dests:
                if key not in touched:
                    assert after.dests[key] is before.dests[key]
            if step == 10:
                await engine.drain("198.19.0.3", None, None)
            if step == 20:
                await engine.enable("198.19.0.3", None)
            if step == 30:
                await engine.resync()
        # a new config: compiled whole from it
        new = load_config_text(tmp_path, render().replace("weight = 1\n", "weight = 9\n"))
        await engine.apply_config(new)
        assert kernel.table == compile_table(new, engine.health, engine.maintenance.overrides(new))

    asyncio.run(scenario())


def load_config_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "next.toml"
    path.write_text(CONFIG_HEAD + text)
    return load_config(path)
