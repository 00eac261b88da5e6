"""A large status or scrape does not stall the daemon's loop: ``directorctl status`` and
``GET /metrics`` on a running director (in-memory kernel, in a network namespace) with 10,000
real servers, while a task on the loop measures how long it waits for its next turn."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from director.control.client import request
from tests.helpers.director import running, world_in
from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop

pytestmark = pytest.mark.netns

SERVICES, SERVERS = 500, 20


def config(state: Path) -> str:
    servers = "".join(
        f'  [[virtual_server.real_server]]\n  address = "198.19.{j // 250}.{j % 250 + 1}"\n'
        for j in range(SERVERS)
    )
    return f'[daemon]\nstate_dir = "{state}"\n' + "".join(
        f'[[virtual_server]]\nname = "svc{i}"\nprotocol = "tcp"\n'
        f'address = "198.18.0.{i // 100 + 1}"\nport = {1000 + i % 100}\n{servers}'
        for i in range(SERVICES)
    )


async def longest_wait(work: Callable[[], object]) -> tuple[float, float, object]:
    """(work's time in a worker thread, the loop's longest wait for a 1 ms tick meanwhile,
    work's result)."""
    loop = asyncio.get_running_loop()
    longest = 0.0
    done = False

    async def tick() -> None:
        nonlocal longest
        last = loop.time()
        while not done:
            await asyncio.sleep(0.001)
            now = loop.time()
            longest = max(longest, now - last)
            last = now

    ticker = loop.create_task(tick())
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    try:
        result = await asyncio.to_thread(work)
    finally:
        done = True
        await ticker
    return time.perf_counter() - t0, longest, result


def test_status_and_scrape_leave_the_loop_serving(tmp_path: Path, topology: Topology) -> None:
    path = tmp_path / "director.toml"
    path.write_text(config(tmp_path / "state"))
    world = world_in(tmp_path, path)
    host, port = (world.metrics_address or "").split(":")

    def scrape() -> int:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("GET", "/metrics")
            return len(conn.getresponse().read())
        finally:
            conn.close()

    async def measure() -> None:
        async with running(world) as run:
            await run.director.engine.refresh_stats()
            sock = world.control_socket
            assert sock is not None
            took, longest, status = await longest_wait(lambda: request(sock, "status"))
            assert isinstance(status, dict)
            servers = [s for svc in status["services"] for s in svc["servers"]]
            assert len(servers) == SERVICES * SERVERS
            # the same document as the simple path builds on the loop
            expected = json.loads(json.dumps(run.director.status(), default=str))
            for volatile in ("generated_at", "generation", "process"):
                status.pop(volatile), expected.pop(volatile)
            assert status == expected
            assert longest < max(0.05, took / 4), (took, longest)
            took, longest, size = await longest_wait(scrape)
            assert isinstance(size, int) and size > SERVICES * SERVERS * 9 * 80
            assert longest < max(0.05, took / 4), (took, longest)

    with NamespaceLoop(topology.namespace("d")) as inside, structlog.testing.capture_logs():
        inside.run(measure(), timeout=120)
