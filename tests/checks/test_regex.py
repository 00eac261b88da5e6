"""Catastrophic patterns against real servers: the HTTP body regex and the TCP expect regex
answer in milliseconds (RE2), where Python's backtracking ``re`` takes minutes on the same
input, and the prober's loop keeps running meanwhile."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any

import pytest

from checks.probes import tcp
from checks.probes.http import HttpProber, HttpSpec
from checks.probes.result import ProbeResult
from checks.regex import Regex
from tests.checks.conftest import APP, WAIT, Lab, serving, target
from tests.helpers import servers

pytestmark = pytest.mark.netns
HTTP_PORT, TCP_PORT, BIG_PORT = 9020, 9021, 9022
EVIL = "a" * 30 + "!"  # (a+)+$ backtracks 2^30 ways over it in Python's re: over a minute
_random = random.Random(13)
AB = "".join(_random.choice("ab") for _ in range(65536))  # a whole body's worth


def response(body: str) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return (head + body).encode()


async def timed(probe: Coroutine[Any, Any, ProbeResult]) -> tuple[ProbeResult, float]:
    """The probe's result and the longest the loop went without running the ticker."""
    loop = asyncio.get_running_loop()
    gaps = [0.0]

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.001)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker starts its clock
    try:
        result = await probe
        await asyncio.sleep(0.005)  # and sees a stall that ended with the probe
        return result, max(gaps)
    finally:
        tick.cancel()


def test_a_catastrophic_body_regex_answers_in_milliseconds(lab: Lab) -> None:
    handler = servers.replying(response(EVIL), wait_for_request=True)
    with serving(lab, HTTP_PORT, handler):
        prober = HttpProber()
        try:
            spec = HttpSpec(body_regex=Regex(r"(a+)+$"))
            result, stall = lab.prober.run(timed(prober.probe(target(APP, HTTP_PORT), spec, WAIT)))
        finally:
            lab.prober.run(prober.close())
    assert not result.ok and result.local is None
    assert result.error == f"body of {APP}:{HTTP_PORT} / does not match /(a+)+$/"
    assert result.latency < 0.5, f"{result.latency * 1000:.1f} ms"
    assert stall < 0.1


def test_a_whole_body_is_searched_off_the_loop(lab: Lab) -> None:
    """64 KiB, and a pattern that costs RE2 itself about 0.3 s on it (its DFA gives up on
    ``a.{500}c`` over random a/b text): the search runs in a worker thread, the loop ticks."""
    handler = servers.replying(response(AB), wait_for_request=True)
    with serving(lab, BIG_PORT, handler):
        prober = HttpProber()
        try:
            for pattern, ok in ((r"a.{500}c", False), (r"^[ab]+$", True)):
                spec = HttpSpec(body_regex=Regex(pattern))
                probe = prober.probe(target(APP, BIG_PORT), spec, WAIT)
                result, stall = lab.prober.run(timed(probe))
                assert result.ok is ok, (pattern, result.error)
                assert result.latency < 2.0, (pattern, result.latency)
                assert stall < 0.1, (pattern, stall)
        finally:
            lab.prober.run(prober.close())


def test_a_catastrophic_tcp_expect_answers_in_milliseconds(lab: Lab) -> None:
    with serving(lab, TCP_PORT, servers.replying(EVIL.encode(), wait_for_request=True)):
        spec = tcp.TcpSpec(send=b"HELLO\r\n", expect=Regex(rb"(a+)+$"))
        result, stall = lab.prober.run(timed(tcp.probe(target(APP, TCP_PORT), spec, WAIT)))
    assert not result.ok
    assert result.error == (
        f"{APP}:{TCP_PORT} closed the connection without a reply matching /(a+)+$/ "
        f"(received {EVIL.encode()!r})"
    )
    assert result.latency < 0.5, f"{result.latency * 1000:.1f} ms"
    assert stall < 0.1
