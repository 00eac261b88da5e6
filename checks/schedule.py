"""When to probe which check, under a global cap on probes in flight. Pure (sans-I/O).

The caller owns the clock and the probes; this object only decides. Drive it like this::

    starts = sched.due(now)                 # StartProbe actions: run these probes
    changes = sched.probe_done(start, result, now)   # feed each result back
    changes = sched.expire(now)             # probes with no result long past their timeout
    wake_at = sched.next_deadline()         # call due()/expire() again then (None: nothing to do)

Rounds run at a fixed rate: check *i* starts rounds at ``offset_i + k * interval``, with
``offset_i`` drawn from the injected :class:`random.Random` in ``[0, interval)`` so thousands of
checks do not fire together. Within a round, a failed attempt is retried ``retry_delay`` seconds
after it failed, up to ``attempts``; the first success makes the round good, all failing make it
one bad round. A round that overruns its interval (slow retries, waiting for a slot) makes the
next round start at the next slot in phase; skipped slots are counted as ``overruns``.

At most ``max_in_flight`` probes run at once. A probe whose slot is not free at its time waits in
FIFO order and starts as soon as one frees; ``StartProbe.lag`` and the lag statistics record how
late. Results are matched by ``probe_id``: a result for a check removed or replaced meanwhile only
frees its slot. The runner enforces timeouts; as a backstop a probe with no result
``timeout_grace`` seconds after its timeout counts as a failed attempt here (its slot stays taken
until it really ends).

A result with ``local`` set (the director could not run the probe: :mod:`checks.local`) is no
attempt against the server: the round it belongs to is void (no step in rise or fall, earlier
failed attempts of it forgotten, ``last`` unchanged) and the next round starts at its slot.

The timers (attempts not yet due) are a heap of the times they are due at, each time once, and
a dict from each time to the check's entry due then (a list of entries, in the order put, for
the rare times several share). Taking a time hands out its entries in the order they were put,
so probes start in the order the former heap of ``(time, seq, entry)`` tuples gave (a
differential test against a copy of it: ``tests/checks_core/test_timers.py``), without an
object the cyclic collector tracks per attempt: a float is none, the entries exist anyway.
Removed checks stay on the timers until their time comes and are skipped then. The summary rows
(:data:`Row`) and the policies' last outcomes are exact tuples of atomics, which the collector
untracks: at 100,000 checks (10,000 probes a second) the timer tuples, rows and
``ProbeOutcome`` objects were ~290,000 of the ~300,000 objects each full collection walked,
0.5 s every ~100 s on the loop (issue 18).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Generic, NamedTuple, TypeVar

from checks.model import (
    Check,
    CheckId,
    CheckState,
    HealthChanged,
    Outcome,
    ProbeResult,
    StartProbe,
)
from checks.policy import Phase, Policy

S = TypeVar("S")


@dataclass(slots=True)
class LagStats:
    """How late probes started: count, sum, maximum and the last one, in seconds."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0
    last: float = 0.0

    def add(self, lag: float) -> None:
        self.count += 1
        self.total += lag
        self.last = lag
        if lag > self.max:
            self.max = lag

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True)
class CheckStatus(Generic[S]):
    """One check in a :meth:`Scheduler.snapshot`."""

    check: Check[S]
    state: CheckState
    phase: Phase
    in_flight: bool
    next_at: float | None
    lag: LagStats


@dataclass(frozen=True)
class Snapshot(Generic[S]):
    """Everything status and metrics need; ``checks`` can be passed to :meth:`Scheduler.restore`."""

    checks: dict[CheckId, CheckStatus[S]]
    in_flight: int
    max_in_flight: int
    waiting: int
    lag: LagStats
    rounds: int
    overruns: int
    expired: int
    void_rounds: int  # rounds ended by a local failure (checks.local), counted neither way
    late_results: int
    unknown_results: int
    up: int


class _Entry(Generic[S]):
    __slots__ = (
        "attempt",
        "check",
        "index",
        "lag",
        "next_at",
        "policy",
        "probe",
        "removed",
        "round_at",
        "stale",
    )

    def __init__(self, check: Check[S], policy: Policy, first_round: float, index: int) -> None:
        self.check = check
        self.index = index  # where ``check`` is in Scheduler._checks (and so in Taken.checks)
        self.policy = policy
        self.round_at = first_round  # the slot the current round belongs to
        self.next_at = first_round  # when the next attempt is due
        self.attempt = 1
        self.probe: StartProbe[S] | None = None
        self.removed = False
        self.stale = False  # its row is out of date (in Scheduler._stale)
        self.lag = LagStats()


Row = tuple[int, bool, str, int, Outcome | None]
"""One check as a summary shows it: its index in :attr:`Taken.checks`, up, phase (a
:class:`Phase` value), transitions and last outcome. Atomics and an exact tuple of atomics only,
so the collector untracks it at the first collection it survives (with the check's id and spec
in it, a row stayed tracked: ~100,000 of the ~300,000 objects each full collection walked at
100,000 checks, issue 18)."""


class Taken(NamedTuple, Generic[S]):
    """What :meth:`Scheduler.rows` hands out: the rows, and the checks their indices point at
    (a list only ever appended to, or replaced by a new one: rows taken earlier keep their
    meaning whatever happens to the checks after)."""

    rows: list[Row]
    checks: Sequence[Check[S]]


def _row(e: _Entry[S]) -> Row:
    policy = e.policy
    # (Phase._value_: the value without the enum property's descriptor, once per row)
    return (e.index, policy.up, policy.phase._value_, policy.transitions, policy.outcome)


class Scheduler(Generic[S]):
    def __init__(
        self, rng: random.Random, *, max_in_flight: int = 256, timeout_grace: float = 1.0
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.rng = rng
        self.max_in_flight = max_in_flight
        self.timeout_grace = timeout_grace
        self._entries: dict[CheckId, _Entry[S]] = {}
        # Every check added, by _Entry.index: what the rows' indices point at. Appended to,
        # never changed in place (removed checks stay until _compact makes a new list).
        self._checks: list[Check[S]] = []
        self._dead = 0  # removed checks still in _checks
        # Per check, what a summary shows (rows()), kept as each result comes in: taking it for
        # a status or a scrape of a 100,000-check table is one list copy on the loop.
        self._rows: dict[CheckId, Row] = {}
        self._stale: list[_Entry[S]] = []  # entries whose row rows() must make again
        # The timers (see the module's docstring): a heap of the times attempts are due at,
        # each time once, and by time the entry due then (a list of them, in the order put, for
        # the rare equal times). No tuple per attempt: a heap of (time, seq, entry) tuples held
        # ~100,000 tracked tuples at 100,000 checks, a third of what each full collection
        # walked (issue 18).
        self._times: list[float] = []
        self._due_at: dict[float, _Entry[S] | list[_Entry[S]]] = {}
        self._ready: deque[_Entry[S]] = deque()  # due, waiting for a slot
        self._live: dict[int, _Entry[S]] = {}  # probe_id -> entry whose result counts
        self._orphans: dict[int, StartProbe[S]] = {}  # in flight, result ignored
        # Probes in flight by timeout, in start order: their backstops (start + timeout +
        # grace) come in that order too, so a deque per timeout value needs no heap.
        self._deadlines: dict[float, deque[StartProbe[S]]] = {}
        self._probe_ids = itertools.count(1)
        self.lag = LagStats()
        self.rounds = self.overruns = self.expired = self.void_rounds = 0
        self.late_results = self.unknown_results = 0
        # When the last attempt was put on the timers (a result's next round or retry): after
        # a result, the only deadline that can be earlier than before besides one due now.
        self.armed_at = math.inf

    # -- the set of checks -------------------------------------------------------------------

    def add(self, checks: Iterable[Check[S]], now: float) -> list[HealthChanged]:
        """Start checking; the first round of each is at a random offset in [0, interval).
        Returns a change for each check that starts down (no entry counts as up)."""
        changes = []
        for check in checks:
            if check.id in self._entries:
                raise ValueError(f"check {check.id!r} is already scheduled")
            entry = self._new_entry(check, now)
            if not entry.policy.up:
                changes.append(HealthChanged(check.id, False, now, "initial state down"))
        return changes

    def remove(self, check_ids: Iterable[CheckId]) -> None:
        """Stop checking; a probe in flight keeps its slot until it ends, its result ignored."""
        for check_id in check_ids:
            entry = self._entries.pop(check_id, None)
            self._rows.pop(check_id, None)
            if entry is not None:
                self._drop(entry)
                self._dead += 1
        if len(self._stale) > len(self._entries):  # removed ones in it: not kept for long
            self._refresh()
        if self._dead > max(len(self._entries), 64):
            self._compact()

    def replace(self, checks: Iterable[Check[S]], now: float) -> list[HealthChanged]:
        """Make ``checks`` the whole set (a reload). A check equal to the one scheduled keeps
        everything: state, phase, the round in progress. New or changed ones start fresh; a
        change is returned where that makes the reported state differ."""
        wanted = {check.id: check for check in checks}
        self.remove([cid for cid in self._entries if cid not in wanted])
        changes = []
        for check in wanted.values():
            old = self._entries.get(check.id)
            if old is not None and old.check == check:
                continue
            was_up = True
            if old is not None:
                was_up = old.policy.up
                self.remove([check.id])
            entry = self._new_entry(check, now)
            if entry.policy.up != was_up:
                reason = "initial state " + ("up" if entry.policy.up else "down")
                if old is not None:
                    reason = f"changed: {reason}"
                changes.append(HealthChanged(check.id, entry.policy.up, now, reason))
        return changes

    def restore(
        self, previous: Mapping[CheckId, CheckStatus[S]], now: float
    ) -> list[HealthChanged]:
        """Carry the health state of checks equal to their ``previous`` ones (e.g. from an old
        scheduler's snapshot); others keep what they have. Returns the resulting flips."""
        changes = []
        for check_id, entry in self._entries.items():
            old = previous.get(check_id)
            if old is None or old.check != entry.check:
                continue
            was_up = entry.policy.up
            entry.policy = Policy(check_id, entry.check.params, old.state)
            self._rows[check_id] = _row(entry)
            if entry.policy.up != was_up:
                changes.append(HealthChanged(check_id, entry.policy.up, now, "restored"))
        return changes

    def health(self) -> dict[CheckId, bool]:
        """Up or down by check id (with ``(ServiceKey, DestKey)`` ids: the ``Health`` map)."""
        return {cid: entry.policy.up for cid, entry in self._entries.items()}

    def rows(self) -> Taken[S]:
        """Per check: its index in ``checks`` (whose id and spec), up, phase, transitions and
        last outcome, as they are now (immutable tuples kept up to date as results come in:
        cheap to take on a large table; a summary is built from them elsewhere). In the order
        the checks were added. A good round of a check that is up only marks its row stale (no
        tuple per probe): made again here, once for all the rounds since the last call."""
        self._refresh()
        return Taken(list(self._rows.values()), self._checks)

    def refresh_rows(self) -> int:
        """Make the stale rows again now; returns how many. The daemon calls it every
        ``director.health.ROWS_EVERY`` s: at 100,000 checks a :meth:`rows` after ten quiet
        seconds would otherwise remake them all at once on the event loop (0.24 s a call under
        cProfile, ``bench.scale --profile cpu``), while one call remakes only the rows of the
        results since the last."""
        count = len(self._stale)
        self._refresh()
        return count

    def _refresh(self) -> None:
        """Make the stale rows again."""
        rows = self._rows
        for entry in self._stale:
            entry.stale = False
            if not entry.removed:
                rows[entry.check.id] = _row(entry)
        self._stale.clear()

    def _compact(self) -> None:
        """A new ``_checks`` without the removed checks (which it would otherwise keep alive,
        reload after reload), and new rows with the new indices. Rows taken earlier keep the
        old list. Runs when more removed than live checks are in it: amortised O(1) a removal."""
        self._refresh()
        self._checks = []
        rows = self._rows
        for index, entry in enumerate(self._entries.values()):
            entry.index = index
            self._checks.append(entry.check)
            rows[entry.check.id] = _row(entry)
        self._dead = 0

    # -- events in, actions out --------------------------------------------------------------

    def due(self, now: float, limit: int | None = None) -> list[StartProbe[S]]:
        """The probes to start now, never more than the free slots nor ``limit``. Those left
        by ``limit`` stay on the timers as they were (:meth:`due_now` still says so); those
        left for want of a slot wait in order for one."""
        free = self.max_in_flight - len(self._live) - len(self._orphans)
        if free <= 0:
            return []
        room = free if limit is None else min(free, limit)  # this call's starts, at most
        times, due_at, ready = self._times, self._due_at, self._ready
        starts = []
        while ready and room > 0:  # those waiting for a slot first, in their order
            entry = ready.popleft()
            if not entry.removed:
                starts.append(self._start(entry, now))
                free -= 1
                room -= 1
        # then those that came due, straight from the timers while slots are free (the
        # common case: no stop in the waiting queue), the rest to wait behind
        while times and times[0] <= now:
            if room <= 0 < free:
                break  # the batch is full, not the slots: the rest stay on the timers
            at = heappop(times)
            got = due_at.pop(at)
            group = got if isinstance(got, list) else (got,)
            for i, entry in enumerate(group):
                if entry.removed:
                    continue
                if room > 0:
                    starts.append(self._start(entry, now))
                    free -= 1
                    room -= 1
                elif free > 0:  # the batch filled within this time's entries: the rest back
                    rest = list(group[i:])
                    due_at[at] = rest if len(rest) > 1 else rest[0]
                    heappush(times, at)
                    break
                else:
                    ready.append(entry)
        return starts

    def probe_done(
        self, start: StartProbe[S], result: ProbeResult, now: float
    ) -> list[HealthChanged]:
        """A probe ended. Returns the change its round caused, if any."""
        self.armed_at = math.inf  # (set again if this result puts its check on the timers)
        entry = self._live.pop(start.probe_id, None)
        if entry is None:
            self._unmatched(start.probe_id)
            return []
        return self._finish(entry, result, now)

    def probe_ok(self, start: StartProbe[S], latency: float, now: float) -> list[HealthChanged]:
        """``probe_done(start, ProbeResult(True, latency, None), now)``, without the result
        object in the common case (a good round of a check that is up: the hot path of the
        fast probes, thousands a second)."""
        self.armed_at = math.inf
        entry = self._live.pop(start.probe_id, None)
        if entry is None:
            self._unmatched(start.probe_id)
            return []
        # _good, inline (one call less per probe; the two must stay the same: the
        # differential tests in tests/checks_core/test_fast_verdicts.py compare them)
        policy = entry.policy
        slot = entry.round_at + entry.check.params.interval
        if not policy.up or slot < now:
            return self._finish(entry, ProbeResult(True, latency, None), now)
        entry.probe = None
        policy.good_while_up(latency, now, entry.attempt)
        if not entry.stale:
            entry.stale = True
            self._stale.append(entry)
        self.rounds += 1
        entry.attempt = 1
        entry.round_at = entry.next_at = self.armed_at = slot
        # _push, inline
        got = self._due_at.setdefault(slot, entry)
        if got is entry:
            heappush(self._times, slot)
        else:
            self._tie(slot, got, entry)
        return []

    def expire(self, now: float) -> list[HealthChanged]:
        """Fail probes still without a result ``timeout_grace`` after their timeout."""
        changes: list[HealthChanged] = []
        grace, live = self.timeout_grace, self._live
        for queue in list(self._deadlines.values()):
            while queue:
                start = queue[0]
                if start.probe_id not in live:
                    queue.popleft()  # it ended
                    continue
                if start.started + start.timeout + grace > now:
                    break
                queue.popleft()
                entry = live.pop(start.probe_id)
                if entry.probe is not start:
                    continue
                self._orphans[start.probe_id] = start
                self.expired += 1
                error = f"no result within {start.timeout:g}s"
                result = ProbeResult(False, now - start.started, error)
                changes += self._finish(entry, result, now)
        return changes

    def due_now(self, now: float) -> bool:
        """Whether :meth:`due` has a probe to start now (cheap: once per result). A removed
        check at the head of the queue may make it say so when :meth:`due` finds none."""
        if len(self._live) + len(self._orphans) >= self.max_in_flight:
            return False
        if self._ready:
            return True
        times = self._times
        return bool(times) and times[0] <= now

    def next_deadline(self) -> float | None:
        """When :meth:`due` or :meth:`expire` next has work; may be in the past."""
        times, ready, live = self._times, self._ready, self._live
        best: float | None = None
        for queue in self._deadlines.values():
            while queue and queue[0].probe_id not in live:
                queue.popleft()
            if queue:
                start = queue[0]
                backstop = start.started + start.timeout + self.timeout_grace
                if best is None or backstop < best:
                    best = backstop
        while times and self._only_removed(times[0]):
            del self._due_at[heappop(times)]
        while ready and ready[0].removed:
            ready.popleft()
        if len(live) + len(self._orphans) < self.max_in_flight:
            if ready:
                start_at: float | None = ready[0].next_at
            else:
                start_at = times[0] if times else None
            if start_at is not None and (best is None or start_at < best):
                best = start_at
        return best

    def snapshot(self) -> Snapshot[S]:
        """Per-check state, last result and lag, plus totals, for status and metrics."""
        checks = {
            cid: CheckStatus(
                check=e.check,
                state=e.policy.state,
                phase=e.policy.phase,
                in_flight=e.probe is not None,
                next_at=None if e.probe is not None else e.next_at,
                lag=LagStats(e.lag.count, e.lag.total, e.lag.max, e.lag.last),
            )
            for cid, e in self._entries.items()
        }
        return Snapshot(
            checks=checks,
            in_flight=len(self._live) + len(self._orphans),
            max_in_flight=self.max_in_flight,
            waiting=sum(not e.removed for e in self._ready),
            lag=LagStats(self.lag.count, self.lag.total, self.lag.max, self.lag.last),
            rounds=self.rounds,
            overruns=self.overruns,
            expired=self.expired,
            void_rounds=self.void_rounds,
            late_results=self.late_results,
            unknown_results=self.unknown_results,
            up=sum(e.policy.up for e in self._entries.values()),
        )

    @property
    def in_flight(self) -> int:
        return len(self._live) + len(self._orphans)

    # -- internals ---------------------------------------------------------------------------

    def _new_entry(self, check: Check[S], now: float) -> _Entry[S]:
        first = now + self.rng.random() * check.params.interval
        entry = _Entry(check, Policy(check.id, check.params), first, len(self._checks))
        self._checks.append(check)
        self._entries[check.id] = entry
        self._rows[check.id] = _row(entry)
        self._arm(entry, first)
        return entry

    def _drop(self, entry: _Entry[S]) -> None:
        entry.removed = True
        if entry.probe is not None:
            probe_id = entry.probe.probe_id
            if self._live.pop(probe_id, None) is not None:
                self._orphans[probe_id] = entry.probe
            entry.probe = None

    def _arm(self, entry: _Entry[S], at: float) -> None:
        entry.next_at = self.armed_at = at
        self._push(entry, at)

    def _push(self, entry: _Entry[S], at: float) -> None:
        """Put ``entry`` on the timers, due at ``at`` (an entry is on them at most once: from
        its arming until due() takes it, or for good once removed)."""
        got = self._due_at.setdefault(at, entry)
        if got is entry:
            heappush(self._times, at)
        else:
            self._tie(at, got, entry)

    def _tie(self, at: float, got: _Entry[S] | list[_Entry[S]], entry: _Entry[S]) -> None:
        """A second entry due at the same time as one or more on the timers: after them."""
        if isinstance(got, list):
            got.append(entry)
        else:
            self._due_at[at] = [got, entry]

    def _only_removed(self, at: float) -> bool:
        """Whether every entry due at ``at`` was removed (the head of the timers is skipped
        then, as the heap of tuples skipped removed ones)."""
        got = self._due_at[at]
        if isinstance(got, list):
            return all(entry.removed for entry in got)
        return got.removed

    def _start(self, entry: _Entry[S], now: float) -> StartProbe[S]:
        check = entry.check
        start = StartProbe(
            next(self._probe_ids),
            check.id,
            check.spec,
            entry.attempt,
            entry.next_at,
            now,
            check.params.timeout,
        )
        entry.probe = start
        self._live[start.probe_id] = entry
        queue = self._deadlines.get(start.timeout)
        if queue is None:
            queue = self._deadlines[start.timeout] = deque()
        queue.append(start)
        lag = now - entry.next_at
        stats = entry.lag  # LagStats.add, inline (per probe), for the entry and the total
        stats.count += 1
        stats.total += lag
        stats.last = lag
        if lag > stats.max:
            stats.max = lag
        stats = self.lag
        stats.count += 1
        stats.total += lag
        stats.last = lag
        if lag > stats.max:
            stats.max = lag
        return start

    def _finish(self, entry: _Entry[S], result: ProbeResult, now: float) -> list[HealthChanged]:
        params = entry.check.params
        entry.probe = None
        if result.local is not None:
            # The director could not probe (out of fds, ports, memory): no evidence about the
            # server. The round is void: no step towards rise or fall, the attempts it used
            # are forgotten, and the next round comes at its slot (never a quick retry, which
            # would spin while the shortage lasts).
            self.void_rounds += 1
            self._next_round(entry, now)
            return []
        policy = entry.policy
        good = result.ok and result.weight is None and result.error is None
        if good and self._good(entry, result.latency, now):
            return []
        policy.record_probe(result, now, entry.attempt)
        if not result.ok and entry.attempt < params.attempts:
            self._rows[entry.check.id] = _row(entry)
            entry.attempt += 1
            self._arm(entry, now + params.retry_delay)
            return []
        self.rounds += 1
        change = policy.record_round(result.ok, now)
        self._rows[entry.check.id] = _row(entry)
        self._next_round(entry, now)
        return [] if change is None else [change]

    def _unmatched(self, probe_id: int) -> None:
        """A result for no live probe: one whose check was removed or replaced, or unknown."""
        if self._orphans.pop(probe_id, None) is None:
            self.unknown_results += 1
        else:
            self.late_results += 1

    def _good(self, entry: _Entry[S], latency: float, now: float) -> bool:
        """The common case of a result: a good round (``latency``: no weight, no error) of a
        server that is up, and within its interval. No verdict can change: the policy records
        it in place (no rule lookup, no event object), the row is rebuilt and the next round
        put on the timers. False (nothing done) for any other case: :meth:`_finish` then."""
        policy = entry.policy
        if not policy.up:
            return False
        interval = entry.check.params.interval
        slot = entry.round_at + interval
        if slot < now:  # overran its interval: _next_round counts the skipped slots
            return False
        entry.probe = None
        policy.good_while_up(latency, now, entry.attempt)
        # The summary row shows this probe's latency: rows() makes it again (once per call,
        # not per probe)
        if not entry.stale:
            entry.stale = True
            self._stale.append(entry)
        self.rounds += 1
        # _next_round, inline, for a round that did not overrun its interval
        entry.attempt = 1
        entry.round_at = entry.next_at = self.armed_at = slot
        # _push, inline
        got = self._due_at.setdefault(slot, entry)
        if got is entry:
            heappush(self._times, slot)
        else:
            self._tie(slot, got, entry)
        return True

    def _next_round(self, entry: _Entry[S], now: float) -> None:
        interval = entry.check.params.interval
        entry.attempt = 1
        slot = entry.round_at + interval
        if slot < now:
            skipped = math.ceil((now - slot) / interval)
            self.overruns += skipped
            slot += skipped * interval
        entry.round_at = slot
        self._arm(entry, slot)
