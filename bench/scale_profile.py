"""``tests.helpers.director_proc`` under a profiler, for ``bench.scale --profile``.

``DT_PROFILE=mem``: tracemalloc from start; on SIGUSR1 the largest live allocations by line and
by traceback go to ``$DT_PROFILE_OUT.mem``. ``DT_PROFILE=cpu``: cProfile of the event loop's
thread, written to ``$DT_PROFILE_OUT.prof`` when the daemon stops. ``DT_PROFILE=gc``: the
cyclic collector's pauses by generation (count, total, longest) to ``$DT_PROFILE_OUT.gc`` on
SIGUSR1. In ``mem`` and ``gc`` modes, also where every thread was each time the resident size
grew by 4 MB or more within 0.2 s (its peaks: what leaves the heap fragmented), to
``$DT_PROFILE_OUT.rss`` on SIGUSR1; and the resident size by kind of mapping with the Python
allocator's account of its arenas to ``$DT_PROFILE_OUT.heap`` (on SIGRTMIN too).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import os
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from types import FrameType

from director import offload
from tests.helpers import director_proc

MODE = os.environ.get("DT_PROFILE", "")
OUT = os.environ.get("DT_PROFILE_OUT", "/tmp/dt-scale-profile")


GC: dict[int, list[float]] = {}  # generation -> [collections, total s, longest s]
_gc_started = 0.0


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took = time.perf_counter() - _gc_started
    row = GC.setdefault(info["generation"], [0, 0.0, 0.0])
    row[0] += 1
    row[1] += took
    row[2] = max(row[2], took)


def census() -> str:
    """What a full collection walks now: the tracked objects of each generation (the frozen
    ones are not walked), and the most common types of the oldest."""
    counts = [len(gc.get_objects(generation)) for generation in range(3)]
    types: dict[str, int] = {}
    for obj in gc.get_objects(2):
        name = type(obj).__qualname__
        types[name] = types.get(name, 0) + 1
    top = sorted(types.items(), key=lambda kv: -kv[1])[:25]
    lines = [
        f"tracked by generation {counts}, frozen {gc.get_freeze_count()}, collector "
        f"{'enabled' if gc.isenabled() else 'paused'}, counts {gc.get_count()}\n"
    ]
    lines += [f"{n:9d} {name}\n" for name, n in top]
    return "".join(lines)


def resident() -> str:
    """The resident size by kind of mapping (/proc/self/smaps): glibc's heap, anonymous maps
    (pymalloc's 1 MiB arenas, glibc's large blocks and thread arenas), files (code); then
    pymalloc's own account of its arenas (``sys._debugmallocstats``): how much of the
    anonymous share is live objects and how much free blocks in arenas kept by a few."""
    kinds: dict[str, float] = {}
    kind = ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            kind = (
                "heap"
                if name == "[heap]"
                else "anonymous"
                if not name
                else (
                    "stack"
                    if name.startswith("[stack")
                    else "files"
                    if name.startswith("/")
                    else "other"
                )
            )
        elif head and head[0] == "Rss:":
            kinds[kind] = kinds.get(kind, 0.0) + int(head[1]) / 1024
    lines = [
        "resident by mapping: "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    ]
    import tempfile

    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    keep = ("# arenas", "# bytes in", "# bytes lost", "Total", "# times object malloc")
    lines += [line for line in text.splitlines() if line.startswith(keep)][:12]
    return "\n".join(lines) + "\n"


def heap(signum: int = 0, frame: FrameType | None = None) -> None:
    """A section of ``$DT_PROFILE_OUT.heap`` (appended: bench.scale asks once every server is
    up, and again with the rest of the dump)."""
    with open(OUT + ".heap", "a") as f:
        f.write(f"--- {time.monotonic() - _t0:.1f} s\n" + resident())


def dump(signum: int = 0, frame: FrameType | None = None) -> None:
    if MODE in ("mem", "gc"):
        heap()
    if GROWTH:
        with open(OUT + ".rss", "w") as f:
            f.write("\n".join(GROWTH) + "\n")
    if MODE == "gc":
        with open(OUT + ".gc", "w") as f:
            for generation, (n, total, longest) in sorted(GC.items()):
                f.write(
                    f"generation {generation}: {n:.0f} collections, {total:.2f} s in all, "
                    f"longest {longest * 1000:.0f} ms\n"
                )
            f.write(census())
            forks = offload.FORKS
            if forks.count:
                mean = forks.total / forks.count * 1000
                f.write(
                    f"fork(): {forks.count} calls on the loop, {mean:.1f} ms on average, "
                    f"longest {forks.longest * 1000:.1f} ms\n"
                )
            f.write("stalls (samples every 10 ms while the loop missed its 5 ms heartbeat):\n")
            for where, (n, longest) in sorted(STALLS.items(), key=lambda kv: -kv[1][0])[:40]:
                f.write(f"{n:5.0f} {longest * 1000:6.0f} ms {where}\n")
            f.write(
                f"the loop's callbacks of {SLOW_AFTER * 1000:.0f} ms or more (n, total, longest):\n"
            )
            for name, (n, total, longest) in sorted(SLOW.items(), key=lambda kv: -kv[1][1])[:30]:
                f.write(f"{n:5.0f} {total:6.2f} s {longest * 1000:6.0f} ms {name}\n")
            f.write("the same samples, the loop || the other threads that were not idle:\n")
            for where, (n, longest) in sorted(TOGETHER.items(), key=lambda kv: -kv[1][0])[:40]:
                f.write(f"{n:5.0f} {longest * 1000:6.0f} ms {where}\n")
        return
    if MODE != "mem":
        return
    snap = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()
    rss = _rss_mb()
    with open(OUT + ".mem", "w") as f:
        f.write(
            f"traced now {current / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB; RSS {rss:.0f} MB "
            f"(tracemalloc's own bookkeeping {tracemalloc.get_tracemalloc_memory() / 1e6:.0f} MB "
            "of it)\n"
        )
        f.write("by subsystem (the innermost project frame of each allocation):\n")
        for name, (size, count) in by_subsystem(snap)[:40]:
            f.write(f"{size / 1e6:8.1f} MB {count:9d} {name}\n")
        f.write("----\n")
        for st in snap.statistics("filename")[:40]:
            f.write(f"{st.size / 1e6:8.1f} MB {st.count:9d} {st.traceback.format()[-1]}\n")
        f.write("----\n")
        for st in snap.statistics("lineno")[:40]:
            f.write(f"{st.size / 1e6:8.1f} MB {st.count:9d} {st.traceback.format()[-1]}\n")
        f.write("----\n")
        for st in snap.statistics("traceback")[:25]:
            f.write(f"{st.size / 1e6:8.1f} MB {st.count:9d}\n")
            f.write("\n".join(st.traceback.format()) + "\n")


# Subsystems by the path of the innermost frame of ours (director/, tests/, bench/) in an
# allocation's traceback: the in-memory kernel (a test double: in production the table is the
# kernel's) is what it allocates itself (its table, last weights); a reading it makes is the
# readings' (stats.py: the daemon keeps the same from a netlink dump).
SUBSYSTEMS = (
    ("director/ipvs/memory.py", "in-memory IPVS kernel (test double)"),
    ("director/ipvs/stats.py", "IPVS readings (ipvs/stats.py)"),
    ("director/ipvs/", "ipvs model / netlink (ipvs/)"),
    ("director/config/", "config model (config/)"),
    ("director/checks/", "checks (checks/)"),
    ("director/health.py", "health glue (health.py)"),
    ("director/desired.py", "desired table (desired.py)"),
    ("director/reconcile/", "reconciler (reconcile/)"),
    ("director/metrics", "metrics"),
    ("director/status", "status"),
    ("director/", "director (other)"),
    ("tests/", "test helpers"),
    ("bench/", "bench"),
)


def _subsystem(tb: tracemalloc.Traceback) -> str:
    files = [frame.filename for frame in reversed(tb)]  # innermost first
    for name in files:
        for part, label in SUBSYSTEMS:
            if part in name and "site-packages" not in name:
                return f"{label} {Path(name).name}" if label == "director (other)" else label
    return f"outside (imports, libraries): {Path(files[0]).name if files else '?'}"


def by_subsystem(snap: tracemalloc.Snapshot) -> list[tuple[str, tuple[int, int]]]:
    rows: dict[str, list[int]] = {}
    for st in snap.statistics("traceback"):
        row = rows.setdefault(_subsystem(st.traceback), [0, 0])
        row[0] += st.size
        row[1] += st.count
    return sorted(((k, (v[0], v[1])) for k, v in rows.items()), key=lambda kv: -kv[1][0])


STALLS: dict[str, list[float]] = {}  # where the loop's thread was -> [samples, longest s]
STALL_AFTER = 0.05  # s without a heartbeat of the loop: a stall
_beat = [0.0]
_beat_task: list[asyncio.Task[None]] = []


def _where(frame: FrameType | None, depth: int = 6) -> str:
    lines: list[str] = []
    while frame is not None and len(lines) < depth:
        code = frame.f_code
        lines.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return " < ".join(lines)


def _watch(loop_thread: int) -> None:
    """Samples every thread while the loop misses its heartbeat (gc mode)."""
    while True:
        time.sleep(0.01)
        late = time.perf_counter() - _beat[0]
        if late < STALL_AFTER:
            continue
        frames = sys._current_frames()
        for ident, frame in frames.items():
            if ident == threading.get_ident():
                continue
            who = "loop" if ident == loop_thread else "other"
            row = STALLS.setdefault(f"{who}: {_where(frame)}", [0, 0.0])
            row[0] += 1
            row[1] = max(row[1], late)
        # the same sample as one line: the loop's innermost frame and what the other threads
        # that were not idle were doing (the one holding the interpreter lock among them)
        busy = sorted(
            _where(frame, 2)
            for ident, frame in frames.items()
            if ident not in (threading.get_ident(), loop_thread) and not _idle(frame)
        )
        loop_frame = frames.get(loop_thread)
        key = f"{_where(loop_frame, 2) if loop_frame else '?'} || {' | '.join(busy) or '-'}"
        row = TOGETHER.setdefault(key, [0, 0.0])
        row[0] += 1
        row[1] = max(row[1], late)


TOGETHER: dict[str, list[float]] = {}  # "loop's frames || busy others' frames" -> [n, longest]
IDLE_FRAMES = ("_worker", "_watch", "_grow_watch", "wait")  # a thread waiting, not running


def _idle(frame: FrameType) -> bool:
    return frame.f_code.co_name in IDLE_FRAMES


GROWTH: list[str] = []  # the resident size's steps up, and where each thread was
_t0 = time.monotonic()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _grow_watch(loop_thread: int) -> None:
    """Samples every 0.2 s; a step up of 4 MB or more is recorded with each thread's frames."""
    last = _rss_mb()
    while True:
        time.sleep(0.2)
        now = _rss_mb()
        if now - last >= 4:
            frames = sys._current_frames()
            where = [
                f"  {'loop' if ident == loop_thread else 'other'}: {_where(frame)}"
                for ident, frame in frames.items()
                if ident != threading.get_ident()
            ]
            GROWTH.append(
                f"{time.monotonic() - _t0:7.1f} s {last:6.0f} -> {now:6.0f} MB\n" + "\n".join(where)
            )
        last = now


def restart(signum: int = 0, frame: FrameType | None = None) -> None:
    """From now on (bench.scale sends SIGUSR2 once every server is up): the start's
    collections and stalls are forgotten."""
    GC.clear()
    STALLS.clear()
    TOGETHER.clear()
    SLOW.clear()


SLOW: dict[str, list[float]] = {}  # a callback of the loop that ran 20 ms or more -> [n, longest]
SLOW_AFTER = 0.02


def _time_callbacks() -> None:
    """Every callback the loop runs timed (gc mode); those of :data:`SLOW_AFTER` or more kept
    by name: which of the loop's own pieces of work are the long ones."""
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        began = time.perf_counter()
        run(handle)
        took = time.perf_counter() - began
        if took >= SLOW_AFTER:
            callback = getattr(handle, "_callback", None)
            name = getattr(callback, "__qualname__", None) or repr(callback)[:80]
            if name.endswith("__step") or name.endswith("__wakeup"):
                task = getattr(callback, "__self__", None)
                coro = getattr(task, "get_coro", lambda: None)()
                name += f" ({getattr(coro, '__qualname__', '?')})"
            row = SLOW.setdefault(name, [0, 0.0, 0.0])
            row[0] += 1
            row[1] += took
            row[2] = max(row[2], took)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]


async def _heartbeat() -> None:
    while True:
        _beat[0] = time.perf_counter()
        await asyncio.sleep(0.005)


async def main() -> int:
    if MODE == "gc":
        _time_callbacks()
        _beat[0] = time.perf_counter()
        _beat_task.append(asyncio.get_running_loop().create_task(_heartbeat()))
        threading.Thread(target=_watch, args=(threading.get_ident(),), daemon=True).start()
    if MODE in ("mem", "gc"):
        threading.Thread(target=_grow_watch, args=(threading.get_ident(),), daemon=True).start()
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
    if MODE == "gc":
        gc.callbacks.append(_gc_timer)
    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGRTMIN, heap)
    signal.signal(signal.SIGUSR2, restart)
    sys.exit(asyncio.run(main()))
