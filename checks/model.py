"""Types shared by the health-check probes, policy, scheduler and runner.

Nothing here knows what a probe's own settings look like: the scheduler carries them as an opaque
``spec`` (any value with ``==``, typically a frozen dataclass from the config) and hands it to the
probe callable. What the scheduler itself needs (interval, rise, fall ...) is :class:`CheckParams`.

A probe returns a :class:`ProbeResult`; the policy turns rounds of results into
:class:`HealthChanged` events; the scheduler asks the runner to :class:`StartProbe`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

CheckId: TypeAlias = Hashable
"""What identifies a check: any hashable. With ``(ServiceKey, DestKey)`` ids,
``Scheduler.health()`` is keyed like the ``Health`` map of :mod:`director.desired`."""

S = TypeVar("S")
C = TypeVar("C", bound=type)


def per_probe(cls: C) -> C:
    """For a frozen slots dataclass made once or more per probe: an ``__init__`` that stores
    each field through its slot descriptor instead of ``object.__setattr__`` (about half the
    cost, which counts on the daemon's loop at thousands of probes a second). Same signature,
    defaults, immutability, equality and hash."""
    fields = dataclasses.fields(cls)
    namespace: dict[str, Any] = {}
    params, body = [], []
    for f in fields:
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    exec(f"def __init__(self, {', '.join(params)}):\n{''.join(body)}", namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010 (mypy: a class's __init__ is read-only)
    return cls


@per_probe
@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe attempt found. ``weight`` is a weight the real server asked for, if any.

    ``local`` is set (to an errno name such as ``"EMFILE"``) when the probe could not run for a
    reason of this director's own (:mod:`checks.local`): then ``ok`` is False but the result
    says nothing about the server, and the scheduler counts it neither way."""

    ok: bool
    latency: float
    error: str | None
    weight: int | None = None
    local: str | None = None


@dataclass(frozen=True, slots=True)
class CheckParams:
    """How a check is scheduled and judged (keepalived / Piranha semantics).

    - ``interval``: seconds between the starts of two rounds.
    - ``timeout``: seconds one probe attempt may take; no result by then is a failed attempt.
    - ``rise`` / ``fall``: consecutive good / bad rounds that bring a server up / down.
    - ``attempts``: a round is good if any of this many attempts succeeds; a failed attempt is
      retried ``retry_delay`` seconds after it failed.
    - ``reentry``: after a server went down, it must also stay good this many seconds (measured
      from the first good round) before it comes back (Piranha). 0 turns it off.
    - ``initial``: the state before the first round: ``"up"`` (a restart keeps the table) or
      ``"down"`` (until ``rise`` good rounds prove it).
    """

    interval: float = 5.0
    timeout: float = 3.0
    rise: int = 1
    fall: int = 1
    attempts: int = 1
    retry_delay: float = 1.0
    reentry: float = 0.0
    initial: Literal["up", "down"] = "up"

    def __post_init__(self) -> None:
        problems = []
        if not self.interval > 0:
            problems.append(f"interval must be > 0, got {self.interval}")
        if not self.timeout > 0:
            problems.append(f"timeout must be > 0, got {self.timeout}")
        for name in ("rise", "fall", "attempts"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.retry_delay < 0:
            problems.append(f"retry_delay must be >= 0, got {self.retry_delay}")
        if self.reentry < 0:
            problems.append(f"reentry must be >= 0, got {self.reentry}")
        if self.initial not in ("up", "down"):
            problems.append(f'initial must be "up" or "down", got {self.initial!r}')
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Check(Generic[S]):
    """One real server to probe. Two checks are "the same" on a reload when they compare equal:
    same id, same ``spec`` and same ``params``; only then is the health state carried over."""

    id: CheckId
    spec: S
    params: CheckParams = CheckParams()


Outcome: TypeAlias = tuple[bool, float, str | None, int | None, float, int]
"""A :class:`ProbeOutcome`'s fields (ok, latency, error, weight, at, attempt) as a plain tuple:
what the policy keeps and the summary rows carry. An exact tuple of atomics is untracked by the
cyclic collector at the first collection it survives; a dataclass instance stays tracked. At
100,000 checks the policies' last outcomes were ~90,000 of the ~300,000 objects each full
collection walked (issue 18)."""


@per_probe
@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """The last probe result of a check, with when it arrived and which attempt it was."""

    ok: bool
    latency: float
    error: str | None
    weight: int | None
    at: float
    attempt: int

    def astuple(self) -> Outcome:
        return (self.ok, self.latency, self.error, self.weight, self.at, self.attempt)


@dataclass(frozen=True, slots=True)
class CheckState:
    """The health state of one check, as the policy keeps it (and a reload carries it).

    ``good_since`` is when the current run of good rounds began (for ``reentry``);
    ``reentry_armed`` is true from going down until coming back up.
    """

    up: bool
    good_streak: int = 0
    bad_streak: int = 0
    last: ProbeOutcome | None = None
    last_change: float | None = None
    transitions: int = 0
    weight: int | None = None
    good_since: float | None = None
    reentry_armed: bool = False


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """A check's server went up or down (or starts down). ``reason`` is for people."""

    check_id: CheckId
    up: bool
    at: float
    reason: str


@per_probe
@dataclass(frozen=True, slots=True)
class StartProbe(Generic[S]):
    """Action: run the probe for ``spec`` now, give up after ``timeout`` seconds, and hand this
    object back to ``Scheduler.probe_done`` with the result."""

    probe_id: int
    check_id: CheckId
    spec: S
    attempt: int
    scheduled: float
    started: float
    timeout: float

    @property
    def lag(self) -> float:
        """How late the probe starts (waiting for a free slot under the concurrency cap)."""
        return self.started - self.scheduled
