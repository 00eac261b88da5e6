"""The pure scheduler (checks.schedule) on a stepped clock: offsets, attempts, the concurrency cap,
lag, timeouts, late results, reloads."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.model import Check, CheckParams, HealthChanged, ProbeResult, StartProbe
from checks.policy import Phase
from checks.schedule import Scheduler
from tests.checks_core.sim import FAIL, OK, Sim, checks, instant, scheduler


class ZeroRandom(random.Random):
    """Every offset 0: all checks due at once."""

    def random(self) -> float:
        return 0.0


def zero_scheduler(max_in_flight: int = 256) -> Scheduler[str]:
    return Scheduler(ZeroRandom(), max_in_flight=max_in_flight)


# -- start offsets and cadence -------------------------------------------------------------------


def test_first_rounds_spread_across_the_interval() -> None:
    sched = scheduler(seed=7, initial=checks(2000, CheckParams(interval=1.0)))
    sim = Sim(sched, instant())
    sim.run_until(0.9999)
    firsts = [s.started for s in sim.started]
    assert len(firsts) == 2000 and len(set(sim.started)) == 2000
    assert all(0.0 <= t < 1.0 for t in firsts)
    per_ms = Counter(int(t * 1000) for t in firsts)
    assert max(per_ms.values()) <= 10  # ~2 a ms on average
    per_tenth = Counter(int(t * 10) for t in firsts)
    assert all(150 <= n <= 250 for n in per_tenth.values())


def test_rounds_keep_their_phase_at_a_fixed_rate() -> None:
    sched = scheduler(seed=3, initial=checks(50, CheckParams(interval=2.0)))
    sim = Sim(sched, lambda start, now: (0.3, OK))
    sim.run_until(60.0)
    for i in range(50):
        times = [s.started for s in sim.starts_of(i)]
        assert len(times) == 30
        assert all(b - a == pytest.approx(2.0) for a, b in itertools.pairwise(times))
    assert sched.snapshot().lag.max == 0.0


def test_a_round_that_overruns_its_interval_skips_to_the_next_slot_in_phase() -> None:
    sched = zero_scheduler()
    sched.add([Check("slow", "tcp", CheckParams(interval=1.0, timeout=3.0))], 0.0)
    sim = Sim(sched, lambda start, now: (2.5, OK))
    sim.run_until(9.5)
    assert [s.started for s in sim.started] == [0.0, 3.0, 6.0, 9.0]
    assert sched.overruns == 6


# -- attempts ------------------------------------------------------------------------------------


def attempts_sim(fail_attempts: set[int], fall: int = 1) -> Sim:
    params = CheckParams(interval=10.0, attempts=3, retry_delay=0.5, fall=fall)
    sched = zero_scheduler()
    sched.add([Check("rs", "tcp", params)], 0.0)
    return Sim(sched, lambda s, now: (0.1, FAIL if s.attempt in fail_attempts else OK))


def test_one_attempt_of_n_succeeding_makes_a_good_round() -> None:
    sim = attempts_sim({1, 2})
    sim.run_until(5.0)
    assert [(s.attempt, s.started) for s in sim.started] == [(1, 0.0), (2, 0.6), (3, 1.2)]
    assert sim.changes == []
    assert sim.sched.rounds == 1
    assert sim.sched.next_deadline() == 10.0


def test_all_attempts_failing_count_as_one_bad_round() -> None:
    sim = attempts_sim({1, 2, 3}, fall=2)
    sim.run_until(5.0)
    assert len(sim.started) == 3 and sim.changes == []
    assert sim.sched.snapshot().checks["rs"].state.bad_streak == 1
    sim.run_until(15.0)
    assert [s.started for s in sim.started][3:] == [10.0, pytest.approx(10.6), pytest.approx(11.2)]
    (change,) = sim.changes
    assert not change.up and change.at == pytest.approx(11.3)
    assert change.reason == "2 failed round(s) in a row (fall 2): connection refused"


# -- the concurrency cap and lag -----------------------------------------------------------------


def test_probes_wait_for_a_free_slot_and_their_lag_is_recorded() -> None:
    sched = zero_scheduler(max_in_flight=2)
    sched.add(checks(5, CheckParams(interval=10.0)), 0.0)
    sim = Sim(sched, lambda start, now: (1.0, OK))
    sim.run_until(5.0)
    assert [(s.check_id, s.started, s.lag) for s in sim.started] == [
        (0, 0.0, 0.0),
        (1, 0.0, 0.0),
        (2, 1.0, 1.0),
        (3, 1.0, 1.0),
        (4, 2.0, 2.0),
    ]
    snap = sched.snapshot()
    assert (snap.lag.count, snap.lag.max, snap.lag.mean) == (5, 2.0, 0.8)
    assert snap.checks[4].lag.last == 2.0
    assert sim.max_in_flight == 2


def test_the_cap_is_never_exceeded_under_overload() -> None:
    sched = scheduler(seed=5, max_in_flight=10, initial=checks(100, CheckParams(interval=1.0)))
    sim = Sim(sched, lambda start, now: (0.25, OK))  # wants 25 in flight
    sim.run_until(30.0)
    assert sim.max_in_flight == 10
    scheduled = [s.scheduled for s in sim.started]
    assert scheduled == sorted(scheduled)  # first come, first served
    assert all(s.lag >= 0 for s in sim.started) and max(s.lag for s in sim.started) > 0.5
    assert sched.overruns > 0


def test_a_full_cap_wakes_only_for_timeouts() -> None:
    sched = zero_scheduler(max_in_flight=1)
    sched.add(checks(3, CheckParams(interval=10.0, timeout=2.0)), 0.0)
    (start,) = sched.due(0.0)
    assert sched.next_deadline() == 3.0  # timeout + grace; the two waiting ones need a slot
    sched.probe_done(start, OK, 0.5)
    assert sched.next_deadline() == 0.0  # a slot is free: start the waiting one now
    assert [s.lag for s in sched.due(0.5)] == [0.5]


# -- timeouts and late results -------------------------------------------------------------------


def test_a_probe_with_no_result_fails_and_keeps_its_slot_until_it_ends() -> None:
    sched = zero_scheduler(max_in_flight=4)
    sched.add([Check("rs", "tcp", CheckParams(interval=10.0, timeout=2.0))], 0.0)
    sim = Sim(sched, lambda start, now: None)
    sim.run_until(5.0)
    assert sim.changes == [
        HealthChanged("rs", False, 3.0, "1 failed round(s) in a row (fall 1): no result within 2s")
    ]
    assert sched.in_flight == 1 and sched.expired == 1
    sim.run_until(10.0)
    assert sched.in_flight == 2  # the next round runs alongside the hung probe
    assert sim.finish(sim.hung[0], OK) == []  # late: frees the slot, changes nothing
    assert sched.in_flight == 1 and sched.late_results == 1
    assert not sched.health()["rs"]


def test_a_timed_out_attempt_is_retried() -> None:
    sched = zero_scheduler()
    sched.add([Check("rs", "tcp", CheckParams(timeout=1.0, attempts=2, retry_delay=0.5))], 0.0)
    sim = Sim(sched, lambda start, now: None if start.attempt == 1 else (0.1, OK))
    sim.run_until(4.0)
    assert [(s.attempt, s.started) for s in sim.started] == [(1, 0.0), (2, 2.5)]
    assert sim.changes == []


def test_removal_while_a_probe_is_in_flight() -> None:
    sched = zero_scheduler()
    sched.add(checks(2, CheckParams(interval=10.0)), 0.0)
    sim = Sim(sched, lambda start, now: (2.0, FAIL))
    sim.run_until(1.0)
    sched.remove([0])
    assert sched.in_flight == 2
    sim.run_until(29.0)
    assert [s.check_id for s in sim.started] == [0, 1, 1, 1]
    assert [c.check_id for c in sim.changes] == [1]
    assert sched.late_results == 1 and sched.in_flight == 0
    assert set(sched.health()) == {1}


def test_a_result_nobody_asked_for_is_counted_and_ignored() -> None:
    sched = zero_scheduler()
    bogus = StartProbe(99, "x", "tcp", 1, 0.0, 0.0, 1.0)
    assert sched.probe_done(bogus, OK, 1.0) == []
    assert sched.unknown_results == 1


# -- reloads -------------------------------------------------------------------------------------


def test_replace_carries_unchanged_checks_and_resets_changed_ones() -> None:
    params = CheckParams(interval=10.0, timeout=5.0)
    sched = zero_scheduler()
    sched.add([Check(n, "tcp", params) for n in "abcd"], 0.0)
    first = {s.check_id: s for s in sched.due(0.0)}
    for name in "abcd":
        sched.probe_done(first[name], FAIL, 1.0)  # all down
    second = {s.check_id: s for s in sched.due(10.0)}  # all in flight
    changes = sched.replace(
        [
            Check("a", "tcp", params),  # unchanged
            Check("b", "tcp", CheckParams(interval=5.0, timeout=5.0)),  # params changed
            Check("c", "http", params),  # spec changed
            Check("e", "tcp", CheckParams(initial="down")),  # new
        ],
        12.0,
    )  # d removed
    assert changes == [
        HealthChanged("b", True, 12.0, "changed: initial state up"),
        HealthChanged("c", True, 12.0, "changed: initial state up"),
        HealthChanged("e", False, 12.0, "initial state down"),
    ]
    snap = sched.snapshot()
    assert set(snap.checks) == {"a", "b", "c", "e"}
    assert snap.checks["a"].state.transitions == 1 and snap.checks["a"].in_flight
    assert snap.checks["b"].state.transitions == 0 and snap.checks["b"].phase is Phase.UP
    # a's round in progress still counts; the old b, c, d probes only free their slots
    assert sched.probe_done(second["a"], OK, 13.0) == [
        HealthChanged("a", True, 13.0, "1 good round(s) in a row (rise 1)")
    ]
    for name in "bcd":
        assert sched.probe_done(second[name], FAIL, 13.0) == []
    assert sched.late_results == 3 and sched.in_flight == 0
    assert sched.health() == {"a": True, "b": True, "c": True, "e": False}


def test_replace_with_the_same_checks_changes_nothing() -> None:
    sched = scheduler(seed=11, initial=checks(20, CheckParams(interval=3.0)))
    before = sched.next_deadline()
    assert sched.replace(checks(20, CheckParams(interval=3.0)), 1.0) == []
    assert sched.next_deadline() == before


def test_restore_carries_state_into_a_new_scheduler_for_equal_checks_only() -> None:
    old = zero_scheduler()
    old.add(checks(3, CheckParams(fall=1)), 0.0)
    for start in old.due(0.0):
        old.probe_done(start, FAIL, 0.5)
    new = scheduler(seed=2)
    new.add([Check(0, "tcp", CheckParams(fall=1)), Check(1, "http", CheckParams(fall=1))], 1.0)
    changes = new.restore(old.snapshot().checks, 1.0)
    assert changes == [HealthChanged(0, False, 1.0, "restored")]
    assert new.health() == {0: False, 1: True}
    assert new.snapshot().checks[0].state == old.snapshot().checks[0].state


def test_add_reports_checks_that_start_down_and_refuses_duplicates() -> None:
    sched = zero_scheduler()
    changes = sched.add([Check("a", "tcp", CheckParams(initial="down")), Check("b", "tcp")], 0.0)
    assert changes == [HealthChanged("a", False, 0.0, "initial state down")]
    with pytest.raises(ValueError, match="already scheduled"):
        sched.add([Check("b", "tcp")], 0.0)
    assert sched.next_deadline() == 0.0
    sched.remove(["a", "b"])
    assert sched.next_deadline() is None


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 15),
    cap=st.integers(1, 6),
    attempts=st.integers(1, 3),
    removals=st.lists(st.tuples(st.floats(0.0, 20.0), st.integers(0, 14)), max_size=5),
)
def test_cap_holds_and_removed_checks_stop(
    seed: int, n: int, cap: int, attempts: int, removals: list[tuple[float, int]]
) -> None:
    rng = random.Random(seed)
    params = CheckParams(interval=1.0, timeout=0.8, attempts=attempts, retry_delay=0.1)
    sched = Scheduler[str](random.Random(seed), max_in_flight=cap)
    sched.add(checks(n, params), 0.0)

    def behaviour(start: StartProbe[str], now: float) -> tuple[float, ProbeResult] | None:
        roll = rng.random()
        if roll < 0.1:
            return None  # hangs for good
        return (rng.uniform(0.0, 1.5), OK if roll < 0.7 else FAIL)

    sim = Sim(sched, behaviour)
    removed_at: dict[int, float] = {}
    for at, check_id in sorted(removals):
        sim.run_until(at)
        if check_id < n and check_id not in removed_at:
            sched.remove([check_id])
            removed_at[check_id] = sim.now
    sim.run_until(25.0)
    assert sim.max_in_flight <= cap
    assert all(s.lag >= 0 and s.attempt <= attempts for s in sim.started)
    for check_id, at in removed_at.items():
        assert all(s.started <= at for s in sim.starts_of(check_id))
    assert len(sim.hung) <= sched.in_flight <= cap
