"""Sync groups: instances that change state together (keepalived's ``vrrp_sync_group``). Pure.

Typically the public side and the real-server side of a NAT director: if only one of them moved
to the other director, traffic would go in through one and come back through the other.

Rules, all decided here and performed by the adapter on the members' instances:

- **fault spreads** (level-triggered): while any member has a fault of its own (its link, a
  tracked interface or check), every member is *held* in fault (``Hold(member, True)``), and all
  are released together when the last own fault clears. The adapter tells :meth:`SyncGroup.faults`
  which members have own faults whenever that may have changed.
- **leaving master spreads** (edge-triggered): when a member goes from master to backup on its
  own (it heard a higher priority), every other member still master is *demoted*
  (``Demote(member)``: the adapter takes it through fault back to backup, which sends the
  priority 0 advert so the peer director's instance takes over within Skew_Time). The transient
  fault of a demoted member is not a fault of the group.

The group's state: fault if any member is, master if all are, initialize if all are, else
backup. Members should have the same priority on one director (as with keepalived): a group
whose members preempt differently can end split, one member master and one backup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vrrp.table import State


@dataclass(frozen=True, slots=True)
class Hold:
    """Put ``member`` in fault for the group (``on``), or release it."""

    member: str
    on: bool


@dataclass(frozen=True, slots=True)
class Demote:
    """Take ``member`` out of master: through fault to backup, with a priority 0 advert."""

    member: str


GroupAction = Hold | Demote


class SyncGroup:
    def __init__(self, name: str, members: Sequence[str]) -> None:
        if not members:
            raise ValueError(f"sync group {name}: no members")
        self.name = name
        self.members = tuple(members)
        self.states: dict[str, State] = dict.fromkeys(self.members, State.INITIALIZE)
        self.held = False
        self._demoting: set[str] = set()

    @property
    def state(self) -> State:
        seen = [State.BACKUP if m in self._demoting else state for m, state in self.states.items()]
        if State.FAULT in seen:
            return State.FAULT
        if all(s is State.MASTER for s in seen):
            return State.MASTER
        if all(s is State.INITIALIZE for s in seen):
            return State.INITIALIZE
        return State.BACKUP

    def demoting(self, member: str) -> bool:
        """Whether ``member`` is on its way from master to backup for the group."""
        return member in self._demoting

    def observe(self, member: str, state: State) -> list[GroupAction]:
        """``member`` changed to ``state``; what the others must do."""
        previous = self.states[member]
        self.states[member] = state
        if member in self._demoting:
            if state not in (State.MASTER, State.FAULT):
                self._demoting.discard(member)
            return []
        out: list[GroupAction] = []
        if previous is State.MASTER and state is State.BACKUP:
            for other in self.members:
                if (
                    other != member
                    and self.states[other] is State.MASTER
                    and other not in self._demoting
                ):
                    self._demoting.add(other)
                    out.append(Demote(other))
        return out

    def faults(self, own: Mapping[str, bool]) -> list[GroupAction]:
        """``own``: member -> has a fault of its own. Holds or releases every member on a change."""
        hold = any(own.get(m, False) for m in self.members)
        if hold == self.held:
            return []
        self.held = hold
        return [Hold(m, hold) for m in self.members]
