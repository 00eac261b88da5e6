"""``accept_only_peers``: the owned nftables table lets VRRP in only from the unicast peers.

    d1 (198.18.0.1, the director: table inet director, a VRRP socket on eth0)
    peer (198.18.0.2, listed in unicast_peers)     rogue (198.18.0.3, not listed)
    all on one bridge (tests.vrrp_io.lab.lan)

Real adverts (``tests.vrrp_io.sender``) from the peer and the rogue, received by the VRRP
transport the daemon uses; the rule's own counter says how many it dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from ipaddress import IPv4Address

import pytest

from director.config import ConfigError, parse_config
from director.network import NetworkRules, Nft, PolicyRoutes
from director.role import Role
from tests.helpers.netns import Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io.lab import lan, wait_until
from vrrp.packet import DropReason, Expected, IPAddress
from vrrp.transport import Transport

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

CONFIG = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 42
version = 3
advert_interval = 0.1
primary_address = "198.18.0.1"
unicast_peers = ["198.18.0.2"]
accept_only_peers = true
virtual_addresses = ["198.18.0.100/24"]
"""


def send(ns: Namespace, src: str, count: int, vrid: int = 42, priority: int = 200) -> None:
    argv = [sys.executable, "-m", "tests.vrrp_io.sender", "--src", src, "--dst", "198.18.0.1"]
    argv += ["--vrid", str(vrid), "--priority", str(priority), "--count", str(count)]
    assert ns.run(*argv).stdout.strip() == f"sent {count}"


def dropped_by_rule(ns: Namespace) -> int:
    listing = json.loads(ns.run("nft", "-j", "list", "chain", "inet", "director", "vrrp_in").stdout)
    rules = [i["rule"] for i in listing["nftables"] if "rule" in i]
    assert [r["comment"].split()[0] for r in rules] == ["vrrp_instance[0]"]
    counters = [e["counter"]["packets"] for e in rules[0]["expr"] if "counter" in e]
    assert len(counters) == 1
    count: int = counters[0]
    return count


async def opened(transport: Transport) -> None:
    transport.open(asyncio.get_running_loop())


async def closed(transport: Transport) -> None:
    transport.close()


@pytest.mark.asyncio
async def test_vrrp_only_from_the_listed_peers(topology: Topology) -> None:
    d1, peer, rogue = lan(topology, "d1", "peer", "rogue")
    config = parse_config(CONFIG)
    rules = NetworkRules(config, Nft(d1.argv("nft")), PolicyRoutes(d1.name), sysctl_root=None)
    heard: list[tuple[IPAddress, int]] = []
    transport = Transport(
        "eth0",
        IPv4Address("198.18.0.1"),
        Expected(version=3, vrid=42, interval_cs=10),
        lambda advert, src, age: heard.append((src, advert.priority)),
    )
    rogue_ip, peer_ip = IPv4Address("198.18.0.3"), IPv4Address("198.18.0.2")
    with NamespaceLoop(d1) as inside:
        inside.run(opened(transport))
        try:
            # without the table, the rogue is heard (the test would see it if nft let it in)
            send(rogue, "198.18.0.3", 5, priority=250)
            wait_until(lambda: len(heard) == 5, 5, f"the rogue's adverts: {heard}")
            assert set(heard) == {(rogue_ip, 250)}

            await rules.set_role(Role.BACKUP)  # the filter is in force in every role
            table = d1.run("nft", "list", "table", "inet", "director").stdout
            assert "hook input priority filter" in table
            assert "@th,8,8 0x2a ip saddr != 198.18.0.2 counter" in table
            heard.clear()
            send(rogue, "198.18.0.3", 20, priority=250)
            send(peer, "198.18.0.2", 20)  # after the rogue's: when these are in, so were those
            wait_until(lambda: len(heard) >= 20, 5, f"the peer's adverts: {len(heard)}")
            assert heard == [(peer_ip, 200)] * 20
            assert dropped_by_rule(d1) == 20
            # another VRID is not this instance's business: let through (the socket drops it)
            send(rogue, "198.18.0.3", 3, vrid=43)
            send(peer, "198.18.0.2", 1)
            wait_until(lambda: len(heard) == 21, 5, "the peer's marker advert")
            assert transport.drops[DropReason.VRID_MISMATCH] == 3
            assert dropped_by_rule(d1) == 20

            # the key off: the chain goes, the rogue is heard again
            await rules.apply(parse_config(CONFIG.replace("accept_only_peers = true", "")))
            assert "vrrp_in" not in d1.run("nft", "list", "ruleset").stdout
            heard.clear()
            send(rogue, "198.18.0.3", 2, priority=250)
            wait_until(lambda: len(heard) == 2, 5, "the rogue heard again")
        finally:
            inside.run(closed(transport))
            await rules.remove()


def test_accept_only_peers_needs_peers() -> None:
    with pytest.raises(
        ConfigError, match=r"vrrp_instance\[0\]\.accept_only_peers .*needs unicast_peers"
    ):
        parse_config(CONFIG.replace('unicast_peers = ["198.18.0.2"]\n', ""))
