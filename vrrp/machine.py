"""One VRRP virtual router as a sans-I/O state machine (RFC 5798 section 6, RFC 3768 for v2).

Time comes in as ``now`` (monotonic seconds); nothing here reads a clock, touches a socket or
draws a random number (VRRP needs none: Skew_Time already separates the backups). Every input
returns the actions to perform, in order; ``next_deadline()`` says when to call
``handle_timer``. Received adverts must already have passed ``packet.parse``.

The machine classifies each input into a ``table.Event``; what happens next is the table's rule
for (state, event), performed effect by effect in ``_perform``.
"""

from __future__ import annotations

import copy
from typing import assert_never

from vrrp.actions import (
    Action,
    AddAddresses,
    RemoveAddresses,
    SendAdvert,
    SendGratuitous,
    StateChanged,
)
from vrrp.config import Config, master_down_interval, skew_time
from vrrp.packet import PRIORITY_OWNER, PRIORITY_RELEASE, Advertisement, IPAddress
from vrrp.table import TRANSITIONS, Effect, Event, State

_Received = tuple[Advertisement, IPAddress]


class Machine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._state = State.INITIALIZE
        self._priority = config.priority
        self._faulted = False
        self._master_adver_interval = config.advert_interval
        self._master: tuple[IPAddress, int] | None = None  # (address, priority) followed
        self._master_down_at: float | None = None
        self._adver_at: float | None = None
        self._garp_due: list[float] = []  # sorted times of the pending gratuitous rounds
        self._garp_refresh_at: float | None = None
        self._preempt_at: float | None = None  # preempt_delay running until then

    # -- what the adapter and status output read -------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def priority(self) -> int:
        return self._priority

    @property
    def master_adver_interval(self) -> float:
        return self._master_adver_interval

    @property
    def skew_time(self) -> float:
        return skew_time(self.config.version, self._priority, self._master_adver_interval)

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(
            self.config.version, self._priority, self._master_adver_interval
        )

    @property
    def master(self) -> tuple[IPAddress, int] | None:
        """The (address, priority) a backup follows; None in any other state."""
        return self._master if self._state is State.BACKUP else None

    def next_deadline(self) -> float | None:
        timers = (self._master_down_at, self._adver_at, self._garp_refresh_at)
        times = [t for t in timers if t is not None]
        if self._garp_due:
            times.append(self._garp_due[0])
        return min(times, default=None)

    # -- inputs ------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self._faulted:
            return self._dispatch(Event.START_IN_FAULT, now)
        owner = self._priority == PRIORITY_OWNER
        return self._dispatch(Event.START_AS_OWNER if owner else Event.START, now)

    def shutdown(self, now: float) -> list[Action]:
        return self._dispatch(Event.SHUTDOWN, now)

    def fault(self, now: float) -> list[Action]:
        """A tracked interface or check failed: leave master (priority 0 advert), stay quiet."""
        self._faulted = True
        return self._dispatch(Event.FAULT, now)

    def recover(self, now: float) -> list[Action]:
        if not self._faulted:
            return []
        self._faulted = False
        owner = self._priority == PRIORITY_OWNER
        return self._dispatch(Event.RECOVER_AS_OWNER if owner else Event.RECOVER, now)

    def set_priority(self, priority: int, now: float) -> list[Action]:
        """Tracking changed the priority (1..255); a master advertises the new one at once."""
        if not 1 <= priority <= PRIORITY_OWNER:
            raise ValueError(f"priority {priority} not in 1..255")
        if priority == self._priority:
            return []
        self._priority = priority
        return self._dispatch(Event.PRIORITY_CHANGED, now)

    def receive(self, advert: Advertisement, src: IPAddress, now: float) -> list[Action]:
        """A validated advert from ``src`` (the IP source: the sender's primary address)."""
        event = self._classify(advert, src, now)
        if event is None:
            return []
        return self._dispatch(event, now, (advert, src))

    def handle_timer(self, now: float) -> list[Action]:
        """Run every timer due at ``now``; early or repeated calls do nothing."""
        actions: list[Action] = []
        while (event := self._fired(now)) is not None:
            actions += self._dispatch(event, now)
        return actions

    def preview_timer(self, now: float) -> list[Action]:
        """What ``handle_timer(now)`` would return, this machine left unchanged (the adapter
        prepares a takeover's advert before its deadline)."""
        scratch = copy.copy(self)
        scratch._garp_due = list(self._garp_due)  # the only mutable field
        return scratch.handle_timer(now)

    # -- classification and the one place rules are performed -------------------------------

    def _classify(self, advert: Advertisement, src: IPAddress, now: float) -> Event | None:
        if advert.vrid != self.config.vrid or src == self.config.primary_address:
            return None  # not ours, or our own advert looped back
        if advert.priority == PRIORITY_RELEASE:
            return Event.ADVERT_RELEASE
        ours = (self._priority, int(self.config.primary_address))
        if (advert.priority, int(src)) > ours:
            return Event.ADVERT_HIGHER
        if advert.priority == self._priority:
            return Event.ADVERT_EQUAL_LOWER_ADDRESS
        if not self.config.preempt:
            return Event.ADVERT_LOWER_NO_PREEMPT
        if self.config.preempt_delay and (self._preempt_at is None or now < self._preempt_at):
            return Event.ADVERT_LOWER_DELAYED
        return Event.ADVERT_LOWER

    def _fired(self, now: float) -> Event | None:
        """The next timer due at ``now``, disarmed; the rule re-arms it if it wants."""
        if self._master_down_at is not None and self._master_down_at <= now:
            self._master_down_at = None
            return Event.MASTER_DOWN_TIMER
        if self._adver_at is not None and self._adver_at <= now:
            self._adver_at = None
            return Event.ADVER_TIMER
        if (self._garp_due and self._garp_due[0] <= now) or (
            self._garp_refresh_at is not None and self._garp_refresh_at <= now
        ):
            return Event.GARP_TIMER  # SEND_DUE_GARP consumes what is due
        return None

    def _dispatch(
        self, event: Event, now: float, received: _Received | None = None
    ) -> list[Action]:
        rule = TRANSITIONS.get((self._state, event))
        if rule is None:
            return []
        actions: list[Action] = []
        if rule.target is not None and rule.target is not self._state:
            actions.append(StateChanged(self._state, rule.target, event))
            self._state = rule.target
        for effect in rule.effects:
            self._perform(effect, now, received, actions)
        return actions

    def _perform(
        self, effect: Effect, now: float, received: _Received | None, out: list[Action]
    ) -> None:
        config = self.config
        match effect:
            case Effect.CANCEL_TIMERS:
                self._master_down_at = self._adver_at = None
                self._garp_due, self._garp_refresh_at = [], None
                self._preempt_at = None
            case Effect.RESET_MASTER_INTERVAL:
                self._master_adver_interval = config.advert_interval
                self._master = None
            case Effect.FOLLOW_MASTER:
                assert received is not None, "FOLLOW_MASTER on an event without an advert"
                advert, src = received
                self._master_adver_interval = advert.interval
                self._master = (src, advert.priority)
            case Effect.ARM_MASTER_DOWN:
                self._master_down_at = now + self.master_down_interval
            case Effect.ARM_SKEW:
                self._master_down_at = now + self.skew_time
            case Effect.ARM_ADVER:
                self._adver_at = now + config.advert_interval
            case Effect.SEND_ADVERT:
                out.append(SendAdvert(self._priority))
            case Effect.SEND_RELEASE:
                out.append(SendAdvert(PRIORITY_RELEASE))
            case Effect.ADD_ADDRESSES:
                out.append(AddAddresses(config.virtual_addresses))
            case Effect.REMOVE_ADDRESSES:
                out.append(RemoveAddresses(config.virtual_addresses))
            case Effect.START_GARP:
                self._schedule_garp(now)
                self._send_garp(self._take_due_garp(now), out)
            case Effect.SEND_DUE_GARP:
                self._send_garp(self._take_due_garp(now), out)
            case Effect.SEND_LOWER_PRIORITY_GARP:
                self._send_garp(config.gratuitous.lower_priority_rounds, out)
            case Effect.START_PREEMPT_DELAY:
                if self._preempt_at is None:
                    self._preempt_at = now + config.preempt_delay
            case Effect.STOP_PREEMPT_DELAY:
                self._preempt_at = None
            case _:
                assert_never(effect)

    # -- gratuitous ARP / NA schedule --------------------------------------------------------

    def _schedule_garp(self, now: float) -> None:
        g = self.config.gratuitous
        due = [now + i * g.spacing for i in range(g.count)]
        if g.repeat_after is not None:
            due += [now + g.repeat_after + i * g.spacing for i in range(g.count)]
        self._garp_due = sorted(due)
        self._garp_refresh_at = None if g.refresh is None else now + g.refresh

    def _take_due_garp(self, now: float) -> int:
        rounds = 0
        while self._garp_due and self._garp_due[0] <= now:
            self._garp_due.pop(0)
            rounds += 1
        refresh = self.config.gratuitous.refresh
        at = self._garp_refresh_at
        if refresh is not None and at is not None and at <= now:
            rounds += 1
            self._garp_refresh_at = now + refresh
        return rounds

    def _send_garp(self, rounds: int, out: list[Action]) -> None:
        if self.config.virtual_addresses:
            out.extend(SendGratuitous(self.config.virtual_addresses) for _ in range(rounds))
