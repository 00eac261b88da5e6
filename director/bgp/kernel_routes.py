"""The ``kernel`` BGP backend: announced VIPs as host routes for the site's BIRD or FRR.

Each announced prefix is a route ``PREFIX dev lo table T proto P`` (``[bgp] route_table``,
``route_protocol``); the routing daemon imports routes of that protocol from that table (BIRD:
a ``kernel`` protocol with ``learn`` on the table, filtered on ``krt_source = P``) and exports
them over BGP. Withdrawn prefixes, and at stop every route, are deleted. At start the routes of
protocol ``P`` in table ``T`` that are not wanted (a crash left them) are deleted too.

Unlike ExaBGP, a route outlives a crashed ``directord`` until the next start or the unit's
``directord --cleanup``; see docs/active-active.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Sequence

import structlog
from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from director.bgp.exabgp_api import Route
from director.config.bgp import BgpSettings, HostPrefix

log = structlog.get_logger("director.bgp")

FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
RT_SCOPE_LINK = 253  # a route through a device, no gateway (what ``ip route add ... dev lo`` makes)
RT_SCOPE_NOWHERE = 255  # on delete: match any scope (as iproute2 does)


class KernelRoutes:
    def __init__(self, bgp: BgpSettings, netns: str | None = None) -> None:
        self.table = bgp.route_table
        self.proto = bgp.route_protocol
        self.netns = netns
        self.wanted: set[HostPrefix] = set()
        self.installed: set[HostPrefix] = set()
        self.errors = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _open(self) -> AsyncIPRoute:
        return AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()

    async def start(self) -> None:
        self.installed = await self.observe()
        await self.apply()  # what a crash left goes, unless it is wanted
        self._task = asyncio.create_task(self._run(), name="bgp-kernel-routes")

    async def observe(self) -> set[HostPrefix]:
        """Our routes in the table now."""
        found: set[HostPrefix] = set()
        ipr = self._open()
        try:
            await ipr.setup_endpoint()
            for version, family in FAMILIES.items():
                async for msg in await ipr.route("dump", family=family, table=self.table):
                    if msg["proto"] != self.proto or msg["dst_len"] != (
                        32 if version == 4 else 128
                    ):
                        continue
                    if (msg.get("table") or msg["table"]) != self.table:
                        continue
                    dst = msg.get("dst")
                    if dst:
                        found.add(_host(f"{dst}/{msg['dst_len']}"))
        finally:
            ipr.close()
        return found

    def announce(self, routes: Sequence[Route]) -> None:
        self.wanted = {r.prefix for r in routes}
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.apply()

    async def apply(self) -> None:
        async with self._lock:  # the background task and a caller never interleave
            await self._apply()

    async def _apply(self) -> None:
        add = self.wanted - self.installed
        remove = self.installed - self.wanted
        if not (add or remove):
            return
        ipr = self._open()
        try:
            await ipr.setup_endpoint()
            lo = (await ipr.link_lookup(ifname="lo"))[0]
            for prefix in sorted(remove, key=str):
                await self._one(ipr, "del", prefix, lo)
            for prefix in sorted(add, key=str):
                await self._one(ipr, "replace", prefix, lo)
        finally:
            ipr.close()

    async def _one(self, ipr: AsyncIPRoute, verb: str, prefix: HostPrefix, lo: int) -> None:
        try:
            await ipr.route(
                verb,
                family=FAMILIES[prefix.version],
                dst=str(prefix),
                oif=lo,
                table=self.table,
                proto=self.proto,
                scope=RT_SCOPE_NOWHERE if verb == "del" else RT_SCOPE_LINK,
            )
        except NetlinkError as exc:
            if verb == "del" and exc.code == 3:  # ESRCH: already gone
                self.installed.discard(prefix)
                return
            self.errors += 1
            log.error(
                "bgp_kernel_route_failed",
                action="adding" if verb != "del" else "removing",
                prefix=str(prefix),
                table=self.table,
                error=exc.args[1] if len(exc.args) > 1 else str(exc),
            )
            return
        if verb == "del":
            self.installed.discard(prefix)
        else:
            self.installed.add(prefix)
        log.info(
            "bgp_kernel_route",
            action="added" if verb != "del" else "removed",
            prefix=str(prefix),
            table=self.table,
            proto=self.proto,
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.wanted = set()
        await self.apply()

    def summary(self) -> dict[str, object]:
        return {
            "backend": "kernel",
            "table": self.table,
            "protocol": self.proto,
            "installed": sorted(str(p) for p in self.installed),
            "errors": self.errors,
        }


def _host(text: str) -> HostPrefix:
    return ipaddress.ip_network(text)


async def remove_all(bgp: BgpSettings, netns: str | None = None) -> list[str]:
    """Delete every route of ours (``directord --cleanup`` after a crash); what was removed."""
    routes = KernelRoutes(bgp, netns)
    routes.installed = await routes.observe()
    found = sorted(str(p) for p in routes.installed)
    await routes.apply()  # nothing wanted: all of ours go
    return [p for p in found if p not in {str(x) for x in routes.installed}]
