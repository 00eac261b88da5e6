"""RDP probe: X.224 Connection Request to Debian's xrdp (up), and to servers that answer garbage,
a cut-short reply, nothing (frozen), or refuse the connection (down)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from checks.probes import rdp
from checks.probes.rdp import RdpSpec
from tests.checks.conftest import (
    APP,
    FROZEN_PORT,
    GARBAGE_AFTER_REQUEST_PORT,
    RDP,
    SHORT,
    SHORT_X224_PORT,
    WAIT,
    Lab,
    target,
)
from tests.helpers import servers

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def xrdp(lab: Lab) -> Iterator[None]:
    directory = lab.directory / "xrdp"
    directory.mkdir()
    cert = lab.pki.cert_files("rdp.test")
    job = servers.xrdp(lab.rdp, directory, RDP, 3389, cert, security_layer="tls")
    try:
        lab.prober.run(servers.wait_listening(RDP, 3389))
    except TimeoutError:
        pytest.fail(f"xrdp did not start:\n{job.output()}")
    yield
    job.stop()


@pytest.mark.usefixtures("xrdp")
@pytest.mark.parametrize(
    "protocols",
    [
        pytest.param(rdp.PROTOCOL_SSL | rdp.PROTOCOL_HYBRID, id="negotiation-response"),
        pytest.param(rdp.PROTOCOL_RDP, id="negotiation-failure"),
    ],
)
def test_xrdp_is_up(lab: Lab, protocols: int) -> None:
    """xrdp (TLS only) selects TLS, or refuses standard RDP security with a Negotiation Failure
    (SSL_REQUIRED_BY_SERVER): either way it answered a Connection Confirm, so it is up."""
    spec = RdpSpec(requested_protocols=protocols, cookie="director")
    result = lab.probe(rdp.probe(target(RDP, 3389), spec, WAIT))
    assert result.ok, result.error
    assert 0 < result.latency < WAIT


def test_garbage_reply_is_down(lab: Lab) -> None:
    result = lab.probe(rdp.probe(target(APP, GARBAGE_AFTER_REQUEST_PORT), RdpSpec(), WAIT))
    assert not result.ok
    assert result.error == (
        "bad X.224 reply from 198.18.2.11:9001: not a TPKT reply (version 72, expected 3): b'HTTP'"
    )


def test_cut_short_reply_is_down(lab: Lab) -> None:
    result = lab.probe(rdp.probe(target(APP, SHORT_X224_PORT), RdpSpec(), WAIT))
    assert (
        result.error == "bad X.224 reply from 198.18.2.11:9004: reply cut short after 7 of 19 bytes"
    )


def test_nothing_listening_is_down(lab: Lab) -> None:
    result = lab.probe(rdp.probe(target(RDP, 3390), RdpSpec(), WAIT))
    assert not result.ok
    assert result.error == "connect to 198.18.3.11:3390: connection refused"


def test_frozen_server_is_down_by_timeout(lab: Lab) -> None:
    result = lab.probe(rdp.probe(target(APP, FROZEN_PORT), RdpSpec(), SHORT))
    assert not result.ok
    assert result.error == (
        f"timed out after {SHORT:g} s waiting for the X.224 Connection Confirm from {APP}:9000"
    )
    assert SHORT <= result.latency < SHORT + 0.5
