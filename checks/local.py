"""Local failures: a probe that could not run for a reason of this director's own.

Out of file descriptors (EMFILE, ENFILE), socket buffers or memory (ENOBUFS, ENOMEM), ephemeral
ports (EADDRNOTAVAIL, or EAGAIN from ``connect``), processes (EAGAIN from ``fork``) or epoll
watches (ENOSPC): the probe says nothing about the real server. Such a result carries the errno
name in ``ProbeResult.local``; the scheduler then counts neither a failure nor a success (the
round is void, see :mod:`checks.schedule`), and the runner reports it as the director's fault
through :class:`LocalFaults`: counts by reason, the last one, and at most one log line per
reason every ``every`` seconds with the count since the line before.

Pure: time comes in as ``now``.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Hashable
from dataclasses import dataclass

# Errors that say "this machine could not", never "the server did not".
LOCAL_ERRNOS = frozenset(
    {
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOBUFS,
        errno.ENOMEM,
        errno.EADDRNOTAVAIL,
        errno.ENOSPC,
    }
)
# EAGAIN is local before the connection exists (socket(), connect(): no ephemeral port or
# routing cache entry; fork(): the process limit); afterwards it is only "try again later".
LOCAL_BEFORE_CONNECT = frozenset({errno.EAGAIN})
LOG_EVERY = 10.0  # seconds between two log lines of one reason


def local_reason(exc: BaseException | None, *, connected: bool = False) -> str | None:
    """The errno name (``"EMFILE"``) if ``exc``, or an exception it was raised from, is a local
    failure; None when it is about the server. TLS errors never are (their errno is OpenSSL's)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
            code = exc.errno
            if code in LOCAL_ERRNOS or (not connected and code in LOCAL_BEFORE_CONNECT):
                return errno.errorcode.get(code, str(code))
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def local_error(reason: str, error: str) -> str:
    """A probe's error when the failure was local: what happened, and that it does not count."""
    return f"{error} (local {reason}: a fault of this director, not counted against the server)"


@dataclass(frozen=True, slots=True)
class LocalFault:
    """The last local failure: why, the probe's error, which check, when (loop time)."""

    reason: str
    error: str
    check_id: Hashable
    at: float


@dataclass(frozen=True, slots=True)
class LogLine:
    """A line to log: ``count`` failures of ``reason`` since the last line (this one included),
    ``total`` since start; ``error`` is the latest."""

    reason: str
    count: int
    total: int
    error: str


class LocalFaults:
    """Local failures by reason, and when to say so in the log."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        self.every = every
        self.counts: dict[str, int] = {}
        self.last: LocalFault | None = None
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def record(self, reason: str, error: str, check_id: Hashable, now: float) -> LogLine | None:
        """Count one; a line to log if none was logged for ``reason`` in the last ``every``
        seconds (the first one of a reason is logged at once)."""
        total = self.counts[reason] = self.counts.get(reason, 0) + 1
        self.last = LocalFault(reason, error, check_id, now)
        count = self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        logged = self._logged_at.get(reason)
        if logged is not None and now - logged < self.every:
            return None
        self._logged_at[reason] = now
        self._unlogged[reason] = 0
        return LogLine(reason, count, total, error)
