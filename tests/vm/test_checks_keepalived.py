"""A frozen real server (nginx under SIGSTOP), checked by keepalived 2.2.7 and by our checker.

The kernel still completes the TCP handshake for a stopped process, so keepalived's TCP_CHECK
keeps the server in the IPVS table; its HTTP_GET, our http check and our tcp check with
send/expect all take it out. The same lab as ``bench/checks_keepalived`` (which reports the
timings): a "checker" namespace (keepalived and our checker process) and a "farm" namespace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.checks_keepalived import (
    HTTP_GET,
    TCP_CHECK,
    VIP,
    Lab,
    addresses,
    our_checker,
    state_lines,
)
from tests.helpers.netns import Background, Topology
from tests.helpers.servers import NamespaceLoop

pytestmark = pytest.mark.vm

INTERVAL, TIMEOUT = 1.0, 1.0  # both checkers: delay_loop / interval 1, connect_timeout 1, fall 1
SLACK = 4.0  # guest emulation is ~20-50x slower than the host: keepalived's log, our start


def until(what: str, check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        time.sleep(0.05)


def test_frozen_nginx_is_missed_by_tcp_check_and_caught_by_send_expect(tmp_path: Path) -> None:
    with Topology() as topo:
        lab = Lab(topo, addresses(1), tmp_path)
        real = f"{lab.servers[0]}:80"
        lab.start_nginx()
        ka = lab.keepalived([(80, HTTP_GET), (81, TCP_CHECK)])
        ours: list[str] = []  # our checker's lines, from its loop in the checker namespace
        with NamespaceLoop(lab.checker) as inside:
            checking = asyncio.run_coroutine_threadsafe(
                our_checker(list(lab.servers), ["http", "tcp"], ours.append), inside.loop
            )
            try:
                frozen_server(lab, ka, ours, real)
            finally:
                checking.cancel()
        ka.stop()
        lab.stop_nginx()


def frozen_server(lab: Lab, ka: Background, ours: list[str], real: str) -> None:
    """With every check running: freeze nginx, see who notices, thaw it, see all recover."""

    def in_table(port: int) -> bool:
        table = lab.checker.run("ipvsadm", "-Ln", "-t", f"{VIP}:{port}", check=False).stdout
        return real in table

    until("our checker to start", lambda: "ready" in ours, 30)
    until("keepalived's services in IPVS", lambda: in_table(80) and in_table(81), 60)
    time.sleep(INTERVAL + TIMEOUT)  # a round of every check
    assert "down" not in state_lines(ka, ours).values()

    assert lab.nginx is not None
    os.killpg(lab.nginx.proc.pid, signal.SIGSTOP)
    try:
        noticed = ("keepalived http", "ours http", "ours tcp")
        until(
            f"{', '.join(noticed)} to see the frozen server down",
            lambda: all(state_lines(ka, ours)[n] == "down" for n in noticed),
            INTERVAL + TIMEOUT + SLACK,
        )
        assert not in_table(80)  # keepalived's HTTP_GET took it out of the kernel table
        time.sleep(INTERVAL + TIMEOUT)  # another full round for TCP_CHECK
        assert state_lines(ka, ours)["keepalived tcp"] != "down"
        assert in_table(81)  # TCP_CHECK never noticed: the handshake still completes
        assert any(line.startswith("tcp down: timed out after 1 s waiting") for line in ours)
    finally:
        os.killpg(lab.nginx.proc.pid, signal.SIGCONT)
    until(
        "every check to see it back",
        lambda: set(state_lines(ka, ours).values()) <= {"up", ""} and in_table(80),
        INTERVAL + TIMEOUT + SLACK,
    )
