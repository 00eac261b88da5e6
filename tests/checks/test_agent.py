"""Feedback agents against real agents in a namespace: a tiny agent that answers what the test
says, polled by :class:`checks.agent_runner.AgentRunner` on the prober namespace's loop.

Also: a slow agent never delays a health verdict (the verdict times of real TCP checks,
measured with and without a crowd of agents that accept and never answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
import statistics
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from checks.agent import AgentEffect, AgentPolicy, AgentTuning
from checks.agent_runner import AgentRunner, AgentSpec
from checks.model import HealthChanged
from checks.probes.result import Target
from director.config import parse_config
from director.health import HealthChecks
from tests.checks.conftest import APP, Lab, _closing
from tests.helpers import servers

pytestmark = pytest.mark.netns
T = TypeVar("T")
AGENT_PORT = 3009
INTERVAL, TIMEOUT = 0.1, 0.3


@dataclass
class Agent:
    """The agent on APP:port. ``answer``: what it writes then closes; None: accept and say
    nothing (until the director gives up). ``replies``: answers by what was sent first."""

    answer: bytes | None = b"100%\n"
    replies: dict[bytes, bytes] = field(default_factory=dict)
    connections: int = 0
    received: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            answer = self.answer
            if self.replies:
                sent = await reader.readline()
                self.received.append(sent)
                answer = self.replies.get(sent, b"unknown request\n")
            if answer is None:
                await reader.read()  # until the director closes (reset)
                return
            writer.write(answer)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.fixture
def agent(lab: Lab) -> Iterator[Agent]:
    the_agent = Agent()
    server = the_agent.server = lab.servers.run(
        servers.start_tcp(APP, AGENT_PORT, the_agent.handle)
    )
    try:
        yield the_agent
    finally:
        lab.servers.run(_closing(server)())


class Polled:
    """An AgentRunner on the prober's loop, read from the test thread through that loop."""

    def __init__(self, lab: Lab, specs: dict[Hashable, AgentSpec], max_in_flight: int = 64) -> None:
        self.lab = lab
        self.changes: list[Hashable] = []

        async def start() -> AgentRunner:
            runner = AgentRunner(
                self.changes.extend, rng=random.Random(7), max_in_flight=max_in_flight
            )
            runner.start()
            runner.replace(specs)
            return runner

        self.runner = lab.prober.run(start())

    def read(self, what: Callable[[AgentRunner], T]) -> T:
        async def on_loop() -> T:
            return what(self.runner)

        return self.lab.prober.run(on_loop())

    def policy(self, agent_id: int = 1) -> AgentPolicy:
        return self.read(lambda r: next(p for i, _, p in r.agents() if i == agent_id))

    def effect(self) -> AgentEffect:
        return self.read(lambda r: r.effects().get(1, AgentEffect()))

    def until(self, what: str, check: Callable[[AgentRunner], bool], within: float = 5) -> float:
        start = time.monotonic()
        while time.monotonic() - start < within:
            if self.read(check):
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(f"timed out after {within} s waiting for {what}")

    def stop(self) -> None:
        self.lab.prober.run(self.runner.stop())


def _errors(runner: AgentRunner) -> dict[str, int]:
    return next(iter(runner.agents()))[2].errors


def _counted(reason: str) -> Callable[[AgentRunner], bool]:
    return lambda runner: _errors(runner).get(reason, 0) >= 1


def spec(send: bytes = b"", tuning: AgentTuning | None = None, port: int = AGENT_PORT) -> AgentSpec:
    return AgentSpec(
        Target(ipaddress.ip_address(APP), port), INTERVAL, TIMEOUT, send, tuning or AgentTuning()
    )


@pytest.fixture
def polled(lab: Lab, agent: Agent) -> Iterator[Polled]:
    p = Polled(lab, {1: spec()})
    yield p
    p.stop()


def test_percentages_scale_the_configured_weight(agent: Agent, polled: Polled) -> None:
    agent.answer = b"75%\n"
    polled.until("75 %", lambda r: r.effects().get(1) == AgentEffect(percent=75))
    assert polled.effect().weight(100) == 75
    agent.answer = b"up 40%, maxconn:25 # busy: 3 of 5 sessions\r\n"
    polled.until("40 %", lambda r: r.effects().get(1) == AgentEffect(40, maxconn=25))
    policy = polled.policy()
    assert policy.last_line == "up 40%, maxconn:25 # busy: 3 of 5 sessions"
    assert policy.errors == {}
    assert 1 in polled.changes


def test_drain_and_maint_are_sticky_until_ready(agent: Agent, polled: Polled) -> None:
    agent.answer = b"drain\n"
    polled.until("drain", lambda r: r.effects().get(1) == AgentEffect(admin="drain"))
    agent.answer = b"60%\n"  # not said again, still drained
    polled.until("60 % drained", lambda r: r.effects().get(1) == AgentEffect(60, "drain"))
    agent.answer = b"MAINT\n"
    polled.until("maint", lambda r: r.effects().get(1) == AgentEffect(60, "maint"))
    agent.answer = b"ready\n"
    polled.until("ready", lambda r: r.effects().get(1) == AgentEffect(60))
    agent.answer = b"down\n"
    polled.until("down", lambda r: r.effects().get(1) == AgentEffect(60, down=True))


def test_timeouts_and_refusals_keep_the_last_value(lab: Lab, agent: Agent, polled: Polled) -> None:
    agent.answer = b"60%\n"
    polled.until("60 %", lambda r: r.effects().get(1) == AgentEffect(60))
    agent.answer = None  # accepts, never answers
    polled.until("two timeouts", lambda r: _errors(r).get("timeout", 0) >= 2)
    policy = polled.policy()
    assert policy.effect == AgentEffect(60)
    assert policy.failing_since is not None
    assert policy.last_error is not None and policy.last_error.startswith("timed out after 0.3 s")
    # the agent goes away: connection refused, still the last value
    assert agent.server is not None
    lab.servers.run(_closing(agent.server)())
    polled.until("refusals", lambda r: _errors(r).get("refused", 0) >= 3)  # polls go on
    assert polled.effect() == AgentEffect(60)


def test_garbage_lines_are_counted_and_ignored(agent: Agent, polled: Polled) -> None:
    agent.answer = b"70%\n"
    polled.until("70 %", lambda r: r.effects().get(1) == AgentEffect(70))
    cases = [
        (b"I am fine thanks\n", "garbage"),
        (b"x" * 600, "too_long"),
        (b"50%", "closed"),  # no line end: HAProxy ignores an incomplete line too
        (b"", "closed"),
    ]
    for answer, reason in cases:
        agent.answer = answer
        polled.until(reason, _counted(reason))
        assert polled.effect() == AgentEffect(70), answer
    assert polled.policy().last_line == "I am fine thanks"


def test_a_reload_keeps_what_an_unmoved_agent_said(lab: Lab, agent: Agent, polled: Polled) -> None:
    agent.answer = b"drain 40%\n"
    polled.until("drain 40 %", lambda r: r.effects().get(1) == AgentEffect(40, "drain"))
    agent.answer = None  # from now on it says nothing

    async def reload(specs: dict[Hashable, AgentSpec]) -> list[Hashable]:
        return polled.runner.replace(specs)

    # new tuning and timing, same address and port: what it said stays
    retuned = dataclasses.replace(spec(tuning=AgentTuning(threshold=5)), interval=0.2)
    assert lab.prober.run(reload({1: retuned})) == []
    assert polled.effect() == AgentEffect(40, "drain")
    assert polled.policy().tuning == AgentTuning(threshold=5)
    # another port: a new agent, nothing said yet; removed: its effect is gone
    assert lab.prober.run(reload({1: spec(port=AGENT_PORT + 1), 2: spec()})) == [1]
    assert polled.read(lambda r: r.effects()) == {}
    assert lab.prober.run(reload({})) == []
    assert polled.read(lambda r: list(r.agents())) == []


def test_the_send_string_reaches_the_agent(lab: Lab, agent: Agent) -> None:
    agent.replies = {b"rdsh\n": b"35%\n"}
    p = Polled(lab, {1: spec(send=b"rdsh\n")})
    try:
        p.until("35 %", lambda r: r.effects().get(1) == AgentEffect(35))
    finally:
        p.stop()
    assert agent.received[0] == b"rdsh\n"


def test_threshold_and_rate_limit_on_a_live_agent(lab: Lab, agent: Agent) -> None:
    p = Polled(lab, {1: spec(tuning=AgentTuning(threshold=10, rate_limit=0.6))})
    try:
        agent.answer = b"50%\n"
        p.until("50 %", lambda r: r.effects().get(1) == AgentEffect(50))
        agent.answer = b"45%\n"  # under the threshold: never applied
        time.sleep(0.5)
        assert p.effect() == AgentEffect(50)
        assert p.policy().held is not None
        agent.answer = b"20%\n"
        p.until("20 %", lambda r: r.effects().get(1) == AgentEffect(20))
        agent.answer = b"80%\n"  # within the window of the last change: waits for it
        began = time.monotonic()
        p.until("80 %", lambda r: r.effects().get(1) == AgentEffect(80))
        waited = time.monotonic() - began
    finally:
        p.stop()
    assert waited > 0.4  # the window is 0.6 s from the 20 % change, seen at most a poll late
    print(f"rate-limited change applied after {waited:.2f} s")


def test_an_agent_that_never_answers_holds_one_socket_until_its_timeout(
    lab: Lab, agent: Agent
) -> None:
    agent.answer = None
    p = Polled(lab, {1: spec()})
    try:
        p.until("a timeout", lambda r: _errors(r).get("timeout", 0) >= 3)
        assert p.read(lambda r: r.in_flight) <= 1
        polls = p.read(lambda r: r.polls)
    finally:
        p.stop()
    # never more than one poll at a time per agent: one every interval, each ending in timeout
    assert agent.connections <= polls


# -- a slow agent never delays a health verdict -------------------------------------------------

CHECK_PORT = 3010
HUNG_AGENTS = 200
CHECKS = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 80
  [virtual_server.check]
  type = "tcp"
  port = {port}
  send = "ping\\n"
  expect = "pong"
  interval = {interval}
  timeout = {interval}
  rise = 1
  fall = 1
  [[virtual_server.real_server]]
  address = "{app}"
"""


@dataclass
class Checked:
    """The checked server: answers "pong" while healthy, "nope" when not."""

    healthy: bool = True

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            writer.write(b"pong\n" if self.healthy else b"nope\n")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read()
    except OSError:
        pass
    finally:
        writer.close()


def _wait(what: str, check: Callable[[], bool], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _verdict_delays(lab: Lab, rounds: int, hung: int) -> list[float]:
    """Seconds from a checked server turning bad to the down verdict, ``rounds`` times, with
    ``hung`` agents (accept, never answer) polled on the same loop meanwhile."""
    config = parse_config(CHECKS.format(port=CHECK_PORT, interval=INTERVAL, app=APP))
    downs: list[float] = []
    ups: list[float] = []

    def on_change(changes: list[HealthChanged]) -> None:
        for change in changes:
            (ups if change.up else downs).append(time.monotonic())

    checked = Checked()
    server = lab.servers.run(servers.start_tcp(APP, CHECK_PORT, checked.handle))
    hung_server = lab.servers.run(servers.start_tcp(APP, AGENT_PORT + 100, _hold))
    checks = HealthChecks(on_change, rng=random.Random(3))
    jitter = random.Random(11)

    async def start() -> AgentRunner:
        checks.update(config)
        agents = AgentRunner(lambda ids: None, rng=random.Random(5), max_in_flight=256)
        agents.start()
        slow = AgentSpec(Target(ipaddress.ip_address(APP), AGENT_PORT + 100), 1.0, 0.9)
        agents.replace({i: slow for i in range(hung)})
        return agents

    runner = lab.prober.run(start())
    try:
        time.sleep(1.0)  # every agent's first poll (random offsets within 1 s) is out
        delays = []
        for _ in range(rounds):
            time.sleep(0.2 + jitter.random() * INTERVAL)  # bad at any point of a round
            if hung:
                assert lab.prober.run(_in_flight(runner)) > hung // 2  # the crowd is there
            before = len(downs)
            bad_at = time.monotonic()
            checked.healthy = False
            _wait("the down verdict", lambda before=before: len(downs) > before)  # type: ignore[misc]
            delays.append(downs[before] - bad_at)
            checked.healthy = True
            _wait("the up verdict", lambda: len(ups) >= len(downs))
        return delays
    finally:
        lab.prober.run(runner.stop())
        lab.prober.run(checks.stop())
        for listener in (server, hung_server):
            lab.servers.run(_closing(listener)())


async def _in_flight(runner: AgentRunner) -> int:
    return runner.in_flight


def test_a_slow_agent_never_delays_a_health_verdict(lab: Lab) -> None:
    rounds = 10
    alone = _verdict_delays(lab, rounds, 0)
    crowded = _verdict_delays(lab, rounds, HUNG_AGENTS)
    a, c = statistics.median(alone), statistics.median(crowded)
    print(
        f"down verdict after the server turned bad (interval {INTERVAL} s): alone median "
        f"{a * 1000:.0f} ms max {max(alone) * 1000:.0f} ms; with {HUNG_AGENTS} hung agents "
        f"median {c * 1000:.0f} ms max {max(crowded) * 1000:.0f} ms"
    )
    # a verdict comes within one interval (+ scheduling) whatever the agents do
    assert max(crowded) < INTERVAL + 0.4
    assert c < a + 0.05
