"""The periodic resync paced beside the event loop: a pause before each service compiled, read
from the kernel and planned, and the same result as unpaced."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

import director.engine
from director.config import parse_config
from director.desired import compile_table
from director.engine import Engine
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Table
from director.reconcile.owned import MemoryOwnedStore
from director.reconcile.reconciler import Reconciler
from tests.helpers.tables import web_table
from tests.unit.test_genl_batch import kernel_over


class Count:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def config_of(services: int) -> str:
    return "".join(
        f'[[virtual_server]]\nprotocol = "tcp"\naddress = "198.18.0.{1 + i}"\nport = 80\n'
        '  [[virtual_server.real_server]]\n  address = "198.18.1.1"\n'
        '  [[virtual_server.real_server]]\n  address = "198.18.1.2"\n'
        for i in range(services)
    )


def test_a_compile_pauses_before_each_service_and_is_the_same_table() -> None:
    config = parse_config(config_of(7))
    pause = Count()
    assert compile_table(config, pause=pause) == compile_table(config)
    assert pause.calls == 7


def test_a_full_sync_over_netlink_pauses_for_each_service_read_and_planned() -> None:
    desired = web_table(40, 3)
    memory = MemoryIPVS()
    kernel, _ = kernel_over(memory)
    Reconciler(kernel, MemoryOwnedStore()).sync(desired)  # programmed, unpaced
    drifted = dataclasses.replace(next(iter(desired.services.values())), sched_name="rr")
    memory.table.services[drifted.key] = drifted  # someone's ipvsadm -E
    pause = Count()
    paced = Reconciler(kernel, MemoryOwnedStore()).sync(desired, full=True, pause=pause)
    assert pause.calls == 40 + 40  # the dump's services, then the plan's
    assert len(paced.ops) == 1  # the drift repaired, paced as unpaced
    assert memory.table.services == desired.services
    unpaced = Reconciler(kernel, MemoryOwnedStore()).sync(desired, full=True)
    assert unpaced.ops == [] and paced.counts == unpaced.counts


def test_only_the_periodic_resync_is_paced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Count] = []

    def pacer() -> Count:
        made.append(Count())
        return made[-1]

    monkeypatch.setattr(director.engine, "Pacer", pacer)
    path = tmp_path / "director.toml"
    path.write_text(config_of(5))
    kernel = MemoryIPVS()
    engine = Engine(parse_config(config_of(5)), kernel, MemoryOwnedStore(), config_path=path)

    async def scenario() -> tuple[int, int]:
        await engine.start()
        after_start = len(made)
        kernel.table = Table()  # the whole table gone behind the daemon's back
        await engine.resync()
        return after_start, len(made)

    after_start, after_resync = asyncio.run(scenario())
    assert after_start == 0
    assert after_resync == 1
    assert made[0].calls == 5 + 5  # compiled and planned (the in-memory kernel's dump is a copy)
    assert kernel.table == compile_table(parse_config(config_of(5)))
