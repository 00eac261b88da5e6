"""The scheduler's timers and summary rows against what they replaced (issue 18).

- Timers: the scheduler keeps attempts not yet due as a heap of times plus the entries due at
  each (no tuple per attempt). ``heap_schedule.py`` here is the scheduler as it was with a heap
  of ``(time, seq, entry)`` tuples, kept as the reference: driven side by side with the same
  random checks (intervals, timeouts, attempts, retry delays, equal times on purpose), results,
  hung probes, removals, reloads, restores and clock, both must start the same probes at the
  same times in the same order and report the same changes, deadlines and snapshots.
- Rows and outcomes: what the scheduler keeps per check for summaries is exact tuples of
  atomics, which the cyclic collector untracks; a test asserts it after ``gc.collect()`` so a
  later change cannot silently make them tracked again.
"""

from __future__ import annotations

import dataclasses
import gc
import random
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from checks.model import Check, CheckParams, ProbeResult, StartProbe
from checks.policy import Phase, Policy
from checks.schedule import Scheduler
from tests.checks_core import heap_schedule
from tests.checks_core.sim import Sim


class FewOffsets(random.Random):
    """First-round offsets from a few fractions of the interval only: many checks due at the
    same time (the timers' ties), or spread like the real ones (``spread``)."""

    def __init__(self, seed: int, spread: bool) -> None:
        super().__init__(seed)
        self.spread = spread

    def random(self) -> float:
        value = super().random()
        return value if self.spread else int(value * 4) / 4


def _probe(start: StartProbe[str]) -> tuple[Any, ...]:
    return (start.probe_id, start.check_id, start.attempt, start.scheduled, start.started)


def _results(draw: random.Random) -> Any:
    """Results drawn in start order: both schedulers get the same as long as they start the
    same probes in the same order (which the test asserts). Latencies from a few values, so
    that results (and the retries they arm) come at equal times."""

    def behaviour(start: StartProbe[str], now: float) -> tuple[float, ProbeResult] | None:
        latency = draw.choice([0.0, 0.0, 0.01, 0.25, 0.7])
        roll = draw.random()
        if roll < 0.6:
            return latency, ProbeResult(True, latency, None)
        if roll < 0.65:
            return latency, ProbeResult(True, latency, None, weight=draw.randint(0, 9))
        if roll < 0.9:
            return latency, ProbeResult(False, latency, "refused")
        if roll < 0.95:
            return latency, ProbeResult(False, latency, "EMFILE", local="EMFILE")
        return None  # never answers: the backstop fails it

    return behaviour


class OkSim(Sim):
    """Good results through ``probe_ok`` (the runner's fast path), others ``probe_done``."""

    def step(self) -> None:
        sched = self.sched
        real = sched.probe_done

        def probe_done(start: StartProbe[str], result: ProbeResult, now: float) -> Any:
            if result.ok and result.weight is None and result.error is None:
                return sched.probe_ok(start, result.latency, now)
            return real(start, result, now)

        sched.probe_done = probe_done  # type: ignore[method-assign]
        try:
            super().step()
        finally:
            del sched.probe_done


params = st.builds(
    CheckParams,
    interval=st.sampled_from([0.5, 1.0, 1.0, 2.5, 0.3]),
    timeout=st.sampled_from([0.2, 0.5, 1.0]),
    rise=st.integers(1, 2),
    fall=st.integers(1, 2),
    attempts=st.integers(1, 3),
    retry_delay=st.sampled_from([0.0, 0.25, 0.5]),
    initial=st.sampled_from(["up", "down"]),
)
# what happens between two comparisons: run to a time, wake at an odd time, or change the set
actions = st.one_of(
    st.tuples(st.just("run"), st.floats(0.0, 3.0)),
    st.tuples(st.just("poke"), st.floats(0.0, 0.4)),
    st.tuples(st.just("remove"), st.integers(0, 7)),
    st.tuples(st.just("add"), st.integers(0, 7)),
    st.tuples(st.just("reload"), st.integers(0, 7)),
    st.tuples(st.just("restore"), st.just(0)),
)


def in_batches(sched: Scheduler[str], batch: int) -> None:
    """``sched.due(now)`` made of ``due(now, batch)`` calls until one starts fewer than
    ``batch``: what the runner does, its next batch after the loop's other work, at the same
    time for the scheduler."""
    real = sched.due

    def due(now: float, limit: int | None = None) -> list[StartProbe[str]]:
        starts: list[StartProbe[str]] = []
        while True:
            got = real(now, batch)
            assert len(got) <= batch
            starts += got
            if len(got) < batch:
                return starts

    sched.due = due  # type: ignore[method-assign]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    each=st.lists(params, min_size=1, max_size=8),
    cap=st.sampled_from([1, 2, 3, 16]),
    spread=st.booleans(),
    ok_path=st.booleans(),
    batch=st.sampled_from([None, 1, 2, 5]),
    steps=st.lists(actions, min_size=1, max_size=25),
)
def test_the_timers_start_probes_as_the_heap_of_tuples_did(
    seed: int,
    each: list[CheckParams],
    cap: int,
    spread: bool,
    ok_path: bool,
    batch: int | None,
    steps: list[tuple[str, float]],
) -> None:
    """Also started in batches (``batch``): the same probes in the same order as the
    reference's one call, the others left due as they were."""
    checks = [Check(f"rs{i}", f"spec{i}", p) for i, p in enumerate(each)]
    sim_class = OkSim if ok_path else Sim
    sims = []
    for make in (Scheduler, heap_schedule.Scheduler):
        sched = cast(Scheduler[str], make(FewOffsets(seed, spread), max_in_flight=cap))
        if batch is not None and make is Scheduler:
            in_batches(sched, batch)
        sim = sim_class(sched, _results(random.Random(seed)))
        sim.changes += sched.add(checks, 0.0)
        sims.append(sim)
    new, old = sims
    for action, value in steps:
        check = checks[int(value) % len(checks)]
        for sim in sims:
            sched = sim.sched
            if action == "run":
                sim.run_until(sim.now + value)
            elif action == "poke":  # a wake-up at a time that is no deadline
                sim.now += value
                sim.step()
            elif action == "remove":
                sched.remove([check.id])
            elif action == "add" and check.id not in sched.health():
                sim.changes += sched.add([check], sim.now)
            elif action == "reload":  # one check changed (starts afresh), the others kept
                changed = dataclasses.replace(
                    check, params=dataclasses.replace(check.params, interval=0.75)
                )
                wanted = [changed if c.id == check.id else c for c in checks]
                sim.changes += sched.replace(wanted, sim.now)
            elif action == "restore":
                sim.changes += sched.restore(sched.snapshot().checks, sim.now)
        assert [_probe(s) for s in new.started] == [_probe(s) for s in old.started]
        assert new.changes == old.changes
        assert new.sched.next_deadline() == old.sched.next_deadline()
        assert new.sched.due_now(new.now) == old.sched.due_now(old.now)
        assert new.sched.in_flight == old.sched.in_flight
        assert dataclasses.astuple(new.sched.snapshot()) == dataclasses.astuple(
            old.sched.snapshot()
        )
    assert len(new.started) == len(old.started)


def _summary_of_the_reference(sched: Any) -> list[tuple[Any, ...]]:
    """The reference's rows (check id, spec, up, phase, transitions, ProbeOutcome) in the
    shape the new ones are read in: (check id, spec, up, phase value, transitions, tuple)."""
    return [
        (cid, spec, up, phase.value, transitions, None if last is None else last.astuple())
        for cid, spec, up, phase, transitions, last in sched.rows()
    ]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    each=st.lists(params, min_size=1, max_size=8),
    removals=st.lists(st.integers(0, 7), max_size=12),
)
def test_rows_by_index_read_as_the_rows_with_ids_and_outcomes(
    seed: int, each: list[CheckParams], removals: list[int]
) -> None:
    """Rows that name their check by index (into the list handed out with them) read back as
    the reference's rows that held the check's id, spec and a ProbeOutcome, through removals
    and re-adds (which renumber the checks once enough were removed)."""
    checks = [Check(f"rs{i}", f"spec{i}", p) for i, p in enumerate(each)]
    sims = []
    for make in (Scheduler, heap_schedule.Scheduler):
        sched = cast(Scheduler[str], make(FewOffsets(seed, True), max_in_flight=4))
        sim = Sim(sched, _results(random.Random(seed)))
        sim.changes += sched.add(checks, 0.0)
        sims.append(sim)
    new, old = sims
    for n, which in enumerate(removals):
        for sim in sims:
            sim.run_until(sim.now + 1.7)
        taken = new.sched.rows()
        got = [
            (taken.checks[i].id, taken.checks[i].spec, up, phase, transitions, last)
            for i, up, phase, transitions, last in taken.rows
        ]
        assert got == _summary_of_the_reference(old.sched)
        check = checks[which % len(checks)]
        for sim in sims:
            sim.sched.remove([check.id])
            if n % 3:
                sim.changes += sim.sched.add([check], sim.now)
        # what was taken keeps its meaning whatever happened to the checks since
        assert [
            (taken.checks[i].id, taken.checks[i].spec, up, phase, transitions, last)
            for i, up, phase, transitions, last in taken.rows
        ] == got


def test_every_phase_value_is_its_name_as_status_shows_it() -> None:
    """Rows carry a phase by value; status showed ``phase.name.lower()``."""
    assert [p.value for p in Phase] == [p.name.lower() for p in Phase]


def test_many_removals_renumber_the_checks_and_free_the_removed_ones() -> None:
    each = CheckParams(interval=1.0, timeout=0.5)
    sched: Scheduler[str] = Scheduler(random.Random(1))
    sched.add([Check(f"rs{i}", f"spec{i}", each) for i in range(100)], 0.0)
    before = sched.rows()
    for round_ in range(1, 6):  # reloads that replace most checks
        sched.replace([Check(f"rs{i}", f"spec{i}.{round_}", each) for i in range(100)], 0.0)
    taken = sched.rows()
    assert len(taken.checks) < 300  # not the 600 checks ever added
    assert [taken.checks[row[0]].spec for row in taken.rows] == [f"spec{i}.5" for i in range(100)]
    assert [before.checks[row[0]].spec for row in before.rows] == [f"spec{i}" for i in range(100)]


def test_rows_and_last_outcomes_are_untracked_by_the_collector() -> None:
    """What the scheduler keeps per check for summaries, and each policy's last outcome, is
    left alone by the cyclic collector (exact tuples of atomics, untracked at the first
    collection they survive): at 100,000 checks they were ~190,000 of the ~300,000 objects
    each full collection walked (issue 18). Also the timers: no object per attempt."""
    each = CheckParams(interval=1.0, timeout=0.5, attempts=2, retry_delay=0.2)
    sched: Scheduler[str] = Scheduler(random.Random(3), max_in_flight=8)
    sched.add([Check(f"rs{i}", f"spec{i}", each) for i in range(40)], 0.0)
    draw = random.Random(4)
    sim = Sim(
        sched,
        lambda start, now: (0.01, ProbeResult(draw.random() < 0.7, 0.01, None)),
    )
    sim.run_until(10.0)
    for start in sched.due(sim.now + 1.0):  # with good results through the fast path too
        sched.probe_ok(start, 0.002, sim.now + 1.0)
    taken = sched.rows()
    # The young collection that first sees them untracks them (in the daemon the dict that
    # holds the rows is older, frozen at READY: they are reached from outside the young
    # generation and examined in the order made, an outcome before its row). A full
    # collection here reaches each row through the (young) dict first, before its outcome,
    # and leaves that row for the next collection: not what the daemon sees.
    gc.collect(0)
    gc.collect()
    rows = taken.rows
    assert rows and all(row[4] is not None for row in rows)
    assert not any(gc.is_tracked(row) for row in rows)
    assert not any(gc.is_tracked(row[4]) for row in rows)
    for entry in sched._entries.values():
        assert entry.policy.outcome is not None
        assert not gc.is_tracked(entry.policy.outcome)
        assert not gc.is_tracked(entry.next_at)
    # the timers hold the entries themselves: nothing tracked besides their two containers
    # (and a list for each time several entries share, none here)
    assert not any(isinstance(v, list) for v in sched._due_at.values())
    assert all(type(t) is float for t in sched._times)


def test_a_policy_restored_from_a_state_keeps_its_outcome_as_a_tuple() -> None:
    policy = Policy("rs", CheckParams())
    policy.record_probe(ProbeResult(False, 0.5, "refused", 3), 2.0, 2)
    again = Policy("rs", CheckParams(), policy.state)
    assert again.outcome == (False, 0.5, "refused", 3, 2.0, 2) == policy.outcome
    assert type(again.outcome) is tuple and again.last == policy.last
