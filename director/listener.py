"""A listening socket that never lets its clients take the daemon's file descriptors.

The control socket and the HTTP listener are for a handful of local clients (``directorctl``,
Prometheus). A local process that opens thousands of idle connections to them must not exhaust
the daemon's open files, which the health checks and VRRP need. So:

- at most ``limit`` connections are open at once; at the limit the listener stops accepting
  (the kernel's backlog holds, then refuses, the rest: they cost the daemon nothing) and
  resumes when one closes;
- a connection that is idle (no request in progress) for ``idle`` seconds is closed, so the
  slots come back even from clients that connect and say nothing;
- ``accept`` failing for lack of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses the
  listener for a second instead of spinning on a socket that stays readable.

What a connection is, and when it is busy, is the owner's business: ``serve(sock)`` takes an
accepted socket and returns a :class:`Connection`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

log = structlog.get_logger("director")

# accept() failures that say "this process or machine is out of something", not "that client".
LOCAL_ACCEPT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RETRY_AFTER = 1.0  # seconds the listener pauses after a local accept failure


class Connection(Protocol):
    """One accepted connection, as the listener sees it."""

    def busy(self) -> bool:
        """A request is being read or answered (the idle timer does not run)."""

    def closed(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class ListenerStats:
    """A listener's counters."""

    accepted: int = 0
    refused_full: int = 0  # times the listener paused because it was full
    closed_idle: int = 0
    accept_errors: dict[str, int] = field(default_factory=dict)


@dataclass
class _Open:
    """An open connection and since when it has been idle."""

    connection: Connection
    idle_since: float


class Listener:
    """Accepts on ``sock`` (listening, non-blocking) while fewer than ``limit`` are open."""

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        serve: Callable[[socket.socket], Connection],
        *,
        limit: int,
        idle: float,
    ) -> None:
        if limit < 1 or idle <= 0:
            raise ValueError(f"{name}: limit must be >= 1 and idle > 0, got {limit}, {idle}")
        self.name = name
        self.sock = sock
        self.limit = limit
        self.idle = idle
        self.stats = ListenerStats()
        self._serve = serve
        self._open: list[_Open] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._full_logged = False

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self._read(True)
        self._arm_sweep()

    def close(self) -> None:
        """Stop accepting and close the listening socket and every open connection."""
        self._read(False)
        for handle in (self._sweeper, self._resume):
            if handle is not None:
                handle.cancel()
        self._sweeper = self._resume = None
        for entry in self._open:
            entry.connection.close()
        self._open.clear()
        self.sock.close()

    # -- accepting ------------------------------------------------------------------------------

    def _read(self, on: bool) -> None:
        loop = self._loop
        if loop is None or on == self._reading:
            return
        if on:
            loop.add_reader(self.sock.fileno(), self._accept)
        else:
            loop.remove_reader(self.sock.fileno())
        self._reading = on

    def _accept(self) -> None:
        assert self._loop is not None
        while True:
            self._prune()
            if len(self._open) >= self.limit:
                self._full()
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                self.stats.accept_errors[name] = self.stats.accept_errors.get(name, 0) + 1
                if exc.errno in LOCAL_ACCEPT_ERRORS:
                    log.error("listener_accept_failed", listener=self.name, error=str(exc))
                    self._read(False)
                    self._resume = self._loop.call_later(RETRY_AFTER, self._resume_reading)
                return  # ECONNABORTED and the like: the next readable event tries again
            conn.setblocking(False)
            self.stats.accepted += 1
            try:
                connection = self._serve(conn)
            except Exception:
                log.exception("listener_serve_failed", listener=self.name)
                conn.close()
                continue
            self._open.append(_Open(connection, self._loop.time()))

    def _full(self) -> None:
        self.stats.refused_full += 1
        self._read(False)
        if not self._full_logged:
            self._full_logged = True
            log.warning(
                "listener_full",
                listener=self.name,
                limit=self.limit,
                hint="more clients than the limit; the rest wait in the kernel's backlog",
            )

    def _resume_reading(self) -> None:
        self._resume = None
        self._read(True)

    # -- closing idle connections ---------------------------------------------------------------

    def _prune(self) -> None:
        self._open = [e for e in self._open if not e.connection.closed()]

    def _arm_sweep(self) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_later(min(1.0, self.idle / 2), self._sweep)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        kept: list[_Open] = []
        for entry in self._open:
            conn = entry.connection
            if conn.closed():
                continue
            if conn.busy():
                entry.idle_since = now
            elif now - entry.idle_since >= self.idle:
                conn.close()
                self.stats.closed_idle += 1
                continue
            kept.append(entry)
        self._open = kept
        if len(self._open) < self.limit and self._resume is None:
            if not self._reading:
                self._full_logged = False
            self._read(True)
        self._arm_sweep()

    def wake(self) -> None:
        """A connection closed: accept again at once if the listener was full."""
        if self._loop is None or self._reading or self._resume is not None:
            return
        self._prune()
        if len(self._open) < self.limit:
            self._full_logged = False
            self._read(True)

    def touched(self, connection: Connection) -> None:
        """``connection`` just finished a request: its idle time starts now."""
        if self._loop is None:
            return
        for entry in self._open:
            if entry.connection is connection:
                entry.idle_since = self._loop.time()
                return
