"""Floods of forged adverts (``tests.vrrp_io.sender``, bounded in count and rate) on one bridge.

- A master answers lower-priority adverts at most once per advert interval: a flood of them
  costs it one advert and one gratuitous round per interval, not one per forged packet.
- Datagrams the kernel drops because the VRRP socket's buffer is full (the reader held up)
  are counted, as ``socket_overflow``, from ``SO_RXQ_OVFL``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from ipaddress import IPv4Address

import pytest

from tests.helpers.netns import Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io.capture import Capture
from tests.vrrp_io.lab import VIP, lan, mac_of, wait_until
from vrrp import Config, Gratuitous, State
from vrrp.instance import Instance
from vrrp.packet import DropReason, Expected, IPAddress
from vrrp.transport import Transport

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

INTERVAL = 0.1


def flood(ns: Namespace, src: str, count: int, rate: float, *extra: str) -> int:
    argv = [sys.executable, "-m", "tests.vrrp_io.sender", "--src", src, "--vrid", "42"]
    argv += ["--count", str(count), "--rate", str(rate), *extra]
    out = ns.run(*argv, timeout=60).stdout.strip()
    assert out.startswith("sent "), out
    return int(out.split()[1])


def test_a_flood_of_lower_priority_adverts_is_answered_once_per_interval(
    topology: Topology,
) -> None:
    d1, rogue, obs = lan(topology, "d1", "rogue", "obs")
    config = Config(
        vrid=42,
        priority=200,
        primary_address=IPv4Address("198.18.0.1"),
        virtual_addresses=(VIP,),
        version=3,
        advert_interval=INTERVAL,
        gratuitous=Gratuitous(count=1, repeat_after=None, lower_priority_rounds=1),
    )
    instance = Instance(config, "eth0")
    with NamespaceLoop(d1) as inside, NamespaceLoop(obs) as in_obs:
        capture = Capture(in_obs)
        inside.run(instance.start(), timeout=10)
        try:
            wait_until(lambda: instance.state is State.MASTER, 0.4 + 1, "master")
            capture.clear()
            extra = ("--priority", "50", "--vip", str(VIP), "--interval", str(INTERVAL))
            sent = flood(rogue, "198.18.0.2", 2000, 2000, *extra)  # 1 s of 2,000 adverts/s
            time.sleep(0.3)
            forged = [v.at for v in capture.adverts() if str(v.src) == "198.18.0.2"]
            assert len(forged) == sent
            start, end = forged[0], forged[-1]
            ours = [
                v.at
                for v in capture.adverts()
                if str(v.src) == "198.18.0.1" and start <= v.at <= end
            ]
            mac = mac_of(d1)
            garps = [a.at for a in capture.arps() if a.source_mac == mac and start <= a.at <= end]
            intervals = (end - start) / INTERVAL
            print(f"{sent} forged in {end - start:.3f} s: {len(ours)} adverts, {len(garps)} GARPs")
            # one answer per interval on top of the periodic advert (was: one per forged one)
            assert len(ours) <= 2 * intervals + 3
            assert len(garps) <= intervals + 2
            assert len(ours) >= intervals - 2  # the master kept advertising
            counters = instance.counters()
            print(f"{counters.answers_suppressed} answers held back")
            assert counters.adverts_received == sent
            assert counters.answers_suppressed >= sent - (intervals + 2)
            assert instance.state is State.MASTER
        finally:
            inside.run(instance.stop(), timeout=15)
            capture.close()


async def _open(transport: Transport) -> None:
    transport.open(asyncio.get_running_loop())
    sock = transport._sock
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few datagrams


async def _close(transport: Transport) -> None:
    transport.close()


def test_datagrams_the_kernel_drops_on_a_full_socket_are_counted(topology: Topology) -> None:
    d1, rogue = lan(topology, "d1", "rogue")
    heard: list[tuple[IPAddress, int]] = []
    transport = Transport(
        "eth0",
        IPv4Address("198.18.0.1"),
        Expected(version=3, vrid=42, interval_cs=10),
        lambda advert, src, age: heard.append((src, advert.priority)),
    )
    with NamespaceLoop(d1) as inside:
        inside.run(_open(transport))
        held = threading.Event()
        release = threading.Event()

        def hold_up_the_reader() -> None:
            held.set()
            release.wait(20)  # bounded even if the test dies here

        try:
            inside.loop.call_soon_threadsafe(hold_up_the_reader)
            assert held.wait(5)
            sent = flood(rogue, "198.18.0.2", 500, 5000, "--priority", "100")
            release.set()
            # the drops are reported beside the next datagram queued after them
            assert flood(rogue, "198.18.0.2", 1, 0, "--priority", "7") == 1
            wait_until(lambda: (IPv4Address("198.18.0.2"), 7) in heard, 5, "the marker")
            overflow = transport.drops[DropReason.SOCKET_OVERFLOW]
            print(f"{sent} sent while not reading: {len(heard) - 1} read, {overflow} dropped")
            assert 0 < len(heard) - 1 < 100  # what the small buffer held
            assert len(heard) + overflow == sent + 1  # every datagram read or counted
            assert transport.kernel_drops == overflow
        finally:
            release.set()
            inside.run(_close(transport))
