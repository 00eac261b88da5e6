"""Prometheus metrics: built with ``prometheus_client``, served over HTTP by the daemon's own
server (:mod:`director.http`).

Scraping never waits for the kernel. IPVS counters come from the engine's last
:class:`~director.ipvs.stats.StatsSnapshot` (read in its worker thread every ``stats_interval``
seconds and after maintenance commands); health, VRRP and role come from the in-memory state of
their owners. A custom :class:`Collector` turns those snapshots into metric families at scrape
time; events (syncs, reloads, probe results) update ordinary counters and histograms.

IPVS label names follow node_exporter's ipvs collector: ``local_address``, ``local_port``,
``remote_address``, ``remote_port``, ``proto``, ``local_mark`` (an fwmark service has an empty
address and protocol, port 0 and its mark).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# By module path: the package's __init__ also imports its exposition module (an HTTP server,
# urllib, email, gzip...), which only a scrape needs (director.lean; generate_latest below).
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import Counter, Gauge, Histogram
from prometheus_client.registry import Collector, CollectorRegistry

from director.ipvs.model import ServiceKey
from director.ipvs.stats import Counters, StatsSnapshot
from director.metrics_text import checks_text, ipvs_text
from director.pause import Pause, no_pause
from director.reconcile.reconciler import SyncResult

SERVICE_LABELS = ["local_address", "local_port", "proto", "local_mark"]
BACKEND_LABELS = [
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "proto",
    "local_mark",
]
CHECK_LABELS = ["service", "destination", "type"]
VRRP_STATES = ("init", "backup", "master", "fault")
AGENT_STATES = ("none", "ready", "drain", "maint", "down")
PEER_STATES = ("unknown", "match", "mismatch", "unreachable", "unauthenticated")
_COUNTERS = (
    ("connections", "conns", "Connections scheduled"),
    ("incoming_packets", "inpkts", "Packets received from clients"),
    ("outgoing_packets", "outpkts", "Packets sent to clients"),
    ("incoming_bytes", "inbytes", "Bytes received from clients"),
    ("outgoing_bytes", "outbytes", "Bytes sent to clients"),
)
CHUNK = 1 << 20  # characters of exposition text per chunk of a scrape (Metrics.chunks)
# Probe latencies from a LAN server answering at once to a check timing out.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def service_labels(key: ServiceKey) -> list[str]:
    if key.fwmark:
        return ["", "0", "", str(key.fwmark)]
    assert key.protocol is not None
    return [str(key.address), str(key.port), key.protocol.name, ""]


class ChangedAt(Mapping[tuple[str, str], float]):
    """(service, destination) as the checks name them -> wall time of the last health change,
    kept by service, then destination: every check has an entry once it has come up, and at
    10,000 x 10 a (service, destination) tuple and a slot of one 100,000-entry table were ~135
    bytes a check (13.5 MB by tracemalloc); 10,000 small tables by service take ~60."""

    __slots__ = ("_by",)

    def __init__(self, items: Mapping[tuple[str, str], float] | None = None) -> None:
        self._by: dict[str, dict[str, float]] = {}
        for key, at in (items or {}).items():
            self[key] = at

    def __setitem__(self, key: tuple[str, str], at: float) -> None:
        service, dest = key
        inner = self._by.get(service)
        if inner is None:
            inner = self._by[service] = {}
        inner[dest] = at

    def __delitem__(self, key: tuple[str, str]) -> None:
        service, dest = key
        inner = self._by[service]
        del inner[dest]
        if not inner:
            del self._by[service]

    def __getitem__(self, key: tuple[str, str]) -> float:
        return self._by[key[0]][key[1]]

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        inner = self._by.get(key[0])
        return default if inner is None else inner.get(key[1], default)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        inner = self._by.get(key[0])
        return inner is not None and key[1] in inner

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for service, inner in self._by.items():
            for dest in inner:
                yield service, dest

    def __len__(self) -> int:
        return sum(map(len, self._by.values()))

    def copy(self) -> ChangedAt:
        """A copy (for a rendering elsewhere): one small dict copy per service, in C."""
        new = ChangedAt()
        new._by = {service: dict(inner) for service, inner in self._by.items()}
        return new


@dataclass
class Sources:
    """Where the collector reads at scrape time; each is cheap and never touches the kernel."""

    stats: Callable[[], StatsSnapshot | None] = lambda: None
    checks: Callable[[], list[dict[str, object]]] = list
    # Per VRRP instance: name, state, priority, transitions, adverts_received,
    # adverts_dropped ({reason: count}) - whatever the VRRP service reports.
    vrrp: Callable[[], list[dict[str, object]]] = list
    role: Callable[[], str | None] = lambda: None
    drains: Callable[[], int] = lambda: 0
    # Per feedback agent (director.agents.FeedbackAgents.summary): service, destination,
    # state, config_weight, weight, errors ({reason: count}).
    agents: Callable[[], list[dict[str, object]]] = list
    # The peer config check: digest, generation, peers (director.peer.service summary()).
    peers: Callable[[], dict[str, object]] = dict
    bgp: Callable[[], dict[str, object] | None] = lambda: None  # BgpService.summary()
    # How to take the checks on the loop cheaply: returns how to build ``checks()`` later (in
    # the worker thread that renders); None: ``checks()`` is called on the loop.
    take_checks: Callable[[], Callable[[], list[dict[str, object]]]] | None = None
    # (service, destination) as the checks name them -> wall time of the last health change
    health_changed_at: ChangedAt = field(default_factory=lambda: ChangedAt())


def _bgp(bgp: dict[str, Any] | None) -> Iterator[Metric]:
    """[bgp]: each route announced or not, each session up or not, the node drained or not."""
    if not bgp:
        return
    route = GaugeMetricFamily(
        "director_bgp_route_announced",
        "1 while this director announces the prefix",
        labels=["prefix"],
    )
    for r in bgp.get("routes") or []:
        route.add_metric([str(r["prefix"])], 1.0 if r["announced"] else 0.0)
    yield route
    speaker = bgp.get("speaker") or {}
    session = GaugeMetricFamily(
        "director_bgp_session_up", "1 while the BGP session with the peer is up", labels=["peer"]
    )
    for sess in speaker.get("sessions") or []:
        session.add_metric([str(sess["peer"])], 1.0 if sess["state"] == "up" else 0.0)
    yield session
    yield GaugeMetricFamily(
        "director_bgp_speaker_restarts",
        "Times the BGP speaker (ExaBGP) had to be started again since directord started",
        value=float(speaker.get("restarts") or 0),
    )
    drain = bgp.get("drain") or {}
    yield GaugeMetricFamily(
        "director_bgp_drained",
        "1 while the director is drained (directorctl drain-director)",
        value=1.0 if drain.get("drained") else 0.0,
    )


class SnapshotCollector(Collector):
    """Builds the snapshot-based families at each scrape (the IPVS ones only if ``ipvs``)."""

    def __init__(
        self, sources: Sources, *, ipvs: bool = True, rest: bool = True, checks: bool = True
    ) -> None:
        self.sources = sources
        self.ipvs = ipvs
        self.rest = rest
        self.checks = checks

    def collect(self) -> Iterator[Metric]:
        if self.ipvs:
            yield from self._ipvs(self.sources.stats())
        if not self.rest:
            return
        if self.checks:
            yield from self._checks(self.sources.checks())
        yield from self._vrrp(self.sources.vrrp())
        yield from agent_families(self.sources.agents())
        role = self.sources.role()
        if role is not None:
            g = GaugeMetricFamily("director_role", "1 for this director's role", labels=["role"])
            for name in ("master", "backup", "fault"):
                g.add_metric([name], 1.0 if role == name else 0.0)
            yield g
        yield GaugeMetricFamily(
            "director_maintenance_drains",
            "Standing drains (directorctl drain)",
            value=self.sources.drains(),
        )
        yield from self._peers(self.sources.peers())
        yield from _bgp(self.sources.bgp())

    def _ipvs(self, snap: StatsSnapshot | None) -> Iterator[Metric]:
        if snap is None:
            return
        yield GaugeMetricFamily(
            "director_ipvs_stats_timestamp_seconds",
            "When the IPVS counters below were read from the kernel",
            value=snap.at,
        )
        svc = {
            name: CounterMetricFamily(
                f"director_ipvs_service_{name}",
                f"{text}, per virtual service",
                labels=SERVICE_LABELS,
            )
            for name, _, text in _COUNTERS
        }
        back = {
            name: CounterMetricFamily(
                f"director_ipvs_backend_{name}", f"{text}, per real server", labels=BACKEND_LABELS
            )
            for name, _, text in _COUNTERS
        }
        gauges = {
            name: GaugeMetricFamily(f"director_ipvs_backend_{name}", text, labels=BACKEND_LABELS)
            for name, text in (
                ("connections_active", "Active (established) connections"),
                ("connections_inactive", "Inactive connections"),
                ("connections_persistent", "Persistence templates"),
                ("weight", "Weight in the kernel"),
            )
        }
        for key, (_, counters) in snap.services.items():
            labels = service_labels(key)
            _add_counters(svc, labels, counters)
            local_address, local_port, proto, mark = labels
            for dkey, ds in snap.dests.get(key, {}).items():
                bl = [local_address, local_port, str(dkey.address), str(dkey.port), proto, mark]
                _add_counters(back, bl, ds.counters)
                gauges["connections_active"].add_metric(bl, ds.active)
                gauges["connections_inactive"].add_metric(bl, ds.inactive)
                gauges["connections_persistent"].add_metric(bl, ds.persistent)
                gauges["weight"].add_metric(bl, ds.dest.weight)
        yield from svc.values()
        yield from back.values()
        yield from gauges.values()

    def _checks(self, checks: list[dict[str, object]]) -> Iterator[Metric]:
        up = GaugeMetricFamily("director_check_up", "1 when the check passes", labels=CHECK_LABELS)
        changed = GaugeMetricFamily(
            "director_check_last_change_timestamp_seconds",
            "When the check's verdict last changed (0: not since start)",
            labels=CHECK_LABELS,
        )
        transitions = CounterMetricFamily(
            "director_check_transitions", "Verdict changes since start", labels=CHECK_LABELS
        )
        for c in checks:
            labels = [str(c.get("service")), str(c.get("destination")), str(c.get("type"))]
            up.add_metric(labels, 1.0 if c.get("up") else 0.0)
            at = self.sources.health_changed_at.get((labels[0], labels[1]), 0.0)
            changed.add_metric(labels, at)
            count = c.get("transitions")
            transitions.add_metric(labels, float(count) if isinstance(count, int) else 0.0)
        yield from (up, changed, transitions)

    def _vrrp(self, instances: list[dict[str, object]]) -> Iterator[Metric]:
        if not instances:
            return
        state = GaugeMetricFamily(
            "director_vrrp_state", "1 for the instance's state", labels=["instance", "state"]
        )
        priority = GaugeMetricFamily(
            "director_vrrp_priority", "Effective priority", labels=["instance"]
        )
        transitions = CounterMetricFamily(
            "director_vrrp_transitions", "State changes", labels=["instance"]
        )
        received = CounterMetricFamily(
            "director_vrrp_adverts_received", "Adverts accepted", labels=["instance"]
        )
        dropped = CounterMetricFamily(
            "director_vrrp_adverts_dropped", "Adverts dropped", labels=["instance", "reason"]
        )
        held = CounterMetricFamily(
            "director_vrrp_answers_suppressed",
            "Lower-priority adverts the master did not answer (at most one answer an interval)",
            labels=["instance"],
        )
        restored = CounterMetricFamily(
            "director_vrrp_vips_restored",
            "Virtual addresses the master found deleted under it and put back",
            labels=["instance"],
        )
        for inst in instances:
            name = str(inst.get("name"))
            current = str(inst.get("state", "")).lower()
            for s in VRRP_STATES:
                state.add_metric([name, s], 1.0 if current == s else 0.0)
            priority.add_metric([name], _num(inst.get("priority")))
            transitions.add_metric([name], _num(inst.get("transitions")))
            received.add_metric([name], _num(inst.get("adverts_received")))
            drops = inst.get("adverts_dropped")
            if isinstance(drops, Mapping):
                for reason, n in drops.items():
                    dropped.add_metric([name, str(reason)], _num(n))
            held.add_metric([name], _num(inst.get("answers_suppressed")))
            restored.add_metric([name], _num(inst.get("vips_restored")))
        yield from (state, priority, transitions, received, dropped, held, restored)

    def _peers(self, summary: Mapping[str, object]) -> Iterator[Metric]:
        generation = summary.get("generation")
        if generation is None:
            return
        yield GaugeMetricFamily(
            "director_config_generation",
            "Generation of the running config: one more at each reload that changed its "
            "shared part (the peer check's digest); kept across restarts",
            value=_num(generation),
        )
        peers = summary.get("peers")
        if not isinstance(peers, list) or not peers:
            return
        match = GaugeMetricFamily(
            "director_peer_config_match",
            "1 when the peer's shared config has our digest, 0 when it differs "
            "(absent while the peer cannot be asked)",
            labels=["peer"],
        )
        state = GaugeMetricFamily(
            "director_peer_check_state", "1 for the peer check's state", labels=["peer", "state"]
        )
        generation_seen = GaugeMetricFamily(
            "director_peer_config_generation", "The peer's config generation", labels=["peer"]
        )
        contact = GaugeMetricFamily(
            "director_peer_last_contact_timestamp_seconds",
            "When the peer last answered, authenticated",
            labels=["peer"],
        )
        for view in peers:
            peer, current = str(view.get("peer")), str(view.get("state"))
            for name in PEER_STATES:
                state.add_metric([peer, name], 1.0 if current == name else 0.0)
            if current in ("match", "mismatch"):
                match.add_metric([peer], 1.0 if current == "match" else 0.0)
            if view.get("generation") is not None:
                generation_seen.add_metric([peer], _num(view.get("generation")))
            if view.get("last_contact") is not None:
                contact.add_metric([peer], _num(view.get("last_contact")))
        yield from (match, state, generation_seen, contact)


def agent_families(agents: list[dict[str, object]]) -> Iterator[Metric]:
    """The feedback agents: configured and effective weight, state, errors by reason."""
    if not agents:
        return
    labels = ["service", "destination"]
    configured = GaugeMetricFamily(
        "director_agent_weight_configured", "Weight in the config", labels=labels
    )
    effective = GaugeMetricFamily(
        "director_agent_weight_effective",
        "Weight after what the agent said (0: drain, maint or down)",
        labels=labels,
    )
    state = GaugeMetricFamily(
        "director_agent_state",
        "1 for the agent's last word (none: no reply yet)",
        labels=[*labels, "state"],
    )
    errors = CounterMetricFamily(
        "director_agent_errors",
        "Agent polls that failed or lines not understood, by reason",
        labels=[*labels, "reason"],
    )
    for agent in agents:
        names = [str(agent.get("service")), str(agent.get("destination"))]
        configured.add_metric(names, _num(agent.get("config_weight")))
        effective.add_metric(names, _num(agent.get("weight")))
        current = agent.get("state")
        for s in AGENT_STATES:
            state.add_metric([*names, s], 1.0 if current == s else 0.0)
        counts = agent.get("errors")
        if isinstance(counts, Mapping):
            for reason, n in counts.items():
                errors.add_metric([*names, str(reason)], _num(n))
    yield from (configured, effective, state, errors)


def _large_families(sources: Sources, pause: Pause) -> Iterator[str]:
    yield from ipvs_text(sources.stats(), service_labels, pause)
    yield from checks_text(sources.checks(), sources.health_changed_at, pause)  # built now


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _add_counters(
    families: Mapping[str, CounterMetricFamily], labels: list[str], c: Counters
) -> None:
    for name, attr, _ in _COUNTERS:
        families[name].add_metric(labels, getattr(c, attr))


class Metrics:
    """The daemon's registry: the snapshot collector plus event counters the daemon feeds."""

    def __init__(self, sources: Sources | None = None) -> None:
        self.sources = sources or Sources()
        # Event metrics; the snapshot families are added per scrape (see render).
        self.registry = CollectorRegistry()
        r = self.registry
        self.sync_seconds = Histogram(
            "director_reconcile_duration_seconds",
            "Time to plan, apply and read back one IPVS sync",
            ["reason"],
            registry=r,
        )
        self.sync_ops = Counter(
            "director_reconcile_operations", "IPVS operations sent", ["reason"], registry=r
        )
        self.sync_failures = Counter(
            "director_reconcile_failures",
            "IPVS operations the kernel refused",
            ["reason"],
            registry=r,
        )
        self.sync_errors = Counter(
            "director_reconcile_errors",
            "Syncs that failed as a whole (the kernel could not be read or written)",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter(
            "director_config_reloads", "Config reloads by result", ["result"], registry=r
        )
        self.reload_ok = Gauge(
            "director_config_last_reload_successful",
            "1 when the last reload was accepted (also 1 before any reload)",
            registry=r,
        )
        self.reload_ok.set(1)
        self.reload_at = Gauge(
            "director_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded",
            registry=r,
        )
        self.reload_at.set(time.time())
        self.probe_latency = Histogram(
            "director_check_probe_latency_seconds",
            "Health-check probe latency",
            ["type", "target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.probe_results = Counter(
            "director_check_probes",
            "Probes run, by result",
            ["type", "target", "result"],
            registry=r,
        )
        self.local_failures = Counter(
            "director_check_local_failures",
            "Probes that could not run for a reason of this director's own (out of file "
            "descriptors, ports, memory), by errno name; verdicts were left as they were",
            ["reason"],
            registry=r,
        )
        self.peer_refused_requests = Counter(
            "director_peer_requests_refused",
            "Requests to the peer check endpoint refused, by reason (missing or bad "
            "signature: 401; clock_skew, replayed: 403)",
            ["reason"],
            registry=r,
        )
        self._probe_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        # (type, target) of the checks configured now; None until retain_probe_targets.
        self._probe_targets: frozenset[tuple[str, str]] | None = None

    # -- event hooks the composition root connects ------------------------------------------

    def synced(self, reason: str, result: SyncResult | None) -> None:
        if result is None:
            self.sync_errors.labels(reason).inc()
            return
        self.sync_seconds.labels(reason).observe(result.seconds)
        self.sync_ops.labels(reason).inc(len(result.ops))
        if result.failures:
            self.sync_failures.labels(reason).inc(len(result.failures))

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_at.set(time.time())

    def probed(
        self, kind: str, target: str, ok: bool, latency: float, local: str | None = None
    ) -> None:
        """One probe's result (called per probe: thousands a second on the daemon's loop, so
        the labelled children are looked up once per check, not per probe). ``local``: the
        probe could not run (``ProbeResult.local``, an errno name): counted as the director's
        failure, not as a probe of the target."""
        if local is not None:
            self.local_failures.labels(local).inc()
            return
        children = self._probe_children.get((kind, target))
        if children is None:
            targets = self._probe_targets
            if targets is not None and (kind, target) not in targets:
                return  # a late result of a check removed by a reload: no series for it
            children = self._probe_children[kind, target] = (
                self.probe_latency.labels(kind, target),
                self.probe_results.labels(kind, target, "ok"),
                self.probe_results.labels(kind, target, "failed"),
            )
        histogram, succeeded, failed = children
        histogram.observe(latency)
        (succeeded if ok else failed).inc()

    def retain_probe_targets(
        self,
        targets: Iterable[tuple[str, str]],
        checks: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """After each config change (the first included): ``targets`` are the (type, target)
        pairs checked now (``HealthChecks.probe_targets()``); the probe series of any other
        are removed, and results still in flight for them are not counted. ``checks``: the
        (service, destination) pairs checked now, to forget the others' last change time."""
        keep = frozenset(targets)
        self._probe_targets = keep
        for key in [key for key in self._probe_children if key not in keep]:
            del self._probe_children[key]
            kind, target = key
            self.probe_latency.remove(kind, target)
            for result in ("ok", "failed"):
                self.probe_results.remove(kind, target, result)
        if checks is not None:
            wanted = set(checks)
            changed = self.sources.health_changed_at
            for name in [name for name in changed if name not in wanted]:
                del changed[name]

    def peer_refused(self, reason: str) -> None:
        self.peer_refused_requests.labels(reason).inc()

    def health_changed(self, changes: Iterable[tuple[str, str]], at: float) -> None:
        for service, dest in changes:
            self.sources.health_changed_at[(service, dest)] = at

    def frozen_sources(self) -> Sources:
        """The sources' current values, read now (on the event loop) for a render elsewhere."""
        s = self.sources
        stats, vrrp, role, drains = s.stats(), s.vrrp(), s.role(), s.drains()
        checks: Callable[[], list[dict[str, object]]]
        if s.take_checks is not None:
            checks = functools.cache(s.take_checks())  # built once, where it is rendered
        else:
            taken = s.checks()

            def checks_taken() -> list[dict[str, object]]:
                return taken

            checks = checks_taken

        agents = s.agents()
        peers = s.peers()
        bgp = s.bgp()
        return Sources(
            bgp=lambda: bgp,
            stats=lambda: stats,
            checks=checks,
            vrrp=lambda: vrrp,
            role=lambda: role,
            drains=lambda: drains,
            agents=lambda: agents,
            peers=lambda: peers,
            health_changed_at=s.health_changed_at.copy(),
        )

    def render(self, sources: Sources | None = None, pause: Pause = no_pause) -> bytes:
        """The whole exposition at once (:meth:`chunks` joined)."""
        return b"".join(self.chunks(sources, pause))

    def chunks(self, sources: Sources | None = None, pause: Pause = no_pause) -> Iterator[bytes]:
        """The whole exposition, :data:`CHUNK` characters or so at a time: the IPVS and check
        families (:mod:`director.metrics_text`, the large ones, with ``pause`` every few
        thousand series), the other snapshots, the events. Nothing is kept between scrapes,
        and at most a chunk of text at a time: a 10,000 x 10 table's 185 MB exposition is
        sent as it is written (as a list of lines, then one string, then bytes, it peaked at
        three times that and left the daemon's resident size there)."""
        sources = sources or self.sources
        rest = CollectorRegistry()
        rest.register(SnapshotCollector(sources, ipvs=False, checks=False))
        pieces: list[str] = []
        size = 0
        for piece in _large_families(sources, pause):
            pieces.append(piece)
            size += len(piece)
            if size >= CHUNK:
                yield "".join(pieces).encode()
                pieces.clear()
                size = 0
        if pieces:
            yield "".join(pieces).encode()
        del pieces
        pause()
        from prometheus_client.exposition import generate_latest

        yield generate_latest(rest) + generate_latest(self.registry)
