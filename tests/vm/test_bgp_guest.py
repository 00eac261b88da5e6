"""The BGP lab (tests/helpers/bgp_lab.py) in the real-kernel guest: BIRD 2 and ExaBGP run there
too (the guest shares the host's read-only root), the router gets its ECMP route and a killed
``directord`` is withdrawn at once. The ground the guest ECMP lab with IPVS DR real servers and
flow survival builds on."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers.bgp_lab import build, until
from tests.helpers.netns import Topology

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (apt install bird2)"),
]


def test_ecmp_and_a_killed_director_in_the_guest(topology: Topology, tmp_path: Path) -> None:
    router, (d1, d2) = build(topology, tmp_path, directors=2, hold_time=9)
    until(router, lambda hops: hops == {d1.address, d2.address}, within=60)
    os.kill(d2.daemon.proc.pid, signal.SIGKILL)
    killed = until(router, lambda hops: hops == {d1.address}, within=5)
    print(f"\nguest: SIGKILL of directord withdrawn at the router after {killed * 1000:.0f} ms")
    d1.daemon.stop()
