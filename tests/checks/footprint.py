"""How much of a program's output this process holds while it runs: its resident memory above
where it started, and the largest regular file it has open (a temporary file counts too), sampled
on the running loop every few milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def open_files() -> dict[tuple[int, int], int]:
    """The regular files this process has open: (device, inode) -> size in bytes."""
    files = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            info = os.stat(f"/proc/self/fd/{fd}")
            if stat.S_ISREG(info.st_mode):
                files[info.st_dev, info.st_ino] = info.st_size
    return files


@dataclass
class Footprint:
    baseline: int = 0
    rss_growth: int = 0  # bytes above the baseline, at most
    largest_file: int = 0  # bytes, of a file opened meanwhile
    samples: int = 0


@contextlib.asynccontextmanager
async def footprint(every: float = 0.005) -> AsyncIterator[Footprint]:
    """Sample while the block runs (the block must await, so that the sampler runs)."""
    seen = Footprint(baseline=rss())
    before = set(open_files())

    async def sample() -> None:
        while True:
            seen.rss_growth = max(seen.rss_growth, rss() - seen.baseline)
            new = [size for key, size in open_files().items() if key not in before]
            seen.largest_file = max([seen.largest_file, *new])
            seen.samples += 1
            await asyncio.sleep(every)

    task = asyncio.create_task(sample())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
