"""``[bgp]``: route health injection settings, their defaults and their errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import BaseModel

from director.config import Config, ConfigError, Problem, parse_config
from director.config.bgp import Announce, BgpSettings, Neighbor

BASE = """
[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.10"
port = 80

[[virtual_server]]
name = "web6"
protocol = "tcp"
address = "2001:db8::10"
port = 80

[[virtual_server]]
name = "marked"
fwmark = 7
"""

GOOD = (
    BASE
    + """
[bgp]
local_as = 65001
router_id = "198.18.1.1"
next_hop = "198.18.1.1"
next_hop_ipv6 = "2001:db8:1::1"

[[bgp.neighbor]]
address = "198.18.1.254"
peer_as = 65000
hold_time = 3
password = "s3cret"
local_address = "198.18.1.1"

[[bgp.announce]]
prefix = "198.18.0.10"
virtual_servers = ["web", "marked"]
quorum = 2
quorum_up = 3
communities = ["65000:100", "65000:0200"]
med = 10

[[bgp.announce]]
prefix = "2001:db8::10/128"
virtual_servers = ["web6"]
"""
)


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    return info.value.problems


def messages(text: str) -> dict[str, str]:
    return {p.location: p.message for p in problems(text)}


def test_a_full_bgp_table() -> None:
    config = parse_config(GOOD)
    bgp = config.bgp
    assert bgp is not None
    assert (bgp.backend, bgp.local_as, str(bgp.router_id)) == ("exabgp", 65001, "198.18.1.1")
    (n,) = bgp.neighbors
    assert (str(n.address), n.peer_as, n.hold_time, n.password) == (
        "198.18.1.254",
        65000,
        3,
        "s3cret",
    )
    a4, a6 = bgp.announcements
    assert a4.prefix == ipaddress.ip_network("198.18.0.10/32")
    assert (a4.quorum, a4.up_quorum, a4.med) == (2, 3, 10)
    assert a4.communities == ("65000:100", "65000:200")  # normalised
    assert a6.prefix == ipaddress.ip_network("2001:db8::10/128")
    assert (a6.quorum, a6.up_quorum, a6.med, a6.communities) == (1, 1, None, ())
    assert bgp.next_hop_for(a6.prefix) == ipaddress.ip_address("2001:db8:1::1")
    assert bgp.drain_timeout == 300.0


def test_no_bgp_table_means_no_bgp() -> None:
    assert Config().bgp is None
    assert parse_config(BASE).bgp is None


def test_kernel_backend_needs_no_neighbours_and_refuses_them() -> None:
    config = parse_config(
        BASE
        + """
[bgp]
backend = "kernel"
route_table = 100
route_protocol = 201
[[bgp.announce]]
prefix = "198.18.0.10/32"
virtual_servers = ["web"]
"""
    )
    assert config.bgp is not None
    assert (config.bgp.route_table, config.bgp.route_protocol) == (100, 201)
    found = messages(
        BASE
        + """
[bgp]
backend = "kernel"
[[bgp.neighbor]]
address = "198.18.1.254"
peer_as = 65000
"""
    )
    assert "configured in BIRD or FRR" in found["bgp.neighbor"]


def test_exabgp_backend_needs_as_router_id_and_a_neighbour() -> None:
    found = messages(BASE + "[bgp]\n")
    assert found == {
        "bgp.local_as": 'required with backend = "exabgp"',
        "bgp.router_id": 'required with backend = "exabgp"',
        "bgp.neighbor": 'expected at least one [[bgp.neighbor]] with backend = "exabgp"',
    }


@pytest.mark.parametrize(
    ("snippet", "where", "expected"),
    [
        ("local_as = 0", "bgp.local_as", "expected an AS number from 1 to 4294967295, found 0"),
        ('router_id = "2001:db8::1"', "bgp.router_id", "router id in IPv4 address form"),
        ('backend = "bird"', "bgp.backend", 'expected one of "exabgp" or "kernel"'),
        ("drain_timeout = 0", "bgp.drain_timeout", "greater than 0"),
        ("route_table = 255", "bgp.route_table", "kernel's local table"),
        ("route_protocol = 2", "bgp.route_protocol", "0 to 4 are the kernel's own"),
        ('next_hop_ipv6 = "router"', "bgp.next_hop_ipv6", 'or "self"'),
        ('exabgp = "exabgp"', "bgp.exabgp", "absolute path"),
    ],
)
def test_bgp_scalar_errors(snippet: str, where: str, expected: str) -> None:
    text = GOOD.replace("[bgp]\n", f"[bgp]\n{snippet}\n", 1)
    text = text.replace("local_as = 65001\n", "", 1) if snippet.startswith("local_as") else text
    text = text.replace('router_id = "198.18.1.1"\n', "", 1) if "router_id" in snippet else text
    if snippet.startswith("next_hop_ipv6"):
        text = text.replace('next_hop_ipv6 = "2001:db8:1::1"\n', "", 1)
    found = messages(text)
    assert expected in found[where], found


@pytest.mark.parametrize(
    ("old", "new", "where", "expected"),
    [
        ("hold_time = 3", "hold_time = 2", "bgp.neighbor[0].hold_time", "0 or a number"),
        ("hold_time = 3", "hold_time = 0", None, None),
        ('password = "s3cret"', f'password = "{"x" * 81}"', "bgp.neighbor[0].password", "80"),
        (
            'local_address = "198.18.1.1"',
            'local_address = "2001:db8::1"',
            "bgp.neighbor[0].local_address",
            "IPv4 address like the neighbour's",
        ),
        ('prefix = "198.18.0.10"', 'prefix = "198.18.0.0/24"', "bgp.announce[0].prefix", "/32"),
        ("quorum_up = 3", "quorum_up = 1", "bgp.announce[0].quorum_up", "at least quorum (2)"),
        ("med = 10", "med = -1", "bgp.announce[0].med", "a MED from 0"),
        (
            '"65000:100",',
            '"65000:70000",',
            "bgp.announce[0].communities[0]",
            'a community "ASN:VALUE"',
        ),
        (
            '["web", "marked"]',
            '["web", "nope"]',
            "bgp.announce[0].virtual_servers[1]",
            'expected the name of a virtual server ("marked", "web", "web6"), found "nope"',
        ),
        (
            '["web", "marked"]',
            '["web6"]',
            "bgp.announce[0].virtual_servers[0]",
            'expected a virtual server on 198.18.0.10, found "web6" on 2001:db8::10',
        ),
        ('["web", "marked"]', "[]", "bgp.announce[0].virtual_servers", "at least 1"),
        (
            '["web", "marked"]',
            '["web", "web"]',
            "bgp.announce[0].virtual_servers[1]",
            'found "web" twice',
        ),
        (
            'next_hop_ipv6 = "2001:db8:1::1"\n',
            "",
            "bgp.announce[1].prefix",
            "needs bgp.next_hop_ipv6",
        ),
    ],
)
def test_bgp_table_errors(old: str, new: str, where: str | None, expected: str | None) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    if where is None:
        parse_config(text)
        return
    found = messages(text)
    assert where in found, found
    assert expected is not None and expected in found[where], found


def test_duplicates_are_named_with_the_first_one() -> None:
    text = GOOD + (
        """
[[bgp.neighbor]]
address = "198.18.1.254"
peer_as = 65002

[[bgp.announce]]
prefix = "198.18.0.10/32"
virtual_servers = ["web"]
"""
    )
    found = messages(text)
    assert "also bgp.neighbor[0]" in found["bgp.neighbor[1].address"]
    assert "also bgp.announce[0]" in found["bgp.announce[2].prefix"]
    lines = {p.location: p.line for p in problems(text)}
    assert lines["bgp.announce[2].prefix"] is not None


REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.mark.parametrize("model", [BgpSettings, Neighbor, Announce])
def test_reference_documents_every_bgp_key(model: type[BaseModel]) -> None:
    text = REFERENCE.read_text()
    for name, field in model.model_fields.items():
        assert f"| `{field.alias or name}` |" in text, name


def test_active_active_example() -> None:
    from director.config import load_config

    config = load_config(REFERENCE.parent / "examples" / "active-active.toml")
    (web,) = config.virtual_servers
    assert (web.scheduler, web.scheduler_flags) == ("mh", ("mh-port", "mh-fallback"))
    assert dict(config.kernel.sysctls)["net.ipv4.vs.sloppy_tcp"] == 1
    assert config.bgp is not None
    (a,) = config.bgp.announcements
    assert (str(a.prefix), a.virtual_servers, a.quorum, a.up_quorum) == (
        "198.18.0.10/32",
        ("web",),
        1,
        2,
    )


def test_a_vip_is_vrrps_or_bgps_not_both() -> None:
    text = GOOD + (
        """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["198.18.0.10/24"]
"""
    )
    found = messages(text)
    assert found["bgp.announce[0].prefix"] == (
        "expected a VIP that VRRP does not hold, found 198.18.0.10, a virtual address of "
        'vrrp_instance "VI_1"'
    )
    parse_config(text.replace('"198.18.0.10/24"', '"198.18.0.99/24"'))  # other VIPs: fine
