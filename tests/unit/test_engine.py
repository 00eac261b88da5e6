"""The engine with the in-memory kernel: start, a new config, stop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from director.config import load_config
from director.desired import compile_table
from director.engine import Engine
from director.ipvs.memory import MemoryIPVS
from director.reconcile.owned import MemoryOwnedStore

CONFIG = """
[daemon]
keep_table_on_stop = {keep}
[kernel]
ip_forward = true
tcp_timeout = 901

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
scheduler = "lc"
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  weight = {weight}
  [[virtual_server.real_server]]
  address = "198.18.1.22"
"""


def setup(tmp_path: Path, weight: int = 1, keep: str = "true") -> tuple[Engine, MemoryIPVS, Path]:
    path = tmp_path / "director.toml"
    path.write_text(CONFIG.format(weight=weight, keep=keep))
    sysroot = tmp_path / "sys"
    (sysroot / "net/ipv4").mkdir(parents=True, exist_ok=True)
    (sysroot / "net/ipv4/ip_forward").write_text("0\n")
    kernel = MemoryIPVS()
    engine = Engine(
        load_config(path),
        kernel,
        MemoryOwnedStore(),
        config_path=path,
        sysctl_root=sysroot,
        status_path=tmp_path / "status.json",
    )
    return engine, kernel, path


def test_start_programs_table_sysctls_and_timeouts(tmp_path: Path) -> None:
    engine, kernel, path = setup(tmp_path)

    async def scenario() -> None:
        await engine.start()
        await engine.flush_status()

    asyncio.run(scenario())
    assert kernel.table == compile_table(load_config(path))
    assert (tmp_path / "sys/net/ipv4/ip_forward").read_text() == "1\n"
    assert kernel.timeouts.tcp == 901
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["last_sync"]["services"] == 1
    assert status["last_sync"]["destinations"] == 2


def test_new_config_changes_only_what_differs(tmp_path: Path) -> None:
    engine, kernel, path = setup(tmp_path)

    async def scenario() -> int:
        await engine.start()
        path.write_text(CONFIG.format(weight=5, keep="true"))
        return len((await engine.apply_config(load_config(path))).ops)

    assert asyncio.run(scenario()) == 1
    assert sorted(d.weight for d in next(iter(kernel.table.dests.values())).values()) == [1, 5]


def test_stop_keeps_or_removes_the_table(tmp_path: Path) -> None:
    for keep, services in (("true", 1), ("false", 0)):
        engine, kernel, _ = setup(tmp_path, keep=keep)

        async def scenario(e: Engine = engine) -> None:
            await e.start()
            await e.stop()

        asyncio.run(scenario())
        assert len(kernel.table.services) == services
