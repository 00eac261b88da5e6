"""Two or three machines on the simulated link: election, failover, preemption, split brain, loss.

Times are exact binary fractions for v2 (1 s adverts): Skew_Time = (256 - priority) / 256, so
priority 200 -> 0.21875, 150 -> 0.4140625, 100 -> 0.609375. Every run also passes the
simulator's invariants (only masters advertise, addresses held exactly while master).
"""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address
from typing import Any

import pytest

from tests.vrrp.sim import Sim
from vrrp import Config, Gratuitous, SendAdvert, State

VIPS = (IPv4Address("198.51.100.10"),)
MD_200, MD_150, MD_100 = 3.21875, 3.4140625, 3.609375  # v2 Master_Down_Interval by priority


def cfg(priority: int, host: int, **kw: Any) -> Config:
    address = IPv4Address(f"192.0.2.{host}")
    garp = Gratuitous(count=1, repeat_after=None)
    return Config(51, priority, address, VIPS, gratuitous=garp, **kw)


def pair(a: int, b: int, **kw: Any) -> Sim:
    """Node a at 192.0.2.1 and node b at 192.0.2.2 with these priorities."""
    sim = Sim(**kw)
    sim.add("a", cfg(a, 1))
    sim.add("b", cfg(b, 2))
    return sim


def test_higher_priority_wins_the_election() -> None:
    sim = pair(200, 100)
    sim.start("a", "b")
    sim.run_until(60.0)
    a, b = sim.nodes["a"], sim.nodes["b"]
    assert a.became(State.MASTER) == [MD_200]
    assert b.became(State.MASTER) == []
    assert b.adverts() == []  # a backup never advertises
    assert [t for t, _ in a.adverts()] == [MD_200 + k for k in range(57)]


def test_equal_priorities_higher_address_wins() -> None:
    sim = pair(100, 100)
    sim.start("a", "b")
    sim.run_until(30.0)
    a, b = sim.nodes["a"], sim.nodes["b"]
    # Both time out together, both advertise; a sees b's higher address and steps down.
    assert a.became(State.MASTER) == [MD_100]
    assert a.became(State.BACKUP) == [0.0, MD_100]
    assert b.became(State.MASTER) == [MD_100]
    assert sim.masters() == ["b"]


def test_equal_priority_backup_does_not_preempt_by_address() -> None:
    sim = pair(100, 100)
    sim.start("a")
    sim.run_until(1.0)
    sim.start("b")
    sim.run_until(30.0)
    # RFC 5798 6.4.2: a backup follows adverts with priority >= its own; the address
    # tie-break only settles two masters.
    assert sim.masters() == ["a"]
    assert sim.nodes["b"].became(State.MASTER) == []


def test_owner_takes_over_immediately() -> None:
    sim = pair(255, 100)
    sim.start("b")
    sim.run_until(10.0)
    assert sim.masters() == ["b"]
    sim.start("a")
    assert sim.nodes["a"].became(State.MASTER) == [10.0]  # no Master_Down wait for the owner
    sim.run_until(10.0)
    assert sim.nodes["b"].became(State.BACKUP)[-1] == 10.0
    sim.run_until(60.0)
    assert sim.masters() == ["a"]


def test_preemption() -> None:
    sim = pair(100, 200)
    sim.start("a")
    sim.run_until(10.0)  # a master since 3.609375
    sim.start("b")
    sim.run_until(60.0)
    # b ignores a's lower-priority adverts and takes over when its timer runs out.
    assert sim.nodes["b"].became(State.MASTER) == [10.0 + MD_200]  # 13.21875
    assert sim.nodes["a"].became(State.BACKUP)[-1] == 13.21875
    assert sim.masters() == ["b"]


def test_nopreempt_leaves_the_running_master_alone() -> None:
    sim = Sim()
    sim.add("a", cfg(100, 1))
    sim.add("b", cfg(200, 2, preempt=False))
    sim.start("a")
    sim.run_until(10.0)
    sim.start("b")
    sim.run_until(300.0)
    assert sim.masters() == ["a"]
    assert sim.nodes["b"].adverts() == []


def test_preempt_delay() -> None:
    sim = Sim()
    sim.add("a", cfg(100, 1))
    sim.add("b", cfg(200, 2, preempt_delay=10.0))
    sim.start("a")
    sim.run_until(10.0)  # a advertises at 3.609375 + k
    sim.start("b")
    sim.run_until(60.0)
    # b first hears a at 10.609375: the delay runs to 20.609375. The advert at that instant is
    # ignored, so the last one followed is 19.609375, and b times out 3.21875 later.
    assert sim.nodes["b"].became(State.MASTER) == [22.828125]
    assert sim.masters() == ["b"]


@pytest.mark.parametrize(("version", "interval", "skew"), [(2, 1.0, 0.609375), (3, 0.1, 0.0609375)])
def test_priority_zero_hands_over_after_skew_time(
    version: int, interval: float, skew: float
) -> None:
    sim = Sim()
    sim.add("a", cfg(200, 1, version=version, advert_interval=interval))
    sim.add("b", cfg(100, 2, version=version, advert_interval=interval))
    sim.start("a", "b")
    sim.run_until(10.5)
    sim.shutdown("a")
    sim.run_until(20.0)
    assert sim.nodes["a"].adverts()[-1] == (10.5, 0)
    [takeover] = sim.nodes["b"].became(State.MASTER)
    assert takeover - 10.5 == pytest.approx(skew, abs=1e-9)
    assert takeover - 10.5 < sim.nodes["b"].machine.master_down_interval / 5


@pytest.mark.parametrize(
    ("version", "interval", "master_down"), [(2, 1.0, 3.609375), (3, 0.1, 0.3609375)]
)
def test_master_death_backup_takes_over_after_master_down_interval(
    version: int, interval: float, master_down: float
) -> None:
    sim = Sim()
    sim.add("a", cfg(200, 1, version=version, advert_interval=interval))
    sim.add("b", cfg(100, 2, version=version, advert_interval=interval))
    sim.start("a", "b")
    sim.run_until(10.05)
    sim.kill("a")
    sim.run_until(30.0)
    last_heard = sim.nodes["a"].adverts()[-1][0]
    [takeover] = sim.nodes["b"].became(State.MASTER)
    assert takeover - last_heard == pytest.approx(master_down, abs=1e-9)


def test_three_nodes_the_next_priority_takes_over() -> None:
    sim = Sim()
    for name, priority, host in (("a", 200, 1), ("b", 150, 2), ("c", 100, 3)):
        sim.add(name, cfg(priority, host))
    sim.start("a", "b", "c")
    sim.run_until(10.5)  # a advertises at 3.21875 + k; last 10.21875
    sim.kill("a")
    sim.run_until(60.0)
    assert sim.nodes["b"].became(State.MASTER) == [10.21875 + MD_150]  # 13.6328125
    assert sim.nodes["c"].became(State.MASTER) == []  # its timer was due at 13.828125
    assert sim.nodes["c"].machine.master == (IPv4Address("192.0.2.2"), 150)


def test_tracking_lowers_priority_and_the_backup_takes_over() -> None:
    sim = pair(200, 150)
    sim.start("a", "b")
    sim.run_until(20.0)  # a advertises at 3.21875 + k
    sim.call("a", "track", lambda m: m.set_priority(100, sim.now))
    sim.run_until(60.0)
    assert (20.0, 100) in sim.nodes["a"].adverts()  # a tells the others at once
    # b ignores a's priority-100 advert at 20.0; it followed a last at 19.21875.
    assert sim.nodes["b"].became(State.MASTER) == [19.21875 + MD_150]
    assert sim.masters() == ["b"]


def test_split_brain_heals_to_one_master_within_one_interval() -> None:
    sim = pair(200, 100)
    sim.start("a", "b")
    sim.run_until(20.0)
    sim.cut("a", "b")
    sim.run_until(30.5)
    assert sim.masters() == ["a", "b"]  # b took over at 19.21875 + 3.609375
    assert sim.nodes["b"].became(State.MASTER) == [22.828125]
    sim.heal("a", "b")
    sim.run_until(31.5)
    # b's advert at 30.828125 comes first; a answers it at once (keepalived's behaviour),
    # and b steps down in the same instant rather than at a's next advert (31.21875).
    assert (30.828125, 200) in sim.nodes["a"].adverts()
    assert sim.nodes["b"].became(State.BACKUP)[-1] == 30.828125
    assert sim.masters() == ["a"]


def test_split_brain_three_nodes() -> None:
    sim = Sim()
    for name, priority, host in (("a", 200, 1), ("b", 150, 2), ("c", 100, 3)):
        sim.add(name, cfg(priority, host))
    sim.start("a", "b", "c")
    sim.run_until(20.0)
    sim.cut("a", "b")
    sim.cut("a", "c")
    sim.run_until(40.0)
    assert sim.masters() == ["a", "b"]
    sim.heal("a", "b")
    sim.heal("a", "c")
    sim.run_until(41.0)
    assert sim.masters() == ["a"]
    assert sim.nodes["c"].machine.master == (IPv4Address("192.0.2.1"), 200)


def test_two_consecutive_losses_do_not_fail_over() -> None:
    # a advertises at 3.21875 + k; after the first, lose two in every ten (13.2, 14.2, 23.2 ...)
    sim = pair(200, 100, drop=lambda t, src, dst: src == "a" and t > 5 and int(t) % 10 in (3, 4))
    sim.start("a", "b")
    sim.run_until(300.0)
    assert sim.nodes["b"].became(State.MASTER) == []


def test_three_consecutive_losses_fail_over_and_back() -> None:
    # Lose a's adverts at 10.21875, 11.21875 and 12.21875; the last heard is 9.21875.
    sim = pair(200, 100, drop=lambda t, src, dst: src == "a" and 10.0 < t < 12.5)
    sim.start("a", "b")
    sim.run_until(60.0)
    assert sim.nodes["b"].became(State.MASTER) == [9.21875 + MD_100]  # 12.828125
    # a hears b's advert, answers at once, and b is backup again in the same instant.
    assert (12.828125, 200) in sim.nodes["a"].adverts()
    assert sim.nodes["b"].became(State.BACKUP)[-1] == 12.828125
    assert sim.nodes["a"].became(State.BACKUP) == [0.0]  # a never left master


def test_thirty_percent_loss_fails_over_exactly_when_the_rfc_says() -> None:
    """b takes over iff it heard nothing from a for Master_Down_Interval, at exactly that time;
    with a advertising every second that takes at least three consecutive losses."""
    sim = pair(200, 100, loss=0.3, seed=7)
    sim.start("a", "b")
    sim.run_until(1200.0)
    a, b = sim.nodes["a"], sim.nodes["b"]
    stream = [tx for tx in sim.transmissions if tx.src == "a"]
    heard = [tx.time for tx in stream if not tx.lost]
    takeovers = b.became(State.MASTER)
    assert all(t > heard[0] for t in takeovers)
    failovers = 0
    for last, nxt in itertools.pairwise(heard):
        inside = [t for t in takeovers if last < t <= nxt]
        if nxt - last >= MD_100 - 1e-9:  # == : a's answer to b's first advert as master
            assert inside == [pytest.approx(last + MD_100, abs=1e-9)]
            lost = [tx for tx in stream if last < tx.time < inside[0]]
            assert len(lost) >= 3 and all(tx.lost for tx in lost)
            failovers += 1
        else:
            assert inside == []
    assert failovers == len(takeovers) > 20  # ~ 1200 * 0.7 * 0.3**3
    assert a.became(State.BACKUP) == [0.0]  # a never left master
    assert all(p == 200 for _, p in a.adverts())


def test_coarse_timer_ticks_only_delay_by_a_tick() -> None:
    sim = pair(200, 100, tick=0.01)
    sim.start("a", "b")
    sim.run_until(10.05)
    sim.kill("a")
    sim.run_until(30.0)
    last_heard = sim.nodes["a"].adverts()[-1][0]
    [takeover] = sim.nodes["b"].became(State.MASTER)
    assert MD_100 <= takeover - last_heard < MD_100 + 0.01 + 1e-9


def test_delay_on_the_link_does_not_change_the_outcome() -> None:
    sim = pair(100, 200, delay=0.05)
    sim.start("a", "b")
    sim.run_until(100.0)
    assert sim.masters() == ["b"]
    assert sim.nodes["a"].became(State.MASTER) == []
    sends = [a for _, a in sim.nodes["b"].history if isinstance(a, SendAdvert)]
    assert all(s.priority == 200 for s in sends)
