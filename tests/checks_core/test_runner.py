"""The asyncio adapter (checks.runner) on a real event loop with fake probes and 20 ms intervals."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from checks.model import Check, CheckParams, HealthChanged, ProbeResult
from checks.runner import Runner
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
