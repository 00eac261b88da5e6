"""The one status model behind ``directorctl status``, ``GET /status.json`` and the page at ``/``.

Two steps, so the HTTP listener never stalls the event loop:

- :func:`Director.status_inputs <director.app.Director.status_inputs>` takes a
  :class:`StatusInputs` on the loop: references to frozen snapshots (config, IPVS counters) and
  small copies of what is mutable (check summaries, maintenance, VRRP, events). Cheap.
- :func:`build_status` (pure, may run in a worker thread) joins them into one dict whose top-level
  keys are sections: ``role``, ``vrrp``, ``services``, ``events``, ``config``, ``peer_check``,
  ...
  A feature adds its data as one more named section (``StatusInputs.sections``); the page renders
  a section it has no special view for as a plain key/value list, and one that is absent not at
  all.

Every word a person reads (``up``/``DOWN``, ``draining``, ``removed (...)``) is decided here once,
and both renderers (:mod:`director.control.ctl`, :mod:`director.status_page`) show it as is; the
feedback agent's and the peer check's words come from :mod:`director.status_words`, put into
the status as ``agent.text`` / ``agent.level``, ``peer_check.head`` / ``peer_check.lines`` and
``bgp.words``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from director.agents import add_agent_views
from director.config.model import Config
from director.events import Event
from director.ipvs.model import DestKey, ServiceKey
from director.ipvs.stats import DestStats, StatsSnapshot
from director.maintenance import dest_id
from director.pause import Pause, no_pause
from director.status_words import agent_level, agent_words, bgp_words, peer_head, peer_lines

_SEP = {False: (", ", ": "), True: (",", ":")}  # json.dumps' default separators, compact

STALE_AFTER = 3  # stats intervals without a fresh reading of the kernel's table: stale
EVENTS_SHOWN = 50


@dataclass(frozen=True)
class StatsPair:
    """The last two readings of the table: the rates are their difference."""

    current: StatsSnapshot | None = None
    previous: StatsSnapshot | None = None

    def observe(self, snapshot: StatsSnapshot | None) -> StatsPair:
        """The pair after ``snapshot`` was read (the same reading again changes nothing)."""
        if snapshot is None or snapshot is self.current:
            return self
        return StatsPair(snapshot, self.current)


@dataclass(frozen=True)
class StatusInputs:
    """Everything the status is made of, taken on the event loop at ``now`` (wall clock)."""

    now: float
    generation: int
    config: Config
    config_sha256: str | None
    engine_status: dict[str, Any]
    stats: StatsPair
    # the checks' summary (HealthChecks.summary), or how to build it from what was taken on
    # the loop (HealthChecks.taken): then it is built where the status is built
    checks: list[dict[str, object]] | Callable[[], list[dict[str, object]]]
    health_since: Mapping[tuple[str, str], float]
    overrides: Mapping[tuple[ServiceKey, DestKey], str]
    removed_why: Mapping[str, str]
    drains: list[dict[str, object]]
    role: str | None
    vrrp: list[dict[str, object]]
    events: list[Event]
    # the feedback agents (director.agents.FeedbackAgents.summary), one per real server with one
    agents: list[dict[str, object]] = field(default_factory=list)
    sections: dict[str, object] = field(default_factory=dict)  # name -> JSON-able, added last


def build_status(i: StatusInputs, pause: Pause = no_pause) -> dict[str, object]:
    """The status: the config's services joined with the kernel's last reading, each real
    server's health and maintenance state, VRRP, recent events, the config digest, and every
    extra section. ``pause`` is called after each service: in a worker thread, the HTTP
    listener passes ``time.sleep(0)``, which hands the GIL to the event loop at once rather
    than after the interpreter's switch interval."""
    checks = i.checks() if callable(i.checks) else i.checks
    by_check = {(str(c.get("service")), str(c.get("destination"))): c for c in checks}
    stats, previous = i.stats.current, i.stats.previous
    services: list[dict[str, object]] = []
    for vs in i.config.virtual_servers:
        pause()
        key = vs.service_key()
        skey = str(key)
        kernel = stats.dests.get(key, {}) if stats is not None else {}
        before = previous.dests.get(key, {}) if previous is not None else {}
        span = stats.at - previous.at if stats is not None and previous is not None else 0.0
        in_kernel = stats is not None and key in stats.services
        servers: list[dict[str, object]] = []
        listed = set()
        for rs in vs.real_servers:
            dkey = rs.dest_key(vs)
            listed.add(dkey)
            dname = str(dkey)
            servers.append(
                _server(
                    dname, rs.name, rs.fwd(vs).label, rs.weight, kernel.get(dkey),
                    _rate(kernel.get(dkey), before.get(dkey), span),
                    by_check.get((skey, dname)), i.health_since.get((skey, dname)),
                    i.overrides.get((key, dkey)), i.removed_why.get(dest_id(key, dkey)),
                )
            )  # fmt: skip
        for dkey, ds in kernel.items():  # e.g. the sorry server
            if dkey not in listed:
                sorry = vs.sorry_server is not None and vs.sorry_server.dest_key(vs) == dkey
                servers.append(
                    _server(str(dkey), "sorry" if sorry else None, ds.dest.fwd_method.label,
                            ds.dest.weight, ds, _rate(ds, before.get(dkey), span),
                            None, None, None, None)
                )  # fmt: skip
        services.append(
            {
                "name": vs.display_name,
                "key": skey,
                "scheduler": vs.scheduler,
                "persistence_timeout": vs.persistence_timeout,
                "in_kernel": in_kernel,
                "servers": servers,
            }
        )
    interval = i.config.daemon.stats_interval
    stats_at = stats.at if stats is not None else None
    view: dict[str, object] = {"services": services}
    add_agent_views(view, i.agents)
    for svc in services:
        for row in svc["servers"]:  # type: ignore[attr-defined]
            agent = row.get("agent")
            if isinstance(agent, dict):
                agent["text"] = agent_words(agent, row.get("config_weight"), i.now)
                agent["level"] = agent_level(agent)
    sections = dict(i.sections)
    peer_check = sections.get("peer_check")
    if isinstance(peer_check, dict):
        sections["peer_check"] = {
            **peer_check,
            "head": peer_head(peer_check),
            "lines": peer_lines(peer_check, i.now),
        }
    bgp = sections.get("bgp")
    if isinstance(bgp, dict):
        sections["bgp"] = {**bgp, "words": bgp_words(bgp)}
    elif bgp is None:
        sections.pop("bgp", None)  # no [bgp]: no section
    engine = i.engine_status
    if "checks" in engine:  # the checks as now, where the engine's status has them
        engine = {**engine, "checks": checks}
    return {
        **engine,
        "generated_at": i.now,
        "generation": i.generation,
        "stats_interval": interval,
        "stale": stale_reasons(i.now, stats_at, interval),
        "role": i.role,
        "vrrp": i.vrrp,
        "services": services,
        "drains": i.drains,
        "stats_at": stats_at,
        "events": [e.to_json() for e in i.events[:EVENTS_SHOWN]],
        "config": {
            "path": i.engine_status.get("config_path"),
            "loaded_at": i.engine_status.get("config_loaded_at"),
            "sha256": i.config_sha256,
        },
        **sections,
    }


def encode_status(i: StatusInputs, pause: Pause = no_pause, *, services_last: bool = False) -> str:
    """The status as JSON text (worker thread): built, encoded and then freed a service at a
    time, with ``pause`` between them, so no single C call (the encoder, a deallocation of the
    whole tree) holds the GIL for the whole document. The text of ``json.dumps(build_status(i),
    default=str)`` (``directorctl status``); ``services_last``: compact, with the services after
    the other keys (``/status.json``)."""
    st = build_status(i, pause)
    order = list(st)
    at = order.index("services")
    services = st.pop("services")
    parts = []
    if isinstance(services, list):
        services.reverse()
        while services:
            parts.append(json.dumps(services.pop(), default=str, separators=_SEP[services_last]))
            pause()
    item, key = _SEP[services_last]
    listed = f"[{item.join(parts)}]"
    if services_last:
        head = json.dumps(st, separators=(item, key), default=str)
        comma = item if head != "{}" else ""
        return f'{head[:-1]}{comma}"services"{key}{listed}}}'
    # the services where build_status put them
    before = {k: st[k] for k in order[:at]}
    after = {k: st[k] for k in order[at + 1 :]}
    head = json.dumps(before, default=str)[:-1] if before else "{"
    tail = json.dumps(after, default=str)[1:] if after else "}"
    return (
        f'{head}{item if before else ""}"services"{key}{listed}'
        f"{item if after else ''}{tail if after else '}'}"
    )


def stale_reasons(now: float, stats_at: float | None, interval: float) -> list[str]:
    """Why the data is old, as the daemon itself sees it (the page adds its own fetch age)."""
    if stats_at is None:
        return []
    age = now - stats_at
    if age > STALE_AFTER * interval + 1.0:
        return [
            f"the kernel's counters were last read {age:.0f} s ago "
            f"(every {interval:g} s expected): the daemon's loop is behind"
        ]
    return []


def _rate(ds: DestStats | None, before: DestStats | None, span: float) -> dict[str, float] | None:
    if ds is None or before is None or span <= 0:
        return None
    now, then = ds.counters, before.counters
    if now.conns < then.conns:  # the destination was re-added: counters started again
        return None
    return {
        "cps": round((now.conns - then.conns) / span, 2),
        "in_bps": round((now.inbytes - then.inbytes) / span, 1),
        "out_bps": round((now.outbytes - then.outbytes) / span, 1),
    }


def _server(
    address: str,
    name: str | None,
    forwarding: str,
    config_weight: int,
    ds: DestStats | None,
    rate: dict[str, float] | None,
    check: dict[str, object] | None,
    since: float | None,
    override: str | None,
    removed_why: str | None,
) -> dict[str, object]:
    if override == "remove":
        maintenance = f"removed ({removed_why or 'drained'})"
    elif override == "drain":
        maintenance = "draining"
    else:
        maintenance = None
    return {
        "address": address,
        "name": name,
        "forwarding": forwarding,
        "config_weight": config_weight,
        "in_kernel": ds is not None,
        "weight": ds.dest.weight if ds is not None else None,
        "active": ds.active if ds is not None else None,
        "inactive": ds.inactive if ds is not None else None,
        "persistent": ds.persistent if ds is not None else None,
        "rate": rate,
        "health": None
        if check is None
        else {
            "up": check.get("up"),
            "type": check.get("type"),
            "latency_ms": check.get("last_latency_ms"),
            "last_error": check.get("last_error"),
            "since": since,
        },
        "maintenance": maintenance,
    }
