"""BGP withdrawal benchmark: how fast a BIRD 2 router drops a director's next hop.

    .venv/bin/python -m bench.bgp [--trials 5] [--hold-time 9] [--directors 3]

The lab of ``tests/helpers/bgp_lab.py`` (network namespaces on this machine's kernel: a BIRD 2
router with ``merge paths``, directors running the whole daemon with ExaBGP, one checked HTTP
server each). For each trial, on director d1, the time from the event to d1's next hop leaving
the router's ECMP route (``ip -j route``, polled every 5 ms), then d1 is brought back:

* ``kill -9`` of ``directord`` (ExaBGP dies with it: a Cease, not the hold time);
* a silent cut: d1's link to the router goes down on d1's side (no FIN, no Cease: the router
  waits for the hold time);
* its real server stops: the check fails (interval 0.2 s, fall 1), the quorum is lost;
* ``directorctl drain-director``;
* a clean stop (SIGTERM).

Needs root and BIRD 2 (``apt install bird2``). Prints min / median / max per event.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from director.control.client import request
from tests.helpers.bgp_lab import build, until
from tests.helpers.netns import Topology


def run(trials: int, hold_time: int, directors: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with Topology() as topology, tempfile.TemporaryDirectory(prefix="bench-bgp-") as work:
        router, ds = build(topology, Path(work), directors=directors, hold_time=hold_time)
        d1 = ds[0]
        everyone = {d.address for d in ds}

        def all_back() -> None:
            until(router, lambda hops: hops == everyone, within=60)

        def gone() -> float:
            return until(router, lambda hops: d1.address not in hops, within=hold_time * 3 + 10)

        def kill() -> float:
            os.kill(d1.daemon.proc.pid, signal.SIGKILL)
            took = gone()
            d1.daemon.proc.wait()
            d1.start_daemon()
            return took

        def cut() -> float:
            d1.ns.ip("link", "set", "eth0", "down")
            took = gone()
            d1.ns.ip("link", "set", "eth0", "up")
            return took

        def server() -> float:
            d1.server.stop()
            took = gone()
            d1.start_server()
            return took

        def drain() -> float:
            request(d1.state / "control.sock", "drain-director")
            took = gone()
            request(d1.state / "control.sock", "enable-director")
            return took

        def stop() -> float:
            d1.daemon.proc.send_signal(signal.SIGTERM)
            took = gone()
            d1.daemon.proc.wait()
            d1.start_daemon()
            return took

        events: dict[str, Callable[[], float]] = {
            "kill -9 directord": kill,
            f"silent link cut (hold time {hold_time} s)": cut,
            "real server down (quorum lost)": server,
            "drain-director": drain,
            "clean stop": stop,
        }
        all_back()
        for _ in range(trials):
            for name, event in events.items():
                results.setdefault(name, []).append(event())
                all_back()
        for d in ds:  # stopped before the topology goes: their ExaBGP closes cleanly
            if d.daemon.proc.poll() is None:
                d.daemon.stop()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--hold-time", type=int, default=9)
    p.add_argument("--directors", type=int, default=3)
    args = p.parse_args()
    results = run(args.trials, args.hold_time, args.directors)
    print(f"withdrawal of d1's next hop at the BIRD 2 router, {args.trials} trial(s), ms:")
    print(f"{'event':42} {'min':>8} {'median':>8} {'max':>8}")
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        print(f"{name:42} {min(ms):8.0f} {statistics.median(ms):8.0f} {max(ms):8.0f}")


if __name__ == "__main__":
    main()
