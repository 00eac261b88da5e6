"""Failover against keepalived 2.2.7 when a master's link goes down, and preemption back.

Each director namespace runs a TCP responder that answers with its name; the client namespace
connects to the VIP and must be answered by whichever side is master, which needs the new
master's gratuitous ARPs to have reached it (they are captured and checked). A backup of ours
must stay silent: a keepalived master that hears a lower-priority advert re-advertises and
sends more GARPs.
"""

from __future__ import annotations

import os
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io import keepalived
from tests.vrrp_io.capture import Arp, Capture, Vrrp
from tests.vrrp_io.lab import VIP, answered_by, has_address, lan, mac_of, responder, wait_until
from vrrp import Config, Gratuitous, State, master_down_interval
from vrrp.instance import Instance

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

VRID = 52
OURS = IPv4Address("198.18.0.1")
SETTLE = 1.0  # scheduling, keepalived start-up and link-event slack
BURST, REPEAT_AFTER = 3, 1.0
MODES = [
    pytest.param(2, 1.0, "secret", id="v2-pass-1s"),
    pytest.param(3, 0.1, None, id="v3-100ms"),
]


def ours(priority: int, version: int, interval: float, password: str | None) -> Instance:
    config = Config(
        vrid=VRID,
        priority=priority,
        primary_address=OURS,
        virtual_addresses=(VIP,),
        version=version,
        advert_interval=interval,
        password=None if password is None else password.encode(),
        gratuitous=Gratuitous(count=BURST, repeat_after=REPEAT_AFTER),
    )
    return Instance(config, "eth0")


def start_keepalived(
    ka: Namespace, tmp_path: Path, priority: int, version: int, interval: float, pw: str | None
) -> Background:
    text = keepalived.config(
        version=version, vrid=VRID, priority=priority, interval=interval, vip=VIP, password=pw
    )
    return keepalived.start(ka, tmp_path, text)


def check_our_garps(capture: Capture, mac: bytes, since: float) -> list[Arp]:
    """A burst of BURST gratuitous ARPs right after our first advert as master, BURST more
    REPEAT_AFTER later: sender = target = VIP, from our MAC."""
    wait_until(
        lambda: len([a for a in capture.arps() if a.at >= since and a.gratuitous]) >= 2 * BURST,
        REPEAT_AFTER + SETTLE,
        "two bursts of gratuitous ARPs",
    )
    garps = [a for a in capture.arps() if a.at >= since and a.gratuitous]
    assert all(
        (a.op, a.sender_ip, a.target_ip, a.source_mac, a.sender_mac) == (1, VIP, VIP, mac, mac)
        for a in garps
    ), garps
    first, second = garps[:BURST], garps[BURST : 2 * BURST]
    assert first[-1].at - first[0].at < 0.05
    advert = next(
        v for v in capture.adverts() if v.at >= since and v.src == OURS and v.advert is not None
    )
    assert 0 <= first[0].at - advert.at < 0.05, "first GARP right after the first advert"
    # The repeat is due REPEAT_AFTER after the transition (keepalived's garp_master_delay),
    # which the first advert marks; the first burst may leave a few ms after it, behind the
    # address request, so it is no reference for the repeat. The advert itself may leave a
    # few ms after the transition: the instance runs in this (long-lived) test process, whose
    # collector can pause it there (0.992 s once in a CI run of the whole suite); a repeat timed
    # from anything but the transition would be off by far more than the 20 ms allowed.
    gap = second[0].at - advert.at
    assert REPEAT_AFTER - 0.02 <= gap <= REPEAT_AFTER + 0.2, gap
    return garps


def our_adverts(capture: Capture, since: float) -> list[Vrrp]:
    return [v for v in capture.adverts() if v.src == OURS and v.at >= since]


@pytest.mark.parametrize(("version", "interval", "password"), MODES)
def test_keepalived_link_down_we_take_over_then_it_preempts_back(
    topology: Topology, tmp_path: Path, version: int, interval: float, password: str | None
) -> None:
    d1, ka, client = lan(topology, "d1", "ka", "obs")
    responder(d1, "d1")
    responder(ka, "ka")
    job = start_keepalived(ka, tmp_path, 200, version, interval, password)
    ka_down = master_down_interval(version, 200, interval)
    wait_until(lambda: has_address(ka, VIP), ka_down + 3, f"keepalived master\n{job.output()}")
    instance = ours(100, version, interval, password)
    our_down = master_down_interval(version, 100, interval)
    with NamespaceLoop(d1) as inside, NamespaceLoop(client) as in_client:
        capture = Capture(in_client)
        inside.run(instance.start(), timeout=10)
        try:
            wait_until(lambda: instance.counters().adverts_received >= 3, our_down, "adverts")
            assert instance.state is State.BACKUP
            answered_by(in_client, VIP, "ka", 2)

            down_at = time.time()
            ka.ip("link", "set", "dev", "eth0", "down")
            wait_until(lambda: instance.state is State.MASTER, our_down + SETTLE, "take over")
            assert has_address(d1, VIP)
            answered_by(in_client, VIP, "d1", 2)
            check_our_garps(capture, mac_of(d1), down_at)

            ka.ip("link", "set", "dev", "eth0", "up")
            wait_until(lambda: instance.state is State.BACKUP, ka_down + 2 * SETTLE, job.output())
            backup_at = time.time()
            wait_until(lambda: not has_address(d1, VIP), 1, "VIP gone from our side")
            answered_by(in_client, VIP, "ka", 2)
            # our backup is silent: no adverts from us, keepalived never hears a lower priority
            sent = instance.counters().adverts_sent
            time.sleep(3 * interval + 0.2)
            assert instance.counters().adverts_sent == sent
            assert our_adverts(capture, backup_at + 0.05) == []
            as_master = job.output().rsplit("Entering MASTER STATE", 1)[1]
            assert "lower priority" not in as_master, job.output()
            assert instance.counters().drops == {}
        finally:
            inside.run(instance.stop(), timeout=15)
            capture.close()


@pytest.mark.parametrize(("version", "interval", "password"), MODES)
def test_our_link_down_keepalived_takes_over_then_we_preempt_back(
    topology: Topology, tmp_path: Path, version: int, interval: float, password: str | None
) -> None:
    d1, ka, client = lan(topology, "d1", "ka", "obs")
    responder(d1, "d1")
    responder(ka, "ka")
    instance = ours(200, version, interval, password)
    our_down = master_down_interval(version, 200, interval)
    ka_down = master_down_interval(version, 100, interval)
    with NamespaceLoop(d1) as inside, NamespaceLoop(client) as in_client:
        capture = Capture(in_client)
        inside.run(instance.start(), timeout=10)
        try:
            wait_until(lambda: instance.state is State.MASTER, our_down + SETTLE, "master")
            job = start_keepalived(ka, tmp_path, 100, version, interval, password)
            wait_until(lambda: "Entering BACKUP STATE" in job.output(), 5, job.output())
            answered_by(in_client, VIP, "d1", 2)

            down_at = time.monotonic()
            d1.ip("link", "set", "dev", "eth0", "down")
            wait_until(lambda: instance.state is State.FAULT, SETTLE, "our fault on link down")
            assert not has_address(d1, VIP)
            wait_until(lambda: has_address(ka, VIP), ka_down + SETTLE, job.output())
            # keepalived waited for its Master_Down_Timer, which runs from our last advert: at
            # most one interval before the link went down
            took = time.monotonic() - down_at
            assert took > ka_down - interval, (took, ka_down)
            answered_by(in_client, VIP, "ka", 2)
            ka_garps = [a for a in capture.arps() if a.source_mac == mac_of(ka) and a.gratuitous]
            assert ka_garps and all(a.sender_ip == a.target_ip == VIP for a in ka_garps)

            up_at = time.time()
            d1.ip("link", "set", "dev", "eth0", "up")
            wait_until(lambda: instance.state is State.MASTER, our_down + 2 * SETTLE, "preempt")
            wait_until(lambda: not has_address(ka, VIP), 2, job.output())
            answered_by(in_client, VIP, "d1", 2)
            check_our_garps(capture, mac_of(d1), up_at)
            assert job.output().count("Entering BACKUP STATE") >= 2, job.output()
            assert instance.counters().drops == {}
        finally:
            inside.run(instance.stop(), timeout=15)
            capture.close()
