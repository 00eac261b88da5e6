"""Health-check scheduler benchmark: the pure scheduler alone, on a simulated clock.

    .venv/bin/python -m bench.checks_sched [--checks 2000] [--interval 1] [--seconds 60]

Drives ``checks.schedule.Scheduler`` with fake probes for SECONDS simulated seconds and prints
the CPU time the scheduler spends per check-round (``due`` + ``probe_done`` + ``expire`` +
``next_deadline``): with instant probes, then with 50 ms probes under a cap that just fits and
under one too small (the waiting queue, lag and skipped rounds at work). Prints figures; it
is not a test.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import time

from checks.model import Check, CheckParams, ProbeResult, StartProbe
from checks.schedule import Scheduler

OK = ProbeResult(True, 0.0005, None)
FAIL = ProbeResult(False, 0.0005, "connection refused")


def run(checks: int, interval: float, seconds: float, latency: float, cap: int) -> None:
    sched: Scheduler[str] = Scheduler(random.Random(42), max_in_flight=cap)
    params = CheckParams(interval=interval, timeout=max(1.0, 2 * latency), fall=2, rise=2)
    sched.add((Check(i, "tcp", params) for i in range(checks)), 0.0)
    pending: list[tuple[float, int, StartProbe[str]]] = []
    seq = itertools.count()
    flaky = random.Random(7)
    wakes = changes = 0
    in_sched = 0.0
    cpu0 = time.process_time()
    now = 0.0
    while True:
        t0 = time.perf_counter()
        wake = sched.next_deadline()
        in_sched += time.perf_counter() - t0
        if pending and (wake is None or pending[0][0] < wake):
            wake = pending[0][0]
        if wake is None or wake > seconds:
            break
        now = max(now, wake)
        wakes += 1
        done = []
        while pending and pending[0][0] <= now:
            done.append(heapq.heappop(pending)[2])
        results = [FAIL if flaky.random() < 0.01 else OK for _ in done]
        t0 = time.perf_counter()
        for start, result in zip(done, results, strict=True):
            changes += len(sched.probe_done(start, result, now))
        changes += len(sched.expire(now))
        starts = sched.due(now)
        in_sched += time.perf_counter() - t0
        for start in starts:
            heapq.heappush(pending, (now + latency, next(seq), start))
    cpu = time.process_time() - cpu0
    snap = sched.snapshot()
    rounds = snap.rounds
    print(
        f"{checks} checks, interval {interval:g}s, {seconds:g} simulated s, "
        f"probe latency {latency * 1000:g} ms, cap {cap}"
    )
    print(
        f"  rounds {rounds}, wake-ups {wakes}, health changes {changes}, overruns {snap.overruns}"
    )
    print(f"  lag: mean {snap.lag.mean * 1000:.3f} ms, max {snap.lag.max * 1000:.3f} ms")
    print(
        f"  scheduler {in_sched / rounds * 1e6:.2f} us per check-round "
        f"(whole simulation incl. fake probes {cpu / rounds * 1e6:.2f} us CPU), "
        f"{in_sched / seconds * 100:.3f}% of one core at this rate"
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--checks", type=int, default=2000)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    run(args.checks, args.interval, args.seconds, latency=0.0, cap=256)
    run(args.checks, args.interval, args.seconds, latency=0.05, cap=128)  # ~100 busy on average
    run(args.checks, args.interval, args.seconds, latency=0.05, cap=64)  # overloaded: rounds skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
