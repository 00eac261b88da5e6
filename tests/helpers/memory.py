"""A cap on this process's memory for a block of a test (Linux).

For tests of code that, if it regressed, would grow without bound (the importer's parameter
substitution, a virtual_server_group network expanded address by address): with the cap such a
regression fails the test with MemoryError instead of exhausting the machine it runs on.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GiB = 1 << 30


def _address_space() -> int:
    """This process's virtual memory size in bytes (VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextmanager
def memory_cap(extra: int = 2 * GiB) -> Iterator[None]:
    """Limit the address space to its size now plus ``extra`` while the block runs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
