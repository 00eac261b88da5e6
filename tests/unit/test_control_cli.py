"""``directorctl`` against a running :class:`director.app.Director` (in-memory kernel, in a
network namespace): status, drain, enable, reload, and a daemon that is not there."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from director import cli
from director.ipvs.kernel import DestConns
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import DestKey, Protocol, ServiceKey
from tests.helpers.director import Running, running, world_in
from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.unit.test_control_maintenance import CONFIG

pytestmark = pytest.mark.netns

WEB = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.20"), 80)
R2 = DestKey.of(ipaddress.IPv4Address("198.18.1.22"), 80)


@dataclass
class Daemon:
    inside: NamespaceLoop
    kernel: MemoryIPVS
    socket: Path
    config: Path
    capsys: pytest.CaptureFixture[str]
    run: Running | None = None

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(["--socket", str(self.socket), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def daemon(
    tmp_path: Path, topology: Topology, capsys: pytest.CaptureFixture[str]
) -> Iterator[Daemon]:
    config = tmp_path / "director.toml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    kernel = MemoryIPVS()
    world = world_in(tmp_path, config, kernel=kernel)
    with NamespaceLoop(topology.namespace("d")) as inside:
        d = Daemon(inside, kernel, world.control_socket or Path(), config, capsys)
        stop = asyncio.Event()

        async def serve() -> None:
            async with running(world) as run:
                d.run = run
                ready.set()
                await stop.wait()

        ready = asyncio.Event()
        with structlog.testing.capture_logs():  # the daemon's log lines stay off stdout
            future = asyncio.run_coroutine_threadsafe(serve(), inside.loop)
            inside.run(ready.wait(), timeout=30)
            try:
                yield d
            finally:
                inside.loop.call_soon_threadsafe(stop.set)
                future.result(30)


def test_status_drain_enable_reload(daemon: Daemon) -> None:
    daemon.kernel.conns[(WEB, R2)] = DestConns(active=4, inactive=1)
    assert daemon.run is not None
    daemon.inside.run(daemon.run.director.engine.refresh_stats())
    code, out, _ = daemon.ctl("status")
    assert code == 0
    assert "director: MASTER" in out
    assert "vrrp:     no instances" in out
    assert "TCP 198.18.0.20:80 rr  [web]" in out
    line = next(ln for ln in out.splitlines() if "198.18.1.22:80" in ln)
    assert line.split()[3:7] == ["nat", "3", "4", "1"], line

    code, out, _ = daemon.ctl("drain", "web2", "--timeout", "600")
    assert code == 0
    assert "draining web2" in out
    assert "TCP 198.18.0.20:80 -> 198.18.1.22:80" in out
    assert daemon.kernel.table.dests[WEB][R2].weight == 0
    code, out, _ = daemon.ctl("status", "--json")
    status = json.loads(out)
    web2 = next(s for s in status["services"][0]["servers"] if s["name"] == "web2")
    assert web2["weight"] == 0
    assert web2["maintenance"] == "draining"
    assert status["drains"][0]["server"] == "web2"
    remaining = status["drains"][0]["remaining"]
    assert 590 < remaining <= 600  # the timeout reached the daemon

    code, _, err = daemon.ctl("drain", "web9")
    assert code == 1
    assert "no real server matches 'web9'" in err

    # reload keeps the drain; a bad file is refused and says why
    daemon.config.write_text(daemon.config.read_text().replace("weight = 3", "weight = 5"))
    code, out, _ = daemon.ctl("reload")
    assert code == 0
    assert "reloaded" in out
    assert daemon.kernel.table.dests[WEB][R2].weight == 0
    daemon.config.write_text(daemon.config.read_text().replace("weight = 5", "weight = -5"))
    code, _, err = daemon.ctl("reload")
    assert code == 1
    assert "the config was rejected" in err
    assert "weight" in err

    code, out, _ = daemon.ctl("enable", "web2")
    assert code == 0
    assert "enabled web2" in out
    assert daemon.kernel.table.dests[WEB][R2].weight == 5
    code, _, err = daemon.ctl("enable", "web2")
    assert code == 1
    assert "'web2' is not drained" in err


def test_daemon_down(daemon: Daemon) -> None:
    assert daemon.run is not None
    daemon.inside.run(daemon.run.director.control.stop())
    for argv in (("status",), ("drain", "web1"), ("enable", "web1"), ("reload",)):
        code, out, err = daemon.ctl(*argv)
        assert code == 1, argv
        assert out == ""
        assert "directord is not running" in err, argv
