"""``director.vrrp_service.cleanup``: the start's first act removes the VIPs a crashed run left,
in one rtnetlink round for every instance, touching nothing else (this host has no ip_vs)."""

from __future__ import annotations

import os
import time

import pytest

from director.config import Config, parse_config
from director.vrrp_service import cleanup
from tests.helpers.netns import Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_daemon.test_service import two_lans

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

CONFIG = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = [
    "198.18.0.100/24",
    { address = "198.18.1.100/32", device = "eth1", label = "eth1:7" },
]

[[vrrp_instance]]
name = "VI_2"
interface = "eth1"
vrid = 52
virtual_addresses = ["198.18.1.101/32", "198.18.1.102/32"]

[[vrrp_instance]]
name = "VI_3"
interface = "nosuch0"
vrid = 53
virtual_addresses = ["198.18.2.100/32"]
"""


def leave_leftovers(d1: Namespace) -> None:
    d1.ip("address", "add", "198.18.0.100/24", "dev", "eth0")
    d1.ip("address", "add", "198.18.1.100/32", "dev", "eth1", "label", "eth1:7")
    d1.ip("address", "add", "198.18.1.101/32", "dev", "eth1")


async def timed(config: Config) -> tuple[list[str], float]:
    started = time.perf_counter()
    removed = await cleanup(config)
    return removed, time.perf_counter() - started


def test_leftover_vips_go_and_nothing_else(topology: Topology) -> None:
    (d1,) = two_lans(topology, "d1")
    d1.ip("address", "add", "198.18.0.50/32", "dev", "eth0")  # not a VIP
    d1.ip("address", "add", "198.18.1.102/32", "dev", "eth0")  # a VIP, on another device
    config = parse_config(CONFIG)
    took: list[float] = []
    with NamespaceLoop(d1) as inside:
        for _ in range(3):
            leave_leftovers(d1)
            removed, seconds = inside.run(timed(config))
            took.append(seconds)
            assert removed == ["198.18.0.100", "198.18.1.100", "198.18.1.101"]
            left = d1.ip("-4", "-o", "address", "show")
            for address in removed:
                assert f"inet {address}/" not in left
            on_eth0 = d1.ip("-4", "-o", "address", "show", "dev", "eth0")
            assert "inet 198.18.0.50/32" in on_eth0 and "inet 198.18.1.102/32" in on_eth0
            assert "inet 198.18.0.1/24" in left and "inet 198.18.1.1/24" in left
        assert inside.run(cleanup(config)) == []  # nothing left: nothing to do
    print(f"cleanup of 3 instances: {', '.join(f'{t * 1000:.2f}' for t in took)} ms")
    # one socket and one dump for all instances: well under a millisecond on this machine;
    # a socket and a pyroute2 session per instance took 50 ms
    assert min(took) < 0.01
