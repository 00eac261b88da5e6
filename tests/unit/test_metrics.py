"""Metrics parsed back with prometheus_client's parser; scrapes never wait on the kernel."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
import struct
import tracemalloc
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from director.config import ConfigError, load_config
from director.http import MetricsServer
from director.ipvs.model import Dest, DestKey, Family, Protocol, Service, ServiceKey
from director.ipvs.stats import Counters, DestStats, StatsSnapshot
from director.metrics import Metrics, Sources
from director.reconcile.reconciler import SyncResult

WEB = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 80)
V6 = ServiceKey.inet(Protocol.UDP, ipaddress.IPv6Address("2001:db8::10"), 53)
MARK = ServiceKey.mark(80, Family.INET)
R1 = DestKey.of(ipaddress.IPv4Address("198.18.1.11"), 80)
R6 = DestKey.of(ipaddress.IPv6Address("2001:db8:1::11"), 53)


def snapshot() -> StatsSnapshot:
    snap = StatsSnapshot(at=1234.5)
    snap.services[WEB] = (Service(WEB), Counters(10, 200, 150, 30_000, 2**40))
    snap.dests[WEB] = {R1: DestStats(Dest(R1, weight=3), 2, 5, 1, Counters(7, 100, 90, 9000, 8000))}
    snap.services[V6] = (Service(V6, netmask=128), Counters(1, 1, 1, 60, 120))
    snap.dests[V6] = {R6: DestStats(Dest(R6), 0, 1, 0, Counters(1, 1, 1, 60, 120))}
    snap.services[MARK] = (Service(MARK), Counters(4, 5, 6, 7, 8))
    snap.dests[MARK] = {}
    return snap


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


def test_ipvs_counters_with_node_exporter_labels() -> None:
    metrics = Metrics(Sources(stats=snapshot))
    got = samples(metrics.render().decode())
    web = labels(local_address="198.18.0.10", local_port="80", proto="TCP", local_mark="")
    backend = labels(
        local_address="198.18.0.10",
        local_port="80",
        remote_address="198.18.1.11",
        remote_port="80",
        proto="TCP",
        local_mark="",
    )
    assert got[("director_ipvs_service_connections_total", web)] == 10
    assert got[("director_ipvs_service_outgoing_bytes_total", web)] == 2**40
    assert got[("director_ipvs_backend_connections_total", backend)] == 7
    assert got[("director_ipvs_backend_incoming_packets_total", backend)] == 100
    assert got[("director_ipvs_backend_connections_active", backend)] == 2
    assert got[("director_ipvs_backend_connections_inactive", backend)] == 5
    assert got[("director_ipvs_backend_connections_persistent", backend)] == 1
    assert got[("director_ipvs_backend_weight", backend)] == 3
    mark = labels(local_address="", local_port="0", proto="", local_mark="80")
    assert got[("director_ipvs_service_incoming_bytes_total", mark)] == 7
    v6 = labels(local_address="2001:db8::10", local_port="53", proto="UDP", local_mark="")
    assert got[("director_ipvs_service_outgoing_bytes_total", v6)] == 120
    assert got[("director_ipvs_stats_timestamp_seconds", frozenset())] == 1234.5


def test_health_vrrp_role_reconcile_and_reload() -> None:
    checks = [
        {
            "service": str(WEB),
            "destination": str(R1),
            "type": "http",
            "up": False,
            "transitions": 3,
        }
    ]
    vrrp = [
        {
            "name": "VI_1",
            "state": "backup",
            "priority": 100,
            "transitions": 2,
            "adverts_received": 42,
            "adverts_dropped": {"auth": 3, "ttl": 1},
            "answers_suppressed": 7,
            "vips_restored": 1,
        }
    ]
    metrics = Metrics(
        Sources(
            checks=lambda: checks,
            vrrp=lambda: vrrp,
            role=lambda: "backup",
            drains=lambda: 2,
        )
    )
    metrics.health_changed([(str(WEB), str(R1))], at=99.0)
    metrics.probed("http", "198.18.1.11:80", ok=False, latency=0.02)
    metrics.probed("http", "198.18.1.11:80", ok=True, latency=0.003)
    metrics.synced("health", SyncResult(ops=[], failures=[], full=False, seconds=0.01))
    metrics.synced("resync", None)
    metrics.reloaded(False)
    got = samples(metrics.render().decode())
    check = labels(service=str(WEB), destination=str(R1), type="http")
    assert got[("director_check_up", check)] == 0
    assert got[("director_check_last_change_timestamp_seconds", check)] == 99.0
    assert got[("director_check_transitions_total", check)] == 3
    target = labels(type="http", target="198.18.1.11:80")
    assert got[("director_check_probe_latency_seconds_count", target)] == 2
    assert got[("director_check_probe_latency_seconds_bucket", target | {("le", "0.005")})] == 1
    assert got[("director_check_probes_total", target | {("result", "failed")})] == 1
    assert got[("director_check_probes_total", target | {("result", "ok")})] == 1
    assert got[("director_vrrp_state", labels(instance="VI_1", state="backup"))] == 1
    assert got[("director_vrrp_state", labels(instance="VI_1", state="master"))] == 0
    assert got[("director_vrrp_adverts_dropped_total", labels(instance="VI_1", reason="auth"))] == 3
    assert got[("director_vrrp_adverts_received_total", labels(instance="VI_1"))] == 42
    assert got[("director_vrrp_answers_suppressed_total", labels(instance="VI_1"))] == 7
    assert got[("director_vrrp_vips_restored_total", labels(instance="VI_1"))] == 1
    assert got[("director_role", labels(role="backup"))] == 1
    assert got[("director_maintenance_drains", frozenset())] == 2
    assert got[("director_reconcile_duration_seconds_count", labels(reason="health"))] == 1
    assert got[("director_reconcile_errors_total", labels(reason="resync"))] == 1
    assert got[("director_config_reloads_total", labels(result="failure"))] == 1
    assert got[("director_config_last_reload_successful", frozenset())] == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.asyncio
async def test_http_scrape_does_not_wait_for_a_busy_kernel() -> None:
    kernel_busy = asyncio.Event()

    def blocked_kernel_read() -> None:  # what a slow netlink dump looks like to the loop
        while not kernel_busy.is_set():
            pass

    snap = snapshot()
    metrics = Metrics(Sources(stats=lambda: snap))
    server = MetricsServer(metrics, f"127.0.0.1:{free_port()}")
    await server.start()
    worker = asyncio.get_running_loop().run_in_executor(None, blocked_kernel_read)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/metrics"
            async with asyncio.timeout(5), http.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
    finally:
        kernel_busy.set()
        await worker
        await server.stop()
    assert ("director_ipvs_backend_weight" in text) and ("198.18.1.11" in text)


@pytest.mark.asyncio
async def test_a_large_scrape_leaves_the_loop_running() -> None:
    """A 20,000-destination reading takes ~0.1-0.3 s to render even with the fast exposition
    text: the rendering runs in a thread, so the loop (VRRP adverts, probes) keeps its timers."""
    snap = fake_large_snapshot(200, 100)
    metrics = Metrics(Sources(stats=lambda: snap))
    server = MetricsServer(metrics, f"127.0.0.1:{free_port()}")
    await server.start()
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        async with aiohttp.ClientSession() as http:
            started = loop.time()
            async with http.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
                text = await resp.text()
            took = loop.time() - started
    finally:
        tick.cancel()
        await server.stop()
    assert text.count("director_ipvs_backend_weight{") == 20000
    assert resp.headers.get("Transfer-Encoding") == "chunked"  # sent as it was rendered
    assert text.encode() == metrics.render()
    assert gc.isenabled()  # paused while it was rendered, not after
    # Rendered on the loop, the scrape would be one long gap. In a thread the loop keeps
    # ticking; how finely depends on the machine's load (GIL hand-overs), so the bounds are
    # relative: several ticks, none longer than half the scrape (bench/metrics has figures).
    assert len(gaps) >= 5, (took, gaps)
    assert max(gaps) < took / 2, f"loop stalled {max(gaps):.3f} s during a {took:.3f} s scrape"


def test_a_scrape_is_rendered_a_chunk_at_a_time() -> None:
    """The exposition is made and encoded a chunk at a time: what is alive at once is a small
    part of the body (as one list, string and bytes it was three times the body)."""
    snap = fake_large_snapshot(200, 100)
    metrics = Metrics(Sources(stats=lambda: snap))
    body = metrics.render()
    tracemalloc.start()
    try:
        sizes = [len(chunk) for chunk in metrics.chunks()]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sizes) == len(body) and len(sizes) > 10
    assert peak < len(body) / 2, f"peak {peak / 1e6:.1f} MB for {len(body) / 1e6:.1f} MB"


@pytest.mark.asyncio
async def test_a_client_gone_mid_scrape_ends_the_rendering() -> None:
    """A scraper that disconnects after the first bytes: the rendering stops, the collector
    runs again and the next scrape is whole."""
    snap = fake_large_snapshot(200, 100)
    metrics = Metrics(Sources(stats=lambda: snap))
    server = MetricsServer(metrics, f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert b"200 OK" in await reader.read(1000)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()  # a reset, with most of the body unsent
        for _ in range(1000):  # the chunk being made is finished, then the collector runs
            if gc.isenabled():
                break
            await asyncio.sleep(0.01)
        assert gc.isenabled()
        url = f"http://127.0.0.1:{server.port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            body = await resp.read()
    finally:
        await server.stop()
    assert body == metrics.render()


def fake_large_snapshot(services: int, dests: int) -> StatsSnapshot:
    snap = StatsSnapshot(at=1.0)
    for i in range(services):
        key = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 1000 + i)
        snap.services[key] = (Service(key), Counters(1, 2, 3, 4, 5))
        readings = snap.dests[key] = {}
        for j in range(dests):
            dkey = DestKey.of(
                ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.19.0.0")) + j), 80
            )
            readings[dkey] = DestStats(Dest(dkey), 1, 2, 0, Counters(1, 2, 3, 4, 5))
    return snap


def test_metrics_address_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    for good in ('""', '"127.0.0.1:9469"', '"[::1]:9100"'):
        path.write_text(f"[daemon]\nmetrics_address = {good}\n")
        load_config(path)
    path.write_text('[daemon]\nmetrics_address = "localhost:9469"\nstats_interval = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert 'daemon.metrics_address (line 2): expected "ADDRESS:PORT"' in text
    assert 'found "localhost:9469"' in text
    assert "daemon.stats_interval" in text


def test_series_of_a_removed_target_are_removed_on_retain() -> None:
    metrics = Metrics()
    for target in ("198.18.1.11:80", "198.18.1.12:80"):
        metrics.probed("http", target, ok=True, latency=0.003)
        metrics.probed("http", target, ok=False, latency=0.2)
    metrics.probed("tcp", "198.18.1.12:25", ok=True, latency=0.001)
    before = samples(metrics.render().decode())
    gone = labels(type="http", target="198.18.1.11:80")
    assert before[("director_check_probe_latency_seconds_count", gone)] == 2
    metrics.retain_probe_targets(
        {("http", "198.18.1.12:80"), ("tcp", "198.18.1.12:25")},
        checks={("tcp/198.18.0.10:80", "198.18.1.12:80")},
    )
    metrics.probed("http", "198.18.1.11:80", ok=True, latency=0.003)  # late, from before
    after = samples(metrics.render().decode())
    assert not [k for k in after if ("target", "198.18.1.11:80") in k[1]]
    kept = labels(type="http", target="198.18.1.12:80")
    assert after[("director_check_probe_latency_seconds_count", kept)] == 2
    assert after[("director_check_probes_total", kept | {("result", "failed")})] == 1
    tcp = labels(type="tcp", target="198.18.1.12:25")
    assert after[("director_check_probes_total", tcp | {("result", "ok")})] == 1
    # a target added by the next reload is counted from its first probe
    metrics.retain_probe_targets({("http", "198.18.1.12:80"), ("http", "198.18.1.13:80")})
    metrics.probed("http", "198.18.1.13:80", ok=True, latency=0.003)
    new = labels(type="http", target="198.18.1.13:80")
    got = samples(metrics.render().decode())
    assert got[("director_check_probe_latency_seconds_count", new)] == 1


def test_retain_forgets_the_last_change_of_removed_checks() -> None:
    metrics = Metrics()
    metrics.health_changed([("a", "1"), ("b", "2")], at=5.0)
    metrics.retain_probe_targets(set(), checks={("b", "2")})
    assert metrics.sources.health_changed_at == {("b", "2"): 5.0}


def test_local_failures_are_the_directors_not_the_targets() -> None:
    metrics = Metrics()
    metrics.probed("http", "198.18.1.11:80", ok=False, latency=0.0, local="EMFILE")
    metrics.probed("tcp", "198.18.1.12:25", ok=False, latency=0.0, local="EMFILE")
    metrics.probed("tcp", "198.18.1.12:25", ok=False, latency=0.0, local="EADDRNOTAVAIL")
    got = samples(metrics.render().decode())
    assert got[("director_check_local_failures_total", labels(reason="EMFILE"))] == 2
    assert got[("director_check_local_failures_total", labels(reason="EADDRNOTAVAIL"))] == 1
    assert not [k for k in got if k[0].startswith("director_check_probe")]
