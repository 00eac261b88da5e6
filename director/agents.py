"""Feedback agents for the daemon: config -> agents polled on the loop -> effects for the engine.

Each real server with an ``agent`` table becomes one :class:`checks.agent_runner.AgentSpec`
keyed by (service key, destination key), the key of the health map and of the desired state;
:meth:`FeedbackAgents.effects` feeds :func:`director.desired.compile_table`. A reload replaces
the set; an agent whose address and port did not change keeps what it said.

The agents run on the daemon's loop but on their own timer, poller and slots
(:mod:`checks.agent_runner`): a slow agent never delays a health verdict.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

import structlog

from checks.agent import MAX_PERCENT, AgentEffect, AgentTuning
from checks.agent_runner import AgentId, AgentRunner, AgentSpec
from checks.probes.result import Target
from director.config import Config
from director.ipvs.model import DestKey, ServiceKey
from director.statefile import LatestWriter, StateFileError, load_json, set_aside

log = structlog.get_logger("director")

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
    """The daemon's agents: the runner, what status and metrics read of it, and the state file
    (``agents.json``) that carries what each agent said over a restart."""

    def __init__(
        self,
        on_change: Callable[[list[AgentKey]], None],
        *,
        rng: random.Random | None = None,
        max_in_flight: int = AGENT_SLOTS,
        state_path: Path | None = None,
    ) -> None:
        self._on_change = on_change
        self.runner = AgentRunner(self._changed, rng=rng, max_in_flight=max_in_flight)
        self._started = False
        self._weights: dict[AgentKey, int] = {}  # the configured weights, for the summary
        self.state_path = state_path
        self._writer = LatestWriter(state_path, self._write_failed) if state_path else None
        self._saved: dict[tuple[str, str, str], AgentEffect] = {}  # read at start
        self._restored: dict[AgentKey, AgentEffect] = {}  # those that match the config
        self.problem: str | None = None  # what was wrong with the state file

    def load(self, config: Config) -> None:
        """Read what the agents of ``config`` said before a restart (``agents.json``), so that
        the first sync keeps a server an agent drained or took out. An agent whose address or
        port changed since starts afresh. Never raises: a bad file is set aside and reported in
        ``problem``, and the agents start afresh."""
        if self.state_path is None:
            return
        try:
            self._saved = load_json(self.state_path, _parse_saved) or {}
        except StateFileError as exc:
            aside = set_aside(self.state_path)
            self.problem = f"{exc}; the agents start afresh" + (
                f" (the file was kept as {aside.name})" if aside is not None else ""
            )
            log.error("state_file_corrupt", path=str(self.state_path), problem=self.problem)
            self._saved = {}
        self._restored = {
            key: effect
            for key, spec in build_agents(config).items()
            if (effect := self._saved.get((str(key[0]), str(key[1]), str(spec.target)))) is not None
        }

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
        restored, self._restored = self._restored, {}
        changed = self.runner.replace(
            cast(Mapping[AgentId, AgentSpec], specs),
            cast(Mapping[AgentId, AgentEffect], restored),
        )
        if changed:
            self._save()
        return cast(list[AgentKey], changed)

    def effects(self) -> Mapping[AgentKey, AgentEffect]:
        if not self._started:
            return self._restored  # the first sync, before the agents run
        return cast(Mapping[AgentKey, AgentEffect], self.runner.effects())

    def _changed(self, ids: list[AgentId]) -> None:
        self._save()
        self._on_change(cast(list[AgentKey], ids))

    def _save(self) -> None:
        if self._writer is None:
            return
        neutral = AgentEffect()
        document = {
            "agents": [
                {
                    "service": str(cast(AgentKey, agent_id)[0]),
                    "destination": str(cast(AgentKey, agent_id)[1]),
                    "target": str(spec.target),
                    **dataclasses.asdict(policy.effect),
                }
                for agent_id, spec, policy in self.runner.agents()
                if policy.effect != neutral
            ]
        }
        self._writer.put(json.dumps(document, indent=1).encode() + b"\n")

    def _write_failed(self, exc: OSError) -> None:
        log.warning("state_file_write_failed", path=str(self.state_path), error=str(exc))

    def summary(self) -> list[dict[str, object]]:
        """Per agent: where, its last word, the effect in force, errors; for status and
        metrics. Times are wall-clock (``*_at``) and ages in seconds."""
        out: list[dict[str, object]] = []
        loop_now = self.runner.now() if self._started else 0.0
        wall = time.time()

        def at(t: float | None) -> float | None:
            return None if t is None else round(wall - (loop_now - t), 3)

        neutral = AgentEffect()
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
                    "state": effect.state if policy.replies or effect != neutral else "none",
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
        if self._writer is not None:
            await self._writer.flush()


def _parse_saved(document: object) -> dict[tuple[str, str, str], AgentEffect]:
    """``agents.json``: {"agents": [{service, destination, target, percent, admin, down,
    maxconn}]}; ValueError says what is wrong."""
    if not isinstance(document, dict) or not isinstance(document.get("agents"), list):
        raise ValueError('expected {"agents": [...]}')
    out: dict[tuple[str, str, str], AgentEffect] = {}
    for i, item in enumerate(document["agents"]):
        try:
            key = (str(item["service"]), str(item["destination"]), str(item["target"]))
            percent, admin, down, maxconn = (
                item["percent"], item["admin"], item["down"], item["maxconn"]
            )  # fmt: skip
            if (
                not isinstance(percent, int)
                or isinstance(percent, bool)
                or not 0 <= percent <= MAX_PERCENT
                or admin not in ("ready", "drain", "maint")
                or not isinstance(down, bool)
                or not (maxconn is None or (isinstance(maxconn, int) and maxconn >= 0))
            ):
                raise ValueError(item)
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"agents[{i}]: expected service, destination, target, percent "
                f"(0 to {MAX_PERCENT}), admin, down, maxconn; found {item!r}"
            ) from None
        out[key] = AgentEffect(percent, admin, down, maxconn)
    return out


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
        "errors": agent.get("errors") or {},  # reason -> count
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
