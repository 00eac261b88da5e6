"""Drain / enable: the pure core, the compiled table, persistence, and the engine with them."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import pytest

from director.config import load_config
from director.config.model import Config
from director.desired import compile_table
from director.engine import Engine
from director.ipvs.kernel import DestConns
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import DestKey, Protocol, ServiceKey, Table
from director.ipvs.stats import StatsSnapshot
from director.maintenance import Drain, Maintenance, MaintenanceError
from director.reconcile.owned import MemoryOwnedStore
from director.reconcile.plan import plan

CONFIG = """
[daemon]
state_dir = "{state}"
[kernel]
ip_forward = true

[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.20"
port = 80
scheduler = "rr"
  [[virtual_server.real_server]]
  name = "web1"
  address = "198.18.1.21"
  [[virtual_server.real_server]]
  name = "web2"
  address = "198.18.1.22"
  weight = 3

[[virtual_server]]
name = "dns"
protocol = "udp"
address = "198.18.0.20"
port = 53
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  [[virtual_server.real_server]]
  address = "198.18.1.22"
"""
WEB = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.20"), 80)
DNS = ServiceKey.inet(Protocol.UDP, ipaddress.IPv4Address("198.18.0.20"), 53)
R1 = DestKey.of(ipaddress.IPv4Address("198.18.1.21"), 80)
R1DNS = DestKey.of(ipaddress.IPv4Address("198.18.1.21"), 53)
R2 = DestKey.of(ipaddress.IPv4Address("198.18.1.22"), 80)


def config(tmp_path: Path, text: str = CONFIG) -> tuple[Config, Path]:
    path = tmp_path / "director.toml"
    path.write_text(text.format(state=tmp_path / "state"))
    return load_config(path), path


def test_drain_by_name_address_or_hostport(tmp_path: Path) -> None:
    cfg, _ = config(tmp_path)
    for selector, expected in (
        ("web1", {(WEB, R1)}),
        ("198.18.1.21", {(WEB, R1), (DNS, R1DNS)}),
        ("198.18.1.21:53", {(DNS, R1DNS)}),
    ):
        m = Maintenance()
        m.drain(cfg, selector, None, None, now=100.0)
        assert set(m.overrides(cfg)) == expected, selector
        assert set(m.overrides(cfg).values()) == {"drain"}
    m = Maintenance()
    m.drain(cfg, "198.18.1.21", "dns", None, now=100.0)
    assert set(m.overrides(cfg)) == {(DNS, R1DNS)}


def test_refused_drains_change_nothing(tmp_path: Path) -> None:
    cfg, _ = config(tmp_path)
    m = Maintenance(tmp_path / "m.json")
    with pytest.raises(MaintenanceError, match=r"no real server matches 'web9'.*web1, web2"):
        m.drain(cfg, "web9", None, None, now=1.0)
    with pytest.raises(MaintenanceError, match="in virtual server 'nope'"):
        m.drain(cfg, "web1", "nope", None, now=1.0)
    with pytest.raises(MaintenanceError, match="timeout must be"):
        m.drain(cfg, "web1", None, -5, now=1.0)
    with pytest.raises(MaintenanceError, match="'web1' is not drained"):
        m.enable("web1", None)
    assert m.drains == {}
    assert not (tmp_path / "m.json").exists()


def test_compiled_table_weight_zero_then_removed(tmp_path: Path) -> None:
    cfg, _ = config(tmp_path)
    m = Maintenance()
    m.drain(cfg, "web2", None, None, now=0.0)
    table = compile_table(cfg, {}, m.overrides(cfg))
    assert table.dests[WEB][R2].weight == 0
    assert table.dests[WEB][R1].weight == 1
    m.drain(cfg, "web2", None, 30.0, now=0.0)
    # settle: after the deadline the destination leaves the table even with connections
    assert m.settle(cfg, _snapshot(cfg, m, active=5, at=10.0), now=31.0) == [
        "TCP 198.18.0.20:80|198.18.1.22:80 (timeout)"
    ]
    table = compile_table(cfg, {}, m.overrides(cfg))
    assert R2 not in table.dests[WEB]
    assert m.enable("web2", None)
    assert compile_table(cfg, {}, m.overrides(cfg)) == compile_table(cfg)


def _snapshot(
    cfg: Config, m: Maintenance, active: int, at: float, inactive: int = 0
) -> StatsSnapshot:
    """A reading of the table ``m`` compiles to, every destination with these counts."""
    kernel = MemoryIPVS()
    kernel.execute(plan(compile_table(cfg, {}, m.overrides(cfg)), Table(), frozenset()))
    for key in kernel.table.dests:
        for dkey in kernel.table.dests[key]:
            kernel.conns[(key, dkey)] = DestConns(active, inactive, 0)
    return kernel.read_stats(at)


def test_idle_means_no_active_for_tcp_and_none_at_all_for_udp(tmp_path: Path) -> None:
    cfg, _ = config(tmp_path)
    m = Maintenance()
    m.drain(cfg, "198.18.1.21", None, 300.0, now=10.0)
    # a reading from before the drain proves nothing
    assert m.settle(cfg, _snapshot(cfg, m, active=0, at=5.0), now=20.0) == []
    # TCP idle with TIME_WAIT leftovers (inactive) is idle; UDP with inactive is not
    done = m.settle(cfg, _snapshot(cfg, m, active=0, inactive=2, at=11.0), now=20.0)
    assert done == ["TCP 198.18.0.20:80|198.18.1.21:80 (idle)"]
    over = m.overrides(cfg)
    assert over[(WEB, R1)] == "remove"
    assert over[(DNS, R1DNS)] == "drain"
    assert m.settle(cfg, _snapshot(cfg, m, active=0, inactive=0, at=12.0), now=21.0) == [
        "UDP 198.18.0.20:53|198.18.1.21:53 (idle)"
    ]


def test_a_reading_with_weight_still_up_is_not_idle(tmp_path: Path) -> None:
    cfg, _ = config(tmp_path)
    m = Maintenance()
    before = _snapshot(cfg, m, active=0, at=20.0)  # taken with weights from before the drain
    m.drain(cfg, "web1", None, 300.0, now=10.0)
    assert m.settle(cfg, before, now=21.0) == []


def test_persisted_and_loaded_back(tmp_path: Path) -> None:
    cfg, _ = config(tmp_path)
    path = tmp_path / "state" / "maintenance.json"
    m = Maintenance(path)
    m.drain(cfg, "web1", None, 60.0, now=1000.0)
    m.drain(cfg, "198.18.1.22", "dns", None, now=1000.0)
    m.save()
    again = Maintenance(path).load()
    assert again.drains == m.drains
    assert again.overrides(cfg) == m.overrides(cfg)


def test_a_corrupt_file_is_reported_set_aside_and_its_good_drains_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "maintenance.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    m = Maintenance(path).load()  # never raises: the daemon must start
    assert m.drains == {}
    assert m.problem is not None and str(path) in m.problem and "not JSON" in m.problem
    assert [p.name.startswith("maintenance.json.corrupt-") for p in path.parent.iterdir()].count(
        True
    ) == 1
    good = Drain("web1", None, 1000.0, None).to_json()
    for broken in ([None], [{"server": 5}], [{"server": "x", "deadline": "soon"}]):
        path.write_text(json.dumps({"drains": [good, *broken]}))
        m = Maintenance(path).load()
        assert list(m.drains) == [("web1", None)], broken
        assert m.problem is not None and "1 drain(s) cannot be read" in m.problem
        assert Maintenance(path).load().drains == m.drains  # the good part was written back
    path.write_text(json.dumps({"drains": {"server": "web1"}}))
    assert "expected" in str(Maintenance(path).load().problem)


def engine_for(tmp_path: Path, kernel: MemoryIPVS) -> Engine:
    cfg, path = config(tmp_path)
    return Engine(
        cfg,
        kernel,
        MemoryOwnedStore(),
        config_path=path,
        sysctl_root=tmp_path / "sys",
        maintenance=Maintenance(tmp_path / "state" / "maintenance.json").load(),
    )


def test_engine_drain_survives_reload_and_restart_until_enable(tmp_path: Path) -> None:
    (tmp_path / "sys/net/ipv4").mkdir(parents=True)
    (tmp_path / "sys/net/ipv4/ip_forward").write_text("1\n")
    kernel = MemoryIPVS()

    async def first() -> None:
        engine = engine_for(tmp_path, kernel)
        await engine.start()
        kernel.conns[(WEB, R2)] = DestConns(active=1)
        await engine.drain("web2", None, 600.0)
        assert kernel.table.dests[WEB][R2].weight == 0
        await engine.refresh_stats()
        assert R2 in kernel.table.dests[WEB]  # busy: stays, weight 0
        await engine.apply_config(load_config(engine.config_path))
        assert kernel.table.dests[WEB][R2].weight == 0

    async def second() -> None:
        engine = engine_for(tmp_path, kernel)  # a restart: state read back from the file
        await engine.start()
        assert kernel.table.dests[WEB][R2].weight == 0
        kernel.conns[(WEB, R2)] = DestConns(active=0, inactive=1)
        await engine.refresh_stats()
        assert R2 not in kernel.table.dests[WEB]  # idle: removed
        assert engine.stats is not None and engine.stats.dest(WEB, R2) is None
        await engine.enable("web2", None)
        assert kernel.table.dests[WEB][R2].weight == 3

    asyncio.run(first())
    asyncio.run(second())
    assert Maintenance(tmp_path / "state" / "maintenance.json").load().drains == {}
