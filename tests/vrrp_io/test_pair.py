"""Two of our instances on a bridge elect a master; a clean stop hands over within Skew_Time."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io.capture import Capture
from tests.vrrp_io.lab import VIP, has_address, lan, mac_of, wait_until
from vrrp import Config, Gratuitous, State
from vrrp.instance import Instance
from vrrp.thread import InstanceThread

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

SETTLE = 0.5  # scheduling slack on top of the protocol's own times


def config(host: int, priority: int, version: int, interval: float) -> Config:
    return Config(
        vrid=42,
        priority=priority,
        primary_address=IPv4Address(f"198.18.0.{host}"),
        virtual_addresses=(VIP,),
        version=version,
        advert_interval=interval,
        password=b"pair" if version == 2 else None,
        gratuitous=Gratuitous(count=3, repeat_after=None),
    )


@contextlib.contextmanager
def running(inside: NamespaceLoop, instance: Instance) -> Iterator[Instance]:
    inside.run(instance.start(), timeout=10)
    try:
        yield instance
    finally:
        if instance.transport._sock is not None:
            inside.run(instance.stop(), timeout=15)


@pytest.mark.parametrize(("version", "interval"), [(2, 1.0), (3, 0.1)])
def test_election_and_clean_handover(topology: Topology, version: int, interval: float) -> None:
    d1, d2, obs = lan(topology, "d1", "d2", "obs")
    states: list[State] = []
    high = Instance(config(1, 150, version, interval), "eth0")
    low = Instance(config(2, 100, version, interval), "eth0", on_state=states.append)
    with (
        NamespaceLoop(d1) as in1,
        NamespaceLoop(d2) as in2,
        NamespaceLoop(obs) as in_obs,
    ):
        capture = Capture(in_obs)
        try:
            with running(in1, high), running(in2, low):
                first = 3 * interval + high.machine.skew_time + SETTLE
                wait_until(lambda: high.state is State.MASTER, first, "higher priority master")
                wait_until(
                    lambda: low.counters().adverts_received >= 2, 3 * interval + 1, "adverts"
                )
                assert low.state is State.BACKUP
                assert has_address(d1, VIP) and not has_address(d2, VIP)
                capture.clear()

                in1.run(high.stop(), timeout=15)
                took = wait_until(
                    lambda: low.state is State.MASTER,
                    low.machine.skew_time + SETTLE,
                    "backup takes over after the priority 0 advert",
                )
                assert took < low.machine.skew_time + SETTLE
                wait_until(lambda: has_address(d2, VIP), 2, "VIP on the new master")
                assert not has_address(d1, VIP)
                wait_until(lambda: bool(capture.arps()), 2, "a GARP")
                garp = capture.arps()[0]
                assert (garp.sender_ip, garp.target_ip) == (VIP, VIP)
                assert garp.source_mac == garp.sender_mac == mac_of(d2)
                assert states == [State.BACKUP, State.MASTER]
                assert low.counters().drops == {}
                assert high.counters().transitions == {
                    (State.INITIALIZE, State.BACKUP): 1,
                    (State.BACKUP, State.MASTER): 1,
                    (State.MASTER, State.INITIALIZE): 1,
                }
        finally:
            capture.close()


def test_priority_drop_and_fault_hand_the_vip_over(topology: Topology) -> None:
    """The inputs tracking uses: ``set_priority`` below the backup's lets it preempt;
    ``set_fault`` makes a master leave at once (priority 0) and come back as backup."""
    d1, d2 = lan(topology, "d1", "d2")
    first = Instance(config(1, 150, 3, 0.1), "eth0")
    second = Instance(config(2, 100, 3, 0.1), "eth0")
    with (
        NamespaceLoop(d1) as in1,
        NamespaceLoop(d2) as in2,
        running(in1, first),
        running(in2, second),
    ):
        wait_until(lambda: first.state is State.MASTER, 1 + SETTLE, "first master")
        wait_until(lambda: second.counters().adverts_received >= 2, SETTLE, "adverts")
        in1.loop.call_soon_threadsafe(first.set_priority, 50)
        down = second.machine.master_down_interval
        wait_until(lambda: second.state is State.MASTER, down + SETTLE, "second preempts")
        wait_until(lambda: first.state is State.BACKUP, SETTLE, "first backs off")
        wait_until(lambda: has_address(d2, VIP) and not has_address(d1, VIP), 1, "VIP")

        in2.loop.call_soon_threadsafe(second.set_fault, "check exchange", True)
        took = wait_until(lambda: first.state is State.MASTER, SETTLE, "first takes over")
        assert took < first.machine.skew_time + SETTLE
        assert second.state is State.FAULT and second.faults == {"check exchange"}
        assert not has_address(d2, VIP)
        in2.loop.call_soon_threadsafe(second.set_fault, "check exchange", False)
        wait_until(lambda: second.state is State.BACKUP, SETTLE, "second recovers")
        assert second.faults == frozenset()


def test_instance_on_its_own_thread(topology: Topology) -> None:
    """``InstanceThread``: the instance runs on a loop of its own (in the caller's namespace),
    state changes come back on the owner's loop, fault input crosses over, stop hands over."""
    d1, d2 = lan(topology, "d1", "d2")
    seen: list[tuple[State, str]] = []
    low = Instance(config(2, 100, 3, 0.1), "eth0")

    def on_state(state: State) -> None:
        seen.append((state, threading.current_thread().name))

    with NamespaceLoop(d1) as in1, NamespaceLoop(d2) as in2, running(in2, low):
        high = InstanceThread(Instance(config(1, 150, 3, 0.1), "eth0"), on_state=on_state)
        in1.run(high.start(), timeout=10)
        try:
            wait_until(lambda: high.state is State.MASTER, 1 + SETTLE, "thread's master")
            wait_until(lambda: has_address(d1, VIP), 1, "VIP on d1")
            high.set_fault("test", True)
            wait_until(lambda: low.state is State.MASTER, low.machine.skew_time + SETTLE, "d2")
            high.set_fault("test", False)
            wait_until(lambda: high.state is State.BACKUP, SETTLE, "back as backup")
        finally:
            in1.run(high.stop(), timeout=15)
        assert high._thread is None
        owner = in1._thread.name
        assert seen == [
            (State.BACKUP, owner),
            (State.MASTER, owner),
            (State.FAULT, owner),
            (State.BACKUP, owner),
            (State.INITIALIZE, owner),
        ]
