"""The IPVS side of the running daemon: the table it wants, kept in the kernel.

Start, apply a new config, sync after health changes, resync, read the counters, drains, stop.
Collaborators come in as constructor arguments (kernel, owned-service store, maintenance state,
status file, callbacks); the application object (:mod:`director.app`) owns the engine and calls
it one action at a time from its intent queue. Kernel work runs in a worker thread, one call at
a time, so the event loop never blocks on netlink.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import structlog

from checks.model import HealthChanged
from director.config import Config
from director.desired import Agents, compile_table
from director.heap import Pacer, run_beside_loop, run_paused
from director.ipvs.kernel import IPVSKernel, KernelError, Timeouts
from director.ipvs.model import DestKey, ServiceKey, Table
from director.ipvs.stats import StatsSnapshot
from director.maintenance import Drain, Maintenance
from director.offload import forked_call
from director.pause import no_pause
from director.reconcile.owned import OwnedStore
from director.reconcile.reconciler import Reconciler, SyncResult
from director.statefile import LatestWriter
from director.sysctl import PROC_SYS, apply_sysctls

log = structlog.get_logger("director")
IPVS_SYSCTL = "net.ipv4.vs."


@dataclass
class Status:
    """What the engine reports: the config, the last sync, the kernel's problems, the checks."""

    config_path: str
    config_loaded_at: float = 0.0
    reload_error: str | None = None
    last_sync: dict[str, Any] = field(default_factory=dict)
    sysctl_problems: list[str] = field(default_factory=list)
    kernel_error: str | None = None
    checks: list[dict[str, object]] = field(default_factory=list)
    agents: list[dict[str, object]] = field(default_factory=list)  # feedback agents
    # Problems of the director itself, not of a real server: its file descriptors, its state
    # files, probes failing for a local reason, ip_vs missing. One sentence each.
    director_faults: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.director_faults:
            parts.append(f"{len(self.director_faults)} director fault(s)")
        if self.reload_error:
            parts.append("reload failed, running the previous config")
        if self.kernel_error:
            parts.append(f"kernel error: {self.kernel_error}")
        if self.sysctl_problems:
            parts.append(f"{len(self.sysctl_problems)} sysctl problem(s)")
        svc, dst = self.last_sync.get("services", 0), self.last_sync.get("destinations", 0)
        parts.append(f"{svc} services, {dst} destinations")
        return "; ".join(parts)


class Engine:
    def __init__(
        self,
        config: Config,
        kernel: IPVSKernel,
        owned: OwnedStore,
        *,
        config_path: Path,
        sysctl_root: Path = PROC_SYS,
        status_path: Path | None = None,
        maintenance: Maintenance | None = None,
        checks_summary: Callable[[], list[dict[str, object]]] = list,
        checks_taken: Callable[[], Callable[[], list[dict[str, object]]]] | None = None,
        on_synced: Callable[[str, SyncResult | None], None] | None = None,
        agent_effects: Callable[[], Agents] = dict,
        agents_summary: Callable[[], list[dict[str, object]]] = list,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.kernel = kernel
        # frozen: the tables compile_table makes are never changed afterwards (an incremental
        # compile takes the previous dicts as they are), so the kernel's view shares them
        self.reconciler = Reconciler(kernel, owned, frozen=True)
        self.sysctl_root = sysctl_root
        self.status_path = status_path
        self.status = Status(str(config_path), config_loaded_at=time.time())
        # status.json: made and written in a child process (its checks, 100,000 rows at
        # 100,000 servers, encoded there: no interpreter lock held by the encoder, and no copy
        # of them kept in the daemon's heap between two writes)
        self._status_file = (
            LatestWriter(status_path, self._status_write_failed, run=forked_call)
            if status_path
            else None
        )
        self._lock = asyncio.Lock()
        # (service, destination) -> False, from the health checks; absent means up. Changed
        # only by record_health, which notes the service for the next (incremental) compile.
        self.health: dict[tuple[ServiceKey, DestKey], bool] = {}
        self._changed: set[ServiceKey] = set()
        # the table compiled last, from which config, and the services that had maintenance
        # overrides or agent effects then (compiled again each time: few, and they change
        # without a health change)
        self._desired: tuple[Config, Table, set[ServiceKey]] | None = None
        self.checks_summary = checks_summary  # status.json shows the checks
        # or, cheaper on the loop: how to take them now and build the summary in the thread
        # that writes status.json (HealthChecks.taken + summarize)
        self.checks_taken = checks_taken
        # Drains from directorctl; the last counters read (metrics and status never wait on it).
        self.maintenance = maintenance or Maintenance()
        self.stats: StatsSnapshot | None = None
        # metrics: each sync's result, None when the kernel refused the whole request
        self.on_synced = on_synced
        # What the feedback agents say (director.agents), read at each sync.
        self.agent_effects = agent_effects
        self.agents_summary = agents_summary

    def record_health(self, changes: list[HealthChanged]) -> None:
        """Health-check verdicts (on the event loop): recorded now, synced by the next
        :meth:`sync_health` (the application object queues one per burst of changes)."""
        for change in changes:
            service, dest = cast(tuple[ServiceKey, DestKey], change.check_id)
            # only the verdicts "down": absent means up to every reader (compile_table,
            # healthy_counts), and at rest nearly every server is up - at 100,000 a dict
            # of 100,000 entries (~9 MB with their keys) less, and no copy of it per sync
            if change.up:
                self.health.pop((service, dest), None)
            else:
                self.health[(service, dest)] = False
            self._changed.add(service)
            log.warning(
                "health_changed",
                service=str(service),
                destination=str(dest),
                up=change.up,
                reason=change.reason,
            )

    async def sync_health(self) -> SyncResult:
        return await self._sync(full=False, reason="health")

    async def start(self) -> SyncResult:
        await self._apply_kernel_settings()
        return await self._sync(full=True, reason="start")

    async def apply_config(self, config: Config) -> SyncResult:
        """A new, validated config: kernel settings, then the table's difference."""
        self.config = config
        self.status.reload_error = None
        self.status.config_loaded_at = time.time()
        log.info("config_reloaded", path=str(self.config_path))
        await self._apply_kernel_settings()
        return await self._sync(full=False, reason="reload")

    def reload_rejected(self, problem: str) -> None:
        """A reload that changed nothing: the status says why until the next good one."""
        self.status.reload_error = problem
        log.error("reload_rejected", path=str(self.config_path), problems=problem)
        self.write_status()

    async def resync(self) -> SyncResult:
        return await self._sync(full=True, reason="resync", paced=True)

    async def refresh_stats(self) -> StatsSnapshot | None:
        """Read the counters (worker thread); then remove timed drains that went idle."""
        read = getattr(self.kernel, "read_stats", None)
        if read is None:
            return None
        async with self._lock:
            snapshot: StatsSnapshot = await asyncio.to_thread(
                run_beside_loop, read, time.time(), Pacer()
            )
        self.stats = snapshot
        done = self.maintenance.settle(self.config, snapshot, time.time())
        if done:
            log.info("drain_removed", destinations=done)
            self.maintenance.save()
            await self._sync(full=False, reason="maintenance")
            async with self._lock:
                self.stats = await asyncio.to_thread(run_beside_loop, read, time.time(), Pacer())
        return self.stats

    async def drain(self, server: str, service: str | None, remove_after: float | None) -> Drain:
        """Weight 0 for ``server`` (then removal when idle or after ``remove_after`` seconds)."""
        drain = self.maintenance.drain(self.config, server, service, remove_after, time.time())
        self.maintenance.save()
        log.warning("drain", server=server, service=service, timeout=remove_after)
        await self._sync(full=False, reason="maintenance")
        await self.refresh_stats()
        return drain

    async def enable(self, server: str, service: str | None) -> list[Drain]:
        """Lift the drains of ``server``; its real servers come back as the config says."""
        lifted = self.maintenance.enable(server, service)
        self.maintenance.save()
        log.warning("enable", server=server, service=service)
        await self._sync(full=False, reason="maintenance")
        await self.refresh_stats()
        return lifted

    async def stop(self) -> None:
        if self.config.daemon.keep_table_on_stop:
            log.info("stopping", ipvs_table="kept")
            return
        async with self._lock:
            result = await asyncio.to_thread(self.reconciler.remove_owned)
        log.info("stopping", ipvs_table="removed", operations=len(result.ops))

    async def _apply_kernel_settings(self) -> None:
        wanted = self.config.kernel.sysctl_items()
        if not getattr(self.kernel, "available", True):
            # no ip_vs (a VRRP-only director): its net.ipv4.vs.* sysctls do not exist
            wanted = [(name, value) for name, value in wanted if not name.startswith(IPVS_SYSCTL)]
        writes, problems = await asyncio.to_thread(apply_sysctls, wanted, self.sysctl_root)
        for name, value in writes:
            log.info("sysctl_set", name=name, value=value)
        self.status.sysctl_problems = [str(p) for p in problems]
        for problem in problems:
            log.error("sysctl_problem", problem=str(problem))
        tcp, tcpfin, udp = self.config.kernel.ipvs_timeouts()
        if tcp or tcpfin or udp:
            wanted_t = Timeouts(tcp or 0, tcpfin or 0, udp or 0)
            try:
                async with self._lock:
                    await asyncio.to_thread(self.kernel.set_timeouts, wanted_t)
                    now = await asyncio.to_thread(self.kernel.get_timeouts)
            except KernelError as exc:
                self.status.sysctl_problems.append(str(exc))
                log.error("ipvs_timeouts_failed", error=str(exc))
                return
            for name, want, got in zip(
                ("tcp", "tcpfin", "udp"),
                (tcp, tcpfin, udp),
                (now.tcp, now.tcpfin, now.udp),
                strict=True,
            ):
                if want and want != got:
                    text = f"IPVS {name} timeout: wanted {want}, found {got}"
                    self.status.sysctl_problems.append(text)
                    log.error("ipvs_timeout_problem", problem=text)

    async def _sync(self, *, full: bool, reason: str, paced: bool = False) -> SyncResult:
        """Compile the desired table and bring the kernel to it, in a worker thread.
        ``paced``: with pauses (:class:`director.heap.Pacer`) between services, for the
        periodic resync: a whole compile, read and plan of 100,000 destinations in one go held
        the interpreter lock at every system call of the event loop's probes, and stalled the
        loop up to 159 ms (``bench.scale --profile gc``, where each stall was)."""
        config, overrides = self.config, self.maintenance.overrides(self.config)
        health, effects = dict(self.health), self.agent_effects()
        special = {service for service, _ in overrides} | {service for service, _ in effects}
        previous, changed = None, None
        if self._desired is not None:
            previous = self._desired[1]  # equal entries reused even when compiled again
            if self._desired[0] is config and not full:
                changed = self._changed | special | self._desired[2]
        self._changed = set()
        self._desired = None  # until this compile is done
        desired: list[Table] = []
        pause = Pacer() if paced else no_pause

        def plan_and_apply() -> SyncResult:
            # the desired table compiled here, in the worker thread, from what was taken on
            # the loop: ~0.5 s of Python for 100,000 destinations that would stall the loop,
            # milliseconds when only the services whose health changed are compiled again
            # (director.desired); the cyclic collector paused meanwhile (director.heap: the
            # tables it builds are hundreds of thousands of objects without cycles, which a
            # full collection would walk again and again while they grow)
            desired.append(
                compile_table(
                    config,
                    health,
                    overrides,
                    effects,
                    previous=previous,
                    changed=changed,
                    pause=pause,
                )
            )
            return self.reconciler.sync(desired[0], full=full, pause=pause)

        async with self._lock:
            try:
                result = await asyncio.to_thread(run_paused, plan_and_apply)
            except KernelError as exc:
                self.status.kernel_error = str(exc)
                log.error("sync_failed", reason=reason, error=str(exc))
                self.write_status()
                if self.on_synced is not None:
                    self.on_synced(reason, None)
                raise
        self.status.kernel_error = None
        # health changed while it ran: in self._changed, compiled again next time
        self._desired = (config, desired[0], special)
        if self.on_synced is not None:
            self.on_synced(reason, result)
        for failure in result.failures:
            log.error("ipvs_operation_failed", error=str(failure))
        services, dests = result.counts
        self.status.last_sync = {
            "reason": reason,
            "full": result.full,
            "operations": len(result.ops),
            "failures": [str(f) for f in result.failures],
            "seconds": round(result.seconds, 6),
            "at": time.time(),
            "services": services,
            "destinations": dests,
        }
        quiet = reason == "resync" and not result.ops
        (log.debug if quiet else log.info)(
            "synced",
            reason=reason,
            full=result.full,
            operations=len(result.ops),
            failures=len(result.failures),
            seconds=round(result.seconds, 4),
            services=services,
            destinations=dests,
        )
        self.write_status()
        return result

    def write_status(self) -> None:
        """``status.json`` for ``directorctl status --state-dir``: serialised here, written
        atomically in a worker thread (a slow disk never holds the event loop)."""
        if self._status_file is None:
            return
        self.status.agents = self.agents_summary()
        if self.checks_taken is None:
            self.status.checks = self.checks_summary()
            body = json.dumps(self.status.__dict__, separators=(",", ":"), default=str)
            self._status_file.put(body.encode())
            return
        build, head = self.checks_taken(), dict(self.status.__dict__)

        def encode() -> bytes:  # in the writer's child process (or thread, without fork)
            head["checks"] = build()  # the status shows its own, built when it is asked for
            return json.dumps(head, separators=(",", ":"), default=str).encode()

        self._status_file.put(encode)

    async def flush_status(self) -> None:
        if self._status_file is not None:
            await self._status_file.flush()

    def _status_write_failed(self, exc: OSError) -> None:
        log.warning("status_write_failed", path=str(self.status_path), error=str(exc))
