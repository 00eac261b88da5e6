"""director.heap: what a worker thread beside the event loop changes of the interpreter's
collector and switch interval, and that it is restored."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
from pathlib import Path

from director.heap import (
    RENDER_SWITCH_INTERVAL,
    YoungCollector,
    collector_paused,
    run_beside_loop,
    run_paused,
)

ROOT = Path(__file__).resolve().parents[2]


def _seen() -> tuple[bool, float]:
    return gc.isenabled(), sys.getswitchinterval()


def test_a_reading_beside_the_loop_leaves_the_collector_running() -> None:
    """A paced IPVS reading lasts seconds of every stats_interval: with the collector paused
    meanwhile, the loop's young objects piled up for one long collection after it. The switch
    interval is short while it runs, and both are as before afterwards."""
    assert gc.isenabled()
    interval = sys.getswitchinterval()
    assert interval > RENDER_SWITCH_INTERVAL
    enabled, during = run_beside_loop(_seen)
    assert enabled is True
    assert during == RENDER_SWITCH_INTERVAL
    assert _seen() == (True, interval)


def test_a_compile_pauses_the_collector_and_restores_it() -> None:
    interval = sys.getswitchinterval()
    assert run_paused(_seen) == (False, RENDER_SWITCH_INTERVAL)
    assert _seen() == (True, interval)


def test_nested_and_threaded_callers_restore_on_the_last_exit() -> None:
    """A reading beside the loop that ends while a compile is still paused keeps the short
    interval and the paused collector until the compile ends too."""
    interval = sys.getswitchinterval()
    inside, leave = threading.Event(), threading.Event()
    seen: list[tuple[bool, float]] = []

    def compile_() -> None:
        with collector_paused():
            inside.set()
            leave.wait(10)
            seen.append(_seen())

    thread = threading.Thread(target=compile_)
    thread.start()
    assert inside.wait(10)
    assert run_beside_loop(_seen) == (False, RENDER_SWITCH_INTERVAL)
    assert _seen() == (False, RENDER_SWITCH_INTERVAL)  # the compile is still inside
    leave.set()
    thread.join(10)
    assert seen == [(False, RENDER_SWITCH_INTERVAL)]
    assert _seen() == (True, interval)


class Churn:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[int] = []


def _young_after_churn(live: int, rounds: int, collector: YoungCollector | None) -> int:
    """The young generation's size after ``rounds`` replacements of each of ``live`` objects
    (as each probe's state replaces the previous one), ``collector`` ticked after each 1,000."""
    gc.collect()
    state = [Churn() for _ in range(live)]
    gc.collect()  # the state is old; from now on only replacements
    n = 0
    for _ in range(rounds):
        for i in range(live):
            state[i] = Churn()
            n += 1
            if collector is not None and n % 1000 == 0:
                collector.tick()
    return len(gc.get_objects(0))


def test_balanced_churn_fills_the_young_generation_unless_collected_on_a_clock() -> None:
    """Replacing live objects keeps Python's allocation count low: no young collection runs
    and every new object waits in the young list (300,000 at 100,000 checks, each walked at
    once by the next collection). Ticked, the young generation holds what was made since the
    last tick."""
    assert gc.isenabled()
    assert _young_after_churn(20_000, 2, None) >= 20_000
    assert _young_after_churn(20_000, 2, YoungCollector()) < 2_000
    with collector_paused():  # a resync's compile in a worker thread
        assert _young_after_churn(20_000, 2, YoungCollector()) < 2_000


def test_the_young_collector_collects_the_middle_generation_every_tenth_tick() -> None:
    made: list[int] = []

    def collect(generation: int) -> int:
        made.append(generation)
        return 0

    collector = YoungCollector(collect=collect)
    assert [collector.tick() for _ in range(20)] == ([0] * 9 + [1]) * 2
    assert made == ([0] * 9 + [1]) * 2
    with collector_paused():  # a compile: young collections only, not counted
        assert [collector.tick() for _ in range(12)] == [0] * 12
    assert made == ([0] * 9 + [1]) * 2 + [0] * 12
    gc.disable()  # off (the start): nothing
    try:
        assert collector.tick() is None
    finally:
        gc.enable()
    assert [collector.tick() for _ in range(10)] == [0] * 9 + [1]


def test_the_young_collector_ticks_on_the_loop_until_stopped() -> None:
    ticks: list[int] = []

    def collect(generation: int) -> int:
        ticks.append(generation)
        return 0

    async def run() -> None:
        collector = YoungCollector(every=0.01, collect=collect)
        collector.start(asyncio.get_running_loop())
        await asyncio.sleep(0.15)
        collector.stop()
        seen = len(ticks)
        await asyncio.sleep(0.05)
        assert len(ticks) == seen

    asyncio.run(run())
    assert 5 <= len(ticks) <= 16


FREED_IN_A_THREAD = """
import sys, threading
from director.heap import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

def work():
    big = bytes(8 << 20)  # freed: glibc's own threshold rises to 8 MiB
    del big
    keep, blocks = [], []
    for _ in range(40):  # 1 MiB blocks (a reading's tables), a small survivor after each
        blocks.append(bytearray(1 << 20))
        keep.append(bytearray(600))
    before = rss()
    del blocks
    return before, rss(), keep

box = []
thread = threading.Thread(target=lambda: box.append(work()))
thread.start()
thread.join()
print(box[0][0] - box[0][1])
"""


def test_large_blocks_a_worker_thread_frees_go_back_to_the_system() -> None:
    """40 MiB of 1 MiB blocks freed by a worker thread: glibc's defaults keep them resident
    (its threshold rose with the first large block freed); tuned, they are unmapped."""

    def returned(mode: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", FREED_IN_A_THREAD, mode],
            capture_output=True, text=True, check=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        return float(out.stdout)

    assert returned("default") < 5
    assert returned("tuned") > 35
