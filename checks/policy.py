"""Rise/fall hysteresis of one check, with Piranha's re-entry delay. Pure: time comes in as ``now``.

A *round* is good or bad (the scheduler folds a round's attempts into one verdict). The policy
counts consecutive good and bad rounds and flips the state only as :data:`TRANSITIONS` says:

- up, bad round: down once ``fall`` bad rounds in a row were seen;
- down, good round: up once ``rise`` good rounds in a row were seen and, if the server went down
  while running and ``reentry`` is set, the run of good rounds has lasted ``reentry`` seconds.

A round the director could not run (a local failure: out of file descriptors, ports, memory;
see :mod:`checks.local`) is no round: the scheduler never hands it here.

A server that starts down (``initial = "down"``) needs only ``rise``. Re-entry is judged at good
rounds, so a server comes back at the first good round at or after the re-entry time.
:func:`state_diagram` renders the table for the docs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from checks.model import (
    CheckId,
    CheckParams,
    CheckState,
    HealthChanged,
    Outcome,
    ProbeOutcome,
    ProbeResult,
)


class Phase(enum.Enum):
    """Where a check stands, for status output: the state plus how far along a change it is."""

    UP = "up"
    FALLING = "falling"  # up, some bad rounds, fewer than fall
    DOWN = "down"
    RISING = "rising"  # down, some good rounds, fewer than rise
    REENTRY = "reentry"  # down, rise reached, waiting out the re-entry time


Guard = Callable[["Policy", float], bool]


@dataclass(frozen=True)
class Transition:
    """From state ``up``, a round that was ``good``, goes to ``to`` when ``guard`` holds."""

    up: bool
    good: bool
    to: bool
    guard: Guard
    when: str  # the guard, for people and the diagram
    reason: str  # str.format template over Policy.facts()


def _fell(p: Policy, now: float) -> bool:
    return p.bad_streak >= p.params.fall


def _rose(p: Policy, now: float) -> bool:
    return p.good_streak >= p.params.rise and p.reentry_left(now) <= 0


TRANSITIONS: tuple[Transition, ...] = (
    Transition(
        up=True,
        good=False,
        to=False,
        guard=_fell,
        when="bad_streak >= fall",
        reason="{bad_streak} failed round(s) in a row (fall {fall}): {error}",
    ),
    Transition(
        up=False,
        good=True,
        to=True,
        guard=_rose,
        when="good_streak >= rise and good for reentry seconds (after a fall)",
        reason="{good_streak} good round(s) in a row (rise {rise}){reentry}",
    ),
)
_TABLE: dict[tuple[bool, bool], Transition] = {(t.up, t.good): t for t in TRANSITIONS}


def state_diagram() -> str:
    """The transition table as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", "    [*] --> up: initial = up", "    [*] --> down: initial = down"]
    for t in TRANSITIONS:
        verdict = "good" if t.good else "bad"
        lines.append(f"    {_name(t.up)} --> {_name(t.to)}: {verdict} round and {t.when}")
    return "\n".join(lines) + "\n"


def _name(up: bool) -> str:
    return "up" if up else "down"


class Policy:
    """The health state of one check and the rules that change it."""

    __slots__ = (
        "_good_at",
        "_good_attempt",
        "_good_latency",
        "_last",
        "bad_streak",
        "check_id",
        "good_since",
        "good_streak",
        "last_change",
        "params",
        "reentry_armed",
        "transitions",
        "up",
        "weight",
    )

    def __init__(self, check_id: CheckId, params: CheckParams, state: CheckState | None = None):
        self.check_id = check_id
        self.params = params
        if state is None:
            state = CheckState(up=params.initial == "up")
        self.up = state.up
        self.good_streak = state.good_streak
        self.bad_streak = state.bad_streak
        # The last attempt's result as a plain tuple (:data:`checks.model.Outcome`: the
        # collector untracks it; a ProbeOutcome is made only when ``last`` is asked for).
        self._last: Outcome | None = None if state.last is None else state.last.astuple()
        # The last attempt's result when good_while_up recorded it: made into ``outcome`` when
        # asked (None: ``_last`` is it), so the hot path allocates no object per probe.
        self._good_at: float | None = None
        self._good_latency = 0.0
        self._good_attempt = 1
        self.last_change = state.last_change
        self.transitions = state.transitions
        self.weight = state.weight
        self.good_since = state.good_since
        self.reentry_armed = state.reentry_armed

    def record_probe(self, result: ProbeResult, now: float, attempt: int = 1) -> None:
        """Remember one attempt's result (status only; rounds decide the state). A local
        failure (``result.local``: the director could not probe) is not about the server and
        changes nothing here."""
        if result.local is not None:
            return
        self._good_at = None
        self._last = (result.ok, result.latency, result.error, result.weight, now, attempt)
        if result.ok and result.weight is not None:
            self.weight = result.weight

    @property
    def last(self) -> ProbeOutcome | None:
        """The last attempt's result (a local failure is none)."""
        outcome = self.outcome
        return None if outcome is None else ProbeOutcome(*outcome)

    @property
    def outcome(self) -> Outcome | None:
        """:attr:`last` as a plain tuple (what summary rows carry)."""
        at = self._good_at
        if at is not None:  # recorded by good_while_up: made now, once
            self._good_at = None
            self._last = (True, self._good_latency, None, None, at, self._good_attempt)
        return self._last

    def good_while_up(self, latency: float, now: float, attempt: int = 1) -> None:
        """``record_probe`` of a good result without a weight or an error, then
        ``record_round(True)``, for a check that is up (the hot path: thousands a second).
        Such a round changes no verdict (:data:`TRANSITIONS` has no rule for up and good), so
        no rule is looked up and no event is made; the outcome is kept as three numbers, made
        into :attr:`last` when that is read. Same state as the two calls
        (``tests/checks_core/test_fast_verdicts.py`` proves it)."""
        if not self.up:
            raise ValueError("good_while_up on a check that is down")
        self._good_at, self._good_latency, self._good_attempt = now, latency, attempt
        if self.good_streak == 0:
            self.good_since = now
        self.good_streak += 1
        self.bad_streak = 0

    def record_round(self, good: bool, now: float) -> HealthChanged | None:
        """Count one round; return the change if this round flips the state."""
        if good:
            if self.good_streak == 0:
                self.good_since = now
            self.good_streak += 1
            self.bad_streak = 0
        else:
            self.bad_streak += 1
            self.good_streak = 0
            self.good_since = None
        rule = _TABLE.get((self.up, good))
        if rule is None or not rule.guard(self, now):
            return None
        reason = rule.reason.format(**self.facts(now))
        self.up = rule.to
        self.reentry_armed = not rule.to and self.params.reentry > 0
        self.last_change = now
        self.transitions += 1
        return HealthChanged(self.check_id, self.up, now, reason)

    def reentry_left(self, now: float) -> float:
        """Seconds the current good run must still last before re-entry allows coming up."""
        if not self.reentry_armed:
            return 0.0
        if self.good_since is None:
            return self.params.reentry
        return self.params.reentry - (now - self.good_since)

    def facts(self, now: float) -> dict[str, object]:
        """What reason templates may mention."""
        last = self.outcome
        error = last[2] if last is not None and last[2] else "no detail"
        reentry = ""
        if self.reentry_armed and self.good_since is not None:
            reentry = f", good for {now - self.good_since:g}s (reentry {self.params.reentry:g}s)"
        return {
            "good_streak": self.good_streak,
            "bad_streak": self.bad_streak,
            "rise": self.params.rise,
            "fall": self.params.fall,
            "error": error,
            "reentry": reentry,
        }

    @property
    def phase(self) -> Phase:
        if self.up:
            return Phase.FALLING if self.bad_streak else Phase.UP
        if not self.good_streak:
            return Phase.DOWN
        return Phase.RISING if self.good_streak < self.params.rise else Phase.REENTRY

    @property
    def state(self) -> CheckState:
        return CheckState(
            up=self.up,
            good_streak=self.good_streak,
            bad_streak=self.bad_streak,
            last=self.last,
            last_change=self.last_change,
            transitions=self.transitions,
            weight=self.weight,
            good_since=self.good_since,
            reentry_armed=self.reentry_armed,
        )
