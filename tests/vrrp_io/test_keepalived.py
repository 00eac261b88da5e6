"""Interop with a real keepalived 2.2.7: it takes over from us and we take over from it."""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io import keepalived
from tests.vrrp_io.lab import VIP, has_address, lan, wait_until
from vrrp import Config, Gratuitous, State, master_down_interval, skew_time
from vrrp.instance import Instance

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

VRID = 51
SETTLE = 1.0  # scheduling and keepalived start-up slack
MODES = [
    pytest.param(2, 1.0, "secret", id="v2-pass-1s"),
    pytest.param(3, 0.1, None, id="v3-100ms"),
]


def ours(priority: int, version: int, interval: float, password: str | None) -> Instance:
    config = Config(
        vrid=VRID,
        priority=priority,
        primary_address=IPv4Address("198.18.0.1"),
        virtual_addresses=(VIP,),
        version=version,
        advert_interval=interval,
        password=None if password is None else password.encode(),
        gratuitous=Gratuitous(count=1, repeat_after=None),
    )
    return Instance(config, "eth0")


def keepalived_conf(priority: int, version: int, interval: float, password: str | None) -> str:
    return keepalived.config(
        version=version,
        vrid=VRID,
        priority=priority,
        interval=interval,
        vip=VIP,
        password=password,
    )


@pytest.mark.parametrize(("version", "interval", "password"), MODES)
def test_we_take_over_when_keepalived_dies(
    topology: Topology, tmp_path: Path, version: int, interval: float, password: str | None
) -> None:
    d1, ka = lan(topology, "d1", "ka")
    job = keepalived.start(ka, tmp_path, keepalived_conf(200, version, interval, password))
    down = master_down_interval(version, 200, interval)
    wait_until(lambda: has_address(ka, VIP), down + 3, f"keepalived master\n{job.output()}")
    instance = ours(100, version, interval, password)
    with NamespaceLoop(d1) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            wait_until(
                lambda: instance.counters().adverts_received >= 3, 3 * interval + SETTLE, "adverts"
            )
            assert instance.state is State.BACKUP
            assert not has_address(d1, VIP)
            assert instance.counters().drops == {}

            keepalived.crash(job)
            ours_down = master_down_interval(version, 100, interval)
            wait_until(lambda: instance.state is State.MASTER, ours_down + SETTLE, "take over")
            wait_until(lambda: has_address(d1, VIP), 2, "VIP on our side")
        finally:
            inside.run(instance.stop(), timeout=15)
    assert not has_address(d1, VIP)


@pytest.mark.parametrize(("version", "interval", "password"), MODES)
def test_keepalived_stays_backup_then_takes_over_on_clean_stop(
    topology: Topology, tmp_path: Path, version: int, interval: float, password: str | None
) -> None:
    d1, ka = lan(topology, "d1", "ka")
    instance = ours(200, version, interval, password)
    with NamespaceLoop(d1) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            down = master_down_interval(version, 200, interval)
            wait_until(lambda: instance.state is State.MASTER, down + SETTLE, "we are master")
            wait_until(lambda: has_address(d1, VIP), 2, "VIP on our side")
            job = keepalived.start(ka, tmp_path, keepalived_conf(100, version, interval, password))
            # long enough for keepalived to have become master had it not heard us
            ka_down = master_down_interval(version, 100, interval)
            wait_until(lambda: "Entering BACKUP STATE" in job.output(), 5, job.output())
            time.sleep(ka_down + SETTLE)
            assert "Entering MASTER STATE" not in job.output(), job.output()
            assert not has_address(ka, VIP)
            assert instance.state is State.MASTER
            assert instance.counters().drops == {}
        finally:
            inside.run(instance.stop(), timeout=15)
    took = wait_until(lambda: has_address(ka, VIP), 2 * ka_down + SETTLE, job.output())
    assert took < skew_time(version, 100, interval) + SETTLE, job.output()
    assert "Entering MASTER STATE" in job.output()


def transitions(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "vrrp_transition"]


def test_outbid_by_keepalived_logs_the_advert_that_did_it(
    topology: Topology, tmp_path: Path
) -> None:
    """Our master hears keepalived's higher priority: one ``vrrp_transition`` line, master ->
    backup, naming keepalived's address and priority (was: a bare role change)."""
    d1, ka = lan(topology, "d1", "ka")
    config = Config(
        vrid=VRID,
        priority=100,
        primary_address=IPv4Address("198.18.0.1"),
        virtual_addresses=(VIP,),
        version=3,
        advert_interval=0.1,
        gratuitous=Gratuitous(count=1, repeat_after=None),
    )
    instance = Instance(config, "eth0", name="VI_1")
    with capture_logs() as logs, NamespaceLoop(d1) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            wait_until(lambda: instance.state is State.MASTER, 0.4 + SETTLE, "we are master")
            job = keepalived.start(ka, tmp_path, keepalived_conf(200, 3, 0.1, None))
            wait_until(lambda: instance.state is State.BACKUP, 5, f"outbid\n{job.output()}")
            wait_until(lambda: has_address(ka, VIP), 2, "VIP on keepalived's side")
        finally:
            inside.run(instance.stop(), timeout=15)
    lines = transitions(logs)
    outbid = [e for e in lines if e["previous"] == "master" and e["state"] == "backup"]
    assert len(outbid) == 1, lines
    assert outbid[0] == {
        "event": "vrrp_transition",
        "log_level": "info",
        "instance": "VI_1",
        "vrid": VRID,
        "interface": "eth0",
        "previous": "master",
        "state": "backup",
        "trigger": "advert_higher",
        "cause": "advert from 198.18.0.2 priority 200: higher priority",
        "source": "198.18.0.2",
        "source_priority": 200,
        "priority": 100,
    }
    assert [(e["previous"], e["state"], e["trigger"]) for e in lines] == [
        ("initialize", "backup", "start"),
        ("backup", "master", "master_down_timer"),
        ("master", "backup", "advert_higher"),
        ("backup", "initialize", "shutdown"),
    ]
    assert lines[1]["cause"] == "master_down timer expired, no master heard"


DEAF = "table inet deaf { chain in { type filter hook input priority 0; meta l4proto 112 drop; }; }"


def test_split_brain_with_keepalived_heals_through_our_answers(
    topology: Topology, tmp_path: Path
) -> None:
    """keepalived (priority 100) cannot hear us (VRRP dropped in its namespace) and becomes a
    second master; ours answers its lower-priority adverts (at most one per interval, on top of
    its own). When it can hear again it goes back to backup and drops the VIP at once."""
    d1, ka = lan(topology, "d1", "ka")
    instance = ours(200, 3, 0.1, None)
    with NamespaceLoop(d1) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            wait_until(lambda: instance.state is State.MASTER, 0.4 + SETTLE, "we are master")
            ka.run("nft", "-f", "-", stdin=DEAF)
            job = keepalived.start(ka, tmp_path, keepalived_conf(100, 3, 0.1, None))
            wait_until(lambda: "Entering MASTER STATE" in job.output(), 5, "a second master")
            wait_until(lambda: instance.counters().adverts_received >= 10, 2, "its adverts")
            ka.run("nft", "delete", "table", "inet", "deaf")
            took = wait_until(
                lambda: "Entering BACKUP STATE" in job.output().split("Entering MASTER")[-1],
                1 + SETTLE,
                "keepalived back to backup",
            )
            print(f"keepalived back to backup {took:.3f} s after it could hear us")
            wait_until(lambda: not has_address(ka, VIP), SETTLE, "keepalived dropped the VIP")
            assert instance.state is State.MASTER
            assert has_address(d1, VIP)
            assert instance.counters().drops == {}
        finally:
            inside.run(instance.stop(), timeout=15)
