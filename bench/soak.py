"""Soak benchmark: the whole daemon for a while under checks, reloads, role flips and scrapes;
its memory, descriptors, tasks, timers and threads sampled, and their growth reported.

    .venv/bin/python -m bench.soak [--minutes 30] [--checks 2000] [--reload-every 10]
        [--flip-every 60] [--sample-every 60] [--scrape-every 5]

The lab (:mod:`bench.soak_lab`): a farm namespace serving ``--checks`` addresses from one small
HTTP server (as :mod:`bench.checks`); a director namespace running the real daemon on the
in-memory IPVS table (``tests.helpers.director_proc``: checks every 1 s over 200 virtual
services of 10 real servers, VRRP v3, nftables rules, the sync daemon follower, the control
socket and metrics); keepalived 2.2.7 as its VRRP peer on a shared bridge. Every
``--reload-every`` s the config changes (a weight; every third reload a real server added or
removed, so checks are created and dropped) and is reloaded, alternately with SIGHUP and over
the control socket (``directorctl reload``); every ``--flip-every`` s that reload also moves the
director's priority across the peer's (preempt on), so the VIP moves. ``/metrics`` is scraped
every ``--scrape-every`` s from inside the namespace; probes/s is read from those scrapes.

Every ``--sample-every`` s one line: the RSS floor and peak and the anonymous RSS, and the open
fds (lowest and highest of /proc/PID readings every half second over the window), asyncio tasks
and timers and threads (``directorctl status``'s ``process`` section), probes/s achieved, the
daemon's CPU, the VRRP role and who holds the VIP. At the end: the table, the RSS growth over
the last 20 minutes (goal < 2 MB; on a short run, over what it has after warm-up), fds, tasks,
timers and threads over the run (goal: flat after warm-up), a verdict per goal, and the
daemon's log summed up by level and event. ``--trace DIR`` runs the daemon under tracemalloc
(:mod:`bench.soak_trace`; several times slower: use ``--checks 400 --scrape-every 15``) and
prints the allocation sites and object types that grew between warm-up and the end. Needs
root; everything lives in namespaces that are removed at the end, on failure and on Ctrl-C /
SIGTERM. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench.soak_config import BACKUP, MASTER, Plan
from bench.soak_lab import Lab, wait_until
from bench.soak_report import HEAD, Sample, Scrapes, Watch, cpu_seconds, line, report
from bench.soak_trace import diff

FLIP_WITHIN = 30.0  # s for the VIP to move after a flip's reload


class Soak:
    def __init__(self, lab: Lab, args: argparse.Namespace, pid: int, warmup: float) -> None:
        self.lab, self.args, self.pid, self.warmup = lab, args, pid, warmup
        self.snapshots = 0  # tracemalloc snapshots taken (--trace)
        self.scrapes = Scrapes()
        self.samples: list[Sample] = []
        self.start = time.monotonic()
        self.reloads_sent = collections.Counter[str]()
        self.flips_asked = 0
        self.flip_times: list[float] = []
        self.flips_missed = 0
        self._flip: tuple[bool, float] | None = None  # (director should hold the VIP, asked at)
        self._window: tuple[float, float, float, float, float, int] | None = None
        self.scrape_failures = 0
        self.watch = Watch(pid)

    def run(self) -> None:
        a, now = self.args, time.monotonic()
        end = self.start + a.minutes * 60
        next_reload, next_flip = now + a.reload_every, now + a.flip_every
        next_scrape, next_sample = now + a.scrape_every, now
        n = 0
        print(HEAD, flush=True)
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                self.sample()
                next_sample += a.sample_every
                next_scrape = time.monotonic() + a.scrape_every
            if now >= next_scrape:
                self.scrape()
                next_scrape += a.scrape_every
            reload_due, flip_due = now >= next_reload, now >= next_flip
            if reload_due or flip_due:
                n += 1
                if reload_due:
                    self.lab.plan.change(n)
                    next_reload += a.reload_every
                if flip_due:
                    plan = self.lab.plan
                    plan.priority = BACKUP if plan.priority == MASTER else MASTER
                    self._flip = (plan.priority == MASTER, time.monotonic())
                    self.flips_asked += 1
                    next_flip += a.flip_every
                via = "control" if n % 2 == 0 else "SIGHUP"
                self.lab.reload(via == "control", self.pid)
                self.reloads_sent[via] += 1
            self.watch_flip()
            self.watch.read(time.monotonic())
            wake = min(next_sample, next_scrape, next_reload, next_flip, end)
            pause = 0.05 if self._flip is not None else 0.5
            time.sleep(max(0.0, min(wake - time.monotonic(), pause)))
        self.sample()

    def watch_flip(self) -> None:
        if self._flip is None:
            return
        master, asked = self._flip
        if self.lab.director_has_vip() == master and self.lab.peer_has_vip() != master:
            self.flip_times.append(time.monotonic() - asked)
            self._flip = None
        elif time.monotonic() - asked > FLIP_WITHIN:
            self.flips_missed += 1
            print(f"flip to {'master' if master else 'backup'}: VIP not moved", flush=True)
            self._flip = None

    def scrape(self) -> None:
        """One scrape; one that fails or times out is counted and printed, not fatal."""
        try:
            body, seconds = self.lab.scrape(self.args.scrape_timeout)
        except (OSError, TimeoutError, concurrent.futures.TimeoutError) as exc:
            self.scrape_failures += 1
            print(f"scrape failed: {exc!r}", flush=True)
            return
        self.scrapes.update(body, time.monotonic(), seconds)

    def sample(self) -> None:
        self.watch.read(time.monotonic(), every=0)
        watch = self.watch
        rss, anon, fds = watch.rss, watch.anon, watch.fds
        watch.reset()
        status = self.lab.status()
        self.scrape()
        process = status["process"]
        cpu, at = cpu_seconds(self.pid), time.monotonic()
        s = self.scrapes
        ok, failed, scraped = s.probes_ok, s.probes_failed, s.at or at
        rates = (0.0, 0.0, 0.0)
        n0 = max(0, len(s.seconds) - 1)
        if self._window is not None:
            ok0, failed0, scraped0, cpu0, at0, n0 = self._window
            span = max(scraped - scraped0, 1e-9)
            rates = ((ok - ok0) / span, (failed - failed0) / span, (cpu - cpu0) / (at - at0) * 100)
        scrape_ms = statistics.median(s.seconds[n0:] or [0.0]) * 1000
        self._window = (ok, failed, scraped, cpu, at, len(s.seconds))
        servers = [rs for svc in status["services"] for rs in svc["servers"] if rs["health"]]
        director, peer = self.lab.director_has_vip(), self.lab.peer_has_vip()
        vip = {(True, False): "director", (False, True): "peer", (True, True): "both"}
        sample = Sample(
            t=at - self.start,
            rss=min(rss),
            rss_peak=max(rss),
            rss_anon=min(anon),
            fds=min(fds),
            fds_peak=max(fds),
            tasks=int(process["tasks"]),
            timers=int(process["timers"]),
            threads=int(process["threads"]),
            probes_per_s=rates[0],
            failed_per_s=rates[1],
            cpu=rates[2],
            role=str(status["role"]),
            vip=vip.get((director, peer), "none"),
            up=sum(1 for rs in servers if rs["health"]["up"]),
            checked=len(servers),
            reloads=int(s.gauge('director_config_reloads_total{result="success"}')),
            rejected=int(s.gauge('director_config_reloads_total{result="failure"}')),
            flips=len(self.flip_times),
            scrape_ms=scrape_ms,
            scrape_kb=s.size // 1024,
        )
        self.samples.append(sample)
        print(line(sample), flush=True)
        if self.args.trace and not self.snapshots and sample.t >= self.warmup:
            self.snapshot()  # the first sample after warm-up: the start of the comparison

    def snapshot(self) -> None:
        """Have the daemon under tracemalloc write snapshot N (bench.soak_trace) and wait."""
        n, self.snapshots = self.snapshots, self.snapshots + 1
        os.kill(self.pid, signal.SIGUSR2)
        wait_until(f"tracemalloc snapshot {n}", 600, (self.args.trace / f"done-{n}").exists)
        self.watch.reset()  # the snapshot's own memory is no sample's

    def summary(self) -> list[str]:
        times = sorted(self.flip_times) or [0.0]
        sent = sum(self.reloads_sent.values())
        last = self.samples[-1] if self.samples else None
        accepted, rejected = (last.reloads, last.rejected) if last else ("-", "-")
        return [
            f"reloads sent: {sent} ({self.reloads_sent['SIGHUP']} SIGHUP,"
            f" {self.reloads_sent['control']} directorctl reload); accepted by the daemon"
            f" (metrics): {accepted}, rejected: {rejected}",
            f"role flips asked: {self.flips_asked}; VIP moved as asked: {len(self.flip_times)}"
            f" (median {statistics.median(times):.2f} s, max {times[-1]:.2f} s after the reload),"
            f" not within {FLIP_WITHIN:g} s: {self.flips_missed}",
            f"scrapes: {len(self.scrapes.seconds)} ({self.scrape_failures} failed), median"
            f" {statistics.median(self.scrapes.seconds or [0.0]) * 1000:.0f} ms, max"
            f" {max(self.scrapes.seconds or [0.0]) * 1000:.0f} ms, {self.scrapes.size // 1024} KB",
        ]


def log_summary(text: str) -> list[str]:
    """The daemon's log by level, and its warning and error events with their counts."""
    levels: collections.Counter[str] = collections.Counter()
    events: collections.Counter[str] = collections.Counter()
    other = 0
    for raw in text.splitlines():
        try:
            entry: dict[str, Any] = json.loads(raw)
        except ValueError:
            other += 1
            continue
        level = str(entry.get("level", "?"))
        levels[level] += 1
        if level in ("warning", "error", "critical"):
            events[f"{level} {entry.get('event')}"] += 1
    out = [
        f"daemon log: {len(text) // 1024} KB, "
        + ", ".join(f"{n} {lvl}" for lvl, n in levels.most_common())
        + (f", {other} lines not JSON" if other else "")
    ]
    out += [f"  {n:5} {event}" for event, n in events.most_common(12)]
    return out


def interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up runs undisturbed
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--checks", type=int, default=2000, help="real servers, each checked every 1 s")
    p.add_argument("--per-service", type=int, default=10, help="real servers per virtual service")
    p.add_argument("--reload-every", type=float, default=10.0)
    p.add_argument("--flip-every", type=float, default=60.0)
    p.add_argument("--sample-every", type=float, default=60.0)
    p.add_argument("--scrape-every", type=float, default=5.0)
    p.add_argument("--scrape-timeout", type=float, default=30.0)
    p.add_argument("--advert-interval", type=float, default=1.0, help="VRRP v3, seconds")
    p.add_argument(
        "--trace",
        type=Path,
        metavar="DIR",
        help="run the daemon under tracemalloc (bench.soak_trace); snapshots after warm-up and"
        " at the end go to DIR, and what grew between them is printed",
    )
    p.add_argument(
        "--warmup", type=float, help="minutes left out of the growth (default: 5, or a third)"
    )
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench.soak needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)
    warmup = 60 * (args.warmup if args.warmup is not None else min(5.0, args.minutes / 3))
    plan = Plan.of(args.checks, args.per_service, args.advert_interval)
    print(
        f"soak: {plan.checks()} real servers in {len(plan.services)} services, checked every 1 s;"
        f" reload every {args.reload_every:g} s, role flip every {args.flip_every:g} s,"
        f" scrape every {args.scrape_every:g} s, sample every {args.sample_every:g} s,"
        f" {args.minutes:g} min; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    soak: Soak | None = None
    tail: list[str] = []
    interrupted = False
    try:
        if args.trace:
            args.trace.mkdir(parents=True, exist_ok=True)
        with Lab(plan, args.trace) as lab:
            started = time.monotonic()

            def ready() -> dict[str, Any] | None:
                status = lab.status()
                servers = [rs for svc in status["services"] for rs in svc["servers"]]
                probed = all(
                    rs["health"] and rs["health"]["latency_ms"] is not None for rs in servers
                )
                return status if status["role"] == "master" and probed else None

            status = wait_until("the director master with every server checked", 180, ready)
            print(f"lab ready in {time.monotonic() - started:.0f} s", flush=True)
            soak = Soak(lab, args, int(status["process"]["pid"]), warmup)
            try:
                soak.run()
                if args.trace and soak.snapshots:
                    soak.snapshot()  # the end
                    tail += ["", *diff(args.trace, 0, soak.snapshots - 1), ""]
            finally:
                code, log = lab.stop_director()
                tail += [f"daemon exit status on SIGTERM: {code}", *log_summary(log)]
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: lab removed", file=sys.stderr)
    if soak is None or not soak.samples:
        return 130 if interrupted else 1
    for text in [*report(soak.samples, warmup), "", *soak.summary(), *tail]:
        print(text)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
