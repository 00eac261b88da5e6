"""Microsoft Exchange: GET https://<target>/<vdir>/healthcheck.htm for each virtual directory.

Exchange's Managed Availability answers ``200`` on ``/<vdir>/healthcheck.htm`` while that
protocol is healthy on the server and stops answering 200 when it is taken out of service
(``Set-ServerComponentState ... -State Inactive``, a failing health set). All vdirs are checked
concurrently, each on its own connection. ``mode = "all"``: the server is up only when every
vdir is; ``mode = "any"``: up as soon as one is (the rest are then cancelled). The error names
the vdirs that are down and why. A vdir's probe that could not run for a local reason
(:mod:`checks.local`) makes the whole result local unless the others decide alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from checks.probes.http import HttpProber, HttpSpec
from checks.probes.result import ProbeResult, Target

VDIRS = ("owa", "ecp", "ews", "Microsoft-Server-ActiveSync", "autodiscover", "oab", "rpc", "mapi")


@dataclass(frozen=True)
class ExchangeSpec:
    """What an Exchange check asks of the server's virtual directories."""

    vdirs: tuple[str, ...]  # names as in VDIRS, e.g. ("owa", "ecp", "ews")
    mode: Literal["all", "any"] = "all"
    host: str | None = None
    server_name: str | None = None
    verify: bool = False
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.vdirs:
            raise ValueError("vdirs must name at least one virtual directory, e.g. ('owa',)")
        for vdir in self.vdirs:
            if not vdir or "/" in vdir or vdir in (".", ".."):
                raise ValueError(f"bad vdir {vdir!r}: give a name such as 'owa' or 'ecp'")

    def http_spec(self, vdir: str) -> HttpSpec:
        return HttpSpec(
            path=f"/{vdir}/healthcheck.htm",
            host=self.host,
            expect_status=((200, 200),),
            tls=True,
            server_name=self.server_name,
            verify=self.verify,
            ca_file=self.ca_file,
        )


def verdict(mode: Literal["all", "any"], results: dict[str, ProbeResult]) -> str | None:
    """None when the server is up by mode; otherwise the error naming the failing vdirs."""
    down = {vdir: result for vdir, result in results.items() if not result.ok}
    if not down or (mode == "any" and len(down) < len(results)):
        return None
    names = ", ".join(down)
    reasons = "; ".join(dict.fromkeys(str(result.error) for result in down.values()))  # unique
    rule = "all must be up" if mode == "all" else "none is up"
    return f"{len(down)} of {len(results)} Exchange vdirs down ({names}; {rule}): {reasons}"


async def probe(
    target: Target,
    spec: ExchangeSpec,
    timeout: float,  # noqa: ASYNC109
    *,
    prober: HttpProber | None = None,
) -> ProbeResult:
    """Each vdir's probe runs concurrently with the whole timeout, so this one ends within it."""
    if prober is None:
        async with HttpProber() as temporary:
            return await probe(target, spec, timeout, prober=temporary)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = {
        vdir: asyncio.ensure_future(prober.probe(target, spec.http_spec(vdir), timeout))
        for vdir in spec.vdirs
    }
    try:
        if spec.mode == "any":
            for next_done in asyncio.as_completed(tasks.values()):
                if (await next_done).ok:
                    return ProbeResult(ok=True, latency=loop.time() - start, error=None)
        results = {vdir: await task for vdir, task in tasks.items()}
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    latency = loop.time() - start
    local = local_verdict(spec.mode, results)
    if local is not None:
        return local
    error = verdict(spec.mode, results)
    return ProbeResult(ok=error is None, latency=latency, error=error)


def local_verdict(
    mode: Literal["all", "any"], results: dict[str, ProbeResult]
) -> ProbeResult | None:
    """A local failure of a vdir's probe (checks.local), when the others cannot decide without
    it: "all" with no vdir really down, "any" with none up."""
    local = [r for r in results.values() if r.local is not None]
    if not local:
        return None
    if mode == "all" and any(not r.ok and r.local is None for r in results.values()):
        return None  # a vdir really down decides
    if mode == "any" and any(r.ok for r in results.values()):
        return None
    return local[0]
