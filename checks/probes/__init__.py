"""Health-check probes: one async function per check type, one result type.

Every probe has the shape ``async def probe(target, spec, timeout) -> ProbeResult`` (HTTP,
HTTPS and Exchange also take the ``HttpProber`` that owns their aiohttp sessions). A probe
never raises (cancellation aside), enforces the whole timeout itself, closes what it opened,
and measures its latency with the running loop's clock. Retries, "up if one of N attempts
succeeds" and rise/fall counting belong to the scheduler, not here.

| type | module | spec |
| --- | --- | --- |
| tcp | tcp.py | TcpSpec: connect, optional send/expect |
| http, https | http.py | HttpSpec (tls=False/True) |
| exchange | exchange.py | ExchangeSpec: /<vdir>/healthcheck.htm for each vdir |
| rdp | rdp.py | RdpSpec: X.224 Connection Request/Confirm |
| smtp | smtp.py | SmtpSpec: banner, EHLO, optional STARTTLS |
| script | script.py | ScriptSpec: external program, exit 0 = up |

``dispatch.run(target, spec, timeout, http)`` picks the probe from the spec's type.

The hot ones (tcp, and http that judges the status alone) also have a callback form, which the
runner uses: ``dispatch.plan(target, spec, timeout)`` prepares it once per check and
``HttpProber.start(plan, done, tag)`` runs it (see ``poller.py``); their coroutine form runs the
same code.
"""

from checks.probes.result import ProbeResult, Target

__all__ = ["ProbeResult", "Target"]
