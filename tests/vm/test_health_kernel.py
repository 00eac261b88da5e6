"""Health checks driving the real kernel's IPVS table through ``directord``.

client --- director (VIP 198.18.0.10:80, NAT) --- bridge --- web1, web2, sorry (HTTP servers)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.netns import Background, Namespace, Topology

pytestmark = pytest.mark.vm

PY = sys.executable
INTERVAL, FALL, RISE, TIMEOUT = 0.5, 2, 2, 0.4
CONFIG = f"""
[daemon]
state_dir = "{{state}}"
[kernel]
ip_forward = true
expire_nodest_conn = true

[[virtual_server]]
protocol = "tcp"
address = "198.18.0.10"
port = 80
scheduler = "rr"
sorry_server = {{{{ address = "198.18.1.19", port = 80 }}}}
  [virtual_server.check]
  type = "http"
  path = "/health"
  expect_status = [200]
  body_contains = "ok"
  interval = {INTERVAL}
  timeout = {TIMEOUT}
  fall = {FALL}
  rise = {RISE}
  [[virtual_server.real_server]]
  address = "198.18.1.11"
  [[virtual_server.real_server]]
  address = "198.18.1.12"
"""
WEB = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (b"ok " if self.path == "/health" else b"") + sys.argv[1].encode() + b"\\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[2], 80), H).serve_forever()
"""


@dataclass
class Lab:
    client: Namespace
    director: Namespace
    servers: dict[str, tuple[Namespace, str]]
    running: dict[str, Background]

    def start_web(self, name: str) -> None:
        ns, address = self.servers[name]
        self.running[name] = ns.spawn(PY, "-c", WEB, name, address)
        until(f"{name} to listen", lambda: f"{address}:80" in ns.run("ss", "-ltnH").stdout, 60)

    def stop_web(self, name: str) -> None:
        self.running.pop(name).stop()

    def table(self) -> str:
        return self.director.run("ipvsadm", "-Ln").stdout

    def get(self, count: int) -> list[str]:
        code = (
            "import urllib.request\n"
            f"for _ in range({count}):\n"
            "    r = urllib.request.urlopen('http://198.18.0.10/', timeout=3)\n"
            "    print(r.read().decode().strip())"
        )
        return self.client.run(PY, "-c", code).stdout.split()


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
        director.add_address("c0", "198.18.0.10/32")
        topo.attach(director, "s0", switch, "br0", addr="198.18.1.1/24")
        servers = {}
        for name, address in (
            ("web1", "198.18.1.11"),
            ("web2", "198.18.1.12"),
            ("sorry", "198.18.1.19"),
        ):
            ns = topo.namespace(name)
            topo.attach(ns, "eth0", switch, "br0", addr=f"{address}/24")
            ns.add_route("default", "198.18.1.1")
            servers[name] = (ns, address)
        lab = Lab(client, director, servers, {})
        for name in servers:
            lab.start_web(name)
        config = tmp_path / "director.toml"
        config.write_text(CONFIG.format(state=tmp_path / "state"))
        daemon = director.spawn(
            PY, "-m", "director.daemon", "-c", str(config), "--log-format", "json"
        )
        until("the first sync", lambda: (tmp_path / "state" / "status.json").exists(), 120)
        yield lab
        log = daemon.output()
        assert '"event": "health_changed"' in log, log


def test_failed_server_leaves_and_returns_and_sorry_server_covers(lab: Lab) -> None:
    assert "198.18.1.11:80" in lab.table() and "198.18.1.12:80" in lab.table()
    assert "198.18.1.19:80" not in lab.table()
    assert sorted(set(lab.get(4))) == ["web1", "web2"]

    bound = INTERVAL * FALL + TIMEOUT
    lab.stop_web("web1")
    took = until("web1 to leave", lambda: "198.18.1.11:80" not in lab.table(), 10 * bound)
    print(f"web1 removed {took:.2f} s after it stopped (bound interval*fall+timeout = {bound} s)")
    assert took < 3 * bound  # generous for the emulated guest; measured figures go to the log
    assert lab.get(6) == ["web2"] * 6  # the VIP keeps answering from the remaining server

    lab.stop_web("web2")
    until("the sorry server", lambda: "198.18.1.19:80" in lab.table(), 10 * bound)
    assert "198.18.1.12:80" not in lab.table()
    assert lab.get(2) == ["sorry"] * 2

    lab.start_web("web1")
    took = until(
        "web1 to return", lambda: "198.18.1.11:80" in lab.table(), 10 * INTERVAL * RISE + 5
    )
    print(f"web1 back {took:.2f} s after it restarted (rise {RISE} x interval {INTERVAL} s)")
    until("the sorry server to leave", lambda: "198.18.1.19:80" not in lab.table(), 5)
    assert lab.get(2) == ["web1"] * 2
