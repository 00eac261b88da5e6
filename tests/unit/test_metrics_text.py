"""The metrics' fast text (director.metrics_text) against prometheus_client's rendering of the
same snapshot: the same bytes, for generated tables (differential); and what the daemon takes on
the loop for a scrape or a status is a consistent snapshot."""

from __future__ import annotations

import functools
import json
import random
from ipaddress import ip_address
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import director.metrics
from director.ipvs.model import Dest, DestKey, Protocol, Service, ServiceKey
from director.ipvs.stats import Counters, DestStats, StatsSnapshot
from director.metrics import ChangedAt, Metrics, SnapshotCollector, Sources

T = TypeVar("T")


def _table(rng: random.Random, services: int) -> StatsSnapshot:
    values = [0, 1, 7, 999_999, 1_000_000, 12_345_678, 2**40 + 3, 2**63 - 1]
    snap = StatsSnapshot(at=rng.choice([0.0, 1733400000.123456, 1e6, 12345678.5]))
    for i in range(services):
        if i % 7 == 3:
            key = ServiceKey.mark(100 + i)
        else:
            addr = ip_address(f"198.18.{i // 250}.{i % 250}" if i % 5 else f"2001:db8::{i:x}")
            key = ServiceKey.inet(rng.choice([Protocol.TCP, Protocol.UDP]), addr, 1 + i)
        counters = Counters(*(rng.choice(values) for _ in range(5)))
        snap.services[key] = (Service(key=key), counters)
        dests: dict[DestKey, DestStats] = {}
        snap.dests[key] = dests
        for j in range(rng.randrange(0, 6)):
            daddr = ip_address(f"198.19.{j}.{i % 250}" if j % 3 else f"2001:db8:1::{j:x}")
            dkey = DestKey.of(daddr, rng.choice([0, 80, 443]))
            dest = Dest(key=dkey, weight=rng.choice([0, 1, 100, 65535]))
            dests[dkey] = DestStats(
                dest, rng.choice(values), rng.choice(values), rng.choice(values),
                Counters(*(rng.choice(values) for _ in range(5))),
            )  # fmt: skip
    return snap


def _checks(rng: random.Random, n: int) -> list[dict[str, object]]:
    return [
        {
            "service": f"TCP 198.18.0.{i}:80" if i % 4 else 'odd "name"\\with\nnewline',
            "destination": f"198.19.0.{i}:80",
            "type": rng.choice(["tcp", "http"]),
            "up": rng.choice([True, False, None]),
            "transitions": rng.choice([0, 3, None, 10**7]),
        }
        for i in range(n)
    ]


def _same(value: T) -> T:
    return value


def _reference(sources: Sources, registry: CollectorRegistry) -> bytes:
    ref = CollectorRegistry()
    ref.register(SnapshotCollector(sources))
    return generate_latest(ref) + generate_latest(registry)


def test_fast_text_is_prometheus_clients_text() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        snap = _table(rng, rng.randrange(0, 40)) if seed % 6 else None
        checks = _checks(rng, rng.randrange(0, 30))
        changed = {
            (str(c["service"]), str(c["destination"])): rng.choice([1.5, 1733400000.25, -0.0])
            for c in checks
            if rng.random() < 0.5
        }
        sources = Sources(
            stats=functools.partial(_same, snap),
            checks=functools.partial(_same, checks),
            health_changed_at=ChangedAt(changed),
            role=lambda: "master",
        )
        metrics = Metrics(sources)
        metrics.probed("tcp", "198.19.0.1:80", True, 0.002)
        assert metrics.render() == _reference(sources, metrics.registry), seed


def test_streamed_text_is_prometheus_clients_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunks a scrape is sent in (small ones here), joined: the same bytes."""
    monkeypatch.setattr(director.metrics, "CHUNK", 300)
    for seed in range(10):
        rng = random.Random(seed)
        snap = _table(rng, rng.randrange(1, 40))
        checks = _checks(rng, rng.randrange(1, 30))
        sources = Sources(
            stats=functools.partial(_same, snap), checks=functools.partial(_same, checks)
        )
        metrics = Metrics(sources)
        chunks = list(metrics.chunks())
        assert len(chunks) > 3, seed
        assert all(len(chunk) < 300 + 400 for chunk in chunks[:-1]), seed
        assert b"".join(chunks) == _reference(sources, metrics.registry), seed


def test_frozen_sources_take_the_checks_once_when_rendered() -> None:
    """``take_checks`` is called on the loop; what it returns is built once, later."""
    built: list[int] = []
    rows = [{"service": "TCP 198.18.0.1:80", "destination": "198.19.0.1:80", "type": "tcp",
             "up": True, "transitions": 1}]  # fmt: skip

    def take() -> object:
        snapshot = [dict(r) for r in rows]

        def build() -> list[dict[str, object]]:
            built.append(1)
            return snapshot

        return build

    metrics = Metrics(Sources(take_checks=take))  # type: ignore[arg-type]
    frozen = metrics.frozen_sources()
    rows[0]["up"] = False  # changed after the scrape was taken: not seen by it
    assert not built
    body = metrics.render(frozen).decode()
    assert (
        'director_check_up{destination="198.19.0.1:80",service="TCP 198.18.0.1:80",type="tcp"} 1.0'
        in body
    )
    assert frozen.checks() is frozen.checks() and built == [1]
    json.dumps(frozen.checks())
