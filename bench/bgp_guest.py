"""Flow survival on the real kernel: the active-active lab of ``tests/helpers/ecmp_lab.py``
(BIRD 2 router with an L4 multipath hash, three ``directord`` + ExaBGP directors with IPVS DR,
three DR real servers, a client), run inside the guest:

    flock /tmp/guest.lock .venv/bin/python -m tests.helpers.vm -- \\
        .venv/bin/python -m bench.bgp_guest --flows 300

Opens FLOWS long-lived client flows (a line each way every second) and counts, for each event,
the flows that keep working: one director drained and enabled again, another's link silently
cut and restored, the last one killed with SIGKILL. ``--sloppy-tcp 0`` and ``--scheduler wlc``
are the controls: what active-active loses without them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.helpers.ecmp_lab import EVENTS, build, events, flows
from tests.helpers.netns import Topology


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", type=int, default=300)
    p.add_argument("--hold-time", type=int, default=6)
    p.add_argument("--scheduler", default="mh")
    p.add_argument("--sloppy-tcp", type=int, choices=[0, 1], default=1)
    p.add_argument("--events", default=",".join(EVENTS), help=f"some of {','.join(EVENTS)}")
    args = p.parse_args()
    names = tuple(args.events.split(","))
    if unknown := set(names) - set(EVENTS):
        p.error(f"--events: expected some of {','.join(EVENTS)}, found {sorted(unknown)}")
    label = f"{args.scheduler}, sloppy_tcp={args.sloppy_tcp}, {args.flows} flows"
    with tempfile.TemporaryDirectory() as work, Topology() as topology:
        start = time.monotonic()
        lab = build(
            topology,
            Path(work),
            hold_time=args.hold_time,
            scheduler=args.scheduler,
            sloppy_tcp=args.sloppy_tcp,
        )
        try:
            lab.until(lambda hops: hops == lab.everyone, within=900)
        except AssertionError as exc:
            print(f"{exc}\n{lab.explain()}")
            return 1
        print(f"[{label}] 3 next hops at the router {time.monotonic() - start:.0f} s after start")
        with flows(lab.client, args.flows) as f:
            time.sleep(3)
            spread = [d.established() for d in lab.directors]
            print(f"[{label}] ESTABLISHED per director: {spread}")
            for r in events(lab, f, names, hold_time=args.hold_time):
                print(f"[{label}] {r.line()}", flush=True)
        for d in lab.directors:
            if d.daemon.proc.poll() is None:
                d.daemon.stop(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
