"""The ``kernel`` backend on this machine's kernel, in a network namespace: the announced VIPs
are host routes in the configured table with directord's protocol id, withdrawn ones and a
crash's leftovers are deleted, other routes are left alone, a stop removes them all."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from director.bgp.exabgp_api import Route
from director.bgp.kernel_routes import KernelRoutes, remove_all
from director.config import parse_config
from tests.helpers.netns import Topology

pytestmark = pytest.mark.netns

CONFIG = """
[bgp]
backend = "kernel"
route_table = 100
route_protocol = 201
"""


def test_kernel_routes_in_a_table_with_our_protocol(topology: Topology) -> None:
    ns = topology.namespace("k")
    bgp = parse_config(CONFIG).bgp
    assert bgp is not None

    def table(*extra: str) -> str:
        # (a family with no route in the table yet has no such table: empty, not an error)
        return "".join(
            ns.run("ip", family, "route", "show", "table", "100", *extra, check=False).stdout
            for family in ("-4", "-6")
        )

    # a crash left one of ours; someone else's route shares the table
    ns.ip("route", "add", "198.18.0.99/32", "dev", "lo", "table", "100", "proto", "201")
    ns.ip("route", "add", "198.18.0.98/32", "dev", "lo", "table", "100", "proto", "static")
    routes = KernelRoutes(bgp, netns=ns.name)
    v4 = Route(ipaddress.ip_network("198.18.0.10/32"))
    v6 = Route(ipaddress.ip_network("2001:db8::10/128"))

    async def scenario() -> None:
        await routes.start()
        assert routes.installed == set()
        assert "198.18.0.99" not in table()  # the leftover went at start
        routes.announce([v4, v6])
        await routes.apply()
        mine = table("proto", "201")
        assert "198.18.0.10 dev lo" in mine and "2001:db8::10 dev lo" in mine
        routes.announce([v6])
        await routes.apply()
        assert "198.18.0.10" not in table()
        assert routes.summary()["installed"] == ["2001:db8::10/128"]
        await routes.stop()

    asyncio.run(scenario())
    assert table("proto", "201") == ""
    assert "198.18.0.98 dev lo proto static" in table()  # not ours: untouched


def test_cleanup_removes_what_a_crash_left(topology: Topology) -> None:
    ns = topology.namespace("c")
    bgp = parse_config(CONFIG).bgp
    assert bgp is not None
    ns.ip("route", "add", "198.18.0.10/32", "dev", "lo", "table", "100", "proto", "201")
    ns.ip("route", "add", "198.18.0.98/32", "dev", "lo", "table", "100", "proto", "static")
    assert asyncio.run(remove_all(bgp, ns.name)) == ["198.18.0.10/32"]
    left = ns.ip("route", "show", "table", "100")
    assert "198.18.0.10" not in left and "198.18.0.98" in left


def test_vips_go_on_the_device_and_only_ours_leave(topology: Topology) -> None:
    from director.bgp.vips import VipDevice

    ns = topology.namespace("v")
    ns.ip("address", "add", "198.18.0.12/32", "dev", "lo")  # someone else's
    vips = VipDevice("lo", ns.name)
    a, b, c = (ipaddress.ip_address(x) for x in ("198.18.0.10", "2001:db8::10", "198.18.0.12"))

    def on_lo() -> str:
        return ns.ip("address", "show", "dev", "lo")

    asyncio.run(vips.place([a, b, c]))
    assert "198.18.0.10/32" in on_lo() and "2001:db8::10/128" in on_lo()
    assert vips.added == {a, b}  # c was there already: not ours
    asyncio.run(vips.place([b, c]))
    assert "198.18.0.10/32" not in on_lo()
    asyncio.run(vips.place([]))
    assert "2001:db8::10" not in on_lo() and "198.18.0.12/32" in on_lo()
    missing = VipDevice("nope0", ns.name)
    asyncio.run(missing.place([a]))
    assert missing.errors == ["placing BGP VIPs: no device nope0"]
