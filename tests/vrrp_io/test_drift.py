"""A virtual address deleted by hand (``ip addr del``) is drift: the master puts it back and
announces it; a backup never adds one. Two of our instances and a client on one bridge."""

from __future__ import annotations

import os
import time
from ipaddress import IPv4Address

import pytest
from structlog.testing import capture_logs

from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io.capture import Capture
from tests.vrrp_io.lab import VIP, ask, has_address, lan, mac_of, responder, wait_until
from tests.vrrp_io.test_pair import running
from vrrp import Config, Gratuitous, State
from vrrp.instance import Instance

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

SETTLE = 1.0


def instance(host: int, priority: int) -> Instance:
    config = Config(
        vrid=42,
        priority=priority,
        primary_address=IPv4Address(f"198.18.0.{host}"),
        virtual_addresses=(VIP,),
        version=3,
        advert_interval=0.1,
        gratuitous=Gratuitous(count=1, repeat_after=None),
    )
    return Instance(config, "eth0", name=f"VI_{host}")


def test_the_master_restores_a_deleted_vip_and_the_client_reaches_it(
    topology: Topology,
) -> None:
    d1, d2, obs = lan(topology, "d1", "d2", "obs")
    responder(d1, "d1")
    master, backup = instance(1, 150), instance(2, 100)
    with (
        NamespaceLoop(d1) as in1,
        NamespaceLoop(d2) as in2,
        NamespaceLoop(obs) as client,
        running(in1, master),
        running(in2, backup),
    ):
        capture = Capture(client)
        try:
            wait_until(lambda: master.state is State.MASTER, 0.4 + SETTLE, "d1 master")
            wait_until(lambda: backup.counters().adverts_received >= 2, SETTLE, "d2 backup")
            wait_until(lambda: has_address(d1, VIP), SETTLE, "VIP on d1")
            capture.clear()
            with capture_logs() as logs:
                deleted_at = time.time()
                d1.ip("address", "del", f"{VIP}/32", "dev", "eth0")
                took = wait_until(lambda: has_address(d1, VIP), 1.0, "the VIP back on d1")
                wait_until(lambda: master.counters().vips_restored == 1, SETTLE, "counted")
            print(f"VIP restored {took * 1000:.1f} ms after it was deleted")
            restored = [e for e in logs if e["event"] == "vip_restored"]
            assert [(e["address"], e["instance"], e["vrid"]) for e in restored] == [
                (str(VIP), "VI_1", 42)
            ]
            assert not [e for e in logs if e["event"] == "vrrp_transition"]  # no flap
            wait_until(lambda: bool(capture.arps()), SETTLE, "a gratuitous ARP")
            garp = capture.arps()[0]
            assert garp.gratuitous and garp.sender_ip == VIP and garp.source_mac == mac_of(d1)
            assert garp.at >= deleted_at
            # a client that has to ask for the VIP's MAC again gets d1's, and a connection
            obs.ip("neigh", "flush", "dev", "eth0")
            assert client.run(ask(VIP), timeout=5) == "d1"
            neighbour = obs.ip("neigh", "show", str(VIP), "dev", "eth0")
            assert mac_of(d1).hex(":") in neighbour, neighbour

            # on the backup an address added and deleted by hand is not put back
            d2.ip("address", "add", f"{VIP}/32", "dev", "eth0")
            d2.ip("address", "del", f"{VIP}/32", "dev", "eth0")
            time.sleep(0.3)
            assert not has_address(d2, VIP)
            assert backup.counters().vips_restored == 0
            assert master.counters().vips_restored == 1
            assert master.state is State.MASTER and backup.state is State.BACKUP
        finally:
            capture.close()
