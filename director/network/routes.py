"""Policy routes for direct routing / transparent setups, over rtnetlink.

Each ``[[policy_route]]`` is the pair keepalived and Piranha users write by hand::

    ip rule add fwmark N table T pref P
    ip route add local 0.0.0.0/0 dev lo table T      (and ::/0 for IPv6)

so packets carrying mark N are delivered to this host whatever their destination address.
Policy routes do not follow the role: they are in place on master and backup alike.

Ownership without a state file: every rule and route the daemon makes carries the routing
protocol number :data:`RTPROT_DIRECTOR` (``ip rule`` shows ``proto 209``). Only those are
ever changed or removed, so a table or rule an operator made by hand is never touched.
:func:`plan_routes` is pure; :class:`PolicyRoutes` is the netlink adapter.

Reading our rules (every start and resync, with or without policy routes) is one RTM_GETRULE
dump per family on a plain rtnetlink socket (:func:`rule_dump_request`, :func:`parse_rules`,
pure), as :mod:`vrrp.rtnl` does for addresses; pyroute2's ``AsyncIPRoute`` (a tenth of the
daemon's imports: every rtnetlink message class, its mock engine and ``unittest``) is imported
only to read our routes, when policy routes are configured or a rule of ours exists, and to
change them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyroute2.netlink.exceptions import NetlinkError

from director.config.model import Config
from vrrp.rtnl import (
    NETLINK_ROUTE,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attributes,
    messages,
)

if TYPE_CHECKING:
    from pyroute2.iproute.linux import AsyncIPRoute

RTPROT_DIRECTOR = 209  # not in iproute2's rt_protos list; keepalived uses 18
RTN_LOCAL = 2
RT_SCOPE_HOST = 254
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
RTM_NEWRULE, RTM_GETRULE = 32, 34
FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_PROTOCOL = 6, 10, 15, 21
NETNS_RUN_DIR = "/var/run/netns"  # where ``ip netns`` (and pyroute2) name namespaces
CLONE_NEWNET = 0x40000000
_NLMSGHDR = struct.Struct("=IHHII")
_FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, 2x res,
#                                               action, flags (struct fib_rule_hdr)


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
    """Policy routing rules and local routes."""

    rules: frozenset[FwmarkRule] = frozenset()
    routes: frozenset[LocalRoute] = frozenset()


@dataclass(frozen=True)
class RouteOp:
    """Add or delete one rule or route."""

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
        from pyroute2.iproute.linux import AsyncIPRoute  # only to read or change our routes

        return AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()

    async def observe(self, routes_wanted: bool = True) -> Routes:
        """Our rules, and our local routes when ``routes_wanted`` or any rule of ours exists.

        Without either the route dump is skipped (a router's table can be large); the only
        thing that can miss is a route left by a crash between its rule's removal and its own.
        The rules are read on a plain rtnetlink socket (a dump of a few rules: well under a
        millisecond); ``NetlinkError`` if the kernel refuses the dump, as pyroute2 raises.
        """
        sock = rtnetlink_socket(self.netns)
        try:
            rules = {rule for family in FAMILIES for rule in dump_rules(sock, family)}
        finally:
            sock.close()
        if not (routes_wanted or rules):
            return Routes(frozenset(rules), frozenset())
        ipr = self._open()
        try:
            await ipr.setup_endpoint()
            return Routes(frozenset(rules), await self._observe_routes(ipr))
        finally:
            ipr.close()

    async def _observe_routes(self, ipr: AsyncIPRoute) -> frozenset[LocalRoute]:
        routes: set[LocalRoute] = set()
        for version, family in FAMILIES.items():
            async for msg in await ipr.route("dump", family=family):
                if msg["proto"] != RTPROT_DIRECTOR or msg["type"] != RTN_LOCAL:
                    continue
                if msg["dst_len"] == 0:
                    routes.add(LocalRoute(version, msg.get("table") or msg["table"]))
        return frozenset(routes)

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


def rule_dump_request(family: int, seq: int) -> bytes:
    """RTM_GETRULE for every rule of ``family`` (4 or 6)."""
    body = _FIB_RULE_HDR.pack(FAMILIES[family], 0, 0, 0, 0, 0, 0, 0, 0)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETRULE, flags, seq, 0) + body


def parse_rules(data: bytes, family: int, seq: int) -> list[FwmarkRule]:
    """Our fwmark rules (protocol :data:`RTPROT_DIRECTOR`, a mark) among the rule messages of
    dump ``seq`` in one read; anything else is skipped. Never raises. The table is FRA_TABLE
    (tables above 255 are only there), else the header's."""
    found: list[FwmarkRule] = []
    for kind, got, payload in messages(data):
        if kind != RTM_NEWRULE or got != seq or len(payload) < _FIB_RULE_HDR.size:
            continue
        table = _FIB_RULE_HDR.unpack_from(payload)[4]
        attrs = attributes(payload[_FIB_RULE_HDR.size :])
        protocol = attrs.get(FRA_PROTOCOL, b"")[:1]
        mark = attrs.get(FRA_FWMARK, b"")
        if protocol != bytes([RTPROT_DIRECTOR]) or len(mark) != 4:
            continue
        table = _u32(attrs.get(FRA_TABLE)) or table
        found.append(FwmarkRule(family, _u32(attrs.get(FRA_PRIORITY)), _u32(mark), table))
    return found


def _u32(data: bytes | None) -> int:
    return struct.unpack("=I", data)[0] if data is not None and len(data) == 4 else 0


def dump_rules(sock: socket.socket, family: int, seq: int = 1) -> list[FwmarkRule]:
    """Our fwmark rules of ``family`` (4 or 6), read on rtnetlink socket ``sock``;
    ``NetlinkError`` (code, reason) if the kernel refuses the dump."""
    sock.send(rule_dump_request(family, seq))
    found: list[FwmarkRule] = []
    while True:
        data = sock.recv(1 << 16)
        found += parse_rules(data, family, seq)
        for kind, got, payload in messages(data):
            if got != seq or kind not in (NLMSG_DONE, NLMSG_ERROR):
                continue
            code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
            if code:
                raise NetlinkError(code, os.strerror(code))
            return found


def rtnetlink_socket(netns: str | None = None) -> socket.socket:
    """A bound rtnetlink socket (1 s timeout) in this process's network namespace, or in the
    named one (``ip netns``): made by a thread that enters it (a socket stays in the namespace
    it was made in), so the process and its other threads stay where they are."""
    if netns is None:
        return _new_socket()
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def enter_and_make() -> None:
        try:
            fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"entering network namespace {netns}: {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(_new_socket())
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=enter_and_make, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        sock.settimeout(1.0)
    except BaseException:
        sock.close()
        raise
    return sock


def _explain(op: RouteOp, exc: NetlinkError) -> str:
    reason = exc.args[1] if len(exc.args) > 1 else str(exc)
    text = f"{'adding' if op.add else 'removing'} {op.item}: {reason}"
    if op.add and isinstance(op.item, LocalRoute) and exc.code == errno.EEXIST:
        text += " (the table has a default route directord did not make: choose another table)"
    if exc.code == errno.EAFNOSUPPORT:
        text += ' (is IPv6 disabled? set family = "ipv4")'
    return text
