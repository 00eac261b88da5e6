"""One absolute CLOCK_MONOTONIC timer on a timerfd, read by the event loop.

``loop.call_at`` sleeps in epoll with a millisecond timeout that asyncio rounds up, and Linux
lets a poll timeout run late by 0.1% of its length; a timerfd fires on the nanosecond deadline
(within the task's 50 us timer slack). A VRRP backup's Master_Down_Timer is exactly what the
failover time is made of, so the instance uses this where it can. ``loop.time()`` of asyncio's
loops is ``time.monotonic()``: CLOCK_MONOTONIC, the timerfd's clock.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_NONBLOCK, TFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)


class TimerFd:
    """``arm(deadline)`` (loop time, seconds) or ``arm(None)``; ``callback()`` runs on the loop
    when the deadline passes. ``OSError`` from the constructor where there is no timerfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        if loop.time() - time.monotonic() > 0.01 or time.monotonic() - loop.time() > 0.01:
            raise OSError("the event loop's clock is not CLOCK_MONOTONIC")
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_create: {os.strerror(code)}")
        self._fd: int | None = fd
        self._loop = loop
        self._callback = callback
        loop.add_reader(fd, self._expired)

    def arm(self, deadline: float | None) -> None:
        if self._fd is None:
            raise RuntimeError("timer closed")
        spec = _Itimerspec()
        if deadline is not None:
            seconds, fraction = divmod(deadline, 1.0)
            spec.it_value.tv_sec = int(seconds)
            spec.it_value.tv_nsec = int(fraction * 1e9)
            if spec.it_value.tv_sec <= 0 and spec.it_value.tv_nsec <= 0:  # zero would disarm
                spec.it_value.tv_sec, spec.it_value.tv_nsec = 0, 1
        if _libc.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"timerfd_settime: {os.strerror(code)}")

    def close(self) -> None:
        if self._fd is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _expired(self) -> None:
        if self._fd is None:
            return
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed or disarmed after it fired: nothing is due
            return
        self._callback()
