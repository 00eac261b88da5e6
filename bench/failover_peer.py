"""One director of ``bench/failover``: the VRRP adapter directord uses, in its own process.

    python -m bench.failover_peer --host 1 --priority 200 --version 3 --interval 0.1
        [--checks 2000 --farm 198.18.64.1]

Runs ``vrrp.instance.Instance`` on eth0 (198.18.0.HOST, VIP 198.18.0.100, VRID 51, five
gratuitous ARPs at once and five more 5 s later, as keepalived's defaults) in the namespace it
is started in, and prints ``state <name>`` on each change. With ``--checks N`` the same event
loop also runs N HTTP health checks per second (the daemon's scheduler, runner and HTTP probe)
against addresses from ``--farm`` on; ``--vrrp-thread`` runs the instance on an event loop of
its own on a second thread instead (``vrrp.thread.InstanceThread``; ``--vrrp-rt P``: that thread
under SCHED_FIFO priority P). SIGTERM: a clean stop (priority 0 advert); SIGKILL is a crash.
Started by ``bench.failover``; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import signal
import sys

from checks.model import Check, CheckParams, ProbeResult
from checks.probes import http
from checks.probes.result import Target
from checks.runner import Runner
from checks.schedule import Scheduler
from vrrp import Config, Gratuitous, State
from vrrp.instance import Instance
from vrrp.thread import InstanceThread

VRID = 51
VIP = ipaddress.IPv4Address("198.18.0.100")


def config(host: int, priority: int, version: int, interval: float) -> Config:
    return Config(
        vrid=VRID,
        priority=priority,
        primary_address=ipaddress.IPv4Address(f"198.18.0.{host}"),
        virtual_addresses=(VIP,),
        version=version,
        advert_interval=interval,
        password=b"bench" if version == 2 else None,
        gratuitous=Gratuitous(count=5, spacing=0.0, repeat_after=5.0),
    )


async def start_checks(count: int, first: str) -> tuple[Runner[Target], http.HttpProber]:
    prober = http.HttpProber()
    spec = http.HttpSpec(path="/", expect_status=((200, 200),))
    done = [0, 0]

    async def probe(target: Target) -> ProbeResult:
        r = await prober.probe(target, spec, 1.0)
        done[0 if r.ok else 1] += 1
        return ProbeResult(r.ok, r.latency, r.error, r.weight)

    async def report() -> None:
        while True:
            await asyncio.sleep(5)
            print(f"checks ok {done[0]} failed {done[1]}", flush=True)

    base = int(ipaddress.IPv4Address(first))
    params = CheckParams(interval=1.0, timeout=1.0, rise=1, fall=3)
    checks = [
        Check(id=str(i), spec=Target(ipaddress.IPv4Address(base + i), 80), params=params)
        for i in range(count)
    ]
    runner: Runner[Target] = Runner(
        Scheduler(random.Random(1), max_in_flight=512), probe, lambda changes: None
    )
    runner.start()
    runner.add(checks)
    asyncio.get_running_loop().create_task(report())
    return runner, prober


async def main(args: argparse.Namespace) -> None:
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)  # how long a waiting thread waits for the GIL
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_state(state: State) -> None:
        print(f"state {state}", flush=True)

    settings = config(args.host, args.priority, args.version, args.interval)
    instance: Instance | InstanceThread
    if args.vrrp_thread:
        instance = InstanceThread(
            Instance(settings, "eth0"), on_state=on_state, realtime=args.vrrp_rt
        )
    else:
        instance = Instance(settings, "eth0", on_state=on_state)
    runner = prober = None
    if args.checks:
        runner, prober = await start_checks(args.checks, args.farm)
    await instance.start()
    print("started", flush=True)
    await stop.wait()
    await instance.stop()
    if runner is not None and prober is not None:
        await runner.stop()
        await prober.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", type=int, required=True)
    parser.add_argument("--priority", type=int, required=True)
    parser.add_argument("--version", type=int, choices=(2, 3), required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--checks", type=int, default=0)
    parser.add_argument("--farm", default="198.18.64.1")
    parser.add_argument("--vrrp-thread", action="store_true", help="VRRP on its own loop/thread")
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (s)")
    parser.add_argument("--vrrp-rt", type=int, help="SCHED_FIFO priority of the VRRP thread")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
