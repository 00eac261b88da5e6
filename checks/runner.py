"""The asyncio adapter of the health-check scheduler: clock, one timer, probes.

It owns ``loop.time()`` and a single ``loop.call_at`` timer re-armed to the scheduler's
``next_deadline()``; it runs each ``StartProbe``, feeds the result back and passes health
changes to ``on_change``.

A probe runs one of two ways:

- fast: if ``fast(spec, done, start)`` returns a probe (the plain-HTTP status-only and TCP
  probes: :mod:`checks.probes.poller`), it was started inline, right here in the timer's
  callback, and ends with a plain call ``done(start, result)``: no task, no coroutine. Such a
  probe enforces its own timeout and never raises.
- task: otherwise ``probe(spec)`` runs as a task. Probes enforce their own timeout (their
  error says what they were doing); a ``loop.call_at`` timer ``BACKSTOP`` seconds later
  cancels a probe that did not, and its result is ``timeout after <timeout>s``. A probe that
  raises counts as a failed attempt with the exception as its error.

A result with ``local`` set (the director could not run the probe: out of file descriptors,
ports, memory; a probe that raised such an ``OSError`` too) goes to the scheduler as a void
round and is counted in :attr:`Runner.local_faults`, which also says when to log
``probe_local_failure`` (at most once per reason every 10 s, with the count since the last line).

:meth:`Runner.stop` cancels the timer, closes every fast probe and cancels every task probe
and waits for them, so nothing is left pending or open.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, Literal, Protocol, TypeVar

import structlog

from checks.local import LocalFaults, local_error, local_reason
from checks.model import Check, CheckId, HealthChanged, ProbeResult, StartProbe
from checks.schedule import CheckStatus, Scheduler

S = TypeVar("S")
Probe = Callable[[S], Awaitable[ProbeResult]]
OnChange = Callable[[list[HealthChanged]], None]


class Running(Protocol):
    """A fast probe in flight, as the runner sees it."""

    @property
    def finished(self) -> bool: ...

    def cancel(self) -> None:
        """Close it without a verdict."""


Done = Callable[[StartProbe[S], ProbeResult], None]
FastStart = Callable[[S, Done[S], StartProbe[S]], Running | None]


class FastDone(Generic[S]):
    """The ``done`` the runner hands to ``fast``: call it with ``(start, result)``; or, for a
    good result without a weight or an error (the hot path), call its
    ``ok(start, latency, now)`` (``now``: the loop's time): the same, without a result
    object (the poller's probes do: :mod:`checks.probes.poller`)."""

    __slots__ = ("done", "ok")

    def __init__(self, done: Done[S], ok: Callable[[StartProbe[S], float, float], None]) -> None:
        self.done = done
        self.ok = ok

    def __call__(self, start: StartProbe[S], result: ProbeResult) -> None:
        self.done(start, result)


log = structlog.get_logger("director.checks")

BACKSTOP = 0.1  # seconds after a probe's timeout at which the runner cancels it
# Probe starts are rounded up to a multiple of TICK seconds, so that several share one wake of
# the loop (and their replies few more). Only the timer starts probes: a result that finds
# attempts come due leaves them to the next tick, where they start in one batch. (Starting
# them on the result's own wake, as before, spread the starts, hence the replies, over more
# wakes: at 2,000 checks/s, 446 loop wakes a second against 238, and 340 scheduler.due()
# calls against 100. In 30 s runs beside main, the probe changes of the same pass alone gave
# 2.5 % less CPU, with this 6.7 %.) A start is at most a tick late, as the timer's already
# were. 0: every start at its own time.
TICK = 0.01
# At most BATCH probes are started by one wake of the timer; the rest come due after whatever
# else is ready on the loop (a request, a result), not at the next tick. Starting every due
# probe in one callback made it the loop's longest: at 10,000 checks a second a wake that
# found hundreds due (the loop late behind a status, a reading's thread holding the lock at
# every system call) ran for up to 446 ms, 606 of them 20 ms or more in a run (bench.scale
# --profile gc, the loop's callbacks timed), and nothing else ran meanwhile.
BATCH = 64


class Runner(Generic[S]):
    def __init__(
        self,
        scheduler: Scheduler[S],
        probe: Probe[S],
        on_change: OnChange,
        *,
        fast: FastStart[S] | None = None,
        tick: float = TICK,
        batch: int = BATCH,
        local_faults: LocalFaults | None = None,
    ) -> None:
        if tick < 0:
            raise ValueError(f"tick must be >= 0, got {tick}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._tick = tick
        self._batch = batch
        self.scheduler = scheduler
        self._probe = probe
        self._fast_start = fast
        self._fast: dict[int, Running] = {}  # probe_id -> fast probe in flight
        self._fast_handler = FastDone(self._fast_done, self._fast_ok)
        self._on_change = on_change
        self.local_faults = local_faults if local_faults is not None else LocalFaults()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # when the timer fires (inf: not armed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: dict[int, asyncio.TimerHandle] = {}  # probe_id -> its timeout
        self._timed_out: dict[int, asyncio.Task[None]] = {}  # probe_id -> task it cancelled
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin on the running loop (call from a coroutine). A runner starts once: after
        :meth:`stop`, build a new one (and carry state with ``Scheduler.restore``)."""
        if self._stopped or self._loop is not None:
            raise RuntimeError("a Runner starts once")
        self._loop = asyncio.get_running_loop()
        self._pump()

    async def stop(self) -> None:
        """Cancel the timer and every probe in flight, and wait until they are gone."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        for deadline in self._deadlines.values():
            deadline.cancel()
        self._deadlines.clear()
        fast = list(self._fast.values())
        self._fast.clear()
        for probe in fast:
            probe.cancel()
        if fast:
            await asyncio.sleep(0)  # a cancelled probe's helper task (llhttp fallback) ends
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    @property
    def probes_running(self) -> int:
        return len(self._tasks) + len(self._fast)

    # -- changes to the set of checks (a reload) -----------------------------------------------

    def add(self, checks: Iterable[Check[S]]) -> None:
        self._emit(self.scheduler.add(checks, self.now()))
        self._arm()

    def remove(self, check_ids: Iterable[CheckId]) -> None:
        self.scheduler.remove(check_ids)
        self._arm()

    def replace(self, checks: Iterable[Check[S]]) -> None:
        self._emit(self.scheduler.replace(checks, self.now()))
        self._arm()

    def restore(self, previous: Mapping[CheckId, CheckStatus[S]]) -> None:
        self._emit(self.scheduler.restore(previous, self.now()))

    # -- internals ---------------------------------------------------------------------------

    def now(self) -> float:
        """The loop's clock (the runner's loop once started; any thread may ask then)."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _pump(self) -> None:
        self._timer, self._timer_at = None, math.inf
        loop = self._loop
        if self._stopped or loop is None:
            return
        full = False
        try:
            now = loop.time()
            self._emit(self.scheduler.expire(now))
            full = self._start_due(loop, now)
        finally:
            if full and not self._stopped:  # more may be due: the next batch once what
                # else is ready on the loop has run
                if self._timer is not None:  # armed meanwhile by a result that came at once
                    self._timer.cancel()
                self._timer, self._timer_at = loop.call_at(now, self._pump), now
            else:
                self._arm()  # whatever went wrong, keep the checks running

    def _start_due(self, loop: asyncio.AbstractEventLoop, now: float) -> bool:
        """Start what is due, :data:`BATCH` at most; whether that many were."""
        fast, running, done = self._fast_start, self._fast, self._fast_handler
        starts = self.scheduler.due(now, self._batch)
        for start in starts:
            if fast is not None:
                # The fast way if the spec has one (the hot path: inline, no method).
                try:
                    probe = fast(start.spec, done, start)
                except Exception as exc:  # a bug, or no fd for the poller: others go on
                    done(start, _raised(start, exc, 0.0))
                    continue
                if probe is not None:
                    if not probe.finished:  # (it may have ended: refused at once)
                        running[start.probe_id] = probe
                    continue
            task = loop.create_task(self._run(start))
            self._tasks.add(task)  # _run takes it out (no done callback: one loop turn less)
        return len(starts) >= self._batch

    def _arm(self, when: float | Literal[False] | None = False) -> None:
        """(Re)arm the timer at the scheduler's next deadline (``when`` if already known)."""
        if self._stopped or self._loop is None:
            return
        if when is False:
            when = self.scheduler.next_deadline()
        timer = self._timer
        if timer is not None and when is not None and self._timer_at <= when:
            # Kept: a timer at or before the deadline wakes no later than needed (rounding
            # ``when`` up to a tick only moves it later), and one that fires early finds
            # nothing due and re-arms (no handle per result).
            return
        if when is not None and self._tick:
            when = max(when, math.ceil(when / self._tick) * self._tick)  # (float rounding)
        if timer is not None:
            if when is not None and self._timer_at <= when:
                return
            timer.cancel()
            self._timer, self._timer_at = None, math.inf
        if when is not None:
            self._timer = self._loop.call_at(when, self._pump)
            self._timer_at = when

    def _fast_done(self, start: StartProbe[S], result: ProbeResult) -> None:
        self._fast.pop(start.probe_id, None)
        loop = self._loop
        if self._stopped or loop is None:
            return
        now = loop.time()
        if result.local is not None:
            self._local(start, result, now)
        changes = self.scheduler.probe_done(start, result, now)
        if changes:
            self._emit(changes)
        self._after_result(loop, now)

    def _fast_ok(self, start: StartProbe[S], latency: float, now: float) -> None:
        """:meth:`_fast_done` of a good result without a weight or an error (no result object;
        ``now`` from the probe's wake, no clock read). The hot path, thousands a second: what
        :meth:`_after_result` and :meth:`_arm` do for it, inline (one function per result)."""
        self._fast.pop(start.probe_id, None)
        loop = self._loop
        if self._stopped or loop is None:
            return
        scheduler = self.scheduler
        changes = scheduler.probe_ok(start, latency, now)
        if changes:
            self._emit(changes)
        if (
            self._timer is not None
            and self._timer_at <= scheduler.armed_at
            and scheduler.in_flight < scheduler.max_in_flight - 1
            and (self._tick or not scheduler.due_now(now))
        ):
            # The timer wakes no later than the new attempt, and no later than the next tick
            # for what came due meanwhile (see _after_result).
            return
        self._after_result(loop, now)

    def _after_result(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """After a fast probe's result: re-arm the timer (at the next tick if something came
        due)."""
        scheduler = self.scheduler
        if scheduler.due_now(now):
            # Started by the timer at the next tick, with those it finds due (see TICK).
            self._arm()
        elif self._timer is not None and scheduler.in_flight < scheduler.max_in_flight - 1:
            # The timer is at or before every deadline there was; a result adds one, the
            # next attempt of its check (scheduler.armed_at): no need to look at the rest.
            # (Unless the slots were all taken: then the freed one makes the attempts on the
            # timers count again, which the deadline before did not look at.)
            self._arm(scheduler.armed_at)
        else:
            self._arm()

    def _time_out(self, probe_id: int, task: asyncio.Task[None]) -> None:
        self._deadlines.pop(probe_id, None)
        self._timed_out[probe_id] = task
        task.cancel()

    async def _run(self, start: StartProbe[S]) -> None:
        assert self._loop is not None
        loop = self._loop
        began = loop.time()
        task = asyncio.current_task(loop)
        assert task is not None
        self._deadlines[start.probe_id] = loop.call_at(
            began + start.timeout + BACKSTOP, self._time_out, start.probe_id, task
        )
        try:
            result = await self._probe(start.spec)
        except asyncio.CancelledError:
            if self._timed_out.pop(start.probe_id, None) is None:
                raise  # stopped, not timed out
            task.uncancel()
            error = f"timeout after {start.timeout:g}s"
            result = ProbeResult(False, loop.time() - began, error)
        except TimeoutError as exc:  # the probe's own, not ours
            result = ProbeResult(False, loop.time() - began, repr(exc))
        except Exception as exc:  # a probe bug must not stop the checks
            result = _raised(start, exc, loop.time() - began)
        finally:
            deadline = self._deadlines.pop(start.probe_id, None)
            if deadline is not None:
                deadline.cancel()
            self._timed_out.pop(start.probe_id, None)
            self._tasks.discard(task)  # nothing below awaits: the task ends in this step
        if self._stopped:
            return
        now = loop.time()
        if result.local is not None:
            self._local(start, result, now)
        self._emit(self.scheduler.probe_done(start, result, now))
        self._arm()

    def _local(self, start: StartProbe[S], result: ProbeResult, now: float) -> None:
        assert result.local is not None
        line = self.local_faults.record(result.local, result.error or "", start.check_id, now)
        if line is not None:
            log.warning(
                "probe_local_failure",
                reason=line.reason,
                count=line.count,
                total=line.total,
                error=line.error,
            )

    def _emit(self, changes: list[HealthChanged]) -> None:
        if not changes:
            return
        try:
            self._on_change(changes)
        except Exception:
            log.exception("health-change handler failed", changes=len(changes))


def _raised(start: StartProbe[Any], exc: Exception, latency: float) -> ProbeResult:
    """The result of a probe that raised: a local failure if the error is one, else a failed
    attempt (a probe bug: logged)."""
    error = f"{type(exc).__name__}: {exc}"
    reason = local_reason(exc)
    if reason is not None:
        return ProbeResult(False, latency, local_error(reason, error), local=reason)
    log.warning("probe raised", check=repr(start.check_id), error=repr(exc))
    return ProbeResult(False, latency, error)
