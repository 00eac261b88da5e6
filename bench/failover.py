"""VRRP failover benchmark: two of our directors, then two keepalived 2.2.7, in one run.

    .venv/bin/python -m bench.failover [--trials 5] [--jitter-seconds 30] [--checks 2000]
        [--hog] [--variants loop,thread,thread-rt] [--modes v2,v3] [--jitter-modes v3]
        [--failover-variant thread-rt]

Topology (network namespaces, 198.18.0.0/24 on a bridge with multicast snooping off): d1
(198.18.0.1, priority 200) and d2 (198.18.0.2, priority 100) each run a director - our VRRP
adapter in its own process (``bench.failover_peer``) or keepalived - and a TCP responder that
answers with its name; a client namespace captures every frame (AF_PACKET, kernel timestamps)
and connects to the VIP 198.18.0.100 every 2 ms. Each trial starts both directors, waits for
d1 to be master, then kills it (SIGKILL) or stops it cleanly (SIGTERM: priority 0). Times are
from the old master's last advert as captured to the new master's first advert, its first
gratuitous ARP and the first TCP connect answered by d2; min/median/max over the trials.

Jitter: the master's adverts captured for a while (v3 100 ms and v2 1 s): keepalived's, ours
alone, ours with N HTTP health checks per second on the same event loop (a farm namespace of N
addresses behind d1, as ``bench.checks``), and ours with the checks on the main loop and VRRP
on a loop of its own (``vrrp.thread.InstanceThread``, GIL switch interval 1 ms; ``thread-rt``:
that thread under SCHED_FIFO priority 10, as keepalived's ``vrrp_rt_priority``): p50/p99/max
deviation of the captured interval from the configured one. ``--hog`` runs one busy process per
CPU during the jitter measurements (keepalived's included), in this process's own process
group, killed when they end, on failure too (and by the kernel if this process dies:
PR_SET_PDEATHSIG). The machine's load average is printed with the tables: on a shared machine
it moves every column. Needs root. Prints tables; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.checks import SERVER, addresses
from tests.helpers.netns import Background, Namespace, Topology
from tests.helpers.servers import NamespaceLoop
from tests.vrrp_io import keepalived
from tests.vrrp_io.capture import Capture, interval_deviations
from tests.vrrp_io.lab import VIP, ask, has_address, lan, mac_of, responder

D1, D2 = "198.18.0.1", "198.18.0.2"
MODES = [(2, 1.0), (3, 0.1)]
POLL = 0.002  # s between the client's connection attempts to the VIP (the TCP column's grain)
# Busy for ever, and killed by the kernel when its parent (this bench) dies: PR_SET_PDEATHSIG
# (prctl option 1) with SIGKILL, then a check that the parent did not die before that.
HOG = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None).prctl(1, 9)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(0)\n"
    "while True: pass\n"
)
VARIANTS = {  # ours with the checks: failover_peer arguments
    "loop": [],
    "thread": ["--vrrp-thread", "--switch-interval", "0.001"],
    "thread-rt": ["--vrrp-thread", "--switch-interval", "0.001", "--vrrp-rt", "10"],
}


@contextlib.contextmanager
def hogs(count: int) -> Iterator[None]:
    """``count`` busy processes in this process group, ended when the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            argv = [sys.executable, "-c", HOG, str(os.getpid())]
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(10)


@dataclass
class Trial:
    advert: float  # old master's last advert -> new master's first advert
    garp: float  # -> new master's first gratuitous ARP
    tcp: float  # -> first TCP connect answered by the new master
    garp_after_advert: float
    vip_left: bool  # the old master's VIP still on its interface afterwards


def wait(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {within}s: {what}")
        time.sleep(0.01)


class Director:
    """One side: ours (bench.failover_peer) or keepalived, started and ended per trial."""

    def __init__(self, impl: str, ns: Namespace, host: int, directory: Path) -> None:
        self.impl, self.ns, self.host, self.directory = impl, ns, host, directory
        self.job: Background | None = None

    def start(
        self, priority: int, version: int, interval: float, checks: int = 0, variant: str = "loop"
    ) -> None:
        if self.impl == "ours":
            argv = [sys.executable, "-m", "bench.failover_peer", "--host", str(self.host)]
            argv += ["--priority", str(priority), "--version", str(version)]
            argv += ["--interval", f"{interval:g}", "--checks", str(checks)]
            argv += VARIANTS[variant]
            self.job = self.ns.spawn(*argv)
        else:
            text = keepalived.config(
                version=version,
                vrid=51,
                priority=priority,
                interval=interval,
                vip=VIP,
                password="bench" if version == 2 else None,
                garp_repeat=5,
                garp_delay=5,
            )
            for stale in self.directory.glob("*.pid"):  # a killed keepalived leaves them
                stale.unlink()
            self.job = keepalived.start(self.ns, self.directory, text)

    def output(self) -> str:
        return self.job.output() if self.job is not None else ""

    def is_backup(self) -> bool:
        marker = "state backup" if self.impl == "ours" else "Entering BACKUP STATE"
        return marker in self.output()

    def signal(self, sig: int) -> None:
        if self.job is not None and self.job.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.job.proc.pid, sig)

    def end(self) -> None:
        if self.job is not None:
            self.signal(signal.SIGTERM)
            try:
                self.job.proc.wait(10)
            except Exception:
                self.signal(signal.SIGKILL)
                self.job.proc.wait(5)
            self.job = None
        with contextlib.suppress(Exception):
            self.ns.ip("address", "del", f"{VIP}/32", "dev", "eth0")


async def first_answer(name: str, until: float, every: float) -> float | None:
    """Connect to the VIP every ``every`` s; the wall time of the first answer from ``name``."""
    found: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    tasks: set[asyncio.Task[None]] = set()

    async def attempt() -> None:
        if await ask(VIP, within=1.0) == name and not found.done():
            found.set_result(time.time())

    try:
        while not found.done() and time.time() < until:
            task = asyncio.create_task(attempt())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(every)
        return found.result() if found.done() else None
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def trial(
    pair: tuple[Director, Director],
    client: NamespaceLoop,
    capture: Capture,
    version: int,
    interval: float,
    sig: int,
    variant: str,
) -> Trial:
    master, backup = pair
    d1, d2 = master.ns, backup.ns
    capture.clear()
    master.start(200, version, interval, variant=variant)
    backup.start(100, version, interval, variant=variant)
    try:
        wait(lambda: has_address(d1, VIP), 4 * interval + 10, f"d1 master\n{master.output()}")
        wait(backup.is_backup, 5, f"d2 backup\n{backup.output()}")
        time.sleep(2 * interval)
        wait(lambda: client.run(ask(VIP)) == "d1", 5, "client reaches d1")
        future = asyncio.run_coroutine_threadsafe(
            first_answer("d2", time.time() + 4 * interval + 10, POLL), client.loop
        )
        time.sleep(0.2)  # the prober is running
        killed_at = time.time()
        master.signal(sig)
        wait(lambda: has_address(d2, VIP), 4 * interval + 5, f"d2 master\n{backup.output()}")
        answered = future.result(4 * interval + 15)
        time.sleep(0.2)
        events_old = [v for v in capture.adverts() if str(v.src) == D1 and v.advert is not None]
        events_new = [
            v
            for v in capture.adverts()
            if str(v.src) == D2 and v.advert is not None and v.advert.priority > 0
            if v.at > killed_at
        ]
        mac2 = mac_of(d2)
        garps = [a for a in capture.arps() if a.gratuitous and a.source_mac == mac2]
        if not (events_old and events_new and garps and answered):
            found = (len(events_old), len(events_new), len(garps), answered)
            raise RuntimeError(f"trial incomplete: (old, new adverts, GARPs, TCP) = {found}")
        first_new = events_new[0].at
        last_old = max(v.at for v in events_old if v.at < first_new)
        garp = next(a.at for a in garps if a.at >= first_new - 0.001)
        vip_left = has_address(d1, VIP)
        return Trial(
            first_new - last_old, garp - last_old, answered - last_old, garp - first_new, vip_left
        )
    finally:
        master.end()
        backup.end()


def jitter(
    director: Director,
    capture: Capture,
    version: int,
    interval: float,
    seconds: float,
    checks: int,
    variant: str,
) -> tuple[list[float], str]:
    """Deviations (s) of the captured intervals between the master's adverts from ``interval``."""
    director.start(200, version, interval, checks, variant)
    try:
        wait(lambda: has_address(director.ns, VIP), 4 * interval + 5, director.output())
        time.sleep(3.0)  # checks spread over their first interval
        capture.clear()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            capture.take()
            time.sleep(0.1)
        return interval_deviations(capture.advert_times(D1), interval), director.output()
    finally:
        director.end()


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"{min(values) * 1e3:9.2f} {statistics.median(values) * 1e3:9.2f} {max(values) * 1e3:9.2f}"
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--jitter-seconds", type=float, default=30.0)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--only", choices=("ours", "keepalived"))
    parser.add_argument("--no-failover", action="store_true", help="jitter only")
    parser.add_argument("--no-jitter", action="store_true", help="failover only")
    parser.add_argument("--modes", default="v2,v3", help="v2 (1 s adverts), v3 (100 ms)")
    parser.add_argument("--jitter-modes", help="modes of the jitter table (default: --modes)")
    parser.add_argument(
        "--failover-variant",
        default="thread-rt",
        choices=list(VARIANTS),
        help="how ours runs VRRP in the failover trials (the daemon's default: thread-rt)",
    )
    parser.add_argument("--hog", action="store_true", help="a busy process per CPU (jitter)")
    parser.add_argument(
        "--variants", default="loop,thread", help=f"ours with checks: {','.join(VARIANTS)}"
    )
    args = parser.parse_args()
    variants_asked = args.variants.split(",")
    if not set(variants_asked) <= set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the hogs and namespaces
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    hog_count = (os.cpu_count() or 1) if args.hog else 0
    if os.geteuid() != 0:
        print("bench.failover needs root (network namespaces)", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, str, list[Trial]]] = []
    jitters: list[tuple[str, str, int, list[float]]] = []
    loads: list[float] = []
    impls = [args.only] if args.only else ["ours", "keepalived"]
    modes = [(v, i) for v, i in MODES if f"v{v}" in args.modes.split(",")]
    jitter_modes = [
        (v, i) for v, i in MODES if f"v{v}" in (args.jitter_modes or args.modes).split(",")
    ]
    with Topology() as topo, tempfile.TemporaryDirectory(prefix="dt-failover-") as tmp:
        d1, d2, obs = lan(topo, "d1", "d2", "obs")
        farm = topo.namespace("farm")
        topo.veth(d1, "eth1", farm, "eth0", a_addr="198.18.128.1/24", b_addr="198.18.128.2/24")
        farm_addresses = addresses(args.checks) if args.checks else []
        if farm_addresses:
            batch = "".join(f"address add {a}/32 dev eth0\n" for a in farm_addresses)
            farm.run("ip", "-batch", "-", stdin=batch)
            d1.ip("route", "add", "198.18.64.0/18", "via", "198.18.128.2")
            server = farm.spawn(sys.executable, "-c", SERVER)
            wait(lambda: "listening" in server.output(), 30, "farm HTTP server")
        responder(d1, "d1")
        responder(d2, "d2")
        with NamespaceLoop(obs) as client:
            capture = Capture(client)
            try:
                for impl in impls:
                    pair = (
                        Director(impl, d1, 1, Path(tmp) / "d1"),
                        Director(impl, d2, 2, Path(tmp) / "d2"),
                    )
                    for director in pair:
                        director.directory.mkdir(exist_ok=True)
                    for version, interval in [] if args.no_failover else modes:
                        mode = f"v{version} {interval * 1000:g} ms"
                        for kind, sig in (("kill -9", signal.SIGKILL), ("stop", signal.SIGTERM)):
                            loads.append(os.getloadavg()[0])
                            done = []
                            for n in range(args.trials):
                                try:
                                    args_ = (version, interval, sig, args.failover_variant)
                                    done.append(trial(pair, client, capture, *args_))
                                except (
                                    RuntimeError,
                                    ValueError,
                                    concurrent.futures.TimeoutError,
                                ) as exc:
                                    print(f"{impl} {mode} {kind} trial {n}: {exc}", flush=True)
                            rows.append((impl, mode, kind, done))
                            print(f"done: {impl} {mode} {kind}: {len(done)} trials", flush=True)
                    variants = [(0, "loop")]
                    if impl == "ours":
                        variants += [(args.checks, v) for v in variants_asked]
                    with hogs(0 if args.no_jitter else hog_count):
                        for version, interval in [] if args.no_jitter else jitter_modes:
                            for load, variant in variants:
                                dev, out = jitter(
                                    pair[0],
                                    capture,
                                    version,
                                    interval,
                                    args.jitter_seconds,
                                    load,
                                    variant,
                                )
                                checked = [ln for ln in out.splitlines() if "checks ok" in ln]
                                label = f"v{version} {interval * 1000:g} ms"
                                name = impl if impl != "ours" or not load else f"ours ({variant})"
                                jitters.append((name, label, load, dev))
                                loads.append(os.getloadavg()[0])
                                print(f"done: jitter {name} {label} checks {load} {checked[-1:]}")
            finally:
                capture.close()
    print()
    spread = f"{min(loads, default=0):.1f}..{max(loads, default=0):.1f}"
    print(f"1-minute load average during the run: {spread} on {os.cpu_count()} CPUs")
    print(
        "Failover, times from the old master's last advert as captured by the client (ms); "
        f"ours: {args.failover_variant}"
    )
    head = f"{'director':10} {'mode':10} {'event':8} {'n':>2}"
    cols = "min       med       max"
    print(
        f"{head} | advert   {cols} | GARP     {cols} | TCP      {cols} | GARP-advert med/max"
        " | VIP left"
    )
    for impl, mode, kind, done in rows:
        print(
            f"{impl:10} {mode:10} {kind:8} {len(done):2} | "
            f"{ms([t.advert for t in done])} | {ms([t.garp for t in done])} | "
            f"{ms([t.tcp for t in done])} | "
            f"{statistics.median([t.garp_after_advert for t in done] or [0]) * 1e3:9.2f} "
            f"{max((t.garp_after_advert for t in done), default=0) * 1e3:9.2f} | "
            f"{sum(t.vip_left for t in done)}/{len(done)}"
        )
    if jitters:
        print()
        hogged = f", {hog_count} busy processes running" if hog_count else ""
        print(
            "The master's advert interval: deviation from the configured one, as captured (ms)"
            + hogged
        )
        print(
            f"{'director':18} {'mode':10} {'checks/s':>8} {'n':>5} {'p50':>8} {'p99':>8} {'max':>8}"
        )
        for name, label, load, dev in jitters:
            if not dev:
                print(f"{name:18} {label:10} {load:8} no adverts captured")
                continue
            print(
                f"{name:18} {label:10} {load:8} {len(dev):5} {percentile(dev, 0.5) * 1e3:8.2f} "
                f"{percentile(dev, 0.99) * 1e3:8.2f} {max(dev) * 1e3:8.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
