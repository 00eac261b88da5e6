"""Reading our policy rules on a plain rtnetlink socket (director.network.routes.dump_rules):
the same rules pyroute2 reads, on this machine's kernel in a network namespace; and the pure
parser on made-up messages."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest
from pyroute2.iproute.linux import AsyncIPRoute

from director.network.routes import (
    FAMILIES,
    FRA_FWMARK,
    FRA_PRIORITY,
    FRA_PROTOCOL,
    FRA_TABLE,
    RTM_NEWRULE,
    RTPROT_DIRECTOR,
    FwmarkRule,
    dump_rules,
    parse_rules,
    rtnetlink_socket,
    rule_dump_request,
)
from tests.helpers.netns import Topology

RULES = [  # ip rule arguments: ours (proto 209 with a mark) and others that are not
    ("-4", "fwmark", "80", "table", "100", "pref", "100", "proto", "209"),
    ("-4", "fwmark", "0x7", "table", "70000", "pref", "5", "proto", "209"),  # table > 255
    ("-4", "fwmark", "9", "table", "9", "pref", "9"),  # an operator's: proto boot
    ("-4", "from", "198.18.0.0/24", "table", "50", "pref", "50", "proto", "209"),  # no mark
    ("-6", "fwmark", "80", "table", "100", "pref", "100", "proto", "209"),
]
OURS = {
    4: [FwmarkRule(4, 5, 7, 70000), FwmarkRule(4, 100, 80, 100)],
    6: [FwmarkRule(6, 100, 80, 100)],
}


async def pyroute2_reading(netns: str, family: int) -> list[FwmarkRule]:
    """Our rules as pyroute2 reads them (what PolicyRoutes did before the plain socket)."""
    ipr = AsyncIPRoute(netns=netns)
    try:
        await ipr.setup_endpoint()
        found = []
        async for msg in await ipr.rule("dump", family=FAMILIES[family]):
            if msg.get("protocol") != RTPROT_DIRECTOR or msg.get("fwmark") is None:
                continue
            table = msg.get("table") or msg["table"]
            found.append(FwmarkRule(family, msg.get("priority") or 0, msg.get("fwmark"), table))
        return sorted(found)
    finally:
        ipr.close()


@pytest.mark.netns
def test_the_rules_read_are_ours_and_those_pyroute2_reads() -> None:
    before = os.readlink("/proc/self/ns/net")
    with Topology() as topo:
        ns = topo.namespace("rules")
        for rule in RULES:
            ns.run("ip", rule[0], "rule", "add", *rule[1:])
        sock = rtnetlink_socket(ns.name)
        try:
            for family in (4, 6):
                assert sorted(dump_rules(sock, family, seq=family)) == OURS[family]
                assert asyncio.run(pyroute2_reading(ns.name, family)) == OURS[family]
        finally:
            sock.close()
        assert os.readlink("/proc/self/ns/net") == before  # only the helper thread moved
        # this process's own namespace has none of them
        own = rtnetlink_socket()
        try:
            assert FwmarkRule(4, 100, 80, 100) not in dump_rules(own, 4)
        finally:
            own.close()


@pytest.mark.netns
def test_no_such_namespace_is_an_error_that_names_it() -> None:
    with pytest.raises(FileNotFoundError, match="dt-no-such-namespace"):
        rtnetlink_socket("dt-no-such-namespace")


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _rule(seq: int, table: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, table, 0, 0, 1, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWRULE, 2, seq, 0) + body


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def test_parse_rules_keeps_ours_with_their_table_priority_and_mark() -> None:
    ours = _attr(FRA_PROTOCOL, bytes([RTPROT_DIRECTOR])) + _attr(FRA_FWMARK, u32(80))
    data = (
        _rule(3, 100, ours + _attr(FRA_PRIORITY, u32(100)) + _attr(FRA_TABLE, u32(100)))
        + _rule(3, 252, ours + _attr(FRA_TABLE, u32(70000)))  # no priority: 0; table > 255
        + _rule(3, 9, _attr(FRA_PROTOCOL, b"\x03") + _attr(FRA_FWMARK, u32(9)))  # not ours
        + _rule(3, 50, _attr(FRA_PROTOCOL, bytes([RTPROT_DIRECTOR])))  # no mark
        + _rule(4, 100, ours)  # another dump's
    )
    assert parse_rules(data, 4, 3) == [FwmarkRule(4, 100, 80, 100), FwmarkRule(4, 0, 80, 70000)]
    assert parse_rules(data[:-3], 4, 4) == []  # a message cut short is not read
    assert parse_rules(b"\xff" * 7, 4, 3) == []


def test_the_dump_request_asks_for_every_rule_of_the_family() -> None:
    data = rule_dump_request(6, 9)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data)
    assert (length, kind, flags, seq) == (len(data), 34, 0x301, 9)
    assert data[16] == socket.AF_INET6
