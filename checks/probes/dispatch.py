"""One entry point for the scheduler: run the probe that matches the spec's type."""

from __future__ import annotations

from checks.probes import exchange, http, rdp, script, smtp, tcp
from checks.probes.result import ProbeResult, Target

Spec = (
    tcp.TcpSpec
    | http.HttpSpec
    | exchange.ExchangeSpec
    | rdp.RdpSpec
    | smtp.SmtpSpec
    | script.ScriptSpec
)


async def run(
    target: Target,
    spec: Spec,
    timeout: float,  # noqa: ASYNC109
    prober: http.HttpProber,
) -> ProbeResult:
    """The probe for spec's type; prober serves the HTTP(S) and Exchange probes."""
    match spec:
        case tcp.TcpSpec():
            return await tcp.probe(target, spec, timeout)
        case http.HttpSpec():
            return await prober.probe(target, spec, timeout)
        case exchange.ExchangeSpec():
            return await exchange.probe(target, spec, timeout, prober=prober)
        case rdp.RdpSpec():
            return await rdp.probe(target, spec, timeout)
        case smtp.SmtpSpec():
            return await smtp.probe(target, spec, timeout)
        case script.ScriptSpec():
            return await script.probe(target, spec, timeout)
