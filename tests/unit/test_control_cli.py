"""``directorctl`` against the daemon's real command handlers (engine on the in-memory kernel)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import structlog

from director import cli
from director.commands import handlers
from director.config import load_config
from director.control import ControlServer
from director.engine import Engine
from director.ipvs.kernel import DestConns
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import DestKey, Protocol, ServiceKey
from director.maintenance import Maintenance
from director.reconcile.owned import MemoryOwnedStore
from tests.unit.test_control_maintenance import CONFIG

WEB = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.20"), 80)
R2 = DestKey.of(ipaddress.IPv4Address("198.18.1.22"), 80)


@dataclass
class Daemon:
    engine: Engine
    kernel: MemoryIPVS
    server: ControlServer
    config: Path

    async def ctl(self, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli.main, ["--socket", str(self.server.path), *argv])
        out, err = capsys.readouterr()
        return code, out, err


@pytest_asyncio.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    config = tmp_path / "director.toml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    (tmp_path / "sys/net/ipv4").mkdir(parents=True)
    (tmp_path / "sys/net/ipv4/ip_forward").write_text("1\n")
    kernel = MemoryIPVS()
    engine = Engine(
        load_config(config),
        config,
        kernel,
        MemoryOwnedStore(),
        load_config,
        sysctl_root=tmp_path / "sys",
        maintenance=Maintenance(tmp_path / "state/maintenance.json"),
    )
    await engine.start()
    await engine.refresh_stats()

    def vrrp() -> list[dict[str, object]]:
        return [{"name": "VI_1", "state": "backup", "priority": 100, "peer": "198.18.0.3"}]

    server = ControlServer(
        tmp_path / "control.sock",
        handlers(engine, list, lambda: "master", vrrp, engine.reload),
    )
    await server.start()
    with structlog.testing.capture_logs():  # the daemon's log lines stay off the CLI's stdout
        yield Daemon(engine, kernel, server, config)
    await server.stop()


@pytest.mark.asyncio
async def test_status_drain_enable_reload(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.kernel.conns[(WEB, R2)] = DestConns(active=4, inactive=1)
    await daemon.engine.refresh_stats()
    code, out, _ = await daemon.ctl("status", capsys=capsys)
    assert code == 0
    assert "director: MASTER" in out
    assert "VI_1  BACKUP  prio 100  master heard 198.18.0.3" in out
    assert "TCP 198.18.0.20:80 rr  [web]" in out
    line = next(ln for ln in out.splitlines() if "198.18.1.22:80" in ln)
    assert line.split()[3:7] == ["nat", "3", "4", "1"], line

    code, out, _ = await daemon.ctl("drain", "web2", "--timeout", "600", capsys=capsys)
    assert code == 0
    assert "draining web2" in out
    assert "TCP 198.18.0.20:80 -> 198.18.1.22:80" in out
    assert daemon.kernel.table.dests[WEB][R2].weight == 0
    code, out, _ = await daemon.ctl("status", "--json", capsys=capsys)
    status = json.loads(out)
    web2 = next(s for s in status["services"][0]["servers"] if s["name"] == "web2")
    assert web2["weight"] == 0
    assert web2["maintenance"] == "draining"
    assert status["drains"][0]["server"] == "web2"
    remaining = status["drains"][0]["remaining"]
    assert 590 < remaining <= 600  # the timeout reached the daemon

    code, _, err = await daemon.ctl("drain", "web9", capsys=capsys)
    assert code == 1
    assert "no real server matches 'web9'" in err

    # reload keeps the drain; a bad file is refused and says why
    daemon.config.write_text(daemon.config.read_text().replace("weight = 3", "weight = 5"))
    code, out, _ = await daemon.ctl("reload", capsys=capsys)
    assert code == 0
    assert "reloaded" in out
    assert daemon.kernel.table.dests[WEB][R2].weight == 0
    daemon.config.write_text(daemon.config.read_text().replace("weight = 5", "weight = -5"))
    code, _, err = await daemon.ctl("reload", capsys=capsys)
    assert code == 1
    assert "the config was rejected" in err
    assert "weight" in err

    code, out, _ = await daemon.ctl("enable", "web2", capsys=capsys)
    assert code == 0
    assert "enabled web2" in out
    assert daemon.kernel.table.dests[WEB][R2].weight == 5
    code, _, err = await daemon.ctl("enable", "web2", capsys=capsys)
    assert code == 1
    assert "'web2' is not drained" in err


@pytest.mark.asyncio
async def test_daemon_down(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    await daemon.server.stop()
    for argv in (("status",), ("drain", "web1"), ("enable", "web1"), ("reload",)):
        code, out, err = await daemon.ctl(*argv, capsys=capsys)
        assert code == 1, argv
        assert out == ""
        assert "directord is not running" in err, argv
