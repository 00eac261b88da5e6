"""Probes of every type, run concurrently (as the scheduler will), close everything they open:
after a mix of successes, failures and timeouts the process has no more file descriptors."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from checks.probes import dispatch, exchange, rdp, script, smtp, tcp
from checks.probes.http import HttpProber, HttpSpec
from checks.probes.result import ProbeResult
from tests.checks.conftest import (
    APP,
    FROZEN_PORT,
    GARBAGE_AFTER_REQUEST_PORT,
    HTTP_PORT,
    HTTPS_PORT,
    SHORT,
    SILENT_PORT,
    SMTP_PORT,
    WAIT,
    WEB,
    Lab,
    target,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("nginx")]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def every_kind(prober: HttpProber) -> list[ProbeResult]:
    frozen, app = target(APP, FROZEN_PORT), target(APP, HTTPS_PORT)
    probes = [
        tcp.probe(frozen, tcp.TcpSpec(send=b"PING\r\n", expect=b"PONG"), SHORT),
        tcp.probe(target(WEB, 80), tcp.TcpSpec(send=b"GET / HTTP/1.0\r\n\r\n", expect=b""), WAIT),
        prober.probe(target(APP, HTTP_PORT), HttpSpec(path="/slow"), SHORT),
        prober.probe(target(APP, SILENT_PORT), HttpSpec(tls=True), SHORT),
        prober.probe(app, HttpSpec(tls=True, body_contains="ok"), WAIT),
        exchange.probe(
            app, exchange.ExchangeSpec(("owa", "ecp", "ews"), "any"), WAIT, prober=prober
        ),
        rdp.probe(frozen, rdp.RdpSpec(), SHORT),
        rdp.probe(target(APP, GARBAGE_AFTER_REQUEST_PORT), rdp.RdpSpec(), WAIT),
        smtp.probe(target(APP, SMTP_PORT), smtp.SmtpSpec(starttls=True), WAIT),
        smtp.probe(frozen, smtp.SmtpSpec(), SHORT),
        script.probe(
            frozen, script.ScriptSpec((sys.executable, "-c", "import time; time.sleep(9)")), SHORT
        ),
        dispatch.run(target(WEB, 80), HttpSpec(body_contains="default site"), WAIT, prober),
    ]
    return await asyncio.gather(*probes)


def test_concurrent_probes_leave_no_open_files(lab: Lab, http_prober: HttpProber) -> None:
    lab.prober.run(every_kind(http_prober))  # warm up: sessions, executor, child watcher
    before = open_fds()
    results = lab.prober.run(every_kind(http_prober))
    assert [result.ok for result in results] == [
        False,
        True,
        False,
        False,
        True,
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    deadline = time.monotonic() + 5
    while open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_fds() <= before
