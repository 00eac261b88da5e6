"""Callback-driven probes for the hot checks (plain-HTTP status-only, TCP): no task, no coroutine.

A probe of a farm costs little on the wire (a handshake, a request, a status line); in Python
what costs is the event-loop machinery around it. Here a probe is a small state machine on a
bare non-blocking socket, started by a plain call, moved on by socket events, ended by a plain
call to ``done(tag, result)``:

- one ``select.epoll`` of the poller's own holds every probe socket (edge-triggered, registered
  once; closing the socket takes it out). The loop watches that one descriptor with
  ``add_reader``, and each wake hands every ready socket to its probe (no per-probe
  add_reader / remove_reader, futures or handles);
- timeouts: one deque per timeout value (deadlines of one timeout arrive in order) and one
  ``loop.call_at`` timer at the earliest live deadline; a probe that ends stays in its deque
  until a sweep passes it;
- a near server has often completed the handshake when ``connect()`` returns: the first bytes
  go out at once, so a probe typically costs two loop wakes (start, reply), each shared with
  other probes: the runner starts a tick's due probes in one batch (``checks.runner.TICK``),
  and one epoll wake hands over every reply that came meanwhile;
- the hot path is one function per side. Start: :meth:`FastProbe.begin` opens the socket,
  connects, sends the request and registers the socket (four system calls, no other call).
  Reply: :meth:`Poller._ready` calls the probe's ``read``; the HTTP status probe peeks at the
  reply, judges it (by a memo of heads seen before), closes the socket and hands the verdict
  straight to the runner's ``ok``. At 2,000 checks/s a check costs 0.025-0.027 ms of user
  time (the runner's and scheduler's parts included) and 0.05-0.054 ms of system time
  (``bench.checks_keepalived --beside``, 3 x 60 s; history in docs/architecture.md);
- the socket is closed with a reset (``LINGER_RST``): no TIME_WAIT left behind. A probe
  whose verdict comes from bytes it only peeked at (the HTTP status probe) needs no
  ``setsockopt`` for that: Linux resets a connection closed with unread data (``tcp_close``);
  it sets the linger only on the paths that read (``FastProbe.rst``).

A probe never raises out of a callback: any failure is a verdict, worded like the coroutine
probes' (``connect to 198.18.1.11:80: connection refused``, ``timed out after 1 s waiting for
...``), except a local one (no fd, port or buffer for the probe): a result with ``local`` set,
which changes no verdict (:mod:`checks.local`). :meth:`Poller.run` wraps a probe in a future
for the coroutine API (``tcp.probe``, ``HttpProber.probe``), so both APIs run the same code.
The probes themselves (plans and state machines) live next to their protocols:
:mod:`checks.probes.tcp`, :mod:`checks.probes.http`.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import math
import os
import select
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

import structlog

from checks.local import local_error, local_reason
from checks.model import ProbeResult
from checks.probes.result import Target, one_line, os_reason

T = TypeVar("T")
log = structlog.get_logger("director.checks")

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EINPROGRESS = errno.EINPROGRESS
TROUBLE = select.EPOLLERR | select.EPOLLHUP  # a failed connect, a reset
READABLE = EPOLLIN | select.EPOLLRDHUP | TROUBLE  # something for recv() to say
WATCH_IN = EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
WATCH_IN_OUT = WATCH_IN | EPOLLOUT
# The probes use the C socket type directly (no Python-level socket.socket wrapper to run).
STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
# A probe's socket is closed with a reset once the verdict is in (linger on, 0 s), as HAProxy
# closes its checks: no FIN exchange, and no TIME_WAIT socket left for a minute on either side
# (a connect-only probe, or a reply read before the server's FIN, would leave one per probe
# on the director: 120,000 at 2,000 probes/s, which the kernel then searches for every port).
SOL_SOCKET, SO_LINGER = socket.SOL_SOCKET, socket.SO_LINGER
LINGER_RST = struct.pack("ii", 1, 0)
MAX_EVENTS = 256  # per wake (more stay ready for the next); poll() sizes its buffer on it
CONNECTING, SENDING, READING = 0, 1, 2  # FastProbe.state (subclasses may add their own)


class Plan(Protocol):
    """What a fast probe needs, prepared once per check (request bytes, socket address ...)."""

    @property
    def target(self) -> Target: ...

    @property
    def timeout(self) -> float: ...

    @property
    def family(self) -> int: ...

    @property
    def sockaddr(self) -> tuple[Any, ...]: ...

    @property
    def first(self) -> bytes:
        """Sent as soon as the connection is up (b"": nothing)."""
        ...

    @property
    def probe_type(self) -> type[FastProbe]:
        """The probe class that runs this plan."""
        ...


class FastProbe:
    """One probe in flight: a socket and a state machine. Here: connect, send the plan's first
    bytes (at once if the handshake is already complete), then wait for a reply. Subclasses
    implement ``sent`` (all of the first bytes are out), ``read`` (the socket is readable in
    state READING) and ``doing`` (for error messages).

    ``rst`` says that closing the socket resets the connection (linger 0 is set, or unread
    bytes are in its receive queue); if not, the linger is set just before the close. A
    subclass that leaves bytes unread on its hot path sets ``LINGER_AT_CONNECT`` False and
    ``rst`` itself when it does."""

    LINGER_AT_CONNECT: ClassVar[bool] = True
    _PLAIN_SENT: ClassVar[bool] = True  # ``sent`` is FastProbe's (set for each subclass)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._PLAIN_SENT = cls.sent is FastProbe.sent

    __slots__ = (
        "began",
        "buffer",
        "cleanup",
        "connected",
        "deadline",
        "done",
        "fd",
        "finished",
        "ok",
        "pending",
        "plan",
        "poller",
        "rst",
        "sock",
        "state",
        "tag",
    )

    def __init__(
        self,
        poller: Poller,
        plan: Any,
        done: Callable[[Any, ProbeResult], None],
        tag: Any,
        now: float,
    ) -> None:
        self.poller = poller
        self.plan = plan
        self.done: Callable[[Any, ProbeResult], None] | None = done
        # A ``done`` that has ``ok(tag, latency, now)`` gets the verdict "up" that way: no
        # result object on the hot path (the runner's, see checks.runner.FastDone).
        self.ok: Callable[[Any, float, float], None] | None = getattr(done, "ok", None)
        self.tag = tag
        self.began, self.deadline = now, now + plan.timeout
        self.sock: Any = None  # a _socket.socket once begun
        self.fd = -1
        self.state = CONNECTING
        self.pending = b""  # still to send
        self.buffer = b""  # received so far
        self.cleanup: Callable[[], None] | None = None  # more to close than the socket
        self.connected = False
        self.finished = False
        self.rst = False

    @property
    def target(self) -> Target:
        return self.plan.target  # type: ignore[no-any-return]

    @property
    def timeout(self) -> float:
        return self.plan.timeout  # type: ignore[no-any-return]

    # -- subclasses ----------------------------------------------------------------------------

    def sent(self, now: float) -> None:
        """All of the first bytes went out: wait for the reply (or end, in a subclass)."""
        self.state = READING

    def read(self, now: float) -> None:
        raise NotImplementedError

    def doing(self) -> str:
        raise NotImplementedError

    # -- the state machine ---------------------------------------------------------------------

    def begin(self) -> None:
        """Open the socket and connect; if the connection is up at once (a near server has
        often completed the handshake when ``connect()`` returns), send the plan's first bytes
        now, else watch the socket for it. The common case (the whole request out with the
        connect, a probe with FastProbe's ``sent``) is this one function: no call, no clock
        read, one ``epoll_ctl``."""
        plan = self.plan
        first = plan.first
        sock = self.sock = _socket.socket(plan.family, STREAM)
        fd = self.fd = sock.fileno()
        if self.LINGER_AT_CONNECT:
            sock.setsockopt(SOL_SOCKET, SO_LINGER, LINGER_RST)
            self.rst = True
        error = sock.connect_ex(plan.sockaddr)
        if error == EINPROGRESS:
            try:
                sent: int = sock.send(first)
            except BlockingIOError:
                self.poller.watch(self, WATCH_IN_OUT)  # the handshake is still on its way
                return
            if sent and sent == len(first):
                self.connected = True
                if self._PLAIN_SENT:
                    self.state = READING  # FastProbe.sent, inline
                    poller = self.poller
                    poller._epoll.register(fd, WATCH_IN)  # Poller.watch, inline
                    poller._probes[fd] = self
                    return
                self.sent(self.poller.loop.time())  # (a connect-only probe: its latency)
            else:
                self._connected(sent, self.poller.loop.time())
        elif error:
            raise OSError(error, os.strerror(error))
        else:
            self._connected(0, self.poller.loop.time())
        if not self.finished:
            self.poller.watch(self, WATCH_IN_OUT if self.state == SENDING else WATCH_IN)

    def event(self, events: int, now: float) -> None:
        """Epoll ``events`` for this probe. (In state READING, :meth:`Poller._ready` calls
        :meth:`read` itself, as this would: subclasses override ``read``, not this.)"""
        state = self.state
        if state == CONNECTING:
            sent = self.connect_event(events, self.plan.first)
            if sent is None:
                return
            self._connected(sent, now)
        elif state == SENDING and events & (EPOLLOUT | TROUBLE):
            self._send(now)
        if self.state == READING and events & READABLE:
            self.read(now)

    def _connected(self, sent: int, now: float) -> None:
        self.connected = True
        self.pending = self.plan.first[sent:]
        if self.pending:
            self.state = SENDING
            self._send(now)
        else:
            self.sent(now)

    def _send(self, now: float) -> None:
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            return
        self.pending = self.pending[sent:]
        if not self.pending:
            self.sent(now)

    def connect_event(self, events: int, first: bytes) -> int | None:
        """Epoll events while connecting: how much of ``first`` went out once the connection
        is up, None while it is not (a failed connect raises its OSError)."""
        if events & TROUBLE:
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
        elif not events & EPOLLOUT:
            return None
        try:
            sent: int = self.sock.send(first)
            return sent
        except BlockingIOError:
            return None

    # -- endings -------------------------------------------------------------------------------

    def succeed(self, now: float) -> None:
        """The verdict "up": the hot path, so what ``_finish`` and ``release`` do, inline."""
        if self.finished:
            return
        self.finished = True
        if self.cleanup is not None:
            self.release()
        else:
            sock = self.sock
            if sock is not None:
                self.sock = None
                self.poller._probes.pop(self.fd, None)
                if not self.rst:
                    self.linger()
                sock.close()
        done, tag, ok = self.done, self.tag, self.ok
        if done is not None:
            self.done = self.tag = self.ok = None
            try:
                if ok is not None:
                    ok(tag, now - self.began, now)
                else:
                    done(tag, ProbeResult(True, now - self.began, None))
            except Exception:
                log.exception("probe result handler failed", target=str(self.target))

    def fail(self, error: str, now: float) -> None:
        self._finish(ProbeResult(False, now - self.began, one_line(error)))

    def crash(self, exc: BaseException, now: float) -> None:
        """An exception out of ``begin`` or ``event`` (a socket error, or a bug) as a verdict;
        a local one (no fd, port or buffer for the probe: :mod:`checks.local`) as no verdict."""
        if isinstance(exc, OSError):
            if not self.connected:
                error = f"connect to {self.target}: {os_reason(exc)}"
            else:
                error = f"{os_reason(exc)} while {self.doing()}"
            local = local_reason(exc, connected=self.connected)
            if local is not None:
                self.fail_locally(local, error, now)
                return
        else:
            error = f"{type(exc).__name__} while {self.doing()}: {exc}"
        self.fail(error, now)

    def fail_locally(self, reason: str, error: str, now: float) -> None:
        """No verdict: this director could not run the probe (``reason``: an errno name)."""
        error = one_line(local_error(reason, error))
        self._finish(ProbeResult(False, now - self.began, error, None, reason))

    def time_out(self, now: float) -> None:
        self.fail(f"timed out after {self.timeout:g} s {self.doing()}", max(now, self.deadline))

    def cancel(self) -> None:
        """Close the probe without a verdict (the runner or the poller stopping)."""
        if not self.finished:
            self.finished = True
            self.release()
            self.done = self.tag = self.ok = None

    def release(self) -> None:
        """Close what the probe opened (its socket: that also takes it out of the epoll)."""
        cleanup = self.cleanup
        if cleanup is not None:
            self.cleanup = None
            cleanup()
        sock = self.sock
        if sock is not None:
            if not self.rst:
                self.linger()
            self.sock = None
            self.poller._probes.pop(self.fd, None)
            sock.close()

    def linger(self) -> None:
        """From now on, closing the socket resets the connection (linger on, 0 s)."""
        self.rst = True
        with contextlib.suppress(OSError):  # a socket that failed: its close sends nothing
            self.sock.setsockopt(SOL_SOCKET, SO_LINGER, LINGER_RST)

    def _finish(self, result: ProbeResult) -> None:
        if self.finished:
            return
        self.finished = True
        self.release()
        done, tag = self.done, self.tag
        self.done = self.tag = self.ok = None
        if done is None:
            return
        try:
            done(tag, result)
        except Exception:
            log.exception("probe result handler failed", target=str(self.target))


def _resolve(waiter: asyncio.Future[ProbeResult], result: ProbeResult) -> None:
    if not waiter.done():
        waiter.set_result(result)


class Poller:
    """The fast probes of one event loop: their epoll, their sockets and their timeouts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._probes: dict[int, FastProbe] = {}  # fd -> probe, while its socket is watched
        self._queues: dict[float, deque[FastProbe]] = {}  # timeout -> probes by deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.closed = False
        self.wakes = 0  # epoll wakes handled (for benchmarks)
        # Verdict memo of the probe classes, by reply bytes (the HTTP status probe: the
        # status of a plain head it judged, see checks.probes.http.KNOWN_HEADS).
        self.known: dict[bytes, int] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    # -- probes --------------------------------------------------------------------------------

    def start(
        self,
        plan: Plan,
        done: Callable[[T, ProbeResult], None],
        tag: T,
        now: float | None = None,
    ) -> FastProbe:
        """Start a probe of ``plan``; ``done(tag, result)`` is called once with its verdict,
        perhaps before this returns (a connection refused at once). ``now``: the loop's time,
        if the caller has it. Never raises."""
        if self.closed:
            raise RuntimeError("the poller is closed")
        if now is None:
            now = self.loop.time()
        probe = plan.probe_type(self, plan, done, tag, now)
        try:
            probe.begin()
        except Exception as exc:
            probe.crash(exc, now)
        if not probe.finished:
            # _limit, inline (once per probe)
            queue = self._queues.get(plan.timeout)
            if queue is None:
                queue = self._queues[plan.timeout] = deque()
            while queue and queue[0].finished:  # keep it short between sweeps
                queue.popleft()
            queue.append(probe)
            if probe.deadline < self._timer_at:
                self._arm(probe.deadline)
        return probe

    async def run(self, plan: Plan) -> ProbeResult:
        """The coroutine form of :meth:`start`: the probe's result; cancelling closes it."""
        waiter: asyncio.Future[ProbeResult] = self.loop.create_future()
        probe = self.start(plan, _resolve, waiter)
        try:
            return await waiter
        finally:
            probe.cancel()  # a no-op once it finished

    def watch(self, probe: FastProbe, events: int) -> None:
        self._epoll.register(probe.fd, events)
        self._probes[probe.fd] = probe

    def unwatch(self, fd: int) -> None:
        """Take a socket out of the epoll (it stays open: another reader takes it over)."""
        if self._probes.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def forget(self, fd: int) -> None:
        """The socket of ``fd`` is being closed (which takes it out of the epoll)."""
        self._probes.pop(fd, None)

    @property
    def in_flight(self) -> int:
        return sum(not p.finished for q in self._queues.values() for p in q)

    def close(self) -> None:
        """Close every probe in flight (no verdict; coroutine callers are cancelled), stop
        watching, release the epoll."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for queue in self._queues.values():
            for probe in queue:
                if not probe.finished:
                    waiter = probe.tag if probe.done is _resolve else None
                    probe.cancel()
                    if waiter is not None:
                        waiter.cancel()
        self._queues.clear()
        self._probes.clear()
        if not self.loop.is_closed():
            self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    # -- events and timeouts -------------------------------------------------------------------

    def _ready(self) -> None:
        try:
            events = self._epoll.poll(0, MAX_EVENTS)
        except InterruptedError:
            return
        self.wakes += 1
        now = self.loop.time()
        probes = self._probes
        # Resolved before any runs: a probe that ends closes its fd, which a new one may reuse.
        for probe, flags in [(probes.get(fd), flags) for fd, flags in events]:
            if probe is None or probe.finished:
                continue
            try:
                if probe.state == READING:  # what event() does then, without the call
                    if flags & READABLE:
                        probe.read(now)
                else:
                    probe.event(flags, now)
            except Exception as exc:
                probe.crash(exc, now)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._sweep)
        self._timer_at = when

    def _sweep(self) -> None:
        # The loop runs a timer up to its clock resolution early: what is due at the timer's
        # time is due now.
        now = max(self.loop.time(), self._timer_at)
        self._timer, self._timer_at = None, math.inf
        following = math.inf
        for queue in list(self._queues.values()):
            while queue:
                probe = queue[0]
                if probe.finished:
                    queue.popleft()
                elif probe.deadline <= now:
                    queue.popleft()
                    try:
                        probe.time_out(now)
                    except Exception as exc:  # not expected: the verdict is built here
                        probe.crash(exc, now)
                else:
                    following = min(following, probe.deadline)
                    break
        if following < self._timer_at and not self.closed:
            self._arm(following)
