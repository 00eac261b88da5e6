"""Metrics benchmark: what a scrape and a counter reading cost on a large table.

    .venv/bin/python -m bench.metrics                     # scrape cost only (any host)
    .venv/bin/python -m tests.helpers.vm -- .venv/bin/python -m bench.metrics --kernel

A scrape renders the last :class:`StatsSnapshot` (no kernel access): its time grows with the
number of series. ``--kernel`` also programs SERVICES x DESTS into the real kernel and times the
engine's counter reading (``read_stats``, done in the worker thread every ``stats_interval``)
against ``ipvsadm -Ln --stats --exact``, and checks both report the same totals.
Prints figures; exits 1 only when the two readings disagree.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from director.ipvs.model import Table
from director.ipvs.stats import Counters, DestStats, StatsSnapshot
from director.metrics import Metrics
from tests.helpers.tables import web_table


def fake_snapshot(table: Table) -> StatsSnapshot:
    snap = StatsSnapshot(at=time.time())
    for key, svc in table.services.items():
        snap.services[key] = (svc, Counters(10**6, 10**7, 10**7, 10**9, 10**10))
        snap.dests[key] = {
            dkey: DestStats(d, 5, 7, 1, Counters(10**4, 10**5, 10**5, 10**7, 10**8))
            for dkey, d in table.dests[key].items()
        }
    return snap


def timed(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--dests", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kernel", action="store_true")
    args = p.parse_args()
    table = web_table(args.services, args.dests)
    n_dest = args.services * args.dests
    snaps = [fake_snapshot(table) for _ in range(args.runs)]
    metrics = Metrics()
    firsts = []
    for snap in snaps:  # a new kernel reading each time: the IPVS text is rendered afresh
        metrics.sources.stats = lambda snap=snap: snap  # type: ignore[misc]
        start = time.perf_counter()
        body = metrics.render()
        firsts.append(time.perf_counter() - start)
    cached = timed(metrics.render, args.runs)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    print(
        f"scrape: {args.services} services x {args.dests} destinations = {series} series, "
        f"{len(body) / 1e6:.1f} MB; after a new reading median {statistics.median(firsts):.2f} s"
        f" ({statistics.median(firsts) / n_dest * 1e6:.0f} us per destination, in a worker "
        f"thread), same reading again median {statistics.median(cached) * 1000:.0f} ms"
    )
    if not args.kernel:
        return 0

    from director.ipvs.netlink import NetlinkIPVS
    from director.reconcile.owned import MemoryOwnedStore
    from director.reconcile.reconciler import Reconciler

    subprocess.run(["ipvsadm", "-C"], check=True)
    kernel = NetlinkIPVS()
    try:
        Reconciler(kernel, MemoryOwnedStore()).sync(table, full=True)
        t_ours = timed(lambda: kernel.read_stats(time.time()), args.runs)
        t_ipvsadm = timed(
            lambda: subprocess.run(
                ["ipvsadm", "-Ln", "--stats", "--exact"], check=True, capture_output=True
            ),
            args.runs,
        )
        ours = kernel.read_stats(time.time())
    finally:
        kernel.close()
        subprocess.run(["ipvsadm", "-C"], check=True)
    read = sum(len(d) for d in ours.dests.values())
    print(
        f"kernel read: {read} destinations with counters, read_stats median "
        f"{statistics.median(t_ours) * 1000:.0f} ms, ipvsadm -Ln --stats --exact median "
        f"{statistics.median(t_ipvsadm) * 1000:.0f} ms"
    )
    return 0 if read == n_dest else 1


if __name__ == "__main__":
    sys.exit(main())
