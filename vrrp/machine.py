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
    RestoreAddresses,
    SendAdvert,
    SendGratuitous,
    StateChanged,
)
from vrrp.config import Config, master_down_interval, skew_time
from vrrp.packet import PRIORITY_OWNER, PRIORITY_RELEASE, Advertisement, IPAddress
from vrrp.table import TRANSITIONS, Effect, Event, State

_Received = tuple[Advertisement, IPAddress]
# what a master answers with an advert, at most once per advert_interval (table.py)
_LOWER = frozenset(
    {
        Event.ADVERT_EQUAL_LOWER_ADDRESS,
        Event.ADVERT_LOWER,
        Event.ADVERT_LOWER_NO_PREEMPT,
        Event.ADVERT_LOWER_DELAYED,
    }
)


class Machine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._state = State.INITIALIZE
        self._priority = config.priority
        self._faulted = False
        self._fault_reason = ""  # the last reason given to fault() / recover()
        self._master_adver_interval = config.advert_interval
        self._master: tuple[IPAddress, int] | None = None  # (address, priority) followed
        self._master_down_at: float | None = None
        self._adver_at: float | None = None
        self._garp_due: list[float] = []  # sorted times of the pending gratuitous rounds
        self._garp_refresh_at: float | None = None
        self._preempt_at: float | None = None  # preempt_delay running until then
        # the last advert heard as backup (source, priority, its event): what a timer that
        # makes us master ran out after (master silent, released, or preempted)
        self._heard: tuple[IPAddress, int, Event] | None = None
        self._lower_hold: float | None = None  # no answer to a lower advert until then
        self._release_hold: float | None = None  # nor to a priority 0 advert
        self.answers_suppressed = 0  # adverts a master did not answer (held)

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

    def fault(self, now: float, reason: str = "") -> list[Action]:
        """A tracked interface or check failed (``reason``, for the log): leave master
        (priority 0 advert), stay quiet."""
        self._faulted = True
        self._fault_reason = reason
        return self._dispatch(Event.FAULT, now)

    def recover(self, now: float, reason: str = "") -> list[Action]:
        """The fault ``reason`` cleared (the last one standing)."""
        if not self._faulted:
            return []
        self._faulted = False
        self._fault_reason = reason
        owner = self._priority == PRIORITY_OWNER
        return self._dispatch(Event.RECOVER_AS_OWNER if owner else Event.RECOVER, now)

    def address_lost(self, addresses: tuple[IPAddress, ...], now: float) -> list[Action]:
        """Someone deleted these addresses from their device: a master restores those of
        them that are its virtual addresses; in any other state nothing happens."""
        lost = tuple(a for a in addresses if a in self.config.held_addresses)
        if not lost:
            return []
        return self._dispatch(Event.ADDRESS_LOST, now, lost=lost)

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
        actions = self._dispatch(event, now, (advert, src))
        if self._state is State.BACKUP:
            self._heard = (src, advert.priority, event)
        return actions

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
            return self._held(Event.ADVERT_RELEASE, now)
        ours = (self._priority, int(self.config.primary_address))
        if (advert.priority, int(src)) > ours:
            if advert.priority > self._priority:
                return Event.ADVERT_HIGHER
            return Event.ADVERT_EQUAL_HIGHER_ADDRESS
        return self._held(self._classify_lower(advert, now), now)

    def _classify_lower(self, advert: Advertisement, now: float) -> Event:
        if advert.priority == self._priority:
            return Event.ADVERT_EQUAL_LOWER_ADDRESS
        if not self.config.preempt:
            return Event.ADVERT_LOWER_NO_PREEMPT
        if self.config.preempt_delay and (self._preempt_at is None or now < self._preempt_at):
            return Event.ADVERT_LOWER_DELAYED
        return Event.ADVERT_LOWER

    def _held(self, event: Event, now: float) -> Event:
        """A master's answer to ``event`` held back: one per advert_interval of each kind."""
        if self._state is not State.MASTER:
            return event
        if event is Event.ADVERT_RELEASE:
            hold = self._release_hold
            return event if hold is None or now >= hold else Event.ADVERT_RELEASE_HELD
        if event in _LOWER and self._lower_hold is not None and now < self._lower_hold:
            return Event.ADVERT_LOWER_HELD
        return event

    def _fired(self, now: float) -> Event | None:
        """The next timer due at ``now``, disarmed; the rule re-arms it if it wants."""
        if self._master_down_at is not None and self._master_down_at <= now:
            self._master_down_at = None
            heard = self._heard
            if heard is not None and heard[2] is Event.ADVERT_LOWER:
                return Event.PREEMPT
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
        self,
        event: Event,
        now: float,
        received: _Received | None = None,
        lost: tuple[IPAddress, ...] = (),
    ) -> list[Action]:
        rule = TRANSITIONS.get((self._state, event))
        if rule is None:
            return []
        actions: list[Action] = []
        if rule.target is not None and rule.target is not self._state:
            actions.append(self._changed(rule.target, event, received))
            self._state = rule.target
        for effect in rule.effects:
            self._perform(effect, now, received, lost, actions)
        return actions

    def _changed(self, target: State, event: Event, received: _Received | None) -> StateChanged:
        """The state change with its cause: the advert that made it, or the last one heard
        before a timer did, or the fault reason."""
        source: IPAddress | None = None
        priority: int | None = None
        if received is not None:
            source, priority = received[1], received[0].priority
        elif event in (Event.MASTER_DOWN_TIMER, Event.PREEMPT) and self._heard is not None:
            source, priority, _ = self._heard
        faulty = event in (Event.FAULT, Event.START_IN_FAULT, Event.RECOVER)
        reason = self._fault_reason if faulty or event is Event.RECOVER_AS_OWNER else None
        return StateChanged(self._state, target, event, source, priority, reason)

    def _perform(
        self,
        effect: Effect,
        now: float,
        received: _Received | None,
        lost: tuple[IPAddress, ...],
        out: list[Action],
    ) -> None:
        config = self.config
        match effect:
            case Effect.CANCEL_TIMERS:
                self._master_down_at = self._adver_at = None
                self._garp_due, self._garp_refresh_at = [], None
                self._preempt_at = None
                self._lower_hold = self._release_hold = None
            case Effect.RESET_MASTER_INTERVAL:
                self._master_adver_interval = config.advert_interval
                self._master = None
                self._heard = None
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
                out.append(AddAddresses(config.held_addresses))
            case Effect.REMOVE_ADDRESSES:
                out.append(RemoveAddresses(config.held_addresses))
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
            case Effect.HOLD_LOWER_ANSWERS:
                self._lower_hold = now + config.advert_interval
            case Effect.HOLD_RELEASE_ANSWERS:
                self._release_hold = now + config.advert_interval
            case Effect.COUNT_HELD_ANSWER:
                self.answers_suppressed += 1
            case Effect.RESTORE_ADDRESSES:
                out.append(RestoreAddresses(lost))
                out.append(SendGratuitous(lost))
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
        if self.config.held_addresses:
            out.extend(SendGratuitous(self.config.held_addresses) for _ in range(rounds))
