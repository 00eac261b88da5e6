"""Config + health -> desired table: quiesce or remove, and the sorry server."""

from __future__ import annotations

import ipaddress

from director.config import parse_config
from director.desired import compile_table
from director.ipvs.model import SVC_F_PERSISTENT, DestKey, Forwarding, Protocol, ServiceKey

CONFIG = """
[[virtual_server]]
protocol = "tcp"
address = "198.18.0.20"
port = 80
scheduler = "lc"
persistence_timeout = 300
persistence_netmask = 24
on_failure = "{on_failure}"
sorry_server = {{ address = "198.18.2.9", port = 8080 }}
  [[virtual_server.real_server]]
  address = "198.18.1.21"
  weight = 5
  upper_threshold = 100
  lower_threshold = 50
  [[virtual_server.real_server]]
  address = "198.18.1.22"
  port = 8080
"""
KEY = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.20"), 80)
RS1 = DestKey.of(ipaddress.IPv4Address("198.18.1.21"), 80)
RS2 = DestKey.of(ipaddress.IPv4Address("198.18.1.22"), 8080)
SORRY = DestKey.of(ipaddress.IPv4Address("198.18.2.9"), 8080)


def weights(on_failure: str, up: dict[DestKey, bool]) -> dict[DestKey, int]:
    table = compile_table(
        parse_config(CONFIG.format(on_failure=on_failure)), {(KEY, k): v for k, v in up.items()}
    )
    return {k: d.weight for k, d in table.dests[KEY].items()}


def test_all_fields_reach_the_table() -> None:
    table = compile_table(parse_config(CONFIG.format(on_failure="remove")))
    svc = table.services[KEY]
    assert (svc.sched_name, svc.flags, svc.timeout, svc.netmask) == (
        "lc",
        SVC_F_PERSISTENT,
        300,
        24,
    )
    rs1 = table.dests[KEY][RS1]
    assert (rs1.weight, rs1.u_threshold, rs1.l_threshold, rs1.fwd_method) == (
        5,
        100,
        50,
        Forwarding.NAT,
    )
    assert SORRY not in table.dests[KEY]


def test_failed_server_is_removed_or_quiesced() -> None:
    assert weights("remove", {RS1: False}) == {RS2: 1}
    assert weights("quiesce", {RS1: False}) == {RS1: 0, RS2: 1}


def test_sorry_server_only_while_no_real_server_is_available() -> None:
    assert weights("remove", {RS1: False, RS2: False}) == {SORRY: 1}
    assert weights("quiesce", {RS1: False, RS2: False}) == {RS1: 0, RS2: 0, SORRY: 1}
    assert weights("remove", {RS1: False, RS2: True}) == {RS2: 1}
