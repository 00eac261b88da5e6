"""Active-active on the real kernel (tests/helpers/ecmp_lab.py): a BIRD 2 router with an L4
multipath hash, three directors running ``directord`` with ExaBGP (IPVS ``mh`` + ``mh-port``,
DR, ``sloppy_tcp``), three DR real servers and a client behind the router.

One lab for the whole module (its directors take minutes to start in the emulated guest):
every director's route is an ECMP next hop at the router; the client's flows spread over all
three directors; and with ``FLOWS`` long-lived flows open (a line each way every second), one
director drained (``drain-director``) and enabled again, then its checks failing (quorum lost:
its route withdrawn) and passing again, then another's link silently cut and restored, then the
last one killed with SIGKILL: every flow keeps working, on the same real server through another
director, and through the router moving flows back to a director that returns.
The figures are printed (run with ``-s``; docs/active-active.md keeps them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.helpers.ecmp_lab import EVENTS, Flows, Lab, build, events, flows, wait_for
from tests.helpers.netns import Topology

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 (apt install bird2)"),
]

FLOWS = int(os.environ.get("DIRECTOR_ECMP_FLOWS", "150"))
HOLD_TIME = 6  # the silent cut waits for it (keepalives every 2 s)
START_WITHIN = 900.0  # three directord + ExaBGP starting at once in the TCG guest


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Topology() as topology:
        start = time.monotonic()
        lab = build(topology, tmp_path_factory.mktemp("ecmp"), hold_time=HOLD_TIME)
        try:
            took = lab.until(lambda hops: hops == lab.everyone, within=START_WITHIN)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{lab.explain()}") from None
        print(f"\necmp lab: the router has its 3 next hops {time.monotonic() - start:.0f} s "
              f"after the start ({took:.0f} s of waiting)")  # fmt: skip
        yield lab
        for d in lab.directors:  # a clean stop closes ExaBGP's session before the netns goes
            if d.daemon.proc.poll() is None:
                d.daemon.stop(timeout=60)
        for d in lab.directors:
            output = d.daemon.output()
            assert "Traceback" not in output, output[-3000:]


@pytest.fixture(scope="module")
def client_flows(lab: Lab) -> Iterator[Flows]:
    with flows(lab.client, FLOWS) as f:
        time.sleep(3)  # a few exchanges each
        yield f


def test_ecmp_route_and_flows_spread(lab: Lab, client_flows: Flows) -> None:
    assert lab.hops() == lab.everyone
    spread = [d.established() for d in lab.directors]
    print(f"\n{FLOWS} flows from one client, ESTABLISHED per director: {spread}")
    assert sum(spread) == FLOWS, spread
    assert all(n > 0 for n in spread), spread
    # every flow exchanges a line from now on (the guest is busy: give each 20 s)
    assert wait_for(client_flows, FLOWS, 0, time.monotonic(), within=20) == (FLOWS, 0)


def test_flows_survive_drain_cut_and_kill(lab: Lab, client_flows: Flows) -> None:
    results = events(lab, client_flows, EVENTS, hold_time=HOLD_TIME)
    print("\n" + "\n".join(r.line() for r in results))
    assert [r.event for r in results] == [
        "drain-director d3", "enable-director d3", "checks of d3 failing",
        "checks of d3 passing", "silent link cut d2", "link of d2 up", "SIGKILL directord d1",
    ]  # fmt: skip
    for r in results:
        assert (r.flows, r.kept, r.reset) == (FLOWS, FLOWS, 0), r.line()
