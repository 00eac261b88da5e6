"""The agent-check parser and policy (pure): HAProxy's words, clamp, threshold, rate limit."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.agent import (
    MAX_PERCENT,
    MAX_WEIGHT,
    AgentEffect,
    AgentPolicy,
    AgentReply,
    AgentTuning,
    parse,
)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"75%", AgentReply(percent=75)),
        (b"ready", AgentReply(admin="ready")),
        (b"DRAIN", AgentReply(admin="drain")),
        (b"Maint", AgentReply(admin="maint")),
        (b"down", AgentReply(down=True)),
        (b"stopped", AgentReply(down=True)),
        (b"fail", AgentReply(down=True)),
        (b"up", AgentReply(down=False)),
        (b"maxconn:30", AgentReply(maxconn=30)),
        (b"MAXCONN:0", AgentReply(maxconn=0)),
        (b"up 75%,maxconn:10\tready", AgentReply(75, "ready", False, 10)),
        (b"  ,, 50%  ", AgentReply(percent=50)),
        (b"drain 20% 30%", AgentReply(percent=30, admin="drain")),  # the last one wins
        (b"ready maint", AgentReply(admin="maint")),
        (b"down # disk full on /var", AgentReply(down=True, description="disk full on /var")),
        (b"#only a comment", AgentReply(description="only a comment")),
        (b"", AgentReply()),
        (b"99999%", AgentReply(percent=MAX_PERCENT)),  # HAProxy's cap
        (b"hello 75%", AgentReply(percent=75, unknown=("hello",))),
        (b"75.5%", AgentReply(unknown=("75.5%",))),  # HAProxy: trailing garbage
        (b"-5%", AgentReply(unknown=("-5%",))),
        (b"75", AgentReply(unknown=("75",))),
        (b"maxconn:x", AgentReply(unknown=("maxconn:x",))),
        (b"75%#x", AgentReply(unknown=("75%#x",))),  # '#' starts a description only as a word
        (b"\xff\x00\x01", AgentReply(unknown=("\xff\x00\x01",))),
    ],
)
def test_parse_follows_haproxy(line: bytes, reply: AgentReply) -> None:
    assert parse(line) == reply


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_parse_never_raises_and_only_knows_what_it_says(line: bytes) -> None:
    reply = parse(line)
    assert reply.percent is None or 0 <= reply.percent <= MAX_PERCENT
    assert reply.maxconn is None or reply.maxconn >= 0
    assert all(w.strip(" \t,") == w and w for w in reply.unknown)


def test_percentages_scale_the_configured_weight_and_clamp() -> None:
    policy = AgentPolicy(AgentTuning(min_percent=10, max_percent=150))
    assert policy.received(parse(b"75%"), "75%", 0.0)
    assert policy.effect.weight(100) == 75
    assert policy.received(parse(b"500%"), "500%", 1.0)
    assert policy.effect.percent == 150 and policy.effect.weight(100) == 150
    assert policy.received(parse(b"0%"), "0%", 2.0)
    assert policy.effect.percent == 10
    assert policy.asked == 0


def test_a_share_of_a_small_weight_is_not_a_drain_but_zero_percent_is() -> None:
    assert AgentEffect(percent=50).weight(1) == 1
    assert AgentEffect(percent=0).weight(1) == 0
    assert AgentEffect(percent=33).weight(10) == 3  # floor, as HAProxy
    assert AgentEffect(percent=MAX_PERCENT).weight(MAX_WEIGHT) == MAX_WEIGHT


def test_state_words_are_sticky_until_cleared() -> None:
    policy = AgentPolicy()
    policy.received(parse(b"drain"), "drain", 0.0)
    assert policy.effect.state == "drain"
    policy.received(parse(b"60%"), "60%", 1.0)  # not said: stays drained
    assert policy.effect == AgentEffect(percent=60, admin="drain")
    policy.received(parse(b"maint"), "maint", 2.0)
    assert policy.effect.state == "maint"
    policy.received(parse(b"ready"), "ready", 3.0)
    assert policy.effect == AgentEffect(percent=60)
    policy.received(parse(b"down"), "down", 4.0)
    assert policy.effect.state == "down"
    policy.received(parse(b"ready"), "ready", 5.0)
    assert policy.effect.down  # ready clears drain/maint, not down
    policy.received(parse(b"up"), "up", 6.0)
    assert policy.effect.state == "ready"


def test_threshold_ignores_small_moves_but_bounds_always_apply() -> None:
    policy = AgentPolicy(AgentTuning(threshold=10))
    policy.received(parse(b"80%"), "80%", 0.0)
    assert policy.effect.percent == 80
    assert not policy.received(parse(b"85%"), "85%", 1.0)
    assert policy.effect.percent == 80 and policy.held is not None
    assert policy.received(parse(b"90%"), "90%", 2.0)
    assert policy.effect.percent == 90
    assert policy.received(parse(b"100%"), "100%", 3.0)  # back whole despite the threshold
    assert policy.effect.percent == 100 and policy.held is None


def test_rate_limit_with_a_stepped_clock() -> None:
    policy = AgentPolicy(AgentTuning(rate_limit=10))
    assert policy.received(parse(b"50%"), "50%", 100.0)  # the first change applies at once
    assert policy.next_deadline() is None
    assert not policy.received(parse(b"40%"), "40%", 103.0)
    assert not policy.received(parse(b"30%"), "30%", 105.0)  # the latest one waits
    assert policy.effect.percent == 50
    assert policy.next_deadline() == 110.0
    assert not policy.tick(109.9)
    assert policy.tick(110.0)
    assert policy.effect.percent == 30
    assert policy.next_deadline() is None
    # state words are never rate-limited
    assert policy.received(parse(b"drain"), "drain", 111.0)
    assert policy.effect.state == "drain"


def test_failures_keep_the_last_value_and_say_since_when() -> None:
    policy = AgentPolicy()
    policy.received(parse(b"70% drain"), "70% drain", 0.0)
    before = policy.effect
    policy.failed("timeout", "timed out after 1 s", 5.0)
    policy.failed("refused", "connection refused", 7.0)
    assert policy.effect == before
    assert policy.failing_since == 5.0
    assert policy.errors == {"timeout": 1, "refused": 1}
    policy.received(parse(b"nonsense"), "nonsense", 9.0)
    assert policy.failing_since is None
    assert policy.errors["garbage"] == 1
    assert policy.effect == before


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 30.0),
            st.one_of(st.integers(0, 400).map(lambda p: f"{p}%"), st.sampled_from(["x", "up"])),
        ),
        max_size=40,
    ),
    st.integers(0, 100),
    st.integers(0, 300),
    st.floats(0, 50),
    st.floats(0, 20),
)
def test_policy_properties(
    steps: list[tuple[float, str]], lo: int, span: int, threshold: float, rate: float
) -> None:
    """Whatever the agent says and when: the percentage stays in the clamp, applied changes
    are at least ``rate`` seconds apart, and small moves off the bounds never apply."""
    tuning = AgentTuning(
        min_percent=lo, max_percent=lo + span, threshold=threshold, rate_limit=rate
    )
    policy = AgentPolicy(tuning)
    now, applied_at = 0.0, []
    for step, word in steps:
        now += step
        before = policy.effect.percent
        policy.tick(now)
        policy.received(parse(word.encode()), word, now)
        after = policy.effect.percent
        if after != before:
            applied_at.append(now)
            moved = abs(after - before)
            assert moved >= threshold or after in (tuning.min_percent, tuning.max_percent, 100)
        if after != 100 or applied_at:
            assert tuning.min_percent <= after <= tuning.max_percent or after == 100
    gaps = [b - a for a, b in itertools.pairwise(applied_at)]
    assert all(g >= rate for g in gaps)
