"""The VRRP instances of the config, run on the daemon's loop, and the director's role.

From ``[[vrrp_instance]]`` the service builds one :class:`vrrp.instance.Instance` each (the
instance removes VIPs a crashed run left behind, then starts as backup), and around them:

- **tracking** (:mod:`vrrp.track`): links named in ``track_interfaces`` (watched with rtnetlink)
  and the healthy real servers of the virtual servers named in ``track_checks``; a verdict is
  fed to the instance as fault reasons (``track ...``) and an effective priority;
- **sync groups** (:mod:`vrrp.group`): holds (fault reason ``group NAME``) and demotes;
- **notify hooks** (:mod:`director.notify`) on every instance and group state change;
- **the role**: the state of ``[sync_daemon].instance`` (instance or group) if given, else master
  when any instance is master, fault when all are in fault, else backup. It is published through
  ``publish`` (``RoleBroadcast.publish``) from one task, latest role first: a slow follower
  never holds up the VRRP state machines.

Reload: an instance whose VRRP settings are unchanged keeps running in its state (its hooks and
tracking are updated in place); a changed one is stopped (priority 0) and started again; a
removed one is stopped, which drops its VIPs.

Timing (``thread``, the default): each instance runs on an event loop of its own on its own
thread (:class:`vrrp.thread.InstanceThread`), so an advert never waits behind the health
checks' callbacks on the daemon's loop; state changes still come back on the daemon's loop, and
everything here runs there. The thread asks for ``SCHED_FIFO`` at ``realtime`` (keepalived's
``vrrp_rt_priority``; refused without the right: logged, and it runs as an ordinary thread),
and ``start`` lowers the interpreter's GIL switch interval to ``SWITCH_INTERVAL`` (never raises
it: it only matters while a thread waits for the GIL, so a woken VRRP thread gets it within
that time). ``bench/failover --hog`` measured the deviation of the 100 ms advert interval with
2,000 checks/s and both CPUs busy (p99 / max, one run): 0.39 / 2.2 ms on a realtime thread,
4.9 / 10.6 ms on an ordinary one, 4.6 / 6.2 ms on the daemon's loop; keepalived 2.2.7 (its
defaults) 3.8 / 4.2 ms under the same load.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Protocol

import structlog

from director.config import Config
from director.config.vrrp import VrrpInstance, VrrpSyncGroup
from director.ipvs.model import DestKey, ServiceKey
from director.notify import HookRunner
from director.role import Role
from vrrp.addresses import VirtualAddress as Placement
from vrrp.group import Demote, GroupAction, Hold, SyncGroup
from vrrp.instance import Counters, Instance
from vrrp.link import LinkWatch
from vrrp.machine import Machine
from vrrp.packet import IPAddress
from vrrp.rtnl import AddressSocket, remove_leftovers
from vrrp.table import State
from vrrp.thread import InstanceThread
from vrrp.track import TrackedCheck, TrackedInterface, Tracker, Verdict

log = structlog.get_logger("director")

Health = Mapping[tuple[ServiceKey, DestKey], bool]
Publish = Callable[[Role], Awaitable[None]]
# Keys that only the service uses: changing them does not restart the instance.
IN_PLACE_KEYS = {
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify",
    "track_interfaces",
    "track_checks",
    "accept_only_peers",  # the nftables filter (director.network), not the instance
}
DEMOTE = "demote"
REALTIME = 10  # SCHED_FIFO priority of the VRRP threads (keepalived's vrrp_rt_priority)
SWITCH_INTERVAL = 0.001  # s: the GIL switch interval while VRRP runs on threads
STATE_WORDS = {
    State.MASTER: "MASTER",
    State.BACKUP: "BACKUP",
    State.FAULT: "FAULT",
    State.INITIALIZE: "STOP",
}


def healthy_counts(config: Config, health: Health) -> dict[str, int]:
    """Named virtual server -> real servers up (a server without a verdict counts as up)."""
    counts: dict[str, int] = {}
    for vs in config.virtual_servers:
        if vs.name is None:
            continue
        key = vs.service_key()
        counts[vs.name] = sum(
            1 for rs in vs.real_servers if health.get((key, rs.dest_key(vs)), True)
        )
    return counts


def director_role(
    states: Mapping[str, State], group_states: Mapping[str, State], by: str | None
) -> Role:
    """The role from the instances' (and groups') states; see the module docstring."""
    if by is not None:
        state = states.get(by, group_states.get(by, State.INITIALIZE))
        return _role_of(state)
    if not states:
        return Role.MASTER
    values = list(states.values())
    if State.MASTER in values:
        return Role.MASTER
    if all(s is State.FAULT for s in values):
        return Role.FAULT
    return Role.BACKUP


def _role_of(state: State) -> Role:
    if state is State.MASTER:
        return Role.MASTER
    if state is State.FAULT:
        return Role.FAULT
    return Role.BACKUP


def placements(cfg: VrrpInstance) -> list[Placement]:
    return [Placement(va.ip, va.prefixlen, va.device, va.label) for va in cfg.held_addresses]


def _group_layout(config: Config) -> list[tuple[str, tuple[str, ...]]]:
    return [(g.name, g.instances) for g in config.vrrp_sync_groups]


def _core_settings(cfg: VrrpInstance) -> dict[str, object]:
    return {k: v for k, v in cfg.model_dump().items() if k not in IN_PLACE_KEYS}


async def primary_address(cfg: VrrpInstance) -> IPAddress:
    """The file's ``primary_address``, else the interface's first address of the family that
    is not one of the instance's VIPs (IPv6: its link-local address, as RFC 5798 asks)."""
    if cfg.primary_address is not None:
        return cfg.primary_address
    family = socket.AF_INET6 if cfg.family == 6 else socket.AF_INET
    virtual = {va.ip for va in cfg.held_addresses}
    try:
        index = socket.if_nametoindex(cfg.interface)
    except OSError:
        raise ValueError(f"VRRP instance {cfg.name}: no interface {cfg.interface}") from None
    rtnl = AddressSocket()  # one dump of every address: a plain rtnetlink socket, no pyroute2
    try:
        dumped = rtnl.dump()
    finally:
        rtnl.close()
    candidates: list[IPAddress] = []
    for msg in dumped:
        address = msg.address
        if msg.index != index or address.version != cfg.family or address in virtual:
            continue
        if isinstance(address, IPv6Address) and not address.is_link_local:
            continue
        candidates.append(address)
    if not candidates:
        kind = "a link-local IPv6" if family == socket.AF_INET6 else "an IPv4"
        raise ValueError(
            f"VRRP instance {cfg.name}: {cfg.interface} has no {kind} address to send from "
            "(set primary_address)"
        )
    return candidates[0]


class Running(Protocol):
    """An instance as the service drives it: on the daemon's loop or on a thread of its own."""

    @property
    def machine(self) -> Machine: ...
    @property
    def faults(self) -> frozenset[str]: ...
    def counters(self) -> Counters: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def set_fault(self, reason: str, faulty: bool) -> None: ...
    def set_priority(self, priority: int) -> None: ...


@dataclass
class Member:
    """One running instance and what the service keeps about it."""

    cfg: VrrpInstance
    instance: Running
    tracker: Tracker
    verdict: Verdict
    state: State = State.INITIALIZE
    group: SyncGroup | None = None
    faults: set[str] = field(default_factory=set)  # the tracking reasons fed to the instance


def _tracker(cfg: VrrpInstance) -> Tracker:
    """The instance's own interface is tracked too (fault while down), as keepalived does."""
    listed = [TrackedInterface(t.interface, t.weight) for t in cfg.track_interfaces]
    own = (
        [] if cfg.interface in {t.interface for t in listed} else [TrackedInterface(cfg.interface)]
    )
    return Tracker(
        cfg.priority,
        own + listed,
        [TrackedCheck(t.virtual_server, t.quorum, t.weight) for t in cfg.track_checks],
    )


class VrrpService:
    def __init__(
        self,
        config: Config,
        publish: Publish,
        *,
        hooks: HookRunner | None = None,
        health: Callable[[], Health] = dict,
        thread: bool = True,
        realtime: int | None = REALTIME,
    ) -> None:
        """``thread``: each instance on a loop and thread of its own (see the module doc);
        False: on the caller's loop. ``realtime``: the threads' SCHED_FIFO priority, None for
        none."""
        self.config = config
        self.thread = thread
        self.realtime = realtime
        self.publish = publish
        self.hooks = hooks or HookRunner()
        self.health = health
        self.members: dict[str, Member] = {}
        self.groups: dict[str, SyncGroup] = {}
        self.group_configs: dict[str, VrrpSyncGroup] = {}
        self.links: dict[str, bool] = {}
        self._watches: dict[str, LinkWatch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._published: Role | None = None
        self._role_wanted = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._stopping = False
        self._reloading = asyncio.Lock()

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        states = {name: m.state for name, m in self.members.items()}
        groups = {name: g.state for name, g in self.groups.items()}
        by = self.config.sync_daemon.instance if self.config.sync_daemon else None
        return director_role(states, groups, by)

    async def start(self) -> None:
        """Start every instance (a failure stops those started and raises), then publish the
        first role and wait for its followers (without instances: master)."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._start_members(self.config.vrrp_instances)
        except BaseException:
            await self.stop()
            raise
        self._build_groups(self.config)
        self._published = self.role
        await self.publish(self._published)
        self._publisher = self._loop.create_task(self._publish_roles(), name="vrrp-role")
        self._role_changed()

    async def stop(self) -> None:
        """Stop every instance: a master sends priority 0 and drops its VIPs."""
        self._stopping = True
        await self._stop_members(list(self.members))
        self._release_groups()
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()
        if self._publisher is not None:
            self._publisher.cancel()
            self._role_wanted.set()  # a cancellation lost in a follower still ends the loop
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.hooks.wait()

    async def reload(self, config: Config) -> None:
        """Apply ``config``'s instances; reloads run one at a time (the application object
        serialises them already; this keeps the service right on its own)."""
        async with self._reloading:
            await self._reload(config)

    async def _reload(self, config: Config) -> None:
        old = {vi.name: vi for vi in self.config.vrrp_instances}
        new = {vi.name: vi for vi in config.vrrp_instances}
        restart = [n for n in old if n in new and _core_settings(old[n]) != _core_settings(new[n])]
        removed = [n for n in old if n not in new]
        grouped = {m for g in self.groups.values() for m in g.members}
        regroup = _group_layout(self.config) != _group_layout(config) or bool(
            grouped & {*removed, *restart}
        )
        if regroup:  # else the groups keep their holds (no member flaps out of fault)
            self._release_groups()
        self.config = config
        self.group_configs = {g.name: g for g in config.vrrp_sync_groups}
        await self._stop_members([*removed, *restart])
        for name, cfg in new.items():
            member = self.members.get(name)
            if member is not None and member.cfg != cfg:
                member.cfg = cfg
                member.tracker = _tracker(cfg)
                for iface in member.tracker.watched_interfaces:
                    self._watch(iface, asyncio.get_running_loop())
        await self._start_members([new[n] for n in new if n not in self.members])
        self._close_unused_watches()
        if regroup:
            self._build_groups(config)
        self.health_changed()
        self._role_changed()
        if removed or restart:
            log.info("vrrp_reloaded", restarted=restart, removed=removed)

    # -- instances ----------------------------------------------------------------------------

    async def _start_members(self, configs: Iterable[VrrpInstance]) -> None:
        loop = asyncio.get_running_loop()
        built: list[Member] = []
        for cfg in configs:
            primary = await primary_address(cfg)
            core = cfg.vrrp_config(primary)
            on_state = functools.partial(self._on_state, cfg.name)
            core_instance = Instance(
                core,
                cfg.interface,
                peers=cfg.unicast_peers,
                virtual=placements(cfg),
                on_state=None if self.thread else on_state,
                track_interface=False,  # the service tracks it, with the other links
                name=cfg.name,
            )
            instance: Running = (
                InstanceThread(core_instance, on_state, realtime=self.realtime)
                if self.thread
                else core_instance
            )
            tracker = _tracker(cfg)
            for iface in tracker.watched_interfaces:
                self._watch(iface, loop)
            verdict = tracker.evaluate(self.links, self._healthy())
            member = Member(cfg, instance, tracker, Verdict(frozenset(), cfg.priority))
            self._apply_verdict(member, verdict)
            built.append(member)
        if self.thread and built:  # process-wide; see the module doc
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        for member in built:
            self.members[member.cfg.name] = member  # before start: its first state arrives then
            try:
                await member.instance.start()
            except BaseException:
                del self.members[member.cfg.name]
                raise
            log.info(
                "vrrp_started",
                instance=member.cfg.name,
                interface=member.cfg.interface,
                vrid=member.cfg.vrid,
                priority=member.verdict.priority,
            )

    async def _stop_members(self, names: Sequence[str]) -> None:
        members = [self.members.pop(n) for n in names if n in self.members]
        results = await asyncio.gather(
            *(m.instance.stop() for m in members), return_exceptions=True
        )
        for m, result in zip(members, results, strict=True):
            if isinstance(result, BaseException):
                log.error("vrrp_stop_failed", instance=m.cfg.name, error=str(result))
            self._notify_instance(m, State.INITIALIZE)

    def _on_state(self, name: str, state: State) -> None:
        member = self.members.get(name)
        if member is None:
            return
        member.state = state
        group = member.group
        demoting = group is not None and group.demoting(name)
        if not (demoting and state is State.FAULT):
            self._notify_instance(member, state)
        if group is not None:
            before = group.state
            self._perform(group.observe(name, state))
            self._perform(group.faults(self._own_faults(group)))
            if group.state is not before:
                self._notify_group(group, group.state)
        self._role_changed()

    # -- tracking -----------------------------------------------------------------------------

    def _watch(self, interface: str, loop: asyncio.AbstractEventLoop) -> None:
        if interface in self._watches:
            return
        watch = LinkWatch(interface, functools.partial(self._link_changed, interface))
        try:
            self.links[interface] = watch.open(loop)
        except OSError as exc:
            log.error("track_interface_missing", interface=interface, error=str(exc))
            self.links[interface] = False
            return
        self._watches[interface] = watch

    def _close_unused_watches(self) -> None:
        wanted = {i for m in self.members.values() for i in m.tracker.watched_interfaces}
        for name in list(self._watches):
            if name not in wanted:
                self._watches.pop(name).close()
                self.links.pop(name, None)

    def _link_changed(self, interface: str, running: bool) -> None:
        log.info("track_interface", interface=interface, running=running)
        self.links[interface] = running
        self._reevaluate()

    def health_changed(self) -> None:
        """The health checks changed a verdict: re-evaluate ``track_checks``."""
        self._reevaluate()

    def _healthy(self) -> dict[str, int]:
        return healthy_counts(self.config, self.health())

    def _reevaluate(self) -> None:
        healthy = self._healthy()
        for member in self.members.values():
            self._apply_verdict(member, member.tracker.evaluate(self.links, healthy))
        for group in self.groups.values():
            self._perform(group.faults(self._own_faults(group)))

    def _apply_verdict(self, member: Member, verdict: Verdict) -> None:
        previous, member.verdict = member.verdict, verdict
        wanted = {f"track {reason}" for reason in verdict.faults}
        for reason in sorted(wanted - member.faults):
            member.instance.set_fault(reason, True)
        for reason in sorted(member.faults - wanted):
            member.instance.set_fault(reason, False)
        member.faults = wanted
        if verdict.priority != previous.priority or verdict.lowered_by != previous.lowered_by:
            if verdict.lowered_by:
                log.info(
                    "vrrp_priority",
                    instance=member.cfg.name,
                    priority=verdict.priority,
                    lowered_by=list(verdict.lowered_by),
                )
            member.instance.set_priority(verdict.priority)

    # -- sync groups --------------------------------------------------------------------------

    def _build_groups(self, config: Config) -> None:
        self.groups = {}
        self.group_configs = {g.name: g for g in config.vrrp_sync_groups}
        for gc in config.vrrp_sync_groups:
            group = SyncGroup(gc.name, gc.instances)
            self.groups[gc.name] = group
            for name in gc.instances:
                member = self.members.get(name)
                if member is not None:
                    member.group = group
                    group.states[name] = member.state
            self._perform(group.faults(self._own_faults(group)))

    def _release_groups(self) -> None:
        for group in self.groups.values():
            for name in group.members:
                member = self.members.get(name)
                if member is not None:
                    member.group = None
                    if group.held:
                        member.instance.set_fault(f"group {group.name}", False)
        self.groups = {}

    def _own_faults(self, group: SyncGroup) -> dict[str, bool]:
        """Member -> has a fault of its own: its tracking reasons, as fed to the instance (read
        here, not back from the instance, which may apply them later on its own thread)."""
        return {
            name: bool(member.faults)
            for name in group.members
            if (member := self.members.get(name)) is not None
        }

    def _perform(self, actions: list[GroupAction]) -> None:
        for action in actions:
            member = self.members.get(action.member)
            if member is None or member.group is None:
                continue
            if isinstance(action, Hold):
                log.info(
                    "sync_group_hold",
                    group=member.group.name,
                    instance=action.member,
                    hold=action.on,
                )
                member.instance.set_fault(f"group {member.group.name}", action.on)
            elif isinstance(action, Demote):
                log.info("sync_group_demote", group=member.group.name, instance=action.member)
                member.instance.set_fault(DEMOTE, True)
                member.instance.set_fault(DEMOTE, False)

    # -- notify hooks and the role ------------------------------------------------------------

    def _notify_instance(self, member: Member, state: State) -> None:
        cfg = member.cfg
        self._hooks(
            cfg.name,
            cfg,
            state,
            ["INSTANCE", cfg.name, STATE_WORDS[state], str(member.instance.machine.priority)],
        )

    def _notify_group(self, group: SyncGroup, state: State) -> None:
        gc = self.group_configs.get(group.name)
        if gc is not None:
            self._hooks(f"group {group.name}", gc, state, ["GROUP", group.name, STATE_WORDS[state]])

    def _hooks(
        self, key: str, cfg: VrrpInstance | VrrpSyncGroup, state: State, tail: list[str]
    ) -> None:
        specific = {
            State.MASTER: cfg.notify_master,
            State.BACKUP: cfg.notify_backup,
            State.FAULT: cfg.notify_fault,
        }.get(state)
        if specific:
            self.hooks.run(key, specific)
        if cfg.notify:
            self.hooks.run(key, [*cfg.notify, *tail])

    def _role_changed(self) -> None:
        if not self._stopping:
            self._role_wanted.set()

    async def _publish_roles(self) -> None:
        while not self._stopping:
            await self._role_wanted.wait()
            self._role_wanted.clear()
            if self._stopping:
                return
            role = self.role
            if role is not self._published:
                self._published = role
                await self.publish(role)

    # -- status -------------------------------------------------------------------------------

    def summary(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for name, m in self.members.items():
            counters = m.instance.counters()
            master = m.instance.machine.master
            entry: dict[str, object] = {
                "name": name,
                "interface": m.cfg.interface,
                "vrid": m.cfg.vrid,
                "state": "init" if m.state is State.INITIALIZE else str(m.state),
                "priority": m.instance.machine.priority,
                "transitions": sum(counters.transitions.values()),
                "adverts_sent": counters.adverts_sent,
                "adverts_received": counters.adverts_received,
                "adverts_dropped": {str(k): v for k, v in counters.drops.items()},
                "faults": sorted(m.instance.faults),
                "answers_suppressed": counters.answers_suppressed,
                "vips_restored": counters.vips_restored,
            }
            if m.group is not None:
                entry["group"] = m.group.name
            if master is not None:
                entry["peer"] = str(master[0])
            elif m.cfg.unicast_peers:
                entry["peers"] = [str(p) for p in m.cfg.unicast_peers]
            out.append(entry)
        return out


def placed_addresses(config: Config) -> list[tuple[str, IPAddress]]:
    """Every (device, address) the config's VRRP instances may place."""
    return [
        (va.device or cfg.interface, va.ip)
        for cfg in config.vrrp_instances
        for va in cfg.held_addresses
    ]


def placed_interfaces(config: Config) -> list[tuple[str, str]]:
    """Every (device, "address/prefix") the config's VRRP instances may place."""
    return [
        (va.device or cfg.interface, f"{va.ip}/{va.prefixlen}")
        for cfg in config.vrrp_instances
        for va in cfg.held_addresses
    ]


async def cleanup(config: Config) -> list[str]:
    """Remove every configured VIP from its device: the first act of a start (before IPVS,
    sysctls or checks) and ``directord --cleanup`` (the unit's ``ExecStopPost``), after a crash
    left them behind. One rtnetlink socket and one address dump for all instances, so it takes
    about a millisecond whatever the config; needs neither ip_vs nor pyroute2. A device that
    does not exist is skipped; a VIP the kernel refuses to remove is logged
    (``vips_leftover_not_removed``) and the others still go. Returns the addresses removed, as
    text, in config order. ``OSError`` only when rtnetlink itself cannot be used."""
    wanted = placed_addresses(config)
    # Blocking, but the kernel answers each request at once; on the caller's thread, so in
    # its network namespace (a worker thread may have been started in another one).
    removed, errors = remove_leftovers(wanted)
    for error in errors:
        log.error("vips_leftover_not_removed", error=error)
    return [str(address) for _, address in removed]
