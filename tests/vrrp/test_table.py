"""The state table's own invariants, and random input sequences against any machine."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from vrrp import (
    Action,
    AddAddresses,
    Advertisement,
    AuthType,
    Config,
    Machine,
    RemoveAddresses,
    SendAdvert,
    State,
    StateChanged,
)
from vrrp.table import TRANSITIONS, Effect, Event, diagram

S = State

ADVERTS = {e for e in Event if e.value.startswith("advert_")}
HELD = {Event.ADVERT_LOWER_HELD, Event.ADVERT_RELEASE_HELD}  # classified as master only


def test_every_change_of_state_starts_by_cancelling_timers() -> None:
    for (state, event), rule in TRANSITIONS.items():
        if rule.target is not None and rule.target is not state:
            assert rule.effects[0] is Effect.CANCEL_TIMERS, (state, event)


def test_addresses_follow_mastership() -> None:
    for (state, event), rule in TRANSITIONS.items():
        entering = rule.target is S.MASTER and state is not S.MASTER
        leaving = state is S.MASTER and rule.target not in (None, S.MASTER)
        assert (Effect.ADD_ADDRESSES in rule.effects) == entering, (state, event)
        assert (Effect.REMOVE_ADDRESSES in rule.effects) == leaving, (state, event)
        if entering:
            assert Effect.ARM_ADVER in rule.effects and Effect.START_GARP in rule.effects
            assert rule.effects.index(Effect.SEND_ADVERT) < rule.effects.index(Effect.ADD_ADDRESSES)


def test_backup_always_has_a_master_down_timer() -> None:
    for (state, event), rule in TRANSITIONS.items():
        if rule.target is S.BACKUP and state is not S.BACKUP:
            assert Effect.ARM_MASTER_DOWN in rule.effects, (state, event)


def test_only_master_rules_send_adverts_and_only_leaving_ones_release() -> None:
    for (state, event), rule in TRANSITIONS.items():
        after = rule.target or state
        if Effect.SEND_ADVERT in rule.effects:
            assert after is S.MASTER, (state, event)
        if Effect.SEND_RELEASE in rule.effects:
            assert state is S.MASTER and after is not S.MASTER, (state, event)


def test_adverts_do_nothing_in_initialize_and_fault() -> None:
    for state in (S.INITIALIZE, S.FAULT):
        assert not any((state, e) in TRANSITIONS for e in ADVERTS)
    assert all((S.BACKUP, e) in TRANSITIONS for e in ADVERTS - HELD)
    assert all((S.MASTER, e) in TRANSITIONS for e in ADVERTS)


def test_held_answers_send_nothing_and_answers_start_a_hold() -> None:
    for event in HELD:
        assert TRANSITIONS[S.MASTER, event].effects == (Effect.COUNT_HELD_ANSWER,)
    for (state, event), rule in TRANSITIONS.items():
        if state is S.MASTER and event in ADVERTS and Effect.SEND_ADVERT in rule.effects:
            assert {Effect.HOLD_LOWER_ANSWERS, Effect.HOLD_RELEASE_ANSWERS} & set(rule.effects)


def test_only_a_master_restores_lost_addresses() -> None:
    assert [s for s, e in TRANSITIONS if e is Event.ADDRESS_LOST] == [S.MASTER]


def test_diagram_is_generated_from_the_table() -> None:
    text = diagram()
    assert text.startswith("stateDiagram-v2\n")
    assert "    backup --> master: master_down_timer\n" in text
    assert "    backup --> master: preempt\n" in text
    assert "    master --> backup: advert_higher\n" in text
    assert "    initialize --> master: start_as_owner\n" in text
    assert "master: adver_timer" not in text  # self-loops are not transitions


# -- any input sequence keeps the invariants -------------------------------------------------

ME = IPv4Address("192.0.2.10")
PEERS = [IPv4Address("192.0.2.5"), IPv4Address("192.0.2.20")]
VIPS = (IPv4Address("198.51.100.10"),)

inputs = st.lists(
    st.tuples(
        st.sampled_from(
            ["start", "shutdown", "fault", "recover", "priority", "advert", "timer", "timer"]
        ),
        st.floats(0.0, 5.0),  # time step
        st.integers(0, 255),  # priority (for "priority": clamped to 1..255)
        st.sampled_from(PEERS),
        st.sampled_from([10, 50, 100, 300]),  # the advert's interval, cs
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(
    inputs,
    st.sampled_from([2, 3]),
    st.integers(1, 255),
    st.booleans(),
    st.sampled_from([0.0, 3.0]),
)
def test_random_inputs_keep_the_invariants(
    steps: list[tuple[str, float, int, IPv4Address, int]],
    version: int,
    priority: int,
    preempt: bool,
    preempt_delay: float,
) -> None:
    config = Config(
        51, priority, ME, VIPS, version=version, preempt=preempt, preempt_delay=preempt_delay
    )
    machine = Machine(config)
    now, holding = 0.0, False
    for kind, step, value, peer, interval_cs in steps:
        now += step
        before = machine.state
        if kind == "timer":
            deadline = machine.next_deadline()
            now = max(now, deadline) if deadline is not None else now
            actions: list[Action] = machine.handle_timer(now)
        elif kind == "advert":
            interval = interval_cs if version == 3 else 100
            auth = bytes(8) if version == 2 else b""
            advert = Advertisement(version, 51, value, interval, VIPS, AuthType.NONE, auth)
            actions = machine.receive(advert, peer, now)
        elif kind == "priority":
            actions = machine.set_priority(max(1, value), now)
        else:
            actions = getattr(machine, kind)(now)
        changes = [a for a in actions if isinstance(a, StateChanged)]
        assert len(changes) <= 1
        if changes:
            assert changes[0].previous is before and changes[0].state is machine.state
            assert actions[0] == changes[0]
        else:
            assert machine.state is before
        for action in actions:
            if isinstance(action, SendAdvert) and action.priority:
                assert machine.state is State.MASTER
                assert action.priority == machine.priority
            if isinstance(action, SendAdvert) and not action.priority:
                assert before is State.MASTER and machine.state is not State.MASTER
            if isinstance(action, AddAddresses):
                assert not holding
                holding = True
            if isinstance(action, RemoveAddresses):
                assert holding
                holding = False
        assert holding == (machine.state is State.MASTER)
        deadline = machine.next_deadline()
        if machine.state in (State.INITIALIZE, State.FAULT):
            assert deadline is None
        else:
            assert deadline is not None
            assert kind != "timer" or deadline > now
