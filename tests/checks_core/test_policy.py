"""Rise/fall hysteresis and re-entry of one check (checks.policy), on a stepped clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.model import CheckParams, CheckState, HealthChanged, ProbeResult
from checks.policy import TRANSITIONS, Phase, Policy, state_diagram


def rounds(policy: Policy, verdicts: str, start: float = 0.0, step: float = 1.0) -> list[int]:
    """Feed rounds ("+" good, "-" bad) one ``step`` apart; return the indexes that flipped."""
    flips = []
    for i, verdict in enumerate(verdicts):
        if policy.record_round(verdict == "+", start + i * step) is not None:
            flips.append(i)
    return flips


@pytest.mark.parametrize(("rise", "fall"), [(1, 1), (2, 3), (3, 2), (5, 5)])
def test_goes_down_after_exactly_fall_and_up_after_exactly_rise(rise: int, fall: int) -> None:
    policy = Policy("rs1", CheckParams(rise=rise, fall=fall))
    assert rounds(policy, "-" * fall) == [fall - 1]
    assert not policy.up
    assert rounds(policy, "+" * rise) == [rise - 1]
    assert policy.up
    assert policy.transitions == 2


def test_one_good_round_resets_the_bad_count() -> None:
    policy = Policy("rs1", CheckParams(fall=3))
    assert rounds(policy, "--+--") == []
    assert policy.up and policy.bad_streak == 2
    assert policy.phase is Phase.FALLING
    assert rounds(policy, "-") == [0]
    assert (policy.up, policy.bad_streak) == (False, 3)


def test_one_bad_round_resets_the_good_count() -> None:
    policy = Policy("rs1", CheckParams(rise=3, initial="down"))
    assert rounds(policy, "++-++") == []
    assert policy.phase is Phase.RISING
    assert rounds(policy, "+") == [0]


def test_initial_state_up_by_default_and_down_when_asked() -> None:
    assert Policy("a", CheckParams()).up
    down = Policy("b", CheckParams(initial="down", rise=2))
    assert not down.up and down.phase is Phase.DOWN
    change = down.record_round(True, 1.0) or down.record_round(True, 2.0)
    assert change == HealthChanged("b", True, 2.0, "2 good round(s) in a row (rise 2)")


def test_down_reason_names_the_last_error() -> None:
    policy = Policy("rs1", CheckParams(fall=2))
    for t in (1.0, 2.0):
        policy.record_probe(ProbeResult(False, 0.5, "HTTP 503"), t)
        change = policy.record_round(False, t)
    assert change == HealthChanged(
        "rs1", False, 2.0, "2 failed round(s) in a row (fall 2): HTTP 503"
    )
    assert policy.last_change == 2.0


def test_reentry_keeps_a_recovered_server_out_until_good_for_that_long() -> None:
    policy = Policy("rs1", CheckParams(reentry=10.0))
    assert policy.record_round(False, 90.0) is not None
    assert policy.reentry_armed
    assert rounds(policy, "+++++", start=100.0, step=2.0) == []  # good at 100 .. 108
    assert policy.phase is Phase.REENTRY
    assert policy.reentry_left(108.0) == pytest.approx(2.0)
    change = policy.record_round(True, 110.0)
    assert change is not None and change.up
    assert change.reason == "6 good round(s) in a row (rise 1), good for 10s (reentry 10s)"
    assert not policy.reentry_armed


def test_a_bad_round_restarts_the_reentry_time() -> None:
    policy = Policy("rs1", CheckParams(reentry=10.0))
    policy.record_round(False, 0.0)
    policy.record_round(True, 100.0)
    policy.record_round(False, 105.0)
    assert policy.record_round(True, 106.0) is None
    assert policy.record_round(True, 115.0) is None
    assert policy.record_round(True, 116.0) is not None


def test_reentry_is_in_addition_to_rise() -> None:
    # rise reached first: wait for the time
    slow = Policy("a", CheckParams(rise=2, reentry=5.0))
    slow.record_round(False, 0.0)
    assert rounds(slow, "++++++", start=10.0) == [5]  # up at 15: first good at 10, +5 s
    # time passed first: wait for the rounds
    many = Policy("b", CheckParams(rise=4, reentry=1.0))
    many.record_round(False, 0.0)
    assert rounds(many, "++++", start=10.0, step=5.0) == [3]


def test_reentry_does_not_apply_to_a_server_that_starts_down() -> None:
    policy = Policy("rs1", CheckParams(reentry=60.0, initial="down"))
    assert policy.record_round(True, 1.0) is not None


def test_probe_results_weight_and_state_round_trip() -> None:
    policy = Policy("rs1", CheckParams(attempts=2))
    policy.record_probe(ProbeResult(True, 0.01, None, weight=7), 1.0, attempt=2)
    policy.record_probe(ProbeResult(True, 0.02, None), 2.0)
    policy.record_probe(ProbeResult(False, 0.03, "reset", weight=0), 3.0)
    assert policy.weight == 7  # only successful results that report one set the weight
    assert policy.last is not None
    assert (policy.last.ok, policy.last.error, policy.last.at) == (False, "reset", 3.0)
    policy.record_round(False, 3.0)
    state = policy.state
    assert state == CheckState(
        up=False, bad_streak=1, last=policy.last, last_change=3.0, transitions=1, weight=7
    )
    assert Policy("rs1", policy.params, state).state == state


def test_the_transition_table_renders_as_a_diagram() -> None:
    assert {(t.up, t.good, t.to) for t in TRANSITIONS} == {
        (True, False, False),
        (False, True, True),
    }
    diagram = state_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    assert "up --> down: bad round and bad_streak >= fall" in diagram
    assert "down --> up: good round and good_streak >= rise" in diagram


@given(
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    initial=st.sampled_from(["up", "down"]),
    verdicts=st.lists(st.booleans(), max_size=60),
)
def test_state_flips_only_after_exactly_rise_or_fall_consecutive_rounds(
    rise: int, fall: int, initial: str, verdicts: list[bool]
) -> None:
    params = CheckParams(rise=rise, fall=fall, initial="up" if initial == "up" else "down")
    policy = Policy("x", params)
    up = initial == "up"
    run = 0  # length of the current run of equal verdicts, counted independently
    for i, good in enumerate(verdicts):
        run = run + 1 if i and verdicts[i - 1] == good else 1
        change = policy.record_round(good, float(i))
        expect_flip = (up and not good and run == fall) or (not up and good and run == rise)
        assert (change is not None) == expect_flip
        if expect_flip:
            up = not up
            assert change is not None and change.up == up
        assert policy.up == up


@given(
    rise=st.integers(1, 4),
    reentry=st.floats(0.5, 20.0),
    steps=st.lists(st.tuples(st.booleans(), st.floats(0.1, 5.0)), max_size=60),
)
def test_after_a_fall_comes_back_exactly_when_rise_and_reentry_both_hold(
    rise: int, reentry: float, steps: list[tuple[bool, float]]
) -> None:
    policy = Policy("x", CheckParams(rise=rise, reentry=reentry))
    now = 0.0
    policy.record_round(False, now)
    good_since: float | None = None
    run = 0
    for good, gap in steps:
        now += gap
        was_up = policy.up
        if good:
            good_since = now if run == 0 else good_since
            run += 1
        else:
            good_since, run = None, 0
        change = policy.record_round(good, now)
        if was_up:
            continue  # back up: plain fall rules (covered above)
        assert good_since is not None or change is None
        ready = good and run >= rise and good_since is not None and now - good_since >= reentry
        assert (change is not None) == ready
