"""Large renderings (a status, a scrape) made in a forked child process, read back from a pipe.

A 100,000-server status or scrape is seconds of pure Python. In a worker thread it shares the
GIL with the event loop's thread, which gives the GIL up at every system call of its probes
(socket, connect, send, close: ~40,000 a second at 10,000 checks/s) and then waits for it again
behind the rendering thread, up to the switch interval each time: the loop fell seconds behind
during each rendering (``bench.scale --profile gc`` samples where it waits). A child made by
``fork()`` has the taken snapshot as it is, copy-on-write, and its own interpreter lock, so the
loop pays for the ``fork()`` (milliseconds) and for reading the result from a pipe, a chunk at
a time, as the sender can take it (the pipe's capacity is the backpressure). The child's
garbage never reaches the daemon's heap either: its resident size does not grow by a
rendering's peak.

The child closes every descriptor but its pipe's at once (a probe's socket closed by the daemon
must not stay open in it), runs only the pure rendering and the writes to its pipe, then
``os._exit``: no event loop, no logging, no locks another thread of the daemon might have held
at the ``fork()`` (the C allocator's are made safe by glibc's fork handlers). Without
``fork()`` (or when it fails: out of memory or processes) the rendering runs in a worker
thread as before (:func:`director.heap.streamed`).

At most :data:`MAX_CHILDREN` children render at once per event loop; more renderings wait for a
slot in arrival order (the HTTP server's connection limit bounds how many wait). A child's own
memory is what the rendering allocates plus every page of the daemon's heap that either side
writes while it runs (copy-on-write): ~350 MB at 100,000 servers, so two scrapers and a
``directorctl status`` must not cost three of them at once. The loop's cost of each ``fork()``
(copying the page tables: proportional to the daemon's resident size) is kept in
:data:`FORKS`.

A child runs at the lowest CPU priority (:data:`CHILD_NICE`). At 10,000 checks a second the
event loop's thread needs most of a CPU; a child rendering at the same priority took one of
the machine's CPUs, and with anything else running the loop waited for a CPU in turns with it:
the stalls of ``bench.scale --profile gc`` during a status or a scrape at 100,000 servers were
the loop's thread inside its own probes' system calls, not one long call. Niced, the child
takes what the loop leaves (the rendering is slower on a busy machine, the loop is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import pickle
import signal
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass

from director.heap import streamed

MAX_FD = 1 << 20  # above any descriptor (RLIMIT_NOFILE's hard limit is at most nr_open)
PIPE_SIZE = 1 << 20  # bytes the child may write ahead of the reader
CHILD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
MAX_CHILDREN = 2  # rendering children at once, per event loop (see the module docstring)
CHILD_NICE = 19  # a rendering child's niceness: the lowest CPU priority (see the docstring)


@dataclass
class ForkStats:
    """What the ``fork()`` calls cost the event loop's thread (seconds)."""

    count: int = 0
    total: float = 0.0
    longest: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)


FORKS = ForkStats()
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slot() -> asyncio.Semaphore:
    """The running loop's bound on rendering children (made at its first rendering)."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_CHILDREN)
    return slots


class RenderFailed(Exception):
    """The child process that rendered ended without writing the whole body."""


def _child(make: Callable[[], Iterator[bytes]], fd: int, nice: int = CHILD_NICE) -> None:
    """In the child: write each chunk to ``fd``; exit 0 when all were written. ``nice``: the
    niceness it runs at (0: the daemon's own priority)."""
    code = 1
    try:
        # The child holds a copy of every descriptor of the daemon: a socket the daemon closes
        # (a probe's, a client's) would stay open, its port taken and its peer waiting, until
        # the rendering ends. Only the pipe (and the standard streams) are kept.
        os.closerange(3, fd)
        os.closerange(fd + 1, MAX_FD)
        # Signals go to the daemon, not here: the loop's wakeup descriptor is the parent's,
        # and a stop or reload sent to the whole process group (a Ctrl-C, kill -TERM -PGID)
        # is the daemon's to act on, not a failure of this rendering (the start's config
        # digest, right after READY, failed the start with it). The daemon ends a child it
        # no longer wants with SIGKILL.
        with contextlib.suppress(ValueError):  # not the main thread: nothing was set
            signal.set_wakeup_fd(-1)
        for signum in CHILD_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        gc.disable()  # short-lived: what the rendering makes is freed by the exit
        if nice:
            with contextlib.suppress(OSError):  # the CPU to the daemon's loop first (docstring)
                os.nice(nice)
        for chunk in make():
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        code = 0
    finally:
        os._exit(code)  # no atexit handlers, no buffered files of the parent flushed twice


def _made(make: Callable[[], Iterator[bytes]]) -> Iterator[bytes]:
    yield from make()  # make() runs where the first chunk is asked for: the worker thread


def _fork() -> int:
    with warnings.catch_warnings():
        # Python 3.12 warns of fork() in a process with threads; the child runs only the
        # rendering (see the module docstring), never a lock another thread held.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


async def forked(make: Callable[[], Iterator[bytes]]) -> AsyncGenerator[bytes, None]:
    """The chunks of ``make()``, made in a child process; :class:`RenderFailed` after the last
    chunk read if the child did not finish. ``make`` runs only in the child (or, when a child
    cannot be made, in a worker thread). Waits for a slot first when :data:`MAX_CHILDREN`
    children are rendering. Stopping early (``aclose``) ends the child."""
    async with _slot(), contextlib.aclosing(_forked(make)) as chunks:
        async for chunk in chunks:
            yield chunk


async def _forked(make: Callable[[], Iterator[bytes]]) -> AsyncGenerator[bytes, None]:
    read_end, write_end = os.pipe()
    try:
        began = time.perf_counter()
        pid = _fork()
        FORKS.add(time.perf_counter() - began)
    except OSError:
        os.close(read_end)
        os.close(write_end)
        async with contextlib.aclosing(streamed(_made(make))) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    if pid == 0:  # pragma: no cover (the child ends in os._exit)
        os.close(read_end)
        _child(make, write_end)
    os.close(write_end)
    loop = asyncio.get_running_loop()
    finished = False
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(read_end, False)
        while True:
            try:
                chunk = os.read(read_end, PIPE_SIZE)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(read_end, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(read_end)
                continue
            if not chunk:
                break
            yield chunk
        finished = True
    finally:
        os.close(read_end)
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        status = await asyncio.to_thread(_reap, pid)
    if status != 0:
        raise RenderFailed(f"the rendering process ended with status {status}")


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _reap(pid: int) -> int:
    """The child's exit status (its wait, so no zombie is left)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else
        return 0
    return os.waitstatus_to_exitcode(status)


async def forked_bytes(make: Callable[[], bytes]) -> bytes:
    """``make()`` rendered in a child process (:func:`forked`), as one body."""
    parts = []
    async with contextlib.aclosing(forked(lambda: iter((make(),)))) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
    return b"".join(parts)


async def forked_call(function: Callable[[], None]) -> None:
    """``function()`` run in a child process (:func:`forked`) for what it does (a file it
    writes), not for a result; an exception it raised there is raised here."""

    def make() -> Iterator[bytes]:
        try:
            function()
        except Exception as exc:  # sent back to the parent as it was
            yield _pickled(exc)

    parts = []
    async with contextlib.aclosing(forked(make)) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
    if parts:
        raise pickle.loads(b"".join(parts))  # written by our own child


def _pickled(exc: Exception) -> bytes:
    try:
        return pickle.dumps(exc)
    except Exception:  # an exception that cannot be pickled: its text
        return pickle.dumps(RenderFailed(f"{type(exc).__name__}: {exc}"))


def apart(make: Callable[[], bytes]) -> bytes | None:
    """``make()`` run to its end in a child process, at the caller's priority, and its bytes
    read back here: the caller blocks meanwhile (a start, a reload's worker thread), and the
    child's garbage never reaches this process's heap (:mod:`director.config.apart`). None
    when no child could be made or it did not finish (an exception in ``make``, killed): the
    caller does the work itself."""
    read_end, write_end = os.pipe()
    try:
        pid = _fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # pragma: no cover (the child ends in os._exit)
        os.close(read_end)
        _child(lambda: iter((make(),)), write_end, nice=0)
    os.close(write_end)
    parts = []
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        while chunk := os.read(read_end, PIPE_SIZE):
            parts.append(chunk)
    finally:
        os.close(read_end)
        status = _reap(pid)
    return b"".join(parts) if status == 0 else None
