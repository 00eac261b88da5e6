"""TCP probe against nginx and raw servers in namespaces: connect, send/expect, frozen, refused."""

from __future__ import annotations

import pytest

from checks.probes import tcp
from checks.regex import Regex
from tests.checks.conftest import (
    APP,
    CLOSED_PORT,
    FROZEN_PORT,
    GARBAGE_PORT,
    SHORT,
    WAIT,
    WEB,
    WEB6,
    Lab,
    target,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("nginx")]
HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: www.test\r\n\r\n"


def test_connect_only_is_up(lab: Lab) -> None:
    result = lab.probe(tcp.probe(target(WEB, 80), tcp.TcpSpec(), WAIT))
    assert result.ok, result.error
    assert result.error is None
    assert 0 < result.latency < WAIT


def test_ipv6_connect_is_up(lab: Lab) -> None:
    result = lab.probe(tcp.probe(target(WEB6, 80), tcp.TcpSpec(), WAIT))
    assert result.ok, result.error


def test_send_expect_bytes_and_regex(lab: Lab) -> None:
    for expect in (b"default site", Regex(rb"^HTTP/1\.[01] 200 ")):
        spec = tcp.TcpSpec(send=HTTP_REQUEST, expect=expect)
        result = lab.probe(tcp.probe(target(WEB, 80), spec, WAIT))
        assert result.ok, result.error


def test_reply_without_the_expected_bytes_is_down(lab: Lab) -> None:
    spec = tcp.TcpSpec(send=HTTP_REQUEST, expect=b"SSH-2.0")
    result = lab.probe(tcp.probe(target(WEB, 80), spec, WAIT))
    assert not result.ok
    assert result.error is not None
    assert "198.18.1.11:80 closed the connection without a reply containing b'SSH-2.0'" in (
        result.error
    )
    assert "HTTP/1.1 200 OK" in result.error  # what it did say


def test_read_bytes_limits_the_search(lab: Lab) -> None:
    spec = tcp.TcpSpec(send=HTTP_REQUEST, expect=b"default site", read_bytes=16)
    result = lab.probe(tcp.probe(target(WEB, 80), spec, WAIT))
    assert not result.ok
    assert result.error == (
        "no reply containing b'default site' in the first 16 bytes from 198.18.1.11:80 "
        "(received b'HTTP/1.1 200 OK\\r')"
    )


def test_frozen_server_is_down_by_timeout(lab: Lab) -> None:
    """The kernel completes the handshake and takes the bytes; the application never answers."""
    frozen = target(APP, FROZEN_PORT)
    assert lab.probe(tcp.probe(frozen, tcp.TcpSpec(), WAIT)).ok  # connect alone can't tell
    spec = tcp.TcpSpec(send=b"PING\r\n", expect=b"PONG")
    result = lab.probe(tcp.probe(frozen, spec, SHORT))
    assert not result.ok
    assert result.error == (
        f"timed out after {SHORT:g} s waiting for a reply containing b'PONG' from {APP}:9000"
    )
    assert SHORT <= result.latency < SHORT + 0.5


def test_expect_without_send_reads_a_banner(lab: Lab) -> None:
    result = lab.probe(tcp.probe(target(APP, GARBAGE_PORT), tcp.TcpSpec(expect=b"garbage"), WAIT))
    assert result.ok, result.error
    result = lab.probe(tcp.probe(target(APP, GARBAGE_PORT), tcp.TcpSpec(expect=b"+OK"), WAIT))
    assert not result.ok
    assert "(received b'garbage\\r\\n')" in str(result.error)


def test_nothing_listening_is_connection_refused(lab: Lab) -> None:
    result = lab.probe(tcp.probe(target(WEB, CLOSED_PORT), tcp.TcpSpec(), WAIT))
    assert not result.ok
    assert result.error == "connect to 198.18.1.11:81: connection refused"
    result = lab.probe(tcp.probe(target(WEB6, CLOSED_PORT), tcp.TcpSpec(), WAIT))
    assert result.error == "connect to [2001:db8:1::11]:81: connection refused"
