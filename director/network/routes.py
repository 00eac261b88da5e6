"""Policy routes for direct routing / transparent setups, through pyroute2.

Each ``[[policy_route]]`` is the pair keepalived and Piranha users write by hand::

    ip rule add fwmark N table T pref P
    ip route add local 0.0.0.0/0 dev lo table T      (and ::/0 for IPv6)

so packets carrying mark N are delivered to this host whatever their destination address.
Policy routes do not follow the role: they are in place on master and backup alike.

Ownership without a state file: every rule and route the daemon makes carries the routing
protocol number :data:`RTPROT_DIRECTOR` (``ip rule`` shows ``proto 209``). Only those are
ever changed or removed, so a table or rule an operator made by hand is never touched.
:func:`plan_routes` is pure; :class:`PolicyRoutes` is the netlink adapter.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from director.config.model import Config

RTPROT_DIRECTOR = 209  # not in iproute2's rt_protos list; keepalived uses 18
RTN_LOCAL = 2
RT_SCOPE_HOST = 254
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass(frozen=True, order=True)
class FwmarkRule:
    """``ip rule fwmark MARK table TABLE pref PRIORITY`` in one family (4 or 6)."""

    family: int
    priority: int
    fwmark: int
    table: int

    def __str__(self) -> str:
        return f"ipv{self.family} rule pref {self.priority} fwmark {self.fwmark} table {self.table}"


@dataclass(frozen=True, order=True)
class LocalRoute:
    """``local 0.0.0.0/0 dev lo table TABLE`` (or ``::/0``)."""

    family: int
    table: int

    def __str__(self) -> str:
        dst = "0.0.0.0/0" if self.family == 4 else "::/0"
        return f"local {dst} dev lo table {self.table}"


@dataclass(frozen=True)
class Routes:
    rules: frozenset[FwmarkRule] = frozenset()
    routes: frozenset[LocalRoute] = frozenset()


@dataclass(frozen=True)
class RouteOp:
    add: bool
    item: FwmarkRule | LocalRoute

    def __str__(self) -> str:
        return f"{'add' if self.add else 'delete'} {self.item}"


def desired_routes(config: Config) -> Routes:
    rules = {
        FwmarkRule(family, route.priority, route.fwmark, route.table)
        for route in config.policy_routes
        for family in route.families()
    }
    return Routes(frozenset(rules), frozenset(LocalRoute(r.family, r.table) for r in rules))


def plan_routes(desired: Routes, observed: Routes) -> list[RouteOp]:
    """Routes before the rules that use them; rules removed before their routes."""
    ops = [RouteOp(True, r) for r in sorted(desired.routes - observed.routes)]
    ops += [RouteOp(True, r) for r in sorted(desired.rules - observed.rules)]
    ops += [RouteOp(False, r) for r in sorted(observed.rules - desired.rules)]
    ops += [RouteOp(False, r) for r in sorted(observed.routes - desired.routes)]
    return ops


class RouteError(Exception):
    """A policy rule or route could not be changed; says which and why."""


class PolicyRoutes:
    """Reads and changes the director's own policy rules and local routes over netlink."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns  # tests: a named namespace; the daemon: its own namespace

    def _open(self) -> AsyncIPRoute:
        return AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()

    async def observe(self, routes_wanted: bool = True) -> Routes:
        """Our rules, and our local routes when ``routes_wanted`` or any rule of ours exists.

        Without either the route dump is skipped (a router's table can be large); the only
        thing that can miss is a route left by a crash between its rule's removal and its own.
        """
        ipr = self._open()
        try:
            await ipr.setup_endpoint()
            return await self._observe(ipr, routes_wanted)
        finally:
            ipr.close()

    async def _observe(self, ipr: AsyncIPRoute, routes_wanted: bool) -> Routes:
        rules: set[FwmarkRule] = set()
        routes: set[LocalRoute] = set()
        for version, family in FAMILIES.items():
            async for msg in await ipr.rule("dump", family=family):
                if msg.get("protocol") != RTPROT_DIRECTOR or msg.get("fwmark") is None:
                    continue
                table = msg.get("table") or msg["table"]
                rules.add(FwmarkRule(version, msg.get("priority") or 0, msg.get("fwmark"), table))
        if not (routes_wanted or rules):
            return Routes(frozenset(rules), frozenset())
        for version, family in FAMILIES.items():
            async for msg in await ipr.route("dump", family=family):
                if msg["proto"] != RTPROT_DIRECTOR or msg["type"] != RTN_LOCAL:
                    continue
                if msg["dst_len"] == 0:
                    routes.add(LocalRoute(version, msg.get("table") or msg["table"]))
        return Routes(frozenset(rules), frozenset(routes))

    async def apply(self, ops: Iterable[RouteOp]) -> list[str]:
        """Perform ``ops`` in order; returns the errors (each op is tried even if one fails)."""
        errors: list[str] = []
        ops = list(ops)
        if not ops:
            return errors
        ipr = self._open()
        try:
            await ipr.setup_endpoint()
            lo = (await ipr.link_lookup(ifname="lo"))[0]
            for op in ops:
                try:
                    await self._one(ipr, op, lo)
                except NetlinkError as exc:
                    errors.append(_explain(op, exc))
        finally:
            ipr.close()
        return errors

    async def _one(self, ipr: AsyncIPRoute, op: RouteOp, lo: int) -> None:
        item = op.item
        family = FAMILIES[item.family]
        if isinstance(item, FwmarkRule):
            await ipr.rule(
                "add" if op.add else "del",
                family=family,
                fwmark=item.fwmark,
                table=item.table,
                priority=item.priority,
                protocol=RTPROT_DIRECTOR,
            )
            return
        dst = "0.0.0.0/0" if item.family == 4 else "::/0"
        await ipr.route(
            "add" if op.add else "del",
            family=family,
            dst=dst,
            type=RTN_LOCAL,
            oif=lo,
            table=item.table,
            scope=RT_SCOPE_HOST,
            proto=RTPROT_DIRECTOR,
        )


def _explain(op: RouteOp, exc: NetlinkError) -> str:
    reason = exc.args[1] if len(exc.args) > 1 else str(exc)
    text = f"{'adding' if op.add else 'removing'} {op.item}: {reason}"
    if op.add and isinstance(op.item, LocalRoute) and exc.code == errno.EEXIST:
        text += " (the table has a default route directord did not make: choose another table)"
    if exc.code == errno.EAFNOSUPPORT:
        text += ' (is IPv6 disabled? set family = "ipv4")'
    return text
