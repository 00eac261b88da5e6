"""The whole daemon with a large table: SERVICES x DESTS on the in-memory IPVS kernel.

    .venv/bin/python -m bench.scale [--services 10000] [--dests 10] [--interval 10]

In a network namespace: DESTS real servers (198.19.0.x, a TCP listener on port 80 each), shared
by every virtual service as in bench/reconcile.py, TCP checks on every real server every
``--interval`` s (SERVICES x DESTS checks), ``tests.helpers.director_proc`` as the daemon. Once
the table is programmed and every server is up it measures, ``--rounds`` times each:
``directorctl status`` (time, bytes), a ``/metrics`` scrape (time, bytes), and the loop's stall
during each (a one-line HTTP request to the metrics port sent 20 ms after the big one: its answer
time is how long the loop was busy); then RSS and CPU over ``--rest`` s. Prints figures. Before
the rounds, the same one-line request alone (``IDLE_SAMPLES`` times): the loop's latency with
its own work only (the probes), to tell a stall caused by a status or a scrape from it.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from director.control.client import request
from director.control.protocol import ControlError
from tests.helpers import director_proc
from tests.helpers.netns import Topology
from tests.helpers.servers import enter_namespace

METRICS_PORT = 9471
IDLE_SAMPLES = 60  # one-line requests alone, 0.25 s apart (three readings), before the rounds
LISTENER = """
import socket, selectors, sys
sel = selectors.DefaultSelector()
for host in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 80)); s.listen(4096); s.setblocking(False); sel.register(s, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        try:
            c, _ = key.fileobj.accept(); c.close()
        except OSError:
            pass
"""


def render(services: int, dests: int, interval: float, state: Path, sock: Path) -> str:
    out = [
        f"""[daemon]
state_dir = "{state}"
control_socket = "{sock}"
metrics_address = "127.0.0.1:{METRICS_PORT}"
log_format = "json"
max_concurrent_probes = 512
"""
    ]
    servers = "".join(
        f'  [[virtual_server.real_server]]\n  address = "198.19.0.{j}"\n  port = 80\n'
        for j in range(dests)
    )
    for i in range(services):
        out.append(
            f"""
[[virtual_server]]
name = "svc{i:05}"
protocol = "tcp"
address = "198.18.0.{i // 500}"
port = {1000 + i % 500}
scheduler = "wlc"
  [virtual_server.check]
  type = "tcp"
  interval = {interval:g}
  timeout = 3
{servers}"""
        )
    return "".join(out)


def http_get(path: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", METRICS_PORT, timeout=120)
    try:
        conn.request("GET", path)
        body = conn.getresponse().read()
    finally:
        conn.close()
    return time.perf_counter() - t0, len(body)


def proc_figures(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds user+system) of ``pid``."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / 100  # utime, stime (ticks of 1/100 s)


def children_private_mb(pid: int) -> float:
    """The private memory (copied-on-write or new) of ``pid``'s children, in MB: a rendering
    child's own cost (its resident size counts the pages it shares with the daemon)."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    for child in children:
        try:
            text = Path(f"/proc/{child}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def memory_kernel_mb(path: Path) -> float | None:
    """The in-memory kernel's share of the traced memory, from ``bench.scale_profile``'s
    by-subsystem table (None when there is none)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if "in-memory IPVS kernel" in line:
            return float(line.split()[0])
    return None


def daemon_pid(launcher: int) -> int:
    """The python process under prlimit/env/ip netns exec (the deepest child)."""
    pid = launcher
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            return pid
        pid = int(children[0])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--dests", type=int, default=10)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rest", type=float, default=30.0)
    p.add_argument("--ready-within", type=float, default=900.0)
    p.add_argument(
        "--profile",
        choices=("mem", "cpu", "gc"),
        help="run the daemon under bench.scale_profile: tracemalloc (mem) or cProfile of the "
        "loop thread (cpu) or the collector's pauses (gc), written to /tmp/dt-scale-profile.*",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dt-scale-") as tmp, Topology() as topo:
        ns = topo.namespace("d")
        hosts = [f"198.19.0.{j}" for j in range(args.dests)]
        for host in hosts:
            ns.add_address("lo", f"{host}/32")
        listener = ns.spawn(sys.executable, "-c", LISTENER, *hosts)
        for _ in range(100):
            if "listening" in listener.output():
                break
            time.sleep(0.1)
        state, sock, config = Path(tmp) / "state", Path(tmp) / "control.sock", Path(tmp) / "d.toml"
        state.mkdir()
        config.write_text(render(args.services, args.dests, args.interval, state, sock))
        started = time.monotonic()
        module = "bench.scale_profile" if args.profile else director_proc.__name__
        director = ns.spawn(
            "env", f"DT_PROFILE={args.profile or ''}", "DT_PROFILE_OUT=/tmp/dt-scale-profile",
            *director_proc.argv(config, state, nofile=16384, module=module),
        )  # fmt: skip
        pid = daemon_pid(director.proc.pid)
        total: int = args.services * args.dests
        pool = ThreadPoolExecutor(2, initializer=enter_namespace, initargs=(ns.name,))

        def status() -> dict[str, Any]:
            return request(sock, "status", wait=300)  # type: ignore[no-any-return]

        def all_up() -> bool:
            try:
                view = pool.submit(status).result()
            except ControlError:
                return False
            servers = [s for svc in view["services"] for s in svc["servers"]]
            up = sum(1 for s in servers if (s.get("health") or {}).get("up"))
            return len(servers) == total and up == total

        while not all_up():
            if director.proc.poll() is not None or listener.proc.poll() is not None:
                print(director.output()[-3000:], listener.output()[-3000:], file=sys.stderr)
                return 1
            if time.monotonic() - started > args.ready_within:
                print(f"not ready within {args.ready_within:g} s", file=sys.stderr)
                return 1
            time.sleep(2)
        ready = time.monotonic() - started
        if args.profile == "gc":
            os.kill(pid, signal.SIGUSR2)  # the collector's pauses and stalls from now on

        child_mb = [0.0]

        def stalled(big: Any) -> tuple[float, int, float]:
            """Run ``big`` and, 20 ms in, a one-line request; (big's time, size, stall)."""
            box: dict[str, tuple[float, int]] = {}

            def run() -> None:
                try:
                    box["big"] = big()
                except (ControlError, OSError) as exc:  # reported; the figures after it go on
                    print(f"failed: {exc}"[:300], file=sys.stderr)
                    box["big"] = (float("nan"), 0)

            thread = threading.Thread(target=lambda: pool.submit(run).result())
            thread.start()
            time.sleep(0.02)
            stall, _ = pool.submit(http_get, "/nothing").result()
            while thread.is_alive():
                child_mb[0] = max(child_mb[0], children_private_mb(pid))
                thread.join(0.05)
            return box["big"][0], box["big"][1], stall

        def timed_status() -> tuple[float, int]:
            t0 = time.perf_counter()
            body = request(sock, "status", wait=300)
            import json

            return time.perf_counter() - t0, len(json.dumps(body))

        if args.profile in ("mem", "gc"):  # the heap once every server is up, before any status
            Path("/tmp/dt-scale-profile.heap").unlink(missing_ok=True)
            os.kill(pid, signal.SIGRTMIN)
            time.sleep(1)
        idle = []  # the one-line request alone: the loop's own latency at rest, for comparison
        for _ in range(IDLE_SAMPLES):
            idle.append(pool.submit(http_get, "/nothing").result()[0])
            time.sleep(0.25)
        st = [stalled(timed_status) for _ in range(args.rounds)]
        sc = [stalled(lambda: http_get("/metrics")) for _ in range(args.rounds)]
        rss0, cpu0 = proc_figures(pid)
        time.sleep(args.rest)
        rss, cpu1 = proc_figures(pid)
        if args.profile in ("mem", "gc"):
            os.kill(pid, signal.SIGUSR1)
            time.sleep(5)
        pool.shutdown()
        checks_per_s = total / args.interval
        print(
            f"table: {args.services} x {args.dests} = {total} real servers, TCP checks every "
            f"{args.interval:g} s ({checks_per_s:.0f}/s), in-memory IPVS"
        )
        print(f"start to every server up: {ready:.1f} s")
        for name, rows in (("directorctl status", st), ("metrics scrape", sc)):
            print(
                f"{name}: {statistics.median(r[0] for r in rows) * 1000:.0f} ms median "
                f"(all {'/'.join(f'{r[0] * 1000:.0f}' for r in rows)}), "
                f"{rows[0][1] / 1e6:.1f} MB; loop stalled "
                f"{'/'.join(f'{r[2] * 1000:.0f}' for r in rows)} ms"
            )
        idle.sort()
        print(
            f"one-line request alone (no status or scrape), {len(idle)} samples: median "
            f"{statistics.median(idle) * 1000:.0f} ms, 90th percentile "
            f"{idle[int(len(idle) * 0.9)] * 1000:.0f} ms, longest {idle[-1] * 1000:.0f} ms"
        )
        print(f"RSS: {rss:.0f} MB (before the rest {rss0:.0f} MB; goal < 300 MB)")
        if args.profile == "mem":
            kernel = memory_kernel_mb(Path("/tmp/dt-scale-profile.mem"))
            if kernel is not None:
                print(
                    f"RSS less the in-memory kernel's traced share: {rss - kernel:.0f} MB (the "
                    f"test double standing in for the kernel's IPVS table holds {kernel:.0f} MB "
                    "by tracemalloc; in production that table is in the kernel)"
                )
        heap = Path("/tmp/dt-scale-profile.heap")
        if args.profile in ("mem", "gc") and heap.exists():
            print("the heap once every server was up, then after the rest:")
            print(heap.read_text(), end="")
        print(f"a rendering child's private memory: {child_mb[0]:.0f} MB at most")
        print(
            f"CPU at rest: {(cpu1 - cpu0) / args.rest * 100:.1f} % of one CPU over {args.rest:g} s"
            f" ({(cpu1 - cpu0) / args.rest / checks_per_s * 1e6:.0f} us per check)"
        )
        director.stop(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
