"""Which host routes to announce: a pure function of service health, quorum with hysteresis,
node maintenance and stopping. No clock reads; ``now`` is passed in.

Rules, first match wins, for each ``[[bgp.announce]]``:

1. the director is stopping -> withdrawn (``stopping``);
2. the director is drained (``directorctl drain-director``) -> withdrawn (``drained``);
3. announced now: stays announced while every named service has at least ``quorum`` healthy
   real servers, else withdrawn (``quorum lost``);
4. withdrawn now (and at start): announced once every named service has at least ``quorum_up``
   healthy real servers, else stays withdrawn (``below quorum_up``).

So between ``quorum`` and ``quorum_up`` the route keeps the state it has (hysteresis: one server
flapping at the boundary does not flap the route).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from director.config.bgp import Announce, HostPrefix
from director.config.model import Config
from director.ipvs.model import DestKey, ServiceKey


@dataclass(frozen=True)
class Verdict:
    """Whether to announce the VIPs, and why."""

    announce: bool
    reason: str


@dataclass(frozen=True)
class RouteState:
    """One route as status shows it: announced or not, why, and since when (monotonic)."""

    announcement: Announce
    announced: bool
    reason: str
    since: float

    @property
    def prefix(self) -> HostPrefix:
        return self.announcement.prefix

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "prefix": str(self.prefix),
            "announced": self.announced,
            "reason": self.reason,
            "for_seconds": round(max(0.0, now - self.since), 3),
        }


@dataclass(frozen=True)
class RouteChanged:
    """A route changed state (an event, past tense)."""

    state: RouteState


def decide(
    a: Announce,
    healthy: Mapping[str, int],
    announced: bool,
    *,
    drained: bool = False,
    stopping: bool = False,
) -> Verdict:
    """The verdict for one announcement; ``healthy`` maps service name -> healthy real servers."""
    if stopping:
        return Verdict(False, "stopping")
    if drained:
        return Verdict(False, "drained")
    need = a.quorum if announced else a.up_quorum
    short = [
        f"{name} {healthy.get(name, 0)}/{need}"
        for name in a.virtual_servers
        if healthy.get(name, 0) < need
    ]
    counts = ", ".join(f"{name} {healthy.get(name, 0)}" for name in a.virtual_servers)
    if not short:
        return Verdict(True, f"healthy ({counts}; quorum {a.quorum})")
    if announced:
        return Verdict(False, f"quorum lost ({', '.join(short)} healthy)")
    return Verdict(False, f"below quorum_up ({', '.join(short)} healthy)")


@dataclass
class RouteHealth:
    """The routes' current states; :meth:`update` applies :func:`decide` to each and returns
    what changed. :meth:`reconfigure` keeps the state of prefixes that stay."""

    announcements: Sequence[Announce]
    start: float
    states: dict[HostPrefix, RouteState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reconfigure(self.announcements, self.start)

    def reconfigure(self, announcements: Sequence[Announce], now: float) -> None:
        old = self.states
        self.announcements = tuple(announcements)
        self.states = {}
        for a in self.announcements:
            was = old.get(a.prefix)
            if was is None:
                self.states[a.prefix] = RouteState(a, False, "starting", now)
            else:
                self.states[a.prefix] = RouteState(a, was.announced, was.reason, was.since)

    def update(
        self,
        healthy: Mapping[str, int],
        now: float,
        *,
        drained: bool = False,
        stopping: bool = False,
    ) -> list[RouteChanged]:
        changes: list[RouteChanged] = []
        for a in self.announcements:
            current = self.states[a.prefix]
            verdict = decide(a, healthy, current.announced, drained=drained, stopping=stopping)
            if verdict.announce != current.announced:
                state = RouteState(a, verdict.announce, verdict.reason, now)
                changes.append(RouteChanged(state))
            else:
                state = RouteState(a, current.announced, verdict.reason, current.since)
            self.states[a.prefix] = state
        return changes

    def announced(self) -> list[Announce]:
        return [s.announcement for s in self.states.values() if s.announced]

    def to_json(self, now: float) -> list[dict[str, object]]:
        return [s.to_json(now) for s in self.states.values()]


def healthy_counts(
    config: Config,
    health: Mapping[tuple[ServiceKey, DestKey], bool],
    overrides: Mapping[tuple[ServiceKey, DestKey], str] | None = None,
) -> dict[str, int]:
    """Healthy real servers per virtual server name: weight above 0, not drained, and up - by a
    verdict of its check (a server whose check has not answered yet does not count), or with no
    check, unless something marked it down."""
    counts: dict[str, int] = {}
    for vs in config.virtual_servers:
        skey = vs.service_key()
        n = 0
        for rs in vs.real_servers:
            key = (skey, rs.dest_key(vs))
            if rs.weight <= 0 or (overrides and key in overrides):
                continue
            verdict = health.get(key)
            checked = rs.health_check(vs) is not None
            n += verdict is True or (not checked and verdict is None)
        counts[vs.display_name] = n
    return counts
