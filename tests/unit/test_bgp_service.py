"""BgpService on a fake speaker and a stepped clock: healthy counts from verdicts and drains,
announce/withdraw, reload (routes kept, speaker restarted only when its settings change), stop."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from director.bgp.decision import healthy_counts
from director.bgp.exabgp_api import Route
from director.bgp.service import BgpService, runtime_dir_for
from director.config import Config, parse_config
from director.config.bgp import BgpSettings
from director.ipvs.model import DestKey, ServiceKey

BASE = """
[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.10"
port = 80
  [virtual_server.check]
  type = "tcp"
  [[virtual_server.real_server]]
  address = "198.18.1.1"
  [[virtual_server.real_server]]
  address = "198.18.1.2"
  [[virtual_server.real_server]]
  address = "198.18.1.3"
  weight = 0

[[virtual_server]]
name = "nocheck"
protocol = "tcp"
address = "198.18.0.10"
port = 81
  [[virtual_server.real_server]]
  address = "198.18.1.1"
  [[virtual_server.real_server]]
  address = "198.18.1.2"

[bgp]
local_as = 65001
router_id = "198.18.100.1"
[[bgp.neighbor]]
address = "198.18.100.254"
peer_as = 65000
hold_time = {hold}
[[bgp.announce]]
prefix = "198.18.0.10"
virtual_servers = ["web", "nocheck"]
quorum = 1
quorum_up = 2
med = {med}
"""


def config(hold: int = 9, med: int = 5) -> Config:
    return parse_config(BASE.format(hold=hold, med=med))


def key(port: int, last: int) -> tuple[ServiceKey, DestKey]:
    c = config()
    vs = next(v for v in c.virtual_servers if v.port == port)
    rs = next(r for r in vs.real_servers if str(r.address).endswith(f".{last}"))
    return vs.service_key(), rs.dest_key(vs)


def test_healthy_counts_need_a_verdict_weight_and_no_drain() -> None:
    c = config()
    assert healthy_counts(c, {}) == {"web": 0, "nocheck": 2}  # no verdict yet; no check: up
    up = {key(80, 1): True, key(80, 2): True, key(80, 3): True}
    assert healthy_counts(c, up) == {"web": 2, "nocheck": 2}  # weight 0 does not count
    assert healthy_counts(c, {**up, key(80, 2): False})["web"] == 1
    assert healthy_counts(c, up, {key(80, 1): "drain"})["web"] == 1
    assert healthy_counts(c, {key(81, 1): False})["nocheck"] == 1


class FakeSpeaker:
    def __init__(self, bgp: BgpSettings, runtime_dir: Path) -> None:
        self.bgp = bgp
        self.calls: list[object] = []
        self.routes: list[Route] = []

    async def start(self) -> None:
        self.calls.append("start")

    def announce(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self.calls.append([str(r.prefix) for r in routes])

    async def stop(self) -> None:
        self.routes = []
        self.calls.append("stop")

    def summary(self) -> dict[str, object]:
        return {"fake": True}


def test_service_announces_withdraws_reloads_and_stops(tmp_path: Path) -> None:
    speakers: list[FakeSpeaker] = []
    now = [100.0]

    def make(bgp: BgpSettings, runtime_dir: Path) -> FakeSpeaker:
        speakers.append(FakeSpeaker(bgp, runtime_dir))
        return speakers[-1]

    async def scenario() -> None:
        c = config()
        service = BgpService(c, tmp_path, make_speaker=make, clock=lambda: now[0])
        await service.start()
        (speaker,) = speakers
        up = {key(80, 1): True, key(80, 2): True}
        service.update(c, {key(80, 1): True})  # 1 < quorum_up 2: not yet
        assert speaker.routes == []
        now[0] = 101.0
        service.update(c, up)
        (route,) = speaker.routes
        assert route.prefix == ipaddress.ip_network("198.18.0.10/32") and route.med == 5
        service.update(c, {key(80, 1): True})  # 1 >= quorum 1: stays
        assert speaker.routes
        service.update(c, {})  # web 0: withdrawn
        assert speaker.routes == []
        service.update(c, up)
        service.drained = True
        service.update(c, up)
        assert speaker.routes == []
        service.drained = False
        service.update(c, up)
        # a reload that changes only the announcement keeps the speaker, and the route
        await service.reload(config(med=7))
        assert len(speakers) == 1 and speaker.routes[0].med == 7
        # one that changes a neighbour restarts it (withdrawn first), then announces again
        await service.reload(config(hold=3))
        assert speaker.calls[-1] == "stop" and len(speakers) == 2
        assert speakers[1].calls == ["start", ["198.18.0.10/32"]]
        summary = service.summary()
        assert summary is not None and summary["speaker"] == {"fake": True}
        await service.stop()
        assert speakers[1].calls[-2:] == [[], "stop"]  # withdrawn, then stopped
        assert service.routes.states[ipaddress.ip_network("198.18.0.10/32")].reason == "stopping"

    asyncio.run(scenario())


def test_no_bgp_table_means_nothing_runs(tmp_path: Path) -> None:
    async def scenario() -> None:
        service = BgpService(Config(), tmp_path)
        await service.start()
        service.update(Config(), {})
        assert service.summary() is None and service.speaker is None
        await service.stop()

    asyncio.run(scenario())


def test_runtime_dir_fits_a_unix_socket(tmp_path: Path) -> None:
    assert runtime_dir_for(tmp_path) == tmp_path / "bgp"
    deep = tmp_path / ("x" * 120)
    short = runtime_dir_for(deep)
    assert len(str(short / "exabgp.sock")) <= 107 and short.is_dir()
    short.rmdir()


def test_drain_director_survives_a_restart_and_a_bad_file_is_set_aside(tmp_path: Path) -> None:
    c = config()
    service = BgpService(c, tmp_path)
    view = service.set_drained(True, wall=1000.0, timeout=60.0)
    assert view == {"drained": True, "since": 1000.0, "until": 1060.0, "seconds_left": 60.0}
    again = service.set_drained(True, wall=1010.0)  # default timeout: [bgp] drain_timeout
    assert again["since"] == 1000.0 and again["until"] == 1010.0 + c.bgp.drain_timeout  # type: ignore[union-attr]
    restarted = BgpService(c, tmp_path)
    restarted.load_drain()
    assert restarted.drained and restarted.drain_since == 1000.0
    restarted.set_drained(False, wall=1020.0)
    assert not (tmp_path / "director-drain.json").exists()
    (tmp_path / "director-drain.json").write_text('{"since": "x"}')
    bad = BgpService(c, tmp_path)
    bad.load_drain()
    assert not bad.drained and bad.problem is not None and "set aside" in bad.problem
    assert list(tmp_path.glob("director-drain.json.corrupt-*"))


def test_status_lines_show_sessions_routes_and_drain() -> None:
    from director.control.ctl import _bgp_lines

    lines = _bgp_lines(
        {
            "backend": "exabgp",
            "drain": {"drained": True, "seconds_left": 12.0},
            "speaker": {
                "backend": "exabgp",
                "pid": 42,
                "restarts": 1,
                "sessions": [{"peer": "198.18.100.254", "state": "up", "reason": ""}],
            },
            "routes": [{"prefix": "198.18.0.10/32", "announced": False, "reason": "drained"}],
        }
    )
    assert lines[0].startswith("bgp:      exabgp  pid 42  restarts 1  DRAINED (12")
    assert "peer 198.18.100.254  UP" in lines[1]
    assert "198.18.0.10/32" in lines[2] and "withdrawn" in lines[2] and "drained" in lines[2]
    assert _bgp_lines(None) == []


def test_metrics_show_routes_sessions_restarts_and_drain() -> None:
    from director.metrics import Metrics, Sources

    summary: dict[str, object] = {
        "backend": "exabgp",
        "drain": {"drained": False},
        "routes": [
            {"prefix": "198.18.0.10/32", "announced": True, "reason": "healthy"},
            {"prefix": "198.18.0.11/32", "announced": False, "reason": "quorum lost"},
        ],
        "speaker": {
            "restarts": 2,
            "sessions": [{"peer": "198.18.100.254", "state": "up", "reason": ""}],
        },
    }
    text = Metrics(Sources(bgp=lambda: summary)).render().decode()
    assert 'director_bgp_route_announced{prefix="198.18.0.10/32"} 1.0' in text
    assert 'director_bgp_route_announced{prefix="198.18.0.11/32"} 0.0' in text
    assert 'director_bgp_session_up{peer="198.18.100.254"} 1.0' in text
    assert "director_bgp_speaker_restarts 2.0" in text
    assert "director_bgp_drained 0.0" in text
    assert "director_bgp" not in Metrics(Sources()).render().decode()  # no [bgp]: no series
