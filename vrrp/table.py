"""The VRRP state table (RFC 5798 6.4, RFC 3768 6.4), as data: (state, event) -> rule.

Every transition and every timer rule of the machine is a line below; ``machine.Machine`` only
classifies inputs into an ``Event`` and performs a rule's ``Effect`` list in order. Deviations
from the RFC text, following keepalived unless said:

- a master that hears a lower priority (or an equal one from a lower address) re-advertises at
  once and sends gratuitous ARPs, instead of discarding it: split brain heals within one
  advert's flight time rather than the loser's next advert. Unlike keepalived (which answers
  every one), it answers at most one such advert per ``advert_interval``
  (``ADVERT_LOWER_HELD``); a priority 0 advert likewise (``ADVERT_RELEASE_HELD``), each kind
  on its own hold. A flood of forged adverts then costs one advert and one gratuitous round
  per interval instead of doubling the flood. Leaving master clears the holds;
- ``preempt_delay``: a backup with preemption on keeps following a lower-priority master for
  this long after it first hears one, then lets its Master_Down_Timer run out;
- a fault (tracking) state: leaving master for it sends a priority 0 advert, like shutdown;
- an address owner (priority 255) handles adverts like any master, where RFC 7.1 has it drop
  them all: two routers misconfigured as owner settle on the higher address instead of both
  staying master (keepalived detects that case too, with its own back-off);
- a master whose virtual address someone deleted (``ip addr del``) puts it back and announces
  it (``ADDRESS_LOST``): the address is drift, as an IPVS service removed by hand is; a backup
  never adds one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"


class Event(enum.StrEnum):
    START = "start"
    START_AS_OWNER = "start_as_owner"  # priority 255
    START_IN_FAULT = "start_in_fault"  # a fault was reported before start
    SHUTDOWN = "shutdown"
    FAULT = "fault"
    RECOVER = "recover"
    RECOVER_AS_OWNER = "recover_as_owner"
    MASTER_DOWN_TIMER = "master_down_timer"
    PREEMPT = "preempt"  # Master_Down_Timer ran out while a lower priority master was heard
    ADVER_TIMER = "adver_timer"
    GARP_TIMER = "garp_timer"
    PRIORITY_CHANGED = "priority_changed"
    ADVERT_RELEASE = "advert_release"  # priority 0: the master is leaving
    ADVERT_HIGHER = "advert_higher"  # higher priority
    ADVERT_EQUAL_HIGHER_ADDRESS = "advert_equal_higher_address"
    ADVERT_EQUAL_LOWER_ADDRESS = "advert_equal_lower_address"
    ADVERT_LOWER = "advert_lower"  # lower priority, and we preempt
    ADVERT_LOWER_NO_PREEMPT = "advert_lower_no_preempt"  # lower priority, nopreempt
    ADVERT_LOWER_DELAYED = "advert_lower_delayed"  # lower priority, within preempt_delay
    # master only: one of the four above (release: priority 0) within advert_interval of the
    # last one answered
    ADVERT_LOWER_HELD = "advert_lower_held"
    ADVERT_RELEASE_HELD = "advert_release_held"
    ADDRESS_LOST = "address_lost"  # a virtual address was deleted by someone else


class Effect(enum.Enum):
    # Adver_Timer, Master_Down_Timer, gratuitous rounds, preempt delay, holds on answers
    CANCEL_TIMERS = enum.auto()
    RESET_MASTER_INTERVAL = enum.auto()  # Master_Adver_Interval := Advertisement_Interval
    FOLLOW_MASTER = enum.auto()  # Master_Adver_Interval := the advert's; remember the master
    ARM_MASTER_DOWN = enum.auto()  # Master_Down_Timer := Master_Down_Interval
    ARM_SKEW = enum.auto()  # Master_Down_Timer := Skew_Time
    ARM_ADVER = enum.auto()  # Adver_Timer := Advertisement_Interval
    SEND_ADVERT = enum.auto()
    SEND_RELEASE = enum.auto()  # an advert with priority 0
    ADD_ADDRESSES = enum.auto()
    REMOVE_ADDRESSES = enum.auto()
    START_GARP = enum.auto()  # schedule the gratuitous bursts and refresh; send what is due
    SEND_DUE_GARP = enum.auto()
    SEND_LOWER_PRIORITY_GARP = enum.auto()
    START_PREEMPT_DELAY = enum.auto()  # unless already running
    STOP_PREEMPT_DELAY = enum.auto()
    HOLD_LOWER_ANSWERS = enum.auto()  # answer no lower priority advert for advert_interval
    HOLD_RELEASE_ANSWERS = enum.auto()  # nor a priority 0 one
    COUNT_HELD_ANSWER = enum.auto()  # an answer not sent, for the counters
    RESTORE_ADDRESSES = enum.auto()  # put the lost addresses back and announce them


@dataclass(frozen=True, slots=True)
class Rule:
    """A transition: the next state and its effects."""

    target: State | None  # None: stay
    effects: tuple[Effect, ...]


E = Effect
ENTER_BACKUP = (E.CANCEL_TIMERS, E.RESET_MASTER_INTERVAL, E.ARM_MASTER_DOWN)
# RFC 5798 6.4.2: send the advert first (the old master drops the addresses), then ARP.
ENTER_MASTER = (E.CANCEL_TIMERS, E.SEND_ADVERT, E.ADD_ADDRESSES, E.START_GARP, E.ARM_ADVER)
LEAVE_MASTER = (E.CANCEL_TIMERS, E.SEND_RELEASE, E.REMOVE_ADDRESSES)
FOLLOW = (E.FOLLOW_MASTER, E.ARM_MASTER_DOWN)
REASSERT = (E.SEND_ADVERT, E.ARM_ADVER, E.SEND_LOWER_PRIORITY_GARP, E.HOLD_LOWER_ANSWERS)
YIELD = (E.CANCEL_TIMERS, E.REMOVE_ADDRESSES, *FOLLOW)
IGNORE: tuple[Effect, ...] = ()

S, V = State, Event
TRANSITIONS: dict[tuple[State, Event], Rule] = {
    (S.INITIALIZE, V.START): Rule(S.BACKUP, ENTER_BACKUP),
    (S.INITIALIZE, V.START_AS_OWNER): Rule(S.MASTER, ENTER_MASTER),
    (S.INITIALIZE, V.START_IN_FAULT): Rule(S.FAULT, (E.CANCEL_TIMERS,)),
    (S.BACKUP, V.SHUTDOWN): Rule(S.INITIALIZE, (E.CANCEL_TIMERS,)),
    (S.BACKUP, V.FAULT): Rule(S.FAULT, (E.CANCEL_TIMERS,)),
    (S.BACKUP, V.MASTER_DOWN_TIMER): Rule(S.MASTER, ENTER_MASTER),
    (S.BACKUP, V.PREEMPT): Rule(S.MASTER, ENTER_MASTER),
    (S.BACKUP, V.ADVERT_RELEASE): Rule(None, (E.ARM_SKEW,)),
    (S.BACKUP, V.ADVERT_HIGHER): Rule(None, (E.STOP_PREEMPT_DELAY, *FOLLOW)),
    (S.BACKUP, V.ADVERT_EQUAL_HIGHER_ADDRESS): Rule(None, (E.STOP_PREEMPT_DELAY, *FOLLOW)),
    (S.BACKUP, V.ADVERT_EQUAL_LOWER_ADDRESS): Rule(None, (E.STOP_PREEMPT_DELAY, *FOLLOW)),
    (S.BACKUP, V.ADVERT_LOWER_NO_PREEMPT): Rule(None, FOLLOW),
    (S.BACKUP, V.ADVERT_LOWER_DELAYED): Rule(None, (E.START_PREEMPT_DELAY, *FOLLOW)),
    (S.BACKUP, V.ADVERT_LOWER): Rule(None, IGNORE),  # preempt: let Master_Down_Timer run out
    (S.MASTER, V.SHUTDOWN): Rule(S.INITIALIZE, LEAVE_MASTER),
    (S.MASTER, V.FAULT): Rule(S.FAULT, LEAVE_MASTER),
    (S.MASTER, V.ADVER_TIMER): Rule(None, (E.SEND_ADVERT, E.ARM_ADVER)),
    (S.MASTER, V.GARP_TIMER): Rule(None, (E.SEND_DUE_GARP,)),
    (S.MASTER, V.PRIORITY_CHANGED): Rule(None, (E.SEND_ADVERT, E.ARM_ADVER)),
    (S.MASTER, V.ADVERT_RELEASE): Rule(None, (E.SEND_ADVERT, E.ARM_ADVER, E.HOLD_RELEASE_ANSWERS)),
    (S.MASTER, V.ADVERT_RELEASE_HELD): Rule(None, (E.COUNT_HELD_ANSWER,)),
    (S.MASTER, V.ADVERT_HIGHER): Rule(S.BACKUP, YIELD),
    (S.MASTER, V.ADVERT_EQUAL_HIGHER_ADDRESS): Rule(S.BACKUP, YIELD),
    (S.MASTER, V.ADVERT_EQUAL_LOWER_ADDRESS): Rule(None, REASSERT),
    (S.MASTER, V.ADVERT_LOWER): Rule(None, REASSERT),
    (S.MASTER, V.ADVERT_LOWER_NO_PREEMPT): Rule(None, REASSERT),
    (S.MASTER, V.ADVERT_LOWER_DELAYED): Rule(None, REASSERT),
    (S.MASTER, V.ADVERT_LOWER_HELD): Rule(None, (E.COUNT_HELD_ANSWER,)),
    (S.MASTER, V.ADDRESS_LOST): Rule(None, (E.RESTORE_ADDRESSES,)),
    (S.FAULT, V.SHUTDOWN): Rule(S.INITIALIZE, (E.CANCEL_TIMERS,)),
    (S.FAULT, V.RECOVER): Rule(S.BACKUP, ENTER_BACKUP),
    (S.FAULT, V.RECOVER_AS_OWNER): Rule(S.MASTER, ENTER_MASTER),
}
"""Any (state, event) not listed is ignored: e.g. adverts in Initialize and Fault."""


def diagram() -> str:
    """The state diagram (Mermaid) generated from the table, for the docs."""
    lines = ["stateDiagram-v2", "    [*] --> initialize"]
    for (state, event), rule in TRANSITIONS.items():
        if rule.target is not None and rule.target is not state:
            lines.append(f"    {state} --> {rule.target}: {event}")
    return "\n".join(lines) + "\n"
