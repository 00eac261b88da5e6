"""Virtual addresses on several devices with their own prefixes and labels (keepalived's
``dev`` / ``label``), announced on their own device, cleaned up at start and on stop."""

from __future__ import annotations

import os
from ipaddress import IPv4Address

import pytest

from tests.helpers.netns import Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io.capture import Capture
from tests.vrrp_io.lab import lan, mac_of, wait_until
from vrrp import Config, Gratuitous, State
from vrrp.addresses import AddressManager, VirtualAddress
from vrrp.instance import Instance

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

A, B, C = IPv4Address("198.18.0.100"), IPv4Address("198.18.0.101"), IPv4Address("198.18.1.100")


def line_of(ns: Namespace, address: IPv4Address) -> str:
    """``ip -4 addr show``'s line for ``address``, e.g. ``inet 198.18.0.100/24 ... eth0:3``."""
    lines = [ln.strip() for ln in ns.ip("-4", "address", "show").splitlines()]
    found = [ln for ln in lines if ln.startswith(f"inet {address}/")]
    assert len(found) == 1, lines
    return found[0].replace("brd 198.18.0.255 ", "")


def owner(virtual: list[VirtualAddress]) -> Instance:
    config = Config(
        vrid=9,
        priority=255,  # the address owner: master at once
        primary_address=IPv4Address("198.18.0.1"),
        virtual_addresses=(A, B, C),
        version=3,
        advert_interval=0.1,
        gratuitous=Gratuitous(count=2, repeat_after=None),
    )
    return Instance(config, "eth0", virtual=virtual)


def test_addresses_on_their_devices_with_labels(topology: Topology) -> None:
    d1, obs = lan(topology, "d1", "obs")
    topology.veth(d1, "eth1", obs, "eth1", a_addr="198.18.1.1/24", b_addr="198.18.1.250/24")
    # a previous run's leftover, with another prefix and no label
    d1.ip("address", "add", "198.18.1.100/24", "dev", "eth1")
    instance = owner(
        [
            VirtualAddress(A, 24, label="eth0:3"),
            VirtualAddress(C, 32, device="eth1", label="eth1:7"),
        ]
    )
    with NamespaceLoop(d1) as inside, NamespaceLoop(obs) as in_obs:
        on0, on1 = Capture(in_obs, "eth0"), Capture(in_obs, "eth1")
        try:
            inside.run(instance.start(), timeout=10)
            try:
                wait_until(lambda: instance.state is State.MASTER, 2, "owner is master")
                wait_until(lambda: len(on1.arps()) >= 2 and len(on0.arps()) >= 4, 2, "GARPs")
                assert line_of(d1, A) == "inet 198.18.0.100/24 scope global secondary eth0:3"
                assert line_of(d1, B) == "inet 198.18.0.101/32 scope global eth0"
                assert line_of(d1, C) == "inet 198.18.1.100/32 scope global eth1:7"
                assert "198.18.1.100" not in d1.ip("-4", "address", "show", "dev", "eth0")
                assert {(a.sender_ip, a.source_mac) for a in on1.arps()} == {
                    (C, mac_of(d1, "eth1"))
                }
                assert {(a.sender_ip, a.source_mac) for a in on0.arps()} == {
                    (A, mac_of(d1)),
                    (B, mac_of(d1)),
                }
                assert all(a.gratuitous for a in on0.arps() + on1.arps())
            finally:
                inside.run(instance.stop(), timeout=15)
        finally:
            on0.close()
            on1.close()
    text = d1.ip("-4", "address", "show")
    assert not any(str(a) in text for a in (A, B, C)), text
    assert "inet 198.18.0.1/24" in text and "inet 198.18.1.1/24" in text


def test_bad_placements_are_refused_before_anything_changes() -> None:
    with pytest.raises(ValueError, match=r"label 'eth1:1' must start with the device name 'eth0'"):
        owner([VirtualAddress(A, label="eth1:1")])
    with pytest.raises(ValueError, match="prefix length 33"):
        owner([VirtualAddress(A, 33)])
    with pytest.raises(ValueError, match=r"198\.18\.9\.9 not among its virtual addresses"):
        owner([VirtualAddress(IPv4Address("198.18.9.9"))])


def test_an_address_is_in_when_its_request_is_sent_and_a_refusal_surfaces_at_confirm(
    topology: Topology,
) -> None:
    """A takeover's GARP follows ``add_now`` before the kernel's answer is read: the address
    must already be on its device then, and a refused add must still be reported."""
    d1, obs = lan(topology, "d1", "obs")
    topology.veth(d1, "eth1", obs, "eth1", a_addr="198.18.1.1/24", b_addr="198.18.1.250/24")
    manager = AddressManager("eth0", virtual=[VirtualAddress(C, 32, device="eth1")])
    with NamespaceLoop(d1) as inside:
        inside.run(manager.open(), timeout=10)
        try:
            manager.prepare([A, C])  # built, not sent
            assert "198.18.0.100" not in d1.ip("-4", "address", "show")
            manager.add_now([A])
            assert line_of(d1, A) == "inet 198.18.0.100/32 scope global eth0"  # not confirmed yet
            manager.confirm()
            manager.add_now([A])  # already there: not an error
            manager.confirm()
            d1.ip("link", "del", "eth1")  # the device goes away under the manager
            manager.add_now([C, B])
            assert line_of(d1, B) == "inet 198.18.0.101/32 scope global eth0"
            with pytest.raises(OSError, match=r"adding 198\.18\.1\.100/32 on eth1: No such device"):
                manager.confirm()
            manager.confirm()  # answered once: nothing left to read
            assert manager.errors == 1
        finally:
            inside.run(closed(manager), timeout=10)


async def closed(manager: AddressManager) -> None:
    manager.close()  # on its loop, as Instance.stop does
