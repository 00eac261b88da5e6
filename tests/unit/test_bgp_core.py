"""The BGP pure cores: announce/withdraw decisions (quorum, hysteresis, drain, stop) on a stepped
clock, and the ExaBGP API dialogue against a scripted ExaBGP."""

from __future__ import annotations

import ipaddress

import pytest

from director.bgp.decision import RouteHealth, decide
from director.bgp.exabgp_api import (
    CommandDone,
    CommandFailed,
    ExaBgpApi,
    ExaBgpStopping,
    Route,
    SessionChanged,
    Unexpected,
)
from director.config.bgp import Announce

P1 = ipaddress.ip_network("198.18.0.10/32")
P2 = ipaddress.ip_network("2001:db8::10/128")
PEER = ipaddress.ip_address("198.18.1.254")


def announce(
    prefix: str = "198.18.0.10/32", *services: str, quorum: int = 2, up: int = 3
) -> Announce:
    return Announce(
        prefix=ipaddress.ip_network(prefix),
        virtual_servers=services or ("web",),
        quorum=quorum,
        quorum_up=up,
    )


# -- decisions ---------------------------------------------------------------------------------


def test_decide_rules_in_order() -> None:
    a = announce("198.18.0.10/32", "web", "api")
    both = {"web": 3, "api": 3}
    assert decide(a, both, False).announce
    assert decide(a, both, True).reason == "healthy (web 3, api 3; quorum 2)"
    assert decide(a, both, True, stopping=True, drained=True).reason == "stopping"
    assert decide(a, both, True, drained=True).reason == "drained"
    # every service must have its quorum; the reason names those short of it
    v = decide(a, {"web": 3, "api": 1}, True)
    assert (v.announce, v.reason) == (False, "quorum lost (api 1/2 healthy)")
    v = decide(a, {"web": 2}, False)
    assert (v.announce, v.reason) == (False, "below quorum_up (web 2/3, api 0/3 healthy)")


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # start withdrawn; 2 is not enough to come up (quorum_up 3), 3 is
        ([2, 3], [False, True]),
        # announced: down to 2 stays (quorum 2), 1 withdraws, back to 2 stays withdrawn
        ([3, 2, 1, 2, 3], [True, True, False, False, True]),
        # one server flapping between 2 and 3 flaps nothing once announced
        ([3, 2, 3, 2, 3, 2], [True] * 6),
        # and flapping between 1 and 2 once withdrawn flaps nothing either
        ([3, 1, 2, 1, 2], [True, False, False, False, False]),
    ],
)
def test_quorum_hysteresis_on_a_stepped_clock(counts: list[int], expected: list[bool]) -> None:
    routes = RouteHealth([announce()], start=100.0)
    seen = []
    for step, n in enumerate(counts):
        routes.update({"web": n}, now=100.0 + step)
        seen.append(routes.states[P1].announced)
    assert seen == expected


def test_changes_are_reported_once_with_their_time_and_reason() -> None:
    routes = RouteHealth([announce(quorum=1, up=1)], start=0.0)
    assert routes.states[P1].reason == "starting"
    (change,) = routes.update({"web": 1}, now=5.0)
    assert (change.state.announced, change.state.since) == (True, 5.0)
    assert routes.update({"web": 2}, now=6.0) == []  # no change, since stays
    assert routes.states[P1].since == 5.0
    (change,) = routes.update({"web": 2}, now=7.0, drained=True)
    assert (change.state.announced, change.state.reason, change.state.since) == (
        False,
        "drained",
        7.0,
    )
    assert routes.to_json(now=9.5) == [
        {"prefix": "198.18.0.10/32", "announced": False, "reason": "drained", "for_seconds": 2.5}
    ]
    (change,) = routes.update({"web": 2}, now=10.0)  # drain lifted
    assert change.state.announced
    (change,) = routes.update({"web": 2}, now=11.0, stopping=True)
    assert change.state.reason == "stopping"
    assert routes.announced() == []


def test_reconfigure_keeps_the_state_of_routes_that_stay() -> None:
    a, b = announce(quorum=1, up=1), announce("2001:db8::10/128", "web6", quorum=1, up=1)
    routes = RouteHealth([a], start=0.0)
    routes.update({"web": 1}, now=1.0)
    routes.reconfigure([a, b], now=2.0)
    assert routes.states[P1].announced and routes.states[P1].since == 1.0
    assert not routes.states[P2].announced
    assert [c.state.prefix for c in routes.update({"web": 1, "web6": 1}, now=3.0)] == [P2]
    routes.reconfigure([b], now=4.0)
    assert list(routes.states) == [P2]


# -- the ExaBGP dialogue -----------------------------------------------------------------------


R1 = Route(P1, ipaddress.ip_address("198.18.1.1"), ("65000:100", "65000:200"), 10)
R2 = Route(P2, ipaddress.ip_address("2001:db8:1::1"))


def test_commands_are_exabgp_text_api() -> None:
    assert R1.announce_command() == (
        "announce route 198.18.0.10/32 next-hop 198.18.1.1 community [65000:100 65000:200] med 10"
    )
    assert R2.announce_command() == "announce route 2001:db8::10/128 next-hop 2001:db8:1::1"
    assert Route(P1).withdraw_command() == "withdraw route 198.18.0.10/32 next-hop self"


class ScriptedExaBgp:
    """What ExaBGP does with commands: keeps a RIB and answers done (or error for the commands
    it is told to refuse), in order."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.rib: set[str] = set()
        self.refuse = refuse

    def run(self, commands: list[str]) -> bytes:
        out = b""
        for command in commands:
            if command in self.refuse:
                out += b"error\n"
                continue
            verb, _, prefix = command.split()[:3]
            if verb == "announce":
                self.rib.add(prefix)
            else:
                self.rib.discard(prefix)
            out += b"done\n"
        return out


def test_want_is_level_triggered_and_acks_are_tracked() -> None:
    api, exa = ExaBgpApi(), ScriptedExaBgp()
    commands = api.want([R1, R2])
    assert len(commands) == 2 and len(api.pending) == 2
    assert api.want([R1, R2]) == []  # nothing new: nothing sent
    answer = exa.run(commands)
    # acks may arrive split anywhere
    events = api.receive(answer[:3], now=1.0) + api.receive(answer[3:], now=1.0)
    assert events == [CommandDone(commands[0]), CommandDone(commands[1])]
    assert not api.pending and set(api.acked) == {P1, P2}
    withdraw = api.want([R2])
    assert withdraw == [R1.withdraw_command()]
    assert api.receive(exa.run(withdraw), now=2.0) == [CommandDone(withdraw[0])]
    assert exa.rib == {str(P2)} and set(api.acked) == {P2}
    changed = Route(P2, R2.next_hop, med=5)
    assert api.want([changed]) == [changed.announce_command()]  # a changed route is re-announced


def test_an_error_is_retried_by_the_next_want() -> None:
    api = ExaBgpApi()
    exa = ScriptedExaBgp(refuse=frozenset({R1.announce_command()}))
    commands = api.want([R1])
    assert api.receive(exa.run(commands), now=0.0) == [CommandFailed(commands[0])]
    assert api.failed == 1 and P1 not in api.acked
    exa.refuse = frozenset({R1.withdraw_command()})
    assert api.want([R1]) == [R1.announce_command()]
    api.receive(exa.run([R1.announce_command()]), now=0.0)
    withdraw = api.want([])
    assert api.receive(exa.run(withdraw), now=0.0) == [CommandFailed(withdraw[0])]
    assert exa.rib == {str(P1)}
    exa.refuse = frozenset()
    assert api.want([]) == [R1.withdraw_command()]  # tried again


def test_sessions_shutdown_and_noise() -> None:
    api = ExaBgpApi()
    events = api.receive(
        b"neighbor 198.18.1.254 connected\nneighbor 198.18.1.254 up\n"
        b"neighbor 198.18.1.254 down - peer reset the session\n"
        b"done\n\nsomething else\nshutdown 10 9\n",
        now=4.0,
    )
    assert events == [
        SessionChanged(PEER, "connected"),
        SessionChanged(PEER, "up"),
        SessionChanged(PEER, "down", "peer reset the session"),
        Unexpected("done"),  # an ack nobody waits for
        Unexpected("something else"),
        ExaBgpStopping(),
    ]
    assert api.unexpected == 2
    assert api.sessions_json(now=6.0) == [
        {
            "peer": "198.18.1.254",
            "state": "down",
            "for_seconds": 2.0,
            "reason": "peer reset the session",
            "flaps": 1,
        }
    ]
    assert api.receive(b"x" * 70000, now=7.0) == [
        Unexpected("(a line longer than 64 KiB, dropped)")
    ]


def test_reset_after_a_restart_sends_everything_again() -> None:
    api, exa = ExaBgpApi(), ScriptedExaBgp()
    api.receive(exa.run(api.want([R1, R2])), now=0.0)
    api.want([R1])  # a withdrawal in flight when ExaBGP dies
    api.reset()
    assert not api.pending and not api.acked
    assert api.want([R1]) == [R1.announce_command()]
