"""Feedback weights: HAProxy's agent-check protocol, as a parser and a policy. Pure (sans-I/O).

A real server runs an agent on a TCP port; the director connects, optionally sends a string,
reads one line and closes. The line is a list of words separated by spaces, tabs or commas, in
any order, case-insensitive, ended by ``\\r`` or ``\\n`` (HAProxy's ``tcpcheck_agent_expect_reply``,
its configuration manual, section 5.2 ``agent-check``):

- ``75%``: a weight, as a percentage of the configured weight (digits then ``%``, nothing
  after it). HAProxy caps the percentage at 25600 (an overflow guard) and the resulting weight
  at 256, its own maximum; here the percentage is capped at 25600 too, then clamped by the
  server's ``min_percent``/``max_percent`` (default 0 to 100), and the weight at 65535 (the
  config's maximum). The weight is ``configured * percent // 100`` as in HAProxy, with one
  deviation: a percentage above 0 of a weight above 0 gives at least 1, because weight 0 is a
  drain in IPVS (HAProxy's default weight is 1 as well, so there "50%" drains the server).
- ``ready``, ``drain``, ``maint``: the administrative state. ``drain`` is weight 0 with the
  established connections kept (the project's quiesce); ``maint`` takes the server out of the
  table; ``ready`` clears both.
- ``up``, ``down``, ``stopped``, ``fail``: the operational state. ``down``/``stopped``/``fail``
  take the server out as a failed health check would (removed, or quiesced with
  ``on_failure = "quiesce"``); ``up`` clears that. ``up`` never overrides the health check: the
  check alone says up or down unless the agent says down.
- ``maxconn:N``: becomes the destination's IPVS upper threshold (``u_threshold``; IPVS counts
  active plus inactive connections against it), and its lower threshold is lowered to at most
  N. ``maxconn:0`` is no limit, as in both HAProxy and IPVS.
- ``#`` at the start of a word: the rest is a description (kept for the status, no effect).

When a word of one kind comes more than once, the last one wins. Words not understood (``75.5%``,
``-5%``, ``maxconn:x``, ``hello``) are ignored and counted; the others of the line still apply,
as HAProxy does. What the agent does not say stays as it was ("parameters not sent by the agent
remain unchanged"): a server drained by the agent stays drained until it says ``ready``.

The policy (:class:`AgentPolicy`) applies a percentage only when it moves the weight by at least
``threshold`` points of the configured weight (a percentage at a clamp bound or 100 % always
applies, so a server comes back whole), and at most once every ``rate_limit`` seconds (a change
within the window waits, and the latest value asked for is applied by :meth:`AgentPolicy.tick`
once the window has passed). State words (drain, maint, down, ready, up) and ``maxconn`` apply
at once. A failed poll (timeout, refused, a garbled line) changes nothing: the last value stays
and the status says since when the agent has been silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

MAX_LINE = 512  # bytes, terminator included; a longer line is garbage
MAX_PERCENT = 25600  # HAProxy's cap on a percentage
MAX_WEIGHT = 65535  # the config's largest weight
MAX_CONN = 2**31 - 1  # the kernel's u_threshold is a signed 32-bit value in the config

Admin = Literal["ready", "drain", "maint"]
_HEALTH = {"up": False, "down": True, "stopped": True, "fail": True}  # word -> agent says down
_ADMIN: dict[str, Admin] = {"ready": "ready", "drain": "drain", "maint": "maint"}
_PERCENT = re.compile(r"([0-9]+)%")
_MAXCONN = re.compile(r"maxconn:([0-9]+)", re.IGNORECASE)
_SEPARATORS = " \t,"


@dataclass(frozen=True, slots=True)
class AgentReply:
    """One line from an agent, understood. None: the agent did not say."""

    percent: int | None = None
    admin: Admin | None = None
    down: bool | None = None  # True: down/stopped/fail, False: up
    maxconn: int | None = None
    description: str = ""
    unknown: tuple[str, ...] = ()  # words not understood (ignored, counted as garbage)


def parse(line: bytes) -> AgentReply:
    """The words of ``line`` (without its terminator). Never raises: garbage is ``unknown``."""
    text = line.decode("latin-1")
    words: list[str] = []
    description = ""
    i, n = 0, len(text)
    while i < n:
        if text[i] in _SEPARATORS:
            i += 1
            continue
        if text[i] == "#":
            description = text[i + 1 :].lstrip(" \t")
            break
        j = i + 1
        while j < n and text[j] not in _SEPARATORS:
            j += 1
        words.append(text[i:j])
        i = j
    percent: int | None = None
    admin: Admin | None = None
    down: bool | None = None
    maxconn: int | None = None
    unknown: list[str] = []
    for word in words:
        lower = word.lower()
        if lower in _HEALTH:
            down = _HEALTH[lower]
        elif lower in _ADMIN:
            admin = _ADMIN[lower]
        elif (m := _PERCENT.fullmatch(word)) is not None:
            percent = min(int(m.group(1)), MAX_PERCENT)
        elif (m := _MAXCONN.fullmatch(word)) is not None:
            maxconn = min(int(m.group(1)), MAX_CONN)
        else:
            unknown.append(word)
    return AgentReply(percent, admin, down, maxconn, description, tuple(unknown))


@dataclass(frozen=True, slots=True)
class AgentTuning:
    """How an agent's percentages are applied (see the module's docstring)."""

    min_percent: int = 0
    max_percent: int = 100
    threshold: float = 0.0  # percentage points of the configured weight
    rate_limit: float = 0.0  # seconds between two applied percentage changes
    maxconn: bool = True  # apply maxconn:N as the IPVS upper threshold

    def __post_init__(self) -> None:
        if not 0 <= self.min_percent <= self.max_percent <= MAX_PERCENT:
            raise ValueError(
                f"expected 0 <= min_percent <= max_percent <= {MAX_PERCENT}, found "
                f"{self.min_percent} and {self.max_percent}"
            )
        if self.threshold < 0 or self.rate_limit < 0:
            raise ValueError("threshold and rate_limit must be >= 0")

    def clamp(self, percent: int) -> int:
        return min(max(percent, self.min_percent), self.max_percent)


@dataclass(frozen=True, slots=True)
class AgentEffect:
    """What the agent's words amount to now, for the desired state."""

    percent: int = 100
    admin: Admin = "ready"
    down: bool = False
    maxconn: int | None = None

    def weight(self, configured: int) -> int:
        """The weight to program, before drain/maint/down (which the compiler applies)."""
        weight = configured * self.percent // 100
        if weight == 0 and self.percent > 0 and configured > 0:
            weight = 1  # a share of a small weight is not a drain (see the module docstring)
        return min(weight, MAX_WEIGHT)

    @property
    def state(self) -> str:
        """One word for status and metrics: maint, down, drain or ready."""
        if self.admin == "maint":
            return "maint"
        if self.down:
            return "down"
        return self.admin


NEUTRAL = AgentEffect()
STATES = ("none", "ready", "drain", "maint", "down")  # "none": no reply yet


@dataclass
class AgentPolicy:
    """One agent's state: the effect in force and what the status needs to explain it."""

    tuning: AgentTuning = field(default_factory=AgentTuning)
    effect: AgentEffect = NEUTRAL
    pending: int | None = None  # a clamped percentage waiting for the rate limit
    changed_at: float | None = None  # when a percentage was last applied
    asked: int | None = None  # the last percentage the agent sent (before clamp)
    held: str | None = None  # why the last percentage asked for is not in force
    replies: int = 0
    last_line: str | None = None
    last_reply_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failing_since: float | None = None  # first failure since the last good reply
    errors: dict[str, int] = field(default_factory=dict)  # reason -> count

    def received(self, reply: AgentReply, line: str, now: float) -> bool:
        """A line arrived; True when the effect changed. Unknown words count as "garbage"."""
        self.replies += 1
        self.last_line = line
        self.last_reply_at = now
        self.failing_since = None
        if reply.unknown:
            self._count("garbage", f"words not understood: {' '.join(reply.unknown)}", now)
        old = self.effect
        admin = reply.admin if reply.admin is not None else old.admin
        down = reply.down if reply.down is not None else old.down
        maxconn = old.maxconn
        if reply.maxconn is not None and self.tuning.maxconn:
            maxconn = reply.maxconn
        percent = old.percent
        if reply.percent is not None:
            self.asked = reply.percent
            percent = self._gate(self.tuning.clamp(reply.percent), now)
        self.effect = AgentEffect(percent, admin, down, maxconn)
        return self.effect != old

    def failed(self, reason: str, error: str, now: float) -> None:
        """A poll failed (timeout, refused, closed, too_long, local ...): nothing changes."""
        if self.failing_since is None:
            self.failing_since = now
        self._count(reason, error, now)

    def tick(self, now: float) -> bool:
        """Apply a percentage that waited for the rate limit, once the window has passed."""
        pending = self.pending
        if pending is None or not self._window_passed(now):
            return False
        self.pending = self.held = None
        self.changed_at = now
        old = self.effect
        self.effect = AgentEffect(pending, old.admin, old.down, old.maxconn)
        return self.effect != old

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to apply (None: nothing waits)."""
        if self.pending is None or self.changed_at is None:
            return None
        return self.changed_at + self.tuning.rate_limit

    def retune(self, tuning: AgentTuning) -> None:
        """New tuning (a reload): the effect stays; a waiting percentage is forgotten."""
        self.tuning = tuning
        self.pending = self.held = None

    def _gate(self, target: int, now: float) -> int:
        current = self.effect.percent
        if target == current:
            self.pending = self.held = None
            return current
        tuning = self.tuning
        bound = target in (tuning.min_percent, tuning.max_percent, 100)
        if tuning.threshold and abs(target - current) < tuning.threshold and not bound:
            self.pending = None
            self.held = f"{target}% is within {tuning.threshold:g} points of {current}%"
            return current
        if not self._window_passed(now):
            self.pending = target
            assert self.changed_at is not None
            self.held = (
                f"{target}% waits for the rate limit (one change every {tuning.rate_limit:g} s)"
            )
            return current
        self.pending = self.held = None
        self.changed_at = now
        return target

    def _window_passed(self, now: float) -> bool:
        rate = self.tuning.rate_limit
        return not rate or self.changed_at is None or now - self.changed_at >= rate

    def _count(self, reason: str, error: str, now: float) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.last_error = error
        self.last_error_at = now
