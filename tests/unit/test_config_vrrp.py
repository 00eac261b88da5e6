"""``[[vrrp_instance]]``, ``[[vrrp_sync_group]]``, ``[sync_daemon]``: values, rules, conversion."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from director.config import ConfigError, Problem, parse_config
from director.config.vrrp import (
    SyncDaemon,
    TrackCheck,
    TrackInterface,
    VirtualAddress,
    VrrpInstance,
    VrrpSyncGroup,
)
from tests.unit.test_config import with_peer_key
from vrrp import Config as CoreConfig
from vrrp import Gratuitous

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

SERVICE = """
[[virtual_server]]
name = "exchange"
fwmark = 80
  [[virtual_server.real_server]]
  address = "198.18.1.11"
"""


def instance(*lines: str, name: str = "VI_1", vrid: int = 51, interface: str = "eth0") -> str:
    body = "".join(line + "\n" for line in lines)
    return f'\n[[vrrp_instance]]\nname = "{name}"\ninterface = "{interface}"\nvrid = {vrid}\n{body}'


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    return info.value.problems


def test_full_example_and_defaults() -> None:
    config = parse_config(
        SERVICE
        + instance(
            "priority = 150",
            "version = 3",
            "advert_interval = 0.1",
            'primary_address = "198.18.0.1"',
            'unicast_peers = ["198.18.0.2"]',
            'virtual_addresses = ["198.18.0.10/24", '
            '{ address = "198.18.0.11", device = "eth1", label = "eth1:1" }]',
            "garp_count = 3",
            "garp_interval = 0.01",
            "garp_repeat_after = 0",
            "garp_refresh = 60",
            'track_interfaces = [{ interface = "eth1", weight = 0 }]',
            'track_checks = [{ virtual_server = "exchange", quorum = 2, weight = 20 }]',
            'notify_master = ["/usr/local/bin/notify", "master"]',
            'notify = ["/usr/local/bin/notify"]',
        )
        + instance(name="VI_2", vrid=52)
        + '\n[[vrrp_sync_group]]\nname = "G1"\ninstances = ["VI_1", "VI_2"]\n'
        + '\n[sync_daemon]\ninterface = "eth1"\nsync_id = 7\ninstance = "G1"\n'
    )
    vi, vi2 = config.vrrp_instances
    assert vi.virtual_addresses == (
        VirtualAddress(address=ipaddress.ip_interface("198.18.0.10/24")),
        VirtualAddress(
            address=ipaddress.ip_interface("198.18.0.11/32"), device="eth1", label="eth1:1"
        ),
    )
    assert vi.virtual_addresses[0].prefixlen == 24
    assert vi.track_interfaces == (TrackInterface(interface="eth1", weight=0),)
    assert vi.track_checks == (TrackCheck(virtual_server="exchange", quorum=2, weight=20),)
    assert vi.notify_master == ("/usr/local/bin/notify", "master")
    assert config.vrrp_sync_groups == (VrrpSyncGroup(name="G1", instances=("VI_1", "VI_2")),)
    assert config.sync_daemon == SyncDaemon(interface="eth1", sync_id=7, instance="G1")
    # defaults
    assert (vi2.priority, vi2.version, vi2.advert_interval, vi2.preempt) == (100, 2, 1.0, True)
    assert (vi2.garp_count, vi2.garp_repeat_after, vi2.garp_refresh) == (5, 5.0, 0.0)
    assert vi2.primary_address is None and vi2.virtual_addresses == ()
    assert parse_config("").sync_daemon is None


def test_conversion_to_the_core_config() -> None:
    config = parse_config(
        instance(
            "priority = 200",
            "preempt = false",
            "preempt_delay = 2.5",
            'password = "secret"',
            'virtual_addresses = ["198.18.0.10/24", "198.18.0.11"]',
            "garp_count = 2",
            "garp_interval = 0.5",
            "garp_repeat_after = 0",
            "garp_refresh = 30",
        )
    )
    vi = config.vrrp_instances[0]
    core = vi.vrrp_config(ipaddress.IPv4Address("198.18.0.1"))
    assert core == CoreConfig(
        vrid=51,
        priority=200,
        primary_address=ipaddress.IPv4Address("198.18.0.1"),
        virtual_addresses=(
            ipaddress.IPv4Address("198.18.0.10"),
            ipaddress.IPv4Address("198.18.0.11"),
        ),
        version=2,
        advert_interval=1.0,
        preempt=False,
        preempt_delay=2.5,
        password=b"secret",
        gratuitous=Gratuitous(count=2, spacing=0.5, repeat_after=None, refresh=30.0),
    )
    with pytest.raises(ValueError, match="no primary address"):
        vi.vrrp_config()
    # the file's primary_address wins over the interface's
    given = parse_config(instance('primary_address = "198.18.0.5"')).vrrp_instances[0]
    assert given.vrrp_config(ipaddress.IPv4Address("198.18.0.1")).primary_address == (
        ipaddress.IPv4Address("198.18.0.5")
    )


def test_ipv6_instance_converts() -> None:
    vi = parse_config(
        instance("version = 3", "advert_interval = 0.05", 'virtual_addresses = ["2001:db8::10"]')
    ).vrrp_instances[0]
    assert vi.family == 6
    core = vi.vrrp_config(ipaddress.IPv6Address("fe80::1"))
    assert core.virtual_addresses == (ipaddress.IPv6Address("2001:db8::10"),)
    assert core.interval_cs == 5


# Each case: the instance lines, the location of the one problem, words its message has.
CASES = [
    ("priority = 0", "vrrp_instance[0].priority", "expected an integer from 1 to 255, found 0"),
    ("version = 4", "vrrp_instance[0].version", "expected one of 2 or 3"),
    ('version = "3"', "vrrp_instance[0].version", 'found "3"'),
    ("advert_interval = 0.5", "vrrp_instance[0].advert_interval", "whole seconds"),
    ("advert_interval = 300", "vrrp_instance[0].advert_interval", "found 300"),
    (
        "version = 3\nadvert_interval = 0.005",
        "vrrp_instance[0].advert_interval",
        "whole centiseconds",
    ),
    ("version = 3\nadvert_interval = 41", "vrrp_instance[0].advert_interval", "0.01 to 40.95"),
    ("advert_interval = -1", "vrrp_instance[0].advert_interval", "greater than 0"),
    ("preempt = 1", "vrrp_instance[0].preempt", "expected true or false"),
    ("preempt_delay = -1", "vrrp_instance[0].preempt_delay", "0 or more"),
    ('password = "123456789"', "vrrp_instance[0].password", "1 to 8 bytes"),
    ('version = 3\npassword = "x"', "vrrp_instance[0].password", "only in VRRP version 2"),
    ('primary_address = "nope"', "vrrp_instance[0].primary_address", "IPv4 or IPv6 address"),
    (
        'virtual_addresses = ["198.18.0.300/24"]',
        "vrrp_instance[0].virtual_addresses[0].address",
        "optional prefix",
    ),
    (
        'virtual_addresses = ["198.18.0.10/0"]',
        "vrrp_instance[0].virtual_addresses[0].address",
        "expected a prefix length from 1 to 32 (a /0 address claims every address as on-link), "
        'found "198.18.0.10/0"',
    ),
    (
        'version = 3\nvirtual_addresses = ["2001:db8::10/0"]',
        "vrrp_instance[0].virtual_addresses[0].address",
        "prefix length from 1 to 128",
    ),
    (
        'virtual_addresses = ["198.18.0.10", "2001:db8::1"]',
        "vrrp_instance[0].virtual_addresses[1]",
        "expected an IPv4 address",
    ),
    ('virtual_addresses = ["2001:db8::1"]', "vrrp_instance[0].version", "IPv4 only"),
    (
        'virtual_addresses = ["198.18.0.10", "198.18.0.10/24"]',
        "vrrp_instance[0].virtual_addresses[1]",
        "found 198.18.0.10 again",
    ),
    (
        'virtual_addresses = [{ address = "198.18.0.10", label = "eth1:1" }]',
        "vrrp_instance[0].virtual_addresses[0].label",
        'starting with the device name "eth0"',
    ),
    (
        'virtual_addresses = [{ address = "198.18.0.10", colour = "red" }]',
        "vrrp_instance[0].virtual_addresses[0].colour",
        "unknown key",
    ),
    (
        'primary_address = "198.18.0.10"\nvirtual_addresses = ["198.18.0.10"]',
        "vrrp_instance[0].primary_address",
        "not a virtual one",
    ),
    (
        'version = 3\nprimary_address = "2001:db8::1"\nvirtual_addresses = ["2001:db8::10"]',
        "vrrp_instance[0].primary_address",
        "link-local",
    ),
    ('unicast_peers = ["2001:db8::2"]', "vrrp_instance[0].unicast_peers[0]", "IPv4 address"),
    ("garp_count = 101", "vrrp_instance[0].garp_count", "0 to 100"),
    ("garp_refresh = -5", "vrrp_instance[0].garp_refresh", "0 or more"),
    (
        'track_interfaces = [{ interface = "eth/1" }]',
        "vrrp_instance[0].track_interfaces[0].interface",
        "interface name",
    ),
    (
        'track_interfaces = [{ interface = "eth1", weight = 255 }]',
        "vrrp_instance[0].track_interfaces[0].weight",
        "0 to 254",
    ),
    (
        'track_interfaces = [{ interface = "eth1" }, { interface = "eth1" }]',
        "vrrp_instance[0].track_interfaces[1].interface",
        'found "eth1" again',
    ),
    (
        'track_checks = [{ virtual_server = "exchange", quorum = 0 }]',
        "vrrp_instance[0].track_checks[0].quorum",
        "1 to 65535",
    ),
    (
        'track_checks = [{ virtual_server = "web" }]',
        "vrrp_instance[0].track_checks[0].virtual_server",
        'expected the name of a virtual server ("exchange"), found "web"',
    ),
    (
        'priority = 255\ntrack_interfaces = [{ interface = "eth1", weight = 10 }]',
        "vrrp_instance[0].track_interfaces[0].weight",
        "address owner",
    ),
    ('notify = "/bin/notify master"', "vrrp_instance[0].notify", "array of strings"),
    ('notify_master = ["notify"]', "vrrp_instance[0].notify_master", "absolute path"),
    ("notify_fault = []", "vrrp_instance[0].notify_fault", "array of strings"),
    ('interface = "a-very-long-interface-name"', "vrrp_instance[0].interface", "1 to 15"),
    ("vrids = 3", "vrrp_instance[0].vrids", 'did you mean "vrid"?'),
]


@pytest.mark.parametrize(("lines", "where", "words"), CASES)
def test_instance_problem(lines: str, where: str, words: str) -> None:
    text = SERVICE + instance(*lines.split("\n"))
    if lines.startswith("interface ="):
        text = SERVICE + f'\n[[vrrp_instance]]\nname = "VI_1"\nvrid = 1\n{lines}\n'
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].location == where
    assert words in found[0].message
    assert found[0].line is not None


def test_missing_keys_all_reported() -> None:
    found = problems('[[vrrp_instance]]\nname = "x"\n')
    assert {(p.location, p.message) for p in found} == {
        ("vrrp_instance[0].interface", "required key is missing"),
        ("vrrp_instance[0].vrid", "required key is missing"),
    }


def test_rules_across_tables_all_at_once() -> None:
    text = (
        instance()
        + instance(vrid=51)  # same name, same vrid on eth0
        + instance(name="VI_3", vrid=51, interface="eth1")  # same vrid elsewhere: fine
        + instance('virtual_addresses = ["2001:db8::1"]', "version = 3", name="VI_6", vrid=51)
        + '\n[[vrrp_sync_group]]\nname = "G1"\ninstances = ["VI_1", "VI_9"]\n'
        + '\n[[vrrp_sync_group]]\nname = "VI_3"\ninstances = ["VI_1"]\n'
        + '\n[sync_daemon]\ninterface = "eth1"\ninstance = "G2"\n'
    )
    found = [(p.location, p.message) for p in problems(text)]
    assert found == [
        (
            "vrrp_instance[1].name",
            'expected a unique name, found "VI_1" again (also vrrp_instance[0])',
        ),
        (
            "vrrp_instance[1].vrid",
            "expected one instance per VRID and family on an interface, found vrid 51 on eth0 "
            "again (also vrrp_instance[0])",
        ),
        ("vrrp_sync_group[0].instances[1]", 'expected the name of a vrrp_instance, found "VI_9"'),
        ("vrrp_sync_group[1].name", 'expected a name that no instance has, found "VI_3"'),
        (
            "vrrp_sync_group[1].instances[0]",
            'expected an instance in one sync group only, found "VI_1" (also in "G1")',
        ),
        (
            "sync_daemon.instance",
            'expected the name of a vrrp_instance or vrrp_sync_group, found "G2"',
        ),
    ]


def test_sync_daemon_values() -> None:
    found = problems('[sync_daemon]\ninterface = "eth1"\nsync_id = 256\n')
    assert [(p.location, p.line) for p in found] == [("sync_daemon.sync_id", 3)]
    assert "0 to 255" in found[0].message
    found = problems("[[sync_daemon]]\ninterface = 'eth1'\n")
    assert [p.location for p in found] == ["sync_daemon"]


def test_reference_documents_every_key() -> None:
    text = REFERENCE.read_text()
    models: tuple[type[BaseModel], ...] = (VrrpInstance, SyncDaemon)
    for model in models:
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert f"| `{key}` |" in text, key
    models = (VrrpSyncGroup, TrackInterface, TrackCheck, VirtualAddress)
    for model in models:
        for name, field in model.model_fields.items():
            assert f"`{field.alias or name}`" in text or name in text, name
    for table in ("[[vrrp_instance]]", "[[vrrp_sync_group]]", "[sync_daemon]"):
        assert f"## `{table}`" in text


def test_reference_vrrp_snippets_are_valid(tmp_path: Path) -> None:
    text = with_peer_key(REFERENCE.read_text(), tmp_path)
    snippets = re.findall(r"```toml\n(.*?)```", text, re.S)
    config = parse_config("\n".join(snippets), str(REFERENCE))
    assert [vi.name for vi in config.vrrp_instances] == ["VI_1", "VI_2"]
    assert config.sync_daemon is not None and config.sync_daemon.instance == "G1"


def test_models_are_exported_for_python_use() -> None:
    # Python code may build the models by field name, as the service does in tests.
    vi = VrrpInstance(name="x", interface="eth0", vrid=1, virtual_addresses=["198.18.0.10/24"])
    assert isinstance(vi, BaseModel)
    assert vi.virtual_addresses[0].prefixlen == 24


def test_excluded_addresses_may_be_of_the_other_family_and_are_not_advertised() -> None:
    config = parse_config(
        instance(
            'virtual_addresses = ["198.18.0.10/24"]',
            'excluded_addresses = ["198.18.0.11/32", { address = "2001:db8::11/64", '
            'device = "eth1" }]',
            'primary_address = "198.18.0.1"',
        ),
        "t.toml",
    )
    vi = config.vrrp_instances[0]
    assert vi.family == 4 and vi.version == 2  # the IPv6 excluded address changes neither
    core = vi.vrrp_config()
    assert core.virtual_addresses == (ipaddress.ip_address("198.18.0.10"),)
    assert [str(a) for a in core.held_addresses] == ["198.18.0.10", "198.18.0.11", "2001:db8::11"]


@pytest.mark.parametrize(
    ("lines", "where", "words"),
    [
        (
            ['virtual_addresses = ["198.18.0.10"]', 'excluded_addresses = ["198.18.0.10"]'],
            "excluded_addresses[0]",
            "again (also virtual_addresses[0])",
        ),
        (
            ['excluded_addresses = [{ address = "2001:db8::1", label = "eth0:1" }]'],
            "excluded_addresses[0].label",
            "IPv4 addresses only",
        ),
    ],
)
def test_excluded_address_problems(lines: list[str], where: str, words: str) -> None:
    found = problems(instance(*lines))
    assert any(where in p.location and words in p.message for p in found), found
