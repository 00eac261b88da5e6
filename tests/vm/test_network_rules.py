"""The Exchange example end to end on the real kernel: ``directord`` runs
docs/examples/exchange.toml as is, its nftables marks feed the fwmark services.

    client (198.18.0.2/24) --eth0/c0-- director (198.18.0.1/24; VIPs .10 .11 .12 on c0)
                                          | br0 198.18.1.1/24
                              ex1 198.18.1.11 --+-- ex2 198.18.1.12   (default via 198.18.1.1)

Each real server answers on 80, 443, 25, 2525, 587 and 3389 with its name, the client address
it saw and the local address:port. Without VRRP the daemon is master: the master-only rules are
in.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.ipvsadm import ipvsadm
from tests.helpers.netns import Background, Namespace, Topology

pytestmark = pytest.mark.vm

PY = sys.executable
EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "exchange.toml"
PEER = [PY, "-m", "tests.network.peer"]


@dataclass
class Lab:
    client: Namespace
    director: Namespace
    ex1: Namespace
    ex2: Namespace
    state: Path
    config: Path  # a copy of the example, so that a reload can change it
    peers: list[Background]  # started, perhaps not listening yet

    def ask(self, ns: Namespace, *targets: str) -> list[list[str]]:
        """Connect to each "ADDRESS:PORT" in turn (one process); each answer split in words."""
        first, port = targets[0].rsplit(":", 1)
        argv = [*PEER, "ask", first, port, *targets[1:], "--timeout", "10"]
        return [line.split() for line in ns.run(*argv, check=False).stdout.splitlines()]

    def start_daemon(self) -> Background:
        return self.director.spawn(
            PY, "-m", "director.daemon", "--config", str(self.config),
            "--state-dir", str(self.state), "--log-format", "json",
        )  # fmt: skip

    def table(self) -> str:
        return self.director.run("nft", "list", "table", "inet", "director", check=False).stdout

    def handles(self) -> dict[str, int]:
        """Our rules' kernel handles by config key: a re-created rule gets a new handle."""
        out = self.director.run("nft", "-j", "list", "table", "inet", "director").stdout
        items = json.loads(out)["nftables"]
        return {i["rule"]["comment"].split()[0]: i["rule"]["handle"] for i in items if "rule" in i}


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 120, job: Background | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{job.output()}" if job else ""))


def _listening(job: Background) -> Callable[[], bool]:
    def check() -> bool:
        assert job.proc.poll() is None, job.output()
        return "listening" in job.output()

    return check


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Topology() as topo:
        client, director, ex1, ex2 = (
            topo.namespace(n) for n in ("client", "director", "ex1", "ex2")
        )
        topo.veth(client, "eth0", director, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
        for vip in ("198.18.0.10/32", "198.18.0.11/32", "198.18.0.12/32"):
            director.add_address("c0", vip)
        director.bridge("br0")
        director.add_address("br0", "198.18.1.1/24")
        peers = []
        for ns, address, name in ((ex1, "198.18.1.11", "ex1"), (ex2, "198.18.1.12", "ex2")):
            topo.attach(ns, "eth0", director, "br0", addr=f"{address}/24")
            ns.add_route("default", "198.18.1.1")
            ports = ("443", "25", "2525", "587", "3389")
            peers.append(ns.spawn(*PEER, "serve", "0.0.0.0", "80", name, *ports))
        peers.append(client.spawn(*PEER, "serve", "198.18.0.2", "9000", "outside"))
        config = tmp_path / "exchange.toml"
        config.write_text(EXAMPLE.read_text())
        yield Lab(client, director, ex1, ex2, tmp_path / "state", config, peers)


def test_exchange_example_end_to_end(lab: Lab) -> None:
    daemon = lab.start_daemon()  # python starts slowly in the guest: in parallel with the peers
    for job in lab.peers:
        wait_for("a peer", _listening(job))
    wait_for("the marks", lambda: "meta mark set 0x00000050" in lab.table(), job=daemon)
    wait_for(
        "the IPVS table", lambda: "FWM  80" in ipvsadm("-Ln", netns=lab.director.name), job=daemon
    )
    table = lab.table()
    assert "type filter hook prerouting priority mangle; policy accept;" in table
    assert "snat ip to 198.18.0.10" in table

    # fwmark 80 + persistence: every protocol of one client goes to one server; the management
    # marks reach the single server each names (and only port 3389 is marked); SNAT: a real
    # server's own connection reaches the outside from the VIP
    vip = "198.18.0.10"
    ports = (443, 25, 80, 2525, 587, 25, 443)
    answers = lab.ask(
        lab.client, *(f"{vip}:{p}" for p in ports), "198.18.0.11:3389", "198.18.0.12:3389",
        "198.18.0.11:443",
    )  # fmt: skip
    server = answers[0][0]
    assert server in ("ex1", "ex2"), answers
    for port, answer in zip(ports, answers, strict=False):
        # the same server, the client's own address, the packet's own port (real port 0)
        assert answer == [server, "198.18.0.2", f"198.18.1.1{server[-1]}:{port}"], answers
    assert answers[len(ports)][:2] == ["ex1", "198.18.0.2"]
    assert answers[len(ports) + 1][:2] == ["ex2", "198.18.0.2"]
    assert answers[len(ports) + 2] == ["-"]
    assert lab.ask(lab.ex2, "198.18.0.2:9000") == [["outside", "198.18.0.10", "198.18.0.2:9000"]]

    # a reload (SIGHUP) that moves the SNAT refills only that chain, in one transaction
    before = lab.handles()
    lab.config.write_text(EXAMPLE.read_text().replace('to = "198.18.0.10"', 'to = "198.18.0.11"'))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for("the new SNAT", lambda: "snat ip to 198.18.0.11" in lab.table(), job=daemon)
    after = lab.handles()
    assert [after[k] for k in ("fwmark[0]", "fwmark[1]", "fwmark[2]")] == [
        before[k] for k in ("fwmark[0]", "fwmark[1]", "fwmark[2]")
    ]
    assert after["snat[0]"] != before["snat[0]"]
    assert lab.ask(lab.ex1, "198.18.0.2:9000") == [["outside", "198.18.0.11", "198.18.0.2:9000"]]

    # the kernel counted them, and directorctl shows it
    shown = lab.director.run(PY, "-m", "director.cli", "rules", "--config", str(lab.config)).stdout
    assert "table inet director {" in shown
    assert "counter packets 0 bytes 0 meta mark set 0x00000050" not in shown
    assert "policy routes (proto 209): none" in shown
    conns = ipvsadm("-Lnc", netns=lab.director.name)
    assert "198.18.0.2" in conns

    # a clean stop keeps the rules (keep_table_on_stop = true), as it keeps the IPVS table
    kept = lab.handles()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=60) == 0, daemon.output()
    assert lab.handles() == kept
    assert "snat ip to 198.18.0.11" in lab.table()
    assert lab.ask(lab.client, f"{vip}:25")[0][0] == server
    assert '"event": "rules_synced"' in daemon.output()
