"""A checker process that runs out of file descriptors (tests/checks/test_local_failures.py).

    python -m tests.checks.fd_exhaustion CONFIG HOLD

Runs the daemon's ``HealthChecks`` for CONFIG with RLIMIT_NOFILE lowered to 256; once every
check has passed, opens /dev/null until ``open`` fails with EMFILE, holds those descriptors HOLD
seconds, closes them, lets the checks run a while more, and prints a JSON report on stdout.
Log lines (structlog) go to stderr as JSON. Run it inside a network namespace: its probes go to
the lab's real servers. Written against the public API only, so that it also runs (and shows
the verdicts falling) on a tree without local-failure handling.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import structlog

from checks.model import HealthChanged, ProbeResult
from director.config import load_config
from director.health import HealthChecks, ProbeJob

NOFILE = 256


def exhaust() -> list[int]:
    held: list[int] = []
    while True:
        try:
            held.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            return held


async def until(condition: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def main(config: Path, hold: float) -> dict[str, object]:
    changes: list[HealthChanged] = []
    local: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    phase = ["before"]

    def on_probe(job: ProbeJob, result: ProbeResult) -> None:
        kind = f"{job.kind}/fast" if job.plan is not None else job.kind
        if getattr(result, "local", None):
            local[f"{phase[0]} {kind}"] += 1
        elif not result.ok:
            failed[f"{phase[0]} {kind}"] += 1

    checks = HealthChecks(changes.extend, rng=random.Random(1))
    checks.on_probe = on_probe
    checks.update(load_config(config))

    def all_passed() -> bool:
        return all(c["last_ok"] is True for c in checks.summary())

    ready = await until(all_passed, 10.0)
    phase[0] = "held"
    held = exhaust()
    await asyncio.sleep(hold)
    for fd in held:
        os.close(fd)
    phase[0] = "after"
    await asyncio.sleep(0.5)  # rounds that started before the release end
    recovered = await until(all_passed, 10.0)
    faults = getattr(checks, "local_faults", None)
    report: dict[str, object] = {
        "ready": ready,
        "held": len(held),
        "recovered": recovered,
        "changes": [[str(c.check_id[1]), c.up, c.reason] for c in changes],  # type: ignore[index]
        "health": sorted(checks.health().values()),
        "local": dict(local),
        "failed": dict(failed),
        "local_faults": faults() if callable(faults) else None,
    }
    await checks.stop()
    return report


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(NOFILE, hard), hard))
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    result = asyncio.run(main(Path(sys.argv[1]), float(sys.argv[2])))
    print(json.dumps(result))
