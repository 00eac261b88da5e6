"""director.heap: what a worker thread beside the event loop changes of the interpreter's
collector and switch interval, and that it is restored."""

from __future__ import annotations

import gc
import sys
import threading

from director.heap import RENDER_SWITCH_INTERVAL, collector_paused, run_beside_loop, run_paused


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
