"""Local failures (checks.local): which errors are the director's own, the tally and its
rate-limited log lines, and what the policy, the scheduler and the runner do with such a result:
nothing to the verdict."""

from __future__ import annotations

import asyncio
import errno
import random
import ssl

import pytest
from structlog.testing import capture_logs

from checks.local import LocalFaults, local_reason
from checks.model import Check, CheckParams, HealthChanged, ProbeResult, StartProbe
from checks.policy import Policy
from checks.probes.exchange import local_verdict
from checks.probes.result import ProbeFailed
from checks.runner import Done, Runner
from checks.schedule import Scheduler
from tests.checks_core.sim import FAIL, OK

EMFILE = ProbeResult(False, 0.0, "connect to 198.18.1.11:80: too many open files", local="EMFILE")


class ZeroRandom(random.Random):
    def random(self) -> float:
        return 0.0


# -- which errors are local ---------------------------------------------------------------------


def test_local_errors_are_told_from_the_servers() -> None:
    for code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL):
        assert local_reason(OSError(code, "x")) == errno.errorcode[code]
    for code in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ETIMEDOUT):
        assert local_reason(OSError(code, "x")) is None
    # EAGAIN: no port or process slot before the connection; "try again" after it
    assert local_reason(OSError(errno.EAGAIN, "x")) == "EAGAIN"
    assert local_reason(BlockingIOError(errno.EAGAIN, "x"), connected=True) is None
    # raised from a local error (a wrapper's message), and never a TLS error's own errno
    wrapped = ProbeFailed("cannot load ca_file")
    wrapped.__cause__ = OSError(errno.EMFILE, "Too many open files")
    assert local_reason(wrapped) == "EMFILE"
    assert local_reason(ssl.SSLError(errno.ENOMEM, "ssl")) is None
    assert local_reason(RuntimeError("bug")) is None


def test_tally_logs_the_first_at_once_then_at_most_once_per_reason_per_interval() -> None:
    faults = LocalFaults(every=10.0)
    first = faults.record("EMFILE", "e1", "web", 100.0)
    assert first is not None and (first.reason, first.count, first.total) == ("EMFILE", 1, 1)
    assert [faults.record("EMFILE", f"e{i}", "web", 100.0 + i) for i in range(2, 6)] == [None] * 4
    other = faults.record("EADDRNOTAVAIL", "p1", "db", 104.0)  # its own reason, its own line
    assert other is not None and other.count == 1
    line = faults.record("EMFILE", "e6", "web", 110.0)
    assert line is not None and (line.count, line.total, line.error) == (5, 6, "e6")
    assert faults.counts == {"EMFILE": 6, "EADDRNOTAVAIL": 1} and faults.total == 7
    assert faults.last is not None and (faults.last.error, faults.last.at) == ("e6", 110.0)


# -- the policy and the scheduler: no verdict ---------------------------------------------------


def test_policy_keeps_its_last_result_and_weight_on_a_local_failure() -> None:
    policy = Policy("web", CheckParams())
    policy.record_probe(ProbeResult(True, 0.01, None, weight=7), 1.0)
    policy.record_probe(EMFILE, 2.0)
    assert policy.last is not None and (policy.last.ok, policy.last.at) == (True, 1.0)
    assert policy.weight == 7


def test_a_local_failure_is_no_round_the_next_comes_at_its_slot() -> None:
    sched = Scheduler[str](ZeroRandom())
    params = CheckParams(interval=1.0, fall=1, attempts=3, retry_delay=0.1)
    sched.add([Check("web", "http", params)], 0.0)
    [start] = sched.due(0.0)
    assert sched.probe_done(start, FAIL, 0.01) == []  # attempt 1 failed: retry at 0.11
    [retry] = sched.due(0.11)
    assert retry.attempt == 2
    # attempt 2 could not run (out of fds): with fall = 1 a failure would take it down
    assert sched.probe_done(retry, EMFILE, 0.12) == []
    snap = sched.snapshot()
    assert snap.checks["web"].state.up and snap.checks["web"].state.bad_streak == 0
    assert snap.checks["web"].state.last is not None
    assert snap.checks["web"].state.last.error == "connection refused"  # the last real attempt
    assert (snap.rounds, snap.void_rounds) == (0, 1)
    assert sched.next_deadline() == pytest.approx(1.0)  # the next round's slot, no quick retry
    assert sched.due(0.5) == []
    [nxt] = sched.due(1.0)
    assert nxt.attempt == 1  # a fresh round
    assert sched.probe_done(nxt, OK, 1.01) == []
    assert sched.health() == {"web": True}


def test_down_stays_down_and_rise_is_not_helped_by_local_failures() -> None:
    sched = Scheduler[str](ZeroRandom())
    sched.add([Check("db", "tcp", CheckParams(interval=1.0, rise=2, initial="down"))], 0.0)
    now, changes = 0.0, []
    for result in (OK, EMFILE, EMFILE, OK):
        [start] = sched.due(now)
        changes += sched.probe_done(start, result, now + 0.01)
        now += 1.0
    # two good rounds, with two void ones between: up only at the second good round
    assert [(c.up, c.at) for c in changes] == [(True, 3.01)]


# -- the runner: counted, logged, no verdict ----------------------------------------------------


class Finished:
    finished = True

    def cancel(self) -> None:
        pass


@pytest.mark.asyncio
async def test_runner_counts_and_logs_local_failures_of_fast_and_task_probes() -> None:
    """A fast probe whose start raises EMFILE (no fd for the poller's epoll), a fast probe that
    reports a local result, and a task probe that raises ENOBUFS: no verdict changes with
    fall = 1, each reason is counted and logged once."""

    def fast(spec: str, done: Done[str], start: StartProbe[str]) -> Finished | None:
        if spec == "epoll":
            raise OSError(errno.EMFILE, "Too many open files")
        if spec == "socket":
            done(start, EMFILE)
            return Finished()
        return None

    async def task(spec: str) -> ProbeResult:
        raise OSError(errno.ENOBUFS, "No buffer space available")

    changes: list[HealthChanged] = []
    sched = Scheduler[str](random.Random(2), max_in_flight=8)
    runner = Runner(sched, task, changes.extend, fast=fast, local_faults=LocalFaults(every=60))
    params = CheckParams(interval=0.02, timeout=0.5, fall=1)
    runner.add([Check(name, name, params) for name in ("epoll", "socket", "buffers")])
    with capture_logs() as logs:
        runner.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            counts = runner.local_faults.counts
            if counts.get("EMFILE", 0) >= 6 and counts.get("ENOBUFS", 0) >= 3:
                break
        await runner.stop()
    assert changes == []
    assert sched.health() == {"epoll": True, "socket": True, "buffers": True}
    assert sched.snapshot().rounds == 0
    lines = [e for e in logs if e["event"] == "probe_local_failure"]
    assert sorted(e["reason"] for e in lines) == ["EMFILE", "ENOBUFS"]  # rate-limited
    assert not [e for e in logs if e["event"] == "probe raised"]  # not a probe bug
    last = runner.local_faults.last
    assert last is not None and "a fault of this director" in last.error


def test_exchange_is_local_only_when_the_other_vdirs_cannot_decide() -> None:
    down = ProbeResult(False, 0.01, "HTTP 503 from 198.18.1.11:443 /ecp/healthcheck.htm")
    assert local_verdict("all", {"owa": OK, "ecp": EMFILE}) is EMFILE  # ecp might be up
    assert local_verdict("all", {"owa": down, "ecp": EMFILE}) is None  # owa is down anyway
    assert local_verdict("any", {"owa": FAIL, "ecp": EMFILE}) is EMFILE  # ecp might be up
    assert local_verdict("any", {"owa": OK, "ecp": EMFILE}) is None
    assert local_verdict("all", {"owa": OK, "ecp": down}) is None  # no local failure at all
