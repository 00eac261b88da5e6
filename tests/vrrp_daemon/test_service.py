"""Two VRRP services (not full directord: this host has no ip_vs) in namespaces on two bridges.

Each director has eth0 on br0 (198.18.0.0/24) and eth1 on br1 (198.18.1.0/24); VRRPv3 at 100 ms
adverts. Real links go down, real adverts and VIPs move, real hook programs write to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from director.config import Config, parse_config
from director.ipvs.model import DestKey, ServiceKey
from director.role import Role
from director.vrrp_service import REALTIME, SWITCH_INTERVAL, VrrpService
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io.lab import has_address, lan, link_local, wait_until
from vrrp.table import State

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

VIP0 = IPv4Address("198.18.0.100")
VIP1 = IPv4Address("198.18.1.100")
INTERVAL = 0.1
SETTLE = 1.0  # scheduling slack on a shared 2-core machine, on top of the protocol's times
MASTER_DOWN = 3 * INTERVAL + INTERVAL  # 3 intervals + at most one interval of skew


def two_lans(topo: Topology, *labels: str) -> list[Namespace]:
    switch = topo.namespace("sw")
    for br in ("br0", "br1"):
        switch.bridge(br)
        switch.ip("link", "set", "dev", br, "type", "bridge", "mcast_snooping", "0")
    spaces = []
    for n, label in enumerate(labels, start=1):
        ns = topo.namespace(label)
        topo.attach(ns, "eth0", switch, "br0", addr=f"198.18.0.{n}/24")
        topo.attach(ns, "eth1", switch, "br1", addr=f"198.18.1.{n}/24")
        spaces.append(ns)
    return spaces


def hook(log: Path, *words: str) -> str:
    """A notify argv (TOML) that appends its arguments to ``log``."""
    script = f'echo "$*" >> {shlex.quote(str(log))}'
    return json.dumps(["/bin/sh", "-c", script, "hook", *words])


def instance(name: str, dev: str, vrid: int, priority: int, vip: IPv4Address, *extra: str) -> str:
    lines = [
        "[[vrrp_instance]]",
        f'name = "{name}"',
        f'interface = "{dev}"',
        f"vrid = {vrid}",
        f"priority = {priority}",
        "version = 3",
        f"advert_interval = {INTERVAL}",
        f'virtual_addresses = ["{vip}/24"]',
        "garp_count = 1",
        "garp_repeat_after = 0",
        *extra,
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Director:
    ns: Namespace
    inside: NamespaceLoop
    service: VrrpService
    roles: list[Role] = field(default_factory=list)
    health: dict[tuple[ServiceKey, DestKey], bool] = field(default_factory=dict)

    def states(self) -> tuple[State, ...]:
        return tuple(m.state for m in self.service.members.values())

    def reload(self, text: str) -> None:
        self.inside.run(self.service.reload(parse_config(text)))

    def link(self, dev: str, up: bool) -> None:
        self.ns.ip("link", "set", "dev", dev, "up" if up else "down")


@contextmanager
def running(ns: Namespace, text: str, *, thread: bool = True) -> Iterator[Director]:
    config = parse_config(text)
    with NamespaceLoop(ns) as inside:
        roles: list[Role] = []
        health: dict[tuple[ServiceKey, DestKey], bool] = {}

        async def publish(role: Role) -> None:
            roles.append(role)

        def current() -> Mapping[tuple[ServiceKey, DestKey], bool]:
            return health

        service = VrrpService(config, publish, health=current, thread=thread)
        inside.run(service.start(), timeout=30)
        try:
            yield Director(ns, inside, service, roles, health)
        finally:
            inside.run(service.stop(), timeout=30)


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_sync_group_moves_together_on_one_link_down(topology: Topology, tmp_path: Path) -> None:
    d1ns, d2ns = two_lans(topology, "d1", "d2")
    log1, log2 = tmp_path / "d1.log", tmp_path / "d2.log"

    def config(priority: int, log: Path) -> str:
        notify = f"notify = {hook(log)}"
        return (
            instance("VI_1", "eth0", 51, priority, VIP0, notify)
            + instance("VI_2", "eth1", 52, priority, VIP1, notify)
            + f'[[vrrp_sync_group]]\nname = "G"\ninstances = ["VI_1", "VI_2"]\n{notify}\n'
            + f"notify_master = {hook(log, 'group-master')}\n"
        )

    with running(d1ns, config(150, log1)) as d1, running(d2ns, config(100, log2)) as d2:
        M, B, F = State.MASTER, State.BACKUP, State.FAULT
        wait_until(lambda: d1.states() == (M, M), MASTER_DOWN + SETTLE, "d1 master of both")
        wait_until(lambda: d2.states() == (B, B), SETTLE, "d2 backup of both")
        wait_until(lambda: d1.roles[-1:] == [Role.MASTER], SETTLE, "d1 publishes master")
        assert d2.roles == [Role.BACKUP]
        assert has_address(d1ns, VIP0) and has_address(d1ns, VIP1, "eth1")
        wait_until(lambda: "GROUP G MASTER" in lines(log1), SETTLE, "the group's hooks")
        assert "INSTANCE VI_1 MASTER 150" in lines(log1)
        assert lines(log1).index("group-master") < lines(log1).index("GROUP G MASTER")

        # d1's eth1 goes down: VI_2 faults on its own, the group holds VI_1 in fault too
        d1.link("eth1", False)
        took = wait_until(lambda: d2.states() == (M, M), MASTER_DOWN + SETTLE, "d2 takes both")
        print(f"group moved in {took:.3f} s")
        assert d1.states() == (F, F)
        wait_until(lambda: d1.roles[-1:] == [Role.FAULT], SETTLE, "d1 publishes fault")
        wait_until(lambda: d2.roles[-1:] == [Role.MASTER], SETTLE, "d2 publishes master")
        assert not has_address(d1ns, VIP0)
        assert has_address(d2ns, VIP0) and has_address(d2ns, VIP1, "eth1")
        wait_until(lambda: "GROUP G FAULT" in lines(log1), SETTLE, "the group's fault hook")
        wait_until(lambda: "INSTANCE VI_1 FAULT 150" in lines(log1), SETTLE, "VI_1's hook")
        wait_until(lambda: "GROUP G MASTER" in lines(log2), SETTLE, "d2's group hook")
        assert d1.service.summary()[0]["faults"] == ["group G"]
        # a reload while the group is held keeps it held: nobody flaps out of fault
        seen = len(lines(log1))
        d1.reload(config(150, log1))
        time.sleep(0.3)
        assert d1.states() == (F, F) and len(lines(log1)) == seen

        # the link comes back: both return to d1 (preempt), together
        d1.link("eth1", True)
        wait_until(lambda: d1.states() == (M, M), MASTER_DOWN + SETTLE, "d1 back as master")
        wait_until(lambda: d2.states() == (B, B), SETTLE, "d2 back to backup")
        wait_until(lambda: d1.roles[-1:] == [Role.MASTER], SETTLE, "d1 publishes master again")
        wait_until(lambda: has_address(d1ns, VIP1, "eth1"), SETTLE, "VIP1 back on d1")
        assert not has_address(d2ns, VIP1, "eth1")


@pytest.mark.parametrize("thread", [True, False], ids=["vrrp-thread", "daemon-loop"])
def test_tracking_interfaces_and_checks_and_reload(
    topology: Topology, tmp_path: Path, thread: bool
) -> None:
    d1ns, d2ns = two_lans(topology, "d1", "d2")
    service = (
        '[[virtual_server]]\nname = "web"\nprotocol = "tcp"\naddress = "198.18.0.100"\n'
        'port = 80\n  [[virtual_server.real_server]]\n  address = "198.18.1.11"\n'
    )
    vs = parse_config(service).virtual_servers[0]
    key, dest = vs.service_key(), vs.real_servers[0].dest_key(vs)

    def config(track: str) -> str:
        return service + instance("VI_1", "eth0", 51, 150, VIP0, track)

    weighted = 'track_interfaces = [{ interface = "eth1", weight = 60 }]'
    with (
        running(d1ns, config(weighted), thread=thread) as d1,
        running(d2ns, service + instance("VI_1", "eth0", 51, 100, VIP0)) as d2,
    ):
        M, B, F = State.MASTER, State.BACKUP, State.FAULT
        wait_until(lambda: d1.states() == (M,) and d2.states() == (B,), 2 + SETTLE, "election")
        # eth1 down with weight 60: 150 - 60 = 90 < 100, so d2 preempts
        d1.link("eth1", False)
        wait_until(lambda: d2.states() == (M,), MASTER_DOWN + SETTLE, "d2 preempts")
        wait_until(lambda: d1.states() == (B,), SETTLE, "d1 backs off")
        assert d1.service.summary()[0]["priority"] == 90
        d1.link("eth1", True)
        wait_until(lambda: d1.states() == (M,), MASTER_DOWN + SETTLE, "d1 preempts back")
        assert d1.service.summary()[0]["priority"] == 150

        # reload: tracking changes in place (no restart: the instance object stays)
        before = d1.service.members["VI_1"].instance
        quorum = 'track_checks = [{ virtual_server = "web", quorum = 1 }]'
        d1.reload(config(quorum))
        assert d1.service.members["VI_1"].instance is before
        assert d1.states() == (M,)
        # a newly tracked interface that is up changes nothing
        d1.reload(config(quorum + '\ntrack_interfaces = [{ interface = "eth1" }]'))
        assert d1.service.members["VI_1"].instance is before
        time.sleep(0.3)
        assert d1.states() == (M,) and d1.service.summary()[0]["faults"] == []
        # the check fails: weight 0 -> fault, d2 takes over; it recovers -> d1 preempts back
        d1.health[(key, dest)] = False
        d1.inside.loop.call_soon_threadsafe(d1.service.health_changed)
        wait_until(lambda: d1.states() == (F,), SETTLE, "d1 in fault")
        wait_until(lambda: d2.states() == (M,), INTERVAL + SETTLE, "d2 master")
        d1.health[(key, dest)] = True
        d1.inside.loop.call_soon_threadsafe(d1.service.health_changed)
        wait_until(lambda: d1.states() == (M,), MASTER_DOWN + SETTLE, "d1 master again")

        # reload with another priority restarts the instance; removing it drops its VIP
        d1.reload(service + instance("VI_1", "eth0", 51, 120, VIP0))
        assert d1.service.members["VI_1"].instance is not before
        wait_until(lambda: d1.states() == (M,), MASTER_DOWN + SETTLE, "restarted d1 master")
        assert d1.service.summary()[0]["priority"] == 120
        d1.reload(service)
        assert d1.service.members == {}
        assert not has_address(d1ns, VIP0)
        wait_until(lambda: d2.states() == (M,), INTERVAL + SETTLE, "d2 master after removal")
        wait_until(lambda: d1.roles[-1:] == [Role.MASTER], SETTLE, "no instance: master")


def test_missing_interface_is_a_clear_error(topology: Topology) -> None:
    (d1ns,) = two_lans(topology, "d1")
    config: Config = parse_config(instance("VI_1", "nosuch0", 51, 100, VIP0))

    async def publish(role: Role) -> None:
        pass

    with NamespaceLoop(d1ns) as inside:
        service = VrrpService(config, publish)
        with pytest.raises(ValueError, match="VRRP instance VI_1: no interface nosuch0"):
            inside.run(service.start(), timeout=30)
        assert service.members == {}
        # with a primary address the instance itself finds the interface missing
        given = parse_config(
            instance("VI_1", "nosuch0", 51, 100, VIP0, 'primary_address = "198.18.0.1"')
        )
        service = VrrpService(given, publish)
        with pytest.raises(OSError, match="nosuch0"):
            inside.run(service.start(), timeout=30)
        assert service.members == {}


def test_a_member_outbid_takes_the_group_along(topology: Topology, tmp_path: Path) -> None:
    """d2's VI_2 gets a higher priority: d1's VI_2 goes backup and demotes d1's VI_1, whose
    priority 0 advert hands VI_1 to d2 at once (nopreempt keeps it from taking it back)."""
    d1ns, d2ns = two_lans(topology, "d1", "d2")
    log1 = tmp_path / "d1.log"
    group = '[[vrrp_sync_group]]\nname = "G"\ninstances = ["VI_1", "VI_2"]\n'
    notify = f"notify = {hook(log1)}"
    d1_config = (
        instance("VI_1", "eth0", 51, 150, VIP0, "preempt = false", notify)
        + instance("VI_2", "eth1", 52, 150, VIP1, notify)
        + group
    )

    def d2_config(priority: int) -> str:
        return (
            instance("VI_1", "eth0", 51, 100, VIP0)
            + instance("VI_2", "eth1", 52, priority, VIP1)
            + group
        )

    M, B = State.MASTER, State.BACKUP
    with running(d1ns, d1_config) as d1:
        wait_until(lambda: d1.states() == (M, M), MASTER_DOWN + SETTLE, "d1 master of both")
        with running(d2ns, d2_config(100)) as d2:
            wait_until(lambda: d2.states() == (B, B), MASTER_DOWN + SETTLE, "d2 backup")
            d2.reload(d2_config(200))
            took = wait_until(
                lambda: d2.states() == (M, M), 2 * MASTER_DOWN + SETTLE, "d2 master of both"
            )
            print(f"group followed the outbid member in {took:.3f} s")
            wait_until(lambda: d1.states() == (B, B), SETTLE, "d1 backup of both")
            assert has_address(d2ns, VIP0) and not has_address(d1ns, VIP0)
            wait_until(lambda: "INSTANCE VI_1 BACKUP 150" in lines(log1)[2:], SETTLE, "hook")
            # the demote passed through fault, which is neither reported nor a group fault
            assert "INSTANCE VI_1 FAULT 150" not in lines(log1)
            assert d1.roles[-1] is Role.BACKUP and Role.FAULT not in d1.roles
            assert d1.service.summary()[0]["faults"] == []


def test_ipv6_instance_sends_from_the_link_local_address(topology: Topology) -> None:
    d1ns, d2ns = lan(topology, "d1", "d2", ipv6=True)
    vip6 = IPv6Address("2001:db8::100")

    def config(priority: int) -> str:
        return (
            f'[[vrrp_instance]]\nname = "V6"\ninterface = "eth0"\nvrid = 61\n'
            f"priority = {priority}\nversion = 3\nadvert_interval = {INTERVAL}\n"
            f'virtual_addresses = ["{vip6}/64"]\n'
        )

    M, B = State.MASTER, State.BACKUP
    with running(d1ns, config(150)) as d1, running(d2ns, config(100)) as d2:
        wait_until(lambda: d1.states() == (M,), MASTER_DOWN + SETTLE, "d1 master")
        wait_until(lambda: d2.states() == (B,), SETTLE, "d2 backup")
        assert has_address(d1ns, vip6) and not has_address(d2ns, vip6)
        peer = d2.service.summary()[0]["peer"]
        assert peer == str(link_local(d1ns))  # the primary address found on the interface
        d1.inside.run(d1.service.stop(), timeout=30)
        wait_until(lambda: d2.states() == (M,), INTERVAL + SETTLE, "d2 takes over")
        assert has_address(d2ns, vip6) and not has_address(d1ns, vip6)


def test_killed_master_leaves_its_vip_and_a_restart_removes_it(
    topology: Topology, tmp_path: Path
) -> None:
    """SIGKILL: no priority 0, the VIP stays on the dead master's interface (as keepalived's
    does); the backup takes over after Master_Down_Interval, and the next start removes the
    leftover at once, before it preempts back."""
    d1ns, d2ns = two_lans(topology, "d1", "d2")
    path = tmp_path / "d1.toml"
    path.write_text(instance("VI_1", "eth0", 51, 150, VIP0))

    def serve() -> Background:
        proc = d1ns.spawn(sys.executable, "-m", "tests.vrrp_daemon.serve", str(path))
        wait_until(lambda: "started" in proc.output(), 30, "the service process")
        return proc

    M, B = State.MASTER, State.BACKUP
    with running(d2ns, instance("VI_1", "eth0", 51, 100, VIP0)) as d2:
        first = serve()
        wait_until(lambda: has_address(d1ns, VIP0), MASTER_DOWN + SETTLE, "VIP on d1")
        wait_until(lambda: d2.states() == (B,), SETTLE, "d2 backup")
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        took = wait_until(lambda: d2.states() == (M,), MASTER_DOWN + SETTLE, "d2 takes over")
        print(f"backup master {took:.3f} s after SIGKILL")
        wait_until(lambda: has_address(d2ns, VIP0), SETTLE, "VIP on d2")
        assert has_address(d1ns, VIP0)  # left behind by the killed process
        second = serve()
        assert not has_address(d1ns, VIP0)  # removed before the instance started
        assert "role backup" in second.output()
        wait_until(lambda: has_address(d1ns, VIP0), MASTER_DOWN + SETTLE, "d1 preempts back")
        wait_until(lambda: d2.states() == (B,), SETTLE, "d2 backup again")
        second.stop(timeout=10)
        wait_until(lambda: d2.states() == (M,), INTERVAL + SETTLE, "d2 after a clean stop")
        assert not has_address(d1ns, VIP0)


def test_instances_run_on_realtime_threads_and_report_on_the_daemons_loop(
    topology: Topology,
) -> None:
    (d1ns,) = two_lans(topology, "d1")
    with running(d1ns, instance("VI_1", "eth0", 51, 150, VIP0)) as d1:
        wait_until(lambda: d1.states() == (State.MASTER,), MASTER_DOWN + SETTLE, "master")
        (vrrp,) = [t for t in threading.enumerate() if t.name == "vrrp-51"]
        assert vrrp.native_id is not None
        assert os.sched_getscheduler(vrrp.native_id) == os.SCHED_FIFO
        assert os.sched_getparam(vrrp.native_id).sched_priority == REALTIME
        assert sys.getswitchinterval() <= SWITCH_INTERVAL
        wait_until(lambda: d1.roles[-1:] == [Role.MASTER], SETTLE, "published on the loop")
        summary = d1.service.summary()[0]
        assert summary["state"] == "master" and summary["priority"] == 150
        assert summary["answers_suppressed"] == 0 and summary["vips_restored"] == 0
    assert not [t for t in threading.enumerate() if t.name == "vrrp-51"]


def test_a_stop_ends_even_when_a_role_follower_swallowed_its_cancellation(
    topology: Topology,
) -> None:
    """On Python 3.11, ``asyncio.wait_for`` returns the result of what it waited for when that
    ends as its caller is cancelled: a stop that cancelled a role change whose nft run was
    killed at the same moment (a Ctrl-C reaches the whole process group) lost the cancellation,
    and the stop waited for the role publisher forever (seen in bench.startup's guest). Here a
    follower swallows the cancellation outright: the stop must still end."""
    (ns,) = two_lans(topology, "d1")
    entered = threading.Event()

    async def publish(role: Role) -> None:
        if role is Role.MASTER:
            entered.set()
            # what wait_for did with the cancellation in that race
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    config = parse_config(instance("VI_1", "eth0", 51, 200, VIP0))
    with NamespaceLoop(ns) as inside:
        service = VrrpService(config, publish)
        inside.run(service.start(), timeout=30)
        try:
            assert entered.wait(10), "never became master"
        finally:
            began = time.monotonic()
            inside.run(service.stop(), timeout=15)
        assert time.monotonic() - began < 10
