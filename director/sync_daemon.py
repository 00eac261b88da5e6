"""The IPVS connection-sync daemon follows the director's role.

``[sync_daemon]`` says on which interface and with which sync id; the role says which daemon:
master -> the master daemon only (it sends this director's connections), backup -> the backup
daemon only (it receives the master's), fault -> none. With ``mode = "both"`` (active-active
directors, each carrying traffic) every director runs both, whatever its role: the kernel runs
a master and a backup thread at once, sends its own connections and takes its peers'.
:func:`wanted` and :func:`plan` are pure;
:class:`SyncDaemonFollower` reads what runs, stops what is wrong, then starts what is missing,
in a worker thread (the kernel calls block while the kernel threads start and stop).

Without ``[sync_daemon]`` the daemon leaves sync daemons alone (someone may run them by hand);
when a reload removes the section, the follower stops the ones the config described.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from director.config.vrrp import SyncDaemon as SyncDaemonConfig
from director.ipvs.kernel import IPVSKernel, KernelError, SyncDaemon, SyncState
from director.role import Role

log = structlog.get_logger("director")


def wanted(settings: SyncDaemonConfig | None, role: Role) -> frozenset[SyncDaemon]:
    """The sync daemons this role needs (``mode = "both"``: both, whatever the role)."""
    if settings is None:
        return frozenset()
    states: tuple[SyncState, ...]
    if settings.mode == "both":
        states = (SyncState.MASTER, SyncState.BACKUP)
    elif role is Role.FAULT:
        return frozenset()
    else:
        states = (SyncState.MASTER if role is Role.MASTER else SyncState.BACKUP,)
    return frozenset(SyncDaemon(s, settings.interface, settings.sync_id) for s in states)


@dataclass(frozen=True)
class SyncPlan:
    """The sync daemons to stop and to start."""

    stop: tuple[SyncState, ...]
    start: tuple[SyncDaemon, ...]

    def __bool__(self) -> bool:
        return bool(self.stop or self.start)


def plan(want: frozenset[SyncDaemon], running: list[SyncDaemon]) -> SyncPlan:
    """Stops first, then starts; one daemon per state: another interface or id is a restart."""
    stop = tuple(sorted(d.state for d in running if d not in want))
    have = {d for d in running if d in want}
    start = tuple(sorted(want - have, key=lambda d: d.state))
    return SyncPlan(stop, start)


class SyncDaemonFollower:
    """A role follower (``RoleBroadcast.follow``) that keeps the kernel's sync daemons right."""

    def __init__(self, kernel: IPVSKernel, settings: SyncDaemonConfig | None) -> None:
        self.kernel = kernel
        self.settings = settings
        self._managed = settings is not None  # stop them when a reload removes the section
        self._role: Role | None = None
        self._lock = asyncio.Lock()
        self.errors = 0

    async def __call__(self, role: Role) -> None:
        self._role = role
        await self.apply()

    async def update(self, settings: SyncDaemonConfig | None) -> None:
        """A new config: apply it for the current role (nothing when unchanged)."""
        if settings == self.settings:
            return
        self.settings = settings
        self._managed = self._managed or settings is not None
        if self._role is not None or settings is None:
            await self.apply()

    async def stop(self) -> None:
        """Stop every sync daemon the config describes (shutdown, ``directord --cleanup``)."""
        if self._managed:
            await self._apply(frozenset())

    async def apply(self) -> None:
        if self.settings is None and not self._managed:
            return
        await self._apply(wanted(self.settings, self._role or Role.FAULT))
        if self.settings is None:
            self._managed = False

    async def _apply(self, want: frozenset[SyncDaemon]) -> None:
        async with self._lock:
            try:
                running = await asyncio.to_thread(self.kernel.sync_daemons)
                todo = plan(want, running)
                for state in todo.stop:
                    await asyncio.to_thread(self.kernel.stop_sync_daemon, state)
                    log.info("sync_daemon_stopped", state=str(state))
                for daemon in todo.start:
                    await asyncio.to_thread(self.kernel.start_sync_daemon, daemon)
                    log.info(
                        "sync_daemon_started",
                        state=str(daemon.state),
                        interface=daemon.interface,
                        sync_id=daemon.sync_id,
                    )
            except KernelError as exc:
                self.errors += 1
                log.error("sync_daemon_failed", error=str(exc))
                raise
