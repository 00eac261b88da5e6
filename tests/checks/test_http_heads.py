"""The status-only fast path judges a plain head itself and hands anything else to aiohttp's
llhttp parser: for odd replies its verdict and error must be exactly what llhttp alone gives
(``_plain_head`` patched to never match). Raw replies from a TCP server in a namespace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from checks.probes import http
from checks.probes.http import HttpProber, HttpSpec
from checks.probes.result import ProbeResult
from tests.checks.conftest import APP, WAIT, Lab, target
from tests.helpers import servers

pytestmark = [pytest.mark.netns]

FIRST_PORT = 9100
REPLIES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\n\r\nok",
    b"HTTP/1.1 200\r\n\r\n",
    b"HTTP/1.1 204 \r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n",
    b"HTTP/1.1 302 Found\r\nLocation: /owa/\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n X-Folded: yes\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nHost : x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\n\r\n",
    b"HTTP/1.1 200 OK\n\n",
    b"HTTP/1.1 200 OK\r\n\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 99 Low\r\n\r\n",
    b"HTTP/1.1 600 High\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"http/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2 \r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nCONTENT-LENGTH: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    b"",
]


@pytest.fixture(scope="module")
def raw_servers(lab: Lab) -> Iterator[list[int]]:
    """One server per reply (after reading the request), on consecutive ports of APP."""
    ports = [FIRST_PORT + i for i in range(len(REPLIES))]

    async def start() -> list[asyncio.Server]:
        return [
            await servers.start_tcp(APP, port, servers.replying(reply, wait_for_request=True))
            for port, reply in zip(ports, REPLIES, strict=True)
        ]

    started = lab.servers.run(start())
    yield ports

    async def stop() -> None:
        for server in started:
            server.close()
            await server.wait_closed()

    lab.servers.run(stop())


def verdicts(lab: Lab, ports: list[int]) -> list[tuple[bool, str | None]]:
    async def all_probes() -> list[ProbeResult]:
        async with HttpProber() as prober:
            return [await prober.probe(target(APP, port), HttpSpec(), WAIT) for port in ports]

    return [(r.ok, r.error) for r in lab.prober.run(all_probes())]


def test_the_fast_path_judges_odd_replies_as_llhttp_does(
    lab: Lab, raw_servers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = verdicts(lab, raw_servers)
    monkeypatch.setattr(http, "_plain_head", lambda head: None)
    slow = verdicts(lab, raw_servers)
    differ = [
        (reply[:80], got, want)
        for reply, got, want in zip(REPLIES, fast, slow, strict=True)
        if got != want
    ]
    assert not differ
    # the cases the fast path must get right by itself, and some it must refuse
    assert fast[0] == (True, None)
    assert fast[4] == (False, f"HTTP 503 from {APP}:{FIRST_PORT + 4} / (expected 200-299)")
    assert not fast[6][0] and not fast[7][0]  # two Content-Lengths, a header without ':'
    assert fast[12] == (True, None)  # 100 Continue, then 200
