"""One entry point for the scheduler: run the probe that matches the spec's type.

``plan(target, spec, timeout)`` prepares the fast form of a probe once per check (plain-HTTP
status-only and TCP: see :mod:`checks.probes.poller`), or returns None when the spec has none;
``HttpProber.start(plan, done, tag)`` runs one. ``run`` is the coroutine form, for every type.
"""

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
FastPlan = tcp.TcpPlan | http.HttpPlan


def plan(target: Target, spec: Spec, timeout: float) -> FastPlan | None:
    """The fast probe of spec, prepared (request bytes, socket address), or None."""
    match spec:
        case tcp.TcpSpec():
            return tcp.TcpPlan.of(target, spec, timeout)
        case http.HttpSpec():
            return http.HttpPlan.of(target, spec, timeout)
    return None


async def run(
    target: Target,
    spec: Spec,
    timeout: float,  # noqa: ASYNC109
    prober: http.HttpProber,
) -> ProbeResult:
    """The probe for spec's type; prober serves the HTTP(S) and Exchange probes and owns the
    fast probes' poller."""
    match spec:
        case tcp.TcpSpec():
            return await tcp.probe(target, spec, timeout, poller=prober.poller())
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
