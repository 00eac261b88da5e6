"""Tracking: what links and health-check quorums do to an instance. Pure.

Each tracked item is either up or down. A down item with weight 0 puts the instance in fault;
one with a weight lowers the priority by that much (keepalived's ``track_interface`` /
``track_script`` with a negative weight). The priority never goes below 1; an address owner
(255) is not lowered (the config allows it only weight 0). :meth:`Tracker.evaluate` is a function
of the current inputs, so the same inputs always give the same verdict and the adapter feeds
only the differences (``Instance.set_fault`` / ``Instance.set_priority``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vrrp.packet import PRIORITY_OWNER


@dataclass(frozen=True, slots=True)
class TrackedInterface:
    """An interface whose state lowers the priority or faults the instance."""

    interface: str
    weight: int = 0  # 0: fault while down


@dataclass(frozen=True, slots=True)
class TrackedCheck:
    """A virtual service whose healthy real servers the instance tracks."""

    virtual_server: str
    quorum: int = 1  # down while fewer real servers than this are healthy
    weight: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The tracked items' verdict: the faults and the priority."""

    faults: frozenset[str]  # reasons, like "interface eth1" or "checks exchange 0/1"
    priority: int
    lowered_by: tuple[str, ...] = ()  # the items that lowered the priority

    @property
    def fault(self) -> bool:
        return bool(self.faults)


class Tracker:
    def __init__(
        self,
        priority: int,
        interfaces: Sequence[TrackedInterface] = (),
        checks: Sequence[TrackedCheck] = (),
    ) -> None:
        self.priority = priority
        self.interfaces = tuple(interfaces)
        self.checks = tuple(checks)

    @property
    def watched_interfaces(self) -> tuple[str, ...]:
        return tuple(t.interface for t in self.interfaces)

    @property
    def watched_services(self) -> tuple[str, ...]:
        return tuple(t.virtual_server for t in self.checks)

    def evaluate(self, links: Mapping[str, bool], healthy: Mapping[str, int]) -> Verdict:
        """``links``: interface -> running; ``healthy``: virtual server -> healthy real servers.

        An interface missing from ``links`` counts as down (it does not exist); a virtual
        server missing from ``healthy`` has no healthy server.
        """
        faults: set[str] = set()
        lowered: list[str] = []
        priority = self.priority
        for ti in self.interfaces:
            if links.get(ti.interface, False):
                continue
            reason = f"interface {ti.interface} down"
            if ti.weight == 0:
                faults.add(reason)
            else:
                lowered.append(reason)
                priority -= ti.weight
        for tc in self.checks:
            count = healthy.get(tc.virtual_server, 0)
            if count >= tc.quorum:
                continue
            reason = f"checks {tc.virtual_server} {count}/{tc.quorum}"
            if tc.weight == 0:
                faults.add(reason)
            else:
                lowered.append(reason)
                priority -= tc.weight
        if self.priority == PRIORITY_OWNER:
            priority = PRIORITY_OWNER
        return Verdict(frozenset(faults), max(1, priority), tuple(lowered))
