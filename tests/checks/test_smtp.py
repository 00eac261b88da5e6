"""SMTP probe against aiosmtpd (a real SMTP server, STARTTLS with a trustme certificate), and
against servers sending garbage or a 554 banner."""

from __future__ import annotations

import pytest

from checks.probes import smtp
from checks.probes.result import ProbeResult
from checks.probes.smtp import SmtpSpec
from tests.checks.conftest import (
    APP,
    BANNER_554_PORT,
    CLOSED_PORT,
    FROZEN_PORT,
    GARBAGE_PORT,
    SHORT,
    SMTP_PLAIN_PORT,
    SMTP_PORT,
    WAIT,
    Lab,
    target,
)

pytestmark = pytest.mark.netns


def probe(lab: Lab, spec: SmtpSpec, port: int = SMTP_PORT, timeout: float = WAIT) -> ProbeResult:
    return lab.probe(smtp.probe(target(APP, port), spec, timeout))


def test_banner_and_ehlo_is_up(lab: Lab) -> None:
    for port in (SMTP_PORT, SMTP_PLAIN_PORT):
        result = probe(lab, SmtpSpec(helo_name="director.test"), port)
        assert result.ok, result.error
        assert 0 < result.latency < WAIT


def test_starttls_verified_against_the_ca_is_up(lab: Lab) -> None:
    spec = SmtpSpec(
        starttls=True, server_name="mail.test", verify=True, ca_file=str(lab.pki.ca_file)
    )
    result = probe(lab, spec)
    assert result.ok, result.error
    assert probe(lab, SmtpSpec(starttls=True)).ok  # verify off


def test_starttls_with_the_wrong_ca_is_down(lab: Lab) -> None:
    spec = SmtpSpec(
        starttls=True, server_name="mail.test", verify=True, ca_file=str(lab.pki.wrong_ca_file)
    )
    result = probe(lab, spec)
    assert not result.ok
    assert result.error == (
        "TLS handshake with 198.18.2.11:25 failed: certificate verification failed: "
        "unable to get local issuer certificate"
    )


def test_starttls_not_offered_is_down(lab: Lab) -> None:
    result = probe(lab, SmtpSpec(starttls=True), SMTP_PLAIN_PORT)
    assert not result.ok
    assert str(result.error).startswith(
        "198.18.2.11:2525 does not offer STARTTLS (EHLO reply: 250 mail.test / "
    )


def test_garbage_banner_is_down(lab: Lab) -> None:
    result = probe(lab, SmtpSpec(), GARBAGE_PORT)
    assert not result.ok
    assert result.error == (
        "bad reply while waiting for the SMTP banner from 198.18.2.11:9002: "
        "not an SMTP reply line: b'garbage\\r\\n'"
    )


def test_refusing_banner_is_down(lab: Lab) -> None:
    result = probe(lab, SmtpSpec(), BANNER_554_PORT)
    assert (
        result.error
        == "SMTP banner from 198.18.2.11:9003 is 554 5.3.2 mail.test no service here (expected 220)"
    )


def test_frozen_and_absent_servers_are_down(lab: Lab) -> None:
    frozen = probe(lab, SmtpSpec(), FROZEN_PORT, SHORT)
    assert (
        frozen.error
        == f"timed out after {SHORT:g} s waiting for the SMTP banner from 198.18.2.11:9000"
    )
    absent = probe(lab, SmtpSpec(), CLOSED_PORT)
    assert absent.error == "connect to 198.18.2.11:81: connection refused"
