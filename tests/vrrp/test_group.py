"""Sync groups: fault spreads while it lasts, leaving master spreads once; with real machines.

The second half drives two directors' machines (two instances each, one group per director)
over the simulated link from ``tests.vrrp.sim`` with a stepped clock, and performs the group's
actions the way the service does (a hold is ``fault``/``recover``, a demote is both at once).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from vrrp import Action, Config, Machine, SendAdvert, State, StateChanged
from vrrp.group import Demote, Hold, SyncGroup

M, B, F, INIT = State.MASTER, State.BACKUP, State.FAULT, State.INITIALIZE


def test_group_state() -> None:
    g = SyncGroup("G1", ["a", "b"])
    assert g.state is INIT
    g.observe("a", B)
    assert g.state is B
    g.observe("b", M)
    assert g.state is B
    g.observe("a", M)
    assert g.state is M
    g.observe("b", F)
    assert g.state is F


def test_fault_holds_every_member_until_the_last_own_fault_clears() -> None:
    g = SyncGroup("G1", ["a", "b", "c"])
    assert g.faults({"a": False}) == []
    assert g.faults({"b": True}) == [Hold("a", True), Hold("b", True), Hold("c", True)]
    assert g.faults({"b": True, "c": True}) == []  # already held
    assert g.faults({"b": False, "c": True}) == []
    assert g.faults({}) == [Hold("a", False), Hold("b", False), Hold("c", False)]


def test_leaving_master_demotes_the_other_masters_once() -> None:
    g = SyncGroup("G1", ["a", "b", "c"])
    for m in ("a", "b", "c"):
        g.observe(m, B)
        g.observe(m, M)
    assert g.observe("a", B) == [Demote("b"), Demote("c")]
    # the demoted members pass through fault: not a group fault, no further demotes
    assert g.demoting("b")
    assert g.observe("b", F) == []
    assert g.state is B
    assert g.observe("b", B) == []
    assert not g.demoting("b")
    assert g.observe("c", F) == [] and g.observe("c", B) == []
    assert g.state is B


def test_a_member_going_backup_from_fault_demotes_nobody() -> None:
    g = SyncGroup("G1", ["a", "b"])
    g.observe("a", M)
    g.observe("b", F)
    assert g.observe("b", B) == []
    assert g.observe("a", F) == []  # fault is level-triggered through faults(), not here


# -- two directors, two instances each, on a stepped clock ------------------------------------

INTERVAL = 1.0


def machine(vrid: int, host: int, priority: int) -> Machine:
    return Machine(
        Config(
            vrid=vrid,
            priority=priority,
            primary_address=IPv4Address(f"198.18.{vrid - 1}.{host}"),
            virtual_addresses=(IPv4Address(f"198.18.{vrid - 1}.10"),),
            advert_interval=INTERVAL,
        )
    )


class Director:
    """Two machines (vrid 1 and 2) in one sync group, the group's actions performed at once."""

    def __init__(self, host: int, priority: int) -> None:
        self.host = host
        self.machines = {"v1": machine(1, host, priority), "v2": machine(2, host, priority)}
        self.group = SyncGroup("G", ["v1", "v2"])
        self.own: dict[str, bool] = {}
        self.sent: list[tuple[str, int]] = []  # (member, priority) adverts
        self.demoted: list[str] = []

    def feed(self, member: str, actions: list[Action]) -> None:
        follow: list[Demote | Hold] = []
        for action in actions:
            if isinstance(action, SendAdvert):
                self.sent.append((member, action.priority))
            elif isinstance(action, StateChanged):
                follow += self.group.observe(member, action.state)
        self.now_actions(follow)

    def now_actions(self, actions: list[Demote | Hold]) -> None:
        for a in actions:
            m = self.machines[a.member]
            if isinstance(a, Demote):
                self.demoted.append(a.member)
                self.feed(a.member, m.fault(self.now) + m.recover(self.now))
            elif a.on:
                self.feed(a.member, m.fault(self.now))
            else:
                self.feed(a.member, m.recover(self.now))

    def set_own_fault(self, member: str, fault: bool) -> None:
        self.own[member] = fault
        self.now_actions(self.group.faults(self.own))

    now = 0.0

    def states(self) -> tuple[State, State]:
        return self.machines["v1"].state, self.machines["v2"].state


def run(directors: list[Director], until: float, cut: set[tuple[int, str]] | None = None) -> None:
    """Step the clock; deliver each advert to the other director's same-vrid machine at once.

    ``cut``: (host, member) whose adverts are lost (its link is down).
    """
    cut = cut or set()
    while True:
        deadlines = [
            (t, d, name)
            for d in directors
            for name, m in d.machines.items()
            if (t := m.next_deadline()) is not None
        ]
        t, d, name = min(deadlines, key=lambda x: x[0])
        if t > until:
            for x in directors:
                x.now = until
            return
        for x in directors:
            x.now = t
        before = len(d.sent)
        d.feed(name, d.machines[name].handle_timer(t))
        deliver(directors, d, before, cut)


def deliver(
    directors: list[Director], sender: Director, before: int, cut: set[tuple[int, str]]
) -> None:
    queue = [(sender, before)]
    while queue:
        src, start = queue.pop()
        for member, priority in src.sent[start:]:
            if (src.host, member) in cut:
                continue
            m = src.machines[member]
            packet = m.config.advertisement(priority)
            for other in directors:
                if other is src or (other.host, member) in cut:
                    continue
                mark = len(other.sent)
                other.feed(
                    member,
                    other.machines[member].receive(packet, m.config.primary_address, other.now),
                )
                queue.append((other, mark))
        del src.sent[:]


def start(*directors: Director) -> None:
    for d in directors:
        for name, m in d.machines.items():
            d.feed(name, m.start(0.0))


def test_one_members_fault_moves_the_whole_group_and_back() -> None:
    d1, d2 = Director(1, 150), Director(2, 100)
    start(d1, d2)
    run([d1, d2], 5.0)
    assert d1.states() == (M, M) and d2.states() == (B, B)
    # d1's v2 link goes down: its adverts are lost and it faults; v1 is held in fault too
    cut = {(1, "v2")}
    d1.set_own_fault("v2", True)
    deliver([d1, d2], d1, 0, cut)
    assert d1.states() == (F, F)
    run([d1, d2], 5.0 + d2.machines["v1"].skew_time + 0.01, cut)
    assert d2.states() == (M, B)  # v1 heard the priority 0 advert: over in Skew_Time
    run([d1, d2], 5.0 + d2.machines["v2"].master_down_interval + 0.01, cut)
    assert d2.states() == (M, M)  # v2 heard nothing (link down): Master_Down_Interval
    assert d1.group.state is F and d2.group.state is M
    d1.set_own_fault("v2", False)
    deliver([d1, d2], d1, 0, set())
    run([d1, d2], 20.0)
    assert d1.states() == (M, M) and d2.states() == (B, B)  # preempted back together


def test_one_member_hearing_a_higher_priority_demotes_the_other() -> None:
    d1, d2 = Director(1, 150), Director(2, 100)
    start(d1, d2)
    run([d1, d2], 5.0)
    assert d1.states() == (M, M)
    # d2's v2 gets a higher priority (say, tracking on d1's side lowered d1's v2)
    d2.feed("v2", d2.machines["v2"].set_priority(200, d2.now))
    d2.feed("v1", d2.machines["v1"].set_priority(200, d2.now))  # (no preempting back)
    assert d2.states() == (B, B)
    run([d1, d2], 9.5)  # d2's v2 preempts first (its master-down timer), d1's v1 follows
    assert d1.states() == (B, B) and d2.states() == (M, M)
    assert d1.demoted == ["v2"]  # v1 heard d2 first and took v2 along
    assert d1.group.state is B and not d1.group.demoting("v2")
    assert d2.demoted == []
