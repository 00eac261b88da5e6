"""A stepped-clock driver for the pure scheduler: fake probes that take a set time.

``behaviour(start, now)`` says how a probe goes: ``(duration, ProbeResult)``, or ``None`` for a
probe that never returns (until :meth:`Sim.finish` delivers a late result by hand).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from checks.model import Check, CheckParams, HealthChanged, ProbeResult, StartProbe
from checks.schedule import Scheduler

Behaviour = Callable[[StartProbe[str], float], tuple[float, ProbeResult] | None]

OK = ProbeResult(True, 0.001, None)
FAIL = ProbeResult(False, 0.001, "connection refused")


def instant(ok: bool = True) -> Behaviour:
    result = OK if ok else FAIL
    return lambda start, now: (0.0, result)


@dataclass
class Sim:
    sched: Scheduler[str]
    behaviour: Behaviour
    now: float = 0.0
    started: list[StartProbe[str]] = field(default_factory=list)
    changes: list[HealthChanged] = field(default_factory=list)
    hung: list[StartProbe[str]] = field(default_factory=list)
    max_in_flight: int = 0
    _done: list[tuple[float, int, StartProbe[str], ProbeResult]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def run_until(self, end: float) -> None:
        while True:
            wake = self.sched.next_deadline()
            if self._done and (wake is None or self._done[0][0] < wake):
                wake = self._done[0][0]
            if wake is None or wake > end:
                break
            self.now = max(self.now, wake)
            self.step()
        self.now = max(self.now, end)

    def step(self) -> None:
        now = self.now
        while self._done and self._done[0][0] <= now:
            _, _, start, result = heapq.heappop(self._done)
            self.changes += self.sched.probe_done(start, result, now)
        self.changes += self.sched.expire(now)
        for start in self.sched.due(now):
            assert start.started == now
            self.started.append(start)
            outcome = self.behaviour(start, now)
            if outcome is None:
                self.hung.append(start)
            else:
                duration, result = outcome
                heapq.heappush(self._done, (now + duration, next(self._seq), start, result))
        self.max_in_flight = max(self.max_in_flight, self.sched.in_flight)
        assert self.sched.in_flight <= self.sched.max_in_flight

    def finish(self, start: StartProbe[str], result: ProbeResult) -> list[HealthChanged]:
        """Deliver a result by hand (a late one, say)."""
        changes = self.sched.probe_done(start, result, self.now)
        self.changes += changes
        return changes

    def starts_of(self, check_id: object) -> list[StartProbe[str]]:
        return [s for s in self.started if s.check_id == check_id]

    def changes_of(self, check_id: object) -> list[HealthChanged]:
        return [c for c in self.changes if c.check_id == check_id]


def checks(n: int, params: CheckParams, spec: str = "tcp") -> list[Check[str]]:
    return [Check(i, spec, params) for i in range(n)]


def scheduler(
    seed: int = 1, max_in_flight: int = 256, initial: Iterable[Check[str]] = (), now: float = 0.0
) -> Scheduler[str]:
    sched: Scheduler[str] = Scheduler(random.Random(seed), max_in_flight=max_in_flight)
    sched.add(initial, now)
    return sched
