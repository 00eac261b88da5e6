"""The asyncio adapter of the feedback agents: polls on the loop, lines to :mod:`checks.agent`.

A poll connects to the agent, sends the configured string (if any), reads one line of at most
:data:`checks.agent.MAX_LINE` bytes and closes (with a reset, as the probes do). It runs as a
fast probe (:mod:`checks.probes.poller`: a state machine on a bare non-blocking socket, no
task or coroutine) on a :class:`~checks.probes.poller.Poller` of its own, so an agent that
accepts and never answers only holds its own socket until its timeout: the health checks' runner,
poller, timers and slots are separate, and nothing here ever waits.

Scheduling: one ``loop.call_at`` timer at the earliest due poll (a heap of ``(when, seq,
agent)``); agent *i* polls at ``offset_i + k * interval`` (offset drawn from the injected
``random.Random``), never twice at once, at most ``max_in_flight`` polls at a time (the others
wait in FIFO order for a slot). After each poll, and at the policy's own deadline (a percentage
that waits for the rate limit), the policy is fed and ``on_change(ids)`` is called with the
agents whose effect changed.

Failure reasons (counted per agent, exported by the daemon): ``timeout``, ``refused``,
``connect`` (another connect error), ``closed`` (the agent closed before a full line),
``too_long`` (no line end in 512 bytes), ``garbage`` (words not understood), ``local`` (this
director could not poll: out of file descriptors, ports ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import random
import socket
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from checks.agent import MAX_LINE, AgentEffect, AgentPolicy, AgentTuning, parse
from checks.model import ProbeResult
from checks.probes.poller import CONNECTING, READING, SENDING, FastProbe, Poller
from checks.probes.result import Target, preview

log = structlog.get_logger("director.checks")
AgentId = Hashable
OnChange = Callable[[list[AgentId]], None]
ENDS = (b"\n", b"\r")


@dataclass(frozen=True)
class AgentSpec:
    """One agent: where, how often, what to send, how to apply what it says. Comparable: a
    reload keeps the state of an agent whose address and port did not change."""

    target: Target
    interval: float = 2.0
    timeout: float = 1.0
    send: bytes = b""
    tuning: AgentTuning = dataclasses.field(default_factory=AgentTuning)


@dataclass(frozen=True, slots=True, eq=False)
class AgentPlan:
    """A poll, prepared once per agent (see :class:`checks.probes.poller.Plan`)."""

    target: Target
    timeout: float
    family: int
    sockaddr: tuple[str, int]
    first: bytes

    @classmethod
    def of(cls, spec: AgentSpec) -> AgentPlan:
        t = spec.target
        family = socket.AF_INET6 if t.address.version == 6 else socket.AF_INET
        return cls(t, spec.timeout, family, (str(t.address), t.port), spec.send)

    @property
    def probe_type(self) -> type[_AgentPoll]:
        return _AgentPoll


class _AgentPoll(FastProbe):
    """Connect, send, read up to the first line end; the line goes to ``tag.line``."""

    __slots__ = ()

    def sent(self, now: float) -> None:
        self.state = READING

    def read(self, now: float) -> None:
        sock, received = self.sock, self.buffer
        while True:
            try:
                chunk = sock.recv(MAX_LINE - len(received))
            except BlockingIOError:
                self.buffer = received
                return
            if not chunk:
                self.fail(
                    f"closed: {self.target} closed the connection without a complete line "
                    f"(received {preview(received)})",
                    now,
                )
                return
            received += chunk
            self.buffer = received
            end = min((i for i in map(received.find, ENDS) if i >= 0), default=-1)
            if end >= 0:
                self.tag.line = received[:end]
                self.succeed(now)
                return
            if len(received) >= MAX_LINE:
                self.fail(
                    f"too_long: no line end in the first {MAX_LINE} bytes from {self.target} "
                    f"(received {preview(received)})",
                    now,
                )
                return

    def doing(self) -> str:
        if self.state == CONNECTING:
            return f"connecting to the agent at {self.target}"
        if self.state == SENDING:
            return f"sending to the agent at {self.target}"
        return f"waiting for a line from the agent at {self.target}"


def reason_of(result: ProbeResult) -> str:
    """The metric reason of a failed poll, from its error (worded by the poller or above)."""
    if result.local is not None:
        return "local"
    error = result.error or ""
    head = error.split(":", 1)[0]
    if head in ("closed", "too_long"):
        return head
    if error.startswith("timed out"):
        return "timeout"
    if "connection refused" in error:
        return "refused"
    return "connect"


class _Agent:
    __slots__ = ("id", "in_flight", "line", "next_at", "plan", "policy", "removed", "spec")

    def __init__(self, agent_id: AgentId, spec: AgentSpec, policy: AgentPolicy) -> None:
        self.id = agent_id
        self.spec = spec
        self.plan = AgentPlan.of(spec)
        self.policy = policy
        self.next_at = 0.0
        self.in_flight: FastProbe | None = None
        self.line: bytes | None = None
        self.removed = False


class AgentRunner:
    """Every agent of the daemon on the running loop. ``on_change`` gets the ids whose
    :class:`~checks.agent.AgentEffect` changed; ``on_poll(id, reason)`` each poll's outcome
    (reason None: a line was read)."""

    def __init__(
        self,
        on_change: OnChange,
        *,
        rng: random.Random | None = None,
        max_in_flight: int = 64,
        on_poll: Callable[[AgentId, str | None], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._on_change = on_change
        self._on_poll = on_poll
        self._rng = rng or random.Random()
        self.max_in_flight = max_in_flight
        self._agents: dict[AgentId, _Agent] = {}
        self._heap: list[tuple[float, int, _Agent]] = []  # polls not yet due
        self._ticks: list[tuple[float, int, _Agent]] = []  # percentages waiting (rate limit)
        self._waiting: deque[_Agent] = deque()
        self._seq = itertools.count()
        self._in_flight = 0
        self._starting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: Poller | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.polls = 0

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Begin on the running loop (call from a coroutine)."""
        self._loop = asyncio.get_running_loop()
        self._poller = Poller(self._loop)
        self._arm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._poller is not None:
            self._poller.close()  # every poll in flight closed, no verdict
            self._poller = None
        self._loop = None

    # -- the set of agents ---------------------------------------------------------------------

    def replace(
        self,
        specs: Mapping[AgentId, AgentSpec],
        restored: Mapping[AgentId, AgentEffect] | None = None,
    ) -> list[AgentId]:
        """Make ``specs`` the whole set (a reload). An agent whose target is unchanged keeps its
        state (new tuning or timing applies from now); a new one starts with its ``restored``
        effect if given (what it said before a restart), else with none. Returns the ids whose
        effect changed (removed ones included: their effect is gone)."""
        now = self._now()
        changed: list[AgentId] = []
        for agent_id in [a for a in self._agents if a not in specs]:
            agent = self._agents.pop(agent_id)
            agent.removed = True
            if agent.policy.effect != AgentEffect():
                changed.append(agent_id)
        for agent_id, spec in specs.items():
            old = self._agents.get(agent_id)
            if old is not None and old.spec == spec:
                continue
            if old is not None and old.spec.target == spec.target:
                policy = old.policy
                policy.retune(spec.tuning)
            else:
                policy = AgentPolicy(spec.tuning)
                if old is None and restored and agent_id in restored:
                    policy.effect = restored[agent_id]
                if old is not None and old.policy.effect != AgentEffect():
                    changed.append(agent_id)
            if old is not None:
                old.removed = True
            agent = self._agents[agent_id] = _Agent(agent_id, spec, policy)
            self._schedule(agent, now + self._rng.random() * spec.interval)
        self._arm()
        return changed

    def effects(self) -> dict[AgentId, AgentEffect]:
        """The effect of every agent that has said something that matters."""
        neutral = AgentEffect()
        return {i: a.policy.effect for i, a in self._agents.items() if a.policy.effect != neutral}

    def agents(self) -> Iterable[tuple[AgentId, AgentSpec, AgentPolicy]]:
        return ((i, a.spec, a.policy) for i, a in self._agents.items())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def now(self) -> float:
        return self._now()

    # -- internals -----------------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _schedule(self, agent: _Agent, when: float) -> None:
        agent.next_at = when
        heapq.heappush(self._heap, (when, next(self._seq), agent))

    def _arm(self) -> None:
        loop = self._loop
        if loop is None:
            return
        heap = self._heap
        while heap and heap[0][2].removed:
            heapq.heappop(heap)
        when = heap[0][0] if heap else None
        ticks = self._ticks
        while ticks and (ticks[0][2].removed or ticks[0][2].policy.next_deadline() is None):
            heapq.heappop(ticks)
        if ticks and (when is None or ticks[0][0] < when):
            when = ticks[0][0]
        timer = self._timer
        if timer is not None:
            if when is not None and self._timer_at == when:
                return
            timer.cancel()
            self._timer = None
        if when is not None:
            self._timer_at = when
            self._timer = loop.call_at(when, self._pump)

    def _pump(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        try:
            now = loop.time()
            changed = []
            ticks = self._ticks
            while ticks and ticks[0][0] <= now:
                agent = heapq.heappop(ticks)[2]
                if not agent.removed and agent.policy.tick(now):
                    changed.append(agent.id)
            heap = self._heap
            while heap and heap[0][0] <= now:
                agent = heapq.heappop(heap)[2]
                if not agent.removed:
                    self._waiting.append(agent)
            self._start_waiting()
            if changed:
                self._emit(changed)
        finally:
            self._arm()

    def _start_waiting(self) -> None:
        if self._starting:  # a poll that ended at once (refused) called back in here
            return
        self._starting = True
        try:
            waiting, poller = self._waiting, self._poller
            while waiting and self._in_flight < self.max_in_flight and poller is not None:
                agent = waiting.popleft()
                if agent.removed or agent.in_flight is not None:
                    continue
                self._in_flight += 1
                self.polls += 1
                agent.line = None
                probe = poller.start(agent.plan, self._done, agent)
                if not probe.finished:  # else _done has run already
                    agent.in_flight = probe
        finally:
            self._starting = False

    def _done(self, agent: _Agent, result: ProbeResult) -> None:
        self._in_flight -= 1
        agent.in_flight = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        if not agent.removed:
            self._schedule(agent, _next_slot(agent.next_at, agent.spec.interval, now))
            changed = self._feed(agent, result, now)
            if changed:
                self._emit([agent.id])
        self._start_waiting()
        self._arm()

    def _feed(self, agent: _Agent, result: ProbeResult, now: float) -> bool:
        policy = agent.policy
        line = agent.line
        silent = policy.failing_since is not None
        if result.ok and line is not None:
            text = line.decode("latin-1")
            reply = parse(line)
            changed = policy.received(reply, text, now)
            reason = "garbage" if reply.unknown else None
            deadline = policy.next_deadline()
            if deadline is not None:  # a percentage waits for the rate limit
                heapq.heappush(self._ticks, (deadline, next(self._seq), agent))
            if changed or silent:
                effect = policy.effect
                log.info(
                    "agent_said",
                    agent=str(agent.spec.target),
                    line=text,
                    state=effect.state,
                    percent=effect.percent,
                    maxconn=effect.maxconn,
                )
        else:
            reason = reason_of(result)
            policy.failed(reason, result.error or reason, now)
            changed = False
            if not silent:  # once per silence, not per poll
                log.warning(
                    "agent_silent",
                    agent=str(agent.spec.target),
                    reason=reason,
                    error=result.error,
                    keeping=f"{policy.effect.state} {policy.effect.percent}%",
                )
        if self._on_poll is not None:
            try:
                self._on_poll(agent.id, reason)
            except Exception:
                log.exception("agent poll observer failed")
        return changed

    def _emit(self, ids: list[AgentId]) -> None:
        try:
            self._on_change(ids)
        except Exception:
            log.exception("agent change handler failed", agents=len(ids))


def _next_slot(slot: float, interval: float, now: float) -> float:
    """The next start in phase after ``slot`` that is not in the past."""
    nxt = slot + interval
    if nxt < now:
        nxt += ((now - nxt) // interval + 1) * interval
    return nxt
