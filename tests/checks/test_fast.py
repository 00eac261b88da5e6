"""The fast probes (checks.probes.poller) on real servers: the runner's inline path, timeouts
from the poller's own timer, the llhttp fallback, stop and close with probes in flight (no file
descriptor left), and done callbacks that fail."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
from collections.abc import Iterator

import pytest

from checks.model import Check, CheckParams, ProbeResult, StartProbe
from checks.probes import dispatch, http, tcp
from checks.probes.poller import FastProbe, Poller
from checks.runner import Done, Runner
from checks.schedule import Scheduler
from director.config import parse_config
from director.health import HealthChecks, build_checks
from tests.checks.conftest import (
    APP,
    CLOSED_PORT,
    FROZEN_PORT,
    SHORT,
    WAIT,
    WEB,
    WEB6,
    Lab,
    serving,
    target,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("nginx")]
INTERIM_PORT = 9010  # answers "100 Continue" and nothing more: the llhttp fallback waits
LINGERING_PORT = 9011  # answers 200 and keeps the connection open: the prober closes first
TIME_WAIT = "06"  # the state column of /proc/net/tcp


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settled_fds(at_most: int) -> int:
    """The open descriptors once the servers (threads of this process) closed their ends."""
    for _ in range(100):
        if open_fds() <= at_most:
            break
        await asyncio.sleep(0.02)
    return open_fds()


async def _interim_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await reader.read(1024)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        while await reader.read(1024):
            pass
    writer.close()


@pytest.fixture(scope="module")
def interim_server(lab: Lab) -> Iterator[None]:
    with serving(lab, INTERIM_PORT, _interim_only):
        yield


async def _answer_and_linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):  # connect-only probes
        if await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
        while await reader.read(1024):
            pass
    writer.close()


def time_wait_sockets(port: int) -> int:
    """TIME_WAIT sockets towards ``port`` in the calling thread's network namespace."""
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/thread-self/net/{table}") as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == TIME_WAIT and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def test_probes_close_with_a_reset_and_leave_no_time_wait(lab: Lab) -> None:
    """The prober closes first (the server keeps the connection open): a FIN close would leave
    one TIME_WAIT socket per probe on the director for a minute; a reset leaves none. The
    verdicts are unchanged."""

    async def scenario() -> tuple[list[ProbeResult], int, int]:
        before = time_wait_sockets(LINGERING_PORT)
        poller = Poller(asyncio.get_running_loop())
        results = []
        for spec in (http.HttpSpec(), tcp.TcpSpec(), tcp.TcpSpec(send=b"GET / HTTP/1.0\r\n\r\n")):
            plan = dispatch.plan(target(APP, LINGERING_PORT), spec, WAIT)
            assert plan is not None
            for _ in range(10):
                results.append(await poller.run(plan))
        poller.close()
        await asyncio.sleep(0.1)  # any FIN exchange would be over
        return results, before, time_wait_sockets(LINGERING_PORT)

    with serving(lab, LINGERING_PORT, _answer_and_linger):
        results, before, after = lab.prober.run(scenario())
    assert [r.error for r in results] == [None] * 30
    assert after == before == 0


SPLIT_PORT = 9012  # answers 200 with its head in two pieces, then keeps the connection open
SILENT_PORT = 9013  # accepts, reads, never answers


async def _split_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nServer: slow")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"\r\nContent-Length: 3\r\n\r\nok\n")
        await writer.drain()
        while await reader.read(1024):
            pass
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(1024):
            pass
    writer.close()


def test_http_probes_that_read_also_close_with_a_reset(lab: Lab) -> None:
    """The status probe's hot path only peeks at a head that came whole (its close resets: the
    bytes are unread); a head in pieces is read, and a server that never answers times out:
    those close with the linger set, so they leave no TIME_WAIT either. Verdicts as ever."""

    async def scenario(port: int, wait: float) -> tuple[list[ProbeResult], int, int]:
        before = time_wait_sockets(port)
        poller = Poller(asyncio.get_running_loop())
        plan = dispatch.plan(target(APP, port), http.HttpSpec(), wait)
        assert plan is not None
        results = [await poller.run(plan) for _ in range(5)]
        poller.close()
        await asyncio.sleep(0.1)  # any FIN exchange would be over
        return results, before, time_wait_sockets(port)

    with serving(lab, SPLIT_PORT, _split_head):
        results, before, after = lab.prober.run(scenario(SPLIT_PORT, WAIT))
    assert [r.error for r in results] == [None] * 5
    assert after == before == 0
    with serving(lab, SILENT_PORT, _silent):
        results, before, after = lab.prober.run(scenario(SILENT_PORT, SHORT))
    assert [r.ok for r in results] == [False] * 5
    assert all(r.error is not None and r.error.startswith("timed out") for r in results)
    assert after == before == 0


def test_fallback_to_llhttp_times_out_and_closes(lab: Lab, interim_server: None) -> None:
    """A reply that is not a plain status line goes to aiohttp's parser (a task); the poller's
    timeout still ends it, with the same error, and closes the socket and the task."""
    prober = http.HttpProber()

    async def scenario() -> ProbeResult:
        await prober.probe(target(WEB, 80), http.HttpSpec(), WAIT)  # the poller exists
        before = open_fds()
        result = await prober.probe(target(APP, INTERIM_PORT), http.HttpSpec(), SHORT)
        await asyncio.sleep(0)  # the cancelled fallback task ends
        assert await settled_fds(before) == before
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await prober.close()
        return result

    result = lab.probe(scenario())
    assert result.error == (
        f"timed out after {SHORT:g} s waiting for the response to GET / from {APP}:{INTERIM_PORT}"
    )
    assert SHORT <= result.latency < SHORT + 0.5


Job = tuple[str, dispatch.FastPlan | None]


async def run_runner(stop_after: float) -> tuple[Scheduler[Job], Runner[Job], list[ProbeResult]]:
    """A runner over the fast probes of up, refused, frozen (timeout) and connect-only checks;
    stopped with frozen probes still in flight."""
    prober = http.HttpProber()
    results: list[ProbeResult] = []

    async def probe(job: Job) -> ProbeResult:  # only for jobs without a plan: none here
        raise AssertionError(f"task path taken for {job[0]}")

    def start(job: Job, done: Done[Job], start: StartProbe[Job]) -> FastProbe | None:
        assert job[1] is not None
        return prober.start(job[1], observed, (done, start))

    def observed(context: tuple[Done[Job], StartProbe[Job]], result: ProbeResult) -> None:
        results.append(result)
        context[0](context[1], result)

    def job(name: str, address: str, port: int, spec: dispatch.Spec, timeout: float) -> Job:
        return (name, dispatch.plan(target(address, port), spec, timeout))

    jobs = [
        job("http", WEB, 80, http.HttpSpec(), WAIT),
        job("http6-503", WEB6, 80, http.HttpSpec(path="/unavailable"), WAIT),
        job("refused", WEB, CLOSED_PORT, http.HttpSpec(), WAIT),
        job("tcp", WEB, 80, tcp.TcpSpec(), WAIT),
        job(
            "tcp-expect", WEB, 80, tcp.TcpSpec(send=b"GET / HTTP/1.0\r\n\r\n", expect=b"200"), WAIT
        ),
        job("frozen", APP, FROZEN_PORT, tcp.TcpSpec(send=b"PING\r\n", expect=b"PONG"), SHORT),
        job("frozen-long", APP, FROZEN_PORT, tcp.TcpSpec(send=b"PING\r\n", expect=b"P"), 30),
    ]
    scheduler: Scheduler[Job] = Scheduler(random.Random(3), max_in_flight=16)
    runner = Runner(scheduler, probe, lambda changes: None, fast=start)
    params = CheckParams(interval=0.05, timeout=SHORT, rise=1, fall=1)
    runner.start()
    runner.add(Check(j[0], j, params) for j in jobs)
    await asyncio.sleep(stop_after)
    assert runner.probes_running >= 1  # frozen-long is in flight
    await runner.stop()
    assert prober.poller().in_flight == 0  # the stop closed them, not the prober's close
    await prober.close()
    return scheduler, runner, results


def test_runner_fast_path_verdicts_and_stop_closes_everything(lab: Lab) -> None:
    async def scenario() -> tuple[Scheduler[Job], Runner[Job], list[ProbeResult], int, int]:
        await run_runner(0.1)  # warm up (structlog, the poller's first epoll ...)
        before = open_fds()
        scheduler, runner, results = await run_runner(SHORT + 0.4)
        after = await settled_fds(before)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return scheduler, runner, results, before, after

    scheduler, runner, results, before, after = lab.prober.run(scenario())
    assert after == before  # no socket or epoll left open by the stop
    assert runner.probes_running == 0
    last = {cid: st.state.last for cid, st in scheduler.snapshot().checks.items()}
    assert {cid for cid, outcome in last.items() if outcome is not None and outcome.ok} == {
        "http",
        "tcp",
        "tcp-expect",
    }
    errors = {cid: outcome.error for cid, outcome in last.items() if outcome is not None}
    assert (
        errors["http6-503"] == "HTTP 503 from [2001:db8:1::11]:80 /unavailable (expected 200-299)"
    )
    assert errors["refused"] == "connect to 198.18.1.11:81: connection refused"
    assert errors["frozen"] == (
        f"timed out after {SHORT:g} s waiting for a reply containing b'PONG' from {APP}:9000"
    )
    assert last["frozen-long"] is None  # stopped in flight: no verdict
    assert scheduler.expired == 0  # every verdict came from the probes, not the backstop
    assert all(r.latency >= 0 for r in results)


def test_poller_close_cancels_callers_and_closes_sockets(lab: Lab) -> None:
    async def scenario() -> tuple[int, int, list[bool]]:
        poller = Poller(asyncio.get_running_loop())
        before = open_fds()
        spec = tcp.TcpSpec(send=b"PING\r\n", expect=b"PONG")
        calls = [
            asyncio.ensure_future(tcp.probe(target(APP, FROZEN_PORT), spec, 30, poller=poller))
            for _ in range(5)
        ]
        await asyncio.sleep(0.1)
        assert poller.in_flight == 5
        during = open_fds()
        poller.close()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert await settled_fds(before - 1) == before - 1  # the sockets, and the epoll
        return before, during, [isinstance(o, asyncio.CancelledError) for o in outcomes]

    before, during, cancelled = lab.prober.run(scenario())
    assert during == before + 5
    assert cancelled == [True] * 5


def test_a_failing_done_callback_does_not_stop_the_others(lab: Lab) -> None:
    async def scenario() -> list[ProbeResult]:
        poller = Poller(asyncio.get_running_loop())
        got: list[ProbeResult] = []
        finished = asyncio.Event()

        def done(tag: str, result: ProbeResult) -> None:
            got.append(result)
            if len(got) == 4:
                finished.set()
            if tag == "bad":
                raise RuntimeError("bug in a result handler")

        plan = dispatch.plan(target(WEB, 80), http.HttpSpec(), WAIT)
        assert plan is not None
        for tag in ("bad", "good", "bad", "good"):
            poller.start(plan, done, tag)
        await asyncio.wait_for(finished.wait(), WAIT)
        poller.close()
        return got

    assert [r.ok for r in lab.prober.run(scenario())] == [True] * 4


def test_a_good_reply_through_ok_is_the_same_verdict_and_timing_as_through_done(
    lab: Lab,
) -> None:
    """The HTTP status probe's good reply ends in one function (its ``read`` closes the socket
    and calls the runner's ``ok`` itself): the latency it reports is the time from the start
    to the reply's wake, as the general ``done`` path's ``ProbeResult`` says, the socket is
    closed, and a failing ``ok`` is logged, not raised (the others go on)."""

    class Handler:
        def __init__(self) -> None:
            self.seen: list[tuple[str, float, float]] = []
            self.all_in = asyncio.Event()

        def __call__(self, tag: str, result: ProbeResult) -> None:
            assert result.ok and result.error is None  # (a good one only comes through ok)
            self.seen.append((tag, result.latency, -1.0))

        def ok(self, tag: str, latency: float, now: float) -> None:
            self.seen.append((tag, latency, now))
            if len(self.seen) == 3:
                self.all_in.set()
            if tag == "bad":
                raise RuntimeError("bug in a result handler")

    async def scenario() -> tuple[list[tuple[str, float, float, float]], list[ProbeResult]]:
        loop = asyncio.get_running_loop()
        poller = Poller(loop)
        plan = dispatch.plan(target(WEB, 80), http.HttpSpec(), WAIT)
        assert plan is not None
        handler = Handler()
        fds = open_fds()
        began = {}
        for tag in ("bad", "a", "b"):
            began[tag] = loop.time() - 0.25  # a start 250 ms ago: the latency must say so
            probe = poller.start(plan, handler, tag, began[tag])
            assert not probe.finished  # (the reply comes on a wake)
        async with asyncio.timeout(WAIT):
            await handler.all_in.wait()
        assert await settled_fds(fds) <= fds  # every probe's socket is closed
        reference = [await poller.run(plan) for _ in range(2)]
        poller.close()
        return [(t, lat, now, began[t]) for t, lat, now in handler.seen], reference

    seen, reference = lab.prober.run(scenario())
    assert sorted(t for t, *_ in seen) == ["a", "b", "bad"]
    for _tag, latency, now, began in seen:
        assert now > began  # through ok, with the wake's time
        assert latency == pytest.approx(now - began)
        assert 0.25 <= latency < 0.25 + WAIT
    assert all(r.ok and r.error is None and 0 < r.latency < WAIT for r in reference)


def test_connect_only_tcp_ends_without_waiting_for_a_wake(lab: Lab) -> None:
    """A near server has completed the handshake when connect() returns: the TCP connect-only
    probe may end inside start(), its verdict given before start() returns."""

    async def scenario() -> tuple[bool, ProbeResult | None]:
        poller = Poller(asyncio.get_running_loop())
        got: list[ProbeResult] = []
        plan = dispatch.plan(target(WEB, 80), tcp.TcpSpec(), WAIT)
        assert plan is not None
        for _ in range(20):
            probe = poller.start(plan, lambda _tag, result: got.append(result), None)
            if probe.finished:
                break
            await asyncio.sleep(0.05)
        at_once = probe.finished
        await asyncio.sleep(0.05)
        poller.close()
        return at_once, got[-1] if got else None

    at_once, result = lab.prober.run(scenario())
    assert result is not None and result.ok, result
    assert at_once


def test_the_daemons_checks_run_fast_probes_and_report_each_one(lab: Lab) -> None:
    """director.health: http and tcp checks take the fast path; on_probe (the metrics) sees
    every result, as with the task path."""
    config = parse_config(
        f"""
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
[virtual_server.check]
type = "http"
interval = 0.05
  [[virtual_server.real_server]]
  address = "{WEB}"
  [[virtual_server.real_server]]
  address = "{WEB}"
  port = 81
  check = {{ type = "tcp", port = {CLOSED_PORT}, interval = 0.05 }}
"""
    )

    async def scenario() -> list[tuple[str, ProbeResult]]:
        seen: list[tuple[str, ProbeResult]] = []
        checks = HealthChecks(lambda changes: None)
        checks.on_probe = lambda job, result: seen.append((job.kind, result))
        checks.update(config)
        await asyncio.sleep(0.3)
        await checks.stop()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return seen

    seen = lab.prober.run(scenario())
    kinds = {kind for kind, _ in seen}
    assert kinds == {"http", "tcp"}
    assert all(r.ok for kind, r in seen if kind == "http")
    assert {r.error for kind, r in seen if kind == "tcp"} == {
        f"connect to {WEB}:{CLOSED_PORT}: connection refused"
    }


WEB_CONFIG = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
[virtual_server.check]
type = "http"
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  [[virtual_server.real_server]]
  address = "198.18.1.22"
  check = { type = "tcp", port = 25, send = "EHLO x\\r\\n", expect = "^250", expect_regex = true }
  [[virtual_server.real_server]]
  address = "198.18.1.23"
  check = { type = "http", body_contains = "ok" }
  [[virtual_server.real_server]]
  address = "198.18.1.24"
  check = { type = "https" }
"""


def test_fast_probes_are_prepared_once_per_job() -> None:
    """tcp and plain-HTTP status-only jobs carry their prepared fast probe; the others none.
    The plan is not part of a job's identity (reloads compare jobs)."""
    by_host = {str(c.spec.target.address): c.spec for c in build_checks(parse_config(WEB_CONFIG))}
    web, smtp, body, https = (by_host[f"198.18.1.2{i}"] for i in range(1, 5))
    assert isinstance(web.plan, http.HttpPlan)
    assert web.plan.first.startswith(b"GET / HTTP/1.1\r\nHost: 198.18.1.21\r\n")
    assert isinstance(smtp.plan, tcp.TcpPlan)
    assert smtp.plan.sockaddr == ("198.18.1.22", 25) and smtp.plan.first == b"EHLO x\r\n"
    assert body.plan is None and https.plan is None
    again = dataclasses.replace(web, timeout=web.timeout)
    assert again == web and again.plan is not web.plan


def test_only_probes_with_the_plain_sent_skip_it_when_the_request_goes_out_at_once() -> None:
    """``begin`` sets READING itself (no call, no clock read) only for a probe class whose
    ``sent`` is FastProbe's: the HTTP status probe; a class with its own (TCP connect-only
    ends there, with its latency) is called. (The TCP side is also shown end to end by
    test_connect_only_tcp_ends_without_waiting_for_a_wake.)"""
    plain = http.HttpPlan.of(target(WEB, 80), http.HttpSpec(), WAIT)
    connect_only = dispatch.plan(target(WEB, 80), tcp.TcpSpec(), WAIT)
    assert plain is not None and connect_only is not None
    assert plain.probe_type._PLAIN_SENT
    assert not connect_only.probe_type._PLAIN_SENT

    class Own(FastProbe):
        __slots__ = ()

        def sent(self, now: float) -> None:
            self.succeed(now)

    class Inherits(Own):
        __slots__ = ()

    assert not Own._PLAIN_SENT and not Inherits._PLAIN_SENT
