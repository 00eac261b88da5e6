"""Interop with a real keepalived 2.2.7: it takes over from us and we take over from it."""

from __future__ import annotations

import os
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

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
