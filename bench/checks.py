"""Health-check load benchmark: N HTTP real servers checked every second on one event loop.

    .venv/bin/python -m bench.checks [--servers 2000] [--seconds 60] [--cap 512]

A "farm" namespace holds N addresses (198.18.64.0/18) served by one small HTTP server process;
the checker runs the daemon's own scheduler, runner and HTTP probe (its fast path, as the
daemon runs it: :mod:`checks.probes.poller`) on an event loop inside a "checker" namespace.
Prints probes/s, the checker process's CPU time per probe and CPU %, the event-loop iterations
per probe, and the p50/p99/max lag between a probe's scheduled and actual start. Needs root
(namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import resource
import statistics
import sys
import time

from checks.model import Check, CheckParams, ProbeResult, StartProbe
from checks.probes import http
from checks.probes.poller import FastProbe
from checks.probes.result import Target
from checks.runner import Done, Runner
from checks.schedule import Scheduler
from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop

SERVER = """
import asyncio
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nok\\n"
async def handle(reader, writer):
    try:
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(RESPONSE)
        await writer.drain()
    except Exception:
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", 80, backlog=4096)
    print("listening", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


class LagRecorder(Scheduler[http.HttpPlan]):
    """The daemon's scheduler, recording each probe's start lag."""

    lags: list[float]

    def due(self, now: float, limit: int | None = None) -> list[StartProbe[http.HttpPlan]]:
        starts = super().due(now, limit)
        self.lags.extend(s.lag for s in starts)
        return starts


def addresses(n: int) -> list[str]:
    base = int(ipaddress.IPv4Address("198.18.64.1"))
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


class Iterations:
    """Counts the event loop's iterations (wraps its ``_run_once``: CPython's selector loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        run_once = loop._run_once  # type: ignore[attr-defined]

        def counted() -> None:
            self.count += 1
            run_once()

        loop._run_once = counted  # type: ignore[attr-defined]


async def run_checks(targets: list[str], seconds: float, cap: int) -> dict[str, float]:
    iterations = Iterations(asyncio.get_running_loop())
    prober = http.HttpProber()
    spec = http.HttpSpec(path="/", expect_status=((200, 200),))
    results: list[ProbeResult] = []

    async def probe(plan: http.HttpPlan) -> ProbeResult:  # the task path: not taken here
        return await prober.poller().run(plan)

    def start(
        plan: http.HttpPlan, done: Done[http.HttpPlan], start: StartProbe[http.HttpPlan]
    ) -> FastProbe:
        return prober.start(plan, counted, (done, start))

    def counted(
        context: tuple[Done[http.HttpPlan], StartProbe[http.HttpPlan]], result: ProbeResult
    ) -> None:
        results.append(result)
        context[0](context[1], result)

    scheduler = LagRecorder(random.Random(1), max_in_flight=cap)
    scheduler.lags = []
    runner = Runner(scheduler, probe, lambda changes: None, fast=start)
    params = CheckParams(interval=1.0, timeout=1.0, rise=1, fall=3)
    checks = []
    for a in targets:
        plan = http.HttpPlan.of(Target(ipaddress.IPv4Address(a), 80), spec, 1.0)
        assert plan is not None
        checks.append(Check(id=a, spec=plan, params=params))
    runner.start()
    runner.add(checks)
    await asyncio.sleep(2.0)  # first rounds are spread over the first interval
    results.clear()
    scheduler.lags.clear()
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    iterations0 = iterations.count
    await asyncio.sleep(seconds)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    loops = iterations.count - iterations0
    await runner.stop()
    await prober.close()
    user, system = cpu1.ru_utime - cpu0.ru_utime, cpu1.ru_stime - cpu0.ru_stime
    cpu = user + system
    lags = sorted(scheduler.lags) or [0.0]
    ok = sum(r.ok for r in results)
    return {
        "probes": len(results),
        "ok": ok,
        "wall": wall1 - wall0,
        "loops": loops,
        "cpu": cpu,
        "user": user,
        "sys": system,
        "p50": statistics.median(lags),
        "p99": lags[int(len(lags) * 0.99) - 1 if len(lags) > 1 else 0],
        "max": lags[-1],
        "latency_p50": statistics.median([r.latency for r in results]) if results else 0.0,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--servers", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--cap", type=int, default=512)
    args = p.parse_args()
    targets = addresses(args.servers)
    with Topology() as topo:
        checker, farm = topo.namespace("checker"), topo.namespace("farm")
        topo.veth(checker, "eth0", farm, "eth0", a_addr="198.18.0.1/16", b_addr="198.18.0.2/16")
        batch = "".join(f"address add {a}/32 dev eth0\n" for a in targets)
        farm.run("ip", "-batch", "-", stdin=batch)
        checker.ip("route", "add", "198.18.64.0/18", "via", "198.18.0.2")
        server = farm.spawn(sys.executable, "-c", SERVER)
        deadline = time.monotonic() + 30
        while "listening" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        with NamespaceLoop(checker) as inside:
            f = inside.run(run_checks(targets, args.seconds, args.cap), args.seconds + 120)
    rate = f["probes"] / f["wall"]
    print(f"servers: {args.servers}, interval 1 s, cap {args.cap}, measured {f['wall']:.1f} s")
    print(f"probes/s: {rate:.0f} (goal {args.servers}), ok {f['ok']:.0f} of {f['probes']:.0f}")
    print(f"checker CPU: {f['cpu']:.2f} s = {f['cpu'] / f['wall'] * 100:.0f} % of one core")
    per = 1e6 / max(f["probes"], 1)
    print(
        f"CPU per probe: {f['cpu'] * per:.0f} us"
        f" (user {f['user'] * per:.0f} + sys {f['sys'] * per:.0f})"
    )
    print(f"event-loop iterations per probe: {f['loops'] / max(f['probes'], 1):.2f}")
    print(
        f"start lag: p50 {f['p50'] * 1000:.2f} ms, p99 {f['p99'] * 1000:.2f} ms,"
        f" max {f['max'] * 1000:.2f} ms (goal p99 < 50 ms)"
    )
    print(f"probe latency p50: {f['latency_p50'] * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
