"""Status page benchmark: ``/`` and ``/status.json`` for 1,000 services x 10 real servers.

    .venv/bin/python -m bench.status_page [--services 1000] [--dests 10] [--seconds 15]
    .venv/bin/python -m bench.status_page --no-cache   # every request rendered afresh

A :class:`director.app.Director` on the in-memory IPVS table, in a network namespace (root),
with the config's services programmed and a check verdict for every real server (simulated:
``checks.summary()``'s dicts built afresh at each request, as the real one does). Prints:

- what the event loop pays per request (taking :class:`director.status.StatusInputs`), and what
  the worker thread pays (the model, the JSON, the HTML), with the sizes;
- the event loop's lag (a 10 ms timer's lateness, what the checks' timers see) and a 100 ms
  advert-like timer's jitter, for ``--seconds`` idle and ``--seconds`` while a client in the
  namespace fetches ``/`` and ``/status.json`` back to back;
- over the same two windows, the real VRRP adverts' jitter: the director also runs a
  ``[[vrrp_instance]]`` (version 3, ``advert_interval`` 0.1 s, alone on a veth to a peer
  namespace, so it is master), on the thread of its own the daemon gives it (``SCHED_FIFO``
  priority 10: the bench runs as root). The peer captures its adverts (``AF_PACKET``, kernel
  timestamps: ``tests.vrrp_io.capture``, as ``bench.failover``); printed: how far each captured
  interval is from 100 ms (median, p99, max, and how many intervals). The loop's timers only see
  the loop; what could delay an advert is the GIL, held by the worker thread that renders.

Benches are not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from director import http
from director.app import Director
from director.http import MetricsServer, status_html, status_json
from director.intents import Intents
from director.ipvs.memory import MemoryIPVS
from director.status import StatusInputs, build_status
from tests.helpers.director import free_port, world_in
from tests.helpers.netns import Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io.capture import Capture, interval_deviations
from tests.vrrp_io.lab import has_address, wait_until

# The VRRP instance: the director's d0 and the peer's eth0 on a veth, clear of the services'
# addresses (198.18.0-39.x for up to 10,000 services, real servers 198.19.0.x)
OWN, PEER, VIP, DEV = "198.18.255.1", "198.18.255.2", "198.18.255.100", "d0"
ADVERT = 0.1  # s, the advert interval

CLIENT = """
import http.client, json, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
took = {"/": [], "/status.json": []}
size = {}
end = time.monotonic() + seconds
while time.monotonic() < end:
    for path in took:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.monotonic()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        took[path].append(time.monotonic() - start)
        size[path] = len(body)
        c.close()
print(json.dumps({"took": took, "size": size}))
"""


def config_text(state: Path, services: int, dests: int) -> str:
    out = [f'[daemon]\nstate_dir = "{state}"\nmax_concurrent_probes = 64\n']
    for i in range(services):
        out.append(
            f'[[virtual_server]]\nname = "svc-{i}"\nprotocol = "tcp"\n'
            f'address = "198.18.{i // 250}.{i % 250 + 1}"\nport = {1000 + i}\n'
            '  [virtual_server.check]\n  type = "none"\n'
        )
        for j in range(dests):
            out.append(
                f'  [[virtual_server.real_server]]\n  name = "web-{j}"\n'
                f'  address = "198.19.0.{j + 1}"\n  port = 80\n  weight = {j % 5 + 1}\n'
            )
    out.append(
        f'[[vrrp_instance]]\nname = "VI_1"\ninterface = "{DEV}"\nvrid = 51\npriority = 200\n'
        f'version = 3\nadvert_interval = {ADVERT}\nvirtual_addresses = ["{VIP}/32"]\n'
        "garp_count = 1\ngarp_repeat_after = 0\n"
    )
    return "".join(out)


def fake_checks(pairs: list[tuple[str, str]]) -> list[dict[str, object]]:
    """What ``HealthChecks.summary()`` returns for these targets: fresh dicts, every tenth down."""
    return [
        {
            "service": s, "destination": d, "type": "http", "target": d, "up": n % 10 != 3,
            "phase": "idle", "transitions": 1, "last_ok": n % 10 != 3,
            "last_latency_ms": 1.25,
            "last_error": None if n % 10 != 3 else "HTTP 503 Service Unavailable from <server>",
        }
        for n, (s, d) in enumerate(pairs)
    ]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def lag_while(seconds: float) -> dict[str, list[float]]:
    """A 10 ms and a 100 ms timer on the loop for ``seconds``: how late each fired."""
    loop = asyncio.get_running_loop()
    lags: dict[str, list[float]] = {"10ms": [], "100ms": []}

    async def tick(name: str, period: float) -> None:
        due = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            lags[name].append(loop.time() - due)
            due += period

    tasks = [asyncio.create_task(tick("10ms", 0.01)), asyncio.create_task(tick("100ms", 0.1))]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    return lags


def window(
    inside: NamespaceLoop, capture: Capture, seconds: float
) -> tuple[dict[str, list[float]], list[float]]:
    """The loop's timers' lateness (``lag_while``) and the captured adverts' deviation from
    ``ADVERT`` (s), over the same ``seconds``."""
    capture.clear()
    lags = inside.run(lag_while(seconds), timeout=seconds + 60)
    return lags, interval_deviations(capture.advert_times(OWN), ADVERT)


def median_ms(fn: Any, runs: int) -> float:
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        took.append(time.perf_counter() - start)
    return statistics.median(took) * 1000


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--dests", type=int, default=10)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--no-cache", action="store_true", help="render every request afresh (the worst case)"
    )
    args = p.parse_args()
    if args.no_cache:
        http.STATUS_MAX_AGE = 0.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-status-"))
    path = tmp / "director.toml"
    path.write_text(config_text(tmp / "state", args.services, args.dests))
    world = world_in(tmp, path, kernel=MemoryIPVS(), metrics=False)
    with Topology() as topo:
        ns, peer = topo.namespace("d"), topo.namespace("peer")
        topo.veth(ns, DEV, peer, "eth0", a_addr=f"{OWN}/24", b_addr=f"{PEER}/24")
        with (
            NamespaceLoop(ns) as inside,
            NamespaceLoop(peer) as watcher,
            contextlib.closing(Capture(watcher)) as capture,
        ):

            async def up() -> Director:
                director = Director(world.loader(path), world, Intents())
                await director.start()
                return director

            director = inside.run(up(), timeout=300)
            wait_until(lambda: has_address(ns, ip_address(VIP), DEV), 10, "VRRP master")
            pairs = [
                (str(svc.service_key()), str(rs.dest_key(svc)))
                for svc in director.config.virtual_servers
                for rs in svc.real_servers
            ]

            def source() -> StatusInputs:
                return dataclasses.replace(director.status_inputs(), checks=fake_checks(pairs))

            async def on_loop() -> float:
                return median_ms(source, args.runs)

            loop_ms = inside.run(on_loop())

            async def take() -> StatusInputs:
                return source()

            inputs = inside.run(take())
            model_ms = median_ms(lambda: build_status(inputs), args.runs)
            json_ms = median_ms(lambda: status_json(inputs), args.runs)
            html_ms = median_ms(lambda: status_html(inputs), args.runs)
            json_size, html_size = len(status_json(inputs)), len(status_html(inputs))
            model: Any = build_status(inputs)
            servers = sum(len(s["servers"]) for s in model["services"])
            port = free_port()
            server = MetricsServer(director.metrics, f"127.0.0.1:{port}", status=source)
            inside.run(server.start())
            idle, idle_adverts = window(inside, capture, args.seconds)
            client = ns.spawn(sys.executable, "-c", CLIENT, str(port), str(args.seconds))
            busy, busy_adverts = window(inside, capture, args.seconds)
            deadline = time.monotonic() + 120
            while client.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            fetched = json.loads(client.output().strip().splitlines()[-1])
            inside.run(server.stop())
            inside.run(director.stop(), timeout=120)
    print(f"status page: {args.services} services x {args.dests} real servers = {servers} rows")
    print(
        f"on the loop per request (taking the inputs): median {loop_ms:.1f} ms; in the worker "
        f"thread: model {model_ms:.0f} ms, /status.json {json_ms:.0f} ms "
        f"({json_size / 1e6:.2f} MB), / {html_ms:.0f} ms ({html_size / 1e6:.2f} MB)"
    )
    for path_, took in fetched["took"].items():
        print(
            f"served {path_}: {len(took)} requests, median {statistics.median(took) * 1000:.0f} "
            f"ms, p99 {pct(took, 0.99) * 1000:.0f} ms, {fetched['size'][path_] / 1e6:.2f} MB"
        )
    for name, lags in (("idle", idle), ("fetching", busy)):
        t10, t100 = lags["10ms"], lags["100ms"]
        print(
            f"loop lag {name:8}: 10 ms timer p50 {pct(t10, 0.5) * 1000:.2f} / p99 "
            f"{pct(t10, 0.99) * 1000:.2f} / max {max(t10) * 1000:.2f} ms; 100 ms advert-like "
            f"timer jitter p99 {pct(t100, 0.99) * 1000:.2f} / max {max(t100) * 1000:.2f} ms"
        )
    for name, dev in (("idle", idle_adverts), ("fetching", busy_adverts)):
        if not dev:
            print(f"VRRP adverts {name:8}: none captured")
            continue
        print(
            f"VRRP adverts {name:8}: {len(dev)} intervals of {ADVERT * 1000:g} ms, deviation "
            f"median {statistics.median(dev) * 1000:.2f} / p99 {pct(dev, 0.99) * 1000:.2f} / "
            f"max {max(dev) * 1000:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
