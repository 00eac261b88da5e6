"""The canonical form of the shared config (director.peer.canonical) and its diff
(director.peer.diff): pure, on configs built in memory.

Every key of the file is classified shared or host-local; an edit of each shared key changes the
digest, an edit of each host-local key never does; the file's order, formatting, comments and
defaults spelled out make no difference (hypothesis); secrets never appear in clear."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from director.config import Config, parse_config
from director.config.agent import AgentConfig, ResolvedAgent
from director.config.bgp import Announce, BgpSettings, Neighbor
from director.config.checks import CheckConfig, ResolvedCheck
from director.config.model import (
    DaemonSettings,
    KernelSettings,
    RealServer,
    SorryServer,
    VirtualServer,
)
from director.config.network import (
    FwmarkRule,
    MasqueradeRule,
    NetworkSettings,
    PolicyRoute,
    SnatRule,
)
from director.config.peer import PeerCheckSettings
from director.config.vrrp import SyncDaemon, VirtualAddress, VrrpInstance, VrrpSyncGroup
from director.importers.emit import dumps
from director.peer.canonical import (
    SECRET_PREFIX,
    TABLES,
    canonical_form,
    decode_lines,
    digest,
    encode,
    encode_lines,
    next_generation,
)
from director.peer.diff import MISSING, Difference, describe, differences, sections, summary

KEY = b"0123456789abcdef0123456789abcdef"
VRRP_PASSWORD = "vrrp-pw1"
HTTP_PASSWORD = "s3cret-basic-auth"

MODELS: dict[str, type[BaseModel]] = {
    "daemon": DaemonSettings,
    "kernel": KernelSettings,
    "virtual_server": VirtualServer,
    "virtual_server.real_server": RealServer,
    "virtual_server.sorry_server": SorryServer,
    "check": ResolvedCheck,
    "agent": ResolvedAgent,
    "vrrp_instance": VrrpInstance,
    "vrrp_instance.virtual_addresses": VirtualAddress,
    "vrrp_sync_group": VrrpSyncGroup,
    "sync_daemon": SyncDaemon,
    "network": NetworkSettings,
    "fwmark": FwmarkRule,
    "snat": SnatRule,
    "masquerade": MasqueradeRule,
    "policy_route": PolicyRoute,
    "peer_check": PeerCheckSettings,
    "bgp": BgpSettings,
    "bgp.neighbor": Neighbor,
    "bgp.announce": Announce,
}


def keys_of(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("key") / "peer.key"
    path.write_bytes(KEY + b"\n")
    os.chmod(path, 0o600)
    return str(path)


def base(key_file: str) -> dict[str, Any]:
    """A config with every table the canonical form covers (a raw TOML document)."""
    return {
        "daemon": {"state_dir": "/var/lib/director", "metrics_address": "127.0.0.1:9469"},
        "kernel": {"tcp_timeout": 900, "sysctls": {"net.ipv4.conf.eth0.arp_ignore": 1}},
        "network": {"table": "director", "rp_filter": "loose"},
        "peer_check": {
            "listen_address": "198.18.0.1:9470",
            "peers": ["198.18.0.2:9470"],
            "key_file": key_file,
        },
        "sync_daemon": {"interface": "eth0", "sync_id": 7, "instance": "VI_1"},
        "vrrp_instance": [
            {
                "name": "VI_1",
                "interface": "eth0",
                "vrid": 51,
                "priority": 150,
                "password": VRRP_PASSWORD,
                "virtual_addresses": [
                    "198.18.0.10/24",
                    {"address": "198.18.0.11/24", "device": "eth0", "label": "eth0:1"},
                ],
                "excluded_addresses": ["2001:db8::10/64"],
                "unicast_peers": ["198.18.0.2"],
                "track_interfaces": [{"interface": "eth1"}],
            },
            {
                "name": "VI_2",
                "interface": "eth1",
                "vrid": 52,
                "version": 3,
                "virtual_addresses": ["198.18.2.10/24"],
            },
        ],
        "vrrp_sync_group": [{"name": "G", "instances": ["VI_1", "VI_2"]}],
        "virtual_server": [
            {
                "name": "web",
                "protocol": "tcp",
                "address": "198.18.0.10",
                "port": 443,
                "scheduler": "mh",
                "scheduler_flags": ["mh-port", "mh-fallback"],
                "persistence_timeout": 300,
                "persistence_netmask": "255.255.255.0",
                "sorry_server": {"address": "198.18.1.99", "port": 8443},
                "check": {
                    "type": "https",
                    "path": "/health",
                    "username": "probe",
                    "password": HTTP_PASSWORD,
                    "expect_status": [200, "300-399"],
                },
                "real_server": [
                    {"address": "198.18.1.11", "port": 443, "weight": 2},
                    {"address": "198.18.1.12", "port": 443, "check": {"path": "/other"}},
                    {"address": "198.18.1.13", "port": 443, "upper_threshold": 100},
                ],
            },
            {
                "protocol": "udp",
                "address": "198.18.0.10",
                "port": 53,
                "forwarding": "dr",
                "one_packet": True,
                "real_server": [{"address": "198.18.1.21"}, {"address": "198.18.1.22"}],
            },
            {
                "name": "exchange",
                "fwmark": 80,
                "check": {"type": "exchange", "vdirs": ["owa", "ews"]},
                "real_server": [{"address": "198.18.1.31", "forwarding": "dr"}],
            },
            {
                "name": "anycast",
                "protocol": "tcp",
                "address": "198.18.0.20",
                "port": 80,
                "scheduler": "mh",
                "real_server": [{"address": "198.18.1.41"}, {"address": "198.18.1.42"}],
            },
        ],
        "bgp": {
            "backend": "exabgp",
            "local_as": 65001,
            "router_id": "198.18.100.1",
            "neighbor": [
                {"address": "198.18.100.254", "peer_as": 65000, "password": "bgp-secret"},
            ],
            "announce": [
                {
                    "prefix": "198.18.0.20/32",
                    "virtual_servers": ["anycast"],
                    "quorum": 1,
                    "communities": ["65000:100"],
                },
            ],
        },
        "fwmark": [
            {"mark": 80, "address": "198.18.0.12", "ports": [443, 80, 25]},
        ],
        "snat": [{"source": "198.18.1.0/24", "to": "198.18.0.10", "out_interface": "eth0"}],
        "masquerade": [{"source": "198.18.3.0/24", "out_interface": "eth0"}],
        "policy_route": [{"fwmark": 80, "table": 100}],
    }


def load(raw: dict[str, Any]) -> Config:
    return Config.model_validate(raw, by_alias=True, by_name=False)


def digest_of(raw: dict[str, Any], key: bytes | None = KEY) -> str:
    return digest(canonical_form(load(raw), key))


def edit(raw: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


# -- the classification ----------------------------------------------------------------------


def test_every_key_of_every_table_is_classified_once() -> None:
    """A key added to the model and not classified here fails this test."""
    assert {t.path for t in TABLES} == set(MODELS)
    for table in TABLES:
        shared, local = set(table.shared), set(table.local)
        assert not shared & local, table.path
        assert shared | local == keys_of(MODELS[table.path]), table.path
        assert set(table.secret) <= shared, table.path
        if table.local:
            assert table.why_local, table.path
    # every top-level table of the file is one of them
    top = {t.path.split(".")[0] for t in TABLES if t.path not in ("check", "agent")}
    assert keys_of(Config) == top
    # a check table's keys are the resolved check's
    assert keys_of(CheckConfig) == keys_of(ResolvedCheck)
    # an agent table's keys are the resolved agent's, but for ``enabled`` (an agent turned off
    # is no agent)
    assert keys_of(AgentConfig) - {"enabled"} == keys_of(ResolvedAgent)


# Every shared key, edited: the digest changes.
SHARED_EDITS: list[tuple[tuple[str | int, ...], object]] = [
    (("kernel", "ip_forward"), False),
    (("kernel", "ipv6_forwarding"), True),
    (("kernel", "conntrack"), True),
    (("kernel", "expire_nodest_conn"), False),
    (("kernel", "expire_quiescent_template"), False),
    (("kernel", "tcp_timeout"), 901),
    (("kernel", "tcpfin_timeout"), 60),
    (("kernel", "udp_timeout"), 60),
    (("network", "rp_filter"), "keep"),
    (("sync_daemon", "sync_id"), 8),
    (("sync_daemon", "instance"), "VI_2"),
    (("sync_daemon", "mode"), "both"),
    (("vrrp_instance", 0, "name"), "VI_9"),
    (("vrrp_instance", 0, "vrid"), 61),
    (("vrrp_instance", 1, "version"), 2),
    (("vrrp_instance", 0, "advert_interval"), 2),
    (("vrrp_instance", 0, "password"), "other"),
    (("vrrp_instance", 0, "virtual_addresses", 0), "198.18.0.10/25"),
    (("vrrp_instance", 0, "excluded_addresses"), []),
    (("vrrp_sync_group", 0, "name"), "H"),
    (("vrrp_sync_group", 0, "instances"), ["VI_1"]),
    (("virtual_server", 0, "name"), "www"),
    (("virtual_server", 0, "protocol"), "sctp"),
    (("virtual_server", 0, "address"), "198.18.0.11"),
    (("virtual_server", 0, "port"), 8443),
    (("virtual_server", 2, "fwmark"), 81),
    (("virtual_server", 2, "family"), "ipv6"),
    (("virtual_server", 0, "scheduler"), "sh"),
    (("virtual_server", 0, "scheduler_flags"), ["mh-port"]),
    (("virtual_server", 0, "agent"), {"port": 10000}),
    (("bgp", "local_as"), 65002),
    (("bgp", "drain_timeout"), 60),
    (("bgp", "backend"), "kernel"),
    (("bgp", "neighbor", 0, "address"), "198.18.100.253"),
    (("bgp", "neighbor", 0, "peer_as"), 65003),
    (("bgp", "neighbor", 0, "hold_time"), 30),
    (("bgp", "neighbor", 0, "password"), "other-secret"),
    (("bgp", "announce", 0, "prefix"), "198.18.0.21/32"),
    (("bgp", "announce", 0, "virtual_servers"), ["anycast-80"]),
    (("bgp", "announce", 0, "quorum"), 2),
    (("bgp", "announce", 0, "quorum_up"), 2),
    (("bgp", "announce", 0, "communities"), ["65000:200"]),
    (("bgp", "announce", 0, "med"), 10),
    (("virtual_server", 0, "real_server", 0, "agent"), {"port": 10001}),
    (("virtual_server", 0, "persistence_timeout"), 301),
    (("virtual_server", 0, "persistence_netmask"), 16),
    (("virtual_server", 1, "one_packet"), False),
    (("virtual_server", 1, "forwarding"), "tun"),
    (("virtual_server", 0, "on_failure"), "quiesce"),
    (("virtual_server", 1, "tunnel_type"), "gre"),
    (("virtual_server", 1, "tunnel_port"), 6080),
    (("virtual_server", 1, "tunnel_checksum"), "csum"),
    (("virtual_server", 1, "real_server", 0, "tunnel_type"), "gre"),
    (("virtual_server", 1, "real_server", 0, "tunnel_port"), 6080),
    (("virtual_server", 1, "real_server", 0, "tunnel_checksum"), "csum"),
    (("virtual_server", 0, "sorry_server", "tunnel_type"), "gre"),
    (("virtual_server", 0, "sorry_server", "tunnel_port"), 6080),
    (("virtual_server", 0, "sorry_server", "tunnel_checksum"), "csum"),
    (("virtual_server", 0, "sorry_server", "address"), "198.18.1.98"),
    (("virtual_server", 0, "sorry_server", "port"), 8080),
    (("virtual_server", 0, "sorry_server", "forwarding"), "dr"),
    (("virtual_server", 0, "sorry_server", "weight"), 2),
    (("virtual_server", 0, "real_server", 0, "name"), "web1"),
    (("virtual_server", 0, "real_server", 0, "address"), "198.18.1.14"),
    (("virtual_server", 0, "real_server", 0, "port"), 8443),
    (("virtual_server", 0, "real_server", 0, "forwarding"), "tun"),
    (("virtual_server", 0, "real_server", 0, "weight"), 3),
    (("virtual_server", 0, "real_server", 0, "upper_threshold"), 5),
    (("virtual_server", 0, "real_server", 2, "lower_threshold"), 1),
    (("virtual_server", 0, "real_server", 0, "check"), {"port": 8443}),
    (("fwmark", 0, "mark"), 81),
    (("fwmark", 0, "address"), "198.18.0.13"),
    (("fwmark", 0, "protocol"), "udp"),
    (("fwmark", 0, "ports"), [443, 80]),
    (("fwmark", 0, "master_only"), False),
    (("snat", 0, "source"), "198.18.4.0/24"),
    (("snat", 0, "to"), "198.18.0.11"),
    (("snat", 0, "master_only"), False),
    (("masquerade", 0, "source"), "198.18.5.0/24"),
    (("masquerade", 0, "master_only"), False),
    (("policy_route", 0, "fwmark"), 81),
    (("policy_route", 0, "family"), "both"),
]
CHECK_EDITS: dict[str, object] = {
    "type": "http",
    "port": 444,
    "interval": 7,
    "timeout": 2,
    "rise": 3,
    "fall": 4,
    "attempts": 2,
    "retry_delay": 0.5,
    "reentry": 30,
    "initial": "down",
    "path": "/x",
    "method": "HEAD",
    "host": "example.net",
    "expect_status": [200],
    "body_contains": "ok",
    "body_regex": "o+k",
    "username": "other",
    "password": "other-password",
    "http_version": "1.0",
    "sni": "example.net",
    "verify": False,
    "ca_file": "/etc/ssl/ca.pem",
}
# Keys only some check types take: edited on a check of a type that takes them.
OTHER_CHECKS: dict[str, tuple[dict[str, object], object]] = {
    "send": ({"type": "tcp", "send": "PING"}, "HELO"),
    "expect": ({"type": "tcp", "expect": "PONG"}, "OK"),
    "expect_regex": ({"type": "tcp", "expect": "P.NG"}, True),
    "vdirs": ({"type": "exchange"}, ["owa"]),
    "mode": ({"type": "exchange"}, "any"),
    "helo_name": ({"type": "smtp"}, "lb.example.net"),
    "starttls": ({"type": "smtp"}, True),
    "command": ({"type": "script", "command": ["/bin/true"]}, ["/bin/false"]),
    "weight_from_exit": ({"type": "script", "command": ["/bin/true"]}, True),
    "user": ({"type": "script", "command": ["/bin/true"]}, "nobody"),
}
# Every host-local key, edited: the digest stays.
LOCAL_EDITS: list[tuple[tuple[str | int, ...], object]] = [
    (("daemon", "log_format"), "json"),
    (("daemon", "log_level"), "debug"),
    (("daemon", "resync_interval"), 30),
    (("daemon", "state_dir"), "/srv/director"),
    (("daemon", "control_socket"), "/run/d.sock"),
    (("daemon", "keep_table_on_stop"), False),
    (("daemon", "max_concurrent_probes"), 16),
    (("daemon", "metrics_address"), "198.18.0.1:9469"),
    (("daemon", "stats_interval"), 1),
    (("daemon", "script_user"), "nobody"),
    (("kernel", "sysctls"), {"net.ipv4.conf.eth1.arp_ignore": 1}),
    (("network", "table"), "lb"),
    (("bgp", "router_id"), "198.18.100.2"),
    (("bgp", "next_hop"), "198.18.100.2"),
    (("bgp", "next_hop_ipv6"), "2001:db8:100::2"),
    (("bgp", "exabgp"), "/usr/local/bin/exabgp"),
    (("bgp", "route_table"), 100),
    (("bgp", "route_protocol"), 99),
    (("bgp", "vip_device"), "lo"),
    (("bgp", "neighbor", 0, "local_address"), "198.18.100.2"),
    (("sync_daemon", "interface"), "eth9"),
    (("vrrp_instance", 0, "interface"), "bond0"),
    (("vrrp_instance", 0, "priority"), 100),
    (("vrrp_instance", 0, "preempt"), False),
    (("vrrp_instance", 0, "preempt_delay"), 30),
    (("vrrp_instance", 0, "primary_address"), "198.18.0.2"),
    (("vrrp_instance", 0, "unicast_peers"), ["198.18.0.1"]),
    (("vrrp_instance", 0, "accept_only_peers"), True),
    (("vrrp_instance", 0, "garp_count"), 1),
    (("vrrp_instance", 0, "garp_interval"), 0.5),
    (("vrrp_instance", 0, "garp_repeat_after"), 0),
    (("vrrp_instance", 0, "garp_refresh"), 60),
    (("vrrp_instance", 0, "track_interfaces"), [{"interface": "eth2", "weight": 20}]),
    (("vrrp_instance", 0, "track_checks"), [{"virtual_server": "web"}]),
    (("vrrp_instance", 0, "notify_master"), ["/usr/local/bin/n", "master"]),
    (("vrrp_instance", 0, "notify_backup"), ["/usr/local/bin/n", "backup"]),
    (("vrrp_instance", 0, "notify_fault"), ["/usr/local/bin/n", "fault"]),
    (("vrrp_instance", 0, "notify"), ["/usr/local/bin/n"]),
    (
        ("vrrp_instance", 0, "virtual_addresses", 1),
        {"address": "198.18.0.11/24", "device": "bond0", "label": "bond0:7"},
    ),
    (("vrrp_sync_group", 0, "notify_master"), ["/usr/local/bin/n"]),
    (("vrrp_sync_group", 0, "notify_backup"), ["/usr/local/bin/n"]),
    (("vrrp_sync_group", 0, "notify_fault"), ["/usr/local/bin/n"]),
    (("vrrp_sync_group", 0, "notify"), ["/usr/local/bin/n"]),
    (("snat", 0, "out_interface"), "bond0"),
    (("masquerade", 0, "out_interface"), "bond0"),
    (("policy_route", 0, "table"), 200),
    (("policy_route", 0, "priority"), 50),
    (("peer_check", "listen_address"), "198.18.0.5:9470"),
    (("peer_check", "peers"), ["198.18.0.6:9470", "198.18.0.7:9470"]),
    (("peer_check", "interval"), 5),
    (("peer_check", "timeout"), 1),
    (("peer_check", "max_clock_skew"), 10),
]


def _covered(edits: list[tuple[tuple[str | int, ...], object]]) -> set[str]:
    out = set()
    for path, _ in edits:
        names = [p for p in path if isinstance(p, str)]
        table = ".".join(names[:-1])
        out.add(f"{table}.{names[-1]}")
    return out


def test_the_edits_below_cover_every_key() -> None:
    inner = ("check", "agent")
    shared = {f"{t.path}.{k}" for t in TABLES if t.path not in inner for k in t.shared}
    local = {f"{t.path}.{k}" for t in TABLES if t.path not in inner for k in t.local}
    # a table key of its own (sorry_server, check, real_server, virtual address) is edited
    # through its inner keys or as a whole
    assert shared - _covered(SHARED_EDITS) == {
        "bgp.neighbor",
        "bgp.announce",
        "virtual_server.check",
        "virtual_server.real_server",
        "vrrp_instance.virtual_addresses.address",  # edited as a string (one address)
        "virtual_server.sorry_server",
    }
    assert local - _covered(LOCAL_EDITS) == {
        "vrrp_instance.virtual_addresses.device",
        "vrrp_instance.virtual_addresses.label",
        "peer_check.key_file",
    }
    assert set(CHECK_EDITS) | set(OTHER_CHECKS) == set(ResolvedCheck.model_fields)
    assert set(AGENT_EDITS) == set(ResolvedAgent.model_fields)


# Each key of a feedback agent, changed from {"port": 10000} on the first service.
AGENT_EDITS: dict[str, object] = {
    "port": 10002,
    "address": "198.18.1.99",
    "interval": 7,
    "timeout": 1.5,
    "send": "hello\n",
    "min_percent": 10,
    "max_percent": 90,
    "threshold": 5,
    "rate_limit": 30,
    "maxconn": False,
}


@pytest.mark.parametrize(("name", "value"), AGENT_EDITS.items())
def test_an_edit_of_a_feedback_agent_key_changes_the_digest(
    key_file: str, name: str, value: object
) -> None:
    raw = edit(base(key_file), ("virtual_server", 0, "agent"), {"port": 10000})
    changed = edit(raw, ("virtual_server", 0, "agent", name), value)
    assert digest_of(changed) != digest_of(raw)


# Edits that need another to stay valid (a renamed instance is renamed where it is named).
FIXUPS: dict[tuple[str | int, ...], list[tuple[tuple[str | int, ...], object]]] = {
    ("vrrp_instance", 0, "name"): [
        (("vrrp_sync_group", 0, "instances"), ["VI_9", "VI_2"]),
        (("sync_daemon", "instance"), "VI_9"),
    ],
    ("virtual_server", 2, "family"): [
        (("virtual_server", 2, "real_server", 0, "address"), "2001:db8::31"),
    ],
    ("virtual_server", 0, "scheduler"): [(("virtual_server", 0, "scheduler_flags"), [])],
    ("virtual_server", 0, "sorry_server", "forwarding"): [
        (("virtual_server", 0, "sorry_server", "port"), 443)
    ],
    ("fwmark", 0, "mark"): [(("policy_route", 0, "fwmark"), 81)],
    # both daemons whatever the role: no instance drives them
    ("sync_daemon", "mode"): [(("sync_daemon", "instance"), None)],
    # the tunnel keys are for forwarding = "tun" (and a port for GUE only)
    ("virtual_server", 1, "tunnel_type"): [(("virtual_server", 1, "forwarding"), "tun")],
    ("virtual_server", 1, "tunnel_port"): [
        (("virtual_server", 1, "forwarding"), "tun"),
        (("virtual_server", 1, "tunnel_type"), "gue"),
    ],
    ("virtual_server", 1, "tunnel_checksum"): [
        (("virtual_server", 1, "forwarding"), "tun"),
        (("virtual_server", 1, "tunnel_type"), "gre"),
    ],
    ("virtual_server", 1, "real_server", 0, "tunnel_type"): [
        (("virtual_server", 1, "forwarding"), "tun")
    ],
    ("virtual_server", 1, "real_server", 0, "tunnel_port"): [
        (("virtual_server", 1, "forwarding"), "tun"),
        (("virtual_server", 1, "real_server", 0, "tunnel_type"), "gue"),
    ],
    ("virtual_server", 1, "real_server", 0, "tunnel_checksum"): [
        (("virtual_server", 1, "forwarding"), "tun"),
        (("virtual_server", 1, "tunnel_type"), "gue"),
        (("virtual_server", 1, "tunnel_port"), 6080),
    ],
    ("virtual_server", 0, "sorry_server", "tunnel_type"): [
        (("virtual_server", 0, "sorry_server", "forwarding"), "tun"),
        (("virtual_server", 0, "sorry_server", "port"), 443),
    ],
    ("virtual_server", 0, "sorry_server", "tunnel_port"): [
        (("virtual_server", 0, "sorry_server", "forwarding"), "tun"),
        (("virtual_server", 0, "sorry_server", "port"), 443),
        (("virtual_server", 0, "sorry_server", "tunnel_type"), "gue"),
    ],
    ("virtual_server", 0, "sorry_server", "tunnel_checksum"): [
        (("virtual_server", 0, "sorry_server", "forwarding"), "tun"),
        (("virtual_server", 0, "sorry_server", "port"), 443),
        (("virtual_server", 0, "sorry_server", "tunnel_type"), "gre"),
    ],
    # the kernel backend speaks to no neighbour itself (BIRD/FRR do)
    ("bgp", "backend"): [(("bgp", "neighbor"), [])],
    # an announcement names services on its own address
    ("bgp", "announce", 0, "prefix"): [(("virtual_server", 3, "address"), "198.18.0.21")],
    ("bgp", "announce", 0, "virtual_servers"): [(("virtual_server", 3, "name"), "anycast-80")],
}


@pytest.mark.parametrize(("path", "value"), SHARED_EDITS, ids=lambda v: str(v))
def test_an_edit_of_a_shared_key_changes_the_digest(
    key_file: str, path: tuple[str | int, ...], value: object
) -> None:
    raw = base(key_file)
    changed = edit(raw, path, value)
    for other, fixed in FIXUPS.get(path, []):
        changed = edit(changed, other, fixed)
    assert digest_of(changed) != digest_of(raw)


@pytest.mark.parametrize(("name", "value"), CHECK_EDITS.items())
def test_an_edit_of_a_check_key_changes_the_digest(key_file: str, name: str, value: object) -> None:
    raw = base(key_file)
    changed = edit(raw, ("virtual_server", 0, "check", name), value)
    assert digest_of(changed) != digest_of(raw)


@pytest.mark.parametrize(("name", "case"), OTHER_CHECKS.items())
def test_an_edit_of_a_kind_specific_check_key_changes_the_digest(
    key_file: str, name: str, case: tuple[dict[str, object], object]
) -> None:
    check, value = case
    raw = edit(base(key_file), ("virtual_server", 1, "check"), check)
    assert digest_of(edit(raw, ("virtual_server", 1, "check", name), value)) != digest_of(raw)


@pytest.mark.parametrize(("path", "value"), LOCAL_EDITS, ids=lambda v: str(v))
def test_an_edit_of_a_host_local_key_never_changes_the_digest(
    key_file: str, path: tuple[str | int, ...], value: object
) -> None:
    raw = base(key_file)
    changed = edit(raw, path, value)
    assert load(changed) != load(raw)  # the edit is real
    assert digest_of(changed) == digest_of(raw)


def test_the_other_directors_file_differs_only_in_host_local_keys(
    key_file: str, tmp_path: Path
) -> None:
    """The pair's two files as an operator writes them: priority, interfaces, addresses,
    unicast peers, paths, hooks; and another key_file path holding the same key."""
    other_key = tmp_path / "k"
    other_key.write_bytes(KEY)
    os.chmod(other_key, 0o400)
    raw = base(key_file)
    other = raw
    for path, value in LOCAL_EDITS:
        other = edit(other, path, value)
    other = edit(other, ("peer_check", "key_file"), str(other_key))
    assert digest_of(other) == digest_of(raw)


def test_without_the_peer_check_the_digest_is_the_same_shape(key_file: str) -> None:
    raw = base(key_file)
    del raw["peer_check"]
    form = canonical_form(load(raw), None)
    assert "peer_check" not in json.dumps(form)
    # secrets show as "set" only; a changed secret is then not seen (documented)
    assert form["vrrp_instance VI_1"]["password"] == "set"  # type: ignore[index]
    assert digest_of(edit(raw, ("vrrp_instance", 0, "password"), "x"), None) == digest(form)


# -- secrets -----------------------------------------------------------------------------------


def test_secrets_never_appear_in_clear_and_are_keyed(key_file: str) -> None:
    raw = base(key_file)
    text = encode(canonical_form(load(raw), KEY)).decode()
    assert VRRP_PASSWORD not in text and HTTP_PASSWORD not in text
    form = canonical_form(load(raw), KEY)
    vrrp = form["vrrp_instance VI_1"]
    assert isinstance(vrrp, dict) and vrrp["password"].startswith(SECRET_PREFIX)
    # another key, other hashes: the hash is no unkeyed fingerprint of the password
    other = canonical_form(load(raw), b"another-key-of-32-bytes-........")
    assert other["vrrp_instance VI_1"]["password"] != vrrp["password"]  # type: ignore[index]
    # the same password hashes the same on both directors (same key)
    again = canonical_form(load(copy.deepcopy(raw)), KEY)
    assert again == form


def test_a_changed_secret_is_a_difference_shown_without_values(key_file: str) -> None:
    raw = base(key_file)
    here = canonical_form(load(raw), KEY)
    peer = canonical_form(load(edit(raw, ("vrrp_instance", 0, "password"), "hunter2")), KEY)
    lines = [describe(d) for d in differences(here, peer)]
    assert lines == ["vrrp_instance VI_1: password: differs (secret; compared as keyed hashes)"]
    assert not any("hunter2" in line or VRRP_PASSWORD in line for line in lines)


# -- order, formatting, comments and defaults make no difference (property) -------------------


def with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with defaults written out that it left implicit."""
    out = copy.deepcopy(raw)
    out["kernel"].update(ip_forward=True, expire_nodest_conn=True)
    vs = out["virtual_server"][0]
    vs.update(one_packet=False, forwarding="nat", on_failure="remove", family="ipv4")
    vs["check"].update(interval=5.0, timeout=3, rise=2, fall=3, method="GET", verify=True)
    vs["persistence_netmask"] = 24  # the same as "255.255.255.0"
    for rs in vs["real_server"]:
        rs.setdefault("weight", 1)
        rs.setdefault("lower_threshold", 0)
    vs["sorry_server"]["weight"] = 1
    out["virtual_server"][1]["scheduler"] = "wlc"
    out["vrrp_instance"][0].update(version=2, advert_interval=1, garp_count=5)
    out["fwmark"][0]["protocol"] = "tcp"
    out["fwmark"][0]["master_only"] = True
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_order_formatting_comments_and_defaults_make_no_difference(
    data: st.DataObject, key_file: str
) -> None:
    raw = base(key_file)
    want = digest_of(raw)
    variant = copy.deepcopy(raw)
    if data.draw(st.booleans(), "defaults"):
        variant = with_defaults(variant)
    variant["virtual_server"] = data.draw(st.permutations(variant["virtual_server"]), "services")
    for vs in variant["virtual_server"]:
        vs["real_server"] = data.draw(st.permutations(vs["real_server"]), "servers")
        if "scheduler_flags" in vs:
            vs["scheduler_flags"] = data.draw(st.permutations(vs["scheduler_flags"]))
    variant["vrrp_instance"] = data.draw(st.permutations(variant["vrrp_instance"]), "vrrp")
    for vi in variant["vrrp_instance"]:
        vi["virtual_addresses"] = data.draw(st.permutations(vi["virtual_addresses"]))
    variant["vrrp_sync_group"][0]["instances"] = data.draw(st.permutations(["VI_1", "VI_2"]))
    variant["fwmark"][0]["ports"] = data.draw(st.permutations([443, 80, 25]), "ports")
    # the top-level tables in any order, each table's keys in any order
    order = data.draw(st.permutations(sorted(variant)), "tables")
    variant = {name: _shuffled(data, variant[name]) for name in order}
    printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    comments = data.draw(st.lists(st.text(printable, max_size=20), max_size=3), "comments")
    text = dumps(variant, header=comments)
    if data.draw(st.booleans(), "indent"):
        text = "\n".join("    " + line if line.strip() else line for line in text.splitlines())
    if data.draw(st.booleans(), "blank lines"):
        text = text.replace("\n[", "\n\n# a comment\n\n[")
    assert digest(canonical_form(parse_config(text), KEY)) == want


def _shuffled(data: st.DataObject, value: Any) -> Any:
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _shuffled(data, value[k]) for k in keys}
    if isinstance(value, list):
        return [_shuffled(data, v) for v in value]
    return value


def test_the_form_is_keyed_in_config_terms(key_file: str) -> None:
    form = canonical_form(load(base(key_file)), KEY)
    assert sorted(k for k in form if k.startswith("virtual_service")) == [
        "virtual_service FWM 80 ipv4",
        "virtual_service TCP 198.18.0.10:443",
        "virtual_service TCP 198.18.0.20:80",
        "virtual_service UDP 198.18.0.10:53",
    ]
    assert form["bgp announce 198.18.0.20/32"] == {
        "virtual_servers": ["anycast"],
        "quorum": 1,
        "quorum_up": 1,
        "communities": ["65000:100"],
        "med": None,
    }
    neighbor = form["bgp neighbor 198.18.100.254"]
    assert isinstance(neighbor, dict) and "bgp-secret" not in str(neighbor)
    web = form["virtual_service TCP 198.18.0.10:443"]
    assert isinstance(web, dict)
    # the server's own check merged over the service's, every default filled in
    check = web["real_server 198.18.1.12:443"]["check"]
    assert check["path"] == "/other" and check["type"] == "https" and check["interval"] == 5.0
    assert web["persistence_prefix"] == 24
    # dr forwarding cannot change the port: the real server takes the service's
    dns = form["virtual_service UDP 198.18.0.10:53"]
    assert isinstance(dns, dict) and "real_server 198.18.1.21:53" in dns
    assert form["snat[0]"] == {"source": "198.18.1.0/24", "to": "198.18.0.10", "master_only": True}


def test_snat_order_counts_because_nftables_takes_the_first_match(key_file: str) -> None:
    raw = base(key_file)
    raw["snat"].append({"source": "198.18.0.0/16", "to": "198.18.0.11"})
    swapped = edit(raw, ("snat",), list(reversed(raw["snat"])))
    assert digest_of(swapped) != digest_of(raw)


# -- the diff ----------------------------------------------------------------------------------


def test_the_diff_in_config_terms(key_file: str) -> None:
    raw = base(key_file)
    peer = edit(raw, ("virtual_server", 0, "real_server", 1, "weight"), 3)
    peer["virtual_server"].pop(1)
    peer["virtual_server"][0]["real_server"].pop(2)
    peer["vrrp_instance"][0]["advert_interval"] = 2
    peer["virtual_server"][1]["real_server"][0]["check"] = {"type": "none"}
    peer["fwmark"].append({"mark": 80, "address": "198.18.0.14"})
    here_form = canonical_form(load(raw), KEY)
    peer_form = canonical_form(load(peer), KEY)
    diffs = differences(here_form, peer_form)
    assert [describe(d) for d in diffs] == [
        "only on the peer: fwmark 80 tcp 198.18.0.14/32 ports all",
        "only here: virtual_service FWM 80 ipv4: real_server 198.18.1.31:0: check",
        "virtual_service TCP 198.18.0.10:443: real_server 198.18.1.12:443: weight: here 1, peer 3",
        "only here: virtual_service TCP 198.18.0.10:443: real_server 198.18.1.13:443",
        "only here: virtual_service UDP 198.18.0.10:53",
        "vrrp_instance VI_1: advert_interval: here 1, peer 2",
    ]
    assert sections(diffs) == [
        "fwmark 80 tcp 198.18.0.14/32 ports all",
        "virtual_service FWM 80 ipv4",
        "virtual_service TCP 198.18.0.10:443",
        "virtual_service UDP 198.18.0.10:53",
        "vrrp_instance VI_1",
    ]
    assert differences(here_form, here_form) == []
    assert summary([f"s{i}" for i in range(7)]) == "s0, s1, s2, s3, s4 and 2 more"


def test_describe_plain_values() -> None:
    assert describe(Difference(("kernel", "tcp_timeout"), None, 900)) == (
        "kernel: tcp_timeout: here none, peer 900"
    )
    assert describe(Difference(("a", "b"), MISSING, True)) == "only on the peer: a: b = true"
    assert describe(Difference(("a", "b"), [1, "x"], MISSING)) == 'only here: a: b = [1, "x"]'


def test_generation() -> None:
    assert next_generation(None, "a") == 1
    assert next_generation(("a", 4), "a") == 4
    assert next_generation(("a", 4), "b") == 5


def test_the_encoding_is_one_json_document_and_the_answer_reads_back(key_file: str) -> None:
    form = canonical_form(load(base(key_file)), KEY)
    whole = json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert encode(form) == whole.encode()  # built entry by entry, the same bytes
    head = {"digest": digest(form), "generation": 3}
    assert decode_lines(encode_lines(head, form)) == {**head, "canonical": form}
    for bad, why in (
        (b"[]", "not a JSON object"),
        (b'{"digest": 1}\n{"a": 1}', "expected \\[key, value\\] lines"),
        (b"{}\nnot json", "Expecting value"),
    ):
        with pytest.raises(ValueError, match=why):
            decode_lines(bad)
