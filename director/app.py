"""The application object: one director, built from its config and what the world gives it.

:class:`Director` is the whole running daemon - IPVS engine, health checks, VRRP, network rules,
sync daemon, metrics, control socket - wired once, here, with every collaborator passed to its
constructor. What touches the outside world comes in through :class:`World` (the kernel, the
state directory, nftables, routes, systemd), so tests build a director on the in-memory kernel
in a network namespace, and :mod:`director.daemon` builds the production one.

Life cycle: :meth:`Director.start` (in order: leftover VIPs removed, state files read, IPVS
opened when the config needs it, the table synced, checks, VRRP, listeners; a failure at any
step undoes the steps before it and raises :class:`StartError`), :meth:`Director.serve` (applies
:mod:`director.intents` one at a time until a ``Stop``), :meth:`Director.stop` (the steps undone
in reverse: listeners, VRRP with priority 0, sync daemon, checks, network rules when the table
is not kept, IPVS).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import hashlib
import os
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from checks import identity
from checks.identity import RunAs
from checks.model import HealthChanged, ProbeResult
from director import __version__, early
from director.agents import AgentKey, FeedbackAgents, agent_files
from director.bgp.service import BgpService
from director.config import Config, ConfigError
from director.config.peer import KeyFileError
from director.control.commands import handlers
from director.control.protocol import ControlError, RequestError, Streamed
from director.control.server import ControlServer
from director.engine import Engine
from director.events import Events
from director.health import HealthChecks, ProbeJob, ProbeObserver, summarize
from director.heap import YoungCollector, trim
from director.http import MetricsServer
from director.intents import (
    Drain,
    DrainDirector,
    Enable,
    EnableDirector,
    HealthSync,
    Intent,
    Intents,
    Pending,
    RefreshStats,
    Reload,
    ReloadRejected,
    Resync,
    Stop,
)
from director.ipvs.kernel import KernelError
from director.ipvs.ondemand import OnDemandIPVS
from director.limits import FdBudget, fd_budget
from director.maintenance import Maintenance
from director.metrics import Metrics, Sources
from director.network import NetworkRules, NftError, RouteError
from director.network.nft import Nft
from director.network.routes import PolicyRoutes
from director.notify import HookRunner
from director.offload import forked
from director.peer.service import PeerCheck, control_handlers, load_key, peer_connections
from director.reconcile.owned import OwnedStore
from director.role import Role, RoleBroadcast
from director.statefile import write_atomic
from director.status import StatsPair, StatusInputs, build_status, encode_status
from director.sync_daemon import SyncDaemonFollower
from director.sysctl import PROC_SYS
from director.vrrp_service import VrrpService, placed_addresses, placed_interfaces

log = structlog.get_logger("director")


class Lifecycle(Protocol):
    """How the director tells its supervisor what it is doing (systemd: sd_notify)."""

    def ready(self, status: str) -> None: ...

    def reloading(self) -> None: ...

    def stopping(self) -> None: ...

    def status(self, text: str) -> None: ...

    def watchdog(self) -> None: ...

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, None when nobody watches."""


class Quiet:
    """A :class:`Lifecycle` that tells nobody (tests, a director started by hand)."""

    def ready(self, status: str) -> None:
        pass

    def reloading(self) -> None:
        pass

    def stopping(self) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def watchdog(self) -> None:
        pass

    def watchdog_interval(self) -> float | None:
        return None


RemoveLeftovers = Callable[[Config], Awaitable[list[str]]]


@dataclass(frozen=True)
class World:
    """Everything outside the process a director uses; nothing here is opened yet."""

    config_path: Path
    state_dir: Path
    loader: Callable[[Path], Config]
    kernel: OnDemandIPVS  # the IPVS table
    sync_kernel: OnDemandIPVS  # the sync daemon's own netlink socket
    owned: OwnedStore
    remove_leftovers: RemoveLeftovers  # VIPs a crashed run left on the interfaces
    nofile: int  # the open-file limit in force (see director.limits)
    lifecycle: Lifecycle = dataclasses.field(default_factory=Quiet)
    nft: Nft | None = None
    routes: PolicyRoutes | None = None
    sysctl_root: Path = PROC_SYS
    rules_sysctl_root: Path | None = PROC_SYS  # None: the rules never write sysctls (tests)
    # The listeners' caps, and where the control socket and HTTP listener are (tests: free ones).
    control_socket: Path | None = None  # default: the config's
    metrics_address: str | None = None  # default: the config's


class StartError(Exception):
    """A start step failed; the steps before it were undone. The message says which and why."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        super().__init__(f"{step}: {cause}")


def needs_ipvs(config: Config) -> bool:
    return bool(config.virtual_servers) or config.sync_daemon is not None


STOPPING = "directord is stopping; nothing was changed"
LOCAL_FAULT_SHOWN = 600.0  # seconds a probe's local failure stays a director fault
CONTROL_CONNECTIONS = 8
HTTP_CONNECTIONS = 16
BGP_COALESCE = 0.05  # seconds: first probe results reach BGP at most this late


def run_as(config: Config) -> RunAs | None:
    """Whom scripts and notify hooks run as (``[daemon] script_user``), None: the daemon's user.
    The config was validated, so the user existed then; if it has gone since, that is an error
    (a hook must never run as root by accident)."""
    spec = config.daemon.script_user
    return identity.resolve(spec) if spec else None


def files_budget(config: Config, nofile: int) -> FdBudget:
    """The open files ``config`` needs and how many probes fit under ``nofile``."""
    return fd_budget(
        nofile,
        max_probes=config.daemon.max_concurrent_probes,
        listeners=CONTROL_CONNECTIONS
        + HTTP_CONNECTIONS
        + agent_files(config)
        + peer_connections(config),
        vrrp_instances=len(config.vrrp_instances),
    )


class Director:
    """One director. ``intents`` is the queue it serves: the daemon's signal handlers and
    timers put into it, and so do the control commands (through :meth:`ask`)."""

    def __init__(self, config: Config, world: World, intents: Intents) -> None:
        self.config = config
        self.world = world
        self.intents = intents
        self.budget = files_budget(config, world.nofile)
        self.maintenance = Maintenance(world.state_dir / "maintenance.json")
        self.metrics = Metrics(
            Sources(
                stats=lambda: self.engine.stats,
                checks=lambda: self.checks.summary(),
                take_checks=lambda: functools.partial(summarize, self.checks.taken()),
                vrrp=lambda: self.vrrp.summary(),
                role=lambda: str(self.roles.role),
                drains=lambda: len(self.maintenance.drains),
                agents=lambda: self.agents.summary(),
                peers=lambda: self.peer.summary(),
                bgp=lambda: self.bgp.summary(),
            )
        )
        self.peer = PeerCheck(self.metrics, world.state_dir)
        self.checks = HealthChecks(
            self._on_health,
            max_in_flight=self.budget.probes,
            on_probe=ProbeObserver(self._on_probe, self._on_probe_ok),
        )
        self.agents = FeedbackAgents(self._on_agents, state_path=world.state_dir / "agents.json")
        self.engine = Engine(
            config,
            world.kernel,
            world.owned,
            config_path=world.config_path,
            sysctl_root=world.sysctl_root,
            status_path=world.state_dir / "status.json",
            maintenance=self.maintenance,
            checks_summary=self.checks.summary,
            checks_taken=lambda: functools.partial(summarize, self.checks.taken()),
            on_synced=self.metrics.synced,
            agent_effects=self.agents.effects,
            agents_summary=self.agents.summary,
        )
        self.rules = NetworkRules(config, world.nft, world.routes, world.rules_sysctl_root)
        self.syncd = SyncDaemonFollower(world.sync_kernel, config.sync_daemon)
        self.roles = RoleBroadcast()
        self.roles.follow("rules", self.rules.set_role)
        self.roles.follow("sync_daemon", self.syncd)
        self.roles.follow("events", self._role_event)
        self.events = Events()
        self._seen_role: Role | None = None
        self._stats = StatsPair()
        self._generation = 0
        self.config_sha256: str | None = None
        # The status' extra sections, by name, each read on the loop when the status is taken;
        # a feature adds its own here (the page shows an unknown section as a key/value list).
        self.status_sections: dict[str, Callable[[], object]] = {
            "peer_check": self.peer.summary,
            "bgp": lambda: self.bgp.summary(),
        }
        try:
            user = run_as(config)
        except ValueError as exc:
            raise StartError("reading [daemon] script_user", exc) from exc
        self.hooks = HookRunner(user=user)
        self.vrrp = VrrpService(
            config, self.roles.publish, hooks=self.hooks, health=lambda: self.engine.health
        )
        self.bgp = BgpService(config, world.state_dir)  # [bgp] route health injection
        self.control = ControlServer(
            world.control_socket or Path(config.daemon.control_socket),
            {**handlers(self.status_reply, self.ask), **control_handlers(self.peer)},
            max_connections=CONTROL_CONNECTIONS,
        )
        address = world.metrics_address
        if address is None:
            address = config.daemon.metrics_address
        self.http = (
            MetricsServer(
                self.metrics, address, status=self.status_inputs, max_connections=HTTP_CONNECTIONS
            )
            if address
            else None
        )
        self._stack = contextlib.AsyncExitStack()
        self._stopping = False  # a Stop was applied: asks are refused from now on
        self._health_queued = False
        self._bgp_awaiting = False  # BGP waits for checks' first results
        self._bgp_soon = False  # an update is scheduled

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring the director up; on failure undo what was done and raise :class:`StartError`."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("removing leftover virtual addresses", self._start_leftovers),
            ("reading the state files", self._start_state),
            ("opening IPVS", self._start_ipvs),
            ("programming the IPVS table", self._start_engine),
            ("starting the health checks", self._start_checks),
            ("starting the feedback agents", self._start_agents),
            ("starting VRRP", self._start_vrrp),
            ("starting BGP", self._start_bgp),
            ("opening the control socket and the HTTP listener", self._start_listeners),
        ]
        peer: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("starting the peer config check", self._start_peer)
        ]
        # Without [peer_check] the peer check only makes the running config's digest (in a
        # child process): nothing READY stands for, so it comes right after READY (still part
        # of the start: its failure undoes the start). With peers, their endpoint is up first.
        late = self.config.peer_check is None
        await self._run_steps(steps if late else steps + peer)
        with contextlib.suppress(KernelError):
            await self.engine.refresh_stats()
        self._stats = self._stats.observe(self.engine.stats)
        self.events.record(time.time(), "start", f"directord {__version__} started")
        self.world.lifecycle.ready(self.engine.status.summary())
        if late:
            await self._run_steps(peer)
        settle_heap()
        young = YoungCollector()  # the young generation collected on a clock (director.heap)
        young.start(asyncio.get_running_loop())
        self._stack.callback(young.stop)
        log.info("ready", version=__version__, config=str(self.world.config_path))

    async def _run_steps(self, steps: list[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
        """Run the start's steps in order; on failure undo what was done and raise
        :class:`StartError`."""
        for step, run in steps:
            try:
                await run()
            except BaseException as exc:  # a cancelled start is undone too
                if isinstance(exc, Exception):
                    log.error("start_failed", step=step, error=str(exc))
                await self._stack.aclose()
                if isinstance(exc, Exception):
                    raise StartError(step, exc) from exc
                raise

    async def _start_leftovers(self) -> None:
        # First and fast: after a crash this node may still hold the VIPs while the peer is
        # master; they go before anything slow (IPVS, sysctls, checks) runs.
        removed = await self.world.remove_leftovers(self.config)
        if removed:
            log.warning("leftover_vips_removed", addresses=removed)
        await self._record_vips(self.config)
        # Undone last on a clean stop, once VRRP has removed the VIPs itself: nothing is left
        # for the unit's ExecStopPost to delete (and to complain about).
        self._stack.push_async_callback(self._write_state, early.BATCH, b"")

    async def _record_vips(self, *configs: Config) -> None:
        """The VIPs these configs may place, for the next start's first act after a crash
        (:mod:`director.early`) and the unit's ExecStopPost (``ip -batch``). Best effort:
        without them the start's own cleanup still runs."""
        pairs = [pair for config in configs for pair in placed_addresses(config)]
        await self._write_state(early.RECORD, early.encode(pairs))
        interfaces = [pair for config in configs for pair in placed_interfaces(config)]
        await self._write_state(early.BATCH, early.encode_batch(interfaces))

    async def _write_state(self, name: str, content: bytes) -> None:
        try:
            await asyncio.to_thread(write_atomic, self.world.state_dir / name, content)
        except OSError as exc:
            log.warning("state_file_write_failed", file=name, error=str(exc))

    async def _start_state(self) -> None:
        self.config_sha256 = await asyncio.to_thread(file_sha256, self.world.config_path)
        self.maintenance.load()
        self.agents.load(self.config)  # what the agents said before a restart
        await asyncio.to_thread(self.world.owned.load)
        if self.budget.short:
            log.error(
                "open_file_limit_low",
                problem=self.budget.problem(self.config.daemon.max_concurrent_probes),
            )
        self._refresh_faults()

    async def _start_ipvs(self) -> None:
        kernel, sync_kernel = self.world.kernel, self.world.sync_kernel
        self._stack.callback(kernel.close)
        self._stack.callback(sync_kernel.close)
        if needs_ipvs(self.config):
            await asyncio.to_thread(kernel.open)
        elif self.world.owned.load():
            # Services an earlier run created and this config no longer has: remove them if
            # ip_vs is there (never loaded for this); without ip_vs there is no table.
            with contextlib.suppress(KernelError):
                await asyncio.to_thread(kernel.open, False)
        else:
            log.info("ipvs_not_needed", reason="no virtual service and no sync daemon")
        if self.config.sync_daemon is not None:
            await asyncio.to_thread(sync_kernel.open)

    async def _start_engine(self) -> None:
        self._stack.push_async_callback(self.engine.flush_status)
        self._stack.push_async_callback(self._stop_rules)
        self._stack.push_async_callback(self.engine.stop)
        await self.engine.start()

    async def _start_checks(self) -> None:
        self._stack.push_async_callback(self.checks.stop)
        self._checks_changed(self.config)

    async def _start_agents(self) -> None:
        self._stack.push_async_callback(self.agents.stop)
        self.agents.update(self.config)

    async def _start_vrrp(self) -> None:
        self._stack.push_async_callback(self._stop_syncd)
        self._stack.push_async_callback(self.vrrp.stop)
        await self.vrrp.start()  # publishes the first role (master without VRRP instances)

    async def _start_bgp(self) -> None:
        # Stopped before VRRP and the table: the routes are withdrawn first.
        self._stack.push_async_callback(self.bgp.stop)
        await asyncio.to_thread(self.bgp.load_drain)
        await self.bgp.start()
        self._bgp_update()

    def _bgp_update(self) -> None:
        """Health or maintenance may have changed: let BGP announce or withdraw (on verdicts:
        until every check has had a result, each probe result may be the missing one)."""
        if self.bgp.bgp is None:
            return
        config = self.engine.config
        self._bgp_soon = False
        verdicts = self.checks.verdicts()
        self._bgp_awaiting = len(verdicts) < len(self.checks.health())
        self.bgp.update(config, verdicts, self.maintenance.overrides(config))

    async def _start_listeners(self) -> None:
        """Either listener failing is logged and the director runs on without it: its job is
        the traffic, not its own tooling."""
        servers: list[tuple[str, ControlServer | MetricsServer]] = [
            ("control socket", self.control)
        ]
        if self.http is not None:
            servers.append(("metrics", self.http))
        for what, server in servers:
            try:
                await server.start()
            except (OSError, ControlError) as exc:
                log.error("listen_failed", what=what, error=str(exc))
            else:
                self._stack.push_async_callback(server.stop)

    async def _start_peer(self) -> None:
        key = await asyncio.to_thread(load_key, self.config)
        self._stack.push_async_callback(self.peer.stop)
        await self.peer.apply(self.config, key)

    async def _stop_rules(self) -> None:
        if not self.engine.config.daemon.keep_table_on_stop:
            with contextlib.suppress(NftError, RouteError):  # logged
                await self.rules.remove()

    async def _stop_syncd(self) -> None:
        with contextlib.suppress(KernelError):  # logged
            await self.syncd.stop()

    async def stop(self) -> None:
        """Undo the start, last step first (VRRP hands over with priority 0 early on)."""
        self._stopping = True
        self.world.lifecycle.stopping()
        await self._stack.aclose()

    # -- intents --------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Apply intents one at a time until a :class:`Stop`; run the timers in between."""
        intents = self.intents
        loop = asyncio.get_running_loop()
        watchdog = self.world.lifecycle.watchdog_interval()
        now = loop.time()
        next_resync = now + self.engine.config.daemon.resync_interval
        next_stats = now + self.engine.config.daemon.stats_interval
        # the first ping at once: systemd's watchdog runs from READY, and what came after it
        # (the config digest, the caches written) must not eat into the first interval
        next_ping = now if watchdog else None
        try:
            while True:
                deadline = min(t for t in (next_resync, next_stats, next_ping) if t is not None)
                pending = await intents.next(max(0.0, deadline - loop.time()))
                now = loop.time()
                if next_ping is not None and watchdog and now >= next_ping:
                    self.world.lifecycle.watchdog()
                    next_ping = now + watchdog
                if now >= next_resync:
                    await self._apply(Pending(Resync()))
                    next_resync = now + self.engine.config.daemon.resync_interval
                if now >= next_stats:
                    await self._apply(Pending(RefreshStats()))
                    next_stats = now + self.engine.config.daemon.stats_interval
                if pending is None:
                    continue
                if isinstance(pending.intent, Reload):
                    next_resync = now + self.engine.config.daemon.resync_interval
                if await self._apply(pending):
                    return
        finally:
            self._stopping = True
            while (left := await intents.next(0)) is not None:  # asked while stopping
                if left.answer is not None and not left.answer.done():
                    left.answer.set_exception(RequestError(STOPPING))

    async def ask(self, intent: Intent) -> object:
        """What a control command does: queue ``intent`` and await its result."""
        if self._stopping:
            raise RequestError(STOPPING)
        return await self.intents.ask(intent)

    async def _apply(self, pending: Pending) -> bool:
        """Apply one intent and answer it; True when it was a stop."""
        intent, answer = pending.intent, pending.answer
        try:
            result = await self._do(intent)
        except Exception as exc:
            if answer is not None and not answer.done():
                answer.set_exception(exc)
            elif not isinstance(exc, KernelError | ReloadRejected):  # those were logged
                log.exception("intent_failed", intent=type(intent).__name__)
            if isinstance(exc, KernelError):
                self.world.lifecycle.status(f"kernel error: {exc}")
        else:
            if answer is not None and not answer.done():
                answer.set_result(result)
        return isinstance(intent, Stop)

    async def _do(self, intent: Intent) -> object:
        match intent:
            case Stop():
                log.info("stop_requested", origin=intent.origin)
                return None
            case Reload():
                return await self.reload()
            case HealthSync():
                self._health_queued = False
                try:
                    await self.engine.sync_health()
                finally:
                    self._bgp_update()
                return None
            case Resync():
                await self.engine.resync()
                await self.rules.resync()
                with contextlib.suppress(KernelError):  # logged; the next resync tries again
                    await self.syncd.apply()  # a sync daemon stopped by hand comes back
                self._refresh_faults()
                self._bgp_update()
                self.world.lifecycle.status(self.engine.status.summary())
                return None
            case RefreshStats():
                await self.engine.refresh_stats()
                self._stats = self._stats.observe(self.engine.stats)
                return None
            case Drain(server, service, timeout):
                drain = await self.engine.drain(server, service, timeout)
                where = f" in {service}" if service else ""
                self.events.record(time.time(), "maintenance", f"drain {server}{where}")
                self._bgp_update()
                return {
                    "drain": drain.to_json(),
                    "matches": self.maintenance.describe(self.engine.config, time.time()),
                }
            case Enable(server, service):
                lifted = await self.engine.enable(server, service)
                where = f" in {service}" if service else ""
                self.events.record(time.time(), "maintenance", f"enable {server}{where}")
                self._bgp_update()
                return {"enabled": [d.to_json() for d in lifted]}
            case DrainDirector(timeout):  # [bgp]
                return await self._drain_director(True, timeout)
            case EnableDirector():
                return await self._drain_director(False, None)
        raise AssertionError(f"unknown intent {intent!r}")

    async def _drain_director(self, drain: bool, flows_for: float | None) -> dict[str, object]:
        if self.bgp.bgp is None:
            raise RequestError("this director has no [bgp]: it announces nothing to withdraw")
        view = await asyncio.to_thread(self.bgp.set_drained, drain, time.time(), flows_for)
        self._bgp_update()
        return {"drain": view, "routes": self.bgp.routes.to_json(self.bgp.clock())}

    async def reload(self) -> dict[str, object]:
        """Read and validate the config again and apply it. A config that is invalid, or needs
        ip_vs where there is none, changes nothing: :class:`ReloadRejected` says why."""
        self.world.lifecycle.reloading()
        try:
            try:
                config = await asyncio.to_thread(self.world.loader, self.world.config_path)
            except ConfigError as exc:
                raise ReloadRejected(str(exc)) from None
            if needs_ipvs(config):
                try:
                    await asyncio.to_thread(self.world.kernel.open)
                    if config.sync_daemon is not None:
                        await asyncio.to_thread(self.world.sync_kernel.open)
                except KernelError as exc:
                    raise ReloadRejected(
                        "the new config has virtual services or a sync daemon, which need "
                        f"ip_vs, and ip_vs is not available: {exc}"
                    ) from None
            try:
                user = run_as(config)
            except ValueError as exc:
                raise ReloadRejected(f"daemon.script_user: {exc}") from None
            try:
                key = await asyncio.to_thread(load_key, config)
            except KeyFileError as exc:
                raise ReloadRejected(f"peer_check.key_file: {exc}") from None
        except ReloadRejected as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.events.record(time.time(), "reload", f"reload refused: {first}")
            self.engine.reload_rejected(str(exc))
            self.metrics.reloaded(False)
            self.world.lifecycle.ready(self.engine.status.summary())
            raise
        previous, self.config = self.config, config
        await self._record_vips(previous, config)  # both, until the old ones are gone
        self._checks_changed(config)
        self.agents.update(config)  # the sync below applies what changed
        self.hooks.run_as(user)
        # A kernel error is logged and kept in the status; the rest follows the new config
        # anyway, and the next resync tries the table again.
        with contextlib.suppress(KernelError):
            await self.engine.apply_config(config)
        with contextlib.suppress(NftError, RouteError):  # logged; the next resync tries again
            await self.rules.apply(config)
        try:
            await self.vrrp.reload(config)
        except (OSError, ValueError) as exc:  # e.g. a new instance's interface is missing
            log.error("vrrp_reload_failed", error=str(exc))
        await self._record_vips(config)
        with contextlib.suppress(KernelError):  # logged
            await self.syncd.update(config.sync_daemon)
        await self.peer.apply(config, key)
        await self.bgp.reload(config)
        self._bgp_update()
        self.metrics.reloaded(True)
        self.config_sha256 = await asyncio.to_thread(file_sha256, self.world.config_path)
        self.events.record(time.time(), "reload", "config reloaded")
        settle_heap()
        self._refresh_faults()
        self.world.lifecycle.ready(self.engine.status.summary())
        return {
            "config_path": str(self.world.config_path),
            "last_sync": self.engine.status.last_sync,
            "kernel_error": self.engine.status.kernel_error,
        }

    # -- callbacks from the parts ---------------------------------------------------------------

    def _on_health(self, changes: list[HealthChanged]) -> None:
        # interned: the metrics keep (service, destination) -> when for every check that ever
        # changed (all of them once they are up), and 10,000 services x 10 servers need 10,010
        # names, not 200,000 strings (~12 MB at 100,000 checks)
        ids = [
            (sys.intern(str(c.check_id[0])), sys.intern(str(c.check_id[1])))  # type: ignore[index]
            for c in changes
        ]
        now = time.time()
        self.metrics.health_changed(ids, now)
        for (svc, dest), change in zip(ids, changes, strict=True):
            verdict = "up" if change.up else "DOWN"
            self.events.record(now, "health", f"{dest} in {svc}: {verdict} ({change.reason})")
        self.engine.record_health(changes)
        self.vrrp.health_changed()  # track_checks quorums
        if not self._health_queued:  # one sync per burst of verdicts
            self._health_queued = True
            self.intents.put(HealthSync())

    def _on_agents(self, changed: list[AgentKey]) -> None:
        """A feedback agent changed what it asks for: one sync per burst, as for verdicts."""
        if changed and not self._health_queued:
            self._health_queued = True
            self.intents.put(HealthSync())

    def _on_probe(self, job: ProbeJob, result: ProbeResult) -> None:
        self.metrics.probed(job.kind, job.label, result.ok, result.latency, local=result.local)
        if self._bgp_awaiting and not self._bgp_soon:
            self._bgp_later()

    def _on_probe_ok(self, job: ProbeJob, latency: float) -> None:
        """:meth:`_on_probe` of a good result (the fast probes' hot path: no result object)."""
        self.metrics.probed(job.kind, job.label, True, latency)
        if self._bgp_awaiting and not self._bgp_soon:
            self._bgp_later()

    def _bgp_later(self) -> None:
        # coalesced: counting verdicts walks every check, a probe result is one of many
        self._bgp_soon = True
        asyncio.get_running_loop().call_later(BGP_COALESCE, self._bgp_update)

    def _checks_changed(self, config: Config) -> None:
        """Start or replace the checks; the metric series of targets no longer checked go."""
        self.checks.update(config)
        self.metrics.retain_probe_targets(
            self.checks.probe_targets(),
            checks={(str(s), str(d)) for s, d in self.checks.health()},
        )

    # -- status ---------------------------------------------------------------------------------

    def _refresh_faults(self) -> None:
        """The director's own problems, for status, ``status.json`` and ``doctor``."""
        faults: list[str] = []
        problem = self.budget.problem(self.config.daemon.max_concurrent_probes)
        if problem:
            faults.append(problem)
        for store in (self.world.owned, self.maintenance, self.agents):
            text = getattr(store, "problem", None)
            if text:
                faults.append(str(text))
        local = self.checks.local_faults()
        ago = local["last_seconds_ago"]
        if isinstance(ago, int | float) and ago < LOCAL_FAULT_SHOWN:
            faults.append(
                f"{local['total']} probe(s) could not run for a local reason since start "
                f"(last {ago:.0f} s ago: {local['last_error']}); their servers' verdicts were "
                "left as they were: see directorctl doctor"
            )
        self.engine.status.director_faults = faults

    async def _role_event(self, role: Role) -> None:
        if role is not self._seen_role:
            text = (
                f"role {role}" if self._seen_role is None else f"role {self._seen_role} -> {role}"
            )
            self.events.record(time.time(), "role", text)
            self._seen_role = role

    def status_inputs(self) -> StatusInputs:
        """What the status is made of, taken now on the loop (cheap: snapshots and small
        copies); :func:`build_status` joins them, in a worker thread for the HTTP listener."""
        self._refresh_faults()
        self._stats = self._stats.observe(self.engine.stats)
        self._generation += 1
        config, now = self.engine.config, time.time()
        maintenance = self.maintenance
        sections: dict[str, object] = {
            "probe_local_failures": self.checks.local_faults(),
            "process": process_view(),
        }
        for name, read in self.status_sections.items():
            sections[name] = read()
        return StatusInputs(
            now=now,
            generation=self._generation,
            config=config,
            config_sha256=self.config_sha256,
            engine_status=dict(self.engine.status.__dict__),
            stats=self._stats,
            checks=functools.partial(summarize, self.checks.taken()),
            health_since=self.metrics.sources.health_changed_at.copy(),
            overrides=maintenance.overrides(config),
            removed_why={
                i: why for d in maintenance.drains.values() for i, why in d.removed.items()
            },
            drains=maintenance.describe(config, now),
            role=str(self.roles.role),
            vrrp=self.vrrp.summary(),
            events=self.events.recent(),
            agents=self.agents.summary(),
            sections=sections,
        )

    def status(self) -> dict[str, object]:
        """What ``directorctl status`` shows (read now; never waits behind an intent)."""
        return build_status(self.status_inputs())

    async def status_reply(self) -> Streamed:
        """:meth:`status` as the control socket's JSON: taken on the loop, built and encoded in
        a child process (:mod:`director.offload`) and sent as it is read from it, so a
        100,000-server status (~60 MB) neither stalls the loop nor is ever whole in the
        daemon's heap."""
        inputs = self.status_inputs()
        return Streamed(lambda: forked(lambda: iter((_status_text(inputs),))))


def _status_text(inputs: StatusInputs) -> bytes:
    return encode_status(inputs, _yield_gil).encode()


def _yield_gil() -> None:
    time.sleep(0)  # releases the GIL: the event loop's thread takes it now if it waits


FULL_COLLECTION_EVERY = 100  # collections of the middle generation between two full ones


def settle_heap() -> None:
    """Move what exists now (the config model, the tables: long-lived, many objects) out of the
    cyclic collector's reach. A full collection then walks only what was made since, so one
    triggered by a large status page costs milliseconds, not a 100 ms pause of the event loop
    (bench/status_page.py). They are still freed by reference counting when dropped; garbage in
    a reference cycle among them waits for the next call (a reload), which unfreezes, collects
    everything once and freezes again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim()  # what reading and applying the config freed goes back to the system
    # Full collections 10 times rarer than Python's default: what they walk (the checks' last
    # outcomes, the last IPVS readings) is ~the table's size and lives on, so each costs about
    # the same whenever it runs (0.3-0.9 s at 100,000 checks, bench.scale --profile gc: 16
    # full collections and 4.6 s in a run instead of 33-39 and 10-13 s). Garbage in reference
    # cycles that reached the old generation waits longer to be freed; the young generations
    # are collected as before.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def file_sha256(path: Path) -> str | None:
    """The config file's SHA-256 as read now (None when it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def process_view() -> dict[str, object]:
    """The daemon's own resources (status, the soak benchmark): memory, files, tasks, timers."""
    loop = asyncio.get_running_loop()
    rss_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = -1
    scheduled = getattr(loop, "_scheduled", ())  # asyncio's timer heap (CPython's loops)
    return {
        "pid": os.getpid(),
        "rss_bytes": rss_kib * 1024,
        "open_files": fds,
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "tasks": len(asyncio.all_tasks(loop)),
        "timers": len(scheduled),
        "threads": threading.active_count(),
    }
