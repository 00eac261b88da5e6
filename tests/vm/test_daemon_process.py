"""``directord`` as a real process in a lab on the real kernel.

client ns --veth-- director ns (IPVS NAT, VIP 198.18.0.10) --veth-- real-server ns

One long-lived TCP connection goes through the NAT service; the daemon is reloaded (good and bad
configs), killed with SIGKILL, started again and stopped, and the connection keeps working.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from director.ipvs.model import DestKey
from tests.helpers.ipvsadm import ipvsadm, persistent_conns
from tests.helpers.netns import Background, Namespace, Topology

pytestmark = pytest.mark.vm

PY = sys.executable
CONFIG = """
[daemon]
state_dir = "{state}"
resync_interval = {resync}
[kernel]
ip_forward = true
conntrack = true

[[virtual_server]]
name = "echo"
protocol = "tcp"
address = "198.18.0.10"
port = 7000
scheduler = "rr"
persistence_timeout = 300
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  weight = {weight}
"""


@dataclass
class Lab:
    topo: Topology
    client: Namespace
    director: Namespace
    server: Namespace
    config: Path
    state: Path
    notify: socket.socket

    def write_config(self, weight: int = 1, resync: float = 60.0) -> None:
        self.config.write_text(CONFIG.format(state=self.state, weight=weight, resync=resync))

    def start_daemon(self) -> Background:
        env = [f"NOTIFY_SOCKET={self.notify.getsockname()}", "WATCHDOG_USEC=2000000"]
        return self.director.spawn(
            "env",
            *env,
            PY,
            "-m",
            "director.daemon",
            "--config",
            str(self.config),
            "--log-format",
            "json",
        )

    def notified(self, wanted: str, timeout: float = 60) -> list[str]:
        """sd_notify datagrams received until one contains ``wanted``."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                seen.append(self.notify.recv(4096).decode())
            except TimeoutError:
                break
            if wanted in seen[-1]:
                return seen
        raise AssertionError(f"no sd_notify {wanted!r}; got {seen}")

    def ipvsadm(self, *args: str) -> str:
        return ipvsadm(*args, netns=self.director.name)

    def status(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Topology() as topo:
        client, director, server = (topo.namespace(n) for n in ("client", "director", "server"))
        topo.veth(client, "eth0", director, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
        director.add_address("c0", "198.18.0.10/32")
        topo.veth(server, "eth0", director, "s0", a_addr="198.18.1.11/24", b_addr="198.18.1.1/24")
        server.add_route("default", "198.18.1.1")
        server.spawn(PY, "-m", "tests.helpers.longconn", "serve", "198.18.1.11", "7000")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(tmp_path / "notify"))
            lab = Lab(
                topo, client, director, server, tmp_path / "d.toml", tmp_path / "state", notify
            )
            lab.write_config()
            yield lab


def test_connection_survives_reload_kill_and_restart(lab: Lab) -> None:
    daemon = lab.start_daemon()
    assert "STATUS=1 services, 1 destinations" in lab.notified("READY=1")[-1]
    wait_for("the first sync", lambda: bool(lab.status().get("last_sync")))
    assert lab.notified("WATCHDOG=1", timeout=10)
    table = lab.ipvsadm("-Ln")
    assert "TCP  198.18.0.10:7000 rr persistent 300" in table
    assert "198.18.1.11:7000" in table

    client = subprocess.Popen(
        lab.client.argv(PY, "-m", "tests.helpers.longconn", "client", "198.18.0.10", "7000"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None
    assert client.stdout is not None

    def say(word: str) -> str:
        assert client.stdin is not None
        assert client.stdout is not None
        client.stdin.write(word + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    try:
        assert client.stdout.readline().startswith("connected")
        assert say("one") == "one"
        conns = lab.ipvsadm("-Lnc")
        assert "ESTABLISHED" in conns
        assert "198.18.1.11:7000" in conns
        persist = persistent_conns(lab.ipvsadm("-Ln", "--persistent-conn"))
        assert persist == {DestKey(ipaddress.IPv4Address("198.18.1.11"), 7000): 1}

        # a good reload changes the weight, a bad one changes nothing
        lab.write_config(weight=3)
        daemon.proc.send_signal(signal.SIGHUP)
        lab.notified("RELOADING=1")
        lab.notified("READY=1")
        wait_for("weight 3", lambda: "Masq    3" in lab.ipvsadm("-Ln"))
        lab.config.write_text(lab.config.read_text().replace("weight = 3", "weight = -3"))
        before = lab.ipvsadm("-Ln")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for("the reload error", lambda: bool(lab.status().get("reload_error")))
        assert "reload failed" in lab.notified("STATUS=reload failed")[-1]
        assert lab.ipvsadm("-Ln") == before
        assert "weight" in str(lab.status()["reload_error"])
        assert say("two") == "two"

        # SIGKILL: the table stays, and a new daemon adopts it with no change
        os.killpg(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()
        assert lab.ipvsadm("-Ln") == before
        assert say("three") == "three"
        lab.write_config(weight=3)
        (lab.state / "status.json").unlink()
        daemon = lab.start_daemon()
        wait_for("the restart sync", lambda: bool(lab.status().get("last_sync")))
        last = lab.status()["last_sync"]
        assert isinstance(last, dict)
        assert last["operations"] == 0
        assert lab.ipvsadm("-Ln") == before
        assert say("four") == "four"

        # SIGTERM: a clean stop leaves the table and the connection in place
        daemon.proc.send_signal(signal.SIGTERM)
        assert lab.notified("STOPPING=1")
        assert daemon.proc.wait(timeout=60) == 0
        assert lab.ipvsadm("-Ln") == before
        assert say("five") == "five"
        assert '"event": "stopping"' in daemon.output()
    finally:
        client.kill()
        client.wait()
        client.stdin.close()
        client.stdout.close()


def test_daemon_repairs_a_flushed_table_on_its_own(lab: Lab) -> None:
    lab.write_config(resync=1.0)
    daemon = lab.start_daemon()
    wait_for("the first sync", lambda: bool(lab.status().get("last_sync")))
    before = lab.ipvsadm("-Ln")
    lab.ipvsadm("-C")
    assert "198.18.0.10:7000" not in lab.ipvsadm("-Ln")
    wait_for("the periodic resync", lambda: lab.ipvsadm("-Ln") == before, timeout=30)
    repaired = [
        json.loads(line) for line in daemon.output().splitlines() if '"reason": "resync"' in line
    ]
    assert repaired[0]["operations"] == 2
