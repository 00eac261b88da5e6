"""Tracking verdicts: links and check quorums -> fault or lowered priority."""

from __future__ import annotations

from vrrp.track import TrackedCheck, TrackedInterface, Tracker, Verdict

ETH1 = TrackedInterface("eth1")
ETH2 = TrackedInterface("eth2", weight=30)
MAIL = TrackedCheck("mail", quorum=2)
WEB = TrackedCheck("web", quorum=1, weight=50)


def test_all_up_keeps_the_configured_priority() -> None:
    t = Tracker(100, [ETH1, ETH2], [MAIL, WEB])
    up = t.evaluate({"eth1": True, "eth2": True}, {"mail": 2, "web": 3})
    assert up == Verdict(frozenset(), 100)
    assert not up.fault


def test_weight_zero_is_fault_others_lower_the_priority() -> None:
    t = Tracker(100, [ETH1, ETH2], [MAIL, WEB])
    v = t.evaluate({"eth1": False, "eth2": True}, {"mail": 2, "web": 1})
    assert v.faults == {"interface eth1 down"} and v.priority == 100
    v = t.evaluate({"eth1": True, "eth2": False}, {"mail": 1, "web": 0})
    assert v.faults == {"checks mail 1/2"}
    assert v.priority == 20 and v.lowered_by == ("interface eth2 down", "checks web 0/1")


def test_missing_inputs_count_as_down_and_priority_stays_at_least_one() -> None:
    t = Tracker(60, [ETH2], [WEB])
    assert t.evaluate({}, {}) == Verdict(frozenset(), 1, ("interface eth2 down", "checks web 0/1"))
    assert t.watched_interfaces == ("eth2",) and t.watched_services == ("web",)


def test_owner_keeps_255_but_still_faults() -> None:
    t = Tracker(255, [ETH1], [TrackedCheck("web", weight=0)])
    assert t.evaluate({"eth1": True}, {"web": 1}).priority == 255
    v = t.evaluate({"eth1": True}, {"web": 0})
    assert v.fault and v.priority == 255


def test_same_inputs_same_verdict() -> None:
    t = Tracker(100, [ETH1, ETH2], [MAIL, WEB])
    inputs = ({"eth1": True, "eth2": False}, {"mail": 5, "web": 0})
    assert t.evaluate(*inputs) == t.evaluate(*inputs)
