"""``tests.helpers.director_proc`` under a profiler, for ``bench.scale --profile``.

``DT_PROFILE=mem``: tracemalloc from start; on SIGUSR1 the largest live allocations by line and
by traceback go to ``$DT_PROFILE_OUT.mem``. ``DT_PROFILE=cpu``: cProfile of the event loop's
thread, written to ``$DT_PROFILE_OUT.prof`` when the daemon stops.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

from tests.helpers import director_proc

MODE = os.environ.get("DT_PROFILE", "")
OUT = os.environ.get("DT_PROFILE_OUT", "/tmp/dt-scale-profile")


def dump(signum: int = 0, frame: FrameType | None = None) -> None:
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
    signal.signal(signal.SIGUSR1, dump)
    sys.exit(asyncio.run(main()))
