"""The daemon's probe observer (``Director._on_probe``: metrics, BGP's first verdicts) on real
fast probes: a good one ends through its ok form and the runner's ok path (no result object),
and the metrics are those of the general path, result for result."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from checks.model import ProbeResult, StartProbe
from director.app import Director
from director.config import load_config
from director.health import ProbeJob
from director.intents import Intents
from director.metrics import Metrics
from tests.app.conftest import run, write
from tests.helpers.director import world_in
from tests.helpers.servers import NamespaceLoop, replying, start_tcp

GOOD, BAD, CLOSED = 9081, 9082, 9083  # on 198.18.0.1, the director's own address
CONFIG = f"""
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
[virtual_server.check]
type = "http"
interval = 0.02
  [[virtual_server.real_server]]
  address = "198.18.0.1"
  port = {GOOD}
{{checks}}"""
ALL = f"""
  [[virtual_server.real_server]]
  address = "198.18.0.1"
  port = {BAD}
  [[virtual_server.real_server]]
  address = "198.18.0.1"
  port = {CLOSED}
  check = {{ type = "tcp", interval = 0.02 }}
"""


def samples(metrics: Metrics) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """The probe metrics' samples (without their creation times)."""
    out = []
    for family in (metrics.probe_latency, metrics.probe_results):
        for metric in family.collect():
            for s in metric.samples:
                if not s.name.endswith("_created"):
                    out.append((s.name, tuple(sorted(s.labels.items())), s.value))
    return sorted(out)


Seen = list[tuple[str, ProbeJob, bool, float]]  # (scheduler path, job, ok, latency)


async def probing(director: Director, seconds: float) -> Seen:
    """Run the director's checks (servers on GOOD and BAD) for ``seconds``: what the runner
    handed the scheduler, in order (the reference for the metrics)."""
    good = await start_tcp("198.18.0.1", GOOD, replying(b"HTTP/1.1 200 OK\r\n\r\n"))
    bad = await start_tcp("198.18.0.1", BAD, replying(b"HTTP/1.1 503 No\r\n\r\n"))
    checks = director.checks
    seen: Seen = []
    scheduler = checks.scheduler
    probe_ok, probe_done = scheduler.probe_ok, scheduler.probe_done

    def seen_ok(start: StartProbe[Any], latency: float, now: float) -> Any:
        seen.append(("ok", start.spec, True, latency))
        return probe_ok(start, latency, now)

    def seen_done(start: StartProbe[Any], result: ProbeResult, now: float) -> Any:
        seen.append(("done", start.spec, result.ok, result.latency))
        return probe_done(start, result, now)

    scheduler.probe_ok = seen_ok  # type: ignore[method-assign]
    scheduler.probe_done = seen_done  # type: ignore[method-assign]
    checks.update(director.config)
    try:
        await asyncio.sleep(seconds)
    finally:
        await checks.stop()
        await asyncio.sleep(0.1)  # the servers end the connections of the last probes
        for server in (good, bad):
            server.close()
            await server.wait_closed()
        for _ in range(100):  # the servers' handlers close their connections
            if asyncio.all_tasks() == {asyncio.current_task()}:
                break
            await asyncio.sleep(0.01)
    return seen


def test_good_fast_probes_take_the_ok_path_with_the_general_paths_metrics(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    path = write(tmp_path, CONFIG.format(checks=ALL))
    world = world_in(tmp_path, path, metrics=False)

    async def scenario() -> tuple[Director, Seen]:
        director = Director(load_config(path), world, Intents())
        return director, await probing(director, 0.15)

    director, seen = run(inside, scenario)
    assert {(kind, ok) for _, job, ok, _ in seen for kind in [job.kind]} == {
        ("http", True),
        ("http", False),
        ("tcp", False),
    }
    # Every good result reached the scheduler through the ok path: no result object.
    assert {path for path, _, ok, _ in seen if ok} == {"ok"}
    assert sum(ok for _, _, ok, _ in seen) >= 3
    reference = Metrics()  # the general path's metrics of the same results, in the same order
    for _, job, ok, latency in seen:
        reference.probed(job.kind, job.label, ok, latency)
    assert samples(director.metrics) == samples(reference)


def test_a_good_fast_probe_brings_bgp_its_first_verdicts(
    tmp_path: Path, inside: NamespaceLoop
) -> None:
    """BGP waits for the checks' first results; a good probe (the ok form) schedules the
    coalesced update as any result does."""
    path = write(tmp_path, CONFIG.format(checks=""))
    world = world_in(tmp_path, path, metrics=False)

    async def scenario() -> tuple[Seen, int]:
        director = Director(load_config(path), world, Intents())
        updates: list[None] = []
        director._bgp_update = lambda: updates.append(None)  # type: ignore[method-assign]
        director._bgp_awaiting = True
        return await probing(director, 0.15), len(updates)

    seen, updates = run(inside, scenario)
    assert seen and {(path, ok) for path, _, ok, _ in seen} == {("ok", True)}
    assert updates == 1  # coalesced: one update (awaiting stays until _bgp_update runs)
