"""The cyclic garbage collector kept out of the large renderings' way.

A status or a scrape of a 100,000-server table allocates millions of short-lived objects in a
worker thread. Each allocation counts towards the collector's thresholds, and a full collection
triggered by them walks every object made since :func:`director.app.settle_heap` froze the heap
(the checks' last outcomes, the last two IPVS readings: hundreds of thousands) while holding the
GIL: 0.2-0.7 s during which the event loop cannot run (``bench.scale --profile gc``). The
renderings build trees without reference cycles that reference counting frees, so while one
runs the collector is paused; it runs again as usual when the last one ends. The interpreter's
switch interval is also shortened meanwhile: the event loop's thread gives up the GIL at each
system call, and with the default 5 ms it could wait that long to get it back from the rendering
thread after every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_renderings = 0
_was_enabled = True
_fast = 0
_interval = 0.005
RENDER_SWITCH_INTERVAL = 0.0005  # s: how long the loop may wait for the GIL while one renders


@contextlib.contextmanager
def fast_switch() -> Iterator[None]:
    """The interpreter's switch interval shortened to :data:`RENDER_SWITCH_INTERVAL` while any
    caller is inside (nested and threads alike); restored when the last one leaves."""
    global _fast, _interval
    with _lock:
        if _fast == 0:
            _interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_interval, RENDER_SWITCH_INTERVAL))
        _fast += 1
    try:
        yield
    finally:
        with _lock:
            _fast -= 1
            if _fast == 0:
                sys.setswitchinterval(_interval)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic cyclic collection while any caller is inside (nested and threads alike);
    the collector's previous state is restored when the last one leaves. The switch interval
    is shortened meanwhile (:func:`fast_switch`)."""
    global _renderings, _was_enabled
    with _lock:
        if _renderings == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _renderings += 1
    try:
        with fast_switch():
            yield
    finally:
        with _lock:
            _renderings -= 1
            if _renderings == 0 and _was_enabled:
                gc.enable()


def run_paused(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` with the collector paused (for ``asyncio.to_thread``);
    then the C allocator gives back what the rendering freed (:func:`trim`)."""
    try:
        with collector_paused():
            return function(*args, **kwargs)
    finally:
        trim()


def run_beside_loop(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``function(*args, **kwargs)`` with the switch interval shortened (:func:`fast_switch`):
    for work done often in a worker thread (a reading of the IPVS counters every
    ``stats_interval``), so the event loop's thread does not wait the default 5 ms switch
    interval for the GIL after each of its system calls while it runs.

    The collector is not paused: a paced reading of 100,000 destinations lasts seconds of
    every ``stats_interval`` (5 s), and what the event loop's probes made meanwhile (10,000 a
    second, several tracked objects each) was left uncollected, then walked at once by the
    first young collection after it and again by the middle one: 100-300 ms pauses of the loop
    (``bench.scale --profile gc``). A reading itself makes about two tracked objects per
    service (:class:`director.ipvs.stats.DestReadings`), so the collections it triggers stay
    young and small."""
    with fast_switch():
        return function(*args, **kwargs)


YOUNG_EVERY = 0.1  # s between two young collections made by YoungCollector
MIDDLE_EVERY = 10  # young collections per middle one (Python's own threshold1)


class YoungCollector:
    """Young and middle collections on a clock, not only on the allocation count.

    Python collects the young generation when its allocations outnumber its deallocations by
    700. A daemon at rest replaces objects as fast as it makes them (each probe's outcome,
    timer entry and row replace the check's previous ones), so that count stays low and a
    young collection is rare, while every object made meanwhile waits in the young list: all
    the checks' live state, 300,000 objects at 100,000 checks (``bench.scale --profile gc``,
    the census). When a burst (a reading, a compile, a status) finally triggered one, it walked
    them all: 100-200 ms of a stalled event loop, and the middle collection after it as much
    again. Collected every :data:`YOUNG_EVERY` s (every :data:`MIDDLE_EVERY`-th one the middle
    generation as well), a collection walks what 0.1 s (or 1 s) made: a few milliseconds. Full
    collections are left to Python (:func:`director.app.settle_heap` sets how often). While
    :func:`collector_paused` pauses it (a compile), only the young generation is collected;
    nothing while the collector is off otherwise (the start)."""

    def __init__(
        self,
        every: float = YOUNG_EVERY,
        middle_every: int = MIDDLE_EVERY,
        collect: Callable[[int], int] = gc.collect,
    ) -> None:
        self.every = every
        self.middle_every = middle_every
        self._collect = collect
        self._young = 0
        self._handle: asyncio.TimerHandle | None = None

    def tick(self) -> int | None:
        """One collection now: the generation collected (1 every ``middle_every``-th time, else
        0; 0 while paused), or None while the collector is off."""
        if gc.isenabled():
            self._young += 1
            generation = 1 if self._young % self.middle_every == 0 else 0
        elif _renderings and _was_enabled:
            # paused by a compile (collector_paused): still the young generation, what the
            # last 0.1 s made, so the probes' objects do not pile up for the seconds a
            # resync's compile lasts; no middle collection walks the table it builds
            generation = 0
        else:
            return None  # off (the start, until READY)
        self._collect(generation)
        return generation

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """A tick every ``every`` s on ``loop`` until :meth:`stop`."""
        self.stop()
        self._handle = loop.call_later(self.every, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = loop.call_later(self.every, self._fire, loop)
        self.tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Pacer:
    """Called often by work in a worker thread: after each ``work`` seconds of it, a sleep of
    ``rest`` seconds with the GIL released. At 10,000 checks a second the event loop's thread
    needs most of a CPU and gives the GIL up at every system call; sharing it with a busy
    thread, it waits for it again each time, so a 0.3 s reading of the IPVS counters left it
    that far behind. Paced, the reading takes ``(work + rest) / work`` times longer and the
    loop runs uncontended in between."""

    def __init__(self, work: float = 0.002, rest: float = 0.004) -> None:
        self.work = work
        self.rest = rest
        self.since = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self.since >= self.work:
            time.sleep(self.rest)
            self.since = time.perf_counter()


async def streamed(chunks: Iterator[bytes]) -> AsyncGenerator[bytes, None]:
    """``chunks`` advanced in a worker thread, one at a time, with the collector paused as in
    :func:`run_paused` from the first to the last (then :func:`trim`): a large body is sent as
    it is rendered, and the sender's ``await`` of each write (its transport's backpressure)
    holds the rendering back. Independent of the HTTP server that sends them. If the caller
    stops early (the client went away), the chunk being made is finished and dropped."""
    end = object()
    try:
        with collector_paused():
            while True:
                chunk = await asyncio.to_thread(next, chunks, end)
                if chunk is end:
                    return
                assert isinstance(chunk, bytes)
                yield chunk
    finally:
        trim()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        # the process's own symbols, libc's among them: no ctypes.util.find_library, which
        # runs ldconfig (a subprocess at every start) and imports shutil, tempfile, bz2, lzma
        function: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return function


_trim = _malloc_trim()

M_MMAP_THRESHOLD = -3  # mallopt's parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # bytes: a block this large or larger is a mapping of its own
ARENA_MAX = 2  # glibc's arenas, whatever the number of threads


def tune_malloc() -> bool:
    """glibc's allocator set for a daemon that builds large short-lived tables; False when it
    is not glibc's.

    By default glibc maps a block of 128 KiB or more on its own and unmaps it when freed, but
    the first such block freed raises that threshold to its size (up to 32 MiB): from then on
    the hash tables and lists of a reading or a rendering (megabytes each at 100,000 servers)
    come from the heap, and what they leave there when freed stays resident until a
    ``malloc_trim``. Worker threads also get arenas of their own (up to 8 per CPU), each with
    its own free space. At 10,000 x 10 the daemon's resident size grew by 50 MB in its first
    minutes of readings; with the threshold fixed at :data:`MMAP_THRESHOLD` and
    :data:`ARENA_MAX` arenas it did not (``bench.scale --profile gc``, the heap's sections).
    The cost is a ``mmap`` and its page faults per large block: 12 readings of 100,000
    destinations in a worker thread made 24,900 minor faults against 8,800 (milliseconds of a
    reading of seconds), and left the process at 72 MB against 91."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENA_MAX))


def trim() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``): a rendering of
    a large table frees hundreds of MB of strings and lists that glibc would otherwise keep,
    and the daemon's resident size would stay at its highest point."""
    if _trim is not None:
        _trim(0)
