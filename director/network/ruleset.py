"""The nftables ruleset the director owns, as data: config + role -> :class:`Ruleset` -> a plan.

Pure: nothing here runs ``nft``; :mod:`director.network.nft` does, with the commands
:func:`plan` returns, in one transaction.

Choices (see docs/configuration.md, "Network rules"):

- **One table, family ``inet``**, named by ``[network] table`` (default ``director``). Both the
  marks and the NAT rules live in it: ``inet`` NAT chains exist since kernel 5.2 (the guest runs
  6.1, this host 6.18), so IPv4 and IPv6 rules share one table and one transaction replaces all
  of it. firewalld's tables are ``inet firewalld``/``ip firewalld``, docker's (iptables-nft)
  ``ip filter``/``ip nat``: no name is shared. Nothing outside our table is ever read or written.
- **Chain ``fwmark``**: ``type filter hook prerouting priority mangle`` (-150), before conntrack's
  DNAT (-100) and long before IPVS, which looks the mark up at LOCAL_IN (after routing), so the
  fwmark virtual service sees the mark on the first packet of a connection.
- **Chain ``nat_out``**: ``type nat hook postrouting priority srcnat`` (100): ``[[snat]]`` rules
  in order, then ``[[masquerade]]`` rules. NAT chains see only the first packet of a connection,
  so replies of IPVS NAT connections (conntrack entries IPVS already rewrote) are never SNATed.
- **Marks are set whole** (``meta mark set N``): IPVS matches the full 32-bit mark, so it cannot
  be a masked field. Choose marks below 0x4000 (16384): kube-proxy uses 0x4000 and 0x8000,
  Calico the upper 16 bits, Tailscale 0xff0000, wg-quick 0xca6c (51820); firewalld and docker
  set none by default.
- **Every rule carries a comment** ``<config key> <digest>``: the digest is over the rule's own
  expression, so comparing comments tells whether a chain already holds exactly what is wanted.
  A chain is the unit of change: unchanged chains are left alone (their counters go on); a
  changed chain is flushed and refilled; all of it in the one batch.
- **Master-only rules** (``master_only = true``, the default) exist only while the role is
  MASTER; a chain with no rule is not created, and a table with no chain is deleted.
- **Chain ``vrrp_in``**: ``type filter hook input priority filter`` (0), in every role: for each
  ``[[vrrp_instance]]`` with ``accept_only_peers = true``, VRRP (IP protocol 112) arriving on its
  interface for its VRID (the second byte of the VRRP header, ``@th,8,8``) from any address but
  its ``unicast_peers`` is counted and dropped, before the raw socket sees it (raw sockets are
  served after the input hook). Other VRIDs and interfaces are left alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from director.config.model import Config
from director.config.network import FwmarkRule, IPNetwork, MasqueradeRule, SnatRule
from director.config.vrrp import VrrpInstance
from director.role import Role

FAMILY = "inet"
JSON = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """One nftables rule: a key naming where it comes from in the config, and its expression."""

    key: str
    expr_json: str  # the expression list as canonical JSON (hashable)
    text: str  # how ``nft list`` would roughly show it, for logs and status

    @classmethod
    def of(cls, key: str, expr: Sequence[JSON], text: str) -> Rule:
        return cls(key, json.dumps(list(expr), sort_keys=True, separators=(",", ":")), text)

    @property
    def expr(self) -> list[JSON]:
        result: list[JSON] = json.loads(self.expr_json)
        return result

    @property
    def comment(self) -> str:
        digest = hashlib.sha256(self.expr_json.encode()).hexdigest()[:12]
        return f"{self.key} {digest}"


@dataclass(frozen=True)
class Chain:
    """A base chain of our table and its rules."""

    name: str
    type: str
    hook: str
    prio: int
    rules: tuple[Rule, ...] = ()

    def spec(self) -> tuple[str, str, int, str]:
        """What the kernel must match for the chain to count as the same: type, hook, prio."""
        return (self.type, self.hook, self.prio, "accept")


@dataclass(frozen=True)
class Ruleset:
    """Our nftables table: its chains."""

    table: str
    chains: tuple[Chain, ...] = ()
    family: str = FAMILY

    @property
    def empty(self) -> bool:
        return not self.chains

    def rules(self) -> list[Rule]:
        return [rule for chain in self.chains for rule in chain.rules]


@dataclass(frozen=True)
class ObservedChain:
    """A chain of our table as read from the kernel."""

    spec: tuple[str, str, int, str]
    comments: tuple[str, ...]  # one per rule, "" for a rule without a comment


@dataclass(frozen=True)
class ObservedTable:
    """Our table as ``nft -j list table`` shows it (None when the table does not exist)."""

    chains: Mapping[str, ObservedChain] = field(default_factory=dict)
    other_objects: int = 0  # sets, maps, flowtables...: we make none, so their presence is drift


MARK_CHAIN = ("fwmark", "filter", "prerouting", -150)
NAT_CHAIN = ("nat_out", "nat", "postrouting", 100)
VRRP_CHAIN = ("vrrp_in", "filter", "input", 0)
IPPROTO_VRRP = 112


def compile_ruleset(config: Config, role: Role) -> Ruleset:
    """The rules ``config`` wants in force while this director is ``role``."""
    master = role is Role.MASTER
    marks = [
        fwmark_rule(i, rule)
        for i, rule in enumerate(config.fwmarks)
        if master or not rule.master_only
    ]
    nat = [snat_rule(i, r) for i, r in enumerate(config.snats) if master or not r.master_only]
    nat += [
        masquerade_rule(i, r)
        for i, r in enumerate(config.masquerades)
        if master or not r.master_only
    ]
    vrrp = [
        vrrp_peers_rule(i, vi)
        for i, vi in enumerate(config.vrrp_instances)
        if vi.accept_only_peers and vi.unicast_peers
    ]
    chains = []
    for (name, kind, hook, prio), rules in (
        (MARK_CHAIN, marks),
        (NAT_CHAIN, nat),
        (VRRP_CHAIN, vrrp),
    ):
        if rules:
            chains.append(Chain(name, kind, hook, prio, tuple(rules)))
    return Ruleset(config.network.table, tuple(chains))


def _ip(network: IPNetwork) -> str:
    return "ip" if network.version == 4 else "ip6"


def _addr_match(network: IPNetwork, field_name: str) -> JSON:
    if network.prefixlen == network.max_prefixlen:
        right: Any = str(network.network_address)
    else:
        right = {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}
    left = {"payload": {"protocol": _ip(network), "field": field_name}}
    return {"match": {"op": "==", "left": left, "right": right}}


def _oif(name: str) -> JSON:
    return {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": name}}


def fwmark_rule(index: int, rule: FwmarkRule) -> Rule:
    expr = [_addr_match(rule.address, "daddr")]
    text = f"{_ip(rule.address)} daddr {rule.address}"
    if rule.ports is not None:
        ports: Any = rule.ports[0] if len(rule.ports) == 1 else {"set": list(rule.ports)}
        left = {"payload": {"protocol": rule.protocol, "field": "dport"}}
        expr.append({"match": {"op": "==", "left": left, "right": ports}})
        shown = ", ".join(map(str, rule.ports))
        text += f" {rule.protocol} dport {{ {shown} }}"
    expr += [
        {"counter": None},
        {"mangle": {"key": {"meta": {"key": "mark"}}, "value": rule.mark}},
    ]
    return Rule.of(f"fwmark[{index}]", expr, f"{text} counter meta mark set {rule.mark}")


def snat_rule(index: int, rule: SnatRule) -> Rule:
    expr = [_addr_match(rule.source, "saddr")]
    text = f"{_ip(rule.source)} saddr {rule.source}"
    if rule.out_interface is not None:
        expr.append(_oif(rule.out_interface))
        text += f' oifname "{rule.out_interface}"'
    family = _ip(rule.source)
    expr += [{"counter": None}, {"snat": {"family": family, "addr": str(rule.to)}}]
    return Rule.of(f"snat[{index}]", expr, f"{text} counter snat {family} to {rule.to}")


def masquerade_rule(index: int, rule: MasqueradeRule) -> Rule:
    expr = [_addr_match(rule.source, "saddr")]
    text = f"{_ip(rule.source)} saddr {rule.source}"
    if rule.out_interface is not None:
        expr.append(_oif(rule.out_interface))
        text += f' oifname "{rule.out_interface}"'
    expr += [{"counter": None}, {"masquerade": None}]
    return Rule.of(f"masquerade[{index}]", expr, f"{text} counter masquerade")


def vrrp_peers_rule(index: int, vi: VrrpInstance) -> Rule:
    """Drop (and count) the instance's VRRP from anyone but its unicast peers."""
    ip = "ip" if vi.family == 4 else "ip6"
    peers = sorted({str(p) for p in vi.unicast_peers})
    vrid: JSON = {"payload": {"base": "th", "offset": 8, "len": 8}}
    expr: list[JSON] = [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": vi.interface}},
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": IPPROTO_VRRP}},
        {"match": {"op": "==", "left": vrid, "right": vi.vrid}},
        {
            "match": {
                "op": "!=",
                "left": {"payload": {"protocol": ip, "field": "saddr"}},
                "right": {"set": peers},
            }
        },
        {"counter": None},
        {"drop": None},
    ]
    text = (
        f'iifname "{vi.interface}" meta l4proto vrrp @th,8,8 {vi.vrid} '
        f"{ip} saddr != {{ {', '.join(peers)} }} counter drop"
    )
    return Rule.of(f"vrrp_instance[{index}]", expr, text)


# --- reading back ------------------------------------------------------------------------------


def parse_table(listing: Mapping[str, Any], table: str, family: str = FAMILY) -> ObservedTable:
    """``nft -j list table FAMILY TABLE`` output -> what :func:`plan` compares against."""
    specs: dict[str, tuple[str, str, int, str]] = {}
    comments: dict[str, list[str]] = {}
    other = 0
    for item in listing.get("nftables", []):
        if not isinstance(item, Mapping) or "metainfo" in item:
            continue
        kind, body = next(iter(item.items()))
        if not isinstance(body, Mapping) or body.get("table", table) != table:
            continue
        if body.get("family", family) != family:
            continue
        if kind == "table":
            continue
        if kind == "chain":
            spec = (
                str(body.get("type", "")),
                str(body.get("hook", "")),
                int(body.get("prio", 0)),
                str(body.get("policy", "")),
            )
            specs[str(body["name"])] = spec
            comments.setdefault(str(body["name"]), [])
        elif kind == "rule":
            comments.setdefault(str(body["chain"]), []).append(str(body.get("comment", "")))
        else:
            other += 1
    chains = {
        name: ObservedChain(specs.get(name, ("", "", 0, "")), tuple(found))
        for name, found in comments.items()
    }
    return ObservedTable(chains, other)


# --- planning ----------------------------------------------------------------------------------


def _table(ruleset: Ruleset) -> JSON:
    return {"family": ruleset.family, "name": ruleset.table}


def _chain_cmds(ruleset: Ruleset, chain: Chain) -> list[JSON]:
    add = {"add": {"chain": {**_chain_obj(ruleset, chain.name), **_hook(chain)}}}
    return [add, *_rule_cmds(ruleset, chain)]


def _chain_obj(ruleset: Ruleset, name: str) -> JSON:
    return {"family": ruleset.family, "table": ruleset.table, "name": name}


def _hook(chain: Chain) -> JSON:
    return {"type": chain.type, "hook": chain.hook, "prio": chain.prio, "policy": "accept"}


def _rule_cmds(ruleset: Ruleset, chain: Chain) -> list[JSON]:
    return [
        {
            "add": {
                "rule": {
                    "family": ruleset.family,
                    "table": ruleset.table,
                    "chain": chain.name,
                    "comment": rule.comment,
                    "expr": rule.expr,
                }
            }
        }
        for rule in chain.rules
    ]


def full_replace(ruleset: Ruleset) -> list[JSON]:
    """The whole table replaced in one batch (``add``, ``delete``, ``add``, then its contents)."""
    table = _table(ruleset)
    cmds: list[JSON] = [{"add": {"table": table}}, {"delete": {"table": table}}]
    if ruleset.empty:
        return cmds
    cmds.append({"add": {"table": table}})
    for chain in ruleset.chains:
        cmds += _chain_cmds(ruleset, chain)
    return cmds


def plan(desired: Ruleset, observed: ObservedTable | None) -> list[JSON]:
    """The nftables commands (one batch) that turn ``observed`` into ``desired``; [] if equal.

    Unchanged chains are not touched; a changed chain is flushed and refilled; a chain whose
    hook/type/priority differs is deleted and created again; chains we no longer want go.
    """
    if observed is None:
        return full_replace(desired)[2:] if not desired.empty else []
    if desired.empty:
        return [{"delete": {"table": _table(desired)}}]
    if observed.other_objects:
        return full_replace(desired)
    cmds: list[JSON] = []
    wanted = {chain.name: chain for chain in desired.chains}
    for name in sorted(set(observed.chains) - set(wanted)):
        obj = _chain_obj(desired, name)
        cmds += [{"flush": {"chain": obj}}, {"delete": {"chain": obj}}]
    for chain in desired.chains:
        seen = observed.chains.get(chain.name)
        if seen is None:
            cmds += _chain_cmds(desired, chain)
        elif seen.spec != chain.spec():
            obj = _chain_obj(desired, chain.name)
            cmds += [{"flush": {"chain": obj}}, {"delete": {"chain": obj}}]
            cmds += _chain_cmds(desired, chain)
        elif seen.comments != tuple(rule.comment for rule in chain.rules):
            cmds.append({"flush": {"chain": _chain_obj(desired, chain.name)}})
            cmds += _rule_cmds(desired, chain)
    return cmds


def batch(commands: Iterable[JSON]) -> JSON:
    """The ``nft -j -f`` document for ``commands``."""
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}


def describe(ruleset: Ruleset) -> list[str]:
    """One line per rule, for logs and ``directorctl rules --planned``."""
    return [
        f"{ruleset.family} {ruleset.table} {chain.name}: {rule.text}"
        for chain in ruleset.chains
        for rule in chain.rules
    ]
