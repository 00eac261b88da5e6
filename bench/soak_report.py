"""The soak benchmark's figures (:mod:`bench.soak`): scrapes read as Prometheus would, the
daemon's resources per sample, the table, the growth and the verdicts."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024
RSS_WINDOW = 20 * 60.0  # s: the goal's window (the last 20 minutes, or what the run has)
RSS_GOAL = 2 * MB
# "Flat": the median of the last third of the samples after warm-up is at most this much above
# the median of the first third (a transient - a scrape in flight, a reload - is not a trend).
FLAT = {"open fds": 4, "tasks": 2, "timers": 16, "threads": 1}


class Scrapes:
    """What the scrapes of ``/metrics`` say, with counters read as ``rate()`` would: a series
    that is new (a real server added) or restarted counts from zero, a removed one drops out."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self.probes_ok = 0.0  # probes seen since the first scrape
        self.probes_failed = 0.0
        self.gauges: dict[str, float] = {}  # the last scrape's unlabelled picks, see update
        self.at: float | None = None
        self.seconds: list[float] = []  # each scrape's duration
        self.size = 0

    def update(self, body: bytes, at: float, seconds: float) -> None:
        probes: dict[str, float] = {}
        gauges: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith("director_check_probes_total{"):
                labels, _, text = line.rpartition(" ")
                probes[labels] = float(text)
            elif line.startswith(PICK):
                name, _, text = line.rpartition(" ")
                gauges[name] = gauges.get(name, 0.0) + float(text)
        if self.at is not None:
            for labels, value in probes.items():
                before = self._last.get(labels, 0.0)
                delta = value - before if value >= before else value
                if 'result="ok"' in labels:
                    self.probes_ok += delta
                else:
                    self.probes_failed += delta
        self._last, self.gauges, self.at = probes, gauges, at
        self.seconds.append(seconds)
        self.size = len(body)

    def gauge(self, name: str) -> float:
        return self.gauges.get(name, 0.0)


PICK = (
    'director_config_reloads_total{result="success"}',
    'director_config_reloads_total{result="failure"}',
    "director_check_local_failures_total",
    'director_role{role="master"}',
)


@dataclass(frozen=True)
class Sample:
    t: float  # s since the run started
    # /proc/PID, read every half second over the window since the previous sample: the RSS
    # floor is the level a leak raises (a scrape renders several MB while it runs, the peak).
    rss: int  # bytes, the lowest VmRSS
    rss_peak: int  # bytes, the highest
    rss_anon: int  # bytes, the lowest RssAnon (the heap, without mapped files)
    fds: int  # the fewest open descriptors (probes in flight come and go above it)
    fds_peak: int
    tasks: int
    timers: int
    threads: int
    probes_per_s: float  # over the window since the previous sample, from the scrapes
    failed_per_s: float
    cpu: float  # % of one core over that window (/proc/PID/stat)
    role: str
    vip: str  # who holds the VIP: director, peer, both, none
    up: int  # real servers checked up, of
    checked: int
    reloads: int  # accepted (director_config_reloads_total), cumulative
    rejected: int
    flips: int  # role flips that happened (the VIP moved as asked), cumulative
    scrape_ms: float  # median scrape over the window
    scrape_kb: int


HEAD = (
    f"{'min':>6} {'RSS MB':>7} {'peak':>7} {'anon MB':>7} {'fds':>7} {'tasks':>5} {'timers':>6}"
    f" {'thr':>3}"
    f" {'probes/s':>8} {'fail/s':>6} {'cpu%':>5} {'role':7} {'VIP':8} {'up':>11}"
    f" {'reloads':>7} {'flips':>5} {'scrape ms':>9} {'KB':>6}"
)


def line(s: Sample) -> str:
    return (
        f"{s.t / 60:6.1f} {s.rss / MB:7.2f} {s.rss_peak / MB:7.2f} {s.rss_anon / MB:7.2f}"
        f" {f'{s.fds}-{s.fds_peak}':>7} {s.tasks:5} {s.timers:6} {s.threads:3}"
        f" {s.probes_per_s:8.0f} {s.failed_per_s:6.1f} {s.cpu:5.1f}"
        f" {s.role:7} {s.vip:8} {f'{s.up}/{s.checked}':>11} {s.reloads:7}"
        f"{'!' if s.rejected else ' '}{s.flips:5} {s.scrape_ms:9.0f} {s.scrape_kb:6}"
    )


class Watch:
    """The daemon's memory and descriptors from /proc, lowest and highest since the last take."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._read_at = 0.0
        self.reset()

    def reset(self) -> None:
        self.rss: list[int] = []
        self.anon: list[int] = []
        self.fds: list[int] = []

    def read(self, now: float, every: float = 0.5) -> None:
        if now - self._read_at < every:
            return
        self._read_at = now
        status = proc_status(self.pid)
        self.rss.append(status.get("VmRSS", 0))
        self.anon.append(status.get("RssAnon", 0))
        self.fds.append(len(os.listdir(f"/proc/{self.pid}/fd")))


def proc_status(pid: int) -> dict[str, int]:
    """/proc/PID/status's kB fields (in bytes) and Threads."""
    out: dict[str, int] = {}
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = text.partition(":")
        words = value.split()
        if words and words[0].isdigit():
            out[key] = int(words[0]) * (1024 if len(words) > 1 and words[1] == "kB" else 1)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in points)
    mv = statistics.fmean(v for _, v in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if den == 0 else sum((t - mt) * (v - mv) for t, v in points) / den * 3600


def report(samples: list[Sample], warmup: float) -> list[str]:
    """The table, the growth and one verdict per goal."""
    out = ["", "Per sample:", HEAD, *(line(s) for s in samples)]
    settled = [s for s in samples if s.t >= warmup] or samples[-1:]
    if not settled:
        return [*out, "no samples"]
    last = settled[-1]
    window = [s for s in settled if s.t >= last.t - RSS_WINDOW - 5]  # 5 s: sampling jitter
    first = window[0]
    span = (last.t - first.t) / 60
    # A floor can still sit a few MB high (a reload's garbage not yet returned): the growth
    # compares the lowest floor of the window's first three samples with its last three's.
    ends = min(3, max(1, len(window) // 2))
    start_floor = min(s.rss for s in window[:ends])
    end_floor = min(s.rss for s in window[-ends:])
    growth = end_floor - start_floor
    anon = min(s.rss_anon for s in window[-ends:]) - min(s.rss_anon for s in window[:ends])
    rate = slope_per_hour([(s.t, s.rss / MB) for s in window])
    out += [
        "",
        "RSS: the lowest of the half-second readings in each sample's window (the floor a leak"
        " raises); peak: the highest.",
        f"Warm-up: the first {warmup / 60:.1f} min are left out of the growth figures.",
        f"RSS over the last {span:.1f} min (minute {first.t / 60:.1f} to {last.t / 60:.1f}),"
        f" lowest floor of the first {ends} and of the last {ends} samples:"
        f" {start_floor / MB:.2f} -> {end_floor / MB:.2f} MB, growth {growth / MB:+.2f} MB"
        f" (anonymous {anon / MB:+.2f} MB); floors first -> last sample"
        f" {first.rss / MB:.2f} -> {last.rss / MB:.2f} MB"
        + (f"; least-squares trend {rate:+.2f} MB/h" if span >= 10 else ""),
    ]
    short = " (a short run: indicative only, the goal is over 20 min)" if span < 19.5 else ""
    verdicts = [
        (
            f"RSS growth over the last {span:.0f} min < 2 MB{short}",
            growth < RSS_GOAL,
            f"{growth / MB:+.2f} MB",
        )
    ]
    thirds = max(1, len(settled) // 3)
    for name, values in (
        ("open fds", [s.fds for s in settled]),  # the floor: without the probes in flight
        ("tasks", [s.tasks for s in settled]),
        ("timers", [s.timers for s in settled]),
        ("threads", [s.threads for s in settled]),
    ):
        early, late = statistics.median(values[:thirds]), statistics.median(values[-thirds:])
        out.append(
            f"{name}: min {min(values)}, max {max(values)} over the run after warm-up;"
            f" median of the first third {early:g}, of the last third {late:g}"
        )
        verdicts.append(
            (f"{name} flat after warm-up", late - early <= FLAT[name], f"{late - early:+g}")
        )
    rates = [s.probes_per_s for s in settled if s.probes_per_s > 0]
    if rates:
        out.append(
            f"probes/s: min {min(rates):.0f}, median {statistics.median(rates):.0f},"
            f" max {max(rates):.0f}; failed/s max {max(s.failed_per_s for s in settled):.1f}"
        )
    out.append("")
    out += [f"{'PASS' if ok else 'FAIL'}: {what} ({figure})" for what, ok, figure in verdicts]
    return out
