"""The ruleset as data: config + role -> nftables JSON, and the plan against what is installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from director.config import Config, ConfigError, parse_config
from director.config.network import (
    FwmarkRule,
    MasqueradeRule,
    NetworkSettings,
    PolicyRoute,
    SnatRule,
)
from director.network.routes import (
    FwmarkRule as IpRule,
)
from director.network.routes import (
    LocalRoute,
    Routes,
    desired_routes,
    plan_routes,
)
from director.network.ruleset import (
    ObservedChain,
    ObservedTable,
    Ruleset,
    batch,
    compile_ruleset,
    describe,
    parse_table,
    plan,
)
from director.role import Role

EXCHANGE = """
[[virtual_server]]
name = "exchange"
fwmark = 80
[[virtual_server]]
name = "ex1-mgmt"
fwmark = 1

[[fwmark]]
mark = 80
address = "198.18.0.10"
ports = [80, 443, 25, 2525, 587, 465, 717]

[[fwmark]]
mark = 1
address = "198.18.0.11"
master_only = false

[[snat]]
source = "198.18.1.0/24"
to = "198.18.0.10"
out_interface = "eth0"

[[masquerade]]
source = "2001:db8:1::/64"
master_only = false

[[policy_route]]
fwmark = 80
table = 100
family = "both"
"""


def _listing(commands: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``nft -j list table`` would print after ``commands`` ran on an empty table."""
    items: list[dict[str, Any]] = [{"metainfo": {"json_schema_version": 1}}]
    for cmd in commands:
        ((verb, body),) = cmd.items()
        ((kind, obj),) = body.items()
        if verb == "add":
            items.append({kind: {**obj, "handle": len(items)}})
    return {"nftables": items}


def test_exchange_ruleset_on_master_as_data() -> None:
    ruleset = compile_ruleset(parse_config(EXCHANGE), Role.MASTER)
    assert ruleset.table == "director" and ruleset.family == "inet"
    chains = {c.name: c for c in ruleset.chains}
    assert list(chains) == ["fwmark", "nat_out"]
    assert chains["fwmark"].spec() == ("filter", "prerouting", -150, "accept")
    assert chains["nat_out"].spec() == ("nat", "postrouting", 100, "accept")
    exchange, mgmt = chains["fwmark"].rules
    assert exchange.expr == [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": "198.18.0.10",
            }
        },
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                "right": {"set": [80, 443, 25, 2525, 587, 465, 717]},
            }
        },
        {"counter": None},
        {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 80}},
    ]
    assert mgmt.expr[0]["match"]["right"] == "198.18.0.11"
    assert len(mgmt.expr) == 3  # whole address: no port match
    snat, masq = chains["nat_out"].rules
    assert snat.expr[1:] == [
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}},
        {"counter": None},
        {"snat": {"family": "ip", "addr": "198.18.0.10"}},
    ]
    assert masq.expr == [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                "right": {"prefix": {"addr": "2001:db8:1::", "len": 64}},
            }
        },
        {"counter": None},
        {"masquerade": None},
    ]
    assert describe(ruleset) == [
        "inet director fwmark: ip daddr 198.18.0.10/32 tcp dport "
        "{ 80, 443, 25, 2525, 587, 465, 717 } counter meta mark set 80",
        "inet director fwmark: ip daddr 198.18.0.11/32 counter meta mark set 1",
        'inet director nat_out: ip saddr 198.18.1.0/24 oifname "eth0" counter snat ip to '
        "198.18.0.10",
        "inet director nat_out: ip6 saddr 2001:db8:1::/64 counter masquerade",
    ]
    assert [r.comment.split()[0] for r in ruleset.rules()] == [
        "fwmark[0]",
        "fwmark[1]",
        "snat[0]",
        "masquerade[0]",
    ]


@pytest.mark.parametrize("role", [Role.BACKUP, Role.FAULT])
def test_backup_keeps_only_the_always_rules(role: Role) -> None:
    ruleset = compile_ruleset(parse_config(EXCHANGE), role)
    assert [r.key for r in ruleset.rules()] == ["fwmark[1]", "masquerade[0]"]


def test_nothing_wanted_means_no_table() -> None:
    config = parse_config(EXCHANGE.replace("master_only = false", "master_only = true"))
    assert compile_ruleset(config, Role.BACKUP).empty
    assert compile_ruleset(Config(), Role.MASTER).empty


def test_plan_creates_then_finds_nothing_to_do() -> None:
    desired = compile_ruleset(parse_config(EXCHANGE), Role.MASTER)
    cmds = plan(desired, None)
    assert cmds[0] == {"add": {"table": {"family": "inet", "name": "director"}}}
    kinds = [next(iter(c["add"])) for c in cmds]
    assert kinds == ["table", "chain", "rule", "rule", "chain", "rule", "rule"]
    observed = parse_table(_listing(cmds), "director")
    assert plan(desired, observed) == []
    doc = batch(cmds)
    assert doc["nftables"][0] == {"metainfo": {"json_schema_version": 1}}
    json.dumps(doc)  # serialisable as is


def test_plan_touches_only_the_changed_chain() -> None:
    config = parse_config(EXCHANGE)
    desired = compile_ruleset(config, Role.MASTER)
    observed = parse_table(_listing(plan(desired, None)), "director")
    changed = parse_config(EXCHANGE.replace('to = "198.18.0.10"', 'to = "198.18.0.12"'))
    cmds = plan(compile_ruleset(changed, Role.MASTER), observed)
    chain = {"family": "inet", "table": "director", "name": "nat_out"}
    assert cmds[0] == {"flush": {"chain": chain}}
    assert [c["add"]["rule"]["chain"] for c in cmds[1:]] == ["nat_out", "nat_out"]
    assert cmds[1]["add"]["rule"]["expr"][-1] == {"snat": {"family": "ip", "addr": "198.18.0.12"}}


def test_plan_on_backup_drops_a_whole_chain() -> None:
    desired_master = compile_ruleset(
        parse_config(
            EXCHANGE.replace("[[masquerade]]\n", '[[masquerade]]\nout_interface = "eth1"\n')
        ),
        Role.MASTER,
    )
    observed = parse_table(_listing(plan(desired_master, None)), "director")
    only_marks = parse_config(
        EXCHANGE.split("[[masquerade]]")[0] + "[[policy_route]]\nfwmark = 80\ntable = 100\n"
    )
    cmds = plan(compile_ruleset(only_marks, Role.BACKUP), observed)
    fwmark = {"family": "inet", "table": "director", "name": "fwmark"}
    nat = {"family": "inet", "table": "director", "name": "nat_out"}
    assert cmds[:2] == [{"flush": {"chain": nat}}, {"delete": {"chain": nat}}]
    assert cmds[2] == {"flush": {"chain": fwmark}}
    assert [c["add"]["rule"]["comment"].split()[0] for c in cmds[3:]] == ["fwmark[1]"]


def test_plan_deletes_the_table_when_nothing_is_wanted() -> None:
    observed = ObservedTable(
        {"fwmark": ObservedChain(("filter", "prerouting", -150, "accept"), ("x",))}
    )
    assert plan(Ruleset("director"), observed) == [
        {"delete": {"table": {"family": "inet", "name": "director"}}}
    ]
    assert plan(Ruleset("director"), None) == []


def test_plan_recreates_a_chain_with_another_hook_and_replaces_foreign_objects() -> None:
    desired = compile_ruleset(parse_config(EXCHANGE), Role.MASTER)
    listing = _listing(plan(desired, None))
    for item in listing["nftables"]:
        if item.get("chain", {}).get("name") == "fwmark":
            item["chain"]["prio"] = 0  # someone changed it by hand
    cmds = plan(desired, parse_table(listing, "director"))
    chain = {"family": "inet", "table": "director", "name": "fwmark"}
    assert cmds[:2] == [{"flush": {"chain": chain}}, {"delete": {"chain": chain}}]
    assert cmds[2]["add"]["chain"]["prio"] == -150
    listing["nftables"].append({"set": {"family": "inet", "table": "director", "name": "s"}})
    cmds = plan(desired, parse_table(listing, "director"))
    table = {"family": "inet", "name": "director"}
    assert cmds[:3] == [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]


def test_parse_table_ignores_other_tables_and_reads_rules_without_comment() -> None:
    listing = {
        "nftables": [
            {"metainfo": {}},
            {"table": {"family": "inet", "name": "director", "handle": 1}},
            {"chain": {"family": "inet", "table": "director", "name": "fwmark", "type": "filter",
                       "hook": "prerouting", "prio": -150, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "director", "chain": "fwmark", "expr": []}},
            {"rule": {"family": "ip", "table": "director", "chain": "other", "expr": []}},
            {"chain": {"family": "inet", "table": "firewalld", "name": "x"}},
        ]
    }  # fmt: skip
    observed = parse_table(listing, "director")
    assert dict(observed.chains) == {
        "fwmark": ObservedChain(("filter", "prerouting", -150, "accept"), ("",))
    }
    assert observed.other_objects == 0


def test_routes_plan_orders_routes_around_rules() -> None:
    desired = desired_routes(parse_config(EXCHANGE))
    assert desired.rules == {IpRule(4, 100, 80, 100), IpRule(6, 100, 80, 100)}
    assert desired.routes == {LocalRoute(4, 100), LocalRoute(6, 100)}
    ops = plan_routes(desired, Routes())
    assert [str(op) for op in ops] == [
        "add local 0.0.0.0/0 dev lo table 100",
        "add local ::/0 dev lo table 100",
        "add ipv4 rule pref 100 fwmark 80 table 100",
        "add ipv6 rule pref 100 fwmark 80 table 100",
    ]
    assert plan_routes(desired, desired) == []
    ops = plan_routes(Routes(), desired)
    assert [str(op) for op in ops][:2] == [
        "delete ipv4 rule pref 100 fwmark 80 table 100",
        "delete ipv6 rule pref 100 fwmark 80 table 100",
    ]


# --- config validation ---------------------------------------------------------------------------


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[fwmark]]\nmark = 0\naddress = "198.18.0.10"\n',
            "fwmark[0].mark (line 2): expected an fwmark from 1 to 4294967295, found 0",
        ),
        (
            '[[fwmark]]\nmark = 1\naddress = "198.18.0.1/24"\n',
            "fwmark[0].address (line 3): expected a network without host bits, like "
            '"198.18.0.0/24", found "198.18.0.1/24"',
        ),
        (
            '[[fwmark]]\nmark = 1\naddress = "vip"\n',
            'fwmark[0].address (line 3): expected an address or network like "198.18.0.10" or '
            '"198.18.1.0/24", found "vip"',
        ),
        (
            '[[fwmark]]\nmark = 1\naddress = "198.18.0.1"\nports = [80, 80]\n',
            "fwmark[0].ports (line 4): expected each port once, found 80 twice",
        ),
        (
            '[[fwmark]]\nmark = 1\naddress = "198.18.0.1"\nports = []\n',
            "fwmark[0].ports (line 4): expected a non-empty array of ports like [80, 443], "
            "found []",
        ),
        (
            '[[snat]]\nsource = "198.18.1.0/24"\nto = "198.18.0.10"\n'
            'out_interface = "eth0.12345678901"\n',
            "snat[0].out_interface (line 4): expected an interface name of at most 15 bytes, "
            'found "eth0.12345678901"',
        ),
        (
            '[[masquerade]]\nsource = "198.18.1.0/24"\nout_interface = "eth 0"\n',
            "masquerade[0].out_interface (line 3): expected an interface name without / : quotes "
            'or spaces, found "eth 0"',
        ),
        (
            '[[snat]]\nsource = "198.18.1.0/24"\nto = "2001:db8::1"\n',
            "snat[0].to (line 3): expected an IPv4 address like source 198.18.1.0/24, "
            "found 2001:db8::1",
        ),
        (
            "[[policy_route]]\nfwmark = 1\ntable = 254\n",
            "policy_route[0].table (line 3): expected a table of your own, found 254 "
            "(the kernel's main)",
        ),
        (
            "[[policy_route]]\nfwmark = 1\ntable = 100\npriority = 32766\n",
            "policy_route[0].priority (line 4): expected a rule priority from 1 to 32765, "
            "found 32766",
        ),
        (
            '[network]\ntable = "my table"\n',
            "network.table (line 2): expected an nftables table name (a letter or _, then "
            'letters, digits, _ or -, at most 32), found "my table"',
        ),
    ],
)
def test_rule_field_errors(text: str, expected: str) -> None:
    assert _problems(text) == [expected]


def test_cross_checks_with_the_services() -> None:
    problems = _problems(
        """
[[virtual_server]]
fwmark = 80
family = "ipv6"

[[fwmark]]
mark = 81
address = "198.18.0.10"

[[fwmark]]
mark = 80
address = "198.18.0.10"

[[fwmark]]
mark = 80
address = "2001:db8::10"
protocol = "udp"

[[policy_route]]
fwmark = 7
table = 100
[[policy_route]]
fwmark = 8
table = 101
"""
    )
    assert problems == [
        "fwmark[0].mark (line 7): expected a mark that a fwmark virtual_server or a policy_route "
        "uses, found 81, which none does (packets would be marked for nothing)",
        "fwmark[1].address (line 12): mark 80 is used only by ipv6 services or routes: expected "
        "an IPv6 address, found 198.18.0.10/32",
        "fwmark[2].protocol (line 17): protocol only applies with ports: expected ports = [...] "
        "or no protocol, found protocol without ports",
        "policy_route[1].priority (line 22): expected a priority of its own, found 100 again "
        "(also "
        "policy_route[0], another fwmark or table)",
    ]


def test_a_policy_route_mark_needs_no_service() -> None:
    config = parse_config(
        '[[fwmark]]\nmark = 5\naddress = "198.18.5.0/24"\n'
        "[[policy_route]]\nfwmark = 5\ntable = 105\n"
    )
    assert config.fwmarks[0].master_only
    assert config.network == NetworkSettings()


REFERENCE = Path(__file__).parents[2] / "docs" / "configuration.md"


@pytest.mark.parametrize(
    "model", [NetworkSettings, FwmarkRule, SnatRule, MasqueradeRule, PolicyRoute]
)
def test_reference_documents_every_key(model: type[Any]) -> None:
    text = REFERENCE.read_text()
    for name, field in model.model_fields.items():
        key = field.alias or name
        assert f"| `{key}` |" in text, f"{model.__name__}.{key} is not in {REFERENCE.name}"
    for table in ("[network]", "[[fwmark]]", "[[snat]]", "[[masquerade]]", "[[policy_route]]"):
        assert f"## `{table}`" in text


VRRP_PEERS = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 42
unicast_peers = ["198.18.0.3", "198.18.0.2"]
accept_only_peers = true

[[vrrp_instance]]
name = "VI_6"
interface = "eth1"
vrid = 43
version = 3
primary_address = "fe80::1"
unicast_peers = ["fe80::2"]
accept_only_peers = true

[[vrrp_instance]]
name = "VI_2"
interface = "eth0"
vrid = 44
unicast_peers = ["198.18.0.2"]
"""


def test_vrrp_peer_filter_in_every_role_per_instance_that_asks() -> None:
    config = parse_config(VRRP_PEERS)
    for role in (Role.MASTER, Role.BACKUP, Role.FAULT):
        ruleset = compile_ruleset(config, role)
        assert [c.name for c in ruleset.chains] == ["vrrp_in"]
    chain = compile_ruleset(config, Role.BACKUP).chains[0]
    assert chain.spec() == ("filter", "input", 0, "accept")
    assert [r.key for r in chain.rules] == ["vrrp_instance[0]", "vrrp_instance[1]"]
    assert describe(compile_ruleset(config, Role.BACKUP)) == [
        'inet director vrrp_in: iifname "eth0" meta l4proto vrrp @th,8,8 42 '
        "ip saddr != { 198.18.0.2, 198.18.0.3 } counter drop",
        'inet director vrrp_in: iifname "eth1" meta l4proto vrrp @th,8,8 43 '
        "ip6 saddr != { fe80::2 } counter drop",
    ]
    saddr = chain.rules[1].expr[3]["match"]
    assert saddr["left"] == {"payload": {"protocol": "ip6", "field": "saddr"}}
    assert saddr["op"] == "!="
    without = parse_config(VRRP_PEERS.replace("accept_only_peers = true", ""))
    assert compile_ruleset(without, Role.MASTER).empty
