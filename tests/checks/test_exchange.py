"""Exchange probe against an aiohttp server answering /<vdir>/healthcheck.htm like Exchange's
Managed Availability: 200 for healthy vdirs, 503 for ecp, 500 for oab, 404 for rpc."""

from __future__ import annotations

from typing import Literal

import pytest

from checks.probes import exchange
from checks.probes.exchange import ExchangeSpec
from checks.probes.http import HttpProber
from checks.probes.result import ProbeResult
from tests.checks.conftest import APP, CLOSED_PORT, HTTPS_PORT, WAIT, Lab, target

pytestmark = pytest.mark.netns
HEALTHY = ("owa", "ews", "Microsoft-Server-ActiveSync", "autodiscover", "mapi")


def probe(
    lab: Lab,
    prober: HttpProber,
    vdirs: tuple[str, ...],
    mode: Literal["all", "any"] = "all",
    port: int = HTTPS_PORT,
) -> ProbeResult:
    spec = ExchangeSpec(
        vdirs,
        mode,
        host="mail.contoso.test",
        server_name="exchange.test",
        verify=True,
        ca_file=str(lab.pki.ca_file),
    )
    return lab.probe(exchange.probe(target(APP, port), spec, WAIT, prober=prober))


def test_all_healthy_vdirs_is_up(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, HEALTHY)
    assert result.ok, result.error
    assert 0 < result.latency < WAIT


def test_one_failing_vdir_is_down_in_mode_all_naming_it(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, ("owa", "ecp", "ews"))
    assert not result.ok
    assert result.error == (
        "1 of 3 Exchange vdirs down (ecp; all must be up): "
        "HTTP 503 from 198.18.2.11:443 /ecp/healthcheck.htm (expected 200)"
    )


def test_one_healthy_vdir_is_enough_in_mode_any(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, ("ecp", "oab", "owa"), "any")
    assert result.ok, result.error


def test_every_vdir_failing_is_down_in_mode_any(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, ("ecp", "oab", "rpc"), "any")
    assert not result.ok
    assert result.error == (
        "3 of 3 Exchange vdirs down (ecp, oab, rpc; none is up): "
        "HTTP 503 from 198.18.2.11:443 /ecp/healthcheck.htm (expected 200); "
        "HTTP 500 from 198.18.2.11:443 /oab/healthcheck.htm (expected 200); "
        "HTTP 404 from 198.18.2.11:443 /rpc/healthcheck.htm (expected 200)"
    )


def test_server_down(lab: Lab, http_prober: HttpProber) -> None:
    result = probe(lab, http_prober, ("owa",), port=CLOSED_PORT)
    assert result.error == (
        "1 of 1 Exchange vdirs down (owa; all must be up): "
        "connect to 198.18.2.11:81: connection refused"
    )


def test_without_a_prober(lab: Lab) -> None:
    spec = ExchangeSpec(("owa", "ecp"), "any", server_name="exchange.test")
    assert lab.probe(exchange.probe(target(APP, HTTPS_PORT), spec, WAIT)).ok


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ExchangeSpec(())
    with pytest.raises(ValueError, match="bad vdir 'owa/x'"):
        ExchangeSpec(("owa/x",))
