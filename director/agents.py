"""Feedback agents for the daemon: config -> agents polled on the loop -> effects for the engine.

Each real server with an ``agent`` table becomes one :class:`checks.agent_runner.AgentSpec`
keyed by (service key, destination key), the key of the health map and of the desired state;
:meth:`FeedbackAgents.effects` feeds :func:`director.desired.compile_table`. A reload replaces
the set; an agent whose address and port did not change keeps what it said.

The agents run on the daemon's loop but on their own timer, poller and slots
(:mod:`checks.agent_runner`): a slow agent never delays a health verdict.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Callable, Mapping
from typing import cast

from checks.agent import AgentEffect, AgentTuning
from checks.agent_runner import AgentId, AgentRunner, AgentSpec
from checks.probes.result import Target
from director.config import Config
from director.ipvs.model import DestKey, ServiceKey

AgentKey = tuple[ServiceKey, DestKey]
AGENT_SLOTS = 64  # agent polls in flight at most (each one socket)


def agent_files(config: Config) -> int:
    """Open files the agents of ``config`` may hold at once: a socket per poll in flight and
    their poller's epoll (for the daemon's open-file budget)."""
    count = sum(
        rs.feedback_agent(vs) is not None for vs in config.virtual_servers for rs in vs.real_servers
    )
    return min(count, AGENT_SLOTS) + 1 if count else 0


def build_agents(config: Config) -> dict[AgentKey, AgentSpec]:
    out: dict[AgentKey, AgentSpec] = {}
    for vs in config.virtual_servers:
        key = vs.service_key()
        for rs in vs.real_servers:
            agent = rs.feedback_agent(vs)
            if agent is None:
                continue
            out[(key, rs.dest_key(vs))] = AgentSpec(
                target=Target(ipaddress.ip_address(agent.address), agent.port),
                interval=agent.interval,
                timeout=agent.timeout,
                send=agent.send.encode("latin-1"),
                tuning=AgentTuning(
                    min_percent=agent.min_percent,
                    max_percent=agent.max_percent,
                    threshold=agent.threshold,
                    rate_limit=agent.rate_limit,
                    maxconn=agent.maxconn,
                ),
            )
    return out


class FeedbackAgents:
    """The daemon's agents: the runner, and what status and metrics read of it."""

    def __init__(
        self,
        on_change: Callable[[list[AgentKey]], None],
        *,
        rng: random.Random | None = None,
        max_in_flight: int = AGENT_SLOTS,
    ) -> None:
        self.runner = AgentRunner(
            cast(Callable[[list[AgentId]], None], on_change),
            rng=rng,
            max_in_flight=max_in_flight,
        )
        self._started = False
        self._weights: dict[AgentKey, int] = {}  # the configured weights, for the summary

    def update(self, config: Config) -> list[AgentKey]:
        """Start the agents of ``config`` or replace the running ones; the keys whose effect
        changed (an agent removed or moved)."""
        specs = build_agents(config)
        self._weights = {
            (vs.service_key(), rs.dest_key(vs)): rs.weight
            for vs in config.virtual_servers
            for rs in vs.real_servers
            if (vs.service_key(), rs.dest_key(vs)) in specs
        }
        if not self._started:
            self.runner.start()
            self._started = True
        return cast(list[AgentKey], self.runner.replace(cast(Mapping[AgentId, AgentSpec], specs)))

    def effects(self) -> Mapping[AgentKey, AgentEffect]:
        return cast(Mapping[AgentKey, AgentEffect], self.runner.effects())

    def summary(self) -> list[dict[str, object]]:
        """Per agent: where, its last word, the effect in force, errors; for status and
        metrics. Times are wall-clock (``*_at``) and ages in seconds."""
        out: list[dict[str, object]] = []
        loop_now = self.runner.now() if self._started else 0.0
        wall = time.time()

        def at(t: float | None) -> float | None:
            return None if t is None else round(wall - (loop_now - t), 3)

        for agent_id, spec, policy in self.runner.agents():
            service, dest = cast(AgentKey, agent_id)
            effect = policy.effect
            silent = policy.failing_since
            configured = self._weights.get((service, dest), 0)
            weight = effect.weight(configured) if effect.state == "ready" else 0
            out.append(
                {
                    "service": str(service),
                    "destination": str(dest),
                    "target": str(spec.target),
                    "state": effect.state if policy.replies else "none",
                    "percent": effect.percent,
                    "config_weight": configured,
                    "weight": weight,
                    "maxconn": effect.maxconn,
                    "asked_percent": policy.asked,
                    "held": policy.held,
                    "last_line": policy.last_line,
                    "last_reply_at": at(policy.last_reply_at),
                    "last_error": policy.last_error,
                    "last_error_at": at(policy.last_error_at),
                    # the agent has not answered since then: the last value is kept
                    "keeping_since": at(silent),
                    "errors": dict(policy.errors),
                }
            )
        return out

    async def stop(self) -> None:
        if self._started:
            await self.runner.stop()


def agent_view(agent: Mapping[str, object] | None) -> dict[str, object] | None:
    """The ``agent`` entry of one real server in ``directorctl status``: what it last said
    and what is in force (kept apart from the rest of the server's row for the shared
    status model)."""
    if agent is None:
        return None
    return {
        "state": agent.get("state"),
        "percent": agent.get("percent"),
        "weight": agent.get("weight"),
        "maxconn": agent.get("maxconn"),
        "last_line": agent.get("last_line"),
        "last_error": agent.get("last_error"),
        "keeping_since": agent.get("keeping_since"),
        "held": agent.get("held"),
    }


def add_agent_views(view: dict[str, object], agents: list[dict[str, object]]) -> None:
    """Give each real server row of a status view (``services[].servers[]``) its ``agent``
    entry (None: no agent), matched by service key and address."""
    by_key = {(str(a["service"]), str(a["destination"])): a for a in agents}
    services = view.get("services")
    if not isinstance(services, list):
        return
    for svc in services:
        for row in svc.get("servers") or []:
            row["agent"] = agent_view(by_key.get((str(svc.get("key")), str(row.get("address")))))
