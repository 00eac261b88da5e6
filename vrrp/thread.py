"""A VRRP ``Instance`` on an event loop of its own, on its own thread, driven from another loop.

Why: asyncio runs every ready callback of an iteration before the timers that fell due, so on a
loop that also runs thousands of health checks per second an advert can wait behind a burst of
probe completions. ``bench/failover`` measures both ways: on a quiet machine the shared loop
keeps the advert interval within 1.3 ms (p99) at 2,000 checks/s and this thread does no better
(GIL hand-overs: 2.8 ms); on a machine loaded well past its cores the shared loop's median went
to 50-70 ms and a loop of its own kept it at 2-3 ms. With both CPUs taken by busy processes
(``--hog``) an ordinary thread waits for the CPU like any process (p99 4.9 ms, max 10.6); under
``realtime`` with a 1 ms GIL switch interval: p99 0.4 ms, max 2.2. The thread is started from
the caller's thread and so shares its network namespace.

Everything here is called from the owner's loop: ``start``/``stop`` are awaited there,
``set_fault``/``set_priority`` hand over to the VRRP loop, and ``on_state`` is called back on
the owner's loop (never on the VRRP thread). ``state`` and ``counters()`` read plain
attributes and may be called from anywhere.

``realtime``: run the thread under ``SCHED_FIFO`` at that priority (keepalived's
``vrrp_rt_priority``), so that a wake-up is not queued behind other processes' time slices.
It needs ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` (and no ``RestrictRealtime=`` in the unit);
refused, the thread logs ``vrrp_realtime_refused`` and runs as an ordinary thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from vrrp.instance import Counters, Instance, OnState
from vrrp.machine import Machine
from vrrp.table import State

T = TypeVar("T")
log = structlog.get_logger("vrrp")


class InstanceThread:
    def __init__(
        self, instance: Instance, on_state: OnState | None = None, *, realtime: int | None = None
    ) -> None:
        if instance.on_state is not None:
            raise ValueError("give on_state to InstanceThread, not to the Instance it runs")
        if realtime is not None and not 1 <= realtime <= 99:
            raise ValueError(f"realtime priority {realtime} not in 1..99")
        self.instance = instance
        self.realtime = realtime
        self._on_state = on_state
        self._owner: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        instance.on_state = self._state_changed

    @property
    def state(self) -> State:
        return self.instance.state

    @property
    def machine(self) -> Machine:
        """For reading (priority, the master heard): it is changed on the VRRP thread."""
        return self.instance.machine

    @property
    def faults(self) -> frozenset[str]:
        return self.instance.faults

    def counters(self) -> Counters:
        return self.instance.counters()

    async def start(self) -> None:
        """Start the thread and its loop, then the instance on it."""
        if self._thread is not None:
            raise RuntimeError("InstanceThread already started")
        self._owner = asyncio.get_running_loop()
        loop = asyncio.new_event_loop()
        name = f"vrrp-{self.instance.config.vrid}"
        thread = threading.Thread(target=self._main, args=(loop,), name=name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            await self._run(self.instance.start())
        except BaseException:
            self._end_thread()
            raise

    async def stop(self) -> None:
        """Stop the instance (priority 0 advert when master), then the loop and its thread."""
        if self._thread is None:
            return
        try:
            await self._run(self.instance.stop())
        finally:
            self._end_thread()

    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.realtime is not None:
            try:  # pid 0: this thread only
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime))
            except OSError as exc:
                log.warning(
                    "vrrp_realtime_refused",
                    vrid=self.instance.config.vrid,
                    priority=self.realtime,
                    error=str(exc),
                    fix="allow SCHED_FIFO (systemd: LimitRTPRIO=, no RestrictRealtime=)",
                )
        loop.run_forever()

    def set_fault(self, reason: str, faulty: bool) -> None:
        if self._loop is None:  # not started: no other thread touches the instance
            self.instance.set_fault(reason, faulty)
        else:
            self._loop.call_soon_threadsafe(self.instance.set_fault, reason, faulty)

    def set_priority(self, priority: int) -> None:
        if self._loop is None:
            self.instance.set_priority(priority)
        else:
            self._loop.call_soon_threadsafe(self.instance.set_priority, priority)

    def _state_changed(self, state: State) -> None:  # on the VRRP thread
        if self._on_state is not None and self._owner is not None:
            self._owner.call_soon_threadsafe(self._on_state, state)

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._require_loop())
        return await asyncio.wrap_future(future)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("InstanceThread not started")
        return self._loop

    def _end_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
