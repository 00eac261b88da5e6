"""Reconcile benchmark, run inside the real-kernel guest (or any host with ip_vs, as root).

    .venv/bin/python -m tests.helpers.vm -- .venv/bin/python -m bench.reconcile
    DIRECTOR_VM_MEMORY=4G .venv/bin/python -m tests.helpers.vm --timeout 3600 -- \
        .venv/bin/python -m bench.reconcile --services 10000

Measures, on the same kernel: a cold apply of SERVICES x DESTS through the daemon's reconciler,
``ipvsadm -R`` restoring the same table, and one weight change on that table through the
incremental path (plan against the cached view, one request, read back one service).
Each round runs ours and ``ipvsadm -R`` one after the other in the same boot (the machine may be
shared: compare within a round). After ``ipvsadm -C`` the kernel keeps the deleted destinations
in a trash list for a while and scans it on every destination add (``ip_vs_trash_get_dest``), so
on a large table every apply after the boot's first is slower, for both tools alike: the first
round's ratio flatters ours, compare the later rounds. Prints medians and every value; exits 0
unless the table read back is wrong.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import subprocess
import sys
import time

from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Table
from director.ipvs.netlink import NetlinkIPVS
from director.reconcile.owned import MemoryOwnedStore
from director.reconcile.reconciler import Reconciler
from tests.helpers.tables import web_table


def ipvsadm_restore_script(table: Table) -> str:
    lines = []
    for key, svc in table.services.items():
        lines.append(f"-A -t {key.address}:{key.port} -s {svc.sched_name}")
        for dest in table.dests[key].values():
            lines.append(f"-a -t {key.address}:{key.port} -r {dest.key} -m -w {dest.weight}")
    return "\n".join(lines) + "\n"


def flush() -> None:
    subprocess.run(["ipvsadm", "-C"], check=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--dests", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    desired = web_table(args.services, args.dests)
    script = ipvsadm_restore_script(desired)
    ops_total = args.services * (1 + args.dests)
    cold, restore, single = [], [], []
    for _ in range(args.rounds):
        flush()
        kernel = NetlinkIPVS()
        rec = Reconciler(kernel, MemoryOwnedStore())
        t0 = time.perf_counter()
        result = rec.sync(desired, full=True)
        cold.append(time.perf_counter() - t0)
        if not result.ok or kernel.dump() != desired:
            print("cold apply produced a wrong table", file=sys.stderr)
            return 1
        changed = copy.deepcopy(desired)
        key = list(changed.services)[len(changed.services) // 2]
        dkey = next(iter(changed.dests[key]))
        changed.dests[key][dkey] = dataclasses.replace(changed.dests[key][dkey], weight=7)
        t0 = time.perf_counter()
        result = rec.sync(changed)
        single.append(time.perf_counter() - t0)
        if len(result.ops) != 1 or kernel.dump_service(key) != (
            changed.services[key],
            changed.dests[key],
        ):
            print("the weight change was not applied alone", file=sys.stderr)
            return 1
        kernel.close()
        flush()
        t0 = time.perf_counter()
        subprocess.run(["ipvsadm", "-R"], input=script, text=True, check=True)
        restore.append(time.perf_counter() - t0)
    flush()

    # The planner alone, in memory: how much of the cold apply is Python.
    mem = MemoryIPVS()
    t0 = time.perf_counter()
    Reconciler(mem, MemoryOwnedStore()).sync(desired, full=True)
    in_memory = time.perf_counter() - t0

    med_cold, med_restore, med_single = (statistics.median(x) for x in (cold, restore, single))
    print(f"table: {args.services} services x {args.dests} destinations = {ops_total} operations")
    print(
        f"rounds: {args.rounds} (median reported; all: cold {fmt(cold)}, ipvsadm -R {fmt(restore)})"
    )
    print(f"cold apply (directord reconciler): {med_cold:.3f} s")
    print(f"ipvsadm -R same table:            {med_restore:.3f} s")
    ratios = [c / r for c, r in zip(cold, restore, strict=True)]
    print(f"ratio cold/ipvsadm:                {med_cold / med_restore:.2f}x (goal <= 1.0, 0.7)")
    print(f"ratio per round:                   {fmt(ratios)}")
    print(f"one weight change (incremental):   {med_single * 1000:.2f} ms (all: {fmt_ms(single)})")
    print(f"ratio single/cold:                 {med_single / med_cold * 100:.3f} % (goal < 1 %)")
    print(f"same plan+apply on the in-memory kernel: {in_memory:.3f} s")
    return 0


def fmt(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def fmt_ms(values: list[float]) -> str:
    return "/".join(f"{v * 1000:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
