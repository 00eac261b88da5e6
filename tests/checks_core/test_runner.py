"""The asyncio adapter (checks.runner) on a real event loop with fake probes and 20 ms intervals."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from checks.model import Check, CheckParams, HealthChanged, ProbeResult, StartProbe
from checks.runner import Done, Runner
from checks.schedule import Scheduler

OK = ProbeResult(True, 0.001, None)


@pytest.mark.asyncio
async def test_runner_probes_times_out_reports_and_stops_cleanly() -> None:
    calls: Counter[str] = Counter()
    cancelled: list[str] = []
    stuck_running = asyncio.Event()

    async def probe(spec: str) -> ProbeResult:
        calls[spec] += 1
        try:
            if spec == "hang":
                await asyncio.Event().wait()
            elif spec == "stuck":
                stuck_running.set()
                await asyncio.sleep(60)
            elif spec == "boom":
                raise RuntimeError("bug in probe")
            await asyncio.sleep(0.001)
            return OK
        except asyncio.CancelledError:
            cancelled.append(spec)
            raise

    changes: list[HealthChanged] = []
    both_down = asyncio.Event()

    def on_change(batch: list[HealthChanged]) -> None:
        changes.extend(batch)
        if {c.check_id for c in changes if not c.up} >= {"hang", "boom"}:
            both_down.set()

    sched = Scheduler[str](random.Random(1), max_in_flight=8)
    runner = Runner(sched, probe, on_change)
    params = CheckParams(interval=0.02, timeout=0.03, fall=2)
    runner.add([Check(name, name, params) for name in ("ok", "hang", "boom")])
    runner.start()
    await asyncio.wait_for(both_down.wait(), 2.0)

    snap = sched.snapshot()
    hang, boom = snap.checks["hang"].state.last, snap.checks["boom"].state.last
    assert hang is not None and hang.error == "timeout after 0.03s"
    assert boom is not None and boom.error == "RuntimeError: bug in probe"
    assert "hang" in cancelled  # the timeout cancelled the probe
    assert calls["ok"] >= 2 and not [c for c in changes if c.check_id == "ok"]
    assert sched.expired == 0  # the runner's timeout came first, not the scheduler's backstop

    runner.replace(
        [Check("ok", "ok", params), Check("stuck", "stuck", CheckParams(interval=0.02, timeout=60))]
    )
    await asyncio.wait_for(stuck_running.wait(), 2.0)
    assert set(sched.health()) == {"ok", "stuck"}

    await runner.stop()
    assert "stuck" in cancelled
    assert runner.probes_running == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
    before = calls.copy()
    await asyncio.sleep(0.05)
    assert calls == before  # nothing runs after stop


class FakeFast:
    """A fast probe as the runner sees it: ``finished`` and ``cancel()``."""

    def __init__(self) -> None:
        self.finished = False
        self.cancelled = False

    def cancel(self) -> None:
        self.finished = self.cancelled = True


@pytest.mark.asyncio
async def test_runner_fast_path_inline_results_and_stop() -> None:
    """Specs with a fast path start inline (no task): at once ("now"), later ("later", from a
    loop callback), never ("hang", closed by stop), or by raising ("boom": a failed attempt);
    the others ("slow") take the task path."""
    in_flight: list[FakeFast] = []
    task_calls: Counter[str] = Counter()

    async def probe(spec: str) -> ProbeResult:
        task_calls[spec] += 1
        await asyncio.sleep(0.001)
        return OK

    def fast(spec: str, done: Done[str], start: StartProbe[str]) -> FakeFast | None:
        if spec == "slow":
            return None
        if spec == "boom":
            raise RuntimeError("bug in start")
        running = FakeFast()
        if spec == "now":
            running.finished = True
            done(start, OK)
        elif spec == "later":
            asyncio.get_running_loop().call_later(0.002, done, start, OK)
            asyncio.get_running_loop().call_later(0.002, setattr, running, "finished", True)
        else:
            in_flight.append(running)
        return running

    sched = Scheduler[str](random.Random(2), max_in_flight=8)
    runner = Runner(sched, probe, lambda changes: None, fast=fast)
    params = CheckParams(interval=0.02, timeout=5)
    runner.add([Check(name, name, params) for name in ("now", "later", "hang", "boom", "slow")])
    runner.start()
    await asyncio.sleep(0.2)
    snap = sched.snapshot()
    for name in ("now", "later", "slow"):
        last = snap.checks[name].state.last
        assert last is not None and last.ok, name
        assert snap.checks[name].lag.count >= 5, name
    boom = snap.checks["boom"].state.last
    assert boom is not None and boom.error == "RuntimeError: bug in start"
    assert task_calls == Counter(slow=task_calls["slow"])  # only "slow" ran as a task
    assert [r.cancelled for r in in_flight] == [False]
    # "hang", and perhaps a "later" or "slow" in flight; "now" ones are not kept
    assert 1 <= runner.probes_running <= 3
    await runner.stop()
    assert [r.cancelled for r in in_flight] == [True]
    assert runner.probes_running == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.asyncio
async def test_a_kept_timer_is_never_late() -> None:
    """The runner keeps its timer when it fires no later than the next deadline (instead of
    replacing it per result): a check added while the timer waits for a later one, and a
    check left after a reload from a fast one to a slow one, both start on time."""
    loop = asyncio.get_running_loop()

    def fast(spec: str, done: Done[str], start: StartProbe[str]) -> FakeFast:
        running = FakeFast()

        def finish() -> None:
            running.finished = True
            done(start, OK)

        loop.call_later(0.001, finish)
        return running

    sched = Scheduler[str](random.Random(3), max_in_flight=64)
    runner = Runner(sched, fast_unused, lambda changes: None, fast=fast)
    runner.start()
    slow = CheckParams(interval=0.4, timeout=1)
    runner.add([Check("slow", "x", slow)])
    await asyncio.sleep(0.45)  # the timer now waits for the slow check's next round
    runner.add([Check(i, "x", CheckParams(interval=0.05, timeout=1)) for i in range(20)])
    await asyncio.sleep(0.3)
    snap = sched.snapshot()
    lags = [snap.checks[i].lag for i in range(20)]
    assert all(lag.count >= 4 for lag in lags)
    assert max(lag.max for lag in lags) < 0.1  # the tick (10 ms) and a busy machine; late: 0.3

    runner.replace([Check("other", "x", CheckParams(interval=0.15, timeout=1))])
    await asyncio.sleep(0.8)
    lag = sched.snapshot().checks["other"].lag
    assert lag.count >= 4
    assert lag.max < 0.1
    await runner.stop()


async def fast_unused(spec: str) -> ProbeResult:
    raise AssertionError("every probe here has a fast path")


@pytest.mark.asyncio
async def test_only_the_timer_starts_probes_on_its_ticks() -> None:
    """A result that finds attempts come due leaves them to the timer's next tick: no start
    happens in a probe's ``done`` (the good path ``ok`` or the general one), and none is late
    by more than a tick and a busy machine. (Starting them from the result's own wake spread
    starts and replies over about twice the loop wakes.)"""
    loop = asyncio.get_running_loop()
    tick = 0.01
    in_result = False
    starts: list[tuple[float, bool]] = []  # (loop time, inside a probe's result)

    def fast(spec: str, done: Done[str], start: StartProbe[str]) -> FakeFast:
        starts.append((loop.time(), in_result))
        running = FakeFast()

        def finish() -> None:
            nonlocal in_result
            running.finished = True
            in_result = True
            try:
                if spec == "ok":
                    done.ok(start, 0.001, loop.time())  # type: ignore[attr-defined]
                else:
                    done(start, ProbeResult(False, 0.001, "refused"))
            finally:
                in_result = False

        loop.call_later(0.0005 + 0.004 * random.random(), finish)
        return running

    sched = Scheduler[str](random.Random(5), max_in_flight=64)
    runner = Runner(sched, fast_unused, lambda changes: None, fast=fast, tick=tick)
    runner.start()
    params = CheckParams(interval=0.013, timeout=1, attempts=2, retry_delay=0.003)
    runner.add([Check(i, "ok" if i % 3 else "bad", params) for i in range(30)])
    await asyncio.sleep(0.5)
    await runner.stop()
    assert len(starts) > 300
    assert not [t for t, inside in starts if inside]
    assert max(c.lag.max for c in sched.snapshot().checks.values()) < 0.1


@pytest.mark.asyncio
async def test_a_wake_starts_a_batch_and_the_loop_runs_between_two() -> None:
    """Ten checks due at once, batches of three: each wake of the timer starts three, what
    else was ready on the loop runs before the next three, and all ten start without waiting
    for a tick (a wake that started hundreds was the loop's longest callback)."""
    loop = asyncio.get_running_loop()
    events: list[str] = []

    def fast(spec: str, done: Done[str], start: StartProbe[str]) -> FakeFast:
        events.append(spec)
        if len(events) == 1:
            loop.call_soon(events.append, "other")  # ready while the first batch starts
        return FakeFast()

    sched = Scheduler[str](random.Random(1), max_in_flight=64)
    runner = Runner(sched, fast_unused, lambda changes: None, fast=fast, tick=0.01, batch=3)
    params = CheckParams(interval=60, timeout=30)
    sched.add([Check(i, f"c{i}", params) for i in range(10)], loop.time() - 60)  # all due now
    began = loop.time()
    runner.start()
    for _ in range(20):
        await asyncio.sleep(0)
        if len(events) == 11:
            break
    await runner.stop()
    assert events.index("other") == 3
    assert sorted(e for e in events if e != "other") == sorted(f"c{i}" for i in range(10))
    assert loop.time() - began < 0.01  # batch after batch, no tick between them


def test_a_runner_needs_a_batch_of_one_or_more() -> None:
    with pytest.raises(ValueError, match="batch"):
        Runner(Scheduler[str](random.Random(1)), fast_unused, lambda changes: None, batch=0)


@pytest.mark.asyncio
async def test_results_that_come_at_once_leave_one_timer_between_batches() -> None:
    """A near server answers a probe inside its start (the result re-arms the timer): the next
    batch is still one wake, not one more chain of them per batch."""
    loop = asyncio.get_running_loop()
    started: list[str] = []

    def fast(spec: str, done: Done[str], start: StartProbe[str]) -> FakeFast:
        started.append(spec)
        running = FakeFast()
        running.finished = True
        done.ok(start, 0.0001, loop.time())  # type: ignore[attr-defined]
        return running

    sched = Scheduler[str](random.Random(1), max_in_flight=64)
    runner = Runner(sched, fast_unused, lambda changes: None, fast=fast, tick=0.01, batch=3)
    pumps = 0
    pump = runner._pump

    def counted() -> None:
        nonlocal pumps
        pumps += 1
        pump()

    runner._pump = counted  # type: ignore[method-assign]
    params = CheckParams(interval=60, timeout=30)
    sched.add([Check(i, f"c{i}", params) for i in range(10)], loop.time() - 60)
    runner.start()
    await asyncio.sleep(0.05)
    await runner.stop()
    assert sorted(started) == sorted(f"c{i}" for i in range(10))
    assert pumps <= 5  # 3 + 3 + 3 + 1, and at most one wake that finds nothing
