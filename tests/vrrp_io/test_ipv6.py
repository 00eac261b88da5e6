"""VRRPv3 over IPv6 (RFC 5798): raw IPv6 protocol 112 from the link-local address to ff02::12,
hop limit 255, checksum over the IPv6 pseudo-header; IPv6 virtual addresses announced by
unsolicited neighbour advertisements. Two of ours, then keepalived 2.2.7 both ways."""

from __future__ import annotations

import os
import time
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io import keepalived
from tests.vrrp_io.capture import ALL_NODES_MAC, Capture, NeighbourAdvert
from tests.vrrp_io.lab import (
    answered_by,
    has_address,
    lan,
    link_local,
    mac_of,
    responder,
    wait_until,
)
from vrrp import Config, Gratuitous, State, master_down_interval, skew_time
from vrrp.addresses import NA_OVERRIDE, NA_ROUTER, NA_SOLICITED
from vrrp.instance import Instance
from vrrp.packet import VRRP_GROUP_V6

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

VIP6 = IPv6Address("2001:db8::100")
INTERVAL = 0.1
SETTLE = 1.0
ALL_NODES = IPv6Address("ff02::1")


def ours(primary: IPv6Address, priority: int, vrid: int = 61) -> Instance:
    config = Config(
        vrid=vrid,
        priority=priority,
        primary_address=primary,
        virtual_addresses=(VIP6,),
        version=3,
        advert_interval=INTERVAL,
        gratuitous=Gratuitous(count=2, repeat_after=None),
    )
    return Instance(config, "eth0")


def check_na(na: NeighbourAdvert, mac: bytes) -> None:
    assert (na.source_mac, na.dst_mac, na.target_mac) == (mac, ALL_NODES_MAC, mac)
    assert (na.src, na.dst, na.target, na.hop_limit) == (VIP6, ALL_NODES, VIP6, 255)
    assert na.flags & NA_OVERRIDE and na.flags & NA_ROUTER and not na.flags & NA_SOLICITED


def test_two_of_ours_elect_and_hand_over_over_ipv6(topology: Topology) -> None:
    d1, d2, client = lan(topology, "d1", "d2", "obs", ipv6=True)
    responder(d1, "d1")
    responder(d2, "d2")
    ll1, ll2 = link_local(d1), link_local(d2)
    high, low = ours(ll1, 150), ours(ll2, 100)
    with (
        NamespaceLoop(d1) as in1,
        NamespaceLoop(d2) as in2,
        NamespaceLoop(client) as in_client,
    ):
        capture = Capture(in_client)
        in2.run(low.start(), timeout=10)
        in1.run(high.start(), timeout=10)
        try:
            down = master_down_interval(3, 150, INTERVAL)
            wait_until(lambda: high.state is State.MASTER, down + SETTLE, "d1 master")
            wait_until(lambda: low.counters().adverts_received >= 3, SETTLE, "adverts at d2")
            assert low.state is State.BACKUP and low.counters().drops == {}
            assert has_address(d1, VIP6) and not has_address(d2, VIP6)
            assert "nodad" in d1.ip("-6", "address", "show", "dev", "eth0")
            answered_by(in_client, VIP6, "d1", 2)
            adverts = [v for v in capture.adverts() if v.src == ll1]
            assert adverts and all(
                v.dst == VRRP_GROUP_V6 and v.ttl == 255 and v.advert is not None for v in adverts
            )  # decoded: the checksum over the IPv6 pseudo-header verified
            assert [na for na in capture.neighbour_adverts() if na.source_mac == mac_of(d1)]

            handover_at = time.time()
            in1.run(high.stop(), timeout=15)
            wait_until(lambda: low.state is State.MASTER, low.machine.skew_time + SETTLE, "d2")
            assert has_address(d2, VIP6) and not has_address(d1, VIP6)
            answered_by(in_client, VIP6, "d2", 2)
            nas = [na for na in capture.neighbour_adverts() if na.at >= handover_at]
            assert len(nas) == 2, nas
            for na in nas:
                check_na(na, mac_of(d2))
            first_advert = next(v for v in capture.adverts() if v.src == ll2)
            assert 0 <= nas[0].at - first_advert.at < 0.05
        finally:
            in2.run(low.stop(), timeout=15)
            if high.transport._sock is not None:
                in1.run(high.stop(), timeout=15)
            capture.close()
    assert not has_address(d2, VIP6)


def test_keepalived_ipv6_both_ways(topology: Topology, tmp_path: Path) -> None:
    d1, ka = lan(topology, "d1", "ka", ipv6=True)
    instance = ours(link_local(d1), 100, vrid=62)

    def conf(priority: int) -> str:
        return keepalived.config(version=3, vrid=62, priority=priority, interval=INTERVAL, vip=VIP6)

    job = keepalived.start(ka, tmp_path, conf(200))
    wait_until(lambda: has_address(ka, VIP6), 5, f"keepalived master\n{job.output()}")
    with NamespaceLoop(d1) as inside:
        inside.run(instance.start(), timeout=10)
        try:
            wait_until(lambda: instance.counters().adverts_received >= 3, SETTLE, job.output())
            assert instance.machine.state is State.BACKUP
            assert instance.counters().drops == {}  # keepalived's v6 adverts pass every check

            keepalived.crash(job)
            our_down = master_down_interval(3, 100, INTERVAL)
            wait_until(lambda: instance.state is State.MASTER, our_down + SETTLE, "take over")
            assert has_address(d1, VIP6)

            # keepalived, lower now, hears our adverts: it stays backup, then takes over
            # within Skew_Time of our clean stop's priority 0 advert
            ka.ip("-6", "address", "flush", "dev", "eth0", "scope", "global")
            ka.add_address("eth0", "2001:db8::2/64")
            (tmp_path / "2").mkdir()
            job = keepalived.start(ka, tmp_path / "2", conf(50))
            wait_until(lambda: "Entering BACKUP STATE" in job.output(), 5, job.output())
            time.sleep(master_down_interval(3, 50, INTERVAL) + SETTLE)
            assert "Entering MASTER STATE" not in job.output(), job.output()
            assert instance.state is State.MASTER
        finally:
            inside.run(instance.stop(), timeout=15)
    took = wait_until(lambda: has_address(ka, VIP6), 3, job.output())
    assert took < skew_time(3, 50, INTERVAL) + SETTLE
