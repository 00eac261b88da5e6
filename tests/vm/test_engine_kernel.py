"""The engine (config -> desired -> plan -> kernel) on the real kernel: adopt, repair, reload."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from director.app import Director
from director.config import load_config, parse_config
from director.desired import compile_table
from director.engine import Engine
from director.intents import Reload, ReloadRejected
from director.ipvs.netlink import NetlinkIPVS
from director.reconcile.owned import FileOwnedStore
from tests.helpers.director import running, world_in
from tests.helpers.ipvsadm import ipvsadm, read_table

pytestmark = pytest.mark.vm

CONFIG = """
[daemon]
state_dir = "{state}"
[kernel]
ip_forward = true
conntrack = true
expire_nodest_conn = true
expire_quiescent_template = true
tcp_timeout = 901

[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.20"
port = 80
scheduler = "lc"
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  weight = {weight}
  [[virtual_server.real_server]]
  address = "198.18.1.22"

[[virtual_server]]
name = "mail"
fwmark = 25
scheduler = "wlc"
persistence_timeout = 600
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  [[virtual_server.real_server]]
  address = "198.18.1.22"
"""


@pytest.fixture
def kernel() -> Iterator[NetlinkIPVS]:
    ipvsadm("-C")
    k = NetlinkIPVS()
    try:
        yield k
    finally:
        k.close()
        ipvsadm("-C")


def write(path: Path, state: Path, weight: int = 1) -> Path:
    path.write_text(CONFIG.format(state=state, weight=weight))
    return path


def engine_for(path: Path, kernel: NetlinkIPVS, state: Path) -> Engine:
    return Engine(load_config(path), kernel, FileOwnedStore(state), config_path=path)


def test_start_adopts_without_flushing_and_applies_sysctls(
    kernel: NetlinkIPVS, tmp_path: Path
) -> None:
    path = write(tmp_path / "d.toml", tmp_path)
    # a foreign service, and one of ours already there exactly as configured
    ipvsadm("-A", "-t", "198.18.0.99:443", "-s", "rr")
    ipvsadm("-a", "-t", "198.18.0.99:443", "-r", "198.18.1.99:443", "-m", "-w", "4")
    ipvsadm("-A", "-t", "198.18.0.20:80", "-s", "lc")
    ipvsadm("-a", "-t", "198.18.0.20:80", "-r", "198.18.1.21:80", "-m", "-w", "1")
    foreign_before = ipvsadm("-Ln", "-t", "198.18.0.99:443")
    result = asyncio.run(engine_for(path, kernel, tmp_path).start())
    # only the missing pieces were added: one destination, one fwmark service with two
    assert len(result.ops) == 4
    assert ipvsadm("-Ln", "-t", "198.18.0.99:443") == foreign_before
    table = read_table()
    wanted = compile_table(load_config(path))
    for key, svc in wanted.services.items():
        assert table.services[key] == svc
        assert table.dests[key] == wanted.dests[key]
    for name in ("ip_forward", "vs/conntrack", "vs/expire_nodest_conn"):
        assert Path(f"/proc/sys/net/ipv4/{name}").read_text().strip() == "1"
    assert "901" in ipvsadm("-L", "--timeout")


def test_resync_repairs_a_flushed_table(kernel: NetlinkIPVS, tmp_path: Path) -> None:
    path = write(tmp_path / "d.toml", tmp_path)
    engine = engine_for(path, kernel, tmp_path)

    async def scenario() -> int:
        await engine.start()
        ipvsadm("-C")
        return len((await engine.resync()).ops)

    assert asyncio.run(scenario()) == 6
    assert read_table() == compile_table(load_config(path))


def test_reload_of_one_weight_changes_only_that(kernel: NetlinkIPVS, tmp_path: Path) -> None:
    path = write(tmp_path / "d.toml", tmp_path)
    engine = engine_for(path, kernel, tmp_path)

    async def scenario() -> tuple[str, str, str]:
        await engine.start()
        before = ipvsadm("-Ln")
        write(path, tmp_path, weight=9)
        await engine.apply_config(load_config(path))
        return before, ipvsadm("-Ln"), str(engine.status.last_sync)

    before, after, last = asyncio.run(scenario())
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1
    assert "198.18.1.21:80" in changed[0][1]
    assert changed[0][1].split()[3] == "9"
    assert "'operations': 1" in last
    assert "'full': False" in last


def test_invalid_reload_keeps_the_running_config(kernel: NetlinkIPVS, tmp_path: Path) -> None:
    """Through the application object, as SIGHUP and directorctl reload do it."""
    path = write(tmp_path / "d.toml", tmp_path)
    world = world_in(tmp_path, path, kernel=kernel, metrics=False)

    async def scenario() -> tuple[str, str, Director]:
        async with running(world) as run:
            path.write_text(CONFIG.format(state=tmp_path, weight=70000))
            before = ipvsadm("-Ln")
            with pytest.raises(ReloadRejected, match="weight"):
                await run.director.ask(Reload("control"))
            return before, ipvsadm("-Ln"), run.director

    before, after, director = asyncio.run(scenario())
    assert after == before
    status = director.engine.status
    assert status.reload_error is not None and "weight" in status.reload_error
    assert "reload failed" in status.summary()
    assert parse_config(CONFIG.format(state=tmp_path, weight=1)) == director.engine.config
