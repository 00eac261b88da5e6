"""Feedback agents driving the real kernel's IPVS weights through ``directord``.

client --- director (VIP 198.18.0.10:80, NAT) --- bridge --- web1 (agent on :3009), web2

The agent on web1 answers whatever is in a file the test writes; ``ipvsadm -Ln`` (an
independent reader) shows the weight the kernel has.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from director import cli
from tests.helpers.netns import Background, Namespace, Topology

pytestmark = pytest.mark.vm

PY = sys.executable
CONFIG = """
[daemon]
state_dir = "{state}"
control_socket = "{sock}"
metrics_address = ""

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 80
scheduler = "wrr"
  [virtual_server.agent]
  port = 3009
  interval = 0.3
  timeout = 0.3
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  weight = 100
  [[virtual_server.real_server]]
  address = "198.18.1.12"
  weight = 100
  agent = {{ enabled = false }}
"""
AGENT = """
import pathlib, socket, sys
answer = pathlib.Path(sys.argv[1])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((sys.argv[2], 3009))
listener.listen(16)
while True:
    conn, _ = listener.accept()
    try:
        conn.sendall(answer.read_bytes())
    except OSError:
        pass
    conn.close()
"""


@dataclass
class Lab:
    director: Namespace
    web1: Namespace
    answer: Path
    state: Path
    sock: Path
    agent: Background | None = None

    def ctl(self, *argv: str) -> str:
        """directorctl in this process (no interpreter start-up in the slow guest)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main(["--socket", str(self.sock), *argv])
        assert code == 0, out.getvalue()
        return out.getvalue()

    def say(self, line: str) -> None:
        self.answer.write_text(line)

    def weight(self) -> int | None:
        """web1's weight in the kernel table, None when it is not in it."""
        table = self.director.run("ipvsadm", "-Ln").stdout
        m = re.search(r"->\s+198\.18\.1\.11:80\s+\S+\s+(\d+)", table)
        return int(m.group(1)) if m else None

    def start_agent(self) -> None:
        self.agent = self.web1.spawn(PY, "-c", AGENT, str(self.answer), "198.18.1.11")
        until("the agent to listen", lambda: ":3009" in self.web1.run("ss", "-ltnH").stdout, 60)


def until(what: str, check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Topology() as topo:
        client, director, switch = (topo.namespace(n) for n in ("client", "director", "switch"))
        switch.bridge("br0")
        topo.veth(client, "eth0", director, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
        topo.attach(director, "s0", switch, "br0", addr="198.18.1.1/24")
        web1 = topo.namespace("web1")
        topo.attach(web1, "eth0", switch, "br0", addr="198.18.1.11/24")
        web2 = topo.namespace("web2")
        topo.attach(web2, "eth0", switch, "br0", addr="198.18.1.12/24")
        lab = Lab(director, web1, tmp_path / "answer", tmp_path / "state", tmp_path / "ctl.sock")
        lab.say("100%\n")
        lab.start_agent()
        config = tmp_path / "director.toml"
        config.write_text(CONFIG.format(state=lab.state, sock=lab.sock))
        daemon = director.spawn(
            PY, "-m", "director.daemon", "-c", str(config), "--log-format", "json"
        )
        until("the first sync", lambda: (lab.state / "status.json").exists(), 120)
        yield lab
        print(daemon.output()[-3000:])


def test_agent_answers_change_the_kernel_weight(lab: Lab) -> None:
    until("weight 100", lambda: lab.weight() == 100, 30)
    figures = []
    for line, weight in (
        ("50%\n", 50),
        ("drain\n", 0),  # quiesced: still in the table
        ("maint\n", None),  # taken out
        ("ready 75%\n", 75),
        ("up 75% maxconn:40\n", 75),
    ):
        lab.say(line)
        took = until(f"{line.strip()!r} -> {weight}", lambda w=weight: lab.weight() == w, 30)  # type: ignore[misc]
        figures.append(f"{line.strip()!r}: {took:.2f} s")
    table = lab.director.run("ipvsadm", "-Ln", "--thresholds").stdout
    assert re.search(r"198\.18\.1\.11:80\s+40\s+0\b", table), table  # maxconn -> u_threshold
    print("kernel weight followed the agent after: " + ", ".join(figures))
    # the other server has no agent: its configured weight throughout
    assert re.search(r"198\.18\.1\.12:80\s+\S+\s+100\b", lab.director.run("ipvsadm", "-Ln").stdout)

    # the agent goes away: the last value stays, and the status says since when
    assert lab.agent is not None
    lab.agent.stop()
    time.sleep(1.5)
    assert lab.weight() == 75

    def kept() -> bool:
        status = json.loads(lab.ctl("status", "--json"))
        rows = [rs for svc in status["services"] for rs in svc["servers"]]
        agent = next(rs["agent"] for rs in rows if rs["address"] == "198.18.1.11:80")
        return agent["keeping_since"] is not None and agent["weight"] == 75

    until("the status to say the last value is kept", kept, 30)
    text = lab.ctl("status")
    print(text)
    assert "agent: ready 75%  weight 75 of 100  maxconn 40" in text
    assert "keeping the last value: no answer for" in text
