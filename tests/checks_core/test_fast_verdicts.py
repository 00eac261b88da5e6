"""The hot paths against their references, on random input (hypothesis):

- ``Policy.good_while_up`` (a good probe of a check that is up, recorded in place) against
  ``record_probe`` + ``record_round``: the same state, ``last`` included;
- the scheduler's in-place branch for such results against the reference ``_finish`` (kept
  here, as it was before the branch, with ``due`` as it was before starts went straight from
  the timers): the same starts in the same order, the same snapshots (state, last probe with
  its latency and time, phase, lag, counters), summary rows and health changes, over random
  runs with flapping servers, weights, slow probes, attempts and re-entry; and after every
  result, the bound the runner keeps its timer by (``due_now`` / ``armed_at`` instead of a
  full ``next_deadline``);
- the HTTP fast probe's own judgement of a reply's head (``_plain_head`` and the status in it)
  against aiohttp's llhttp parser alone given that head, on generated and mutated replies
  (status lines, headers, chunked, interim 1xx, truncated, over-long), at every point where the
  fast probe may decide (each prefix of the reply: a slow server sends it in pieces). Whatever
  the fast probe does not judge goes to llhttp itself, so only its own verdicts need proving.

In-process and millisecond-fast: no sockets (the probes on real sockets are in
``tests/checks/test_http_heads.py`` and ``test_fast.py``).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Iterator
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.model import Check, CheckParams, HealthChanged, ProbeResult, StartProbe
from checks.policy import Policy
from checks.probes import http
from checks.schedule import Scheduler, _Entry, _row
from tests.checks_core.sim import Sim

# -- the policy -------------------------------------------------------------------------------

results = st.builds(
    ProbeResult,
    ok=st.booleans(),
    latency=st.floats(0.0, 2.0),
    error=st.sampled_from([None, "connection refused"]),
    weight=st.sampled_from([None, None, None, 0, 5]),
)
params = st.builds(
    CheckParams,
    rise=st.integers(1, 3),
    fall=st.integers(1, 3),
    reentry=st.sampled_from([0.0, 0.0, 2.5]),
    initial=st.sampled_from(["up", "down"]),
)


@given(params, st.lists(results, max_size=40))
def test_good_while_up_is_record_probe_then_record_round(
    p: CheckParams, probes: list[ProbeResult]
) -> None:
    reference, fast = Policy("rs", p), Policy("rs", p)
    for i, result in enumerate(probes):
        now, attempt = i * 0.7, 1 + i % 2
        reference.record_probe(result, now, attempt)
        expected = reference.record_round(result.ok, now)
        if result.ok and result.weight is None and result.error is None and fast.up:
            fast.good_while_up(result.latency, now, attempt)
            changed = None
        else:
            fast.record_probe(result, now, attempt)
            changed = fast.record_round(result.ok, now)
        assert changed == expected
        assert fast.state == reference.state
        assert fast.phase == reference.phase


def test_good_while_up_refuses_a_check_that_is_down() -> None:
    policy = Policy("rs", CheckParams(initial="down"))
    with pytest.raises(ValueError, match="down"):
        policy.good_while_up(0.001, 1.0)
    assert policy.last is None and policy.good_streak == 0


# -- the scheduler ----------------------------------------------------------------------------


class ReferenceScheduler(Scheduler[str]):
    """The scheduler with ``_finish`` as it was before the in-place branch: every result
    through ``record_probe`` and ``record_round``; and ``due`` as it was before starts went
    straight from the timers: every due attempt through the waiting queue."""

    def due(self, now: float, limit: int | None = None) -> list[StartProbe[str]]:
        assert limit is None  # (driven by hand here, never in batches)
        free = self.max_in_flight - len(self._live) - len(self._orphans)
        if free <= 0:
            return []
        times, due_at, ready = self._times, self._due_at, self._ready
        while times and times[0] <= now:
            got = due_at.pop(heapq.heappop(times))
            for entry in got if isinstance(got, list) else [got]:
                if not entry.removed:
                    ready.append(entry)
        starts = []
        while ready and free > 0:
            entry = ready.popleft()
            if not entry.removed:
                starts.append(self._start(entry, now))
                free -= 1
        return starts

    def _finish(self, entry: _Entry[str], result: ProbeResult, now: float) -> list[HealthChanged]:
        params = entry.check.params
        entry.probe = None
        if result.local is not None:
            self.void_rounds += 1
            self._next_round(entry, now)
            return []
        policy = entry.policy
        policy.record_probe(result, now, entry.attempt)
        self._rows[entry.check.id] = _row(entry)
        if not result.ok and entry.attempt < params.attempts:
            entry.attempt += 1
            self._arm(entry, now + params.retry_delay)
            return []
        self.rounds += 1
        change = policy.record_round(result.ok, now)
        self._rows[entry.check.id] = _row(entry)
        self._next_round(entry, now)
        return [] if change is None else [change]


class ShortcutCheckingScheduler(Scheduler[str]):
    """The scheduler, checking after each result what ``Runner._fast_done`` relies on to keep
    its timer without a full :meth:`next_deadline`: unless :meth:`due_now` says a probe can
    start now or the slots were all taken before the result, the next deadline is no earlier
    than the one before the result or ``armed_at`` (the attempt this result put on the
    timers), whichever is first."""

    shortcuts = 0

    def probe_done(
        self, start: StartProbe[str], result: ProbeResult, now: float
    ) -> list[HealthChanged]:
        before = self.next_deadline()
        changes = super().probe_done(start, result, now)
        after = self.next_deadline()
        if not self.due_now(now) and self.in_flight < self.max_in_flight - 1:
            self.shortcuts += 1
            bound = min(math.inf if before is None else before, self.armed_at)
            assert after is None or after >= bound, (before, self.armed_at, after)
        return changes


def drive(sched: Scheduler[str], seed: int, checks: list[Check[str]], end: float) -> Sim:
    draw = random.Random(seed)

    def behaviour(start: object, now: float) -> tuple[float, ProbeResult] | None:
        latency = draw.choice([0.0005, 0.002, 0.03, 0.4, 1.3])
        roll = draw.random()
        if roll < 0.7:
            return latency, ProbeResult(True, latency, None)
        if roll < 0.8:
            return latency, ProbeResult(True, latency, None, weight=draw.randint(0, 9))
        if roll < 0.97:
            return latency, ProbeResult(False, latency, f"HTTP 503 ({roll:.3f})")
        return None  # never answers: the scheduler's backstop fails it

    sim = Sim(sched, behaviour)
    sim.changes += sched.add(checks, 0.0)
    sim.run_until(end)
    return sim


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(params, min_size=1, max_size=6), st.integers(1, 3))
def test_scheduler_in_place_branch_matches_the_reference(
    seed: int, each: list[CheckParams], attempts: int
) -> None:
    checks = [
        Check(
            f"rs{i}",
            f"spec{i}",
            CheckParams(
                interval=1.0,
                timeout=0.5,
                rise=p.rise,
                fall=p.fall,
                attempts=attempts,
                retry_delay=0.2,
                reentry=p.reentry,
                initial=p.initial,
            ),
        )
        for i, p in enumerate(each)
    ]
    fast = drive(
        ShortcutCheckingScheduler(random.Random(seed), max_in_flight=3), seed, checks, 30.0
    )
    reference = drive(ReferenceScheduler(random.Random(seed), max_in_flight=3), seed, checks, 30.0)
    assert fast.changes == reference.changes
    assert fast.sched.snapshot() == reference.sched.snapshot()
    assert fast.sched.rows() == reference.sched.rows()  # the summary rows kept in place
    assert [(s.check_id, s.started) for s in fast.started] == [
        (s.check_id, s.started) for s in reference.started
    ]


class OkPathScheduler(Scheduler[str]):
    """The scheduler as the runner drives it for the fast probes: a good result without a
    weight or an error goes in through :meth:`probe_ok` (no result object; the policy keeps
    the outcome as numbers and the row is only marked stale), the others through
    ``probe_done``."""

    ok_calls = 0

    def probe_done(
        self, start: StartProbe[str], result: ProbeResult, now: float
    ) -> list[HealthChanged]:
        if result.ok and result.weight is None and result.error is None and result.local is None:
            self.ok_calls += 1
            return self.probe_ok(start, result.latency, now)
        return super().probe_done(start, result, now)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(params, min_size=1, max_size=6),
    st.lists(st.floats(0.05, 4.0), min_size=1, max_size=12),
)
def test_the_ok_path_and_lazy_rows_match_the_reference(
    seed: int, each: list[CheckParams], pauses: list[float]
) -> None:
    """``probe_ok`` against the reference ``_finish`` (every result through ``record_probe``
    and ``record_round``, every row made at once): the same starts, changes, snapshots (the
    last probe's latency and time included) and summary rows, compared at random points of
    the run (rows made again after any number of rounds, or none), with checks removed and
    added back in between."""
    checks = [
        Check(
            f"rs{i}",
            f"spec{i}",
            CheckParams(
                interval=1.0,
                timeout=0.5,
                rise=p.rise,
                fall=p.fall,
                attempts=2,
                retry_delay=0.2,
                reentry=p.reentry,
                initial=p.initial,
            ),
        )
        for i, p in enumerate(each)
    ]
    sims: list[Sim] = []
    for sched in (
        OkPathScheduler(random.Random(seed), max_in_flight=4),
        ReferenceScheduler(random.Random(seed), max_in_flight=4),
    ):
        sims.append(drive(sched, seed, checks, 0.0))
    fast, reference = sims
    end = 0.0
    for i, pause in enumerate(pauses):
        end += pause
        for sim in sims:
            sim.run_until(end)
        if i % 4 == 3:  # a reload between: a check goes, then comes back (fresh)
            for sim in sims:
                sim.sched.remove([checks[0].id])
                sim.changes += sim.sched.add([checks[0]], sim.now)
        assert fast.sched.snapshot() == reference.sched.snapshot()
        if i % 2 == 0:  # (not every time: stale rows pile up in between)
            assert fast.sched.rows() == reference.sched.rows()
    assert fast.changes == reference.changes
    assert fast.sched.rows() == reference.sched.rows()
    assert [(s.check_id, s.started) for s in fast.started] == [
        (s.check_id, s.started) for s in reference.started
    ]
    if end > 3.0 and all(p.initial == "up" for p in each):
        assert cast(OkPathScheduler, fast.sched).ok_calls > 0  # the path under test was taken


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.sampled_from([1, 2, 4, 16]))
def test_the_bound_the_runner_keeps_its_timer_by(seed: int, n: int, cap: int) -> None:
    """After each result, the next deadline is no earlier than the runner's cheap bound
    (checked inside ``ShortcutCheckingScheduler.probe_done``), with every cap: slots all
    taken, some free, plenty."""
    each = CheckParams(interval=1.0, timeout=0.5, attempts=2, retry_delay=0.2, fall=2)
    checks = [Check(f"rs{i}", f"spec{i}", each) for i in range(n)]
    sim = drive(
        ShortcutCheckingScheduler(random.Random(seed), max_in_flight=cap), seed, checks, 20.0
    )
    if cap == 16:
        assert cast(ShortcutCheckingScheduler, sim.sched).shortcuts > 0


def test_an_unchanged_verdict_still_updates_the_last_probe() -> None:
    """Rounds that change nothing (up, good) still move the last result, its latency and time,
    and the streak, as status and metrics show them."""
    sched: Scheduler[str] = Scheduler(random.Random(1))
    sched.add([Check("rs", "spec", CheckParams(interval=1.0, timeout=0.5))], 0.0)
    latencies = iter([0.004, 0.0123, 0.002])
    seen = []
    now = 0.0
    for _ in range(3):
        when = sched.next_deadline()
        assert when is not None
        now = max(now, when)
        (start,) = sched.due(now)
        now += 0.01
        latency = next(latencies)
        assert sched.probe_done(start, ProbeResult(True, latency, None), now) == []
        status = sched.snapshot().checks["rs"]
        assert status.state.last is not None
        seen.append((status.state.last.latency, status.state.last.at, status.state.good_streak))
        assert status.state.up and status.state.last.ok and status.state.last.error is None
    assert [s[0] for s in seen] == [0.004, 0.0123, 0.002]
    assert [s[2] for s in seen] == [1, 2, 3]
    assert seen[0][1] < seen[1][1] < seen[2][1] == now
    assert sched.rounds == 3


# -- the HTTP fast probe's judgement of a head ----------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def llhttp(loop: asyncio.AbstractEventLoop, data: bytes) -> int | str:
    """The final status aiohttp's llhttp parser finds in ``data`` followed by EOF, or the
    name of its error (the reference: what the fast probe falls back to)."""

    async def parse() -> int | str:
        handler = http._handler(loop, http.HttpSpec())
        handler.data_received(data)
        handler.connection_lost(None)
        try:
            return await http._final_code(handler)
        except Exception as exc:
            return type(exc).__name__

    return loop.run_until_complete(parse())


def fast(data: bytes) -> tuple[int, bytes] | None:
    """The status the fast probe judges by itself from what it has read, and the head it
    judged it from; None when it hands the reply to llhttp."""
    match = http._plain_head(data)
    return None if match is None else (int(match[1]), data[: match.end()])


def decision_points(data: bytes) -> Iterator[bytes]:
    """What the fast probe may have read when it decides: every prefix that ends a head, or
    reaches the head limit, and the whole reply (EOF)."""
    for end in range(1, len(data) + 1):
        part = data[:end]
        if part.endswith((b"\r\n\r\n", b"\n\n")) or end == http.HEAD_LIMIT:
            yield part
    yield data


TOKEN = st.text("-!#$%&'*+.^_`|~0123456789abcdefxyzABCZ", min_size=1, max_size=12)
NAMES = st.one_of(
    TOKEN,
    st.sampled_from(["Content-Length", "content-length", "Transfer-Encoding", "Host ", " X", ""]),
)
VALUES = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"2", b" 2 ", b"abc", b"-1", b"1 2", b"chunked", b"gzip", b"", b"caf\xe9"]),
    st.integers(0, 10_000).map(lambda n: b"a" * n),
)
EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    version = draw(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1", b"HTTP/1.1x"])
    )
    code = draw(
        st.one_of(
            st.sampled_from([b"200", b"204", b"302", b"404", b"503", b"100", b"101", b"199"]),
            st.integers(0, 9999).map(lambda n: str(n).encode()),
        )
    )
    reason = draw(
        st.one_of(
            st.sampled_from([b" OK", b"", b" ", b" Service Unavailable"]), st.binary(max_size=8)
        )
    )
    eol = draw(EOL)
    head = version + b" " + code + reason + eol
    for _ in range(draw(st.integers(0, 4))):
        head += draw(NAMES).encode() + b":" + draw(VALUES) + draw(EOL)
    head += draw(EOL)
    body = draw(st.sampled_from([b"", b"ok", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"]))
    return head + body


@settings(max_examples=400, deadline=None)
@given(replies())
def test_fast_judgement_matches_llhttp(loop: asyncio.AbstractEventLoop, reply: bytes) -> None:
    for part in decision_points(reply):
        judged = fast(part)
        if judged is not None:
            status, head = judged
            assert llhttp(loop, head) == status, part


VALID = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: nginx\r\n\r\nok",
    b"HTTP/1.0 204 No Content\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "delete", "replace"]),
            st.integers(0, 200),
            st.sampled_from(
                [b"\r", b"\n", b" ", b":", b"\x00", b"\x7f", b"\xff", b"1", b"a", b"\t"]
            ),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fast_judgement_matches_llhttp_on_mutated_replies(
    loop: asyncio.AbstractEventLoop, reply: bytes, mutations: list[tuple[str, int, bytes]]
) -> None:
    data = bytearray(reply)
    for how, at, byte in mutations:
        at = at % (len(data) + 1)
        if how == "insert":
            data[at:at] = byte
        elif how == "delete" and at < len(data):
            del data[at]
        elif at < len(data):
            data[at : at + 1] = byte
    mutated = bytes(data)
    for part in decision_points(mutated):
        judged = fast(part)
        if judged is not None:
            status, head = judged
            assert llhttp(loop, head) == status, part


def test_the_fast_judgement_takes_the_common_replies() -> None:
    """The differential tests above would pass with a fast path that never judges: the
    common replies must be judged by it."""
    nginx = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\n\r\nok\n"
    assert [None if j is None else j[0] for j in map(fast, [*VALID[:3], nginx])] == [
        200,
        204,
        503,
        200,
    ]


def test_the_fast_judgement_reads_no_further_than_the_head(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The one known difference: bytes after the head are not the fast probe's business (it
    closes once the head is in, as keepalived's status_code check judges the status line),
    while llhttp, given them in the same read, may refuse them (a body after a 204)."""
    reply = b"HTTP/1.1 204 No Content\r\n\r\nok"
    assert fast(reply) == (204, reply[:-2])
    assert llhttp(loop, reply[:-2]) == 204
    assert llhttp(loop, reply) == "HttpProcessingError"


# -- replies judged before, by their bytes (Poller.known) ------------------------------------


def peeked_reference(data: bytes) -> int | None:
    """What the fast probe's first look at ``data`` decides without a memo: the status of a
    plain head once a head's end (or the head limit) is in, else None."""
    if b"\r\n\r\n" in data or b"\n\n" in data or len(data) >= http.HEAD_LIMIT:
        judged = fast(data)
        return None if judged is None else judged[0]
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(replies(), st.sampled_from(VALID)), min_size=1, max_size=6),
    st.lists(st.integers(0, 1000), min_size=1, max_size=60),
    st.integers(1, 8),
)
def test_replies_known_by_their_bytes_get_the_reference_status(
    pool: list[bytes], picks: list[int], bound: int
) -> None:
    """Peeked bytes seen in any order, with repeats, prefixes and a memo small enough to be
    cleared: each gets exactly the status (or None) the fast probe decides without a memo; a
    memo that kept a status for other bytes, or for a head not plain, fails here."""
    parts = [part for reply in pool for part in decision_points(reply)]
    parts += [reply[: len(reply) // 2] for reply in pool]  # a head not yet whole
    known: dict[bytes, int] = {}
    for pick in picks:
        data = parts[pick % len(parts)]
        assert http._peeked_status(data, known, bound) == peeked_reference(data), data
        assert len(known) <= bound
        assert all(
            peeked_reference(k) == v and len(k) <= http.KNOWN_BYTES for k, v in known.items()
        )


def test_a_reply_judged_before_is_not_matched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo is used: the second time the same bytes come, no head is matched (a memo that
    is never read would pass the differential test above)."""
    nginx = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 05 Dec 2026 18:30:00 GMT\r\n\r\nok\n"
    matched: list[bytes] = []
    plain_head = http._plain_head

    def counted(head: bytes) -> object:
        matched.append(head)
        return plain_head(head)

    monkeypatch.setattr(http, "_plain_head", counted)
    known: dict[bytes, int] = {}
    assert http._peeked_status(nginx, known) == 200
    assert http._peeked_status(nginx, known) == 200
    assert http._peeked_status(nginx.replace(b"200 OK", b"503 No"), known) == 503
    assert http._peeked_status(nginx, known) == 200
    assert matched == [nginx, nginx.replace(b"200 OK", b"503 No")]
    long = nginx + b"a" * http.KNOWN_BYTES  # a long body: judged, not remembered
    assert http._peeked_status(long, known) == http._peeked_status(long, known) == 200
    assert matched[2:] == [long, long] and long not in known
