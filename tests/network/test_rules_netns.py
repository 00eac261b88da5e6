"""The network rules with real packets, on this machine's kernel, in network namespaces.

    client / outside (198.18.0.2/24, no route to 198.18.1.0/24)
        |  eth0 -- c0
    director (198.18.0.1/24 + VIP 198.18.0.10/32 on c0; 198.18.1.1/24 on s0; forwarding on;
        |        a foreign table "ip probe" counts packets by mark)
        |  s0 -- eth0
    server (198.18.1.11/24, default via 198.18.1.1)

The service under test runs in this process; its ``nft`` runs in the director namespace
(``ip netns exec``) and its netlink socket is opened there (pyroute2 ``netns=``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from director.config import Config, parse_config
from director.config.network import SnatRule
from director.network import NetworkRules, Nft, NftError, PolicyRoutes
from director.role import Role, RoleBroadcast
from tests.helpers.netns import Background, Namespace, Topology

pytestmark = pytest.mark.netns

PY = sys.executable
PROBE = """
table ip probe {
    chain pre {
        type filter hook prerouting priority -100; policy accept;
        meta mark 80 tcp dport 443 counter
        meta mark 0 tcp dport 22 counter
    }
}
"""
CONFIG = """
[[virtual_server]]
name = "exchange"
fwmark = 80

[[fwmark]]
mark = 80
address = "198.18.0.10"
ports = [80, 443]

[[snat]]
source = "198.18.1.0/24"
to = "198.18.0.10"
out_interface = "c0"
"""


@dataclass
class Lab:
    topo: Topology
    client: Namespace
    director: Namespace
    server: Namespace
    outside: Background

    def service(self, config: Config) -> NetworkRules:
        nft = Nft(self.director.argv("nft"))
        return NetworkRules(config, nft, PolicyRoutes(self.director.name), sysctl_root=None)

    def nft_json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.director.run("nft", "-j", *args).stdout)
        return data

    def table(self) -> str:
        return self.director.run("nft", "list", "table", "inet", "director", check=False).stdout

    def handles(self) -> dict[str, int]:
        """Our rules' kernel handles by config key: a re-created rule gets a new handle."""
        items = self.nft_json("list", "table", "inet", "director")["nftables"]
        return {i["rule"]["comment"].split()[0]: i["rule"]["handle"] for i in items if "rule" in i}

    def probe_counts(self) -> list[int]:
        """Packets counted by the foreign probe table: [mark 80 to :443, mark 0 to :22]."""
        found = []
        for item in self.nft_json("list", "table", "ip", "probe")["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    found.append(expr["counter"]["packets"])
        return found

    def outbound(self) -> str:
        """The server connects out to the outside peer; the peer's answer, or "-" if it failed."""
        done = self.server.run(
            PY, "-m", "tests.network.peer", "ask", "198.18.0.2", "9000", "--timeout", "1.5",
            check=False,
        )  # fmt: skip
        return done.stdout.strip()


def _wait_listening(job: Background) -> None:
    deadline = time.monotonic() + 20
    while "listening" not in job.output():
        assert job.proc.poll() is None, job.output()
        assert time.monotonic() < deadline, "peer did not start"
        time.sleep(0.05)


@pytest.fixture
def lab(topology: Topology) -> Lab:
    client, director, server = (topology.namespace(n) for n in ("client", "director", "server"))
    topology.veth(client, "eth0", director, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
    director.add_address("c0", "198.18.0.10/32")
    topology.veth(server, "eth0", director, "s0", a_addr="198.18.1.11/24", b_addr="198.18.1.1/24")
    server.add_route("default", "198.18.1.1")
    director.sysctl("net.ipv4.ip_forward", "1")
    director.run("nft", "-f", "-", stdin=PROBE)
    outside = client.spawn(PY, "-m", "tests.network.peer", "serve", "198.18.0.2", "9000", "outside")
    _wait_listening(outside)
    return Lab(topology, client, director, server, outside)


def _syn(ns: Namespace, address: str, port: int) -> None:
    """One connection attempt (refused or not: only the packet matters)."""
    ns.run(
        PY, "-m", "tests.network.peer", "ask", address, str(port), "--timeout", "0.5", check=False
    )


@pytest.mark.asyncio
async def test_marks_snat_and_role(lab: Lab) -> None:
    service = lab.service(parse_config(CONFIG))
    assert lab.outbound() == "-"  # no SNAT: the outside cannot answer 198.18.1.11
    await service.set_role(Role.MASTER)
    assert "meta mark set 0x00000050" in lab.table()

    _syn(lab.client, "198.18.0.10", 443)
    _syn(lab.client, "198.18.0.10", 22)
    marked, unmarked = lab.probe_counts()
    assert marked >= 1  # the SYN to VIP:443 carried mark 80 at prerouting -100
    assert unmarked >= 1  # the one to VIP:22 did not
    assert lab.outbound() == "outside 198.18.0.10 198.18.0.2:9000"  # SNAT to the VIP

    await service.set_role(Role.BACKUP)
    assert lab.table() == ""  # only master-only rules: the table is gone
    assert lab.outbound() == "-"
    before = lab.probe_counts()
    _syn(lab.client, "198.18.0.10", 443)
    assert lab.probe_counts()[0] == before[0]  # no longer marked

    await service.set_role(Role.MASTER)
    assert lab.outbound() == "outside 198.18.0.10 198.18.0.2:9000"
    assert "table ip probe" in lab.director.run("nft", "list", "ruleset").stdout


@pytest.mark.asyncio
async def test_masquerade_and_always_rules(lab: Lab) -> None:
    config = parse_config(
        CONFIG.replace("[[snat]]", "[[masquerade]]").replace('to = "198.18.0.10"\n', "")
        + "master_only = false\n"
    )
    service = lab.service(config)
    await service.set_role(Role.BACKUP)  # the masquerade rule is always in force
    assert lab.outbound() == "outside 198.18.0.1 198.18.0.2:9000"  # the director's c0 address
    text = lab.table()
    assert "masquerade" in text
    assert "meta mark set" not in text  # the fwmark rule is master-only


@pytest.mark.asyncio
async def test_rejected_rule_keeps_the_previous_ruleset(lab: Lab) -> None:
    config = parse_config(CONFIG)
    service = lab.service(config)
    await service.set_role(Role.MASTER)
    before = lab.nft_json("list", "table", "inet", "director")
    # An interface name nft refuses (config validation would stop it; bypass it here).
    bad = SnatRule.model_construct(
        source=config.snats[0].source,
        to=config.snats[0].to,
        out_interface="a-name-far-too-long",
        master_only=True,
    )
    changed = config.model_copy(update={"snats": (bad,), "fwmarks": ()})
    with pytest.raises(NftError) as caught:
        await service.apply(changed)
    message = str(caught.value)
    assert "String exceeds maximum length of 16" in message
    assert "the previous ruleset stays in force" in message
    assert '(in snat[0]: ip saddr 198.18.1.0/24 oifname "a-name-far-too-long"' in message
    assert "table inet director" in message
    assert lab.nft_json("list", "table", "inet", "director") == before  # handles and all
    assert lab.outbound() == "outside 198.18.0.10 198.18.0.2:9000"


@pytest.mark.asyncio
async def test_reload_applies_only_the_difference_in_one_transaction(lab: Lab) -> None:
    service = lab.service(parse_config(CONFIG))
    await service.set_role(Role.MASTER)
    first = lab.handles()
    lab.director.run("ip", "address", "add", "198.18.0.20/32", "dev", "c0")
    batches = service.nft.batches
    await service.apply(parse_config(CONFIG.replace('to = "198.18.0.10"', 'to = "198.18.0.20"')))
    assert service.nft.batches == batches + 1
    second = lab.handles()
    assert second["fwmark[0]"] == first["fwmark[0]"]  # the mark chain was not touched
    assert second["snat[0]"] != first["snat[0]"]
    assert lab.outbound() == "outside 198.18.0.20 198.18.0.2:9000"
    assert await service.sync() == []  # planning again right after applying: nothing to do
    assert service.nft.batches == batches + 1
    # a restarted daemon adopts the table as it is: no transaction, handles and counters kept
    restarted = lab.service(service.config)
    await restarted.set_role(Role.MASTER)
    assert restarted.nft.batches == 0
    assert lab.handles() == second
    assert (
        "meta mark 0x00000050 tcp dport 443 counter"
        in lab.director.run("nft", "list", "table", "ip", "probe").stdout
    )  # the foreign table is still there, rules and all


@pytest.mark.asyncio
async def test_drift_is_repaired_and_removing_the_config_removes_the_table(lab: Lab) -> None:
    service = lab.service(parse_config(CONFIG))
    await service.set_role(Role.MASTER)
    lab.director.run("nft", "flush", "chain", "inet", "director", "nat_out")
    assert lab.outbound() == "-"
    assert len(await service.sync()) == 2  # flush + the one rule again
    assert lab.outbound() == "outside 198.18.0.10 198.18.0.2:9000"
    probe = lab.probe_counts()

    await service.apply(Config())
    assert lab.table() == ""
    assert lab.outbound() == "-"
    assert lab.probe_counts() == probe  # the foreign table and its counters are untouched
    ruleset = lab.director.run("nft", "list", "ruleset").stdout
    assert "table ip probe" in ruleset
    assert "director" not in ruleset


@pytest.mark.asyncio
async def test_policy_route_delivers_marked_packets_locally(lab: Lab) -> None:
    # A DR / transparent setup: packets to 198.18.5.50:80 (no address here) are marked 80 and
    # policy-routed to the local table, so a listener on 0.0.0.0 takes them.
    lab.client.add_route("198.18.5.0/24", "198.18.0.1")
    # (the listener is IP_TRANSPARENT, as a transparent proxy's is: the kernel only lets such a
    # socket answer from an address that is not local)
    listener = lab.director.spawn(
        PY, "-m", "tests.network.peer", "serve", "0.0.0.0", "80", "director", "--transparent"
    )
    _wait_listening(listener)
    config = parse_config(
        """
[[fwmark]]
mark = 80
address = "198.18.5.50"
ports = [80]
master_only = false

[[policy_route]]
fwmark = 80
table = 100
priority = 100
family = "both"
"""
    )
    service = lab.service(Config())
    await service.set_role(Role.BACKUP)
    ask = [PY, "-m", "tests.network.peer", "ask", "198.18.5.50", "80", "--timeout", "1.5"]
    assert lab.client.run(*ask, check=False).returncode == 1  # no route on the director
    lab.director.run("ip", "rule", "add", "fwmark", "7", "table", "107", "pref", "107")
    await service.apply(config)
    rules = lab.director.ip("rule")
    assert "100:\tfrom all fwmark 0x50 lookup 100 proto 209" in rules
    assert "local default dev lo proto 209 scope host" in lab.director.ip(
        "route", "show", "table", "100"
    )
    assert "fwmark 0x50 lookup 100 proto 209" in lab.director.ip("-6", "rule")
    assert lab.client.run(*ask).stdout.strip() == "director 198.18.0.2 198.18.5.50:80"

    await service.apply(Config())
    rules = lab.director.ip("rule")
    assert "lookup 100" not in rules
    assert "fwmark 0x7 lookup 107" in rules  # an operator's own rule is never touched
    assert lab.director.ip("route", "show", "table", "100") == ""
    assert lab.client.run(*ask, check=False).returncode == 1


@pytest.mark.asyncio
async def test_directorctl_rules_shows_the_installed_ruleset(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "director.toml"
    path.write_text(CONFIG + "[[policy_route]]\nfwmark = 80\ntable = 100\n")
    ctl = [PY, "-m", "director.cli", "rules", "--config", str(path)]
    assert "no table inet director" in lab.director.run(*ctl).stdout
    service = lab.service(parse_config(path.read_text()))
    await service.set_role(Role.MASTER)
    _syn(lab.client, "198.18.0.10", 443)
    shown = lab.director.run(*ctl).stdout
    assert "table inet director {" in shown
    assert "type filter hook prerouting priority mangle; policy accept;" in shown
    assert 'snat ip to 198.18.0.10 comment "snat[0] ' in shown
    assert "counter packets 0 " not in shown.split("meta mark set")[0].splitlines()[-1]
    assert "policy routes (proto 209):\n  local 0.0.0.0/0 dev lo table 100\n" in shown
    assert "  ipv4 rule pref 100 fwmark 80 table 100" in shown
    as_json = json.loads(lab.director.run(*ctl, "--json").stdout)
    assert as_json["policy_routes"][1] == "ipv4 rule pref 100 fwmark 80 table 100"
    assert any("rule" in item for item in as_json["table"]["nftables"])
    planned = lab.director.run(*ctl, "--planned", "--role", "backup").stdout
    assert planned == (
        "no rules for role backup\npolicy route: local 0.0.0.0/0 dev lo table 100\n"
        "policy route: ipv4 rule pref 100 fwmark 80 table 100\n"
    )
    await service.remove()
    assert lab.director.ip("rule").count("lookup 100") == 0


@pytest.mark.asyncio
async def test_ipv6_marks_and_snat(lab: Lab) -> None:
    lab.client.add_address("eth0", "2001:db8::2/64")
    lab.director.add_address("c0", "2001:db8::1/64")
    lab.director.add_address("c0", "2001:db8::10/128")
    lab.director.add_address("s0", "2001:db8:1::1/64")
    lab.server.add_address("eth0", "2001:db8:1::11/64")
    lab.server.add_route("default", "2001:db8:1::1")
    lab.director.sysctl("net.ipv6.conf.all.forwarding", "1")
    lab.director.run("nft", "-f", "-", stdin=PROBE.replace("ip probe", "ip6 probe6"))
    outside = lab.client.spawn(PY, "-m", "tests.network.peer", "serve", "::", "9006", "outside")
    _wait_listening(outside)
    config = parse_config(
        CONFIG.replace("198.18.0.10", "2001:db8::10")
        .replace("198.18.1.0/24", "2001:db8:1::/64")
        .replace("fwmark = 80", 'fwmark = 80\nfamily = "ipv6"')
    )
    service = lab.service(config)
    await service.set_role(Role.MASTER)
    assert "ip6 daddr 2001:db8::10 tcp dport { 80, 443 }" in lab.table()
    _syn(lab.client, "2001:db8::10", 443)
    _syn(lab.client, "2001:db8::10", 22)
    listing = lab.nft_json("list", "table", "ip6", "probe6")["nftables"]
    counts = [e["counter"]["packets"] for i in listing for e in i.get("rule", {}).get("expr", [])
              if "counter" in e]  # fmt: skip
    assert counts[0] >= 1 and counts[1] >= 1
    answer = lab.server.run(
        PY, "-m", "tests.network.peer", "ask", "2001:db8::2", "9006", "--timeout", "1.5",
        check=False,
    ).stdout.strip()  # fmt: skip
    assert answer == "outside 2001:db8::10 2001:db8::2:9006"  # SNAT to the IPv6 VIP


@pytest.mark.asyncio
async def test_follows_the_role_broadcast_and_a_renamed_table(lab: Lab) -> None:
    service = lab.service(parse_config(CONFIG))
    # Until a role is known, the table is left as found (a restarting master keeps its rules).
    lab.director.run("nft", "add", "table", "inet", "director")
    lab.director.run("nft", "add", "chain", "inet", "director", "leftover")
    await service.apply(parse_config(CONFIG))
    assert "chain leftover" in lab.table()

    roles = RoleBroadcast(Role.BACKUP)
    roles.follow("rules", service.set_role)
    await roles.publish(Role.MASTER)
    assert "chain leftover" not in lab.table()
    assert lab.outbound() == "outside 198.18.0.10 198.18.0.2:9000"
    await roles.publish(Role.FAULT)
    assert lab.table() == ""

    await roles.publish(Role.MASTER)
    batches = service.nft.batches
    renamed = parse_config('[network]\ntable = "lvs"\n' + CONFIG)
    service.config_changed(renamed)  # as the daemon's reload calls it, on the loop
    service.config_changed(renamed)
    assert service._apply_task is not None
    await service._apply_task
    assert service.nft.batches == batches + 1  # the second found nothing left to do
    assert lab.table() == ""  # the old table went in the same transaction
    listed = lab.director.run("nft", "list", "table", "inet", "lvs").stdout
    assert "snat ip to 198.18.0.10" in listed
    assert lab.outbound() == "outside 198.18.0.10 198.18.0.2:9000"


@pytest.mark.asyncio
async def test_policy_routes_make_strict_rp_filter_loose(lab: Lab, tmp_path: Path) -> None:
    conf = tmp_path / "net" / "ipv4" / "conf" / "all"
    conf.mkdir(parents=True)
    (conf / "rp_filter").write_text("1\n")
    text = "[[policy_route]]\nfwmark = 9\ntable = 109\n"
    nft = Nft(lab.director.argv("nft"))
    service = NetworkRules(parse_config(text), nft, PolicyRoutes(lab.director.name), tmp_path)
    await service.set_role(Role.MASTER)
    assert (conf / "rp_filter").read_text().strip() == "2"
    (conf / "rp_filter").write_text("1\n")
    keep = NetworkRules(
        parse_config('[network]\nrp_filter = "keep"\n' + text),
        nft,
        PolicyRoutes(lab.director.name),
        tmp_path,
    )
    await keep.set_role(Role.MASTER)
    assert (conf / "rp_filter").read_text().strip() == "1"
    await keep.remove()


@pytest.mark.asyncio
async def test_a_role_change_that_changes_no_rule_runs_no_nft(lab: Lab) -> None:
    """A failover must not wait for nft: without rules (or with none that follow the role) a
    role change starts no nft process; the periodic resync still looks, and repairs."""
    service = lab.service(Config())
    await service.set_role(Role.MASTER)
    runs = service.nft.runs
    await service.set_role(Role.BACKUP)
    await service.set_role(Role.MASTER)
    assert service.nft.runs == runs
    assert await service.sync() == []
    assert service.nft.runs == runs + 1  # the resync listed the table
    # with master-only rules, the role change still applies them at once
    await service.apply(parse_config(CONFIG))
    assert "snat ip to 198.18.0.10" in lab.table()
    runs = service.nft.runs
    await service.set_role(Role.BACKUP)
    assert service.nft.runs > runs
    assert "snat ip to" not in lab.table()
