"""One machine driven by hand: each RFC 5798 section 6.4 rule, timers, tracking, fault."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from vrrp import (
    Action,
    AddAddresses,
    Advertisement,
    AuthType,
    Config,
    Event,
    Gratuitous,
    Machine,
    RemoveAddresses,
    RestoreAddresses,
    SendAdvert,
    SendGratuitous,
    State,
    StateChanged,
    master_down_interval,
    skew_time,
)

ME, PEER_LOW, PEER_HIGH = (IPv4Address(f"192.0.2.{n}") for n in (10, 5, 20))
VIPS = (IPv4Address("198.51.100.10"),)
NO_GARP = Gratuitous(count=1, repeat_after=None)


def config(priority: int = 100, **kw: Any) -> Config:
    kw.setdefault("virtual_addresses", VIPS)
    return Config(vrid=51, priority=priority, primary_address=ME, **kw)


def advert(priority: int, interval_cs: int = 100, version: int = 2) -> Advertisement:
    auth = bytes(8) if version == 2 else b""
    return Advertisement(version, 51, priority, interval_cs, VIPS, AuthType.NONE, auth)


def backup(priority: int = 100, **kw: Any) -> Machine:
    machine = Machine(config(priority, **kw))
    machine.start(0.0)
    assert machine.state is State.BACKUP
    return machine


def master(priority: int = 100, **kw: Any) -> Machine:
    machine = backup(priority, **kw)
    deadline = machine.next_deadline()
    assert deadline is not None
    machine.handle_timer(deadline)
    assert machine.state is State.MASTER
    return machine


# -- the timer formulas ----------------------------------------------------------------------


def test_rfc_timer_values() -> None:
    assert skew_time(2, 100, 1.0) == 0.609375  # (256 - 100) / 256
    assert master_down_interval(2, 100, 1.0) == 3.609375
    assert skew_time(2, 100, 5.0) == 0.609375  # v2: skew ignores the interval
    assert skew_time(2, 255, 1.0) == 1 / 256
    assert skew_time(3, 100, 0.1) == pytest.approx(0.0609375)
    assert master_down_interval(3, 100, 0.1) == pytest.approx(0.3609375, abs=1e-12)
    assert master_down_interval(3, 200, 1.0) == 3.21875


def test_start_waits_master_down_interval_then_becomes_master() -> None:
    machine = Machine(config(100, gratuitous=NO_GARP))
    assert machine.state is State.INITIALIZE and machine.next_deadline() is None
    assert machine.start(10.0) == [StateChanged(State.INITIALIZE, State.BACKUP, Event.START)]
    assert machine.next_deadline() == 13.609375
    assert machine.handle_timer(13.6) == []  # early: nothing
    assert machine.handle_timer(13.609375) == [
        StateChanged(State.BACKUP, State.MASTER, Event.MASTER_DOWN_TIMER),
        SendAdvert(100),  # first, so the old master drops the addresses before we ARP
        AddAddresses(VIPS),
        SendGratuitous(VIPS),
    ]
    assert machine.next_deadline() == 14.609375


def test_owner_starts_as_master() -> None:
    machine = Machine(config(255, gratuitous=NO_GARP))
    assert machine.start(0.0) == [
        StateChanged(State.INITIALIZE, State.MASTER, Event.START_AS_OWNER),
        SendAdvert(255),
        AddAddresses(VIPS),
        SendGratuitous(VIPS),
    ]


# -- Backup (RFC 5798 6.4.2) -----------------------------------------------------------------


def test_backup_follows_higher_and_equal_and_resets_master_down() -> None:
    machine = backup(100)
    assert machine.receive(advert(200), PEER_HIGH, 2.0) == []
    assert machine.next_deadline() == 2.0 + 3.609375
    assert machine.master == (PEER_HIGH, 200)
    # Equal priority from a lower address: a backup still follows it (priority >= local).
    assert machine.receive(advert(100), PEER_LOW, 3.0) == []
    assert machine.next_deadline() == 3.0 + 3.609375


def test_backup_with_preempt_ignores_lower_priority() -> None:
    machine = backup(100)
    machine.receive(advert(50), PEER_HIGH, 2.0)
    assert machine.next_deadline() == 3.609375  # still the start-up timer


def test_backup_without_preempt_follows_lower_priority() -> None:
    machine = backup(100, preempt=False)
    machine.receive(advert(50), PEER_HIGH, 2.0)
    assert machine.next_deadline() == 2.0 + 3.609375


def test_priority_zero_sets_master_down_to_skew_time() -> None:
    machine = backup(100)
    assert machine.receive(advert(0), PEER_HIGH, 2.0) == []
    assert machine.next_deadline() == 2.0 + 0.609375


def test_v3_backup_learns_the_masters_interval() -> None:
    machine = backup(100, version=3, advert_interval=1.0)
    machine.receive(advert(200, interval_cs=50, version=3), PEER_HIGH, 2.0)
    assert machine.master_adver_interval == 0.5
    assert machine.master_down_interval == 1.5 + 156 * 0.5 / 256  # 1.8046875
    assert machine.next_deadline() == 2.0 + 1.8046875
    assert machine.receive(advert(0, interval_cs=50, version=3), PEER_HIGH, 3.0) == []
    assert machine.next_deadline() == 3.0 + 156 * 0.5 / 256  # skew scaled by the learnt one


def test_preempt_delay_runs_from_the_first_lower_priority_advert() -> None:
    machine = backup(200, preempt_delay=10.0)
    for t in range(1, 11):  # 1..10: within the delay (keepalived: preempt at now >= 11)
        machine.receive(advert(100), PEER_HIGH, float(t))
        assert machine.next_deadline() == t + 3.21875
    machine.receive(advert(100), PEER_HIGH, 11.0)
    assert machine.next_deadline() == 10 + 3.21875  # ignored: the timer runs out


def test_a_higher_advert_stops_the_preempt_delay() -> None:
    machine = backup(200, preempt_delay=10.0)
    machine.receive(advert(100), PEER_HIGH, 1.0)  # delay runs until 11
    machine.receive(advert(250), PEER_HIGH, 5.0)  # stopped
    machine.receive(advert(100), PEER_HIGH, 12.0)  # a new delay, until 22
    assert machine.next_deadline() == 12.0 + 3.21875


def test_own_and_foreign_vrid_adverts_are_ignored() -> None:
    machine = backup(100)
    machine.receive(advert(200), ME, 2.0)
    other = Advertisement(2, 52, 200, 100, VIPS, AuthType.NONE, bytes(8))
    machine.receive(other, PEER_HIGH, 2.0)
    assert machine.next_deadline() == 3.609375


# -- Master (RFC 5798 6.4.3) -----------------------------------------------------------------


def test_master_advertises_every_interval_and_late_wakes_do_not_burst() -> None:
    machine = master(100, gratuitous=NO_GARP)  # master at 3.609375
    assert machine.handle_timer(4.609375) == [SendAdvert(100)]
    assert machine.handle_timer(9.0) == [SendAdvert(100)]  # woke 3 s late: one advert
    assert machine.next_deadline() == 10.0


def test_master_reasserts_on_lower_priority_advert() -> None:
    machine = master(100, gratuitous=NO_GARP)
    assert machine.receive(advert(50), PEER_HIGH, 4.0) == [SendAdvert(100), SendGratuitous(VIPS)]
    assert machine.next_deadline() == 5.0  # Adver_Timer reset
    # Equal priority from a lower address: we win the tie, so the same (one interval later).
    assert machine.receive(advert(100), PEER_LOW, 5.0) == [SendAdvert(100), SendGratuitous(VIPS)]
    assert machine.state is State.MASTER


def test_master_answers_one_lower_advert_per_interval() -> None:
    """A flood of lower (or equal, lower address) adverts: one advert and one gratuitous round
    per advert_interval, not one per advert; the periodic advert keeps its time."""
    machine = master(100, gratuitous=NO_GARP)  # master at 3.609375, next advert at 4.609375
    sent: list[tuple[float, Action]] = []
    now = 4.0
    while now < 7.0:  # 1,000 adverts a second for 3 s, alternately lower and equal-lower
        peer, priority = (PEER_HIGH, 50) if int(now * 1000) % 2 else (PEER_LOW, 100)
        sent += [(now, a) for a in machine.receive(advert(priority), peer, now)]
        while (deadline := machine.next_deadline()) is not None and deadline <= now:
            sent += [(deadline, a) for a in machine.handle_timer(deadline)]
        now = round(now + 0.001, 6)
    adverts = [t for t, a in sent if isinstance(a, SendAdvert)]
    garps = [t for t, a in sent if isinstance(a, SendGratuitous)]
    # answers at 4.0, 5.0 and 6.0 (each re-arms the Adver_Timer, so no periodic one is due)
    assert adverts == garps == [4.0, 5.0, 6.0]
    assert machine.answers_suppressed == 3000 - 3
    assert machine.state is State.MASTER
    # a priority 0 advert has its own hold: answered now, then held for an interval
    assert machine.receive(advert(0), PEER_HIGH, 7.0) == [SendAdvert(100)]
    assert machine.receive(advert(0), PEER_HIGH, 7.5) == []
    assert machine.receive(advert(0), PEER_HIGH, 8.0) == [SendAdvert(100)]
    # a higher advert is never held: the master yields at once
    changed = machine.receive(advert(200), PEER_HIGH, 8.1)[0]
    assert isinstance(changed, StateChanged) and changed.state is State.BACKUP


def test_leaving_master_clears_the_hold_on_answers() -> None:
    machine = Machine(config(255, gratuitous=NO_GARP))  # the owner: master again at once
    machine.start(0.0)
    assert machine.receive(advert(50), PEER_HIGH, 1.0) == [SendAdvert(255), SendGratuitous(VIPS)]
    machine.fault(1.1, "test")
    machine.recover(1.2, "test")
    assert machine.state is State.MASTER
    assert machine.receive(advert(50), PEER_HIGH, 1.3) == [SendAdvert(255), SendGratuitous(VIPS)]


def test_master_answers_priority_zero_with_an_advert() -> None:
    machine = master(100, gratuitous=NO_GARP)
    assert machine.receive(advert(0), PEER_HIGH, 4.0) == [SendAdvert(100)]
    assert machine.next_deadline() == 5.0


@pytest.mark.parametrize(
    ("priority", "src", "event"),
    [(200, PEER_LOW, Event.ADVERT_HIGHER), (100, PEER_HIGH, Event.ADVERT_EQUAL_HIGHER_ADDRESS)],
)
def test_master_yields_to_higher_priority_or_equal_from_higher_address(
    priority: int, src: IPv4Address, event: Event
) -> None:
    machine = master(100)
    assert machine.receive(advert(priority), src, 4.0) == [
        StateChanged(State.MASTER, State.BACKUP, event, src, priority),
        RemoveAddresses(VIPS),
    ]
    assert machine.next_deadline() == 4.0 + 3.609375  # no more adverts or gratuitous rounds


# -- the cause of each change of state, for the log ------------------------------------------


def test_a_master_outbid_names_the_advert_that_did_it() -> None:
    machine = master(100)
    changed = machine.receive(advert(200), PEER_HIGH, 4.0)[0]
    assert isinstance(changed, StateChanged)
    assert (changed.source, changed.source_priority) == (PEER_HIGH, 200)
    assert changed.cause == "advert from 192.0.2.20 priority 200: higher priority"
    changed = master(100).receive(advert(100), PEER_HIGH, 4.0)[0]
    assert isinstance(changed, StateChanged)
    assert changed.cause == "advert from 192.0.2.20 priority 100: equal priority, higher address"


def test_a_takeover_names_the_master_it_heard_last() -> None:
    def takeover(machine: Machine) -> StateChanged:
        deadline = machine.next_deadline()
        assert deadline is not None
        changed = machine.handle_timer(deadline)[0]
        assert isinstance(changed, StateChanged) and changed.state is State.MASTER
        return changed

    silent = backup(100)
    assert takeover(silent).cause == "master_down timer expired, no master heard"
    silent = backup(100)
    silent.receive(advert(200), PEER_HIGH, 1.0)
    changed = takeover(silent)
    assert (changed.event, changed.source, changed.source_priority) == (
        Event.MASTER_DOWN_TIMER,
        PEER_HIGH,
        200,
    )
    assert changed.cause == "master_down timer expired, last advert from 192.0.2.20 priority 200"
    released = backup(100)
    released.receive(advert(200), PEER_HIGH, 1.0)
    released.receive(advert(0), PEER_HIGH, 2.0)
    assert takeover(released).cause == "master 192.0.2.20 released (priority 0), skew timer expired"
    preempting = backup(100)
    preempting.receive(advert(50), PEER_LOW, 1.0)
    changed = takeover(preempting)
    assert (changed.event, changed.source, changed.source_priority) == (
        Event.PREEMPT,
        PEER_LOW,
        50,
    )
    assert changed.cause == "preempt: master 192.0.2.5 priority 50 is lower than ours"
    # nopreempt follows a lower master: its silence is not a preemption
    following = backup(100, preempt=False)
    following.receive(advert(50), PEER_LOW, 1.0)
    assert takeover(following).event is Event.MASTER_DOWN_TIMER


def test_fault_and_recovery_carry_their_reason() -> None:
    machine = master(100)
    changed = machine.fault(5.0, "link eth0")[0]
    assert changed == StateChanged(State.MASTER, State.FAULT, Event.FAULT, reason="link eth0")
    assert changed.cause == "fault: link eth0"
    changed = machine.recover(6.0, "link eth0")[0]
    assert isinstance(changed, StateChanged)
    assert changed.cause == "recovered: link eth0 cleared"
    starting = Machine(config(100))
    starting.fault(0.0, "track interface eth1 down")
    changed = starting.start(1.0)[0]
    assert isinstance(changed, StateChanged)
    assert changed.cause == "startup in fault: track interface eth1 down"
    assert StateChanged(State.INITIALIZE, State.BACKUP, Event.START).cause == "startup"


# -- a virtual address deleted by someone else -----------------------------------------------


def test_a_master_restores_a_deleted_address_and_announces_it() -> None:
    vips = (VIPS[0], IPv4Address("198.51.100.11"))
    machine = Machine(config(100, gratuitous=NO_GARP, virtual_addresses=vips))
    machine.start(0.0)
    lost = (vips[1], IPv4Address("198.51.100.99"))  # not ours: ignored
    assert machine.address_lost(lost, 1.0) == []  # backup: never adds
    machine.handle_timer(3.609375)
    assert machine.state is State.MASTER
    deadline = machine.next_deadline()
    assert machine.address_lost(lost, 4.0) == [
        RestoreAddresses((vips[1],)),
        SendGratuitous((vips[1],)),
    ]
    assert machine.next_deadline() == deadline  # the advert timer is not touched
    assert machine.address_lost((IPv4Address("198.51.100.99"),), 4.0) == []
    machine.fault(5.0, "test")
    assert machine.address_lost(lost, 6.0) == []


def test_shutdown_from_master_releases_with_priority_zero() -> None:
    machine = master(100)
    assert machine.shutdown(5.0) == [
        StateChanged(State.MASTER, State.INITIALIZE, Event.SHUTDOWN),
        SendAdvert(0),
        RemoveAddresses(VIPS),
    ]
    assert machine.next_deadline() is None
    assert machine.receive(advert(200), PEER_HIGH, 6.0) == []  # ignored until started again
    assert machine.start(7.0)[0] == StateChanged(State.INITIALIZE, State.BACKUP, Event.START)


def test_shutdown_from_backup_is_silent() -> None:
    machine = backup(100)
    assert machine.shutdown(1.0) == [StateChanged(State.BACKUP, State.INITIALIZE, Event.SHUTDOWN)]


# -- gratuitous ARP schedule -----------------------------------------------------------------


def run_timers(machine: Machine, until: float) -> list[float]:
    """Times of the gratuitous rounds sent by ``handle_timer`` up to ``until``."""
    sent = []
    while (deadline := machine.next_deadline()) is not None and deadline <= until:
        sent += [deadline for a in machine.handle_timer(deadline) if isinstance(a, SendGratuitous)]
    return sent


def test_gratuitous_bursts_and_refresh() -> None:
    garp = Gratuitous(count=3, spacing=0.5, repeat_after=5.0, refresh=60.0)
    machine = Machine(config(255, gratuitous=garp))
    first = machine.start(100.0)
    assert sum(isinstance(a, SendGratuitous) for a in first) == 1
    assert run_timers(machine, 230.0) == [100.5, 101.0, 105.0, 105.5, 106.0, 160.0, 220.0]


def test_default_gratuitous_is_five_now_and_five_after_five_seconds() -> None:
    machine = Machine(config(255))
    assert sum(isinstance(a, SendGratuitous) for a in machine.start(0.0)) == 5
    assert run_timers(machine, 100.0) == [5.0] * 5


def test_leaving_master_cancels_pending_gratuitous_rounds() -> None:
    machine = Machine(config(255))
    machine.start(0.0)
    machine.receive(advert(255), PEER_HIGH, 1.0)  # a rogue owner with a higher address
    assert machine.state is State.BACKUP
    assert run_timers(machine, 4.0) == []  # the burst due at 5.0 is gone
    assert run_timers(machine, 4.00390625) == [4.00390625] * 5  # 1 + 3 + 1/256: master again


# -- tracking and fault ----------------------------------------------------------------------


def test_lowered_priority_is_advertised_at_once() -> None:
    machine = master(200, gratuitous=NO_GARP)
    assert machine.set_priority(90, 5.0) == [SendAdvert(90)]
    assert machine.next_deadline() == 6.0
    assert machine.set_priority(90, 5.5) == []
    with pytest.raises(ValueError, match="priority 0"):
        machine.set_priority(0, 6.0)


def test_backup_skew_follows_its_current_priority() -> None:
    machine = backup(100)
    machine.set_priority(200, 1.0)
    machine.receive(advert(250), PEER_HIGH, 2.0)
    assert machine.next_deadline() == 2.0 + 3.21875


def test_fault_from_master_releases_and_recovers_to_backup() -> None:
    machine = master(100)
    assert machine.fault(5.0) == [
        StateChanged(State.MASTER, State.FAULT, Event.FAULT, reason=""),
        SendAdvert(0),
        RemoveAddresses(VIPS),
    ]
    assert machine.next_deadline() is None
    assert machine.receive(advert(50), PEER_HIGH, 6.0) == []
    assert machine.fault(6.5) == []
    assert machine.recover(7.0) == [
        StateChanged(State.FAULT, State.BACKUP, Event.RECOVER, reason="")
    ]
    assert machine.next_deadline() == 7.0 + 3.609375
    assert machine.recover(8.0) == []


def test_fault_before_start_starts_in_fault_and_owner_recovers_to_master() -> None:
    machine = Machine(config(255))
    assert machine.fault(0.0) == []
    assert machine.start(1.0) == [
        StateChanged(State.INITIALIZE, State.FAULT, Event.START_IN_FAULT, reason="")
    ]
    actions = machine.recover(2.0)
    assert actions[0] == StateChanged(State.FAULT, State.MASTER, Event.RECOVER_AS_OWNER, reason="")


# -- configuration ---------------------------------------------------------------------------


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match="vrid 0") as info:
        Config(0, 0, IPv6Address("fe80::1"), (IPv4Address("192.0.2.1"),), advert_interval=1.5)
    message = str(info.value)
    for part in ("vrid 0 not in 1..255", "priority 0", "IPv4 only", "must be IPv6", "1.5"):
        assert part in message


def test_config_builds_what_goes_on_the_wire() -> None:
    cfg = config(100, password=b"secret")
    assert cfg.advertisement(0) == Advertisement(
        2, 51, 0, 100, VIPS, AuthType.SIMPLE, b"secret\0\0"
    )
    expected = cfg.expected()
    assert expected.auth_type is AuthType.SIMPLE and expected.addresses == frozenset(VIPS)
    v3 = config(100, version=3, advert_interval=0.1)
    assert v3.advertisement(100).interval_cs == 10
    assert config(100, check_addresses=False).expected().addresses is None
    with pytest.raises(ValueError, match="password needs version 2"):
        config(100, version=3, password=b"x")


# -- preview: what a timer would do, nothing changed ------------------------------------------


@pytest.mark.parametrize("make", [backup, master])
def test_preview_timer_predicts_handle_timer_and_changes_nothing(make: Any) -> None:
    machine = make(100, gratuitous=Gratuitous(count=3, spacing=0.5, repeat_after=5.0))
    deadline = machine.next_deadline()
    assert deadline is not None
    before = (machine.state, machine.priority, machine.next_deadline(), machine.master)
    for _ in range(2):  # a second preview sees the same untouched machine
        preview = machine.preview_timer(deadline)
        assert preview
        assert (machine.state, machine.priority, machine.next_deadline(), machine.master) == before
    assert machine.handle_timer(deadline) == preview
    # the GARP rounds the preview scheduled on its copy were not added to the machine's own
    later = machine.next_deadline()
    assert later is not None
    assert machine.preview_timer(later) == machine.handle_timer(later)


# -- excluded addresses (keepalived's virtual_ipaddress_excluded) ---------------------------


def test_excluded_addresses_are_held_and_announced_but_not_advertised() -> None:
    excluded = (IPv4Address("198.51.100.11"), IPv6Address("2001:db8::11"))  # either family
    machine = Machine(config(100, gratuitous=NO_GARP, excluded_addresses=excluded))
    machine.start(0.0)
    deadline = machine.next_deadline()
    assert deadline is not None
    held = VIPS + excluded
    assert machine.handle_timer(deadline)[1:] == [
        SendAdvert(100),
        AddAddresses(held),
        SendGratuitous(held),
    ]
    assert machine.config.advertisement(100).addresses == VIPS
    assert machine.config.expected().addresses == frozenset(VIPS)  # a peer lists VIPS only
    assert machine.address_lost((excluded[1],), deadline + 0.1)[0] == RestoreAddresses(
        (excluded[1],)
    )
    assert RemoveAddresses(held) in machine.shutdown(deadline + 1)


def test_an_address_cannot_be_both_virtual_and_excluded() -> None:
    with pytest.raises(ValueError, match="both virtual and excluded"):
        config(excluded_addresses=VIPS)
