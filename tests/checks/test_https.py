"""HTTPS probe against aiohttp servers with trustme certificates: SNI, verification against the
right and a wrong CA, self-signed with verification off, a silent server, a slow handler."""

from __future__ import annotations

import pytest

from checks.probes.http import HttpProber, HttpSpec
from checks.probes.result import ProbeResult
from tests.checks.conftest import (
    APP,
    HTTP_PORT,
    HTTPS_PORT,
    SELF_SIGNED_PORT,
    SHORT,
    SILENT_PORT,
    WAIT,
    Lab,
    target,
)

pytestmark = pytest.mark.netns


def probe(
    lab: Lab, prober: HttpProber, spec: HttpSpec, port: int = HTTPS_PORT, timeout: float = WAIT
) -> ProbeResult:
    return lab.probe(prober.probe(target(APP, port), spec, timeout))


def test_sni_and_verification_against_the_right_ca(lab: Lab, http_prober: HttpProber) -> None:
    """The server presents exchange.test's certificate only to clients that ask for it by SNI."""
    ca = str(lab.pki.ca_file)
    spec = HttpSpec(tls=True, server_name="exchange.test", verify=True, ca_file=ca)
    result = probe(lab, http_prober, spec)
    assert result.ok, result.error
    by_host = HttpSpec(
        tls=True,
        host="exchange.test",
        path="/whoami",
        body_contains="host=exchange.test\n",
        verify=True,
        ca_file=ca,
    )
    result = probe(lab, http_prober, by_host)  # SNI defaults to the Host header's name
    assert result.ok, result.error
    no_sni = probe(lab, http_prober, HttpSpec(tls=True, verify=True, ca_file=ca))
    assert not no_sni.ok
    assert no_sni.error == (
        "TLS certificate of 198.18.2.11:443 not trusted: IP address mismatch, certificate is not "
        f"valid for '198.18.2.11'. (verified against {ca})"
    )
    other_name = probe(
        lab, http_prober, HttpSpec(tls=True, server_name="other.test", verify=True, ca_file=ca)
    )
    assert "Hostname mismatch, certificate is not valid for 'other.test'" in str(other_name.error)


def test_wrong_ca_is_down_with_a_clear_error(lab: Lab, http_prober: HttpProber) -> None:
    wrong = str(lab.pki.wrong_ca_file)
    spec = HttpSpec(tls=True, server_name="exchange.test", verify=True, ca_file=wrong)
    result = probe(lab, http_prober, spec)
    assert not result.ok
    assert result.error == (
        "TLS certificate of 198.18.2.11:443 not trusted: unable to get local issuer certificate "
        f"(verified against {wrong})"
    )


def test_missing_ca_file(lab: Lab, http_prober: HttpProber) -> None:
    spec = HttpSpec(tls=True, verify=True, ca_file="/nonexistent/ca.pem")
    result = probe(lab, http_prober, spec)
    assert not result.ok
    assert str(result.error).startswith("cannot load ca_file /nonexistent/ca.pem: ")


def test_self_signed_with_verify_off_is_up(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, HttpSpec(tls=True, body_contains="ok"), SELF_SIGNED_PORT)
    assert result.ok, result.error
    verified = probe(lab, http_prober, HttpSpec(tls=True, verify=True), SELF_SIGNED_PORT)
    assert not verified.ok
    assert "not trusted: self-signed certificate" in str(verified.error)


def test_server_that_never_answers_times_out(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, HttpSpec(tls=True), SILENT_PORT, SHORT)
    assert not result.ok
    assert (
        result.error
        == f"timed out after {SHORT:g} s connecting to 198.18.2.11:9443 (TCP and TLS handshakes)"
    )
    assert SHORT <= result.latency < SHORT + 0.5


def test_slow_handler_times_out(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, HttpSpec(tls=True, path="/slow"), timeout=SHORT)
    assert not result.ok
    assert (
        result.error
        == f"timed out after {SHORT:g} s waiting for the response to GET /slow from 198.18.2.11:443"
    )


def test_plain_http_to_a_tls_port_and_tls_to_a_plain_port(
    lab: Lab, http_prober: HttpProber
) -> None:
    result = probe(lab, http_prober, HttpSpec())
    assert result.error == (
        "connection closed by the server while waiting for the response to GET / from "
        "198.18.2.11:443"
    )
    result = probe(lab, http_prober, HttpSpec(tls=True), HTTP_PORT)
    assert result.error == (
        "TLS handshake with 198.18.2.11:8080 failed: the server did not answer in TLS "
        "(is the port plain text?)"
    )
