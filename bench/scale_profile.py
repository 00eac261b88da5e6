"""``tests.helpers.director_proc`` under a profiler, for ``bench.scale --profile``.

``DT_PROFILE=mem``: tracemalloc from start; on SIGUSR1 the largest live allocations by line and
by traceback go to ``$DT_PROFILE_OUT.mem``. ``DT_PROFILE=cpu``: cProfile of the event loop's
thread, written to ``$DT_PROFILE_OUT.prof`` when the daemon stops. ``DT_PROFILE=gc``: the
cyclic collector's pauses by generation (count, total, longest) to ``$DT_PROFILE_OUT.gc`` on
SIGUSR1.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType

from tests.helpers import director_proc

MODE = os.environ.get("DT_PROFILE", "")
OUT = os.environ.get("DT_PROFILE_OUT", "/tmp/dt-scale-profile")


GC: dict[int, list[float]] = {}  # generation -> [collections, total s, longest s]
_gc_started = 0.0


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took = time.perf_counter() - _gc_started
    row = GC.setdefault(info["generation"], [0, 0.0, 0.0])
    row[0] += 1
    row[1] += took
    row[2] = max(row[2], took)


def dump(signum: int = 0, frame: FrameType | None = None) -> None:
    if MODE == "gc":
        with open(OUT + ".gc", "w") as f:
            for generation, (n, total, longest) in sorted(GC.items()):
                f.write(
                    f"generation {generation}: {n:.0f} collections, {total:.2f} s in all, "
                    f"longest {longest * 1000:.0f} ms\n"
                )
        return
    if MODE != "mem":
        return
    snap = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()
    with open(OUT + ".mem", "w") as f:
        f.write(f"traced now {current / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB\n")
        for st in snap.statistics("lineno")[:40]:
            f.write(f"{st.size / 1e6:8.1f} MB {st.count:9d} {st.traceback.format()[-1]}\n")
        f.write("----\n")
        for st in snap.statistics("traceback")[:25]:
            f.write(f"{st.size / 1e6:8.1f} MB {st.count:9d}\n")
            f.write("\n".join(st.traceback.format()) + "\n")


async def main() -> int:
    profile = cProfile.Profile() if MODE == "cpu" else None
    if profile is not None:
        profile.enable()
    try:
        return await director_proc.main(Path(sys.argv[1]), Path(sys.argv[2]))
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(OUT + ".prof")


if __name__ == "__main__":
    if MODE == "mem":
        tracemalloc.start(int(os.environ.get("DT_FRAMES", "4")))
    if MODE == "gc":
        gc.callbacks.append(_gc_timer)
    signal.signal(signal.SIGUSR1, dump)
    sys.exit(asyncio.run(main()))
