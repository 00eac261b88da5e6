"""The director's role from the VRRP states, and the healthy counts tracking reads."""

from __future__ import annotations

import ipaddress

import pytest

from director.config import parse_config
from director.role import Role
from director.vrrp_service import director_role, healthy_counts, placements
from vrrp.addresses import VirtualAddress
from vrrp.table import State

M, B, F, INIT = State.MASTER, State.BACKUP, State.FAULT, State.INITIALIZE


@pytest.mark.parametrize(
    ("states", "role"),
    [
        ({}, Role.MASTER),  # no VRRP: always master
        ({"a": M, "b": B}, Role.MASTER),  # any master
        ({"a": B, "b": F}, Role.BACKUP),
        ({"a": F, "b": F}, Role.FAULT),  # all in fault
        ({"a": INIT}, Role.BACKUP),
    ],
)
def test_role_from_all_instances(states: dict[str, State], role: Role) -> None:
    assert director_role(states, {}, None) is role


def test_role_from_the_named_instance_or_group() -> None:
    states = {"a": M, "b": B}
    assert director_role(states, {}, "b") is Role.BACKUP
    assert director_role(states, {"G": F}, "G") is Role.FAULT
    assert director_role(states, {"G": M}, "G") is Role.MASTER
    assert director_role({"a": M}, {}, "a") is Role.MASTER


def test_healthy_counts_and_placements() -> None:
    config = parse_config(
        """
[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.10"
port = 80
  [[virtual_server.real_server]]
  address = "198.18.1.1"
  [[virtual_server.real_server]]
  address = "198.18.1.2"
[[virtual_server]]
fwmark = 3
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 1
virtual_addresses = [
  "198.18.0.10/24",
  { address = "198.18.2.1", device = "eth1", label = "eth1:5" },
]
"""
    )
    vs = config.virtual_servers[0]
    down = {(vs.service_key(), vs.real_servers[0].dest_key(vs)): False}
    assert healthy_counts(config, {}) == {"web": 2}
    assert healthy_counts(config, down) == {"web": 1}
    assert placements(config.vrrp_instances[0]) == [
        VirtualAddress(ipaddress.ip_address("198.18.0.10"), 24),
        VirtualAddress(ipaddress.ip_address("198.18.2.1"), 32, "eth1", "eth1:5"),
    ]
