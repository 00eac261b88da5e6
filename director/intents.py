"""What can be asked of a running director, and the one queue the asks wait on.

Signals (``SIGHUP``, ``SIGTERM``), control commands (``directorctl reload``, ``drain``,
``enable``), the periodic timers (resync, counters) and bursts of health-check verdicts each
become an :class:`Intent` on one :class:`Intents` queue. The application object applies them one
at a time, in order, so two reloads can never overlap and a drain never runs halfway through a
reload. A control command awaits the result of its own intent (:meth:`Intents.ask`); a signal or
a timer does not (:meth:`Intents.put`).

Not intents, on purpose: the VRRP state machines and the role they publish (a takeover must not
wait behind a reload), the probes themselves, and read-only status requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


class Intent:
    """Base of the things a director can be asked to do."""


@dataclass(frozen=True)
class Reload(Intent):
    """Reload the config file."""

    origin: str = "signal"  # "signal" (SIGHUP) or "control" (directorctl reload)


@dataclass(frozen=True)
class Stop(Intent):
    """Stop the daemon."""

    origin: str = "signal"


@dataclass(frozen=True)
class Resync(Intent):
    """The periodic full resync: repairs drift in IPVS, nftables and the sync daemon."""


@dataclass(frozen=True)
class RefreshStats(Intent):
    """Read the IPVS counters (metrics, status, timed drains)."""


@dataclass(frozen=True)
class HealthSync(Intent):
    """Health verdicts changed since the last sync: apply them to the table."""


@dataclass(frozen=True)
class Drain(Intent):
    """Drain a real server (in one virtual service, or in all)."""

    server: str
    service: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Enable(Intent):
    """Put a drained real server back (in one virtual service, or in all)."""

    server: str
    service: str | None = None


@dataclass(frozen=True)
class DrainDirector(Intent):
    """``directorctl drain-director``: withdraw every BGP route (maintenance of the node)."""

    timeout: float | None = None  # default: [bgp] drain_timeout


@dataclass(frozen=True)
class EnableDirector(Intent):
    """``directorctl enable-director``: end the node's drain."""


class ReloadRejected(Exception):
    """A reload that changed nothing; the message says why (the config's problems)."""


@dataclass
class Pending:
    """An intent on the queue, with the future its asker awaits."""

    intent: Intent
    answer: asyncio.Future[object] | None = None  # set for an ask


class Intents:
    """One FIFO queue of intents. Producers never block; the director consumes."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()

    def put(self, intent: Intent) -> None:
        """Queue ``intent`` without waiting for it (signal handlers, timers, health)."""
        self._queue.put_nowait(Pending(intent))

    async def ask(self, intent: Intent) -> object:
        """Queue ``intent`` and wait for what applying it returned (or raised)."""
        answer: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Pending(intent, answer))
        return await answer

    async def next(self, timeout: float | None) -> Pending | None:  # noqa: ASYNC109
        """The next intent, or None after ``timeout`` seconds with none."""
        if timeout is not None and timeout <= 0:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None

    def __len__(self) -> int:
        return self._queue.qsize()
