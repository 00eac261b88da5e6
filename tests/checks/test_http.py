"""HTTP probe against nginx (status ranges, Host routing, body, basic auth, HTTP/1.0 and 1.1)
and against an aiohttp server (slow responses)."""

from __future__ import annotations

import pytest

from checks.probes import http
from checks.probes.http import HttpProber, HttpSpec
from checks.probes.result import ProbeResult
from checks.regex import Regex
from tests.checks.conftest import (
    APP,
    APP6,
    CLOSED_PORT,
    GARBAGE_PORT,
    HTTP_PORT,
    SHORT,
    WAIT,
    WEB,
    WEB6,
    Lab,
    target,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("nginx")]


def probe(
    lab: Lab,
    prober: HttpProber,
    spec: HttpSpec,
    address: str = WEB,
    port: int = 80,
    timeout: float = WAIT,
) -> ProbeResult:
    return lab.probe(prober.probe(target(address, port), spec, timeout))


def test_get_and_head_are_up(lab: Lab, http_prober: HttpProber) -> None:
    for method in ("GET", "HEAD"):
        result = probe(lab, http_prober, HttpSpec(method=method))
        assert result.ok, result.error
        assert result.error is None
        assert 0 < result.latency < WAIT


def test_ipv6(lab: Lab, http_prober: HttpProber) -> None:
    assert probe(lab, http_prober, HttpSpec(body_contains="default site"), WEB6).ok
    assert probe(
        lab,
        http_prober,
        HttpSpec(path="/whoami", body_contains="host=[2001:db8:2::11]:8080"),
        APP6,
        HTTP_PORT,
    ).ok


def test_status_ranges(lab: Lab, http_prober: HttpProber) -> None:
    down = probe(lab, http_prober, HttpSpec(path="/unavailable"))
    assert not down.ok
    assert down.error == "HTTP 503 from 198.18.1.11:80 /unavailable (expected 200-299)"
    assert probe(lab, http_prober, HttpSpec(path="/unavailable", expect_status=((500, 599),))).ok
    moved = probe(lab, http_prober, HttpSpec(path="/moved"))  # redirects are not followed
    assert moved.error == "HTTP 302 from 198.18.1.11:80 /moved (expected 200-299)"
    assert probe(
        lab, http_prober, HttpSpec(path="/moved", expect_status=((200, 200), (301, 302)))
    ).ok
    missing = probe(
        lab, http_prober, HttpSpec(path="/nope", expect_status=((200, 200), (302, 302)))
    )
    assert missing.error == "HTTP 404 from 198.18.1.11:80 /nope (expected 200, 302)"


def test_host_header_selects_the_virtual_host(lab: Lab, http_prober: HttpProber) -> None:
    for host, body in (("a.test", "site a"), ("b.test", "site b"), (None, "default site")):
        result = probe(lab, http_prober, HttpSpec(host=host, body_contains=body))
        assert result.ok, (host, result.error)
    wrong = probe(lab, http_prober, HttpSpec(host="c.test", body_contains="site a"))
    assert not wrong.ok
    assert wrong.error == "body of 198.18.1.11:80 / does not contain 'site a'"


def test_body_regex(lab: Lab, http_prober: HttpProber) -> None:
    assert probe(
        lab,
        http_prober,
        HttpSpec(path="/version", body_regex=Regex(r"version \d+\.\d+ ready")),
    ).ok
    result = probe(lab, http_prober, HttpSpec(path="/version", body_regex=Regex(r"version 3\.")))
    assert result.error == r"body of 198.18.1.11:80 /version does not match /version 3\./"


def test_basic_auth(lab: Lab, http_prober: HttpProber) -> None:
    good = probe(
        lab,
        http_prober,
        HttpSpec(path="/private/", basic_auth=("probe", "s3cret"), body_contains="members only"),
    )
    assert good.ok, good.error
    for auth in (None, ("probe", "wrong")):
        result = probe(lab, http_prober, HttpSpec(path="/private/", basic_auth=auth))
        assert result.error == "HTTP 401 from 198.18.1.11:80 /private/ (expected 200-299)"


def test_http_version(lab: Lab, http_prober: HttpProber) -> None:
    for version in ("1.0", "1.1"):
        spec = HttpSpec(path="/protocol", http_version=version, body_contains=f"HTTP/{version}")
        result = probe(lab, http_prober, spec)
        assert result.ok, (version, result.error)


def test_nothing_listening_is_connection_refused(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, HttpSpec(), port=CLOSED_PORT)
    assert not result.ok
    assert result.error == "connect to 198.18.1.11:81: connection refused"


def test_garbage_is_down(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, HttpSpec(), APP, GARBAGE_PORT)
    assert result.error == (
        "invalid HTTP response from 198.18.2.11:9002 to GET /: Bad status line: "
        "Expected HTTP/, RTSP/ or ICE/: b'garbage' ^"
    )


def test_slow_response_times_out(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, HttpSpec(path="/slow"), APP, HTTP_PORT, SHORT)
    assert not result.ok
    assert result.error == (
        f"timed out after {SHORT:g} s waiting for the response to GET /slow from {APP}:8080"
    )
    assert SHORT <= result.latency < SHORT + 0.5


def test_probe_without_a_prober_uses_a_temporary_session(lab: Lab) -> None:
    result = lab.probe(http.probe(target(WEB, 80), HttpSpec(body_contains="default site"), WAIT))
    assert result.ok, result.error


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="path must start with '/'"):
        HttpSpec(path="health")
    with pytest.raises(ValueError, match="expect_status"):
        HttpSpec(expect_status=((299, 200),))
